"""The proof command, ``tritongru selftest``: what the first session with a GPU must settle, in one run.

1. **tests**: the kernel-facing part of the suite on CUDA (real compilation catches what the interpreter
   forgives), in a subprocess with pytest-xdist workers so that kernels compile in parallel;
2. **stress**: the grid barrier alone with 2, 32 and one program per SM for thousands of steps, every program
   delayed at random at every step, step tags checked after every barrier; then whole layers at the widest
   grids (hidden 2048 in slices of 16: 128 programs per batch block) over long sequences, forward and
   backward, both formulations, against ``torch.nn.GRU`` (cudnn form) and the reference (classic form);
3. **bench**: tritongru against cuDNN over the issue's target region, written as a results file with its plots
   under ``profiling/results/<gpu>/``, and a table of speed-ups per point and mode against the targets.

The exit status is 0 when the tests and the stress pass; the benchmark reports, it does not fail. Budgeted
for under 9 minutes on an H100 (the device tool's limit per command is 10).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import tritongru
from tritongru import launchers, reference
from tritongru.harness import bench, plots, results
from tritongru.harness.grids import Grid
from tritongru.variants import VARIANTS

TEST_FILES = (
    "tests/test_kernels.py",
    "tests/test_grid_sync.py",
    "tests/test_compile.py",
    "tests/test_reference.py",
    "tests/test_zoneout.py",
    "tests/test_modules.py",
    "tests/test_validation.py",
)
"""What part 1 runs: everything that launches the kernels (zoneout's mask helper included: ``tl.rand`` compiled
for the GPU against the host's Philox), and the sm_90 compile check with the GPU's own Triton (its ptxas
allocates registers its own way); none of the harness's own tests."""

TARGET_REGION = Grid(
    batch=(1, 16, 64),
    hidden=(256, 512, 768, 1024),
    seq_len=(1024,),
    precisions=("bf16", "tf32"),
    modes=("forward", "train"),
)
"""The issue's target region: T=1024, B <= 64, H 256-1024, bf16 and TF32, inference and training."""

TARGETS = {"forward": 2.0, "train": 1.5}
"""Speed-up over cuDNN each mode should reach in :data:`TARGET_REGION` (cudnn form)."""

STEP_TARGET_US = 1.5
"""Microseconds per step the forward should reach at B=16, H=768, bf16."""


def run_tests(repo: Path, *, workers: int = 8, timeout_s: float = 300) -> tuple[bool, str]:
    """Part 1: pytest over :data:`TEST_FILES`; ``(passed, pytest's summary line)``."""
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-n", str(workers), "-p", "no:cacheprovider", *TEST_FILES]
    try:
        done = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0:
        print(done.stdout[-6000:], done.stderr[-2000:], sep="\n")
    return done.returncode == 0, lines[-1] if lines else done.stderr.strip()[-200:]


def layer_stress(variant: str, batch: int, hidden: int, steps: int, device: torch.device) -> str | None:
    """One float32 layer, forward and backward, against its oracle; None when it agrees, else what differs."""
    torch.manual_seed(hidden + steps)
    scale = hidden**-0.5
    module = torch.nn.GRU(hidden, hidden, device=device)
    weights = [p.detach().clone().requires_grad_() for p in module.parameters()]
    x = (torch.randn(steps, batch, hidden, device=device) * scale).requires_grad_()
    h0 = torch.zeros(batch, hidden, device=device)
    output, _ = tritongru.gru_layer(x, h0, *weights, variant=variant)
    if variant == "cudnn":
        names = [name for name, _ in module.named_parameters()]
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            expected, _ = torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (x, h0[None]))
    else:
        expected, _ = reference.gru_layer_ref(x, h0, *weights, variant="classic")
    cotangent = torch.randn_like(output)
    ours = torch.autograd.grad((output * cotangent).sum(), [x, weights[1]])
    wanted = torch.autograd.grad((expected * cotangent).sum(), [x, weights[1]])
    launchers.check_grid_barriers()
    problems = []
    for name, actual, reference_value in zip(
        ("output", "d input", "d weight_hh"), (output, *ours), (expected, *wanted), strict=True
    ):
        error = (actual - reference_value).abs().max().item()
        bound = 1e-3 * (1 + reference_value.abs().max().item())
        if not error <= bound:
            problems.append(f"{name} off by {error:.2e} (allowed {bound:.2e})")
    return "; ".join(problems) or None


def run_stress(device: torch.device, *, steps: int = 4000) -> list[tuple[str, bool, str]]:
    """Part 2: ``(what, passed, detail)`` per stress run."""
    outcomes = []
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    for programs in sorted({2, 32, sms}):
        name = f"barrier alone, {programs} programs x {steps} steps, delays up to 2 us"
        try:
            stale = launchers.stress_barrier(programs, steps, max_delay_ns=2000, device=device)
        except (RuntimeError, ValueError) as error:
            outcomes.append((name, False, str(error)))
            continue
        outcomes.append((name, stale == 0, f"{stale} stale tags seen"))
    for variant in VARIANTS:
        for batch, hidden, length in ((16, 2048, 512), (64, 1024, 1024), (3, 777, 2048)):
            name = f"layer {variant} B={batch} H={hidden} T={length} fp32, forward and backward"
            try:
                problem = layer_stress(variant, batch, hidden, length, device)
            except RuntimeError as error:
                problem = str(error)
            outcomes.append((name, problem is None, problem or "agrees with the oracle"))
    return outcomes


def speedup_table(document: dict) -> list[str]:
    """Part 3's summary: per point and mode, the cudnn form's speed-up over cuDNN against the target, and the
    forward's µs per step; the worst point of each mode first, so that misses show before hits."""
    rows = [
        row
        for row in document["rows"]
        if row["provider"] == "tritongru-cudnn" and row["status"] == "ok" and row["speedup_vs_baseline"]
    ]
    lines = [f"{'mode':<8} {'dtype':<5} {'B':>4} {'H':>5} {'T':>5} {'speed-up':>9} {'target':>7} {'us/step':>8}"]
    for mode, target in TARGETS.items():
        for row in sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["speedup_vs_baseline"]):
            speedup = row["speedup_vs_baseline"]
            lines.append(
                f"{mode:<8} {row['dtype']:<5} {row['batch']:>4} {row['hidden']:>5} {row['seq_len']:>5} "
                f"{speedup:>8.2f}x {'met' if speedup >= target else 'MISSED':>7} {row['us_per_step']:>8.2f}"
            )
    for row in rows:
        if (row["mode"], row["dtype"], row["batch"], row["hidden"]) == ("forward", "bf16", 16, 768):
            met = "met" if row["us_per_step"] <= STEP_TARGET_US else "MISSED"
            lines.append(f"forward bf16 B=16 H=768: {row['us_per_step']:.2f} us/step (target {STEP_TARGET_US}): {met}")
    return lines


def run_selftest(repo: Path, out: Path, *, echo: Callable[[str], None] = print) -> int:
    """All three parts; exit status 0 when the tests and the stress pass."""
    if not torch.cuda.is_available():
        echo("tritongru selftest proves the kernels on a GPU; no CUDA device here (use pytest on the CPU)")
        return 2
    device = torch.device("cuda")
    start = time.perf_counter()
    passed, summary = run_tests(repo)
    echo(f"[1/3 tests, {time.perf_counter() - start:.0f} s] {'PASS' if passed else 'FAIL'}: {summary}")
    stress = run_stress(device)
    for what, ok, detail in stress:
        echo(f"[2/3 stress, {time.perf_counter() - start:.0f} s] {'PASS' if ok else 'FAIL'}: {what}: {detail}")
    document = bench.run_bench(
        TARGET_REGION, providers=("tritongru-cudnn", "tritongru-classic", "cudnn"), device=device, progress=False
    )
    launchers.check_grid_barriers()  # a timed-out barrier in the bench makes its times meaningless
    path = results.write(document, out)
    figures = plots.draw_all([document], path.with_suffix(""))
    echo(f"[3/3 bench, {time.perf_counter() - start:.0f} s] results {path}, {len(figures)} plots")
    for line in speedup_table(document):
        echo(line)
    return 0 if passed and all(ok for _, ok, _ in stress) else 1
