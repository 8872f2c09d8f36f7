"""Derivatives beyond the first backward: double backward (gradient penalties, Hessian-vector products) checked
numerically with ``gradgradcheck`` in float64 and against ``torch.nn.GRU`` (which does it on the CPU, not with
cuDNN), and ``torch.func``: ``grad``, ``vjp``, ``jacrev``, ``jvp``, ``jacfwd``, ``hessian``, ``vmap`` (per-sample
gradients over ``functional_call``; mapped weights), and ``gradcheck``'s batched-gradient check.

Oracles: ``torch.nn.GRU``/``GRUCell`` on the CPU for cudnn, :mod:`tritongru.reference` for both formulations.
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close
from torch.autograd import gradcheck, gradgradcheck
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

import tritongru
import tritongru.launchers
from tritongru import reference

VARIANTS = [pytest.param(variant, id=variant) for variant in tritongru.VARIANTS]
F64 = torch.float64


def as_function(module):
    """``module`` as a function of (input, hx, *parameters), for gradcheck."""
    names = [name for name, _ in module.named_parameters()]
    return lambda x, hx, *params: functional_call(module, dict(zip(names, params, strict=True)), (x, hx))


def leaf(*shape, device, dtype=F64, scale=1.0):
    return (scale * torch.randn(*shape, dtype=dtype, device=device)).requires_grad_()


# ------------------------------------------------------------------------------------------ double backward


@pytest.mark.parametrize(
    "variant, config, batch, batched_grad",
    [  # each form once, each configuration once
        pytest.param("cudnn", dict(bias=True), 2, True, id="bias-batched_grad-cudnn"),
        pytest.param("classic", dict(bias=False, bidirectional=True), 1, False, id="bidir-B1-classic"),
    ],
)
def test_gradgradcheck_gru_module(variant, config, batch, batched_grad, device):
    module = tritongru.GRU(2, 2, variant=variant, device=device, dtype=F64, **config)
    directions = 2 if module.bidirectional else 1
    x, hx = leaf(2, batch, 2, device=device), leaf(directions, batch, 2, device=device, scale=0.5)
    inputs = (x, hx, *module.parameters())
    assert gradgradcheck(as_function(module), inputs, fast_mode=True, check_batched_grad=batched_grad)


@pytest.mark.parametrize("variant", ["classic"])  # the cudnn form's double backward: the module's and torch's tests
def test_gradgradcheck_gru_cell(variant, device):
    cell = tritongru.GRUCell(2, 3, variant=variant, device=device, dtype=F64)
    inputs = (leaf(2, 2, device=device), leaf(2, 3, device=device), *cell.parameters())
    assert gradgradcheck(as_function(cell), inputs, fast_mode=True, check_batched_grad=True)


@pytest.mark.parametrize("variant", ["cudnn"])  # the classic form's: the module's bidirectional case
def test_gradgradcheck_functional_layer_with_lengths_and_reverse(variant, device):
    lengths = torch.tensor([1, 3], device=device)
    tensors = [
        leaf(3, 2, 2, device=device),
        leaf(2, 3, device=device),
        leaf(9, 2, device=device),
        leaf(9, 3, device=device),
    ]

    def run(x, h0, w_ih, w_hh):
        return tritongru.gru_layer(x, h0, w_ih, w_hh, variant=variant, lengths=lengths, reverse=True)

    assert gradgradcheck(run, tensors, fast_mode=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_penalty_matches_oracle(variant, device):
    """The issue's case: ``d/dθ |d loss/dx|²`` (create_graph, then backward). cudnn: against torch.nn.GRU on
    the CPU; classic: against the reference."""
    torch.manual_seed(4)
    ours = tritongru.GRU(3, 5, num_layers=2, variant=variant, device=device)
    oracle = torch.nn.GRU(3, 5, num_layers=2, device="cpu")
    oracle.load_state_dict({k: v.cpu() for k, v in ours.state_dict().items()})
    weights = [p for layer in oracle.all_weights for p in layer]
    x = torch.randn(4, 2, 3)

    def penalty(run, x):
        x = x.clone().requires_grad_()
        output, h_n = run(x)
        (dx,) = torch.autograd.grad(output.pow(2).sum() + h_n.sum(), x, create_graph=True)
        (dx.pow(2).sum() + output.sum()).backward()
        return x.grad

    if variant == "cudnn":
        expected_dx = penalty(oracle, x)
    else:
        expected_dx = penalty(lambda x: reference.gru_ref(x, None, weights, num_layers=2, variant=variant), x)
    actual_dx = penalty(ours, x.to(device))
    assert actual_dx is not None, "no gradient reached the input"
    assert_close(actual_dx.cpu(), expected_dx, torch.float32, "d penalty / dx")
    for (name, p), q in zip(ours.named_parameters(), oracle.parameters(), strict=True):
        assert p.grad.abs().sum() > 0, name
        assert_close(p.grad.cpu(), q.grad, torch.float32, name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_hessian_vector_product_of_cell(variant, device):
    cell = tritongru.GRUCell(3, 4, variant=variant, device=device, dtype=F64)
    x, h = leaf(2, 3, device=device), leaf(2, 4, device=device)
    v = torch.randn_like(x)

    def hvp(run):
        (dx,) = torch.autograd.grad(run(x, h).tanh().sum(), x, create_graph=True)
        (hv,) = torch.autograd.grad((dx * v).sum(), x)
        return hv

    expected = hvp(lambda x, h: reference.gru_cell_ref(x, h, *cell.parameters(), variant=variant))
    assert_close(hvp(cell), expected, F64, "Hessian-vector product")


# ------------------------------------------------------------------------------------------------- torch.func


def module_and_reference(variant, device, **config):
    """A GRU and a function of (params, x) computing the same thing through the reference."""
    module = tritongru.GRU(3, 4, variant=variant, device=device, **config)

    def ref(params, x):
        weights = [params.get(name) for names in module._all_weights for name in (*names, None, None)[:4]]
        return reference.gru_ref(x, None, weights, variant=variant, bidirectional=module.bidirectional)

    return module, ref


@pytest.mark.parametrize("variant", VARIANTS)
def test_func_grad_vjp_jacrev(variant, device):
    module, ref = module_and_reference(variant, device)
    params = {k: v.detach() for k, v in module.named_parameters()}
    x, target = torch.randn(3, 2, 3, device=device), torch.randn(3, 2, 4, device=device)

    def loss(run):
        return lambda p, x: (run(p, x)[0] - target).pow(2).sum()

    ours = grad(loss(lambda p, x: functional_call(module, p, (x,))))(params, x)
    expected = grad(loss(ref))(params, x)
    for name in params:
        assert_close(ours[name], expected[name], torch.float32, f"grad {name}")

    output, vjp_fn = vjp(lambda x: module(x)[0], x)
    cotangent = torch.randn_like(output)
    expected_output, expected_vjp = vjp(lambda x: ref(params, x)[0], x)
    assert_close(output, expected_output, torch.float32, "vjp output")
    assert_close(vjp_fn(cotangent)[0], expected_vjp(cotangent)[0], torch.float32, "vjp")

    small = x[:2, :1]
    assert_close(
        jacrev(lambda x: module(x)[1])(small), jacrev(lambda x: ref(params, x)[1])(small), torch.float32, "jacrev"
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_func_forward_mode(variant, device):
    """``jvp``/``jacfwd``/``hessian`` go through the reference (no kernel computes tangents): same numbers."""
    module = tritongru.GRU(3, 4, variant=variant, device=device, dtype=F64)
    cell = tritongru.GRUCell(3, 4, variant=variant, device=device, dtype=F64)
    weights = list(module.parameters())
    x = torch.randn(3, 2, 3, dtype=F64, device=device)
    tangent = torch.randn_like(x)
    _, ours = jvp(lambda x: module(x)[0], (x,), (tangent,))
    _, expected = jvp(lambda x: reference.gru_ref(x, None, weights, variant=variant)[0], (x,), (tangent,))
    assert_close(ours, expected, F64, "jvp")
    assert_close(
        jacfwd(lambda h: cell(x[0], h))(x[0, :, :1].repeat(1, 4)),
        jacfwd(lambda h: reference.gru_cell_ref(x[0], h, *cell.parameters(), variant=variant))(
            x[0, :, :1].repeat(1, 4)
        ),
        F64,
        "jacfwd",
    )
    assert_close(
        hessian(lambda x: cell(x).sum())(x[0, 0]),
        hessian(lambda x: reference.gru_cell_ref(x, None, *cell.parameters(), variant=variant).sum())(x[0, 0]),
        F64,
        "hessian",
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_per_sample_gradients(variant, device, monkeypatch):
    """``vmap(grad(loss))`` over ``functional_call``: each sample's gradient equals a separate backward of that
    sample alone through the reference; the samples are folded into the kernels' batch (one forward and one
    backward launch per layer and direction)."""
    module, ref = module_and_reference(variant, device, bidirectional=True)
    params = {k: v.detach() for k, v in module.named_parameters()}
    x, y = torch.randn(4, 3, 3, device=device), torch.randn(4, 3, 8, device=device)
    launches = []
    for name in ("forward_sequence", "backward_sequence"):
        real = getattr(tritongru.launchers, name)
        spy = lambda *args, real=real, name=name, **kwargs: launches.append(name) or real(*args, **kwargs)
        monkeypatch.setattr(tritongru.launchers, name, spy)

    def loss(p, x, y):
        return (functional_call(module, p, (x,))[0] - y).pow(2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 1, 1))(params, x, y)
    assert sorted(launches) == ["backward_sequence"] * 2 + ["forward_sequence"] * 2
    for b in range(x.shape[1]):
        single = {k: v.clone().requires_grad_() for k, v in params.items()}
        (ref(single, x[:, b : b + 1])[0] - y[:, b : b + 1]).pow(2).sum().backward()
        for name, value in single.items():
            assert_close(per_sample[name][b], value.grad, torch.float32, f"sample {b}: {name}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_vmap_over_weights_ensembles(variant, device):
    """vmap over stacked parameters (a model ensemble): one run per member, each as if called alone."""
    members = [tritongru.GRU(3, 4, variant=variant, device=device) for _ in range(2)]
    stacked = torch.func.stack_module_state(members)[0]
    x = torch.randn(3, 2, 3, device=device)
    outputs = vmap(lambda p: functional_call(members[0], p, (x,))[0])(stacked)
    with torch.no_grad():
        for index, member in enumerate(members):
            assert_close(outputs[index].detach(), member(x)[0], torch.float32, f"member {index}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_with_batched_gradients(variant, device):
    """Every input and parameter (two layers, no bias: tests/test_torch_gru_suite.py)."""
    module = tritongru.GRU(2, 3, variant=variant, device=device, dtype=F64)
    cell = tritongru.GRUCell(2, 3, variant=variant, device=device, dtype=F64)
    x = leaf(2, 2, 2, device=device)
    inputs = (x, leaf(1, 2, 3, device=device), *module.parameters())
    assert gradcheck(as_function(module), inputs, fast_mode=True, check_batched_grad=True)
    inputs = (x[0], leaf(2, 3, device=device), *cell.parameters())
    assert gradcheck(as_function(cell), inputs, fast_mode=True, check_batched_grad=True)
