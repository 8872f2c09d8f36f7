"""PyTorch's own tests of ``nn.GRU``/``nn.GRUCell``, with tritongru's modules substituted.

Ported (inputs and expectations; the code is this project's) from torch's ``test/test_modules.py`` run on the
``module_db`` entries of ``torch.testing._internal.common_modules`` (the GRU/GRUCell samples, error inputs and
the generic module checks: forward against the no-batch-dim reference, gradcheck with batched gradients,
gradgradcheck, errors, pickling, factory kwargs, meta device, train/eval) and from the GRU parts of
``test/test_nn.py`` (``test_GRU_grad_and_gradgrad``, ``test_RNN_cell``, ``test_RNN_cell_no_broadcasting``,
``test_RNN_cell_forward_zero_hidden_size``, ``test_rnn_args_check``, ``test_rnn_initial_hidden_state``,
``test_rnn_retain_variables``, ``test_rnn_weight_norm``). Where torch's expectation is its own output, the
oracle is ``torch.nn.GRU``/``GRUCell`` with the same weights (the cudnn formulation).
"""

from __future__ import annotations

import io
import itertools
import warnings

import pytest
import torch
from helpers import assert_close, grads
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import tritongru

VARIANTS = [pytest.param(variant, id=variant) for variant in tritongru.VARIANTS]
F64 = torch.float64


def pair(cls, *args, device, dtype=torch.float32, **kwargs):
    """(tritongru module, torch module) with the same weights."""
    ours = getattr(tritongru, cls)(*args, device=device, dtype=dtype, **kwargs)
    theirs = getattr(nn, cls)(*args, device=device, dtype=dtype, **kwargs)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def tensors_of(result) -> list[torch.Tensor]:
    result = result if isinstance(result, tuple) else (result,)
    return [r.data if isinstance(r, PackedSequence) else r for r in result]


def packed(shape, lengths, device):
    """torch's ``make_packed_sequence``: a time-major padded tensor packed, the packed data requiring grad."""
    data = torch.randn(shape, device=device)
    sequence = pack_padded_sequence(data, torch.tensor(lengths))
    sequence.data.requires_grad_()
    return sequence


# ---------------------------------------------------------------------------------- module_db: GRU samples

GRU_CONFIGS = [
    pytest.param(
        dict(bias=bias, batch_first=batch_first, bidirectional=bidir), id=f"b{bias:d}-bf{batch_first:d}-bi{bidir:d}"
    )
    for bias, batch_first, bidir in itertools.product((False, True), repeat=3)
]


@pytest.mark.parametrize("config", GRU_CONFIGS)
def test_module_db_gru_samples(config, device):
    """Each sample of torch's module_db for GRU: forward and gradients equal torch.nn.GRU's, and an unbatched
    call equals the batch-of-one call squeezed (torch's ``no_batch_dim_reference_rnn_gru``)."""
    directions = 2 if config["bidirectional"] else 1
    samples = [
        (2, lambda: (torch.randn(3, 2, device=device, requires_grad=True),)),
        (
            3,
            lambda: (
                torch.randn(3, 2, device=device, requires_grad=True),
                torch.randn(2 * directions, 3, device=device, requires_grad=True),
            ),
        ),
        (2, lambda: (packed((5, 2, 2), [5, 3], device),)),
        (2, lambda: (packed((5, 5, 2), [5, 3, 3, 2, 2], device),)),
    ]
    for index, (hidden_size, make_inputs) in enumerate(samples):
        ours, theirs = pair("GRU", 2, hidden_size, num_layers=2, device=device, **config)
        inputs = make_inputs()
        actual, expected = tensors_of(ours(*inputs)), tensors_of(theirs(*inputs))
        leaves = [t.data if isinstance(t, PackedSequence) else t for t in inputs]
        for name, a, e in zip(["output", "h_n"], actual, expected, strict=True):
            assert_close(a, e, torch.float32, f"sample {index}: {name}")
        actual_grads = grads(actual, leaves + list(ours.parameters()))
        expected_grads = grads(expected, leaves + list(theirs.parameters()))
        for position, (a, e) in enumerate(zip(actual_grads, expected_grads, strict=True)):
            assert_close(a, e, torch.float32, f"sample {index}: gradient {position}")
        if not isinstance(inputs[0], PackedSequence):
            batch_dim = 0 if config["batch_first"] else 1
            batched = [inputs[0].unsqueeze(batch_dim)] + [h.unsqueeze(1) for h in inputs[1:]]
            output, h_n = ours(*batched)
            assert_close(actual[0], output.squeeze(batch_dim), torch.float32, f"sample {index}: no-batch-dim output")
            assert_close(actual[1], h_n.squeeze(1), torch.float32, f"sample {index}: no-batch-dim h_n")


@pytest.mark.parametrize("bias", [pytest.param({}, id="default"), pytest.param(dict(bias=True), id="bias")])
def test_module_db_gru_cell_samples(bias, device):
    ours, theirs = pair("GRUCell", 5, 10, device=device, **bias)
    x, hx = torch.randn(5, device=device, requires_grad=True), torch.randn(10, device=device, requires_grad=True)
    actual, expected = ours(x, hx), theirs(x, hx)
    assert_close(actual, expected, torch.float32, "h'")
    assert_close(actual, ours(x[None], hx[None])[0], torch.float32, "no-batch-dim")
    for position, (a, e) in enumerate(
        zip(grads([actual], [x, hx, *ours.parameters()]), grads([expected], [x, hx, *theirs.parameters()]), strict=True)
    ):
        assert_close(a, e, torch.float32, f"gradient {position}")


# ------------------------------------------------------------------------------------ module_db: error inputs

CONSTRUCTION_ERRORS = [
    pytest.param((10, 0, 1), {}, ValueError, "hidden_size must be greater than zero", id="hidden_size-0"),
    pytest.param((10, 10, 0), {}, ValueError, "num_layers must be greater than zero", id="num_layers-0"),
    pytest.param((3, 5), dict(bias=0), TypeError, "bias should be of type bool, got: int", id="bias-0"),
    pytest.param((3, 5), dict(bias=1), TypeError, "bias should be of type bool, got: int", id="bias-1"),
    pytest.param((3, 5), dict(bias="True"), TypeError, "bias should be of type bool, got: str", id="bias-str"),
    pytest.param((3, 5), dict(batch_first=0), TypeError, "batch_first should be of type bool, got: int", id="bf-0"),
    pytest.param((3, 5), dict(batch_first=1), TypeError, "batch_first should be of type bool, got: int", id="bf-1"),
    pytest.param(
        (3, 5), dict(batch_first="False"), TypeError, "batch_first should be of type bool, got: str", id="bf-s"
    ),
    pytest.param((3.0, 5), {}, TypeError, "input_size should be of type int, got: float", id="input_size-float"),
    pytest.param(("10", 5), {}, TypeError, "input_size should be of type int, got: str", id="input_size-str"),
    pytest.param((0, 5), {}, ValueError, "input_size must be greater than zero", id="input_size-0"),
    pytest.param((-1, 5), {}, ValueError, "input_size must be greater than zero", id="input_size-negative"),
    pytest.param((3, 5.0), {}, TypeError, "hidden_size should be of type int, got: float", id="hidden_size-float"),
]


@pytest.mark.parametrize("args, kwargs, error, message", CONSTRUCTION_ERRORS)
def test_module_db_gru_construction_errors(args, kwargs, error, message, device):
    with pytest.raises(error, match=message):
        tritongru.GRU(*args, device=device, **kwargs)


@pytest.mark.parametrize("proj_size", [3, 1, -1])
def test_gru_refuses_projections_as_torch_does(proj_size, device):
    """test_nn's check that projections are LSTM-only: GRU(10, 20, proj_size=...) raises torch's ValueError, word
    for word. ``proj_size=0`` (no projection) builds the plain GRU, where torch refuses the keyword itself."""
    message = "proj_size argument is only supported for LSTM, not RNN or GRU"
    with pytest.raises(ValueError) as theirs:
        nn.GRU(10, 20, proj_size=proj_size, device=device)
    with pytest.raises(ValueError) as ours:
        tritongru.GRU(10, 20, proj_size=proj_size, device=device)
    assert str(ours.value) == str(theirs.value) == message
    module = tritongru.GRU(10, 20, proj_size=0, device=device)
    assert module.proj_size == 0 and module.weight_hh_l0.shape == (60, 20)


def test_module_db_gru_forward_dtype_error(device):
    module = tritongru.GRU(3, 5, device=device)
    pattern = (
        r"RNN input dtype .* does not match weight dtype .* "
        r"Convert input: input\.to\(.*\), or convert model: model\.to\(.*\)"
    )
    with pytest.raises(ValueError, match=pattern):
        module(torch.randn(2, 4, 3, device=device, dtype=F64))


CELL_FORWARD_ERRORS = [
    pytest.param((3, 11), (3, 20), RuntimeError, "input has inconsistent input_size: got 11 expected 10", id="input"),
    pytest.param((3, 10), (3, 21), RuntimeError, "hidden0 has inconsistent hidden_size: got 21, expected 20", id="h"),
    pytest.param((3, 10), (5, 20), RuntimeError, "Input batch size 3 doesn't match hidden0 batch size 5", id="batch"),
    pytest.param((3, 10), (3, 1, 1, 20), ValueError, "Expected hidden to be 1D or 2D, got 4D instead", id="hx-4D"),
]


@pytest.mark.parametrize("x_shape, hx_shape, error, message", CELL_FORWARD_ERRORS)
def test_module_db_gru_cell_forward_errors(x_shape, hx_shape, error, message, device):
    cell = tritongru.GRUCell(10, 20, device=device)
    with pytest.raises(error, match=message):
        cell(torch.randn(x_shape, device=device), torch.randn(hx_shape, device=device))


GRU_BAD_CALLS = [
    pytest.param(lambda d: (torch.randn(4, 3, 1, 5, device=d),), id="4-D-input"),
    pytest.param(lambda d: (torch.randn(4, 3, 6, device=d),), id="input_size"),
    pytest.param(lambda d: (torch.randn(0, 3, 5, device=d),), id="empty-sequence"),
    pytest.param(lambda d: (torch.randn(4, 3, 5, device=d, dtype=F64),), id="dtype"),
    pytest.param(lambda d: (torch.randn(4, 3, 5, device=d), torch.randn(2, 4, 7, device=d)), id="hx-batch"),
    pytest.param(lambda d: (torch.randn(4, 3, 5, device=d), torch.randn(2, 3, 8, device=d)), id="hx-hidden"),
    pytest.param(lambda d: (torch.randn(4, 3, 5, device=d), torch.randn(2, 7, device=d)), id="hx-2-D-batched"),
    pytest.param(lambda d: (torch.randn(4, 5, device=d), torch.randn(2, 1, 7, device=d)), id="hx-3-D-unbatched"),
    pytest.param(lambda d: (torch.randn(4, 3, 5, device=d), torch.randn(2, 3, 7, device="meta")), id="hx-device"),
]


@pytest.mark.parametrize("make_args", GRU_BAD_CALLS)
def test_gru_errors_are_catchable_as_torchs(make_args, device):
    """For every bad call torch.nn.GRU refuses: tritongru raises an instance of torch's exception class, and
    its message starts with torch's own."""
    ours, theirs = pair("GRU", 5, 7, num_layers=2, device=device)
    args = make_args(device)
    with pytest.raises((RuntimeError, ValueError, TypeError)) as torch_error:
        theirs(*args)
    with pytest.raises(type(torch_error.value)) as our_error:
        ours(*args)
    assert str(our_error.value).startswith(str(torch_error.value)), str(our_error.value)


CELL_BAD_CALLS = [
    pytest.param(lambda d: (torch.randn(3, 3, 5, device=d),), True, id="3-D-input"),
    pytest.param(lambda d: (torch.randn(3, 6, device=d),), True, id="input_size"),
    pytest.param(lambda d: (torch.randn(3, 5, device=d), torch.randn(4, 7, device=d)), True, id="hx-batch"),
    pytest.param(lambda d: (torch.randn(3, 5, device=d), torch.randn(3, 8, device=d)), True, id="hx-hidden"),
    pytest.param(lambda d: (torch.randn(3, 5, device=d), torch.randn(3, 1, 1, 7, device=d)), True, id="hx-4-D"),
    pytest.param(lambda d: (torch.randn(3, 5, device=d), torch.randn(7, device=d)), False, id="hx-1-D-batched"),
    pytest.param(lambda d: (torch.randn(3, 5, device=d, dtype=F64),), False, id="input-dtype"),
    pytest.param(lambda d: (torch.randn(3, 5, device=d), torch.randn(3, 7, device=d, dtype=F64)), False, id="hx-dtype"),
]


@pytest.mark.parametrize("make_args, same_words", CELL_BAD_CALLS)
def test_cell_errors_are_catchable_as_torchs(make_args, same_words, device):
    """As above for torch.nn.GRUCell. Where torch's words come from deep inside (a matmul's dtype check, or a
    1-D hx reported as a batch-size mismatch), tritongru says what is wrong instead, still catchable as torch's."""
    ours, theirs = pair("GRUCell", 5, 7, device=device)
    args = make_args(device)
    with pytest.raises((RuntimeError, ValueError, TypeError)) as torch_error:
        theirs(*args)
    with pytest.raises(type(torch_error.value)) as our_error:
        ours(*args)
    if same_words:
        assert str(our_error.value).startswith(str(torch_error.value)), str(our_error.value)


# ------------------------------------------------------------------------ test_modules: generic module checks


@pytest.mark.parametrize(
    "config, with_parameters",
    [
        pytest.param(dict(bias=True, bidirectional=True), False, id="bias-bidir-input"),
        pytest.param(dict(bias=False, batch_first=True), True, id="nobias-batch_first-input-and-parameters"),
    ],
)
def test_module_grad_and_gradgrad(config, with_parameters, device):
    """test_modules' test_grad (gradcheck, batched gradients on) and test_gradgrad on module_db samples
    (``GRU(2, 3, num_layers=2)``, unbatched ``(3, 2)`` input), float64. Checked against the input alone where
    the parameters are many (interpreter time); every parameter is checked in tests/test_higher_order.py."""
    module = tritongru.GRU(2, 3, num_layers=2, device=device, dtype=F64, **config)
    names = [name for name, _ in module.named_parameters()]
    params = list(module.parameters())
    x = torch.randn(3, 2, dtype=F64, device=device, requires_grad=True)

    def run(x, *checked):
        values = list(checked) if with_parameters else params
        return torch.func.functional_call(module, dict(zip(names, values, strict=True)), (x,))

    inputs = (x, *params) if with_parameters else (x,)
    assert gradcheck(run, inputs, fast_mode=True, check_batched_grad=True)
    if with_parameters:  # the bidirectional second order: tests/test_higher_order.py
        assert gradgradcheck(run, inputs, fast_mode=True)


def test_repr_is_torchs_plus_variant(device):
    for cls, args, kwargs in (("GRU", (5, 7), dict(num_layers=2, dropout=0.5)), ("GRUCell", (5, 7), dict(bias=False))):
        ours = getattr(tritongru, cls)(*args, variant="classic", device=device, **kwargs)
        theirs = getattr(nn, cls)(*args, device=device, **kwargs)
        assert repr(ours) == repr(theirs).replace(")", ", variant='classic')", 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_whole_module(variant, device):
    """test_modules' test_pickle: torch.save of the module itself, then torch.load, computes the same."""
    module = tritongru.GRU(3, 4, num_layers=2, variant=variant, allow_tf32=True, device=device)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded) is tritongru.GRU and loaded.variant == variant and loaded.allow_tf32
    x = torch.randn(2, 3, 3, device=device)
    with torch.no_grad():
        assert torch.equal(loaded(x)[0], module(x)[0])


def test_factory_kwargs_meta_device_and_to_empty(device):
    """test_modules' test_factory_kwargs / test_device_ctx_init / test_to_empty."""
    for cls in ("GRU", "GRUCell"):
        module = getattr(tritongru, cls)(3, 4, dtype=F64, device="meta")
        assert all(p.dtype == F64 and p.is_meta for p in module.parameters())
        with torch.device("meta"):
            in_context = getattr(tritongru, cls)(3, 4)
        assert all(p.is_meta for p in in_context.parameters())
        materialised = in_context.to_empty(device=device)
        assert all(p.device.type == device.type for p in materialised.parameters())
        reference = getattr(nn, cls)(3, 4)
        assert [(n, p.shape) for n, p in module.named_parameters()] == [
            (n, p.shape) for n, p in reference.named_parameters()
        ]


def test_train_and_eval_modes_differ_with_dropout(device):
    """module_db marks GRU ``train_and_eval_differ``: with inter-layer dropout, training draws masks."""
    module = tritongru.GRU(3, 4, num_layers=2, dropout=0.9, device=device)
    x = torch.randn(2, 3, 3, device=device)
    with torch.no_grad():
        trained = module.train()(x)[0]
        evaluated = module.eval()(x)[0]
        again = module(x)[0]
    assert not torch.allclose(trained, evaluated)
    assert torch.equal(evaluated, again)


# ------------------------------------------------------------------------------------------- test_nn: GRU


def test_GRU_grad_and_gradgrad(device):
    """test_nn's test_GRU_grad_and_gradgrad: a float64 GRU(4, 4), with and without bias, input rand(1, 3, 4);
    gradcheck and gradgradcheck of (output, h_n) with respect to the input. cuDNN cannot do the second (torch
    checks that it says so); tritongru can (the classic form: tests/test_higher_order.py). The full Jacobians
    with bias, a random projection of them (``fast_mode``, CI time) without."""
    x = torch.rand(1, 3, 4, device=device, dtype=F64, requires_grad=True)
    for bias in (True, False):
        module = tritongru.GRU(4, 4, bias=bias, device=device, dtype=F64)
        assert gradcheck(module, (x,), check_batched_grad=False, fast_mode=not bias)
        assert gradgradcheck(module, (x,), check_batched_grad=False, fast_mode=not bias)


@pytest.mark.parametrize("bias", [pytest.param(True, id="bias"), pytest.param(False, id="nobias")])
def test_RNN_cell(bias, device):
    """test_nn's test_RNN_cell: six steps of GRUCell(10, 20) on (3, 10), then backward; here also against torch."""
    ours, theirs = pair("GRUCell", 10, 20, bias=bias, device=device)
    x = torch.randn(3, 10, device=device)
    hx_ours = hx_theirs = torch.randn(3, 20, device=device)
    for _ in range(6):
        hx_ours, hx_theirs = ours(x, hx_ours), theirs(x, hx_theirs)
    assert_close(hx_ours, hx_theirs, torch.float32, "h after six steps")
    hx_ours.sum().backward()
    hx_theirs.sum().backward()
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert_close(p.grad, q.grad, torch.float32, name)


def test_RNN_cell_no_broadcasting(device):
    """test_nn's test_RNN_cell_no_broadcasting: hx of batch 1, hx of hidden 1 and input of size 1 are refused,
    never broadcast."""
    cell = tritongru.GRUCell(10, 20, device=device)
    x, good_hx = torch.randn(3, 10, device=device), torch.randn(3, 20, device=device)
    for bad_x, bad_hx in (
        (x, torch.randn(1, 20, device=device)),
        (x, torch.randn(3, 1, device=device)),
        (torch.randn(3, 1, device=device), good_hx),
    ):
        with pytest.raises(RuntimeError):
            cell(bad_x, bad_hx)


def test_RNN_cell_forward_zero_hidden_size(device):
    cell = tritongru.GRUCell(10, 0, device=device)
    assert cell(torch.randn(3, 10, device=device), torch.randn(3, 0, device=device)).shape == (3, 0)


def test_rnn_args_check(device):
    """test_nn's test_rnn_args_check: GRU(3, 5, 2) on (6, 4, 3) with one size wrong at a time raises RuntimeError."""
    input_size, hidden_size, num_layers, batch, seq_len = 3, 5, 2, 4, 6
    module = tritongru.GRU(input_size, hidden_size, num_layers, device=device)
    good_input, good_hidden = (seq_len, batch, input_size), (num_layers, batch, hidden_size)
    for input_shape, hidden_shape in (
        ((seq_len, batch, input_size + 1), good_hidden),
        (good_input, (num_layers, batch + 1, hidden_size)),
        (good_input, (num_layers, batch, hidden_size + 1)),
        (good_input, (num_layers + 1, batch, hidden_size)),
    ):
        with pytest.raises(RuntimeError):
            module(torch.randn(input_shape, device=device), torch.randn(hidden_shape, device=device))


@pytest.mark.parametrize("variant", VARIANTS)
def test_rnn_initial_hidden_state(variant, device):
    module = tritongru.GRU(30, 20, 2, variant=variant, device=device)
    x = torch.randn(10, 3, 30, device=device)
    with torch.no_grad():
        output_zeros, h_zeros = module(x, torch.zeros(2, 3, 20, device=device))
        output_none, h_none = module(x)
    assert torch.equal(output_zeros, output_none) and torch.equal(h_zeros, h_none)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
def test_rnn_retain_variables(dtype, device):
    """Backward through the same graph five times (retain_graph): the same gradients every time."""
    module = tritongru.GRU(10, 20, num_layers=2, device=device, dtype=dtype)
    x = torch.randn(5, 6, 10, device=device, dtype=dtype, requires_grad=True)
    output = module(x)
    output[0].sum().backward(retain_graph=True)
    first = [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    for _ in range(4):
        module.zero_grad()
        x.grad.zero_()
        output[0].sum().backward(retain_graph=True)
        for a, b in zip([x.grad] + [p.grad for p in module.parameters()], first, strict=True):
            assert torch.equal(a, b)


def test_rnn_weight_norm(device):
    """test_nn's test_rnn_weight_norm pattern: weight norm on a recurrent weight, forward, removal; the flat
    weight list stays consistent with its names."""
    module = tritongru.GRU(8, 8, device=device)
    expected = module(torch.zeros(3, 2, 8, device=device))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        normed = torch.nn.utils.weight_norm(module, name="weight_hh_l0")
        x = torch.randn(3, 2, 8, device=device)
        assert normed(x)[0].shape == (3, 2, 8)
        assert "weight_hh_l0_g" in dict(normed.named_parameters())
        restored = torch.nn.utils.remove_weight_norm(normed, name="weight_hh_l0")
    assert len(restored._flat_weights) == len(restored._flat_weights_names) == 4
    assert_close(restored(torch.zeros(3, 2, 8, device=device))[0], expected, torch.float32, "after removal")
