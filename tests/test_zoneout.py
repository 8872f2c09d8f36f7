"""Zoneout: the mask function, on the device and on the host, bit for bit; the reference's zoneout semantics.

The device side (``tritongru.kernels.zoneout.zoneout_keep``, Triton's ``tl.rand``) runs in small test kernels
here, through Triton's interpreter on the CPU or on a GPU; the host side (:mod:`tritongru.zoneout`) is plain
PyTorch. The two must agree on every bit, so that the reference regenerates exactly the masks the kernels draw.
"""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl
import tritongru.kernels.zoneout as device_zoneout
from helpers import tolerance
from torch.autograd import gradcheck, gradgradcheck
from tritongru.kernels.zoneout import zoneout_keep

from tritongru import reference
from tritongru import zoneout as host_zoneout
from tritongru.validation import GRUDtypeError, GRUInputError
from tritongru.variants import VARIANTS
from tritongru.zoneout import (
    MAX_SEED,
    STREAM_SHIFT,
    philox4x32,
    philox_rand,
    philox_randint,
    zoneout_keep_mask,
    zoneout_keep_masks,
    zoneout_stream,
)

F64 = torch.float64
SEEDS = [0, 1, 2**31 - 1, 2**31, 2**32 + 5, 0x5DEECE66D, MAX_SEED]
"""Seeds at the edges of Triton's argument types (int32, int64) and of the two 32-bit key words."""


@triton.jit
def _random_words_kernel(offset_ptr, word_ptr, uniform_ptr, seed, N, BLOCK: tl.constexpr):
    o = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    offset = tl.load(offset_ptr + o, mask=o < N, other=0)
    tl.store(word_ptr + o, tl.randint(seed, offset).to(tl.int64), mask=o < N)
    tl.store(uniform_ptr + o, tl.rand(seed, offset), mask=o < N)


@triton.jit
def _keep_mask_kernel(
    keep_ptr, t_ptr, seed, stream, t, B, H, p, T_PER_ROW: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr
):
    """The keep mask of tile (program 0, program 1) of a ``[B, H]`` step, written as int8 (0/1)."""
    o_b = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    o_j = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    if T_PER_ROW:
        t = tl.load(t_ptr + o_b, mask=o_b < B, other=0)
    keep = zoneout_keep(seed, stream, t, o_b, o_j, B, H, p)
    inside = (o_b[:, None] < B) & (o_j[None, :] < H)
    tl.store(keep_ptr + o_b[:, None] * H + o_j[None, :], keep.to(tl.int8), mask=inside)


def device_keep_mask(device, seed, layer, direction, t, B, H, p, block_b=4, block_h=8) -> torch.Tensor:
    """``zoneout_keep`` over a ``[B, H]`` step in ``block_b x block_h`` tiles; ``t`` an int or one per row."""
    keep = torch.full((B, H), -1, dtype=torch.int8, device=device)  # -1: a tile forgot to write
    per_row = isinstance(t, torch.Tensor)
    t_rows = t.to(device) if per_row else torch.zeros(B, dtype=torch.int64, device=device)
    grid = (triton.cdiv(B, block_b), triton.cdiv(H, block_h))
    _keep_mask_kernel[grid](
        keep,
        t_rows,
        seed,
        zoneout_stream(layer, direction),
        0 if per_row else t,
        B,
        H,
        p,
        T_PER_ROW=per_row,
        BLOCK_B=block_b,
        BLOCK_H=block_h,
    )
    assert (keep >= 0).all(), "a tile left elements unwritten"
    return keep.bool()


# ------------------------------------------------------------------------------------------ Philox, host side


@pytest.mark.parametrize(
    "counter, key, expected",
    [
        pytest.param((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8), id="zeros"),
        pytest.param((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD), id="ones"),
        pytest.param(
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
            id="pi",
        ),
    ],
)
def test_host_philox_matches_random123_answers(counter, key, expected):
    """The known-answer vectors of Philox 4x32-10 (Random123's kat_vectors): the host arithmetic is Philox."""
    words = philox4x32(tuple(torch.tensor([c]) for c in counter), key)
    assert [w.item() for w in words] == list(expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_host_randint_and_rand_match_triton_bit_for_bit(seed, device):
    """``philox_randint``/``philox_rand`` against Triton's own ``tl.randint``/``tl.rand``, at offsets across the
    whole int64 range (both counter words) and around the 32-bit boundary."""
    generator = torch.Generator().manual_seed(seed % 2**32)
    edges = torch.tensor([0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, 2**44, 2**63 - 1])
    offsets = torch.cat([edges, torch.randint(0, 2**63 - 1, (300,), generator=generator)]).to(device)
    words = torch.empty(offsets.shape, dtype=torch.int64, device=device)
    uniforms = torch.empty(offsets.shape, dtype=torch.float32, device=device)
    _random_words_kernel[(triton.cdiv(offsets.numel(), 64),)](offsets, words, uniforms, seed, offsets.numel(), BLOCK=64)
    assert torch.equal(philox_randint(seed, offsets), words)
    assert torch.equal(philox_rand(seed, offsets).view(torch.int32), uniforms.view(torch.int32))
    assert uniforms.min() >= 0 and uniforms.max() < 1


# ------------------------------------------------------------------------------- the mask, device and host


def test_stream_shift_is_the_same_number_on_both_sides():
    assert device_zoneout.STREAM_SHIFT.value == host_zoneout.STREAM_SHIFT == STREAM_SHIFT


@pytest.mark.parametrize("seed", [0, 1, 2**31 + 3, MAX_SEED])
@pytest.mark.parametrize(
    "layer, direction, t, B, H, p",
    [
        pytest.param(0, 0, 0, 1, 1, 0.5, id="l0-fwd-t0-B1-H1"),
        pytest.param(0, 1, 1, 3, 17, 0.3, id="l0-rev-t1-B3-H17"),
        pytest.param(1, 0, 62, 5, 33, 0.9, id="l1-fwd-t62-B5-H33"),
        pytest.param(3, 1, 2**32 // 51, 3, 17, 0.1, id="l3-rev-offsets-cross-2^32"),
        pytest.param(9, 1, 2**38 // 51, 3, 17, 0.6, id="l9-rev-t2^38/51"),
    ],
)
def test_device_mask_equals_host_mask_bit_for_bit(seed, layer, direction, t, B, H, p, device):
    """``zoneout_keep`` over odd tiles equals ``zoneout_keep_mask`` everywhere."""
    expected = zoneout_keep_mask(seed, p, layer=layer, direction=direction, t=t, batch=B, hidden=H, device=device)
    assert torch.equal(device_keep_mask(device, seed, layer, direction, t, B, H, p), expected)


def test_device_mask_with_one_position_per_row_equals_host(device):
    """The reverse direction with lengths reads a different position per row: ``t`` given per row."""
    B, H, p, seed = 5, 11, 0.4, 1234
    positions = torch.tensor([6, 0, 3, 6, 2])
    masks = zoneout_keep_masks(seed, p, layer=2, direction=1, steps=7, batch=B, hidden=H, device=device)
    expected = masks[positions, torch.arange(B)]
    assert torch.equal(device_keep_mask(device, seed, 2, 1, positions, B, H, p), expected)


def test_masks_of_all_steps_are_the_masks_of_each_step(device):
    masks = zoneout_keep_masks(7, 0.5, layer=1, direction=0, steps=4, batch=3, hidden=17, device=device)
    for t in range(4):
        step = zoneout_keep_mask(7, 0.5, layer=1, direction=0, t=t, batch=3, hidden=17, device=device)
        assert torch.equal(masks[t], step)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.9])
def test_keep_rate_is_p_within_four_sigma(p):
    steps, batch, hidden = 50, 40, 257  # 514000 draws
    masks = zoneout_keep_masks(2024, p, layer=1, direction=1, steps=steps, batch=batch, hidden=hidden)
    draws = masks.numel()
    assert abs(masks.double().mean().item() - p) <= 4 * math.sqrt(p * (1 - p) / draws)


def test_streams_steps_and_seeds_give_different_masks():
    """Every (layer, direction) has its own mask, and so has every step and seed: about half the units of two
    masks at p = 0.5 differ (they are independent draws, not shifted copies)."""
    shape = dict(batch=4, hidden=64)
    masks = {
        (layer, direction): zoneout_keep_masks(5, 0.5, layer=layer, direction=direction, steps=3, **shape)
        for layer in range(3)
        for direction in range(2)
    }
    also = [zoneout_keep_masks(6, 0.5, layer=0, direction=0, steps=3, **shape)]
    candidates = [m[t] for m in [*masks.values(), *also] for t in range(3)]
    for i, a in enumerate(candidates):
        for b in candidates[i + 1 :]:
            assert 0.35 < (a != b).double().mean().item() < 0.65


def test_zero_probability_keeps_nothing_and_the_bounds_are_checked():
    assert not zoneout_keep_masks(3, 0.0, layer=0, direction=0, steps=5, batch=3, hidden=17).any()
    with pytest.raises(ValueError, match="direction 0 or 1"):
        zoneout_stream(0, 2)
    with pytest.raises(ValueError, match="layer"):
        zoneout_stream(-1, 1)
    with pytest.raises(ValueError, match=r"2\*\*44"):
        zoneout_keep_mask(3, 0.5, layer=0, direction=0, t=2**34, batch=2**5, hidden=2**5)
    with pytest.raises(ValueError, match="seeds"):
        zoneout_keep_mask(MAX_SEED + 1, 0.5, layer=0, direction=0, t=0, batch=1, hidden=1)


# ------------------------------------------------------------------------------------ zoneout in the reference


def layer_weights(I: int, H: int, dtype=F64) -> list[torch.Tensor]:
    return [torch.randn(3 * H, I, dtype=dtype), torch.randn(3 * H, H, dtype=dtype) / H**0.5] + [
        torch.randn(3 * H, dtype=dtype) for _ in range(2)
    ]


def zoned_layer_by_hand(x, h0, weights, variant, rule, reverse=False, lengths=None):
    """One layer written out: ``h = rule(t, h, gru_cell_ref(x[t], h))`` position by position, held past a
    sequence's length (output zero there)."""
    T, B = x.shape[:2]
    lengths = torch.full((B,), T) if lengths is None else torch.as_tensor(lengths)
    h, outputs = h0, [None] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        active = (t < lengths)[:, None]
        h = torch.where(active, rule(t, h, reference.gru_cell_ref(x[t], h, *weights, variant=variant)), h)
        outputs[t] = torch.where(active, h, 0)
    return torch.stack(outputs), h


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_training_step_keeps_the_masked_units(variant, reverse):
    """Training: ``h_t = m_t * h_{t-1} + (1 - m_t) * h'_t`` with the given mask, per position, with lengths."""
    T, B, I, H = 5, 3, 4, 17
    x, h0, weights = torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64), layer_weights(I, H)
    mask, lengths = torch.rand(T, B, H) < 0.4, [5, 2, 4]
    options = dict(variant=variant, reverse=reverse, lengths=lengths)
    output, h_n = reference.gru_layer_ref(x, h0, *weights, **options, zoneout=0.4, zoneout_mask=mask, training=True)
    rule = lambda t, h, h_new: mask[t] * h + ~mask[t] * h_new
    expected_output, expected_h_n = zoned_layer_by_hand(x, h0, weights, variant, rule, reverse, lengths)
    torch.testing.assert_close(output, expected_output, **tolerance(F64))
    torch.testing.assert_close(h_n, expected_h_n, **tolerance(F64))


@pytest.mark.parametrize("variant", VARIANTS)
def test_evaluation_uses_the_expectation(variant):
    T, B, I, H, p = 4, 1, 3, 17, 0.3
    x, h0, weights = torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64), layer_weights(I, H)
    output, h_n = reference.gru_layer_ref(x, h0, *weights, variant=variant, zoneout=p, zoneout_seed=11)
    rule = lambda t, h, h_new: p * h + (1 - p) * h_new
    expected_output, expected_h_n = zoned_layer_by_hand(x, h0, weights, variant, rule)
    torch.testing.assert_close(output, expected_output, **tolerance(F64))
    torch.testing.assert_close(h_n, expected_h_n, **tolerance(F64))


def test_all_kept_freezes_the_state_and_none_kept_is_the_plain_gru():
    T, B, I, H = 3, 2, 4, 5
    x, h0, weights = torch.randn(T, B, I, dtype=F64), torch.randn(B, H, dtype=F64), layer_weights(I, H)
    frozen, h_n = reference.gru_layer_ref(
        x, h0, *weights, zoneout=0.5, zoneout_mask=torch.ones(T, B, H, dtype=torch.bool), training=True
    )
    assert torch.equal(frozen, h0.expand(T, B, H)) and torch.equal(h_n, h0)
    plain = reference.gru_layer_ref(x, h0, *weights)
    none_kept = reference.gru_layer_ref(
        x, h0, *weights, zoneout=0.5, zoneout_mask=torch.zeros(T, B, H, dtype=torch.bool), training=True
    )
    assert all(torch.equal(a, b) for a, b in zip(none_kept, plain, strict=True))


@pytest.mark.parametrize("layernorm", [False, True], ids=["gru", "layernorm-gru"])
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_zero_probability_equals_the_plain_reference_exactly(layernorm, training):
    T, B, I, H, L = 4, 3, 5, 6, 2
    x, h0 = torch.randn(T, B, I, dtype=F64), torch.randn(2 * L, B, H, dtype=F64)
    run = reference.layernorm_gru_ref if layernorm else reference.gru_ref
    weights = []
    for layer in range(L):
        for _ in range(2):
            w = layer_weights(I if layer == 0 else 2 * H, H)  # LayerNorm-GRU: the biases as LN gains, 2 more
            weights += [*w, torch.randn(3 * H, dtype=F64), torch.randn(3 * H, dtype=F64)] if layernorm else w
    options = dict(num_layers=L, bidirectional=True, lengths=[4, 1, 3])
    plain = run(x, h0, weights, **options)
    zoned = run(x, h0, weights, zoneout=0.0, zoneout_seed=99, training=training, **options)
    assert all(torch.equal(a, b) for a, b in zip(zoned, plain, strict=True))
    cell_ref = reference.layernorm_gru_cell_ref if layernorm else reference.gru_cell_ref
    cell_weights = weights[: 6 if layernorm else 4]
    zoned_cell = cell_ref(x[0], h0[0], *cell_weights, zoneout=0.0, zoneout_seed=1, training=training)
    assert torch.equal(zoned_cell, cell_ref(x[0], h0[0], *cell_weights))


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch_first"])
def test_seeded_stack_uses_each_layer_and_directions_own_masks(batch_first):
    """``zoneout_seed`` regenerates, per layer and direction, the masks ``zoneout_keep_masks`` gives (what the
    kernels draw): the seeded stack equals the stack given those masks explicitly."""
    T, B, I, H, L, p, seed = 5, 3, 4, 7, 2, 0.35, 2**40 + 17
    x = torch.randn(B, T, I, dtype=F64) if batch_first else torch.randn(T, B, I, dtype=F64)
    weights = [w for layer in range(L) for _ in range(2) for w in layer_weights(I if layer == 0 else 2 * H, H)]
    masks = torch.stack(
        [
            zoneout_keep_masks(seed, p, layer=layer, direction=direction, steps=T, batch=B, hidden=H)
            for layer in range(L)
            for direction in range(2)
        ]
    )
    masks = masks.transpose(1, 2) if batch_first else masks
    options = dict(num_layers=L, bidirectional=True, batch_first=batch_first, lengths=[5, 2, 3], zoneout=p)
    seeded = reference.gru_ref(x, None, weights, zoneout_seed=seed, training=True, **options)
    explicit = reference.gru_ref(x, None, weights, zoneout_mask=masks, training=True, **options)
    plain = reference.gru_ref(x, None, weights, **{**options, "zoneout": 0.0})
    assert all(torch.equal(a, b) for a, b in zip(seeded, explicit, strict=True))
    assert not torch.allclose(seeded[0], plain[0])


def test_unbatched_cell_and_stack_masks():
    """Unbatched: the cell's mask is ``[H]``, the stack's ``[L*D, T, H]``; a seeded cell is position 0 of layer 0."""
    I, H, T, p, seed = 3, 5, 4, 0.5, 8
    x, weights = torch.randn(T, I, dtype=F64), layer_weights(I, H)
    h = torch.randn(H, dtype=F64)
    keep = zoneout_keep_mask(seed, p, layer=0, direction=0, t=0, batch=1, hidden=H)[0]
    seeded = reference.gru_cell_ref(x[0], h, *weights, zoneout=p, zoneout_seed=seed, training=True)
    explicit = reference.gru_cell_ref(x[0], h, *weights, zoneout=p, zoneout_mask=keep, training=True)
    assert torch.equal(seeded, explicit) and torch.equal(seeded[keep], h[keep])
    mask = torch.rand(1, T, H) < p
    output, _ = reference.gru_ref(x, None, weights, zoneout=p, zoneout_mask=mask, training=True)
    batched, _ = reference.gru_ref(x[:, None], None, weights, zoneout=p, zoneout_mask=mask[:, :, None], training=True)
    assert torch.equal(output, batched[:, 0])


def test_unseeded_training_draws_from_torchs_generator():
    T, B, I, H = 3, 2, 4, 5
    x, weights = torch.randn(T, B, I, dtype=F64), layer_weights(I, H)
    run = lambda: reference.gru_ref(x, None, weights, num_layers=1, zoneout=0.5, training=True)[0]
    torch.manual_seed(3)
    first = run()
    torch.manual_seed(3)
    assert torch.equal(run(), first)
    assert not torch.equal(run(), first)


def test_mask_arguments_are_checked():
    T, B, I, H = 3, 2, 4, 5
    x, weights = torch.randn(T, B, I, dtype=F64), layer_weights(I, H)
    mask = torch.zeros(T, B, H, dtype=torch.bool)
    with pytest.raises(GRUInputError, match="give at most one"):
        reference.gru_layer_ref(x, None, *weights, zoneout=0.5, zoneout_mask=mask, zoneout_seed=1, training=True)
    with pytest.raises(GRUInputError, match="zoneout is 0"):
        reference.gru_layer_ref(x, None, *weights, zoneout_mask=mask, training=True)
    with pytest.raises(GRUInputError, match=r"zoneout_mask must have shape \(3, 2, 5\).*got \(3, 2, 4\)"):
        reference.gru_layer_ref(x, None, *weights, zoneout=0.5, zoneout_mask=mask[..., :4], training=True)
    with pytest.raises(GRUDtypeError, match=r"zoneout_mask must be a bool tensor.*got torch\.float32"):
        reference.gru_layer_ref(x, None, *weights, zoneout=0.5, zoneout_mask=mask.float(), training=True)
    with pytest.raises(GRUInputError, match=r"zoneout_mask must have shape \(1, 3, 2, 5\)"):
        reference.gru_ref(x, None, weights, zoneout=0.5, zoneout_mask=mask, training=True)
    with pytest.raises(GRUInputError, match="zoneout must be a float in"):
        reference.gru_ref(x, None, weights, zoneout=1.0, training=True)
    with pytest.raises(GRUDtypeError, match="zoneout_seed must be an int"):
        reference.gru_cell_ref(x[0], None, *weights, zoneout=0.5, zoneout_seed=1.5, training=True)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("training", [True, False], ids=["training", "eval"])
def test_zoneout_gradcheck_and_gradgradcheck(variant, training):
    """With a fixed seed every call sees the same masks: the gradient is right (haste's was not: its #43)."""
    T, B, I, H = 3, 2, 2, 3
    x, h0 = torch.randn(T, B, I, dtype=F64, requires_grad=True), torch.randn(2, B, H, dtype=F64, requires_grad=True)
    weights = [w.requires_grad_() for _ in range(2) for w in layer_weights(I, H)]

    def run(x, h0, *weights):
        return reference.gru_ref(
            x, h0, weights, bidirectional=True, variant=variant, zoneout=0.5, zoneout_seed=21, training=training
        )

    assert gradcheck(run, (x, h0, *weights))
    assert gradgradcheck(run, (x, h0, *weights), fast_mode=True)
