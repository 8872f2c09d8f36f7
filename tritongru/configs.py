"""Launch configurations: one place where every launcher gets its block sizes, warps and stages.

A :class:`KernelConfig` is what the autotuning harness (:mod:`tritongru.harness.tuning`) searches over and stores.
:func:`select_config` is the lookup every launcher calls: the tuning cache first, then :func:`heuristic_config`.
Under Triton's interpreter (CPU) tuning collapses to the heuristic's single config.
"""

from __future__ import annotations

import functools
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

    A program owns ``block_b`` batch rows x ``block_h`` hidden units (its slice; the grid is ``slices x batch
    blocks``); ``block_k`` is the chunk of the reductions (the K loop over the hidden and, for the cell, input
    width). ``persistent=True`` runs the whole time loop in one launch: one slice needs only CTA barriers,
    several meet at a grid barrier (a cooperative launch; see :mod:`tritongru.launchers`); ``False`` launches
    once per step and phase.
    """

    block_b: int
    block_h: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2
    persistent: bool = True

    def __post_init__(self) -> None:
        problem = tuning_cache.config_problem(asdict(self))
        if problem is not None:
            raise ValueError(f"invalid KernelConfig: {problem}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> KernelConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def _pow2_clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, 1 << max(0, n - 1).bit_length()))


ONE_SLICE_MAX_HIDDEN = 64
"""Up to this hidden size one program owns the whole width of its rows: no grid barrier at all."""

PERSISTENT_TILE_MAX = 512
"""Largest ``block_b x block_h`` tile of a persistent program: 32 x 32 spills on sm_90 (B=256, H=512, bf16)."""

MAX_K_CHUNKS = 16
"""Most K chunks a reduction is unrolled into: more only lengthen the compile for the same data."""

RESIDENT_BYTES_MAX = 200 * 1024
"""Most ``W_hh`` bytes one program holds for a persistent launch (``3 x H x block_h`` elements in the storage
dtype): the compiler keeps them in shared memory, 227 KB per SM on sm_90, with room left for the streamed
operand's chunk."""


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def heuristic_config(
    kernel: str,
    batch: int,
    hidden: int,
    *,
    dtype: torch.dtype = torch.float32,
    allow_tf32: bool = False,
    sm_count: int = 132,
) -> KernelConfig:
    """A config that is correct for every shape and reasonable without tuning.

    On a GPU: batch blocks of 32 rows (16 for IEEE float32 and float64, whose products run without tensor
    cores; 64 spills at H=1024). Up to :data:`ONE_SLICE_MAX_HIDDEN`, one program owns the whole width of its
    rows (one launch, no grid barrier). Above it, persistent (the whole sequence in one launch, a grid barrier
    per phase) with the narrowest hidden slice (16, 32 or 64 units) whose ``slices x batch blocks`` programs
    fit on ``sm_count`` SMs at once, when the tile stays within :data:`PERSISTENT_TILE_MAX` elements and the
    slice's share of ``W_hh`` fits :data:`RESIDENT_BYTES_MAX`; else one launch per step, slices of 64 on 8
    warps with the weights streamed in chunks of 64 (the cell, one step, always so). Persistent 16-bit
    storage streams K in chunks of 128 on 4 warps, 32- and 64-bit in chunks of 64 on 8 warps. These are the
    choices that compile for sm_90 without spilling: ``python -m tritongru.compile_check`` compiles every size
    it serves and fails on a spill.

    Under the interpreter: few, large tiles (its cost is per program and per tile, not per element).
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if interpreting():
        block = _pow2_clamp(hidden, MIN_BLOCK, 64)
        return KernelConfig(block_b=_pow2_clamp(batch, MIN_BLOCK, 64), block_h=block, block_k=block)
    wide = dtype.itemsize >= 4
    tensor_cores = dtype.itemsize == 2 or (dtype == torch.float32 and allow_tf32)
    block_b = _pow2_clamp(batch, MIN_BLOCK, 32 if tensor_cores else 16)
    block_k = _pow2_clamp(hidden, MIN_BLOCK, 64 if wide else 128)
    num_warps = 8 if wide else 4
    batch_blocks = -(-batch // block_b)
    if hidden <= ONE_SLICE_MAX_HIDDEN:
        block = _pow2_clamp(hidden, MIN_BLOCK, ONE_SLICE_MAX_HIDDEN)
        return KernelConfig(block_b, block, min(block_k, block), num_warps, num_stages=2, persistent=True)
    block_h = next((width for width in (16, 32, 64) if -(-hidden // width) * batch_blocks <= sm_count), None)
    if kernel != "cell" and block_h is not None and block_b * block_h <= PERSISTENT_TILE_MAX:
        resident_bytes = 3 * (-(-hidden // block_k) * block_k) * block_h * dtype.itemsize
        if resident_bytes <= RESIDENT_BYTES_MAX:
            # two stages for the per-step fallback's streamed K loop (the persistent kernel's loops ignore it)
            return KernelConfig(block_b, block_h, block_k, num_warps, num_stages=2, persistent=True)
    return KernelConfig(block_b, block_h=64, block_k=64, num_warps=8, num_stages=2, persistent=False)


def heuristic_configs(
    kernel: str,
    batch: int,
    hidden: int,
    *,
    dtype: torch.dtype = torch.float32,
    allow_tf32: bool = False,
    sm_count: int = 132,
) -> list[KernelConfig]:
    """:func:`heuristic_config` first, then the same launch with the other K chunks (at most 16 where they are
    unrolled), warps and pipeline stages (those of the per-step launches and fallback), and per step also
    narrower slices: the launchers take the first whose compiled kernels do not spill. Near 128 registers per
    thread ptxas spills a few bytes for one of these and not for another, and which one differs between its
    versions, so it cannot be told before compiling."""
    first = heuristic_config(kernel, batch, hidden, dtype=dtype, allow_tf32=allow_tf32, sm_count=sm_count)
    if interpreting():
        return [first]
    covered = _pow2_clamp(hidden, MIN_BLOCK, 128)
    slices = (first.block_h,) if first.persistent else (64, 32, 16)
    others = [
        replace(first, block_h=block_h, block_k=block_k, num_warps=num_warps, num_stages=num_stages)
        for block_h in slices
        for block_k in (128, 64, 32)
        for num_warps in (4, 8)
        for num_stages in (2, 1, 3)
        if block_k <= covered and not (first.persistent and -(-hidden // block_k) > MAX_K_CHUNKS)
    ]
    return [first, *(config for config in others if config != first)]


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
) -> KernelConfig:
    """The config a launcher uses: the tuned winner for this key if one is cached, else the heuristic.

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
    return _select_config(kernel, variant, dtype, batch, hidden, input_size, device, allow_tf32, store_gates)


@functools.lru_cache(maxsize=4096)
def _select_config(kernel, variant, dtype, batch, hidden, input_size, device, allow_tf32, store_gates):
    if not interpreting() and device.type == "cuda":
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
        return heuristic_config(kernel, batch, hidden, dtype=dtype, allow_tf32=allow_tf32, sm_count=_sm_count(index))
    return heuristic_config(kernel, batch, hidden, dtype=dtype, allow_tf32=allow_tf32)


def clear_memo() -> None:
    """Forget every memoised :func:`select_config` answer (after the tuning cache was written)."""
    _select_config.cache_clear()
