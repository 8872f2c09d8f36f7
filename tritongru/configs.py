"""Launch configurations: one place where every launcher gets its block sizes, warps and stages.

A :class:`KernelConfig` is what the autotuning harness (:mod:`tritongru.harness.tuning`) searches over and stores.
:func:`select_config` is the lookup every launcher calls: the tuning cache first, then :func:`heuristic_config`.
Under Triton's interpreter (CPU) tuning collapses to the heuristic's single config.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from dataclasses import asdict, dataclass, replace

import torch

from tritongru import tuning_cache
from tritongru.environment import interpreting
from tritongru.tuning_cache import MIN_BLOCK

KERNELS = ("forward", "backward", "cell")
"""Kernel names used as tuning keys: the sequence forward, the sequence backward (BPTT), the fused cell."""


@dataclass(frozen=True)
class KernelConfig:
    """Block sizes and launch parameters of one recurrent kernel launch.

    A program owns ``block_h`` hidden units (its slice) of ``batch_blocks`` blocks of ``block_b`` batch rows,
    stepped in turn with the slice's weights held once (the grid is ``slices x groups of batch blocks``);
    ``block_k`` is the chunk of the reductions (the K loop over the hidden and, for the cell, input width).
    ``split_k``: the warps split every chunk's ``K`` (one cross-warp sum per product) instead of the rows; see
    :mod:`tritongru.kernels.gru_math`. ``persistent=True`` runs the whole time loop in one launch: one slice needs
    only CTA barriers, several meet at a grid barrier (a cooperative launch; see :mod:`tritongru.launchers`);
    ``False`` launches once per step and phase. ``streamed_chunks``: of a persistent program's K chunks of
    ``W_hh``, how many (the last) it reads from L2 every step instead of holding them on chip, where a slice's
    weights do not all fit (:func:`held_chunks`), in a loop over ``num_stages`` pipeline stages (the only loop of
    a persistent program that ``num_stages`` pipelines: its time loop and loop over batch blocks run one stage).
    ``max_wave_chunks``: at most this many K chunks of a persistent program's exchanged operand in flight at once
    (:func:`wave_chunks`; 0: as many as fit).
    """

    block_b: int
    block_h: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2
    persistent: bool = True
    split_k: bool = False
    batch_blocks: int = 1
    streamed_chunks: int = 0
    max_wave_chunks: int = 0

    def __post_init__(self) -> None:
        problem = tuning_cache.config_problem(asdict(self))
        if problem is not None:
            raise ValueError(f"invalid KernelConfig: {problem}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> KernelConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def grid(self, batch: int, hidden: int, head_dim: int | None = None) -> tuple[int, int]:
        """``(hidden slices, groups of batch blocks)``: the programs of one launch for a ``[batch, hidden]``
        state in heads of ``head_dim`` units (None: one head), each head its own ``cdiv(head_dim, block_h)``
        slices."""
        slices = _heads(hidden, head_dim) * self.slices_per_head(hidden, head_dim)
        return slices, -(-batch // (self.block_b * self.batch_blocks))

    def slices_per_head(self, hidden: int, head_dim: int | None = None) -> int:
        """Slices covering one head: 1 means no program needs another's part of ``h``, so no grid barrier."""
        return -(-_width(hidden, head_dim) // self.block_h)


def _width(hidden: int, head_dim: int | None) -> int:
    """The K width of the recurrent products: a head's units (``hidden`` for the dense GRU)."""
    return hidden if head_dim is None else head_dim


def _heads(hidden: int, head_dim: int | None) -> int:
    return 1 if head_dim is None or head_dim == 0 else hidden // head_dim


def _pow2_clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, 1 << max(0, n - 1).bit_length()))


ONE_SLICE_MAX_HIDDEN = 32
"""Up to this hidden size one program owns the whole width of its rows: no grid barrier at all. Not 64: with the
warps splitting K every warp holds the whole tile's partial sums, and a 16 x 64 tile's (about 96 registers per
thread for the three gates) spilled on sm_90 (forward bf16 B=16 H=64 with every flag: 128 B with Triton 3.9,
about 300 B with zoneout on Triton 3.6 and 3.9); at H = 64 four slices of 16 meet at a grid barrier instead."""

MAX_K_CHUNKS = 16
"""Most K chunks a reduction is unrolled into: more only lengthen the compile for the same data."""

RESIDENT_BYTES_MAX = 200 * 1024
"""Most ``W_hh`` bytes one program holds for a persistent launch (``3 x H x block_h`` elements in the storage
dtype): the compiler keeps them in shared memory, 227 KB per SM on sm_90, with room left for the exchanged
operand on its way into the ``mma`` layout."""

FLOAT64_RESIDENT_BYTES_MAX = 100 * 1024
""":data:`RESIDENT_BYTES_MAX` for float64, whose registers run out first: compiled for sm_90 (Triton 3.6), the
persistent backward at H = 512 (196 KB held) spilled 16-104 B in every config tried (B = 64 and 256, K chunks
of 128 and 256), so float64 holds its weights up to H = 256 (96 KB) and runs per step above."""

SHARED_MEMORY_MAX = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}
"""Shared memory one program may use on each architecture (A100, H100 and H200, B200)."""

SHARED_BYTES_MAX = SHARED_MEMORY_MAX[90]
"""Shared memory one program may use on sm_90 (H100, H200)."""

IN_FLIGHT_BYTES_PER_THREAD = 320
"""Bytes of the exchanged operand one thread may have in flight at once (80 registers): the loads of one wave
(:func:`wave_chunks`) must fit beside the accumulators, the state and the prefetched inputs."""

STREAMED_BLOCK_K = 128
"""K chunk of a persistent program that streams part of its weights (:func:`_streamed`): the held chunks are
multiplied in waves, the streamed ones in a loop whose copies the compiler pipelines into shared memory (each
stage a chunk of the exchanged operands and of three gates' weights). Compiled for sm_90 (Triton 3.6), TF32 at
H=2048, every flag on: the backward in K chunks of 128 with 10 of 16 streamed spilled nothing at B=16 and 24 B
at B=64 (every chunk streamed: none); in K chunks of 256 with 4 of 8, 32 B at B=16. The forward in chunks of 128
with 10 streamed: 192 registers, none."""

PERSISTENT_WARPS = 8
"""Warps of a persistent program. Compiled for sm_90, 4 warps (48 registers of loads each) at B=16 H=768 bf16
leave the loads one round trip apart in the PTX but not in the SASS: ptxas reuses registers of the first
loads for the last ones; with 8 warps (24 registers each) every load is issued before the first use in both.
More warps also halve each warp's ``mma`` chain."""


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _chunk(hidden: int, num_warps: int) -> int:
    """The K chunk of a split product: the widest of 64, 32 or 16 columns per warp that divides ``hidden``
    (no chunk then multiplies padding), else 16 per warp (the least padding)."""
    return next((width * num_warps for width in (64, 32, 16) if hidden % (width * num_warps) == 0), 16 * num_warps)


def held_chunks(config: KernelConfig, width: int) -> int:
    """The K chunks of ``W_hh`` (``K = width``: ``H``, or a head's units) a persistent program of ``config``
    holds on chip: all but its ``streamed_chunks``."""
    return max(0, -(-width // config.block_k) - config.streamed_chunks)


def resident_bytes(config: KernelConfig, width: int, dtype: torch.dtype) -> int:
    """Bytes of ``W_hh`` one program of ``config`` holds on chip: three gates of its :func:`held_chunks`."""
    return 3 * held_chunks(config, width) * config.block_k * config.block_h * dtype.itemsize


def wave_chunks(config: KernelConfig, width: int, dtype: torch.dtype) -> int:
    """How many K chunks of the exchanged operand a persistent program loads at once (one round trip each
    wave): as many as fit :data:`IN_FLIGHT_BYTES_PER_THREAD` in registers and the shared memory left beside the
    resident weights (each loaded chunk passes through shared memory on its way into the ``mma`` layout), at
    least one. Per step, where the K loop is pipelined instead, 1."""
    return _wave(config, width, dtype, config.block_b)


def _wave(config: KernelConfig, width: int, dtype: torch.dtype, rows: int) -> int:
    """Chunks of ``rows x block_k`` elements that fit in flight at once (see :func:`wave_chunks`)."""
    if not config.persistent:
        return 1
    chunk = rows * config.block_k * dtype.itemsize
    registers = IN_FLIGHT_BYTES_PER_THREAD * 32 * config.num_warps
    fit = max(1, min(registers, _staging_room(config, width, dtype)) // chunk)
    return min(fit, config.max_wave_chunks) if config.max_wave_chunks else fit


def heuristic_config(
    kernel: str,
    batch: int,
    hidden: int,
    *,
    dtype: torch.dtype = torch.float32,
    allow_tf32: bool = False,
    sm_count: int = 132,
    head_dim: int | None = None,
) -> KernelConfig:
    """A config that is correct for every shape and reasonable without tuning.

    On a GPU the warps split K (``split_k``) over chunks of 16 to 64 columns per warp (:func:`_chunk`), and a
    program's tile is 16 rows of a 16-unit slice (:data:`PERSISTENT_TILE`), or 32 rows (:data:`WIDE_BLOCK_B`)
    where that halves the batch blocks a persistent program steps in turn and its weights are small enough
    (bf16 and fp16 up to ``H = 1024``: :data:`WIDE_TILE_RESIDENT_MAX`). Up to :data:`ONE_SLICE_MAX_HIDDEN`, one
    program of 4 warps owns the whole width of its rows (one launch, no grid barrier). Above it, persistent:
    the whole sequence in one launch, a grid barrier per phase, the slices' weights held on chip
    (:data:`RESIDENT_BYTES_MAX`), on :data:`PERSISTENT_WARPS` warps, each program stepping as few batch blocks
    as let its ``slices x groups`` grid fit on ``sm_count`` SMs at once (up to
    :data:`~tritongru.tuning_cache.MAX_BATCH_BLOCKS`). So bf16 and fp16 stay persistent up to ``H = 2048``
    (``B = 512`` there, ``B = 1024`` at ``H = 1024``, 132 SMs), float32 and TF32 up to ``H = 1024``, float64 up
    to ``H = 256`` (:data:`FLOAT64_RESIDENT_BYTES_MAX`). float32 and TF32 keep the wider slices (``H = 2048``) in
    one launch too where a program steps one batch block (``B <= 16`` on 132 SMs), holding the K chunks that fit
    and streaming the rest from L2 every step in a pipelined loop (``streamed_chunks``, :func:`_streamed`; K chunks
    of :data:`STREAMED_BLOCK_K`: at ``H = 2048`` the forward holds 6 of 16, the backward 5; where that spills, the
    next alternative streams all 16). A program stepping several batch blocks would stream every weight once per
    block, one block after another: ``profiling/predict_steps.py`` predicts 41-109 µs a step at B=64 (TF32),
    against 19-22 µs per step with the same tiles. Where no such grid fits: one launch per step (:data:`PER_STEP`,
    slices of 64 on 8 warps with the weights streamed): float32 and TF32 at ``H = 2048`` and ``B > 16``, float64
    above 256, larger batches; the cell (one step) the same in slices of 16; float64 in slices of 16 with
    narrower K chunks (:data:`FLOAT64_PER_STEP`).
    ``python -m tritongru.compile_check`` compiles every size it serves and fails on a spill; where every
    persistent alternative spills, the launchers run per step (:func:`heuristic_configs`).

    Multi-head (``head_dim``, the units of a head; None: one head): the same rules with the head's width in
    place of ``hidden`` for what a slice multiplies (its weights, the K chunks) and ``hidden`` for how many
    slices there are. A head of up to :data:`ONE_SLICE_MAX_HIDDEN` units is one program that needs no other
    program's data: the whole sequence in one launch without a grid barrier, however many heads there are.

    Under the interpreter: few, large tiles (its cost is per program and per tile, not per element), the
    warps splitting K.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    width = _width(hidden, head_dim)
    if interpreting():
        block = _pow2_clamp(width, MIN_BLOCK, 64)
        return KernelConfig(_pow2_clamp(batch, MIN_BLOCK, 64), block, block_k=64, split_k=True)
    if width <= ONE_SLICE_MAX_HIDDEN:
        block = _pow2_clamp(width, MIN_BLOCK, ONE_SLICE_MAX_HIDDEN)
        if kernel == "cell" and block > MIN_BLOCK and dtype.itemsize >= 4:
            # the cell's second set of products (the input side) beside a 16 x 32 tile of 4-byte operands
            # spilled on sm_90 (cudnn form, TF32: 192 B in every alternative): slices of 16, one launch
            return KernelConfig(MIN_BLOCK, MIN_BLOCK, 64, 4, persistent=False, split_k=True)
        return KernelConfig(MIN_BLOCK, block, 64, 4, split_k=True, batch_blocks=1)
    if kernel == "cell":
        if dtype.itemsize == 8:
            return FLOAT64_PER_STEP
        # slices of 16: beside its second set of products (the input side), the per-step 16 x 64 tile on 8 warps
        # spilled 728-1376 B on sm_90 (bf16, H=256, every flag) in all 15 alternatives, 16 x 32 8-264 B
        return KernelConfig(MIN_BLOCK, MIN_BLOCK, _chunk(width, 8), num_warps=8, persistent=False, split_k=True)
    operands = (3 if kernel == "backward" else 1) if dtype.itemsize == 4 else 0
    config = _persistent(batch, hidden, dtype, sm_count, head_dim, streamed_operands=operands)
    if config is not None:
        return config
    if dtype.itemsize == 8:
        return FLOAT64_PER_STEP
    return PER_STEP


PER_STEP = KernelConfig(MIN_BLOCK, 64, block_k=16 * 8, num_warps=8, persistent=False, split_k=True)
"""The launch per step where no persistent grid fits: slices of 64 on 8 warps, the weights streamed."""


FLOAT64_PER_STEP = KernelConfig(MIN_BLOCK, MIN_BLOCK, 16 * 8, num_warps=8, num_stages=1, persistent=False, split_k=True)
"""float64's launch per step (and its cell): slices of 16, K chunks of 16 per warp, no pipelined loads. Its
operands and accumulators take twice the registers of float32's: compiled for sm_90 (Triton 3.6, B=16 H=2048,
every flag on or every flag off) the slices of 64 spilled 3336 B (forward) and 2104 B (backward), this config
170-244 registers and no spill."""


PERSISTENT_TILE = (16, 16)
"""``(block_b, block_h)`` of a persistent program's tile where it steps one batch block. With the warps splitting
K, every warp holds a partial sum of the whole tile for each gate (8 warps: 8 copies), so the tile sets the
registers: compiled for sm_90 (Triton 3.6, B=256 H=1024 bf16, 8 warps, gates saved), ``64 x 16`` tiles spilled
80 B."""

WIDE_BLOCK_B = 32
"""Batch rows of a persistent program's tile where ``16``-row blocks would be stepped twice or more and this
halves the steps: one pass of a 32-row block has the barrier's wait, one round trip and the loop's instructions
once for twice the rows (compiled for sm_90, Triton 3.6, B=64 H=1024 bf16, gates saved: the forward's step 712
instructions a warp against 2 x 435, 206 registers, no spill; the backward's 254 registers, none, with every
flag on 255). Only in bf16 and fp16 where a slice holds at most :data:`WIDE_TILE_RESIDENT_MAX` of weights:
4-byte operands take twice the registers (B=256 H=512, every flag on: IEEE float32 spilled 1008-1112 B, the
TF32 backward 192 B), float64's more (its backward at H=256 40 B)."""

WIDE_TILE_RESIDENT_MAX = 96 * 1024
"""Most ``W_hh`` bytes a program of :data:`WIDE_BLOCK_B` rows holds (bf16 and fp16: ``H <= 1024``). Above it
the 32-row chunks of the exchanged operand leave too little shared memory (sm_90, Triton 3.6, B=64): bf16 at
H=2048 (192 KB held) fit in 224 KB, but its backward loaded its gate gradients in 12 round trips a step, and
TF32 at H=1024 (192 KB) asked for 256 KB."""


def _persistent(
    batch: int,
    hidden: int,
    dtype: torch.dtype,
    sm_count: int,
    head_dim: int | None,
    streamed_operands: int = 0,
    wide: bool = True,
) -> KernelConfig | None:
    """The persistent config of :func:`heuristic_config`, or None where none fits; ``streamed_operands`` (the
    exchanged operands a step multiplies; 0: never stream): where a slice's weights do not all fit, one that
    streams part of them (:func:`_streamed`). ``wide=False``: batch blocks of 16 rows even where
    :data:`WIDE_BLOCK_B` rows would halve the steps."""
    block_b, block_h = PERSISTENT_TILE
    width = _width(hidden, head_dim)
    slices = _heads(hidden, head_dim) * -(-width // block_h)
    if slices > sm_count:
        return None
    groups = sm_count // slices
    steps_of_blocks = -(-batch // (block_b * groups))
    if steps_of_blocks > tuning_cache.MAX_BATCH_BLOCKS:
        return None
    wide_steps = -(-batch // (WIDE_BLOCK_B * groups))
    wide_resident = 3 * width * block_h * dtype.itemsize <= WIDE_TILE_RESIDENT_MAX
    if wide and 2 * wide_steps <= steps_of_blocks and wide_resident and dtype.itemsize == 2:
        block_b, steps_of_blocks = WIDE_BLOCK_B, wide_steps
    config = KernelConfig(
        block_b,
        block_h,
        _chunk(width, PERSISTENT_WARPS),
        PERSISTENT_WARPS,
        persistent=True,
        split_k=True,
        batch_blocks=steps_of_blocks,
    )
    resident_max = RESIDENT_BYTES_MAX
    if dtype.itemsize == 8:
        # the K chunks and stages of float64's launch per step, which is this launch's fallback too: with chunks
        # of 256 the fallback spilled 8-16 B at H=256 (forward and backward, B=16 and 256, every flag on)
        config = replace(config, block_k=FLOAT64_PER_STEP.block_k, num_stages=FLOAT64_PER_STEP.num_stages)
        resident_max = FLOAT64_RESIDENT_BYTES_MAX
    if resident_bytes(config, width, dtype) > resident_max:
        # streaming where a program steps one batch block: each block streams the weights again, in turn
        if not streamed_operands or steps_of_blocks > 1:
            return None
        config = _streamed(replace(config, block_k=STREAMED_BLOCK_K), width, dtype, streamed_operands)
        return config if config is not None and streams_past_l1(config, hidden, head_dim) else None
    # one chunk of the exchanged operand must fit in the shared memory beside the held weights
    while _staging_room(config, width, dtype) < block_b * config.block_k * dtype.itemsize:
        if config.block_k == MIN_BLOCK * PERSISTENT_WARPS:
            return None
        config = replace(config, block_k=config.block_k // 2)
    return config


def _streamed(config: KernelConfig, width: int, dtype: torch.dtype, operands: int) -> KernelConfig | None:
    """``config`` holding as many K chunks of its slice's weights as leave room in shared memory for the
    pipelined loop over the rest (``num_stages`` buffers of a chunk of each of its ``operands`` exchanged operands
    and of three gates' weights) and streaming the rest (``streamed_chunks``); None where it could hold none."""
    rows = operands * config.block_b + 3 * config.block_h
    loop = config.num_stages * rows * config.block_k * dtype.itemsize
    for streamed in range(1, -(-width // config.block_k)):
        candidate = replace(config, streamed_chunks=streamed)
        if _staging_room(candidate, width, dtype) >= loop:
            return candidate
    return None


def streams_past_l1(config: KernelConfig, hidden: int, head_dim: int | None = None) -> bool:
    """Whether a grid-synchronised launch of ``config`` reads what other programs wrote past L1 (which is not
    coherent across SMs) in its streamed K chunks too: their loop's copies into shared memory bypass L1
    (``cp.async.cg``) only 16 bytes at a time, which the compiler emits where it knows the rows 16-element
    aligned (``hidden`` and the head's width multiples of 16); else it copies 4 bytes at a time through L1
    (``cp.async.ca``; sm_90, Triton 3.6, the TF32 backward at H=2045). True where nothing is streamed."""
    width = hidden if head_dim is None else head_dim
    return not config.streamed_chunks or (hidden % 16 == 0 and width % 16 == 0)


def _staging_room(config: KernelConfig, width: int, dtype: torch.dtype) -> int:
    """Bytes of shared memory a persistent program of ``config`` has beside the weights it holds."""
    return SHARED_BYTES_MAX - resident_bytes(config, width, dtype) - 2048


def heuristic_configs(
    kernel: str,
    batch: int,
    hidden: int,
    *,
    dtype: torch.dtype = torch.float32,
    allow_tf32: bool = False,
    sm_count: int = 132,
    head_dim: int | None = None,
) -> list[KernelConfig]:
    """:func:`heuristic_config` first, then the same launch with the other K chunks (at most 16 where they are
    unrolled), warps and pipeline stages (those of the per-step launches and fallback), per step also
    narrower slices; then, persistent, each K chunk with half the chunks a wave (twice the round trips), then
    every K chunk with a quarter, and so on down to one chunk a wave; and last, where none of those compiles
    clean, the heuristic's tiles launched once per step: the launchers take the first whose compiled kernels do
    not spill. Near 128 registers per thread ptxas spills a few bytes for one of these and not for
    another, and which one differs between its versions, so it cannot be told before compiling; near 255 a
    smaller wave can leave room where no other choice does (sm_90, Triton 3.6: the LayerNorm-GRU's backward,
    cudnn, bf16, B=64 H=2048, every flag on, while it held its indices through the time loop, K chunks of 256
    four a wave 24 B, two a wave none; in IEEE float32 at B=1 H=1024, cudnn with every flag off and classic with
    every flag on, K chunks of 128 two a wave 16 B and 8 B, one a wave none; the last, per step, is what the
    IEEE float32 LayerNorm backward takes at H=1024, B=64 and 256, every flag on, where every persistent one
    spilled 8-48 B). A first config that streams part of its weights is followed by the same streaming every K
    chunk (holding none; compiled for TF32 backward cudnn B=64 H=2048, every flag on, before a program stepping
    several batch blocks stopped streaming: 5 held spilled 24 B, none held nothing), then :data:`PER_STEP` and its
    alternatives. A first config of :data:`WIDE_BLOCK_B` rows is followed by the same launch in rows of 16 and
    its alternatives."""
    first = heuristic_config(
        kernel, batch, hidden, dtype=dtype, allow_tf32=allow_tf32, sm_count=sm_count, head_dim=head_dim
    )
    if interpreting():
        return [first]
    width = _width(hidden, head_dim)
    if first.streamed_chunks:
        every = replace(first, streamed_chunks=-(-width // first.block_k))
        return list(dict.fromkeys([first, every, *_alternatives(PER_STEP, width, dtype)]))
    if first.persistent and first.block_b == WIDE_BLOCK_B:
        narrow = _persistent(batch, hidden, dtype, sm_count, head_dim, wide=False)
        return [first, *_alternatives(narrow, width, dtype)]
    return _alternatives(first, width, dtype)


def _alternatives(first: KernelConfig, width: int, dtype: torch.dtype) -> list[KernelConfig]:
    """``first`` and the alternatives of :func:`heuristic_configs` for a config that streams no weights."""
    covered = _pow2_clamp(width, MIN_BLOCK, 1 << 30)
    slices = (first.block_h,) if first.persistent else (64, 32, 16)
    others = []
    warps = (first.num_warps, *(w for w in (8, 4) if w != first.num_warps))
    for block_h, num_warps, per_warp, num_stages in itertools.product(slices, warps, (64, 32, 16), (2, 1, 3)):
        block_k = per_warp * num_warps
        if block_k > max(covered, 16 * num_warps) or (first.persistent and -(-width // block_k) > MAX_K_CHUNKS):
            continue
        others.append(replace(first, block_h=block_h, block_k=block_k, num_warps=num_warps, num_stages=num_stages))
    if first.persistent:
        launch = (first.num_warps, first.num_stages)
        waves = [(c, wave_chunks(c, width, dtype)) for c in [first, *others] if (c.num_warps, c.num_stages) == launch]
        for shift in range(1, max(wave for _, wave in waves).bit_length()):
            others += [replace(c, max_wave_chunks=wave >> shift) for c, wave in waves if wave >> shift]
        others.append(replace(first, persistent=False, batch_blocks=1, max_wave_chunks=0))
    return list(dict.fromkeys([first, *others]))


def select_config(
    kernel: str,
    *,
    variant: str,
    dtype: torch.dtype,
    batch: int,
    hidden: int,
    input_size: int,
    device: torch.device,
    allow_tf32: bool = False,
    store_gates: bool = False,
    head_dim: int | None = None,
) -> KernelConfig:
    """The config a launcher uses: the tuned winner for this key if one is cached, else the heuristic.
    Multi-head GRUs (``head_dim`` given) take the heuristic's: the tuning cache holds dense GRUs.

    The config decides how a sequence runs (:func:`heuristic_config` has the rule): weights held on chip for
    the whole sequence in one launch (``persistent``; one slice, or several meeting at a grid barrier) where a
    slice's share of ``W_hh`` fits in shared memory and the grid fits on the SMs at once; otherwise the
    per-step fallback, one launch per step with the weights streamed and the gaps hidden by programmatic
    dependent launch. In place of the heuristic's config, the launchers take on a GPU the first of its
    alternatives (:func:`heuristic_configs`) whose compiled kernels do not spill; and any persistent grid
    falls back to per step at launch time when its compiled kernel cannot be resident all at once.

    Memoised in memory per key: the tuning cache's files are read once per process (and again after this
    process writes to them, see :func:`clear_memo`), never per launch.
    """
    return _select_config(kernel, variant, dtype, batch, hidden, input_size, device, allow_tf32, store_gates, head_dim)


@functools.lru_cache(maxsize=4096)
def _select_config(kernel, variant, dtype, batch, hidden, input_size, device, allow_tf32, store_gates, head_dim):
    if not interpreting() and device.type == "cuda":
        tuned = None
        if head_dim is None:  # the tuning cache holds dense GRUs
            tuned = tuning_cache.lookup(
                kernel,
                variant=variant,
                dtype=dtype,
                batch=batch,
                hidden=hidden,
                input_size=input_size,
                device=device,
                allow_tf32=allow_tf32,
                store_gates=store_gates,
            )
        if tuned is not None:
            try:
                return KernelConfig.from_dict(tuned)
            except (TypeError, ValueError) as error:
                warnings.warn(f"ignoring an invalid tuned config for {kernel!r}: {error}", stacklevel=3)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return heuristic_config(
            kernel, batch, hidden, dtype=dtype, allow_tf32=allow_tf32, sm_count=_sm_count(index), head_dim=head_dim
        )
    return heuristic_config(kernel, batch, hidden, dtype=dtype, allow_tf32=allow_tf32, head_dim=head_dim)


def clear_memo() -> None:
    """Forget every memoised :func:`select_config` answer (after the tuning cache was written)."""
    _select_config.cache_clear()
