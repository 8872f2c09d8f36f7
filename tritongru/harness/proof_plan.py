"""The plan of the proof command: its stages, the kernels each launches, and how long each is estimated to take.

A :class:`Stage` carries its name, the kernels it launches (:class:`~tritongru.harness.precompile.Kernel`), its
estimated seconds and the function that runs it. ``tritongru selftest --plan`` prints the list and
``tritongru selftest`` runs it: one list, so the plan and the run cannot drift.

Kernels come from the launch planning code itself: for every launcher call a stage makes
(:class:`LauncherCall`), the config the launcher tries first (:func:`~tritongru.configs.select_config`), the
arguments it passes (:func:`~tritongru.launchers.meta_arguments`, on meta tensors) and every call of the
config's own launch plan (:func:`~tritongru.launchers.gpu_plans`, :func:`~tritongru.launchers.kernel_calls`);
the per-step fallback of a grid-synchronised plan is compiled only where a launch takes it.

The estimates are a model, not measurements (see the constants): compile seconds per kernel measured on a
2-core machine without a GPU and divided over the GPU machine's processes; launches and timing repetitions
from the design's per-step estimates and the timer's own schedule (:mod:`tritongru.harness.timing`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tritongru import launchers
from tritongru.configs import select_config
from tritongru.harness import timing
from tritongru.harness.precompile import Kernel, distinct
from tritongru.precisions import PRECISIONS

COMPILE_S_PER_KERNEL = 2.0
"""Seconds one process takes to compile one of the plan's kernels for sm_90 into an empty cache: measured on
the 2-core development machine without a GPU (load average about 1), Python 3.12, Triton 3.6.0: the default
plan's 137 kernels in 270 s in one process, by :func:`tritongru.harness.selftest.measure_compile` with
``TRITON_CACHE_DIR`` an empty folder (an earlier measurement, of the kernels before the issue-14 rewrite and
under a load average of 4 to 7, gave 5.7 s). A core of the GPU machine may be faster or slower."""

GPU_PROCESSES = 16
"""Processes the precompile runs on the GPU machine: one per CPU core."""

WORKER_START_S = 4.0
"""Seconds a spawned compile process takes to start (Python, torch, Triton, tritongru imported): measured on
the development machine, ``python -c "import tritongru.harness.precompile"``, 3.2-3.7 s wall."""

ENVIRONMENT_S = 5.0
"""Estimated: the first CUDA call (context creation) and reading the versions."""

STEP_US = {"forward": 10.0, "backward": 20.0, "train": 30.0}
"""Estimated µs per time step of one contender in each bench mode: cuDNN's per-step product and pointwise
kernels (5-10 µs forward, the design's estimate); backward about two forwards, training three."""

POINT_SETUP_S = 1.0
"""Estimated seconds of one bench point beside its timing: fresh inputs, two float32 reference sequences in
plain PyTorch, building the contenders, cuDNN's algorithm search, loading the precompiled kernels."""

REFERENCE_STEP_S = 3e-4
"""Estimated seconds per step of a plain-PyTorch reference forward and backward on a GPU (about 30 small
kernels at 10 µs each): what a stress oracle costs."""

PEAKS_S = 2.0
"""Estimated seconds of the bench's peak measurements (a large matmul per precision, a copy)."""

BARRIER_STEP_S = 3e-6
"""Estimated seconds per step of the barrier alone: a random delay of 1 µs on average and a barrier round trip
through L2 of about 2 µs."""

CALIBRATE_CALL_S = 0.01
"""Estimated seconds of one launch of the calibrate stage: 2.4-10 ms at the step model's assumed rates."""

CHECK_SETUP_S = 1.0
"""Estimated seconds of one oracle check beside its reference's steps: inputs and weights drawn, kernels
loaded from the cache, first calls."""

PLOT_S = 29.0
"""Seconds to draw the bench's figures into one PDF (20 pages for the target region's rows): measured on the
development machine, 28.9 s for a document of the default bench's shape, load average 7 (an overestimate for a
free core)."""


@dataclass(frozen=True)
class LauncherCall:
    """One call of a launcher, as the launcher keys its config (:func:`~tritongru.launchers.first_spill_free`):
    ``kernel`` (``"forward"``, ``"cell"``, ``"backward"``), formulation, precision name, sizes (``input_size``
    0 but for the cell), the flags it passes (``bias``, ``lengths``, ``store_gates``) and the grid exchange in
    force when it is made (:func:`~tritongru.launchers.exchange`)."""

    kernel: str
    variant: str
    precision: str
    batch: int
    hidden: int
    input_size: int
    flags: tuple[tuple[str, bool], ...]
    exchange: str

    @classmethod
    def of(
        cls,
        kernel: str,
        variant: str,
        precision: str,
        batch: int,
        hidden: int,
        exchange: str | None = None,
        **flags: bool,
    ) -> LauncherCall:
        """A call with ``input_size`` ``hidden`` for the cell (0 otherwise), ``flags`` sorted, and ``exchange``
        (None: the one in force now)."""
        input_size = hidden if kernel == "cell" else 0
        exchange = exchange or launchers.exchange()
        return cls(kernel, variant, precision, batch, hidden, input_size, tuple(sorted(flags.items())), exchange)


def layer_calls(
    variant: str, precision: str, batch: int, hidden: int, *, train: bool, exchange: str | None = None
) -> list[LauncherCall]:
    """What one ``tritongru.GRU`` layer with biases launches: the forward (saving gates when it trains) with
    ``exchange`` (None: the one in force now) and, when it trains, the backward (after the forward has
    returned: with the exchange in force now)."""
    forward = LauncherCall.of(
        "forward", variant, precision, batch, hidden, exchange, bias=True, lengths=False, store_gates=train
    )
    backward = LauncherCall.of("backward", variant, precision, batch, hidden, bias=True, lengths=False)
    return [forward, backward] if train else [forward]


def cell_calls(variant: str, precision: str, batch: int, hidden: int, *, train: bool) -> list[LauncherCall]:
    """What one ``tritongru.GRUCell`` step with biases launches (input width = hidden): the fused step and,
    when it trains, the backward (the layer's, with one step)."""
    cell = LauncherCall.of("cell", variant, precision, batch, hidden, bias=True, store_gates=train)
    backward = LauncherCall.of("backward", variant, precision, batch, hidden, bias=True, lengths=False)
    return [cell, backward] if train else [cell]


def own_plan(call: LauncherCall, device: torch.device, arch: int) -> tuple[launchers.LaunchPlan, str, dict]:
    """``(plan, kind, args)`` of ``call`` on an ``arch`` GPU: the own plan of the config its launcher tries
    first on ``device`` (a CUDA device: its tuning cache and SMs; else the heuristic for 132 SMs), and the
    kind of kernel with its arguments on meta tensors."""
    p = PRECISIONS[call.precision]
    flags = dict(call.flags)
    config = select_config(
        call.kernel,
        variant=call.variant,
        dtype=p.dtype,
        batch=call.batch,
        hidden=call.hidden,
        input_size=call.input_size,
        device=device,
        allow_tf32=p.allow_tf32,
        store_gates=flags.get("store_gates", False),
    )
    kind, args = launchers.meta_arguments(
        call.kernel, call.variant, call.precision, call.batch, call.hidden, call.input_size, flags, config
    )
    plan = next(iter(launchers.gpu_plans(config, call.batch, call.hidden, arch).values()))
    return plan, kind, args


def launched_kernels(calls: Iterable[LauncherCall], device: torch.device, arch: int) -> list[Kernel]:
    """Every kernel ``calls`` launch on an ``arch`` GPU (see :func:`own_plan`) with their exchanges, each cache
    entry once. The cell runs one step; a sequence is planned with two, which makes every distinct launch a
    longer one makes (the step range is not specialised)."""
    kernels = []
    for call in calls:
        plan, kind, args = own_plan(call, device, arch)
        steps = 1 if call.kernel == "cell" else 2
        with launchers.using_exchange(call.exchange):
            made = launchers.kernel_calls(kind, call.variant, plan, steps, args)
        kernels += [Kernel(kind, kwargs) for kwargs in made]
    return distinct(kernels)


def compile_s(kernels: int, processes: int = GPU_PROCESSES) -> float:
    """Estimated wall seconds to compile ``kernels`` kernels in ``processes`` processes."""
    return 0.0 if kernels == 0 else WORKER_START_S + math.ceil(kernels / processes) * COMPILE_S_PER_KERNEL


def timing_s(call_s: float) -> float:
    """Wall seconds :func:`~tritongru.harness.timing.measure` spends on a call of ``call_s`` seconds: what
    ``triton.testing.do_bench`` does, one call, five to estimate, warm-up calls filling ``WARMUP_MS`` and
    timed ones filling ``REPEAT_MS`` (at least one each)."""
    warmup, repeat = timing.WARMUP_MS / 1e3, timing.REPEAT_MS / 1e3
    return 6 * call_s + max(warmup, call_s) + max(repeat, call_s)


def bench_point_s(seq_len: int, contenders: int, modes: Sequence[str]) -> float:
    """Estimated seconds of one bench point: setup, then each contender's check call and timing in each mode
    (the check is a forward; training also measures its peak memory in one more call)."""
    per_contender = sum(timing_s(seq_len * STEP_US[mode] * 1e-6) + seq_len * STEP_US[mode] * 1e-6 for mode in modes)
    return POINT_SETUP_S + contenders * per_contender


@dataclass
class Context:
    """What a running stage is given: ``device``, the output folder ``out``, ``echo`` (a line to the log),
    ``record`` (one outcome to the results: what, passed, detail) and ``left()`` (seconds until the stage must
    end, so that the later stages keep their estimated time)."""

    device: torch.device
    out: Path
    echo: Callable[[str], None]
    record: Callable[[str, bool, str], None]
    left: Callable[[], float]


@dataclass(frozen=True)
class Stage:
    """One stage of the proof: ``name``; ``what`` it settles (one line); the ``kernels`` it launches (compiled
    in advance by the precompile stage); ``estimate_s`` and how it was reckoned (``model``); ``run``."""

    name: str
    what: str
    kernels: tuple[Kernel, ...]
    estimate_s: float
    model: str
    run: Callable[[Context], None] = field(compare=False)


def plan_lines(stages: Sequence[Stage], budget_s: float) -> list[str]:
    """The plan as printed: a header, one line per stage (kernels launched, estimated seconds, the model) and
    ``total N s`` last."""
    lines = [
        f"tritongru selftest plan, budget {budget_s:.0f} s; every figure is an estimate (model in "
        "tritongru.harness.proof_plan), not a measurement",
        f"{'':2} {'stage':<14} {'kernels':>7} {'estimate':>9}  model",
    ]
    for index, stage in enumerate(stages, 1):
        lines.append(f"{index:<2} {stage.name:<14} {len(stage.kernels):>7} {stage.estimate_s:>7.0f} s  {stage.model}")
    lines.append(f"total {total_s(stages)} s")
    return lines


def total_s(stages: Sequence[Stage]) -> int:
    """The plan's total, as its last line prints it (whole seconds, rounded up)."""
    return math.ceil(sum(stage.estimate_s for stage in stages))
