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
