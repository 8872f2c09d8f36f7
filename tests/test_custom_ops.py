"""The kernels as ``torch.library`` custom ops (``torch.ops.tritongru``): ``opcheck`` on every op (schema, fake
implementation, autograd registration, AOT dispatch with dynamic shapes), the vmap rules (folding into the
batch, one launch per slice when the weights are mapped), gates stored only when a gradient can be asked for,
and a backward that still works when they were not."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

import tritongru.launchers
from tritongru import ops, reference

VARIANTS = [pytest.param(variant, id=variant) for variant in tritongru.VARIANTS]
T, B, I, H = 3, 2, 3, 5


def randn(*shape, device, grad=True, scale=1.0):
    return (scale * torch.randn(*shape, device=device)).requires_grad_(grad)


def layer_args(device, variant, *, bias=True, lengths=None, store_gates=True, grad=True):
    weights = [
        randn(3 * H, I, device=device, grad=grad, scale=0.4),
        randn(3 * H, H, device=device, grad=grad, scale=0.4),
    ]
    biases = [randn(3 * H, device=device, grad=grad), randn(3 * H, device=device, grad=grad)] if bias else [None, None]
    x, h0 = randn(T, B, I, device=device, grad=grad), randn(B, H, device=device, grad=grad)
    return (x, h0, *weights, *biases, lengths, variant, False, store_gates)


def test_ops_are_registered_in_the_tritongru_namespace():
    for name in ("gru_layer", "gru_cell", "gru_backward"):
        op = getattr(torch.ops.tritongru, name)
        assert op.default._schema.name == f"tritongru::{name}"


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "bias, with_lengths, store_gates",
    [
        pytest.param(True, True, True, id="bias-lengths-gates"),
        pytest.param(False, False, False, id="nobias-no-gates"),
    ],
)
def test_opcheck_gru_layer(variant, bias, with_lengths, store_gates, device):
    lengths = torch.tensor([T, 2], device=device) if with_lengths else None
    args = layer_args(device, variant, bias=bias, lengths=lengths, store_gates=store_gates)
    torch.library.opcheck(ops.gru_layer, args)


@pytest.mark.parametrize("variant", VARIANTS)
def test_opcheck_gru_cell(variant, device):
    x, hx, *weights, _, _, _, _ = layer_args(device, variant)
    torch.library.opcheck(ops.gru_cell, (x[0], hx, *weights, variant, False, True))


@pytest.mark.parametrize("variant", VARIANTS)
def test_opcheck_gru_backward(variant, device):
    args = layer_args(device, variant, lengths=torch.tensor([2, T], device=device), grad=False)
    hs, _, gates = ops.gru_layer(*args)
    grad_output, grad_h_n = torch.randn(T, B, H, device=device), torch.randn(B, H, device=device)
    torch.library.opcheck(ops.gru_backward, (grad_output, grad_h_n, hs, gates, args[3], args[6], variant, False))
    torch.library.opcheck(ops.gru_backward, (grad_output, None, hs, gates, args[3], None, variant, False))


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_op_outputs(variant, device):
    """``hs`` holds h0 and every state (frozen past a sequence's length), ``h_n`` the last row, gates only when
    asked for: compared with the reference's states."""
    lengths = torch.tensor([1, T], device=device)
    args = layer_args(device, variant, lengths=lengths, grad=False)
    hs, h_n, gates = ops.gru_layer(*args[:9], False)
    expected = reference.gru_states_ref(*args[:6], variant=variant, lengths=lengths)
    assert hs.shape == (T + 1, B, H) and h_n.shape == (B, H)
    assert_close(hs, expected, torch.float32, "hs")
    assert torch.equal(h_n, hs[-1])
    assert gates.shape == (0,)
    _, _, stored = ops.gru_layer(*args)
    assert stored.shape == (T, B, tritongru.launchers.SAVED_GATES[variant] * H)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("op_name", ["gru_layer", "gru_cell"])
def test_backward_when_gates_were_not_stored(variant, op_name, device):
    """Called directly with ``store_gates=False`` on tensors that need gradients, the op still differentiates
    correctly (its backward runs the forward again to get the gates)."""
    args = layer_args(device, variant, store_gates=False)
    if op_name == "gru_layer":
        hs, h_n, _ = ops.gru_layer(*args)
        loss = hs.sum() + h_n.sum()
        expected_hs = reference.gru_states_ref(*args[:6], variant=variant)
        expected = expected_hs.sum() + expected_hs[-1].sum()
    else:
        x, hx, *weights = args[:6]
        h_new, _ = ops.gru_cell(x[0], hx, *weights, variant, False, False)
        loss = h_new.sum()
        expected = reference.gru_cell_ref(x[0], hx, *weights, variant=variant).sum()
    leaves = [t for t in args[:6] if t is not None]
    for name, a, e in zip(
        ["input", "h0", "weight_ih", "weight_hh", "bias_ih", "bias_hh"],
        torch.autograd.grad(loss, leaves),
        torch.autograd.grad(expected, leaves),
        strict=True,
    ):
        assert_close(a, e, torch.float32, name)


@pytest.mark.parametrize("grad", [pytest.param(False, id="no_grad"), pytest.param(True, id="grad")])
def test_gates_are_stored_only_when_a_gradient_can_be_asked_for(grad, device, monkeypatch):
    stored = []
    real = tritongru.launchers.forward_sequence

    def spy(*args, store_gates=False, **kwargs):
        stored.append(store_gates)
        return real(*args, store_gates=store_gates, **kwargs)

    monkeypatch.setattr(tritongru.launchers, "forward_sequence", spy)
    module = tritongru.GRU(I, H, num_layers=2, device=device)
    with torch.set_grad_enabled(grad):
        module(torch.randn(T, B, I, device=device))
    assert stored == [grad, grad]


# ------------------------------------------------------------------------------------------------------- vmap


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_folds_the_mapped_dimension_into_the_batch(variant, device, monkeypatch):
    """Shared weights, mapped input, h0 and lengths: one launch, the same numbers as one call per slice."""
    V = 3
    args = list(layer_args(device, variant, grad=False))
    x, h0 = torch.randn(V, T, B, I, device=device), torch.randn(B, V, H, device=device)
    lengths = torch.tensor([[1, 3], [2, 2], [3, 1]], device=device)
    launches = []
    real = tritongru.launchers.forward_sequence
    monkeypatch.setattr(tritongru.launchers, "forward_sequence", lambda *a, **k: launches.append(1) or real(*a, **k))

    def run(x, h0, lengths):
        return ops.gru_layer(x, h0, *args[2:6], lengths, variant, False, True)

    hs, h_n, gates = torch.vmap(run, in_dims=(0, 1, 0))(x, h0, lengths)
    assert len(launches) == 1
    for v in range(V):
        expected = run(x[v], h0[:, v], lengths[v])
        for name, actual, wanted in zip(("hs", "h_n", "gates"), (hs[v], h_n[v], gates[v]), expected, strict=True):
            assert_close(actual, wanted, torch.float32, f"slice {v}: {name}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_over_mapped_weights_runs_each_slice(variant, device):
    args = list(layer_args(device, variant, grad=False, store_gates=False))
    weight_hh = torch.stack([args[3], 0.5 * args[3]])
    cell_out, _ = torch.vmap(
        lambda w: ops.gru_cell(args[0][0], args[1], args[2], w, *args[4:6], variant, False, False)
    )(weight_hh)
    hs, _, gates = torch.vmap(lambda w: ops.gru_layer(*args[:3], w, *args[4:]))(weight_hh)
    for v in range(2):
        expected = reference.gru_states_ref(*args[:3], weight_hh[v], *args[4:6], variant=variant)
        assert_close(hs[v], expected, torch.float32, f"layer slice {v}")
        expected_cell = reference.gru_cell_ref(args[0][0], args[1], args[2], weight_hh[v], *args[4:6], variant=variant)
        assert_close(cell_out[v], expected_cell, torch.float32, f"cell slice {v}")
    assert gates.shape == (2, 0)
