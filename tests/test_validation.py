"""Bad input is refused with an error that names the argument, before any kernel launches.

Errors are catchable the way torch's are: ``GRUInputError`` is a ``ValueError`` and a ``RuntimeError``,
``GRUDtypeError`` a ``TypeError``, ``ValueError`` and ``RuntimeError``; where torch has a message for the same
mistake, tritongru's starts with torch's phrase and gives its own detail in parentheses.

Every test here runs with the kernels replaced by tripwires (the ``no_kernels`` fixture): a check that came too
late, after a launch, fails with "kernel launched" instead of the expected error. ``test_tripwire_*`` shows the
tripwires do catch a launch on every path (module, cell, functional; with and without autograd).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ON_GPU
from torch.nn.utils.rnn import pack_padded_sequence

import tritongru
import tritongru.launchers
import tritongru.validation
from tritongru import gru, gru_cell, gru_layer
from tritongru.validation import (
    GRUDtypeError,
    GRUInputError,
    check_device,
    check_num_heads,
    check_weights,
    check_zoneout,
    check_zoneout_seed,
)

IN, H, L, B, T = 5, 7, 2, 3, 4
"""Sizes of the valid inputs every case below spoils in one way."""


class Tripwire:
    """Stands in for a launcher or a jitted kernel: any call or ``kernel[grid]`` fails the test."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args, **kwargs):
        raise AssertionError(f"kernel launched ({self.name})")

    def __getitem__(self, grid):
        return self


@pytest.fixture(autouse=True)
def no_kernels(monkeypatch):
    for name in ("forward_sequence", "backward_sequence", "cell_forward", "gru_forward_kernel", "gru_backward_kernel"):
        monkeypatch.setattr(tritongru.launchers, name, Tripwire(f"tritongru.launchers.{name}"))


@pytest.fixture
def model(device):
    """A 2-layer bidirectional GRU: hx is ``[L*D, B, H] = [4, 3, 7]``."""
    return tritongru.GRU(IN, H, num_layers=L, bidirectional=True, device=device)


@pytest.fixture
def cell(device):
    return tritongru.GRUCell(IN, H, device=device)


def layer_weights(device, input_size=IN, hidden=H, dtype=torch.float32):
    """``weight_ih, weight_hh, bias_ih, bias_hh`` of one valid layer."""
    return [
        torch.randn(3 * hidden, input_size, device=device, dtype=dtype),
        torch.randn(3 * hidden, hidden, device=device, dtype=dtype),
        torch.randn(3 * hidden, device=device, dtype=dtype),
        torch.randn(3 * hidden, device=device, dtype=dtype),
    ]


# ------------------------------------------------------------------------------------ the tripwires work


@pytest.mark.parametrize("grad", [pytest.param(True, id="autograd"), pytest.param(False, id="no_grad")])
def test_tripwire_catches_module_launches(model, cell, device, grad):
    x = torch.randn(T, B, IN, device=device)
    with torch.set_grad_enabled(grad), pytest.raises(AssertionError, match="kernel launched"):
        model(x)
    with torch.set_grad_enabled(grad), pytest.raises(AssertionError, match="kernel launched"):
        cell(x[0])


def test_tripwire_catches_functional_launches(device):
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(AssertionError, match="kernel launched"):
        gru_layer(x, None, *layer_weights(device))
    with pytest.raises(AssertionError, match="kernel launched"):
        gru_cell(x[0], None, *layer_weights(device))
    with pytest.raises(AssertionError, match="kernel launched"):
        gru(x, None, layer_weights(device))


# ------------------------------------------------------------------------------------------ input: ndim, size


@pytest.mark.parametrize(
    "shape, dims",
    [
        pytest.param((IN,), "1-D", id="1-D"),
        pytest.param((T, B, 1, IN), "4-D", id="4-D"),
        pytest.param((), "0-D", id="0-D"),
    ],
)
def test_gru_input_of_wrong_ndim(model, device, shape, dims):
    torch_phrase = rf"GRU: Expected input to be 2D or 3D, got {dims[0]}D instead"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(input must be 2-D .*3-D.*got {dims}"):
        model(torch.randn(shape, device=device))


def test_functional_input_of_wrong_ndim(device):
    with pytest.raises(
        ValueError, match=r"^GRU: Expected input to be 2D or 3D, got 4D instead \(input must be 2-D .*got 4-D"
    ):
        gru(torch.randn(T, B, 1, IN, device=device), None, layer_weights(device))
    with pytest.raises(ValueError, match=r"^input must be 3-D \(T, B, input_size\); got 2-D"):
        gru_layer(torch.randn(T, IN, device=device), None, *layer_weights(device))
    with pytest.raises(ValueError, match=r"^input must be 3-D \(T, B, input_size\); got 1-D"):
        gru_layer(torch.randn(IN, device=device), None, *layer_weights(device))


@pytest.mark.parametrize("shape", [pytest.param((B, T, IN), id="3-D"), pytest.param((), id="0-D")])
def test_cell_input_of_wrong_ndim(cell, device, shape):
    dims = len(shape)
    pattern = rf"^GRUCell: Expected input to be 1D or 2D, got {dims}D instead \(input must be 1-D .*2-D .*got {dims}-D"
    with pytest.raises(ValueError, match=pattern):
        cell(torch.randn(shape, device=device))
    with pytest.raises(ValueError, match=pattern):
        gru_cell(torch.randn(shape, device=device), None, *layer_weights(device))


@pytest.mark.parametrize(
    "form",
    [
        pytest.param("batched", id="batched"),
        pytest.param("unbatched", id="unbatched"),
        pytest.param("packed", id="packed"),
    ],
)
def test_gru_input_of_wrong_input_size(model, device, form):
    """The module knows its input_size: the error must blame the input (not the module's own weights) and say
    what was expected (5 features) and what came (4)."""
    x = torch.randn(T, B, IN - 1, device=device)
    if form == "unbatched":
        x = x[:, 0]
    elif form == "packed":
        x = pack_padded_sequence(x, torch.tensor([4, 2, 3]), enforce_sorted=False)
    with pytest.raises(ValueError, match=rf"^input\b.*input_size.*\b{IN}\b.*\b{IN - 1}\b"):
        model(x)


def test_cell_input_of_wrong_input_size(cell, device):
    torch_phrase = rf"input has inconsistent input_size: got {IN + 1} expected {IN}"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(input must have input_size={IN}.*got {IN + 1}"):
        cell(torch.randn(B, IN + 1, device=device))
    torch_phrase = rf"input has inconsistent input_size: got {IN - 1} expected {IN}"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(input must have input_size={IN}.*got {IN - 1}"):
        cell(torch.randn(IN - 1, device=device))


def test_functional_input_size_disagrees_with_weights(device):
    x = torch.randn(T, B, IN + 1, device=device)
    with pytest.raises(ValueError, match=rf"^weight_ih must have shape \({3 * H}, {IN + 1}\).*input_size.*got"):
        gru_layer(x, None, *layer_weights(device))
    with pytest.raises(ValueError, match=r"^weight_ih must have shape .*input_size"):
        gru_cell(x[0], None, *layer_weights(device))
    with pytest.raises(ValueError, match=r"^layer 0: weight_ih must have shape .*input_size"):
        gru(x, None, layer_weights(device))


# -------------------------------------------------------------------------------------------------- hx shape


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((L, B, H), id="num_layers-not-times-D"),
        pytest.param((2 * L, B + 1, H), id="wrong-B"),
        pytest.param((2 * L, B, H + 1), id="wrong-H"),
        pytest.param((2 * L + 1, B, H), id="too-many-layers"),
    ],
)
def test_gru_hx_of_wrong_shape_batched(model, device, shape):
    x = torch.randn(T, B, IN, device=device)
    expected = rf"\({2 * L}, {B}, {H}\)"
    got = rf"\({', '.join(map(str, shape))}\)"
    torch_phrase = rf"Expected hidden size {expected}, got \[{', '.join(map(str, shape))}\]"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(hx must have shape {expected}.*got {got}"):
        model(x, torch.randn(shape, device=device))


def test_gru_hx_of_wrong_shape_packed(model, device):
    x = pack_padded_sequence(torch.randn(T, B, IN, device=device), torch.tensor([4, 2, 3]), enforce_sorted=False)
    with pytest.raises(ValueError, match=rf"^Expected hidden size .* \(hx must have shape \({2 * L}, {B}, {H}\)"):
        model(x, torch.randn(2 * L, B + 1, H, device=device))


def test_gru_hx_2d_with_batched_input(model, device):
    torch_phrase = r"For batched 3-D input, hx should also be 3-D but got 2-D tensor"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(hx must be 3-D for batched input.*got 2-D"):
        model(torch.randn(T, B, IN, device=device), torch.randn(2 * L, H, device=device))


def test_gru_hx_3d_with_unbatched_input(model, device):
    torch_phrase = r"For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(hx must be 2-D for unbatched input.*got 3-D"):
        model(torch.randn(T, IN, device=device), torch.randn(2 * L, 1, H, device=device))


@pytest.mark.parametrize(
    "shape",
    [pytest.param((L, H), id="num_layers-not-times-D"), pytest.param((2 * L, H + 1), id="wrong-H")],
)
def test_gru_hx_of_wrong_shape_unbatched(model, device, shape):
    with pytest.raises(ValueError, match=r"^Expected hidden size .* \(hx must have shape"):
        model(torch.randn(T, IN, device=device), torch.randn(shape, device=device))


def test_gru_hx_error_reports_the_callers_unbatched_shapes(model, device):
    """For unbatched input the message must quote the shapes the caller deals in, ``(L*D, H)``, not the
    internal batch-of-one ``(L*D, 1, H)``."""
    torch_phrase = rf"Expected hidden size \({2 * L}, {H}\), got \[{2 * L}, {H + 1}\]"
    with pytest.raises(
        ValueError, match=rf"^{torch_phrase} \(hx must have shape \({2 * L}, {H}\).*got \({2 * L}, {H + 1}\)"
    ):
        model(torch.randn(T, IN, device=device), torch.randn(2 * L, H + 1, device=device))


def test_cell_hx_error_reports_the_callers_unbatched_shapes(cell, device):
    torch_phrase = rf"hidden0 has inconsistent hidden_size: got {H + 1}, expected {H}"
    with pytest.raises(ValueError, match=rf"^{torch_phrase} \(hx must have shape \({H},\).*got \({H + 1},\)"):
        cell(torch.randn(IN, device=device), torch.randn(H + 1, device=device))


@pytest.mark.parametrize(
    "x_shape, hx_shape, pattern",
    [
        pytest.param(
            (B, IN),
            (B + 1, H),
            rf"^Input batch size {B} doesn't match hidden0 batch size {B + 1} \(hx must have shape \({B}, {H}\).*"
            rf"got \({B + 1}, {H}\)",
            id="wrong-B",
        ),
        pytest.param(
            (B, IN),
            (B, H - 1),
            rf"^hidden0 has inconsistent hidden_size: got {H - 1}, expected {H} \(hx must have shape \({B}, {H}\).*"
            rf"got \({B}, {H - 1}\)",
            id="wrong-H",
        ),
        pytest.param((B, IN), (H,), r"^hx must be 2-D like input; got 1-D", id="1-D-hx-batched"),
        pytest.param((IN,), (1, H), r"^hx must be 1-D like input; got 2-D", id="2-D-hx-unbatched"),
        pytest.param(
            (B, IN),
            (1, B, H),
            r"^GRUCell: Expected hidden to be 1D or 2D, got 3D instead \(hx must be 2-D like input; got 3-D",
            id="3-D-hx",
        ),
    ],
)
def test_cell_hx_of_wrong_shape(cell, device, x_shape, hx_shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        cell(torch.randn(x_shape, device=device), torch.randn(hx_shape, device=device))


def test_functional_h0_of_wrong_shape(device):
    with pytest.raises(ValueError, match=rf"^h0 must have shape \({B}, {H}\).*got \({B}, {H + 1}\)"):
        gru_layer(torch.randn(T, B, IN, device=device), torch.randn(B, H + 1, device=device), *layer_weights(device))
    with pytest.raises(
        ValueError, match=rf"^Expected hidden size .* \(hx must have shape \(1, {B}, {H}\).*got \(1, {B - 1}, {H}\)"
    ):
        gru(torch.randn(T, B, IN, device=device), torch.randn(1, B - 1, H, device=device), layer_weights(device))


# ------------------------------------------------------------------------------------------------------ dtypes


@pytest.mark.parametrize(
    "dtype",
    [
        pytest.param(torch.int64, id="int64"),
        pytest.param(torch.int32, id="int32"),
        pytest.param(torch.uint8, id="uint8"),
        pytest.param(torch.bool, id="bool"),
        pytest.param(torch.complex64, id="complex64"),
    ],
)
def test_non_floating_input(model, cell, device, dtype):
    x = torch.ones(T, B, IN, device=device).to(dtype)
    pattern = rf"^input must have a floating dtype .*got {dtype}"
    with pytest.raises(TypeError, match=pattern):
        model(x)
    with pytest.raises(TypeError, match=pattern):
        cell(x[0])
    with pytest.raises(TypeError, match=pattern):
        gru(x, None, layer_weights(device))
    with pytest.raises(TypeError, match=pattern):
        gru_layer(x, None, *layer_weights(device))
    with pytest.raises(TypeError, match=pattern):
        gru_cell(x[0], None, *layer_weights(device))


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.int64, id="int64"), pytest.param(torch.complex64, id="complex64")]
)
def test_non_floating_hx(model, cell, device, dtype):
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(TypeError, match=rf"^hx must have a floating dtype .*got {dtype}"):
        model(x, torch.ones(2 * L, B, H, device=device).to(dtype))
    with pytest.raises(TypeError, match=rf"^hx must have a floating dtype .*got {dtype}"):
        cell(x[0], torch.ones(B, H, device=device).to(dtype))


def test_non_floating_weights(device):
    weights = layer_weights(device)
    weights[1] = weights[1].long()
    with pytest.raises(TypeError, match=r"^weight_hh must have a floating dtype"):
        gru_layer(torch.randn(T, B, IN, device=device), None, *weights)


@pytest.mark.parametrize(
    "dtype", [pytest.param(torch.float64, id="float64"), pytest.param(torch.float16, id="float16")]
)
def test_input_dtype_differs_from_weights(model, cell, device, dtype):
    x = torch.randn(T, B, IN, device=device, dtype=dtype)
    with pytest.raises(TypeError, match=rf"weight_ih must have the dtype of input \({dtype}\); got torch.float32"):
        model(x)
    with pytest.raises(TypeError, match=rf"weight_ih must have the dtype of input \({dtype}\); got torch.float32"):
        cell(x[0])
    with pytest.raises(TypeError, match=r"^weight_ih must have the dtype of input"):
        gru_layer(x, None, *layer_weights(device))


def test_bias_dtype_differs_from_input(device):
    weights = layer_weights(device)
    weights[3] = weights[3].double()
    with pytest.raises(TypeError, match=r"^bias_hh must have the dtype of input"):
        gru_cell(torch.randn(B, IN, device=device), None, *weights)


def test_hx_dtype_differs_from_input(model, cell, device):
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(TypeError, match=r"^hx must have the dtype of input \(torch.float32\); got torch.float64"):
        model(x, torch.randn(2 * L, B, H, device=device, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"^hx must have the dtype of input \(torch.float32\); got torch.float16"):
        cell(x[0], torch.randn(B, H, device=device, dtype=torch.float16))
    with pytest.raises(TypeError, match=r"^h0 must have the dtype of input"):
        gru_layer(x, torch.randn(B, H, device=device, dtype=torch.float64), *layer_weights(device))


# ----------------------------------------------------------------------------------------------------- devices

OTHER_DEVICES = [
    pytest.param("meta", id="meta"),
    pytest.param("cpu", id="cpu", marks=pytest.mark.skipif(not ON_GPU, reason="needs a CUDA device beside the CPU")),
]


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_hx_on_another_device(model, cell, device, other):
    x = torch.randn(T, B, IN, device=device)
    torch_phrase = (
        rf"Input and hidden tensors are not at the same device, found input tensor at {device}.* and hidden tensor "
        rf"at {other}"
    )
    with pytest.raises(
        ValueError, match=rf"^{torch_phrase}.* \(hx must be on the device of input \({device}.*\); got {other}"
    ):
        model(x, torch.randn(2 * L, B, H, device=other))
    with pytest.raises(ValueError, match=rf"^hx must be on the device of input .*got {other}"):
        cell(x[0], torch.randn(B, H, device=other))


@pytest.mark.parametrize("other", OTHER_DEVICES)
def test_weights_on_another_device(device, other):
    x = torch.randn(T, B, IN, device=device)
    module = tritongru.GRU(IN, H, device=other)
    with pytest.raises(ValueError, match=r"weight_ih must be on the device of input"):
        module(x)
    module_cell = tritongru.GRUCell(IN, H, device=other)
    with pytest.raises(ValueError, match=r"^weight_ih must be on the device of input"):
        module_cell(x[0])


def test_input_on_the_meta_device(model, cell):
    x = torch.randn(T, B, IN, device="meta")
    with pytest.raises(ValueError, match=r"^input is on meta.*CUDA"):
        model(x)
    with pytest.raises(ValueError, match=r"^input is on meta.*CUDA"):
        cell(x[0])


def test_cpu_input_without_the_interpreter(monkeypatch):
    """A CPU tensor is refused when Triton's interpreter is off (it could not run the kernels)."""
    monkeypatch.setattr(tritongru.validation, "interpreting", lambda: False)
    x = torch.randn(T, B, IN)
    with pytest.raises(ValueError, match=r"^input is on the CPU.*CUDA.*TRITON_INTERPRET"):
        check_device("input", x)
    with pytest.raises(ValueError, match=r"^input is on the CPU"):
        tritongru.GRU(IN, H)(x)
    with pytest.raises(ValueError, match=r"^input is on the CPU"):
        tritongru.GRU(IN, H)(pack_padded_sequence(x, torch.tensor([4, 2, 3]), enforce_sorted=False))
    with pytest.raises(ValueError, match=r"^input is on the CPU"):
        tritongru.GRUCell(IN, H)(x[0])
    with pytest.raises(ValueError, match=r"^input is on the CPU"):
        gru_layer(x, None, *layer_weights("cpu"))


def test_check_device_accepts_the_test_device(device):
    assert check_device("input", torch.zeros(2, device=device)) is None


# ------------------------------------------------------------------------------------------------------ variant


@pytest.mark.parametrize(
    "variant, error, pattern",
    [
        pytest.param("lstm", ValueError, r"^variant must be one of \('cudnn', 'classic'\); got 'lstm'", id="unknown"),
        pytest.param("CUDNN", ValueError, r"^variant must be one of .*got 'CUDNN'", id="wrong-case"),
        pytest.param("", ValueError, r"^variant must be one of .*got ''", id="empty"),
        pytest.param(1, TypeError, r"^variant must be a str.*got int", id="int"),
        pytest.param(None, TypeError, r"^variant must be a str.*got NoneType", id="None"),
    ],
)
def test_unknown_variant(device, variant, error, pattern):
    with pytest.raises(error, match=pattern):
        tritongru.GRU(IN, H, variant=variant, device=device)
    with pytest.raises(error, match=pattern):
        tritongru.GRUCell(IN, H, variant=variant, device=device)
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(error, match=pattern):
        gru(x, None, layer_weights(device), variant=variant)
    with pytest.raises(error, match=pattern):
        gru_layer(x, None, *layer_weights(device), variant=variant)
    with pytest.raises(error, match=pattern):
        gru_cell(x[0], None, *layer_weights(device), variant=variant)


def test_variant_changed_after_construction_is_checked(model, device):
    model.variant = "bogus"
    with pytest.raises(ValueError, match=r"^variant must be one of"):
        model(torch.randn(T, B, IN, device=device))


# ------------------------------------------------------------------------------------------------ empty inputs


@pytest.mark.parametrize(
    "shape",
    [pytest.param((0, B, IN), id="T0"), pytest.param((0, IN), id="unbatched-T0")],
)
def test_empty_sequence(model, device, shape):
    """As torch: a sequence of no steps is refused (an empty batch is not: see tests/test_edges.py)."""
    x = torch.randn(shape, device=device)
    torch_phrase = r"Expected sequence length to be larger than 0 in RNN"
    pattern = rf"^{torch_phrase} \(input must not be empty.*got shape \({', '.join(map(str, shape))},?\)"
    with pytest.raises(ValueError, match=pattern):
        model(x)
    if len(shape) == 3:
        with pytest.raises(RuntimeError, match=pattern):
            gru_layer(x, None, *layer_weights(device))


def test_batch_first_empty_sequence(device):
    module = tritongru.GRU(IN, H, batch_first=True, device=device)
    with pytest.raises(ValueError, match=rf"^Expected sequence length .* \(input must not be empty.*\({B}, 0, {IN}\)"):
        module(torch.randn(B, 0, IN, device=device))


# ----------------------------------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    "lengths, error, pattern",
    [
        pytest.param([4, 0, 2], ValueError, rf"^lengths must lie in \[1, {T}\].*from 0 to 4", id="zero"),
        pytest.param([4, 5, 2], ValueError, rf"^lengths must lie in \[1, {T}\].*from 2 to 5", id="above-T"),
        pytest.param([4, -1, 2], ValueError, rf"^lengths must lie in \[1, {T}\].*from -1", id="negative"),
        pytest.param([4, 2], ValueError, rf"^lengths must have shape \({B},\).*got \(2,\)", id="too-few"),
        pytest.param([4, 2, 1, 1], ValueError, rf"^lengths must have shape \({B},\).*got \(4,\)", id="too-many"),
        pytest.param([[4, 2, 1]], ValueError, r"^lengths must have shape", id="2-D"),
        pytest.param([4.0, 2.0, 1.0], TypeError, r"^lengths must hold integers; got torch.float32", id="float-list"),
        pytest.param(torch.tensor([4.0, 2.0, 1.0]), TypeError, r"^lengths must hold integers", id="float-tensor"),
        pytest.param(torch.tensor([True, True, True]), TypeError, r"^lengths must hold integers", id="bool"),
        pytest.param("abc", TypeError, r"^lengths must be a 1-D tensor or sequence of ints", id="str"),
        pytest.param(object(), TypeError, r"^lengths must be a 1-D tensor or sequence of ints", id="object"),
    ],
)
def test_bad_lengths(device, lengths, error, pattern):
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(error, match=pattern):
        gru(x, None, layer_weights(device), lengths=lengths)
    with pytest.raises(error, match=pattern):
        gru_layer(x, None, *layer_weights(device), lengths=lengths)


def test_lengths_out_of_range_batch_first(device):
    """With batch_first the sequence length is dim 1: lengths are checked against it, not against B."""
    x = torch.randn(B, T, IN, device=device)
    with pytest.raises(ValueError, match=rf"^lengths must lie in \[1, {T}\]"):
        gru(x, None, layer_weights(device), batch_first=True, lengths=[T + 1, 1, 1])


# ------------------------------------------------------------------------------------- functional weights


@pytest.mark.parametrize(
    "num_layers, bidirectional, count",
    [
        pytest.param(1, False, 3, id="L1-3"),
        pytest.param(1, False, 8, id="L1-8"),
        pytest.param(2, False, 4, id="L2-4"),
        pytest.param(1, True, 4, id="L1-bidir-4"),
    ],
)
def test_weights_list_of_wrong_length(device, num_layers, bidirectional, count):
    weights = (layer_weights(device) * 2)[:count]
    expected = 4 * num_layers * (2 if bidirectional else 1)
    with pytest.raises(ValueError, match=rf"^weights must hold 4 tensors .*{expected} in all; got {count}"):
        gru(torch.randn(T, B, IN, device=device), None, weights, num_layers=num_layers, bidirectional=bidirectional)


@pytest.mark.parametrize(
    "index, shape, pattern",
    [
        pytest.param(0, (3 * H, IN + 1), r"^weight_ih must have shape", id="weight_ih-columns"),
        pytest.param(0, (3 * H + 3, IN), r"^weight_ih must have shape", id="weight_ih-rows"),
        pytest.param(1, (3 * H, H + 1), r"^weight_hh must have shape \(3\*hidden_size, hidden_size\)", id="w_hh-cols"),
        pytest.param(1, (3 * H,), r"^weight_hh must have shape", id="weight_hh-1-D"),
        pytest.param(1, (0, 0), r"^weight_hh must have shape", id="weight_hh-empty"),
        pytest.param(2, (3 * H + 1,), rf"^bias_ih must have shape \({3 * H},\)", id="bias_ih"),
        pytest.param(3, (H,), rf"^bias_hh must have shape \({3 * H},\)", id="bias_hh"),
        pytest.param(3, (1, 3 * H), r"^bias_hh must have shape", id="bias_hh-2-D"),
    ],
)
def test_weight_shape_mismatch(device, index, shape, pattern):
    weights = layer_weights(device)
    weights[index] = torch.randn(shape, device=device)
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(ValueError, match=pattern):
        gru_layer(x, None, *weights)
    with pytest.raises(ValueError, match=pattern):
        gru_cell(x[0], None, *weights)


def test_deeper_layer_weight_shape_is_named(device):
    """In gru, the message names the layer and direction at fault; layer 1's input is D*H wide."""
    weights = layer_weights(device) * 2 + layer_weights(device, input_size=2 * H) * 2
    x = torch.randn(T, B, IN, device=device)
    weights[4 * 3 + 1] = torch.randn(3 * H, H + 2, device=device)
    with pytest.raises(ValueError, match=r"^layer 1 \(reverse\): weight_hh must have shape"):
        gru(x, None, weights, num_layers=2, bidirectional=True)
    weights = layer_weights(device) * 2 + layer_weights(device, input_size=H) * 2
    with pytest.raises(ValueError, match=rf"^layer 1: weight_ih must have shape \({3 * H}, {2 * H}\)"):
        gru(x, None, weights, num_layers=2, bidirectional=True)


@pytest.mark.parametrize("missing", [pytest.param(3, id="bias_ih-without-bias_hh"), pytest.param(2, id="bias_hh-only")])
def test_one_bias_without_the_other(device, missing):
    weights = layer_weights(device)
    weights[missing] = None
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(ValueError, match=r"^bias_ih and bias_hh must be given together"):
        gru_layer(x, None, *weights)
    with pytest.raises(ValueError, match=r"^bias_ih and bias_hh must be given together"):
        gru_cell(x[0], None, *weights)
    with pytest.raises(ValueError, match=r"^layer 0: bias_ih and (layer 0: )?bias_hh must be given together"):
        gru(x, None, weights)


@pytest.mark.parametrize(
    "num_layers, dropout, pattern",
    [
        pytest.param(0, 0.0, r"^num_layers must be a positive int; got 0", id="num_layers-0"),
        pytest.param(1.0, 0.0, r"^num_layers must be a positive int; got 1.0", id="num_layers-float"),
        pytest.param(1, 1.5, r"^dropout must lie in \[0, 1\]; got 1.5", id="dropout-above-1"),
        pytest.param(1, -0.1, r"^dropout must lie in \[0, 1\]; got -0.1", id="dropout-negative"),
    ],
)
def test_functional_bad_options(device, num_layers, dropout, pattern):
    with pytest.raises(ValueError, match=pattern):
        gru(torch.randn(T, B, IN, device=device), None, layer_weights(device), num_layers=num_layers, dropout=dropout)


# -------------------------------------------------------------------------------------------------- non-tensors


@pytest.mark.parametrize(
    "value, type_name",
    [
        pytest.param([[0.0] * IN] * B, "list", id="list"),
        pytest.param(1.0, "float", id="float"),
        pytest.param(None, "NoneType", id="None"),
    ],
)
def test_non_tensor_input(model, cell, device, value, type_name):
    pattern = rf"^input must be a torch.Tensor; got {type_name}"
    with pytest.raises(TypeError, match=pattern):
        model(value)
    with pytest.raises(TypeError, match=pattern):
        cell(value)
    with pytest.raises(TypeError, match=pattern):
        gru(value, None, layer_weights(device))
    with pytest.raises(TypeError, match=pattern):
        gru_layer(value, None, *layer_weights(device))
    with pytest.raises(TypeError, match=pattern):
        gru_cell(value, None, *layer_weights(device))


def test_non_tensor_state_and_weights(model, cell, device):
    x = torch.randn(T, B, IN, device=device)
    with pytest.raises(TypeError, match=r"^hx must be a torch.Tensor; got list"):
        model(x, [[0.0] * H] * B)
    with pytest.raises(TypeError, match=r"^hx must be a torch.Tensor; got float"):
        cell(x[0], 0.0)
    with pytest.raises(TypeError, match=r"^h0 must be a torch.Tensor; got int"):
        gru_layer(x, 0, *layer_weights(device))
    weights = layer_weights(device)
    weights[1] = weights[1].tolist()
    with pytest.raises(TypeError, match=r"^weight_hh must be a torch.Tensor; got list"):
        gru_layer(x, None, *weights)
    weights = layer_weights(device)
    weights[0] = None
    with pytest.raises(TypeError, match=r"^layer 0: weight_ih must be a torch.Tensor; got NoneType"):
        gru(x, None, weights)


# ------------------------------------------------------------------ variant arguments: heads, zoneout, seeds

DIVIDES = r"^num_heads must be a positive int that divides hidden_size=12 \(each head owns .*\); "
SEED_RANGE = r"^zoneout_seed must be an int in \[0, 2\*\*63 - 1\] or None; "


@pytest.mark.parametrize(
    "num_heads, hidden, error, pattern",
    [
        pytest.param(0, 12, GRUInputError, DIVIDES + "got 0$", id="0"),
        pytest.param(-3, 12, GRUInputError, r"^num_heads must be a positive int .*; got -3$", id="negative"),
        pytest.param(5, 12, GRUInputError, DIVIDES + "got 5$", id="5"),
        pytest.param(2, 17, GRUInputError, r"divides hidden_size=17 .*got 2$", id="odd-hidden"),
        pytest.param(2.0, 12, GRUDtypeError, r"^num_heads must be an int .*; got float$", id="float"),
        pytest.param(True, 12, GRUDtypeError, r"^num_heads must be an int .*; got bool$", id="bool"),
        pytest.param("3", 12, GRUDtypeError, r"^num_heads must be an int .*; got str$", id="str"),
        pytest.param(None, 12, GRUDtypeError, r"^num_heads must be an int .*; got NoneType$", id="None"),
    ],
)
def test_bad_num_heads(num_heads, hidden, error, pattern):
    with pytest.raises(error, match=pattern):
        check_num_heads(num_heads, hidden)


@pytest.mark.parametrize("num_heads, hidden", [(1, 17), (17, 17), (4, 12), (np.int64(3), 12)])
def test_good_num_heads(num_heads, hidden):
    checked = check_num_heads(num_heads, hidden)
    assert checked == num_heads and type(checked) is int


@pytest.mark.parametrize(
    "zoneout, error, pattern",
    [
        pytest.param(1.0, GRUInputError, r"^zoneout must be a float in \[0, 1\) .*; got 1\.0$", id="one"),
        pytest.param(1.5, GRUInputError, r"^zoneout must be a float in \[0, 1\) .*; got 1\.5$", id="above"),
        pytest.param(-0.1, GRUInputError, r"^zoneout must be a float in \[0, 1\) .*; got -0\.1$", id="negative"),
        pytest.param(float("nan"), GRUInputError, r"^zoneout must be a float in \[0, 1\) .*; got nan$", id="nan"),
        pytest.param(1, GRUInputError, r"^zoneout must be a float in \[0, 1\) .*; got 1$", id="int-one"),
        pytest.param("0.1", GRUDtypeError, r"^zoneout must be a float in \[0, 1\) .*; got str$", id="str"),
        pytest.param(None, GRUDtypeError, r"^zoneout must be a float .*; got NoneType$", id="None"),
        pytest.param(False, GRUDtypeError, r"^zoneout must be a float .*; got bool$", id="bool"),
        pytest.param(torch.tensor(0.1), GRUDtypeError, r"^zoneout must be a float .*; got Tensor$", id="tensor"),
    ],
)
def test_bad_zoneout(zoneout, error, pattern):
    with pytest.raises(error, match=pattern):
        check_zoneout(zoneout)


@pytest.mark.parametrize("zoneout", [0, 0.0, 0.25, np.float32(0.5), 1 - 2**-40])
def test_good_zoneout(zoneout):
    assert check_zoneout(zoneout) == float(zoneout)


@pytest.mark.parametrize(
    "seed, error, pattern",
    [
        pytest.param(1.0, GRUDtypeError, r"^zoneout_seed must be an int or None; got float$", id="float"),
        pytest.param("7", GRUDtypeError, r"^zoneout_seed must be an int or None; got str$", id="str"),
        pytest.param(True, GRUDtypeError, r"^zoneout_seed must be an int or None; got bool$", id="bool"),
        pytest.param(torch.tensor(7), GRUDtypeError, r"^zoneout_seed must be an int or None; got Tensor$", id="tensor"),
        pytest.param(-1, GRUInputError, SEED_RANGE + "got -1$", id="-1"),
        pytest.param(2**63, GRUInputError, SEED_RANGE + f"got {2**63}$", id="2^63"),
    ],
)
def test_bad_zoneout_seed(seed, error, pattern):
    with pytest.raises(error, match=pattern):
        check_zoneout_seed(seed)


@pytest.mark.parametrize("seed", [None, 0, 1, 2**63 - 1, np.int64(12)])
def test_good_zoneout_seed(seed):
    checked = check_zoneout_seed(seed)
    assert checked == seed and (seed is None or type(checked) is int)


def test_multi_head_weight_shapes(device):
    """``check_weights(num_heads=k)`` takes the diagonal blocks ``[3H, H // k]`` and names the expected shape."""
    weights = layer_weights(device, hidden=12)
    blocks = torch.randn(36, 4, device=device)
    assert check_weights("", weights[0], blocks, weights[2], weights[3], IN, num_heads=3) == 12
    pattern = r"^layer 0: weight_hh must have shape \(3\*hidden_size, hidden_size // num_heads\) with num_heads=3"
    with pytest.raises(GRUInputError, match=pattern + r"; got \(36, 12\)$"):
        check_weights("layer 0: ", *weights, IN, num_heads=3)
    dense = r"^weight_hh must have shape \(3\*hidden_size, hidden_size\); got \(36, 4\)$"
    with pytest.raises(GRUInputError, match=dense):
        check_weights("", weights[0], blocks, weights[2], weights[3], IN)
