"""Zoneout's keep mask of a tile, computed where it is used (never a ``[T, B, H]`` tensor in memory).

The mask is a pure function of (seed, layer, direction, t, b, unit), defined once more in plain PyTorch by
:mod:`tritongru.zoneout` (the reference regenerates the kernels' masks from it; the tests hold the two equal
bit for bit)::

    stream = 2 * layer + direction                                  (0 <= stream < 2**19)
    offset = stream * 2**44 + (t * B + b) * H + j                   (int64; T * B * H <= 2**44)
    keep   = tl.rand(seed, offset) < p                              (0 <= seed < 2**63)

The seed is Philox's key as given; the (layer, direction) stream takes the counter's high bits above every
(t, b, j) of a launch, so different layers, directions and steps never share a counter under one key. ``t`` is
the sequence position of the input the step reads (for the reverse direction ``T - 1 - s`` at loop step ``s``,
or ``lengths[b] - 1 - s`` with lengths: one ``t`` per row), so the mask does not depend on the lengths.

The recurrent kernels take zoneout as ``ZONEOUT`` (:data:`OFF`, :data:`SAMPLED`: the masks of a seed, training;
:data:`EXPECTED`: ``p`` itself, evaluation) and :func:`kept_share`, the share of ``h_{t-1}`` a step keeps.
"""

import triton
import triton.language as tl

STREAM_SHIFT: tl.constexpr = tl.constexpr(44)
"""A stream's counters start at ``stream << STREAM_SHIFT`` (``tritongru.zoneout.STREAM_SHIFT``, tested equal)."""


@triton.jit
def zoneout_keep(seed, stream, t, o_b, o_j, B, H, p):
    """Bool ``[BLOCK_B, BLOCK_H]``: whether unit ``o_j`` of batch row ``o_b`` keeps its previous state at step
    ``t`` of ``stream`` (``2 * layer + direction``) with probability ``p``. ``t``: a scalar, or one position per
    row shaped like ``o_b``; ``o_b`` ``[BLOCK_B]`` and ``o_j`` ``[BLOCK_H]`` the tile's row and unit offsets,
    ``B``, ``H`` the batch and hidden sizes of the launch. Offsets are formed in int64."""
    o_b = o_b.to(tl.int64)
    first = (o_b * 0 + stream) << STREAM_SHIFT
    row = first + ((o_b * 0 + t) * B + o_b) * H
    offset = row[:, None] + o_j[None, :]
    return tl.rand(seed, offset) < p


OFF: tl.constexpr = tl.constexpr(0)
SAMPLED: tl.constexpr = tl.constexpr(1)
EXPECTED: tl.constexpr = tl.constexpr(2)
"""``ZONEOUT`` of the recurrent kernels (``tritongru.launchers.zoneout_arguments`` gives them)."""


@triton.jit
def kept_share(
    zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr,
    ZONEOUT: tl.constexpr, REVERSED: tl.constexpr, HAS_LENGTHS: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """``[BLOCK_B, BLOCK_H]`` in ``ACC_DTYPE``: the share ``k`` of ``h_{t-1}`` that loop step ``t`` keeps, so that
    ``h_t = k h_{t-1} + (1 - k) h'_t``: the keep mask (1 or 0) for :data:`SAMPLED`, ``p`` for :data:`EXPECTED`.
    ``zoneout = (p_ptr, seed_lo, seed_hi, stream, T)``: ``p`` as one ``ACC_DTYPE`` element (exact in float64;
    the mask compares ``float32(p)``, as ``tritongru.zoneout`` does), the seed's low and high 32 bits as int32
    (one specialisation for every seed), the (layer, direction) stream and the launch's sequence length;
    ``REVERSED``: loop step ``t`` reads position ``T - 1 - t`` (``lengths[b] - 1 - t`` with lengths)."""
    p_ptr, seed_lo, seed_hi, stream, T = zoneout
    p = tl.load(p_ptr).to(ACC_DTYPE)
    if ZONEOUT == EXPECTED:
        kept = tl.zeros((o_b.shape[0], o_j.shape[0]), ACC_DTYPE) + p
    else:
        seed = (seed_hi.to(tl.int64) << 32) | (seed_lo.to(tl.int64) & 0xFFFFFFFF)
        if REVERSED:
            if HAS_LENGTHS:
                last = tl.load(lengths_ptr + o_b, mask=m_b, other=0) - 1
            else:
                last = tl.zeros_like(o_b) + (T - 1)
            position = last - t
        else:
            position = t
        kept = zoneout_keep(seed, stream, position, o_b, o_j, B, H, p.to(tl.float32)).to(ACC_DTYPE)
    return kept


@triton.jit
def zone_out(
    h_prev, stepped, zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr,
    ZONEOUT: tl.constexpr, REVERSED: tl.constexpr, HAS_LENGTHS: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """``h_t = k h_{t-1} + (1 - k) h'_t`` for a tile (``stepped`` is ``h'_t``; :func:`kept_share` gives ``k``);
    ``stepped`` itself when ``ZONEOUT`` is :data:`OFF`."""
    if ZONEOUT == OFF:
        zoned = stepped
    else:
        kept = kept_share(zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr, ZONEOUT, REVERSED, HAS_LENGTHS, ACC_DTYPE)
        zoned = kept * h_prev + (1.0 - kept) * stepped
    return zoned


@triton.jit
def zoned_direct(
    direct, zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr,
    ZONEOUT: tl.constexpr, REVERSED: tl.constexpr, HAS_LENGTHS: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """The backward's direct derivative ``dh_t / dh_{t-1}`` along the interpolation, ``direct`` without zoneout,
    with it ``k + (1 - k) direct`` (:func:`kept_share` gives ``k``)."""
    if ZONEOUT == OFF:
        zoned = direct
    else:
        kept = kept_share(zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr, ZONEOUT, REVERSED, HAS_LENGTHS, ACC_DTYPE)
        zoned = kept + (1.0 - kept) * direct
    return zoned
