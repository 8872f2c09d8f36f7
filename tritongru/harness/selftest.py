"""The proof command, ``tritongru selftest``: what a first, short loan of a GPU must settle, in one run that a
kill at any moment leaves with what it measured so far.

Its stages (:func:`proof_stages`, the one list that ``--plan`` prints and the run runs), in order of what they
settle:

1. **environment**: one line: GPU, driver, CUDA, cuDNN, torch, Triton, Python, commit;
2. **precompile**: every kernel the later stages launch, compiled in one process per CPU by the JIT's own
   path (:mod:`tritongru.harness.precompile`), so that every launch finds it in Triton's on-disk cache;
3. **barrier**: the grid barrier alone with 2, 32 and one program per SM for thousands of steps, every
   program delayed at random at every step, step tags checked after every barrier; then, without the delays,
   its µs per step (:func:`barrier_step_us`), what the step model assumes;
4. **smoke**: every kernel at one size (:data:`SMOKE`) against its oracle: the layer's forward with and
   without saved gates, its backward, the cell with and without; both formulations;
5. **bench**: tritongru against cuDNN over :data:`TARGET_REGION` (:data:`BENCH_PROVIDERS`: the tagged exchange
   too), the most telling point first (:func:`bench_points`), each point's rows in the results file the moment
   they are measured;
6. **stress**: whole layers at the widest grids that really are grid-synchronised (:data:`STRESS_LAYERS`: the
   launch plan is asserted to be one cooperative grid of at least :data:`STRESS_MIN_PROGRAMS` programs that
   fit on the GPU at once) over long sequences, forward and backward, both formulations;
7. **calibrate**: the tensor cores' FLOP a clock an SM, alone, at the tile shapes of today's kernels
   (``mma.sync``) and of the gate rows as M (``wgmma``), bf16 and TF32, and one L2 round trip (a chain of
   dependent loads past L1), each output checked exactly first (after the stages above, so that a
   fault here cannot cost them);
8. **tests**: the kernel-facing test files on CUDA, time-boxed by what is left.

Each stage checks the clock before it starts and is skipped, with a line that says so, when what is left of
the budget cannot hold its estimate; the bench and the tests stop in time to leave the later stages theirs.
Everything goes to one flat folder (:data:`OUTPUT_FILES`), written as it happens: the log line by line, the
outcomes as JSON lines, the bench results rewritten atomically after every point (valid JSON at every moment),
the speed-up table after every point, the plots (one PDF) after the bench. Exit status 0 when nothing failed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import torch
import triton
from triton.backends.compiler import GPUTarget

import tritongru
from tritongru import launchers, reference
from tritongru.environment import write_atomic
from tritongru.harness import bench, plots, results, timing
from tritongru.harness.bench import Point
from tritongru.harness.grids import Grid
from tritongru.harness.precompile import KERNELS, Kernel, distinct, precompile
from tritongru.harness.proof_plan import (
    BARRIER_STEP_S,
    CALIBRATE_CALL_S,
    CHECK_SETUP_S,
    COMPILE_S_PER_KERNEL,
    ENVIRONMENT_S,
    GPU_PROCESSES,
    PEAKS_S,
    PLOT_S,
    REFERENCE_STEP_S,
    STEP_US,
    WORKER_START_S,
    Context,
    LauncherCall,
    Stage,
    bench_point_s,
    cell_calls,
    compile_s,
    launched_kernels,
    layer_calls,
    own_plan,
    plan_lines,
    timing_s,
    total_s,
)
from tritongru.harness.providers import PROVIDERS
from tritongru.precisions import PRECISIONS
from tritongru.variants import VARIANTS

BUDGET_S = 420
"""The default budget: 7 minutes, what a short loan of a GPU can hold."""

BARRIER_STEPS = 4000
"""Steps of each barrier-alone run."""

BARRIER_DELAY_NS = 2000
"""Longest random wait of a program before it arrives at the barrier."""

SMOKE = ("bf16", 16, 768, 64)
"""``(precision, batch, hidden, steps)`` of the smoke check: the bench's first point, so that its kernels are
proven before they are timed (the layer's are the bench's own; only the cell's are extra)."""

TARGET_REGION = Grid(
    batch=(1, 16, 64),
    hidden=(256, 512, 768, 1024),
    seq_len=(1024,),
    precisions=("bf16", "tf32"),
    modes=("forward", "train"),
)
"""The issue's target region: T=1024, B <= 64, H 256-1024, bf16 and TF32, inference and training."""

FIRST_POINT: Point = ("bf16", 16, 768, 1024)
"""The most telling point, measured first: where the step target (:data:`STEP_TARGET_US`) is set."""

BENCH_PROVIDERS: dict[str, str | None] = {
    "tritongru-cudnn": "cudnn",
    "tritongru-cudnn-tagged": "cudnn",
    "tritongru-classic": "classic",
    "cudnn": None,
}
"""The bench's contenders, each with the tritongru formulation it runs (None: not tritongru): both formulations
against cuDNN, and the cudnn form's forward once more with the tagged exchange (:mod:`tritongru.launchers`),
which no GPU has timed, beside the counter it would replace."""

STRESS_LAYERS = (("bf16", 16, 2048, 1024), ("fp32", 32, 1024, 1024), ("fp32", 16, 2048, 1024))
"""``(precision, batch, hidden, steps)`` of the layer stress: the widest grids the heuristic runs
grid-synchronised on an H100 (132 SMs): bf16 H=2048 in slices of 16, one barrier of 128 programs; IEEE
float32 H=1024 in slices of 16 with two batch blocks, 128 programs meeting in two barriers of 64; IEEE float32
H=2048, 128 programs streaming 10 (forward) or 11 (backward) of 16 K chunks of their weights every step through
a pipelined loop of copies into shared memory (``cp.async``), which no other stage runs."""

STRESS_MIN_PROGRAMS = 128
"""Fewest programs a stress layer's grid-synchronised launch must have (checked from the launch plan)."""

TEST_FILES = (
    "tests/test_kernels.py",
    "tests/test_grid_sync.py",
    "tests/test_modules.py",
    "tests/test_validation.py",
    "tests/test_reference.py",
    "tests/test_zoneout.py",
    "tests/test_compile.py",
)
"""What the tests stage runs: everything that launches the kernels (zoneout's mask helper included: ``tl.rand``
compiled for the GPU against the host's Philox), and the sm_90 compile check with the GPU's own Triton (its
ptxas allocates registers its own way); none of the harness's own tests."""

TEST_WORKERS = 8
"""pytest-xdist workers of the tests stage: kernels compile in parallel."""

TESTS_MIN_S = 60.0
"""The shortest time box worth starting the tests stage with; it takes whatever is left beyond."""

TARGETS = {"forward": 2.0, "train": 1.5}
"""Speed-up over cuDNN each mode should reach in :data:`TARGET_REGION` (cudnn form)."""

RATE_PRECISIONS = ("bf16", "tf32")
"""The precisions whose tensor-core rate the calibrate stage measures: the target region's."""

RATE_ITERS = {"mma.sync": 4096, "wgmma": 32768}
"""Products per program of each rate launch: about 5 ms (mma.sync) and 2.4 ms (wgmma) for bf16 at the rates
the step model assumes (1024 and 4096 FLOP a clock an SM at 1.755 GHz), twice that for TF32."""

L2_LINES = 32768
"""Cache lines the L2 chase runs through: 4 MB, past an SM's L1 (256 KB) and well inside the L2 (50 MB)."""

L2_HOPS = 20000
"""Dependent loads of one L2 chase launch: about 10 ms at the model's 0.5 µs, a few ms at L2's bare latency."""

STEP_TARGET_US = 1.5
"""Microseconds per step the forward should reach at B=16, H=768, bf16."""

STEP_TARGET_AT = ("forward", "bf16", 16, 768)
"""``(mode, precision, batch, hidden)`` of :data:`STEP_TARGET_US`."""

STEP_TARGET_PROVIDERS = ("tritongru-cudnn", "tritongru-cudnn-tagged")
"""The contenders whose forward is held to the step target: the default exchange and the tagged one."""

LOG_FILE, OUTCOMES_FILE, BENCH_FILE, TABLE_FILE, PLOTS_FILE = (
    "selftest.log",
    "outcomes.jsonl",
    "bench-selftest.json",
    "speedups.txt",
    "plots.pdf",
)
OUTPUT_FILES = (LOG_FILE, OUTCOMES_FILE, BENCH_FILE, TABLE_FILE, PLOTS_FILE)
"""Every file a run writes into its output folder (one flat folder): the log; one JSON line per outcome
(stage, what, status, detail, seconds since the start); the bench's results document; its speed-up table; its
figures, a page each."""


# ----------------------------------------------------------------------------------------------- the checks


def _worst(compared: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> str | None:
    """What is off among ``name: (ours, oracle, low)``, or None when nothing is.

    ``oracle`` is computed in float32 on the same (rounded) weights and inputs, ``low`` by the plain-PyTorch
    reference in the storage dtype: ours may be off the oracle by twice what the reference's own rounding
    costs, plus ``1e-3`` of the oracle's largest magnitude (all an IEEE float32 run is allowed)."""
    found = []
    for name, (ours, oracle, low) in compared.items():
        oracle = oracle.float()
        error = (ours.float() - oracle).abs().max().item()
        bound = 2 * (low.float() - oracle).abs().max().item() + 1e-3 * (1 + oracle.abs().max().item())
        if not error <= bound:
            found.append(f"{name} off by {error:.2e} (allowed {bound:.2e})")
    return "; ".join(found) or None


def _run(fn: Callable, tensors: Sequence[torch.Tensor], dtype: torch.dtype, wanted: Sequence[int], cotangent):
    """``(output, gradients)``: ``fn`` on copies of ``tensors`` in ``dtype``, and the gradients of
    ``sum(output * cotangent)`` with respect to the copies at ``wanted``."""
    copies = [t.detach().to(dtype).requires_grad_() for t in tensors]
    output = fn(*copies)
    return output, torch.autograd.grad((output.float() * cotangent).sum(), [copies[i] for i in wanted])


def _oracle_check(
    ours, oracle, low, tensors, wanted: dict[str, int], shape: tuple[int, ...], precision: str, inference: bool
) -> str | None:
    """Run ``ours`` (storage dtype), ``oracle`` (float32) and ``low`` (the reference, storage dtype) on
    ``tensors`` and compare the outputs (``shape``) and the gradients of the inputs named in ``wanted`` (see
    :func:`_worst`); with ``inference`` also ours under ``torch.no_grad()``."""
    dtype = PRECISIONS[precision].dtype
    cotangent = torch.randn(shape, device=tensors[0].device)
    runs = [
        _run(fn, tensors, d, tuple(wanted.values()), cotangent)
        for fn, d in ((ours, dtype), (oracle, torch.float32), (low, dtype))
    ]
    compared = {"output": tuple(out for out, _ in runs)}
    for index, name in enumerate(wanted):
        compared[f"d {name}"] = tuple(grads[index] for _, grads in runs)
    if inference:
        with torch.no_grad():
            compared["output without grad"] = (ours(*tensors), *compared["output"][1:])
    launchers.check_grid_barriers()
    return _worst(compared)


def layer_check(
    variant: str, precision: str, batch: int, hidden: int, steps: int, device: torch.device, *, inference: bool
) -> str | None:
    """One ``tritongru.gru_layer`` with biases (input width = hidden) against its oracle: the output and the
    gradients of the input and ``weight_hh``; with ``inference`` also the output under ``torch.no_grad()``.
    The oracle is ``torch.nn.GRU`` (cuDNN on a GPU, TF32 off) for the cudnn form and the reference for the
    classic form, in float32. None when all agrees (see :func:`_worst`), else what differs."""
    p = PRECISIONS[precision]
    torch.manual_seed(hidden + steps)
    module = torch.nn.GRU(hidden, hidden, device=device)
    x = torch.randn(steps, batch, hidden, device=device) * hidden**-0.5
    h0 = torch.randn(batch, hidden, device=device) * 0.5
    tensors = [t.detach().to(p.dtype) for t in (x, h0, *module.parameters())]
    names = [name for name, _ in module.named_parameters()]

    def ours(x, h, *weights):
        return tritongru.gru_layer(x, h, *weights, variant=variant, allow_tf32=p.allow_tf32)[0]

    def low(x, h, *weights):
        return reference.gru_layer_ref(x, h, *weights, variant=variant)[0]

    def cudnn(x, h, *weights):
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            return torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (x, h[None]))[0]

    oracle = cudnn if variant == "cudnn" else low
    return _oracle_check(ours, oracle, low, tensors, {"input": 0, "weight_hh": 3}, x.shape, precision, inference)


def cell_check(
    variant: str, precision: str, batch: int, hidden: int, device: torch.device, *, inference: bool
) -> str | None:
    """One ``tritongru.gru_cell`` step with biases (input width = hidden) against its oracle: the new state and
    the gradients of the input, the state and ``weight_hh``; with ``inference`` also the step under
    ``torch.no_grad()``. The oracle is ``torch.nn.GRUCell`` for the cudnn form, the reference for the classic
    form, in float32 (see :func:`_worst`)."""
    p = PRECISIONS[precision]
    torch.manual_seed(hidden + 1)
    module = torch.nn.GRUCell(hidden, hidden, device=device)
    x = torch.randn(batch, hidden, device=device) * hidden**-0.5
    h = torch.randn(batch, hidden, device=device) * 0.5
    tensors = [t.detach().to(p.dtype) for t in (x, h, *module.parameters())]
    names = [name for name, _ in module.named_parameters()]

    def ours(x, h, *weights):
        return tritongru.gru_cell(x, h, *weights, variant=variant, allow_tf32=p.allow_tf32)

    def low(x, h, *weights):
        return reference.gru_cell_ref(x, h, *weights, variant=variant)

    def torch_cell(x, h, *weights):
        return torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (x, h))

    oracle = torch_cell if variant == "cudnn" else low
    return _oracle_check(
        ours, oracle, low, tensors, {"input": 0, "state": 1, "weight_hh": 3}, h.shape, precision, inference
    )


def _attempt(check: Callable[..., str | None], *args: object, **kwargs: object) -> str | None:
    """``check(*args, **kwargs)``, a ``RuntimeError`` (a timed-out barrier, a CUDA error) turned into what it
    says."""
    try:
        return check(*args, **kwargs)
    except RuntimeError as error:
        return f"{type(error).__name__}: {error}"


def stress_plan_problem(call: LauncherCall, device: torch.device, arch: int) -> str | None:
    """Why ``call`` would not run as one grid-synchronised launch of at least :data:`STRESS_MIN_PROGRAMS`
    programs on ``device`` (an ``arch`` GPU), or None: read from its launch plan and, on a GPU, from whether
    its compiled kernel fits on the SMs all at once (else the launch would fall back to per-step launches)."""
    plan, kind, args = own_plan(call, device, arch)
    programs = math.prod(plan.grid)
    where = f"{call.kernel} {call.variant} {call.precision} B={call.batch} H={call.hidden}"
    if not plan.grid_sync or programs < STRESS_MIN_PROGRAMS:
        how = "grid-synchronised" if plan.grid_sync else "persistent in one slice" if plan.persistent else "per step"
        return f"{where} runs {how} with {programs} programs, not grid-synchronised with {STRESS_MIN_PROGRAMS}+"
    if device.type == "cuda":
        (first,) = launchers.kernel_calls(kind, call.variant, plan, 2, args)
        if not launchers._fits_at_once(KERNELS[kind], plan.grid, first, device):
            return f"{where}: {programs} programs do not fit on {device} at once, it would run per step"
    return None


# ----------------------------------------------------------------------------------------------- the stages


def environment_line(device: torch.device) -> str:
    """GPU, driver, CUDA, cuDNN, torch, Triton, Python and commit, in one line."""
    meta = results.environment(device, interpreter=device.type != "cuda")
    dirty = " (dirty)" if meta["git_dirty"] else ""
    return (
        f"gpu {meta['gpu']} | driver {meta['driver']} | cuda {meta['cuda']} | cudnn {meta['cudnn']} | "
        f"torch {meta['torch']} | triton {meta['triton']} | python {meta['python']} | "
        f"commit {meta['git_commit']}{dirty}"
    )


def _environment(ctx: Context) -> None:
    ctx.record("environment", True, environment_line(ctx.device))


def _precompile(kernels: Sequence[Kernel], jobs: int) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        target = triton.runtime.driver.active.get_current_target()
        start = time.monotonic()
        failures = precompile(kernels, target, jobs=jobs)
        seconds = time.monotonic() - start
        detail = f"{len(kernels) - len(failures)} of {len(kernels)} kernels in {seconds:.0f} s, {jobs} processes"
        ctx.record("precompile", not failures, "; ".join([detail, *failures]))

    return run


def stress_kernels(programs: Sequence[int]) -> list[Kernel]:
    """The barrier-alone kernels :func:`_barrier` launches, one per number of programs."""
    return [Kernel("stress", launchers.stress_arguments(n, BARRIER_STEPS, BARRIER_DELAY_NS, "meta")) for n in programs]


def barrier_step_us(programs: int, device: torch.device) -> float:
    """Microseconds per step of the barrier alone with ``programs`` programs and no delay, timed
    (:func:`~tritongru.harness.timing.measure`) over launches of :data:`BARRIER_STEPS` steps, each launch's host
    work spread over its steps: an arrival, the polls until every program has arrived and one round trip of loads
    of the others' tags, what ``profiling/predict_steps.py`` assumes as ``BARRIER_US + L2_ROUND_TRIP_US``."""
    median, _, _ = timing.measure(lambda: launchers.stress_barrier(programs, BARRIER_STEPS, 0, device), device=device)
    return median * 1e3 / BARRIER_STEPS


def _barrier(programs: Sequence[int]) -> Callable[[Context], None]:
    def run(ctx: Context) -> None:
        for count in programs:
            what = f"barrier alone, {count} programs x {BARRIER_STEPS} steps, delays up to {BARRIER_DELAY_NS} ns"
            try:
                stale = launchers.stress_barrier(count, BARRIER_STEPS, BARRIER_DELAY_NS, ctx.device)
            except (RuntimeError, ValueError) as error:
                ctx.record(what, False, str(error))
                continue
            ctx.record(what, stale == 0, f"{stale} stale tags seen")
            if stale == 0:
                us = barrier_step_us(count, ctx.device)
                timed = f"barrier alone, {count} programs, no delay, timed"
                ctx.record(timed, True, f"{us:.2f} us per step (the model's BARRIER_US + L2_ROUND_TRIP_US)")

    return run


def rate_launches(sm_count: int) -> list[tuple[str, str, int, int]]:
    """``(instruction, precision, programs, products each)`` of every rate measurement on ``sm_count`` SMs."""
    return [
        (instruction, precision, sm_count * shape.programs_per_sm, RATE_ITERS[instruction])
        for instruction, shape in launchers.MMA_RATE_SHAPES.items()
        for precision in RATE_PRECISIONS
    ]


def calibrate_kernels(sm_count: int) -> list[Kernel]:
    """The kernels :func:`_calibrate` launches (meta tensors): one rate kernel per instruction and precision,
    and the L2 chase."""
    rates = [
        Kernel("mma-rate", launchers.mma_rate_arguments(instruction, precision, programs, iters, "meta"))
        for instruction, precision, programs, iters in rate_launches(sm_count)
    ]
    links = torch.empty(L2_LINES * launchers.L2_LINE_WORDS, dtype=torch.int32, device="meta")
    return [*rates, Kernel("l2-chase", launchers.l2_chase_arguments(links, L2_HOPS))]


def expected_rate_output(instruction: str, programs: int, iters: int) -> torch.Tensor:
    """What :func:`~tritongru.kernels.calibrate.mma_rate_kernel` must write: ``iters * (a @ b)`` of each
    program's operands, from their definition, in float64 (exact) on the CPU."""
    shape = launchers.MMA_RATE_SHAPES[instruction]
    pid = torch.arange(programs)[:, None, None]
    o_m, o_n, o_k = (torch.arange(n) for n in (shape.block_m, shape.block_n, shape.block_k))
    a = (o_m[:, None] + 2 * o_k[None, :] + pid) % 3 - 1
    b = (3 * o_k[:, None] + o_n[None, :] + pid) % 3 - 1
    return iters * (a.double() @ b.double())


def rate_check(instruction: str, precision: str, programs: int, iters: int, device: torch.device) -> str | None:
    """Why the rate kernel's output is wrong, or None when it is exactly :func:`expected_rate_output`."""
    out = launchers.mma_rate(instruction, precision, programs, iters, device)
    wrong = (out.double().cpu() != expected_rate_output(instruction, programs, iters)).sum().item()
    return f"{wrong} of {out.numel()} products wrong" if wrong else None


def chase_check(links: torch.Tensor, on_device: torch.Tensor, hops: int) -> str | None:
    """Why :func:`~tritongru.launchers.l2_chase` over ``on_device`` (a copy of ``links``) did not reach the index
    that following ``links`` ``hops`` times from 0 reaches, or None."""
    index, following = 0, links.tolist()
    for _ in range(hops):
        index = following[index]
    reached = launchers.l2_chase(on_device, hops)
    return None if reached == index else f"reached index {reached}, expected {index}"


def sm_count_and_clock(device: torch.device) -> tuple[int, float]:
    """``(SMs, rated SM clock in Hz)`` of a CUDA ``device`` (the clock as the driver reports it, the maximum)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    properties = triton.runtime.driver.active.utils.get_device_properties(index)
    return properties["multiprocessor_count"], properties["sm_clock_rate"] * 1e3


def _calibrate(ctx: Context) -> None:
    sm_count, clock_hz = sm_count_and_clock(ctx.device)
    _rates(ctx, sm_count, clock_hz)
    _l2_round_trip(ctx, clock_hz)


def _l2_round_trip(ctx: Context, clock_hz: float) -> None:
    links = launchers.l2_chase_links(L2_LINES)
    on_device = links.to(ctx.device)
    megabytes = links.numel() * links.element_size() / 2**20
    what = f"L2 round trip alone, {L2_HOPS} dependent loads past L1 over {megabytes:.0f} MB"
    problem = _attempt(chase_check, links, on_device, L2_HOPS)
    if problem is not None:
        ctx.record(what, False, problem)
        return
    median, _, _ = timing.measure(functools.partial(launchers.l2_chase, on_device, L2_HOPS), device=ctx.device)
    us = median * 1e3 / L2_HOPS
    ctx.record(
        what,
        True,
        f"{us:.3f} us a load, {us * 1e-6 * clock_hz:.0f} clocks at the rated {clock_hz / 1e9:.2f} GHz (the model's "
        "L2_ROUND_TRIP_US, 0.5 us, is a wave of loads, issued together)",
    )


def _rates(ctx: Context, sm_count: int, clock_hz: float) -> None:
    for instruction, precision, programs, iters in rate_launches(sm_count):
        shape = launchers.MMA_RATE_SHAPES[instruction]
        tile = f"{shape.block_m}x{shape.block_n}x{shape.block_k}"
        warps = f"{shape.num_warps} warp" + ("s" if shape.num_warps > 1 else "")
        what = f"{instruction} rate, {precision}, {tile} on {warps}"
        problem = _attempt(rate_check, instruction, precision, programs, iters, ctx.device)
        if problem is not None:
            ctx.record(what, False, problem)
            continue
        launch = functools.partial(launchers.mma_rate, instruction, precision, programs, iters, ctx.device)
        median, _, _ = timing.measure(launch, device=ctx.device)
        flop = programs * iters * 2 * shape.block_m * shape.block_n * shape.block_k
        flop_per_s_sm = flop / (median * 1e-3) / sm_count
        ctx.record(
            what,
            True,
            f"{flop_per_s_sm / 1e12:.2f} TFLOP/s an SM: {flop_per_s_sm / clock_hz:.0f} FLOP a clock at the rated "
            f"{clock_hz / 1e9:.2f} GHz (the model's MMA_FLOP_PER_CLK_SM assumes mma.sync at 1024 for 2-byte "
            "operands, 512 for 4-byte)",
        )


def smoke_calls(precision: str, batch: int, hidden: int) -> list[LauncherCall]:
    """What :func:`smoke` launches."""
    return [
        call
        for variant in VARIANTS
        for train in (True, False)
        for call in (
            *layer_calls(variant, precision, batch, hidden, train=train),
            *cell_calls(variant, precision, batch, hidden, train=train),
        )
    ]


def smoke(precision: str, batch: int, hidden: int, steps: int) -> Callable[[Context], None]:
    """The smoke stage: :func:`layer_check` and :func:`cell_check` at one size, both formulations, with and
    without gradients."""

    def run(ctx: Context) -> None:
        sizes = f"{precision} B={batch} H={hidden}"
        for variant in VARIANTS:
            problem = _attempt(layer_check, variant, precision, batch, hidden, steps, ctx.device, inference=True)
            ctx.record(f"layer {variant} {sizes} T={steps}", problem is None, problem or "agrees with its oracle")
            problem = _attempt(cell_check, variant, precision, batch, hidden, ctx.device, inference=True)
            ctx.record(f"cell {variant} {sizes}", problem is None, problem or "agrees with its oracle")

    return run


def bench_points(grid: Grid = TARGET_REGION, first: Point = FIRST_POINT) -> list[Point]:
    """The bench's points in the order they are measured: ``first``, then the rest of ``grid`` as it lists
    them (precision outermost: bf16 before TF32)."""
    points = grid.points()
    return [first, *(point for point in points if point != first)] if first in points else points


def bench_calls(grid: Grid, points: Sequence[Point], providers: dict[str, str | None]) -> list[LauncherCall]:
    """What :func:`bench_stage` launches: at every point, each tritongru contender's layer as its check
    (inference) and each mode (training saves gates and runs the backward) launch it, its forward with the
    contender's exchange."""
    trains = sorted({False} | {mode != "forward" for mode in grid.modes})
    return [
        call
        for precision, batch, hidden, _ in points
        for key, variant in providers.items()
        if variant is not None
        for train in trains
        for call in layer_calls(variant, precision, batch, hidden, train=train, exchange=PROVIDERS[key].exchange)
    ]


def point_line(rows: Sequence[dict]) -> str:
    """One bench point's speed-ups over the baseline, per contender and mode, in one line."""
    first = rows[0]
    parts = [
        f"{row['provider']} {row['mode']} {row['speedup_vs_baseline']:.2f}x"
        for row in rows
        if row["status"] == "ok" and row["speedup_vs_baseline"] is not None
    ]
    sizes = f"{first['dtype']} B={first['batch']} H={first['hidden']} T={first['seq_len']}"
    return f"bench {sizes}: " + (", ".join(parts) or "no timed rows")


def bench_stage(grid: Grid, points: Sequence[Point], providers: dict[str, str | None]) -> Callable[[Context], None]:
    """The bench stage: :func:`tritongru.harness.bench.run_bench` over ``points`` in order, each point's rows
    written to :data:`BENCH_FILE` (and the table to :data:`TABLE_FILE`) as soon as they are measured; it stops
    taking points when what is left of its time cannot hold one and the plots; then the plots."""

    def run(ctx: Context) -> None:
        needed = bench_point_s(grid.seq_len[-1], len(providers), grid.modes) + PLOT_S

        def timely() -> Iterator[Point]:
            for index, point in enumerate(points):
                if ctx.left() < needed:
                    ctx.echo(f"bench: stopping after {index} of {len(points)} points, {ctx.left():.0f} s left")
                    return
                yield point

        def save(document: dict) -> None:
            results.write_file(document, ctx.out / BENCH_FILE)
            write_atomic(ctx.out / TABLE_FILE, "\n".join(speedup_table(document)) + "\n")
            last = document["rows"][-1]
            ctx.echo(point_line([r for r in document["rows"] if _point_of(r) == _point_of(last)]))

        document = bench.run_bench(
            grid, providers=tuple(providers), device=ctx.device, progress=False, points=timely(), on_point=save
        )
        launchers.check_grid_barriers()  # a timed-out barrier in the bench makes its times meaningless
        measured = len({_point_of(row) for row in document["rows"]})
        ctx.record("bench", True, f"{measured} of {len(points)} points in {BENCH_FILE}")
        if document["rows"]:
            pages = plots.draw_pdf([document], ctx.out / PLOTS_FILE)
            ctx.echo(f"bench: {pages} figures in {PLOTS_FILE}")
            for line in speedup_table(document):
                ctx.echo(line)

    return run


def speedup_table(document: dict) -> list[str]:
    """The bench's summary: per point and mode, the cudnn form's speed-up over cuDNN against the target, and the
    forward's µs per step; the worst point of each mode first, so that misses show before hits. Last, the
    forward's µs per step at B=16 H=768 bf16 against :data:`STEP_TARGET_US`, of each of
    :data:`STEP_TARGET_PROVIDERS` measured."""
    timed = [row for row in document["rows"] if row["status"] == "ok" and row["speedup_vs_baseline"]]
    rows = [row for row in timed if row["provider"] == "tritongru-cudnn"]
    lines = [f"{'mode':<8} {'dtype':<5} {'B':>4} {'H':>5} {'T':>5} {'speed-up':>9} {'target':>7} {'us/step':>8}"]
    for mode, target in TARGETS.items():
        for row in sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["speedup_vs_baseline"]):
            speedup = row["speedup_vs_baseline"]
            lines.append(
                f"{mode:<8} {row['dtype']:<5} {row['batch']:>4} {row['hidden']:>5} {row['seq_len']:>5} "
                f"{speedup:>8.2f}x {'met' if speedup >= target else 'MISSED':>7} {row['us_per_step']:>8.2f}"
            )
    mode, precision, batch, hidden = STEP_TARGET_AT
    for key in STEP_TARGET_PROVIDERS:
        for row in timed:
            if (row["provider"], row["mode"], row["dtype"], row["batch"], row["hidden"]) == (key, *STEP_TARGET_AT):
                met = "met" if row["us_per_step"] <= STEP_TARGET_US else "MISSED"
                lines.append(
                    f"{mode} {precision} B={batch} H={hidden}, {PROVIDERS[key].label}: "
                    f"{row['us_per_step']:.2f} us/step (target {STEP_TARGET_US}): {met}"
                )
    return lines


def _point_of(row: dict) -> tuple:
    return row["dtype"], row["batch"], row["hidden"], row["seq_len"]


def stress_calls(layers: Sequence[tuple[str, int, int, int]]) -> list[LauncherCall]:
    """What :func:`layer_stress` launches: each layer trained, both formulations."""
    return [
        call
        for precision, batch, hidden, _ in layers
        for variant in VARIANTS
        for call in layer_calls(variant, precision, batch, hidden, train=True)
    ]


def layer_stress(layers: Sequence[tuple[str, int, int, int]], arch: int) -> Callable[[Context], None]:
    """The layer stress: each of ``layers`` trained, both formulations, against its oracle
    (:func:`layer_check`), after its launch plan is checked (:func:`stress_plan_problem`)."""

    def run(ctx: Context) -> None:
        for precision, batch, hidden, steps in layers:
            for variant in VARIANTS:
                what = f"layer {variant} {precision} B={batch} H={hidden} T={steps}, forward and backward"
                calls = layer_calls(variant, precision, batch, hidden, train=True)
                problems = [p for p in (stress_plan_problem(c, ctx.device, arch) for c in calls) if p]
                if not problems:
                    args = (variant, precision, batch, hidden, steps, ctx.device)
                    problems = [p for p in (_attempt(layer_check, *args, inference=False),) if p]
                ctx.record(what, not problems, "; ".join(problems) or "agrees with its oracle")

    return run


_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGKILL); os.execv(sys.argv[1], sys.argv[1:])"
)
"""Run the command in ``sys.argv[1:]`` so that it is killed when its parent dies (``prctl(PR_SET_PDEATHSIG)``,
which outlives ``execv``)."""


def run_tests(repo: Path, timeout_s: float, echo: Callable[[str], None]) -> tuple[bool, str]:
    """pytest over :data:`TEST_FILES` in ``repo`` with :data:`TEST_WORKERS` workers, its lines echoed as they
    come, stopped after ``timeout_s``; ``(no test failed, summary)``. On Linux pytest dies with the selftest
    (``PR_SET_PDEATHSIG``), so that a killed selftest leaves nothing running on the GPU."""
    pytest = [sys.executable, "-m", "pytest", "-v", "-n", str(TEST_WORKERS), "-p", "no:cacheprovider", *TEST_FILES]
    command = [sys.executable, "-c", _DIE_WITH_PARENT, *pytest] if sys.platform == "linux" else pytest
    process = subprocess.Popen(
        command, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    timer = threading.Timer(timeout_s, os.killpg, (process.pid, signal.SIGKILL))
    timer.start()
    counts = {"PASSED": 0, "FAILED": 0, "ERROR": 0}
    last = ""
    try:
        for line in process.stdout:
            line = line.rstrip()
            echo(f"  {line}")
            last = line or last
            for word in counts:
                counts[word] += f" {word} " in f" {line} "
    finally:
        timer.cancel()
        process.wait()
    failed = counts["FAILED"] + counts["ERROR"]
    if process.returncode == -signal.SIGKILL:
        return failed == 0, f"time box of {timeout_s:.0f} s ended: {counts['PASSED']} passed, {failed} failed so far"
    return process.returncode == 0, last.strip("= ")


def tests_stage(repo: Path) -> Callable[[Context], None]:
    """The tests stage: :func:`run_tests`, time-boxed by what is left."""

    def run(ctx: Context) -> None:
        passed, summary = run_tests(repo, max(ctx.left(), 1.0), ctx.echo)
        ctx.record("tests " + " ".join(Path(f).stem.removeprefix("test_") for f in TEST_FILES), passed, summary)

    return run


def proof_stages(
    device: torch.device, repo: Path, *, arch: int = 90, sm_count: int = 132, processes: int = GPU_PROCESSES
) -> list[Stage]:
    """The stages of the proof, in order, as the run takes them and ``--plan`` prints them, for ``device`` (a
    CUDA device, or the CPU, which plans for an ``arch`` GPU with ``sm_count`` SMs) with ``processes``
    compile processes."""
    programs = tuple(sorted({2, 32, sm_count}))
    launch_s = BARRIER_STEPS * BARRIER_STEP_S
    barrier = Stage(
        "barrier",
        "the grid barrier alone under random delays, then timed without",
        tuple(distinct(stress_kernels(programs))),
        len(programs) * (launch_s + timing_s(launch_s)) + CHECK_SETUP_S,
        f"{len(programs)} x (a run of {BARRIER_STEPS} steps x {BARRIER_STEP_S * 1e6:.0f} us + do_bench "
        f"{timing.WARMUP_MS}+{timing.REPEAT_MS} ms of them) + {CHECK_SETUP_S:.0f} s",
        _barrier(programs),
    )
    calibrate_runs = len(rate_launches(sm_count)) + 1
    calibrate = Stage(
        "calibrate",
        "the tensor cores' rate at the kernels' tile shapes (mma.sync, wgmma) and one L2 round trip, alone",
        tuple(distinct(calibrate_kernels(sm_count))),
        calibrate_runs * (2 * CALIBRATE_CALL_S + timing_s(CALIBRATE_CALL_S)) + CHECK_SETUP_S,
        f"{calibrate_runs} x (2 launches of about {CALIBRATE_CALL_S * 1e3:.0f} ms + do_bench {timing.WARMUP_MS}+"
        f"{timing.REPEAT_MS} ms of them) + {CHECK_SETUP_S:.0f} s",
        _calibrate,
    )
    precision, batch, hidden, steps = SMOKE
    smoke_stage = Stage(
        "smoke",
        "every kernel against its oracle at one size",
        tuple(launched_kernels(smoke_calls(precision, batch, hidden), device, arch)),
        len(VARIANTS) * (2 * steps * REFERENCE_STEP_S + 2 * CHECK_SETUP_S),
        f"{len(VARIANTS)} forms x (2 references x {steps} steps x {REFERENCE_STEP_S * 1e3:.1f} ms + layer and cell "
        f"{CHECK_SETUP_S:.0f} s each)",
        smoke(precision, batch, hidden, steps),
    )
    points = bench_points()
    point_s = bench_point_s(TARGET_REGION.seq_len[-1], len(BENCH_PROVIDERS), TARGET_REGION.modes)
    bench_s = PEAKS_S + len(points) * point_s + PLOT_S
    bench_ = Stage(
        "bench",
        "tritongru against cuDNN over the target region, the most telling point first",
        tuple(launched_kernels(bench_calls(TARGET_REGION, points, BENCH_PROVIDERS), device, arch)),
        bench_s,
        f"peaks {PEAKS_S:.0f} s + {len(points)} points x {point_s:.1f} s (do_bench {timing.WARMUP_MS}+"
        f"{timing.REPEAT_MS} ms + calls at {STEP_US['forward']:.0f}/{STEP_US['train']:.0f} us/step, "
        f"{len(BENCH_PROVIDERS)} contenders x {len(TARGET_REGION.modes)} modes) + plots {PLOT_S:.0f} s",
        bench_stage(TARGET_REGION, points, BENCH_PROVIDERS),
    )
    stress_runs = len(STRESS_LAYERS) * len(VARIANTS)
    longest = max(layer[3] for layer in STRESS_LAYERS)
    stress = Stage(
        "stress",
        f"layers at grids of {STRESS_MIN_PROGRAMS}+ synchronised programs, forward and backward",
        tuple(launched_kernels(stress_calls(STRESS_LAYERS), device, arch)),
        stress_runs * (2 * longest * REFERENCE_STEP_S + CHECK_SETUP_S),
        f"{stress_runs} runs x (2 references x {longest} steps x {REFERENCE_STEP_S * 1e3:.1f} ms + "
        f"{CHECK_SETUP_S:.0f} s)",
        layer_stress(STRESS_LAYERS, arch),
    )
    tests = Stage(
        "tests",
        "the kernel-facing test files on CUDA, time-boxed",
        (),
        TESTS_MIN_S,
        f"a time box: at least {TESTS_MIN_S:.0f} s, and whatever the stages before left",
        tests_stage(repo),
    )
    later = [barrier, smoke_stage, bench_, stress, calibrate, tests]
    kernels = distinct([kernel for stage in later for kernel in stage.kernels])
    compile_ = Stage(
        "precompile",
        f"every kernel the later stages launch, {processes} processes",
        tuple(kernels),
        compile_s(len(kernels), processes),
        f"{WORKER_START_S:.0f} s start + ceil({len(kernels)} kernels / {processes}) x {COMPILE_S_PER_KERNEL} s",
        _precompile(kernels, processes),
    )
    environment = Stage(
        "environment", "GPU, driver and versions", (), ENVIRONMENT_S, "estimated: the first CUDA call", _environment
    )
    return [environment, compile_, *later]


# ----------------------------------------------------------------------------------------------- the run


class _Output:
    """The log (``stdout`` and :data:`LOG_FILE`, line by line) and the outcomes (:data:`OUTCOMES_FILE`, a JSON
    line each), flushed as they are written, with the seconds since ``start`` by ``clock``."""

    def __init__(self, out: Path, stdout: TextIO, clock: Callable[[], float], start: float) -> None:
        self.stdout, self.clock, self.start = stdout, clock, start
        self.stack = ExitStack()
        self.log = self.stack.enter_context((out / LOG_FILE).open("a", encoding="utf-8", buffering=1))
        self.outcomes = self.stack.enter_context((out / OUTCOMES_FILE).open("a", encoding="utf-8", buffering=1))
        self.failed = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def echo(self, line: str) -> None:
        for stream in (self.stdout, self.log):
            stream.write(line + "\n")
            stream.flush()

    def record(self, stage: str, what: str, status: str, detail: str) -> None:
        """One outcome (``status``: ``"pass"``, ``"fail"`` or ``"skipped"``), to the log and the outcomes."""
        self.failed |= status == "fail"
        self.echo(f"[{self.elapsed():4.0f} s] {stage}: {status.upper()}: {what}: {detail}")
        line = dict(stage=stage, what=what, status=status, detail=detail, t_s=round(self.elapsed(), 1))
        self.outcomes.write(json.dumps(line) + "\n")
        self.outcomes.flush()


class _Compiles:
    """Counts the kernels the JIT compiles in this process without finding them in the on-disk cache (Triton's
    compilation listener), so that a stage can say what the precompile missed."""

    def __init__(self) -> None:
        self.missed = 0

    def __call__(self, *, cache_hit: bool, **_: object) -> None:
        self.missed += not cache_hit

    def __enter__(self) -> _Compiles:
        self.saved, triton.knobs.compilation.listener = triton.knobs.compilation.listener, self
        return self

    def __exit__(self, *_: object) -> None:
        triton.knobs.compilation.listener = self.saved


def run_stages(
    stages: Sequence[Stage],
    out: Path,
    device: torch.device,
    *,
    budget_s: float = BUDGET_S,
    clock: Callable[[], float] = time.monotonic,
    start: float | None = None,
    stdout: TextIO = sys.stdout,
) -> int:
    """Run ``stages`` in order within ``budget_s`` seconds by ``clock``, counted from ``start`` (a reading of
    ``clock``; default: now), writing into the folder ``out``.

    A stage whose estimate does not fit in what is left is skipped with a line that says so; one that starts
    must end, where it can (the bench, the tests), in time to leave the later stages their estimates (but gets
    at least its own). A stage that raises is recorded as failed with its error, and the run goes on. Returns
    the exit status: 1 when an outcome failed, else 0."""
    out.mkdir(parents=True, exist_ok=True)
    output = _Output(out, stdout, clock, clock() if start is None else start)
    with output.stack, _Compiles() as compiles:
        for line in plan_lines(stages, budget_s):
            output.echo(line)
        for index, stage in enumerate(stages):
            left = budget_s - output.elapsed()
            if stage.estimate_s > left:
                output.record(stage.name, "stage", "skipped", f"{left:.0f} s left, estimated {stage.estimate_s:.0f} s")
                continue
            later = sum(s.estimate_s for s in stages[index + 1 :])
            ends = output.start + min(budget_s, max(output.elapsed() + stage.estimate_s, budget_s - later))
            output.echo(f"[{output.elapsed():4.0f} s] {stage.name}: {stage.what} (estimated {stage.estimate_s:.0f} s)")

            def record(what: str, passed: bool, detail: str, name: str = stage.name) -> None:
                output.record(name, what, "pass" if passed else "fail", detail)

            context = Context(device, out, output.echo, record, lambda ends=ends: ends - clock())
            started, missed = output.elapsed(), compiles.missed
            try:
                stage.run(context)
            except Exception as error:  # a stage that fails is an outcome; the later stages still run
                record("stage", False, f"{type(error).__name__}: {error}")
            note = (
                f", {compiles.missed - missed} kernels compiled outside the precompile"
                if compiles.missed > missed
                else ""
            )
            output.echo(f"[{output.elapsed():4.0f} s] {stage.name}: done in {output.elapsed() - started:.0f} s{note}")
        output.echo(f"[{output.elapsed():4.0f} s] selftest {'FAILED' if output.failed else 'passed'}; files in {out}")
    return 1 if output.failed else 0


def default_out() -> Path:
    """``profiling/results/selftest-<UTC time>``: a fresh folder per run."""
    return Path("profiling/results") / f"selftest-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"


def gpu_stages(repo: Path) -> tuple[torch.device, list[Stage]]:
    """The current CUDA device and :func:`proof_stages` for it (its compute capability, SMs, and one compile
    process per CPU)."""
    device = torch.device("cuda", torch.cuda.current_device())
    major, minor = torch.cuda.get_device_capability(device)
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    stages = proof_stages(device, repo, arch=10 * major + minor, sm_count=sm_count, processes=os.cpu_count() or 1)
    return device, stages


def run_selftest(repo: Path, out: Path, *, budget_s: float = BUDGET_S, echo: Callable[[str], None] = print) -> int:
    """The proof on the current GPU (:func:`proof_stages` through :func:`run_stages`); exit status 2 without one."""
    if not torch.cuda.is_available():
        echo("tritongru selftest proves the kernels on a GPU; no CUDA device here (use pytest on the CPU)")
        return 2
    start = time.monotonic()  # planning the stages counts against the budget too
    device, stages = gpu_stages(repo)
    return run_stages(stages, out, device, budget_s=budget_s, start=start)


def plan(budget_s: float = BUDGET_S, *, echo: Callable[[str], None] = print) -> int:
    """Print the plan (:func:`~tritongru.harness.proof_plan.plan_lines`) for the GPU here, or without one for an
    H100 (sm_90, 132 SMs) with :data:`~tritongru.harness.proof_plan.GPU_PROCESSES` compile processes; exit
    status 1 when its total exceeds ``budget_s``."""
    if torch.cuda.is_available():
        _, stages = gpu_stages(Path("."))
    else:
        stages = proof_stages(torch.device("cpu"), Path("."))
    for line in plan_lines(stages, budget_s):
        echo(line)
    return 1 if total_s(stages) > budget_s else 0


def measure_compile(limit: int | None = None) -> tuple[int, float]:
    """``(kernels, seconds)``: the default plan's kernels (the first ``limit``) compiled in one process into the
    current cache directory (empty it first): how :data:`~tritongru.harness.proof_plan.COMPILE_S_PER_KERNEL`
    was measured."""
    kernels = list(proof_stages(torch.device("cpu"), Path("."))[1].kernels)[:limit]
    start = time.monotonic()
    failures = precompile(kernels, GPUTarget("cuda", 90, 32), jobs=1)
    if failures:
        raise RuntimeError("; ".join(failures))
    return len(kernels), time.monotonic() - start
