"""Zoneout in the kernels (issue 15, part 2): ``h_t = m_t h_{t-1} + (1 - m_t) h'_t`` in training, the expectation
in evaluation, forward and backward, both formulations, every launch mode and dtype, against the plain-PyTorch
reference given the same seed (:mod:`tritongru.zoneout` regenerates the kernels' masks bit for bit)."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close, grads
from test_kernels import launch_mode, random_layer  # noqa: F401 (launch_mode: the fixture of every launch mode)

import tritongru
from tritongru import ops, reference
from tritongru.validation import GRUInputError
from tritongru.variants import VARIANTS

P = 0.35
SEED = 2**40 + 12345  # above 2**32: both halves of the seed matter


@pytest.mark.usefixtures("launch_mode")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "T, B, I, H, training, reverse",
    [
        pytest.param(5, 3, 4, 33, True, True, id="T5-B3-H33-training-reverse"),
        pytest.param(4, 3, 4, 33, False, True, id="T4-B3-H33-eval-reverse"),
        pytest.param(1, 1, 3, 17, True, False, id="T1-B1-H17-training"),
        pytest.param(3, 17, 2, 16, True, True, id="T3-B17-H16-training-reverse"),
    ],
)
def test_layer_matches_the_reference_with_the_same_masks(variant, T, B, I, H, training, reverse, device):
    """Output, h_n and every gradient equal the reference's (float32 against float64), with lengths."""
    tensors = random_layer(T, B, I, H, device)
    lengths = torch.randint(1, T + 1, (B,), device=device)
    oracle = [t.detach().double().requires_grad_() for t in tensors]
    options = dict(lengths=lengths, reverse=reverse, layer=1, zoneout_seed=SEED, training=training)
    ours = tritongru.gru_layer(*tensors, variant=variant, zoneout=P, **options)
    expected = reference.gru_layer_ref(*oracle, variant=variant, zoneout=P, **options)
    for name, actual, wanted in zip(
        ["output", "h_n", "d input", "d h0", "d w_ih", "d w_hh", "d b_ih", "d b_hh"],
        [*ours, *grads(list(ours), tensors)],
        [*expected, *grads(list(expected), oracle)],
        strict=True,
    ):
        assert_close(actual, wanted, torch.float32, name)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_multi_layer_bidirectional_in_every_dtype(variant, dtype, device):
    """Two bidirectional layers, one seed for the call: each layer and direction draws its own stream."""
    module = tritongru.GRU(3, 12, num_layers=2, bidirectional=True, variant=variant, device=device, dtype=dtype)
    x = torch.randn(4, 2, 3, device=device, dtype=dtype)
    weights = list(module._weights())
    ours = tritongru.gru(
        x, None, weights, num_layers=2, bidirectional=True, variant=variant, training=True, zoneout=P, zoneout_seed=7
    )
    wide = [w.double() for w in weights]
    expected = reference.gru_ref(
        x.double(), None, wide, num_layers=2, bidirectional=True, variant=variant, training=True, zoneout=P,
        zoneout_seed=7,
    )  # fmt: skip
    for actual, wanted, name in zip(ours, expected, ["output", "h_n"], strict=True):
        assert actual.dtype == dtype
        assert_close(actual, wanted, dtype, name)


@pytest.mark.usefixtures("launch_mode")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_cell_matches_the_reference(variant, training, device):
    cell = tritongru.GRUCell(5, 19, variant=variant, device=device)
    x, hx = torch.randn(3, 5, device=device), torch.randn(3, 19, device=device, requires_grad=True)
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    options = dict(variant=variant, zoneout=P, zoneout_seed=SEED, training=training)
    ours = tritongru.gru_cell(x, hx, *weights, **options)
    oracle_hx = hx.detach().double().requires_grad_()
    expected = reference.gru_cell_ref(x.double(), oracle_hx, *[w.double() for w in weights], **options)
    assert_close(ours, expected, torch.float32, "h'")
    assert_close(grads([ours], [hx])[0], grads([expected], [oracle_hx])[0], torch.float32, "d hx")


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck_and_gradgradcheck_in_float64(variant, device):
    """With a fixed seed every call sees the same masks, so finite differences see a smooth function (fast mode:
    random projections of the Jacobian, a few evaluations instead of one per input element)."""
    T, B, I, H = 3, 2, 2, 5
    x, h0, w_ih, w_hh, b_ih, b_hh = (t.detach().double().requires_grad_() for t in random_layer(T, B, I, H, device))
    lengths = torch.tensor([3, 2], device=device)

    def layer(x, h0, w_hh, b_hh):
        output, h_n = tritongru.gru_layer(
            x, h0, w_ih, w_hh, b_ih, b_hh, variant=variant, lengths=lengths, reverse=True, zoneout=0.5,
            zoneout_seed=3, training=True,
        )  # fmt: skip
        return output, h_n

    assert torch.autograd.gradcheck(layer, (x, h0, w_hh, b_hh), fast_mode=True)
    assert torch.autograd.gradgradcheck(layer, (x, h0, w_hh, b_hh), fast_mode=True)

    def cell(x, h):
        return tritongru.gru_cell(
            x, h, w_ih, w_hh, b_ih, b_hh, variant=variant, zoneout=0.5, zoneout_seed=4, training=True
        )

    assert torch.autograd.gradcheck(cell, (x[0], h0), fast_mode=True)


@pytest.mark.usefixtures("launch_mode")
def test_the_kernels_keep_units_at_rate_p(device):
    """One step from h0 = 0 towards h' = tanh(20) = 1 (z ~ 0): a unit still 0 afterwards was kept. Over
    B x H = 4096 units the kept share is p within 4 sigma, in both forms (the same masks)."""
    B, H = 64, 64
    weight_ih = torch.zeros(3 * H, 1, device=device)
    for variant in VARIANTS:
        z_bias = -40.0 if variant == "cudnn" else 40.0  # h' = the candidate: cudnn (1 - z) n, classic Z H~
        bias_ih = torch.cat([torch.zeros(H), torch.full((H,), z_bias), torch.full((H,), 20.0)]).to(device)
        h = tritongru.gru_cell(
            torch.zeros(B, 1, device=device), torch.zeros(B, H, device=device), weight_ih,
            torch.zeros(3 * H, H, device=device), bias_ih, torch.zeros(3 * H, device=device), variant=variant,
            zoneout=P, zoneout_seed=SEED, training=True,
        )  # fmt: skip
        assert set(torch.unique(h).tolist()) <= {0.0, 1.0}, variant
        kept = (h == 0).double().mean().item()
        assert abs(kept - P) <= 4 * math.sqrt(P * (1 - P) / (B * H)), (variant, kept)


def test_module_draws_a_seed_per_training_call_and_manual_seed_reproduces(device):
    module = tritongru.GRU(3, 9, zoneout=P, device=device)
    x = torch.randn(4, 2, 3, device=device)
    torch.manual_seed(1)
    first, _ = module(x)
    second, _ = module(x)
    torch.manual_seed(1)
    again, _ = module(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    module.eval()
    expected, _ = reference.gru_ref(x, None, list(module._weights()), zoneout=P, training=False)
    assert_close(module(x)[0], expected, torch.float32, "eval output")
    assert "zoneout=0.35" in repr(module)


def test_cell_module_draws_a_seed_per_training_call(device):
    cell = tritongru.GRUCell(3, 9, zoneout=P, device=device)
    x, hx = torch.randn(2, 3, device=device), torch.randn(2, 9, device=device)
    torch.manual_seed(2)
    first, second = cell(x, hx), cell(x, hx)
    torch.manual_seed(2)
    assert torch.equal(cell(x, hx), first)
    assert not torch.equal(first, second)
    cell.eval()
    weights = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    assert_close(cell(x, hx), reference.gru_cell_ref(x, hx, *weights, zoneout=P), torch.float32, "eval h'")


def test_zero_zoneout_is_the_plain_gru(device):
    module = tritongru.GRU(3, 9, device=device)
    x = torch.randn(4, 2, 3, device=device)
    plain, _ = module(x)
    zoned, _ = tritongru.gru(x, None, list(module._weights()), zoneout=0.0, zoneout_seed=5, training=True)
    assert torch.equal(plain, zoned)


@pytest.mark.parametrize("zoneout", [1.0, -0.1, float("nan")])
def test_bad_zoneout_is_refused_everywhere(zoneout, device):
    x = torch.randn(2, 1, 3, device=device)
    module = tritongru.GRU(3, 4, device=device)
    with pytest.raises(GRUInputError, match="zoneout"):
        tritongru.GRU(3, 4, zoneout=zoneout)
    with pytest.raises(GRUInputError, match="zoneout"):
        tritongru.GRUCell(3, 4, zoneout=zoneout)
    with pytest.raises(GRUInputError, match="zoneout"):
        tritongru.gru(x, None, list(module._weights()), zoneout=zoneout)
    with pytest.raises(GRUInputError, match="zoneout_seed"):
        tritongru.gru(x, None, list(module._weights()), zoneout=0.5, zoneout_seed=-1)
    with pytest.raises(GRUInputError, match="zoneout"):
        tritongru.gru_layer(x, None, *module._weights(), zoneout=zoneout)
    with pytest.raises(GRUInputError, match="layer must be a non-negative int"):
        tritongru.gru_layer(x, None, *module._weights(), zoneout=0.5, layer=1.5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_opcheck_with_zoneout(variant, device):
    T, B, I, H = 3, 2, 4, 6
    x, h0, w_ih, w_hh, b_ih, b_hh = (t.detach() for t in random_layer(T, B, I, H, device))
    lengths = torch.tensor([3, 1], device=device)
    for seed in (SEED, None):
        args = (x, h0, w_ih, w_hh, b_ih, b_hh, lengths, variant, False, True, P, seed, 3, True)
        torch.library.opcheck(ops.gru_layer, args)
        torch.library.opcheck(ops.gru_cell, (x[0], h0, w_ih, w_hh, b_ih, b_hh, variant, False, True, P, seed))
        hs, _, gates = ops.gru_layer(*args)
        backward = (
            torch.randn(T, B, H, device=device),
            None,
            hs,
            gates,
            w_hh,
            lengths,
            variant,
            False,
            P,
            seed,
            3,
            True,
        )
        torch.library.opcheck(ops.gru_backward, backward)


@pytest.mark.parametrize("variant", VARIANTS)
def test_torch_compile_fullgraph(variant, device):
    """A fixed seed (training) and the expectation (eval) compile into one graph and give eager's result."""
    module = tritongru.GRU(3, 8, variant=variant, zoneout=P, device=device)
    x = torch.randn(4, 2, 3, device=device)
    weights = list(module._weights())

    def training(x):
        return tritongru.gru(x, None, weights, variant=variant, training=True, zoneout=P, zoneout_seed=SEED)[0]

    torch._dynamo.reset()
    assert torch.equal(torch.compile(training, fullgraph=True)(x), training(x))
    module.eval()
    assert torch.equal(torch.compile(module, fullgraph=True)(x)[0], module(x)[0])
