"""What the tuning sweep searches, and what it drops before running anything.

:func:`candidates` expands a kernel's declared :data:`SEARCH_SPACE` into ``KernelConfig`` objects;
:func:`prune` drops those that cannot (or need not) run one problem, each with its reason: tiles larger than
the problem, more threads than tile elements, a grid-synchronised grid larger than the GPU, and resources
over the device's budget.

Resources come from a :data:`ResourceModel`: on a GPU :func:`compiled_resources` reads registers, spills and
shared memory from the real compile (the JIT's cubins, read with ``cuobjdump``); under the CPU interpreter, where
nothing runs on a GPU, :func:`estimate_resources` is arithmetic on the tile sizes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from tritongru.configs import KERNELS, MAX_K_CHUNKS, KernelConfig, resident_bytes, wave_chunks
from tritongru.precisions import Precision
from tritongru.tuning_cache import MIN_BLOCK, config_problem

_SPACE = {
    "block_b": (16, 32, 64),
    "block_h": (16, 32, 64),
    "block_k": (64, 128, 256, 512),
    "num_warps": (4, 8),
    "num_stages": (1, 2, 3, 4),
    "persistent": (True, False),
    "split_k": (True, False),
    "batch_blocks": (1, 2, 4, 8),
}
SEARCH_SPACE: dict[str, dict[str, tuple]] = {"forward": _SPACE, "backward": _SPACE, "cell": _SPACE}
"""The declared search space per kernel: the batch block, the hidden slice each program owns, the K chunk of
the step's products, warps, pipeline stages, whether the sequence runs in one launch (weights held on chip)
or one launch per step (weights streamed), whether the warps split K or the rows, and how many batch blocks
one program steps. :func:`candidates` keeps the valid combinations (the warps must share the tile without
computing the same products: :func:`tritongru.tuning_cache.config_problem`), 2,400 of 4,608.

``num_stages`` only matters per step, where the K loop streams weights and Triton may pipeline it: a
persistent launch pins its time loop to one stage (no load may be pipelined above a grid barrier) and
unrolls its K loop over the held tiles, so its stages compile to the same code (checked for sm_90 with Triton
3.9: stages 1 to 4 give the same PTX) and only stage 2 is tried, the stages of its per-step fallback.
``batch_blocks`` only matters where the grid would not fit the SMs: only the fewest that fit are tried.
Every config costs a compile, and a full ``tritongru tune`` should finish in well under an hour."""

TINY_SPACE: dict[str, tuple] = {
    "block_b": (16,),
    "block_h": (16, 32),
    "block_k": (16, 32),
    "num_warps": (1,),
    "num_stages": (2,),
    "persistent": (True, False),
}
"""A few configs for the CPU interpreter and tests, where warps and stages mean nothing (one warp owning the
rows)."""


@dataclass(frozen=True)
class ProblemSpec:
    """What one tuning problem is: the ``kernel`` (one of ``configs.KERNELS``), the formulation, the precision,
    the sizes, and whether the forward kernels save their gates for backward (training compiles a different
    kernel from inference). The sequence length is not part of it: the time loop repeats one step."""

    kernel: str
    variant: str
    precision: Precision
    batch: int
    hidden: int
    input_size: int
    store_gates: bool = False


@dataclass(frozen=True)
class DeviceLimits:
    """Per-program budgets a config must fit (shared memory in bytes, 32-bit registers), and how many SMs the
    programs of a grid-synchronised launch may occupy at once."""

    shared_memory: int
    registers: int
    registers_per_thread: int = 255
    sm_count: int = 132


NOMINAL_LIMITS = DeviceLimits(shared_memory=232_448, registers=65_536)
"""The budget assumed where the device cannot be asked (CPU interpreter): an H100's."""


@dataclass(frozen=True)
class Resources:
    """What one program of a config uses: 32-bit registers per thread, shared memory in bytes, and bytes
    spilled to local memory."""

    registers_per_thread: int
    shared_memory: int
    spill_bytes: int = 0


ResourceModel = Callable[[KernelConfig, ProblemSpec], Resources]
"""``resources(config, spec) -> Resources``: estimated, or read from the compiled kernel."""


def device_limits(device: torch.device) -> DeviceLimits:
    """The shared-memory and register budgets of ``device`` (:data:`NOMINAL_LIMITS` off CUDA)."""
    if device.type != "cuda":
        return NOMINAL_LIMITS
    props = torch.cuda.get_device_properties(device)
    shared = getattr(props, "shared_memory_per_block_optin", 0) or getattr(props, "shared_memory_per_block", 0)
    registers = getattr(props, "regs_per_multiprocessor", 0) or NOMINAL_LIMITS.registers
    return DeviceLimits(
        shared_memory=shared or NOMINAL_LIMITS.shared_memory,
        registers=min(registers, 65_536),
        sm_count=props.multi_processor_count,
    )


def search_space(kernel: str, *, tiny: bool = False) -> dict[str, tuple]:
    """The search space of ``kernel``; ``tiny`` gives :data:`TINY_SPACE` (persistent only for the cell)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if not tiny:
        return SEARCH_SPACE[kernel]
    return {**TINY_SPACE, "persistent": (True,)} if kernel == "cell" else TINY_SPACE


def candidates(kernel: str, space: dict[str, Sequence] | None = None) -> list[KernelConfig]:
    """Every valid config of the Cartesian product of ``space`` (default: the kernel's :data:`SEARCH_SPACE`);
    a ``KernelConfig`` field that ``space`` leaves out keeps its default."""
    space = space if space is not None else search_space(kernel)
    fields = {name: field.default for name, field in KernelConfig.__dataclass_fields__.items()}
    combinations = (fields | dict(zip(space, values, strict=True)) for values in itertools.product(*space.values()))
    return [KernelConfig(**chosen) for chosen in combinations if config_problem(chosen) is None]


def _cover(n: int) -> int:
    """The smallest legal tile (a power of two >= 16) that covers ``n``."""
    return max(16, 1 << max(0, n - 1).bit_length())


def estimate_resources(config: KernelConfig, spec: ProblemSpec) -> Resources:
    """Resources by arithmetic on the tiles, for where nothing is compiled for a GPU (the CPU interpreter).

    Shared memory: the three gates' weights this program holds (:func:`tritongru.configs.resident_bytes`; the
    compiler keeps them in shared memory), plus one wave of ``[block_b, block_k]`` chunks of the exchanged
    operand on its way into the ``mma`` layout (:func:`tritongru.configs.wave_chunks`). Registers per thread:
    three fp32 (fp64 for float64) gate accumulators ``[block_b, block_h]`` per batch block over ``32 *
    num_warps`` threads (``num_warps`` copies when the warps split K), plus a fixed 64 for addresses, loop state
    and prefetched inputs. Nothing spills. On a GPU, :func:`compiled_resources` reads all three from the real
    compile instead."""
    dtype = spec.precision.dtype
    reduction = max(spec.hidden, spec.input_size) if spec.kernel == "cell" else spec.hidden
    words_per_acc = 2 if dtype == torch.float64 else 1
    copies = config.num_warps if config.split_k else 1
    accumulators = 3 * config.block_b * config.block_h * words_per_acc * copies * config.batch_blocks
    chunks = min(wave_chunks(config, reduction, dtype), -(-reduction // config.block_k))
    held = resident_bytes(config, reduction, dtype) if config.persistent else 0
    return Resources(
        registers_per_thread=math.ceil(accumulators / (32 * config.num_warps)) + 64,
        shared_memory=held + chunks * config.block_b * config.block_k * dtype.itemsize,
    )


def compiled_resources(config: KernelConfig, spec: ProblemSpec, *, arch: int | None = None) -> Resources:
    """Resources read from the real compile for ``sm_<arch>`` (default: the current GPU's): the most registers,
    spilled bytes and shared memory over every kernel the launchers compile for ``config`` on ``spec`` (each
    launch of its plan, and of the per-step fallback of a grid-synchronised one). No GPU is needed, only
    Triton's CUDA backend; Triton's cache keeps the compiled kernels for the launches that follow."""
    from tritongru import launchers
    from tritongru.compiled import kernel_resources

    if arch is None:
        major, minor = torch.cuda.get_device_capability()
        arch = 10 * major + minor
    flags = {"bias": True, "store_gates": spec.store_gates} | ({} if spec.kernel == "cell" else {"lengths": False})
    kind, args = launchers.meta_arguments(
        spec.kernel, spec.variant, spec.precision.name, spec.batch, spec.hidden, spec.input_size, flags, config
    )
    kernel = launchers.gru_forward_kernel if kind == "forward" else launchers.gru_backward_kernel
    calls = launchers.compiled_calls(kind, spec.variant, config, spec.batch, spec.hidden, args, arch)
    found = [kernel_resources(kernel, call, arch) for _, call in calls]
    return Resources(
        registers_per_thread=max(r.registers for r in found),
        shared_memory=max(r.shared for r in found),
        spill_bytes=max(r.spills for r in found),
    )


def default_resources(device: torch.device) -> ResourceModel:
    """What pruning reads resources from: the compiled kernels on a GPU, the estimates elsewhere."""
    return compiled_resources if device.type == "cuda" else estimate_resources


def prune_reason(
    config: KernelConfig,
    spec: ProblemSpec,
    limits: DeviceLimits,
    resources: ResourceModel = estimate_resources,
) -> str | None:
    """Why ``config`` cannot (or need not) run ``spec``, or ``None`` when it is worth trying."""
    if config.block_b > _cover(spec.batch):
        return f"block_b {config.block_b} > {_cover(spec.batch)}, which already covers batch {spec.batch}"
    if config.block_h > _cover(spec.hidden):
        return f"block_h {config.block_h} > {_cover(spec.hidden)}, which already covers hidden {spec.hidden}"
    reduction = max(spec.hidden, spec.input_size) if spec.kernel == "cell" else spec.hidden
    # the warps splitting K need 16 columns each, so a chunk of 16 x num_warps covers any K that small
    covering = max(_cover(reduction), MIN_BLOCK * config.num_warps if config.split_k else MIN_BLOCK)
    if config.block_k > covering:
        return f"block_k {config.block_k} > {covering}, which already covers K {reduction}"
    if config.persistent and config.num_stages == 1:
        return "a persistent launch compiles to the same code for every num_stages: stage 2 stands for it"
    if -(-reduction // config.block_k) > MAX_K_CHUNKS:
        return f"K {reduction} in chunks of {config.block_k}: more than {MAX_K_CHUNKS} unrolled chunks"
    threads = 32 * config.num_warps
    if config.block_b * config.block_h < threads:
        return f"{threads} threads for a {config.block_b}x{config.block_h} tile"
    slices, groups = config.grid(spec.batch, spec.hidden)
    if config.persistent and slices > 1 and slices * groups > limits.sm_count:
        return (
            f"{slices * groups} programs cannot all be resident on {limits.sm_count} SMs: the launchers "
            "would run it per step"
        )
    fewer = config.batch_blocks // 2
    if fewer and (
        not config.persistent
        or slices == 1
        or slices * replace(config, batch_blocks=fewer).grid(spec.batch, spec.hidden)[1] <= limits.sm_count
    ):
        return f"{config.batch_blocks} batch blocks per program where {fewer} would do"
    used = resources(config, spec)
    if used.shared_memory > limits.shared_memory:
        return f"shared memory ~{used.shared_memory} B > {limits.shared_memory} B"
    registers = used.registers_per_thread
    if registers > limits.registers_per_thread or registers * threads > limits.registers:
        return f"~{registers} registers per thread x {threads} threads over the budget"
    if used.spill_bytes > 0:
        return f"spills {used.spill_bytes} B to local memory"
    return None


def prune(
    configs: Sequence[KernelConfig],
    spec: ProblemSpec,
    limits: DeviceLimits,
    resources: ResourceModel = estimate_resources,
) -> tuple[list[KernelConfig], list[tuple[KernelConfig, str]]]:
    """Split ``configs`` into those worth timing on ``spec`` and ``(config, reason)`` for those pruned."""
    kept, pruned = [], []
    for config in configs:
        reason = prune_reason(config, spec, limits, resources)
        if reason is None:
            kept.append(config)
        else:
            pruned.append((config, reason))
    return kept, pruned
