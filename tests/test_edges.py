"""Edges, each as torch behaves: an empty batch and ``GRUCell(n, 0)`` give empty (differentiable) outputs; a
wrong number of dimensions is reported as such before any size; the reference takes the functional API's
arguments (``h0=None`` included) and computes the same; each call is checked once."""

from __future__ import annotations

import inspect

import pytest
import torch
from helpers import assert_close
from torch import nn

import tritongru
import tritongru.functional
from tritongru import reference

VARIANTS = [pytest.param(variant, id=variant) for variant in tritongru.VARIANTS]


def module_weights(module: nn.RNNBase) -> list[torch.Tensor]:
    """``weight_ih, weight_hh, bias_ih, bias_hh`` per layer and direction (a module with biases)."""
    return [getattr(module, name) for names in module._all_weights for name in names]


def assert_like_torch(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert actual.requires_grad == expected.requires_grad


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "config, shape, hx",
    [
        pytest.param(dict(num_layers=2, bidirectional=True), (4, 0, 3), False, id="time-major"),
        pytest.param(dict(batch_first=True), (0, 4, 3), True, id="batch_first-hx"),
    ],
)
def test_empty_batch_gru(variant, config, shape, hx, device):
    ours = tritongru.GRU(3, 5, variant=variant, device=device, **config)
    theirs = nn.GRU(3, 5, device=device, **config)
    x = torch.randn(shape, device=device, requires_grad=True)
    h0 = torch.randn(ours.num_layers * (2 if ours.bidirectional else 1), 0, 5, device=device) if hx else None
    output, h_n = ours(x, h0)
    expected_output, expected_h_n = theirs(x, h0)
    assert_like_torch(output, expected_output)
    assert_like_torch(h_n, expected_h_n)
    (output.sum() + h_n.sum()).backward()
    assert x.grad.shape == x.shape
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name


@pytest.mark.parametrize("variant", VARIANTS)
def test_empty_batch_cell_and_functional(variant, device):
    cell = tritongru.GRUCell(3, 5, variant=variant, device=device)
    x = torch.randn(0, 3, device=device, requires_grad=True)
    expected = nn.GRUCell(3, 5, device=device)(x)
    h = cell(x)
    assert_like_torch(h, expected)
    h.sum().backward()
    assert torch.equal(cell.weight_hh.grad, torch.zeros_like(cell.weight_hh))
    weights = list(cell.parameters())
    output, h_n = tritongru.gru_layer(torch.randn(4, 0, 3, device=device), None, *weights, variant=variant)
    assert output.shape == (4, 0, 5) and h_n.shape == (0, 5)
    assert tritongru.gru_cell(x, None, *weights, variant=variant).shape == (0, 5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("with_hx", [pytest.param(True, id="hx"), pytest.param(False, id="no-hx")])
def test_cell_of_zero_hidden_size(variant, with_hx, device):
    """``torch.nn.GRUCell(10, 0)`` is valid and steps to ``[B, 0]`` (torch's test_RNN_cell_forward_zero_hidden_size)."""
    ours = tritongru.GRUCell(10, 0, variant=variant, device=device)
    theirs = nn.GRUCell(10, 0, device=device)
    x = torch.randn(3, 10, device=device, requires_grad=True)
    hx = torch.randn(3, 0, device=device) if with_hx else None
    h = ours(x, hx)
    assert_like_torch(h, theirs(x, hx))
    (h.sum() + x.sum()).backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_wrong_ndim_is_reported_before_input_size(device):
    """A 4-D input to a GRU(8, ...) whose last dimension is 2: the error is about the dimensions (named, with
    the shape), not about input_size."""
    module = tritongru.GRU(8, 5, device=device)
    with pytest.raises(ValueError, match=r"got 4D instead.*L, N, H_in.*got 4-D of shape \(3, 2, 4, 2\)") as info:
        module(torch.randn(3, 2, 4, 2, device=device))
    assert "input_size" not in str(info.value)


# ------------------------------------------------------------------------------------------- the reference

VARIANT_ARGUMENTS = {"num_heads", "zoneout_mask"}
REFERENCE_ONLY = {"gru": VARIANT_ARGUMENTS, "gru_layer": VARIANT_ARGUMENTS, "gru_cell": VARIANT_ARGUMENTS}
"""Arguments of the reference that the fast path does not take: multi-head (waiting for its kernels) and an
explicit zoneout mask (the kernels draw theirs from ``zoneout_seed``, never from a tensor in memory)."""


@pytest.mark.parametrize(
    "fast, ref",
    [
        pytest.param(tritongru.gru, reference.gru_ref, id="gru"),
        pytest.param(tritongru.gru_layer, reference.gru_layer_ref, id="gru_layer"),
        pytest.param(tritongru.gru_cell, reference.gru_cell_ref, id="gru_cell"),
    ],
)
def test_reference_has_the_functional_signature(fast, ref):
    """Every argument of the fast path is the reference's, of the same kind and default; the reference has more
    only where its variants (issue 15) wait for the kernels or take a mask, and those are keyword-only."""
    fast_parameters, ref_parameters = inspect.signature(fast).parameters, inspect.signature(ref).parameters
    assert ref_parameters.keys() - fast_parameters.keys() == REFERENCE_ONLY[fast.__name__] - fast_parameters.keys()
    for name, parameter in fast_parameters.items():
        other = ref_parameters[name]
        assert (parameter.kind, parameter.default) == (other.kind, other.default), name
    for name in ref_parameters.keys() - fast_parameters.keys():
        assert ref_parameters[name].kind is inspect.Parameter.KEYWORD_ONLY, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_takes_the_functional_arguments(variant, device):
    """The same call, by name, to the fast path and the reference: the same result (h0/hx None, lengths,
    batch_first, bidirectional, unbatched, dropout under the same seed)."""
    module = tritongru.GRU(3, 4, num_layers=2, bidirectional=True, device=device)
    weights = module_weights(module)
    x = torch.randn(2, 5, 3, device=device)
    options = dict(num_layers=2, bidirectional=True, batch_first=True, variant=variant, lengths=[5, 2])

    def with_dropout(f):
        torch.manual_seed(3)
        return f(x, None, weights, dropout=0.5, training=True, **options)

    with torch.no_grad():
        for call in (
            lambda f: f(x, None, weights, **options),
            lambda f: f(x[0], None, weights, num_layers=2, bidirectional=True, variant=variant),
            with_dropout,
        ):
            for a, e in zip(call(tritongru.gru), call(reference.gru_ref), strict=True):
                assert_close(a, e, torch.float32, "gru vs gru_ref")
        layer = dict(variant=variant, lengths=torch.tensor([2, 5], device=device), reverse=True, allow_tf32=False)
        x_tm = x.transpose(0, 1)
        for a, e in zip(
            tritongru.gru_layer(x_tm, None, *weights[:4], **layer),
            reference.gru_layer_ref(x_tm, None, *weights[:4], **layer),
            strict=True,
        ):
            assert_close(a, e, torch.float32, "gru_layer vs gru_layer_ref")
        assert_close(
            tritongru.gru_cell(x[:, 0], None, *weights[:4], variant=variant),
            reference.gru_cell_ref(x[:, 0], None, *weights[:4], variant=variant),
            torch.float32,
            "gru_cell vs gru_cell_ref",
        )


# ------------------------------------------------------------------------------------- checked once per call


def test_module_weights_are_not_rechecked_per_call(device, monkeypatch):
    """A module's weight shapes are right by construction: its calls check the input, hx and the weights'
    dtype and device only; the functional API checks every layer's weights once per call."""
    calls = []
    real = tritongru.functional.check_weights
    monkeypatch.setattr(
        tritongru.functional, "check_weights", lambda *args, **kwargs: calls.append(args[0]) or real(*args, **kwargs)
    )
    module = tritongru.GRU(3, 4, num_layers=2, bidirectional=True, device=device)
    x = torch.randn(2, 2, 3, device=device)
    with torch.no_grad():
        module(x)
        assert calls == []
        tritongru.gru(x, None, module_weights(module), num_layers=2, bidirectional=True)
    assert calls == ["layer 0: ", "layer 0 (reverse): ", "layer 1: ", "layer 1 (reverse): "]
