"""What the tuning sweep searches, and what it drops before running anything.

:func:`candidates` expands a kernel's declared :data:`SEARCH_SPACE` into ``KernelConfig`` objects;
:func:`prune` drops those that cannot (or need not) run one problem, each with its reason: tiles larger than
the problem, more threads than tile elements, and resources over the device's budget.

Resources come from a :data:`ResourceModel`. The default, :func:`estimate_resources`, is arithmetic on the tile
sizes; a model that reads registers, spills and shared memory from the real compile (``ptxas -v`` on the
kernel's cubin) has the same signature and replaces it through the ``resources`` argument of :func:`prune`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tritongru.configs import KERNELS, KernelConfig
from tritongru.precisions import Precision

_SEQUENCE_SPACE = {
    "block_b": (16, 32, 64),
    "block_h": (32, 64, 128),
    "block_k": (32, 64),
    "num_warps": (4, 8),
    "num_stages": (1, 2),
    "persistent": (True, False),
}
SEARCH_SPACE: dict[str, dict[str, tuple]] = {
    "forward": _SEQUENCE_SPACE,
    "backward": _SEQUENCE_SPACE,
    "cell": {**_SEQUENCE_SPACE, "block_k": (32, 64, 128), "persistent": (True,)},
}
"""The declared search space per kernel: 144 configs for the sequence kernels, 108 for the cell (always one
launch, so persistent only), before pruning. Kept small on purpose: every config costs a compile, and a full
``tritongru tune`` should finish in well under an hour."""

TINY_SPACE: dict[str, tuple] = {
    "block_b": (16,),
    "block_h": (16, 32),
    "block_k": (16, 32),
    "num_warps": (4,),
    "num_stages": (1,),
    "persistent": (True, False),
}
"""A few configs for the CPU interpreter and tests, where warps and stages mean nothing."""


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
    """Per-block budgets a config must fit: shared memory in bytes and 32-bit registers."""

    shared_memory: int
    registers: int
    registers_per_thread: int = 255


NOMINAL_LIMITS = DeviceLimits(shared_memory=101_376, registers=65_536)
"""The budget assumed where the device cannot be asked (CPU interpreter): an A100-class GPU's."""


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
    return DeviceLimits(shared_memory=shared or NOMINAL_LIMITS.shared_memory, registers=min(registers, 65_536))


def search_space(kernel: str, *, tiny: bool = False) -> dict[str, tuple]:
    """The search space of ``kernel``; ``tiny`` gives :data:`TINY_SPACE` (persistent only for the cell)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if not tiny:
        return SEARCH_SPACE[kernel]
    return {**TINY_SPACE, "persistent": (True,)} if kernel == "cell" else TINY_SPACE


def candidates(kernel: str, space: dict[str, Sequence] | None = None) -> list[KernelConfig]:
    """Every config of the Cartesian product of ``space`` (default: the kernel's :data:`SEARCH_SPACE`); a
    ``KernelConfig`` field that ``space`` leaves out keeps its default."""
    space = space if space is not None else search_space(kernel)
    return [KernelConfig(**dict(zip(space, values, strict=True))) for values in itertools.product(*space.values())]


def _cover(n: int) -> int:
    """The smallest legal tile (a power of two >= 16) that covers ``n``."""
    return max(16, 1 << max(0, n - 1).bit_length())


def estimate_resources(config: KernelConfig, spec: ProblemSpec) -> Resources:
    """Resources by arithmetic on the tiles (no compile; off by 2-4x either way against ``ptxas``).

    Shared memory: per pipeline stage, an ``h`` tile ``[block_b, block_k]`` and the three gates' weight tiles
    ``[block_k, block_h]`` in the storage dtype. Registers per thread: three fp32 (fp64 for float64) gate
    accumulators ``[block_b, block_h]`` and one stage of operand tiles over ``32 * num_warps`` threads, plus a
    fixed 32 for addresses and loop state. Nothing spills."""
    dtype = spec.precision.dtype
    operand_elements = config.block_b * config.block_k + 3 * config.block_k * config.block_h
    words_per_acc = 2 if dtype == torch.float64 else 1
    accumulators = 3 * config.block_b * config.block_h * words_per_acc
    operand_words = operand_elements * dtype.itemsize / 4
    return Resources(
        registers_per_thread=math.ceil((accumulators + operand_words) / (32 * config.num_warps)) + 32,
        shared_memory=operand_elements * dtype.itemsize * max(1, config.num_stages),
    )


def prune_reason(
    config: KernelConfig,
    spec: ProblemSpec,
    limits: DeviceLimits,
    resources: ResourceModel = estimate_resources,
) -> str | None:
    """Why ``config`` cannot (or need not) run ``spec``, or ``None`` when it is worth trying."""
    if spec.kernel == "cell" and not config.persistent:
        return "the cell kernel runs as one launch: persistent only"
    if config.block_b > _cover(spec.batch):
        return f"block_b {config.block_b} > {_cover(spec.batch)}, which already covers batch {spec.batch}"
    if config.block_h > _cover(spec.hidden):
        return f"block_h {config.block_h} > {_cover(spec.hidden)}, which already covers hidden {spec.hidden}"
    reduction = max(spec.hidden, spec.input_size) if spec.kernel == "cell" else spec.hidden
    if config.block_k > _cover(reduction):
        return f"block_k {config.block_k} > {_cover(reduction)}, which already covers K {reduction}"
    threads = 32 * config.num_warps
    if config.block_b * config.block_h < threads:
        return f"{threads} threads for a {config.block_b}x{config.block_h} tile"
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
