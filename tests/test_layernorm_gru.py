"""LayerNorm-GRU in the kernels (issue 15, part 3): each gate's input-side and recurrent-side pre-activation
normalised apart over its row's units (each head's, with heads), forward and backward, both formulations, every
launch mode and dtype, heads, lengths and zoneout, against the plain-PyTorch reference written from the equations
(:func:`tritongru.reference.layernorm_gru_ref`), itself checked here against ``torch.nn.functional.layer_norm``."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from concurrent_interpreter import concurrent_programs
from helpers import ON_GPU, assert_close, grads
from test_kernels import launch_mode  # noqa: F401 (the fixture of every launch mode)
from tritongru.kernels.layernorm import LAYER_NORM_EPS

import tritongru
import tritongru.launchers
from tritongru import ops, reference
from tritongru.configs import KernelConfig, wave_chunks
from tritongru.validation import GRUInputError
from tritongru.variants import VARIANTS

NAMES = ["weight_ih", "weight_hh", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias"]

SHAPES = [
    # (T, B, I, H, heads): three 16-unit slices (the last ragged) where a slice is 16 wide; heads of 20 (two
    # slices per head, the second ragged) with B = 17 over two batch blocks; one step, batch one
    pytest.param(4, 3, 4, 33, 1, id="T4-B3-H33"),
    pytest.param(3, 17, 5, 40, 2, id="T3-B17-H40-k2"),
    pytest.param(1, 1, 3, 16, 1, id="T1-B1-H16"),
]


def random_weights(I, H, heads, device, dtype=torch.float32):
    """One layer's six tensors, drawn fresh (gains and biases away from 1 and 0, so that they matter)."""
    d = H // heads
    tensors = [
        torch.empty(3 * H, I).uniform_(-(H**-0.5), H**-0.5),
        torch.empty(3 * H, d).uniform_(-(d**-0.5), d**-0.5),
        1 + 0.3 * torch.randn(3 * H),
        0.3 * torch.randn(3 * H),
        1 + 0.3 * torch.randn(3 * H),
        0.3 * torch.randn(3 * H),
    ]
    return [t.to(device, dtype).requires_grad_() for t in tensors]


def random_layer(T, B, I, H, heads, device, dtype=torch.float32):
    """Input, h0 and one layer's six tensors, all requiring grad."""
    x = torch.randn(T, B, I).to(device, dtype).requires_grad_()
    h0 = (0.5 * torch.randn(B, H)).to(device, dtype).requires_grad_()
    return [x, h0, *random_weights(I, H, heads, device, dtype)]


def wide(tensors):
    return [t.detach().double().requires_grad_() for t in tensors]


def check_all(ours, expected, tensors, oracle, dtype=torch.float32):
    names = ["output", "h_n", "d input", "d h0", *[f"d {name}" for name in NAMES]]
    for name, actual, wanted in zip(
        names, [*ours, *grads(list(ours), tensors)], [*expected, *grads(list(expected), oracle)], strict=True
    ):
        assert actual.shape == wanted.shape, name
        assert_close(actual, wanted, dtype, name)


@pytest.mark.usefixtures("launch_mode")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T, B, I, H, heads", SHAPES)
def test_layer_matches_the_reference(variant, T, B, I, H, heads, device):
    """Output, h_n and all eight gradients against the float64 reference, with lengths, both directions."""
    tensors = random_layer(T, B, I, H, heads, device)
    oracle = wide(tensors)
    lengths = torch.randint(1, T + 1, (B,), device=device)
    weights = tensors[2:]
    ours = tritongru.layernorm_gru(
        tensors[0], tensors[1][None], weights, variant=variant, lengths=lengths, num_heads=heads
    )
    expected = reference.layernorm_gru_ref(
        oracle[0], oracle[1][None], oracle[2:], variant=variant, lengths=lengths, num_heads=heads
    )
    check_all(ours, expected, tensors, oracle)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_chunk_a_wave_matches_the_reference(variant, device, monkeypatch):
    """A grid-synchronised config whose waves are capped at one K chunk (``max_wave_chunks``, what the launchers
    fall back to where a full wave spills): H=48 in three chunks of 16, each its own round trip, forward and
    backward with lengths against the reference."""
    config = KernelConfig(16, 16, 16, num_warps=1, persistent=True, split_k=True, batch_blocks=2, max_wave_chunks=1)
    assert wave_chunks(config, 48, torch.float32) == 1
    assert wave_chunks(KernelConfig(16, 16, 16, num_warps=1), 48, torch.float32) > 1, "uncapped: more a wave"
    monkeypatch.setattr(tritongru.launchers, "select_config", lambda kernel, **_: config)
    tensors = random_layer(3, 17, 5, 48, 1, device)
    oracle = wide(tensors)
    lengths = torch.tensor([3, 1, 2] * 5 + [3, 2], device=device)
    with contextlib.nullcontext() if ON_GPU else concurrent_programs(monkeypatch):
        ours = tritongru.layernorm_gru(tensors[0], tensors[1][None], tensors[2:], variant=variant, lengths=lengths)
        expected = reference.layernorm_gru_ref(oracle[0], oracle[1][None], oracle[2:], variant=variant, lengths=lengths)
        check_all(ours, expected, tensors, oracle)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_layer_in_every_dtype(variant, dtype, device):
    """Outputs in the input's dtype, within that dtype's tolerance of the float64 reference; every gradient
    within 4 roundings of the dtype (``eps``) of the reference's, relative to its norm (the recurrent side's
    ``1 / std`` scales the gradients' rounding errors along with the gradients)."""
    tensors = random_layer(3, 2, 3, 24, 1, device, dtype)
    oracle = wide(tensors)
    ours = tritongru.layernorm_gru(tensors[0], None, tensors[2:], variant=variant)
    expected = reference.layernorm_gru_ref(oracle[0], None, oracle[2:], variant=variant)
    for actual, wanted, name in zip(ours, expected, ["output", "h_n"], strict=True):
        assert actual.dtype == dtype
        assert_close(actual, wanted, dtype, name)
    wanted_inputs = [tensors[0], *tensors[2:]]  # h0 is not an input here
    ours_grads = grads(list(ours), wanted_inputs)
    expected_grads = grads(list(expected), [oracle[0], *oracle[2:]])
    for name, actual, wanted in zip(["input", *NAMES], ours_grads, expected_grads, strict=True):
        error = (actual.double() - wanted).norm() / wanted.norm()
        assert error <= 4 * torch.finfo(dtype).eps, f"d {name}: relative error {error:.2e}"


def test_the_reference_is_torch_layer_norm_per_gate(device):
    """One cudnn step written with ``F.layer_norm`` gate by gate equals the reference cell and the kernels'."""
    B, I, H = 3, 4, 10
    x, h = torch.randn(B, I, device=device, dtype=torch.float64), torch.randn(B, H, device=device, dtype=torch.float64)
    w_ih, w_hh, g_i, b_i, g_h, b_h = (t.detach().double() for t in random_weights(I, H, 1, device))

    def norm(v, gain, bias, gate):
        rows = slice(gate * H, (gate + 1) * H)
        return F.layer_norm(v, (H,), gain[rows], bias[rows], eps=1e-5)

    gx = [norm(x @ w_ih[g * H : (g + 1) * H].t(), g_i, b_i, g) for g in range(3)]
    gh = [norm(h @ w_hh[g * H : (g + 1) * H].t(), g_h, b_h, g) for g in range(3)]
    r, z = torch.sigmoid(gx[0] + gh[0]), torch.sigmoid(gx[1] + gh[1])
    expected = (1 - z) * torch.tanh(gx[2] + r * gh[2]) + z * h
    weights = (w_ih, w_hh, g_i, b_i, g_h, b_h)
    assert_close(reference.layernorm_gru_cell_ref(x, h, *weights), expected, torch.float64, "reference")
    assert_close(tritongru.layernorm_gru_cell(x, h, *weights), expected, torch.float64, "kernels")
    assert LAYER_NORM_EPS == reference.LAYER_NORM_EPS


@pytest.mark.usefixtures("launch_mode")
@pytest.mark.parametrize("variant", VARIANTS)
def test_zoneout_and_reverse_compose(variant, device):
    """Zoneout in training (the reference regenerates the kernels' masks from the seed) with heads, lengths and
    reverse; evaluation's expectation in :func:`test_zoneout_expectation`."""
    check_zoneout(variant, True, device)


@pytest.mark.parametrize("variant", VARIANTS)
def test_zoneout_expectation(variant, device):
    check_zoneout(variant, False, device)


def check_zoneout(variant, training, device):
    T, B, I, H, heads = 4, 3, 2, 24, 3
    tensors = random_layer(T, B, I, H, heads, device)
    oracle = wide(tensors)
    lengths = torch.tensor([4, 1, 3], device=device)
    options = dict(
        variant=variant, lengths=lengths, num_heads=heads, zoneout=0.3, zoneout_seed=2**33 + 5, training=training
    )
    ours = tritongru.layernorm_gru_layer(*tensors, reverse=True, layer=1, **options)
    expected = reference.layernorm_gru_layer_ref(*oracle, reverse=True, layer=1, **options)
    check_all(ours, expected, tensors, oracle)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant, device):
    """float64 gradcheck through the kernels of the layer with lengths and heads, with respect to what the
    recurrence touches (the input side is plain PyTorch, checked against the reference by the tests above), and
    of the cell (cudnn form)."""
    T, B, I, H, heads = 2, 2, 2, 4, 2
    x, h0, w_ih, w_hh, g_i, b_i, g_h, b_h = wide(random_layer(T, B, I, H, heads, device))
    lengths = torch.tensor([2, 1], device=device)

    def layer(x, h0, w_hh, g_h, b_h):
        weights = (w_ih, w_hh, g_i, b_i, g_h, b_h)
        return tritongru.layernorm_gru_layer(x, h0, *weights, variant=variant, lengths=lengths, num_heads=heads)

    assert torch.autograd.gradcheck(layer, (x, h0, w_hh, g_h, b_h), fast_mode=True)
    if variant == "cudnn":

        def cell(x, h, w_hh):
            return tritongru.layernorm_gru_cell(x, h, w_ih, w_hh, g_i, b_i, g_h, b_h, num_heads=heads)

        assert torch.autograd.gradcheck(cell, (x[0], h0, w_hh), fast_mode=True)


def test_gradgradcheck(device):
    """Double backward goes through the reference, as for the plain GRU."""
    x, h0, *weights = wide(random_layer(2, 1, 2, 4, 1, device))

    def layer(h0, w_hh):
        return tritongru.layernorm_gru_layer(x, h0, weights[0], w_hh, *weights[2:], variant="classic")

    assert torch.autograd.gradgradcheck(layer, (h0, weights[1]), fast_mode=True)


def test_module_matches_the_reference(device):
    """Two bidirectional layers, batch first, heads; a PackedSequence gives the same as lengths (cudnn form:
    the module passes ``variant`` through, and the layer tests run both forms in every launch mode)."""
    variant = "cudnn"
    module = tritongru.LayerNormGRU(
        3, 12, num_layers=2, bidirectional=True, batch_first=True, variant=variant, num_heads=2, device=device
    )
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.startswith("ln_"):
                parameter.add_(0.3 * torch.randn_like(parameter))
    x = torch.randn(2, 5, 3, device=device)
    options = dict(num_layers=2, bidirectional=True, batch_first=True, variant=variant, num_heads=2)
    output, h_n = module(x)
    expected = reference.layernorm_gru_ref(x.double(), None, [w.double() for w in module._weights()], **options)
    assert_close(output, expected[0], torch.float32, "output")
    assert_close(h_n, expected[1], torch.float32, "h_n")
    lengths = torch.tensor([5, 3])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_out, packed_h = module(packed)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True)
    with_lengths = reference.layernorm_gru_ref(x, None, module._weights(), lengths=lengths.to(device), **options)
    assert_close(padded, with_lengths[0], torch.float32, "packed output")
    assert_close(packed_h, with_lengths[1], torch.float32, "packed h_n")


def test_module_parameters_and_initialisation():
    module = tritongru.LayerNormGRU(4, 8, num_layers=2, bidirectional=True, num_heads=4)
    names = [name for name, _ in module.named_parameters()]
    expected = [f"{n}_l{layer}{s}" for layer in range(2) for s in ("", "_reverse") for n in NAMES]
    assert names == expected
    assert module.weight_ih_l1.shape == (24, 16) and module.weight_hh_l0.shape == (24, 2)
    assert module.weight_hh_l0.abs().max() <= 2**-0.5 and module.weight_ih_l0.abs().max() <= 8**-0.5
    assert torch.equal(module.ln_hh_weight_l1_reverse, torch.ones(24))
    assert torch.equal(module.ln_ih_bias_l0, torch.zeros(24))
    again = tritongru.LayerNormGRU(4, 8, num_layers=2, bidirectional=True, num_heads=4)
    again.load_state_dict(module.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), module.parameters(), strict=True))
    cell = tritongru.LayerNormGRUCell(3, 5, variant="classic", zoneout=0.2)
    assert [name for name, _ in cell.named_parameters()] == NAMES
    assert "variant='classic'" in repr(cell) and "zoneout=0.2" in repr(cell)
    assert "num_heads=4" in repr(module) and "bidirectional=True" in repr(module)
    assert [p.shape for p in module.all_weights[3]] == [(24, 16), (24, 2), *[(24,)] * 4]
    module.flatten_parameters()


@pytest.mark.parametrize("variant", VARIANTS)
def test_cell_module_matches_the_reference(variant, device):
    """Batched and unbatched, with and without hx, and its gradients."""
    cell = tritongru.LayerNormGRUCell(4, 9, variant=variant, num_heads=3, device=device)
    weights = [getattr(cell, name) for name in NAMES]
    x, hx = torch.randn(2, 4, device=device), torch.randn(2, 9, device=device, requires_grad=True)
    ours = cell(x, hx)
    expected = reference.layernorm_gru_cell_ref(x, hx, *weights, variant=variant, num_heads=3)
    assert_close(ours, expected, torch.float32, "h'")
    assert_close(grads([ours], [hx])[0], grads([expected], [hx])[0], torch.float32, "d hx")
    unbatched = reference.layernorm_gru_cell_ref(x[0], None, *weights, variant=variant, num_heads=3)
    assert_close(cell(x[0]), unbatched, torch.float32, "unbatched h'")


def test_modules_draw_a_zoneout_seed_per_training_call(device):
    module = tritongru.LayerNormGRU(3, 8, zoneout=0.4, device=device)
    x = torch.randn(4, 2, 3, device=device)
    torch.manual_seed(3)
    first, second = module(x)[0], module(x)[0]
    torch.manual_seed(3)
    assert torch.equal(module(x)[0], first) and not torch.equal(first, second)
    module.eval()
    expected, _ = reference.layernorm_gru_ref(x, None, module._weights(), zoneout=0.4)
    assert_close(module(x)[0], expected, torch.float32, "eval output")


def test_bad_arguments_are_refused_naming_them(device):
    x = torch.randn(2, 1, 3, device=device)
    weights = [t.detach() for t in random_weights(3, 6, 1, device)]
    with pytest.raises(GRUInputError, match="num_heads"):
        tritongru.LayerNormGRU(3, 6, num_heads=4)
    with pytest.raises(GRUInputError, match="num_heads"):
        tritongru.LayerNormGRUCell(3, 6, num_heads=0)
    with pytest.raises(GRUInputError, match="zoneout"):
        tritongru.LayerNormGRU(3, 6, zoneout=1.0)
    with pytest.raises(GRUInputError, match="zoneout"):
        tritongru.layernorm_gru(x, None, weights, zoneout=-0.1)
    with pytest.raises(GRUInputError, match="ln_hh_bias must have shape"):
        tritongru.layernorm_gru(x, None, [*weights[:5], weights[5][:-1]])
    with pytest.raises(GRUInputError, match="6 tensors"):
        tritongru.layernorm_gru(x, None, weights[:4])
    with pytest.raises(GRUInputError, match="weight_ih must have shape"):
        tritongru.layernorm_gru_cell(x[0], None, weights[0][:, :2], *weights[1:])
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        tritongru.LayerNormGRU(3, 0)
    with pytest.raises(TypeError, match="hidden_size should be of type int"):
        tritongru.LayerNormGRU(3, 4.0)
    with pytest.raises(ValueError, match="dropout should be a number"):
        tritongru.LayerNormGRU(3, 4, dropout=2)
    with pytest.raises(GRUInputError, match="input_size"):
        tritongru.LayerNormGRU(4, 6)(x)


def test_custom_ops_pass_opcheck(device):
    """Schema, fake implementations, autograd registration of both ops, with heads, lengths and zoneout (the
    classic form, whose saved gates are three per unit; the fakes' shapes follow ``variant`` as the plain ops')."""
    variant = "classic"
    T, B, I, H = 3, 2, 2, 6
    x, h0, *weights = (t.detach() for t in random_layer(T, B, I, H, 2, device))
    lengths = torch.tensor([3, 1], device=device)
    args = (x, h0, *weights, lengths, variant, False, True, 0.25, 11, 1, True)
    torch.library.opcheck(ops.layernorm_gru_layer, args)
    torch.library.opcheck(ops.layernorm_gru_layer, (*args[:11], False))  # the saved tensors' empty placeholders
    hs, _, gates, xhat, rstd = ops.layernorm_gru_layer(*args)
    grad_output, grad_h_n = torch.randn(T, B, H, device=device), torch.randn(B, H, device=device)
    backward = (grad_output, grad_h_n, hs, gates, xhat, rstd, weights[1], weights[4], lengths, variant, False)
    torch.library.opcheck(ops.layernorm_gru_backward, (*backward, 0.25, 11, 1, True))


def test_torch_compile_fullgraph(device):
    """The module compiles without a graph break, forward and backward, and equals eager."""
    module = tritongru.LayerNormGRU(3, 8, num_heads=2, variant="classic", device=device)
    x = torch.randn(4, 2, 3, device=device)
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True)
    expected, actual = module(x)[0], compiled(x)[0]
    assert torch.equal(actual, expected)
    (weight_grad,) = torch.autograd.grad(actual.sum(), [module.ln_hh_weight_l0])
    (expected_grad,) = torch.autograd.grad(expected.sum(), [module.ln_hh_weight_l0])
    assert_close(weight_grad, expected_grad, torch.float32, "d ln_hh_weight")


def test_per_sample_gradients_fold_into_the_batch(device):
    """``vmap(grad(loss))`` over ``functional_call``: the samples are folded into the kernels' batch (the ops'
    vmap rules), each sample's gradient as a separate backward of that sample alone through the reference."""
    module = tritongru.LayerNormGRU(3, 6, num_heads=2, variant="classic", device=device)
    params = {k: v.detach() for k, v in module.named_parameters()}
    x, y = torch.randn(4, 3, 3, device=device), torch.randn(4, 3, 6, device=device)

    def loss(p, x, y):
        return (torch.func.functional_call(module, p, (x,))[0] - y).pow(2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 1, 1))(params, x, y)
    for b in range(x.shape[1]):
        single = {k: v.clone().requires_grad_() for k, v in params.items()}
        weights = [single[name] for name in params]
        output, _ = reference.layernorm_gru_ref(x[:, b : b + 1], None, weights, variant="classic", num_heads=2)
        (output - y[:, b : b + 1]).pow(2).sum().backward()
        for name, value in single.items():
            assert_close(per_sample[name][b], value.grad, torch.float32, f"sample {b}: {name}")


def test_export_runs_the_custom_op(device):
    module = tritongru.LayerNormGRU(3, 4, device=device).eval()
    program = torch.export.export(module, (torch.randn(2, 3, 3, device=device),))
    assert "torch.ops.tritongru.layernorm_gru_layer" in program.graph_module.code
    other = torch.randn(2, 3, 3, device=device)
    with torch.no_grad():
        assert_close(program.module()(other)[0], module(other)[0], torch.float32, "exported program")
