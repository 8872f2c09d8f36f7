"""Multi-head (block-diagonal) GRU in the kernels (issue 15, part 1): ``weight_hh`` ``[3H, H // k]`` holds the
diagonal blocks, and the result equals ``torch.nn.GRU`` (cudnn form) or the classic reference with the dense
``weight_hh`` that has these blocks on its diagonal and zeros elsewhere: forward and every gradient, both
formulations, every launch mode and dtype, the cell, the modules, custom ops and ``torch.compile``."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close, grads
from test_kernels import launch_mode, oracle_layer, random_layer  # noqa: F401 (launch_mode: every launch mode)

import tritongru
import tritongru.launchers
from tritongru import ops, reference
from tritongru.configs import KernelConfig
from tritongru.validation import GRUDtypeError, GRUInputError
from tritongru.variants import VARIANTS

HEAD_SHAPES = [
    # (T, B, I, H, heads): heads of 4 units, of 20 (two 16-unit slices per head, the second ragged, where a
    # slice is 16 wide), of 16 (one step, batch one); heads of one unit each: test_layer_in_every_dtype
    pytest.param(5, 3, 4, 12, 3, id="T5-B3-H12-k3"),
    pytest.param(3, 17, 5, 40, 2, id="T3-B17-H40-k2"),
    pytest.param(1, 1, 3, 32, 2, id="T1-B1-H32-k2"),
]


def random_heads(T, B, I, H, heads, device, dtype=torch.float32):
    """:func:`test_kernels.random_layer` with ``weight_hh`` the ``[3H, H // heads]`` blocks, drawn fresh."""
    tensors = random_layer(T, B, I, H, device, dtype)
    d = H // heads
    tensors[3] = torch.empty(3 * H, d).uniform_(-(d**-0.5), d**-0.5).to(device, dtype).requires_grad_()
    return tensors


def dense_oracle(variant, heads, x, h0, w_ih, w_hh, b_ih, b_hh, lengths=None):
    """The oracle of the dense GRU (torch.nn.GRU for cudnn, the reference for classic) with the block-diagonal
    ``weight_hh`` made dense: gradients flow back to the blocks."""
    dense = reference.block_diagonal_weight_hh(w_hh, heads)
    return oracle_layer(variant, x, h0, w_ih, dense, b_ih, b_hh, lengths=lengths)


@pytest.mark.usefixtures("launch_mode")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("T, B, I, H, heads", HEAD_SHAPES)
def test_layer_equals_the_dense_block_diagonal_gru(variant, T, B, I, H, heads, device):
    """Output, h_n and every gradient (the blocks' included) against the dense oracle, with lengths."""
    tensors = random_heads(T, B, I, H, heads, device)
    oracle = [t.detach().double().requires_grad_() for t in tensors]
    lengths = torch.randint(1, T + 1, (B,), device=device)
    ours = tritongru.gru_layer(*tensors, variant=variant, lengths=lengths, num_heads=heads)
    expected = dense_oracle(variant, heads, *oracle, lengths=lengths)
    for name, actual, wanted in zip(
        ["output", "h_n", "d input", "d h0", "d w_ih", "d w_hh", "d b_ih", "d b_hh"],
        [*ours, *grads(list(ours), tensors)],
        [*expected, *grads(list(expected), oracle)],
        strict=True,
    ):
        assert actual.shape == wanted.shape, name
        assert_close(actual, wanted.float(), torch.float32, name)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_layer_in_every_dtype(variant, dtype, device):
    """The low-precision kernels within the dtype's tolerance of the dense oracle in float64, with heads of one
    unit each."""
    tensors = random_heads(4, 2, 2, 6, 6, device, dtype)
    oracle = [t.detach().double().requires_grad_() for t in tensors]
    ours = tritongru.gru_layer(*tensors, variant=variant, num_heads=6)
    expected = dense_oracle(variant, 6, *oracle)
    for name, actual, wanted in zip(
        ["output", "h_n", "d w_hh"],
        [*ours, grads(list(ours), tensors)[3]],
        [*expected, grads(list(expected), oracle)[3]],
        strict=True,
    ):
        assert actual.dtype == dtype, name
        assert_close(actual, wanted.to(dtype), dtype, name)


@pytest.mark.usefixtures("launch_mode")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "B, I, H, heads", [pytest.param(1, 7, 12, 4, id="B1-H12-k4"), pytest.param(17, 9, 40, 2, id="B17-H40-k2")]
)
def test_cell_equals_the_dense_block_diagonal_cell(variant, B, I, H, heads, device):
    """The fused cell: ``h'`` and every gradient against torch.nn.GRUCell (cudnn) or the reference (classic)."""
    _, h, w_ih, w_hh, b_ih, b_hh = random_heads(1, B, I, H, heads, device)
    x = torch.randn(B, I, device=device, requires_grad=True)
    leaves = [x, h, w_ih, w_hh, b_ih, b_hh]
    ours = tritongru.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, variant=variant, num_heads=heads)
    dense = reference.block_diagonal_weight_hh(w_hh, heads)
    if variant == "cudnn":
        cell = torch.nn.GRUCell(I, H, device=device)
        params = {"weight_ih": w_ih, "weight_hh": dense, "bias_ih": b_ih, "bias_hh": b_hh}
        expected = torch.func.functional_call(cell, params, (x, h))
    else:
        expected = reference.gru_cell_ref(x, h, w_ih, dense, b_ih, b_hh, variant="classic")
    assert_close(ours, expected, torch.float32, "h'")
    for name, actual, wanted in zip(
        ["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"], grads([ours], leaves), grads([expected], leaves), strict=True
    ):
        assert_close(actual, wanted, torch.float32, f"d {name}")


def test_a_head_in_one_program_needs_no_grid_barrier():
    """The launch plan: a head that one slice covers runs without a grid barrier, however many heads (and
    however many slices in all); a head over several slices meets at one; the dense GRU as before."""
    config = KernelConfig(block_b=16, block_h=32, block_k=64, persistent=True, split_k=True)
    device = torch.device("cuda")  # only planned, never launched
    plan = tritongru.launchers.plan_launch(config, 64, 1024, device, head_dim=32)
    assert (plan.grid, plan.persistent, plan.grid_sync) == ((32, 4), True, False)
    several = tritongru.launchers.plan_launch(config, 64, 1024, device, head_dim=40)
    assert several.grid == (25 * 2, 4) and (several.grid_sync or not several.persistent)
    assert tritongru.launchers.plan_launch(config, 64, 32, device).grid_sync is False
    assert config.slices_per_head(1024, 128) == 4 and config.grid(64, 1024, 128) == (32, 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant, device):
    """float64 gradcheck of the layer (with lengths) in both forms and of the cell (cudnn form) through the
    kernels."""
    T, B, I, H, heads = 2, 2, 2, 6, 3
    tensors = [t.detach().double().requires_grad_() for t in random_heads(T, B, I, H, heads, device)]
    lengths = torch.tensor([2, 1], device=device)
    assert torch.autograd.gradcheck(
        lambda *a: tritongru.gru_layer(*a, variant=variant, lengths=lengths, num_heads=heads), tensors, fast_mode=True
    )
    if variant == "cudnn":
        x = torch.randn(B, I, device=device, dtype=torch.float64, requires_grad=True)
        cell_args = [x, *tensors[1:]]
        assert torch.autograd.gradcheck(
            lambda *a: tritongru.gru_cell(*a, variant=variant, num_heads=heads), cell_args, fast_mode=True
        )


def test_gradgradcheck(device):
    """Double backward (through the reference, whose heads both forms share) sees the heads too: with respect
    to the input, ``h0`` and the blocks of ``weight_hh`` (the other weights' second order is the dense GRU's,
    tests/test_higher_order.py)."""
    x, h0, w_ih, w_hh, b_ih, b_hh = [t.detach().double() for t in random_heads(2, 1, 1, 4, 2, device)]
    checked = [t.requires_grad_() for t in (x, h0, w_hh)]
    assert torch.autograd.gradgradcheck(
        lambda x, h0, w_hh: tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, variant="classic", num_heads=2),
        checked,
        fast_mode=True,
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_zoneout_composes(variant, device):
    """Heads with zoneout: output and gradients equal the reference given the same seed."""
    tensors = random_heads(4, 3, 2, 12, 4, device)
    oracle = [t.detach().double().requires_grad_() for t in tensors]
    options = dict(zoneout=0.3, zoneout_seed=99, training=True, num_heads=4)
    ours = tritongru.gru_layer(*tensors, variant=variant, **options)
    expected = reference.gru_layer_ref(*oracle, variant=variant, **options)
    for name, actual, wanted in zip(
        ["output", "h_n", "d w_hh"],
        [*ours, grads(list(ours), tensors)[3]],
        [*expected, grads(list(expected), oracle)[3]],
        strict=True,
    ):
        assert_close(actual, wanted.float(), torch.float32, name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_module_matches_torch_gru_with_dense_weights(variant, device):
    """Two bidirectional layers, batch first: tritongru.GRU(num_heads=3) against the dense oracle module."""
    module = tritongru.GRU(5, 12, num_layers=2, bidirectional=True, batch_first=True, num_heads=3, variant=variant)
    module = module.to(device)
    x = torch.randn(2, 4, 5, device=device)
    output, h_n = module(x)
    dense = {
        name: reference.block_diagonal_weight_hh(p, 3) if name.startswith("weight_hh") else p
        for name, p in module.named_parameters()
    }
    torch_module = torch.nn.GRU(5, 12, num_layers=2, bidirectional=True, batch_first=True, device=device)
    if variant == "cudnn":
        expected = torch.func.functional_call(torch_module, dense, (x,))
    else:
        weights = [dense[name] for names in torch_module._all_weights for name in names]
        expected = reference.gru_ref(
            x, None, weights, num_layers=2, bidirectional=True, batch_first=True, variant="classic"
        )
    assert_close(output, expected[0], torch.float32, "output")
    assert_close(h_n, expected[1], torch.float32, "h_n")
    (output.sum() + h_n.sum()).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in module.parameters())


def test_module_parameters_and_initialisation():
    """weight_hh* are [3H, H // k], uniform in ±1/sqrt(H // k); the rest as torch's; num_heads=1 is torch's
    layout and draw exactly."""
    H, heads = 64, 16
    d = H // heads
    module = tritongru.GRU(8, H, num_layers=2, bidirectional=True, num_heads=heads)
    for name, p in module.named_parameters():
        if name.startswith("weight_hh"):
            assert p.shape == (3 * H, d), name
            assert p.abs().max() <= d**-0.5 and p.abs().max() > 0.9 * d**-0.5, name
        else:
            assert p.abs().max() <= H**-0.5, name
    assert "num_heads=16" in repr(module)
    cell = tritongru.GRUCell(8, H, num_heads=heads)
    assert cell.weight_hh.shape == (3 * H, d) and cell.weight_hh.abs().max() > 0.9 * d**-0.5
    torch.manual_seed(3)
    ours = tritongru.GRU(8, H, num_heads=1)
    torch.manual_seed(3)
    theirs = torch.nn.GRU(8, H)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    loaded = tritongru.GRU(8, H, num_layers=2, bidirectional=True, num_heads=heads)
    loaded.load_state_dict(module.state_dict())  # same shapes load strictly
    with pytest.raises(RuntimeError, match="size mismatch"):
        tritongru.GRU(8, H, num_heads=heads).load_state_dict(theirs.state_dict())


def test_cell_module_matches_the_dense_cell(device):
    cell = tritongru.GRUCell(5, 12, num_heads=4, device=device)
    x, h = torch.randn(3, 5, device=device), torch.randn(3, 12, device=device)
    dense = dict(cell.named_parameters()) | {"weight_hh": reference.block_diagonal_weight_hh(cell.weight_hh, 4)}
    expected = torch.func.functional_call(torch.nn.GRUCell(5, 12, device=device), dense, (x, h))
    assert_close(cell(x, h), expected, torch.float32, "h'")


def test_bad_num_heads_raise_naming_them():
    with pytest.raises(GRUInputError, match="num_heads"):
        tritongru.GRU(4, 10, num_heads=3)
    with pytest.raises(GRUInputError, match="num_heads"):
        tritongru.GRUCell(4, 10, num_heads=0)
    with pytest.raises(GRUDtypeError, match="num_heads"):
        tritongru.GRU(4, 10, num_heads=2.0)
    assert issubclass(GRUDtypeError, TypeError) and issubclass(GRUInputError, ValueError)
    x, h0, w_ih, w_hh, b_ih, b_hh = random_heads(2, 2, 3, 12, 3, "cpu")
    with pytest.raises(GRUInputError, match="num_heads"):
        tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, num_heads=5)
    with pytest.raises(GRUInputError, match=r"hidden_size // num_heads\) with num_heads=2"):
        tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, num_heads=2)
    with pytest.raises(GRUInputError, match=r"\(3\*hidden_size, hidden_size\)"):
        tritongru.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh)  # blocks passed as if dense
    with pytest.raises(GRUInputError, match="num_heads"):
        tritongru.gru_cell(x[0], h0, w_ih, w_hh, b_ih, b_hh, num_heads=4)


def test_custom_ops_pass_opcheck(device):
    """The ops take the blocks as their weight_hh: schema, fake implementations, autograd registration (the
    layer and backward in the cudnn form, the cell in the classic)."""
    x, h0, w_ih, w_hh, b_ih, b_hh = random_heads(2, 2, 2, 6, 3, device)
    lengths = torch.tensor([2, 1], device=device)
    layer_args = (x, h0, w_ih, w_hh, b_ih, b_hh, lengths, "cudnn", False, True)
    torch.library.opcheck(ops.gru_layer, layer_args)
    torch.library.opcheck(ops.gru_cell, (x[0], h0, w_ih, w_hh, b_ih, b_hh, "classic", False, True))
    with torch.no_grad():
        hs, _, gates = ops.gru_layer(*layer_args)
    grad_output, grad_h_n = torch.randn(2, 2, 6, device=device), torch.randn(2, 6, device=device)
    torch.library.opcheck(ops.gru_backward, (grad_output, grad_h_n, hs, gates, w_hh.detach(), lengths, "cudnn", False))


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_compile_fullgraph(variant, device):
    """The module with heads compiles without a graph break, forward and backward, and equals eager."""
    module = tritongru.GRU(3, 8, num_heads=2, variant=variant, device=device)
    x = torch.randn(4, 2, 3, device=device)
    compiled = torch.compile(module, fullgraph=True)
    expected, actual = module(x)[0], compiled(x)[0]
    assert torch.equal(actual, expected)
    (weight_grad,) = torch.autograd.grad(actual.sum(), [module.weight_hh_l0])
    (expected_grad,) = torch.autograd.grad(expected.sum(), [module.weight_hh_l0])
    assert_close(weight_grad, expected_grad, torch.float32, "d weight_hh")
