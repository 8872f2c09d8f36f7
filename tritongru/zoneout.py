"""Zoneout's masks, host side: the plain-PyTorch twin of ``tritongru.kernels.zoneout``, bit for bit.

A zoneout mask says which units keep their previous state at a step (Krueger et al., 2017). tritongru never
stores one: a kernel computes its tile's mask on the fly from a counter-based generator, and the backward
computes it again. So the mask is a pure function, defined here once in plain PyTorch and once on the device
(:func:`tritongru.kernels.zoneout.zoneout_keep`), and the tests hold the two equal bit for bit.

**The mask.** Unit ``j`` of batch row ``b`` keeps its previous state at time ``t`` of layer ``layer``, direction
``direction`` (0 forward, 1 reverse), of a batch of ``B`` rows and ``H`` units, with probability ``p``, when::

    stream = 2 * layer + direction                                  (0 <= stream < 2**19)
    offset = stream * 2**44 + (t * B + b) * H + j                   (int64; T * B * H <= 2**44)
    keep   = philox_rand(seed, offset) < float32(p)                 (0 <= seed < 2**63)

``t`` is the position in the sequence of the input the step reads, in both directions (the reverse direction
reads ``t = T - 1`` first, or ``lengths[b] - 1`` with lengths), so a mask does not depend on the lengths; ``b``
is the row as the kernel sees the batch. Streams are disjoint ranges of the counter: two layers, two
directions or two steps never draw the same Philox counter under the same key. A ``GRUCell`` step is
``layer = direction = t = 0``: draw a new seed per step.

**The generator** is Triton's ``tl.rand`` (``triton/language/random.py``): Philox 4x32 with 10 rounds, key
``(seed mod 2**32, seed div 2**32)``, counter ``(offset mod 2**32, offset div 2**32, 0, 0)``; its first output
word ``x``, read as an int32, becomes ``float32(x if x >= 0 else ~x) * float32(4.6566127342e-10)`` in
``[0, 1)``. Here unsigned 32-bit words live in int64 tensors, masked to 32 bits after every operation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

PHILOX_ROUNDS = 10
PHILOX_KEY_A, PHILOX_KEY_B = 0x9E3779B9, 0xBB67AE85
"""Added to the two key words after every round (Weyl sequence constants, as Triton and Random123 use)."""
PHILOX_ROUND_A, PHILOX_ROUND_B = 0xD2511F53, 0xCD9E8D57
"""The round multipliers."""
UNIFORM_SCALE = 4.6566127342e-10
"""Triton's ``uint_to_uniform_float`` scale for 32-bit words: the largest float32 with ``(2**31 - 1) * scale < 1``."""

STREAM_SHIFT = 44
"""A stream's counters start at ``stream * 2**STREAM_SHIFT``: room for ``T * B * H <= 2**44`` elements per stream."""
MAX_STREAMS = 2 ** (63 - STREAM_SHIFT)
"""Streams that keep the offset a non-negative int64: ``2 * layers`` must not exceed it."""
MAX_SEED = 2**63 - 1
"""Seeds are ``0 <= seed <= MAX_SEED``: a non-negative int64, the same key on the host and the device."""

_WORD = 0xFFFFFFFF


class Zoneout(NamedTuple):
    """Zoneout of one kernel call: probability ``p`` (``0 < p < 1``); ``seed`` the masks' seed (training), or
    None for the expectation ``p`` (evaluation); ``stream`` the call's (layer, direction) stream
    (:func:`zoneout_stream`); ``reversed``: loop step ``s`` reads position ``T - 1 - s`` (``lengths[b] - 1 - s``)."""

    p: float
    seed: int | None
    stream: int = 0
    reversed: bool = False


def _multiply(word: torch.Tensor, constant: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high, low)`` 32-bit halves of ``word * constant`` (both below ``2**32``), without overflowing int64:
    the constant is split into 16-bit halves so that each partial product stays below ``2**48``."""
    constant_high, constant_low = constant >> 16, constant & 0xFFFF
    partial_high, partial_low = word * constant_high, word * constant_low
    high = (partial_high + (partial_low >> 16)) >> 16
    low = (((partial_high & 0xFFFF) << 16) + partial_low) & _WORD
    return high, low


def philox4x32(
    counter: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], key: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox 4x32-10 (Salmon et al., 2011), as Triton's ``philox_impl``: four int64 tensors of 32-bit counter
    words (broadcastable) and a key of two 32-bit ints → the four output words, int64 in ``[0, 2**32)``."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(PHILOX_ROUNDS):
        high_b, low_b = _multiply(c2, PHILOX_ROUND_B)
        high_a, low_a = _multiply(c0, PHILOX_ROUND_A)
        c0, c1, c2, c3 = high_b ^ c1 ^ k0, low_b, high_a ^ c3 ^ k1, low_a
        k0, k1 = (k0 + PHILOX_KEY_A) & _WORD, (k1 + PHILOX_KEY_B) & _WORD
    return c0, c1, c2, c3


def philox_randint(seed: int, offset: torch.Tensor) -> torch.Tensor:
    """``tl.randint(seed, offset)`` for an int64 ``offset`` tensor: its 32-bit words as int64 in ``[0, 2**32)``,
    shaped like ``offset``. ``seed``: ``0 <= seed <= MAX_SEED``."""
    offset = offset.to(torch.int64)
    zero = torch.zeros_like(offset)
    words = philox4x32((offset & _WORD, offset >> 32, zero, zero), (seed & _WORD, seed >> 32))
    return words[0]


def philox_rand(seed: int, offset: torch.Tensor) -> torch.Tensor:
    """``tl.rand(seed, offset)``: float32 in ``[0, 1)`` shaped like ``offset``, bit for bit."""
    word = philox_randint(seed, offset)
    folded = torch.where(word < 2**31, word, _WORD - word)  # int32 x if x >= 0, else ~x
    return folded.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32, device=word.device)


def zoneout_stream(layer: int, direction: int) -> int:
    """The counter stream of layer ``layer``, direction ``direction`` (0 forward, 1 reverse)."""
    if direction not in (0, 1) or not 0 <= 2 * layer + direction < MAX_STREAMS:
        raise ValueError(
            f"zoneout streams need 0 <= layer < {MAX_STREAMS // 2} and direction 0 or 1; got layer {layer}, "
            f"direction {direction}"
        )
    return 2 * layer + direction


def zoneout_keep_mask(
    seed: int,
    p: float,
    *,
    layer: int,
    direction: int,
    t: int,
    batch: int,
    hidden: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Which units keep their previous state at position ``t`` of one layer and direction: bool ``[batch,
    hidden]``, ``[b, j]`` as the module docstring defines it (what ``zoneout_keep`` computes on the device)."""
    return _keep_masks(seed, p, layer, direction, t, 1, batch, hidden, device)[0]


def zoneout_keep_masks(
    seed: int,
    p: float,
    *,
    layer: int,
    direction: int,
    steps: int,
    batch: int,
    hidden: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The masks of every position of one layer and direction: bool ``[steps, batch, hidden]``, ``[t, b, j]``
    as the module docstring defines it."""
    return _keep_masks(seed, p, layer, direction, 0, steps, batch, hidden, device)


def _keep_masks(
    seed: int,
    p: float,
    layer: int,
    direction: int,
    first: int,
    steps: int,
    batch: int,
    hidden: int,
    device: torch.device | str | None,
) -> torch.Tensor:
    """The masks of positions ``first .. first + steps - 1``: bool ``[steps, batch, hidden]``."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"zoneout seeds lie in [0, 2**63 - 1]; got {seed}")
    if first < 0 or (first + steps) * batch * hidden > 2**STREAM_SHIFT:
        raise ValueError(
            f"zoneout counters cover positions t >= 0 with (t + 1) * B * H <= 2**{STREAM_SHIFT} per stream; got "
            f"positions {first} to {first + steps - 1}, B = {batch}, H = {hidden}"
        )
    size = batch * hidden
    index = torch.arange(first * size, (first + steps) * size, dtype=torch.int64, device=device)
    offset = index + (zoneout_stream(layer, direction) << STREAM_SHIFT)
    keep = philox_rand(seed, offset) < torch.tensor(p, dtype=torch.float32, device=device)
    return keep.view(steps, batch, hidden)


def draw_zoneout_seed(generator: torch.Generator | None = None) -> int:
    """A seed drawn from ``generator`` (torch's default CPU generator when None), so that ``torch.manual_seed``
    reproduces the masks."""
    return int(torch.randint(0, MAX_SEED, (), dtype=torch.int64, generator=generator))


def zoneout_loop_masks(zoneout: Zoneout, steps: int, batch: int, hidden: int, lengths: torch.Tensor | None, device):
    """The keep masks of a kernel call in its own loop order (``[s]`` applies at loop step ``s``): bool
    ``[steps, batch, hidden]``; past a sequence's length (where nothing steps) whatever the position gives."""
    layer, direction = divmod(zoneout.stream, 2)
    masks = zoneout_keep_masks(
        zoneout.seed,
        zoneout.p,
        layer=layer,
        direction=direction,
        steps=steps,
        batch=batch,
        hidden=hidden,
        device=device,
    )
    if not zoneout.reversed:
        return masks
    loop = torch.arange(steps, device=device)[:, None]
    last = (lengths.to(device)[None, :] if lengths is not None else torch.full((1, batch), steps, device=device)) - 1
    position = (last - loop).clamp(min=0)  # [steps, batch]
    return masks.gather(0, position[..., None].expand(steps, batch, hidden))
