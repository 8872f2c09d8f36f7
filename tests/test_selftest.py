"""The proof command on the CPU: its oracle checks, its runner (a fake clock, fake stages), the bench stage's
results after every point, the output folder, the launches each stage plans against those it makes, the
stress plan's grid, the time box of the tests, the refusal without a GPU."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ON_GPU

import tritongru
from tritongru import configs, launchers
from tritongru.harness import bench, proof_plan, results, selftest
from tritongru.harness.grids import Grid
from tritongru.harness.proof_plan import LauncherCall, Stage
from tritongru.precisions import precision_of
from tritongru.variants import VARIANTS

CPU = torch.device("cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_and_cell_checks_agree_with_their_oracles(variant, precision, device):
    assert selftest.layer_check(variant, precision, 3, 17, 5, device, inference=True) is None
    assert selftest.cell_check(variant, precision, 3, 17, device, inference=True) is None


def test_layer_check_reports_a_wrong_layer(monkeypatch, device):
    real = tritongru.gru_layer
    monkeypatch.setattr(tritongru, "gru_layer", lambda *args, **kwargs: [t * 1.01 for t in real(*args, **kwargs)])
    problem = selftest.layer_check("cudnn", "fp32", 3, 17, 5, device, inference=False)
    assert problem is not None and "output off by" in problem


def _row(mode: str, batch: int, hidden: int, speedup: float, us_per_step: float) -> dict:
    return dict(
        provider="tritongru-cudnn",
        status="ok",
        mode=mode,
        dtype="bf16",
        batch=batch,
        hidden=hidden,
        seq_len=1024,
        speedup_vs_baseline=speedup,
        us_per_step=us_per_step,
    )


def test_speedup_table_shows_misses_first():
    document = {
        "rows": [
            _row("forward", 16, 768, 2.5, 1.2),
            _row("forward", 64, 1024, 1.4, 3.0),
            _row("train", 16, 768, 1.6, 4.0),
            {**_row("forward", 1, 256, 9.0, 0.1), "provider": "cudnn"},
            {**_row("forward", 16, 768, 1.1, 2.25), "provider": "tritongru-cudnn-tagged"},
            {**_row("train", 16, 768, 1.0, 5.0), "provider": "tritongru-cudnn-tagged"},
        ]
    }
    lines = selftest.speedup_table(document)
    forward = [line for line in lines[1:] if line.startswith("forward ")]
    assert "MISSED" in forward[0] and "1024" in forward[0], "the worst forward point comes first"
    assert "met" in forward[1] and "768" in forward[1]
    assert any(line.startswith("train") and "met" in line for line in lines)
    assert lines[-2:] == [
        "forward bf16 B=16 H=768, tritongru (cudnn form): 1.20 us/step (target 1.5): met",
        "forward bf16 B=16 H=768, tritongru (cudnn form), tagged exchange: 2.25 us/step (target 1.5): MISSED",
    ]
    assert not any(" 256 " in line for line in lines), "only the cudnn form's rows are compared"
    assert [line for line in lines if "2.25" in line] == lines[-1:], "the tagged rows are not in the table"
    assert not any("5.00" in line for line in lines)


@pytest.mark.skipif(ON_GPU, reason="on a GPU the selftest runs for real")
def test_selftest_refuses_without_a_gpu(tmp_path, capsys):
    assert selftest.run_selftest(tmp_path, tmp_path) == 2
    assert "no CUDA device" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ the runner, fake stages


class FakeClock:
    """Seconds that pass only when a fake stage says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fake_stage(clock: FakeClock, name: str, estimate_s: float, takes_s: float, seen: list, fails: bool = False):
    """A stage that records what it was given, takes ``takes_s`` of the fake clock, and passes (or raises)."""

    def run(ctx) -> None:
        seen.append((name, ctx.left()))
        clock.now += takes_s
        if fails:
            raise RuntimeError("the GPU fell over")
        ctx.record(f"{name} check", True, "fine")

    return Stage(name, f"what {name} settles", (), estimate_s, "a fake", run)


def _outcomes(out) -> list[dict]:
    return [json.loads(line) for line in (out / selftest.OUTCOMES_FILE).read_text().splitlines()]


def test_stages_are_skipped_when_the_budget_runs_out_each_with_its_line(tmp_path):
    clock, seen = FakeClock(), []
    stages = [
        fake_stage(clock, "first", 10, 10, seen),
        fake_stage(clock, "long", 50, 60, seen),  # overruns its estimate by 10 s
        fake_stage(clock, "late", 40, 40, seen),
        fake_stage(clock, "short", 20, 5, seen),
    ]
    stdout = io.StringIO()
    assert selftest.run_stages(stages, tmp_path, CPU, budget_s=100, clock=clock, stdout=stdout) == 0
    assert [name for name, _ in seen] == ["first", "long", "short"]
    assert dict(seen)["long"] == 50, "a stage may run until the later stages' estimates are all that is left"
    skipped = [o for o in _outcomes(tmp_path) if o["status"] == "skipped"]
    assert [(o["stage"], o["detail"]) for o in skipped] == [("late", "30 s left, estimated 40 s")]
    log = (tmp_path / selftest.LOG_FILE).read_text()
    assert log == stdout.getvalue()
    assert "late: SKIPPED: stage: 30 s left, estimated 40 s" in log
    assert log.splitlines()[len(stages) + 2] == "total 120 s", "the plan heads the log"


def test_the_budget_counts_from_the_start_it_is_given(tmp_path):
    """Time spent before the stages (planning them) is spent from the budget."""
    clock, seen = FakeClock(), []
    stages = [fake_stage(clock, "fits", 5, 5, seen), fake_stage(clock, "does not", 8, 8, seen)]
    status = selftest.run_stages(
        stages, tmp_path, CPU, budget_s=20, clock=clock, start=clock.now - 8, stdout=io.StringIO()
    )
    assert status == 0 and seen == [("fits", 5)], "20 s from 8 s ago: 5 s for the first, 7 s left for the second"
    assert "does not: SKIPPED: stage: 7 s left, estimated 8 s" in (tmp_path / selftest.LOG_FILE).read_text()


def test_a_stage_that_raises_is_a_failure_and_the_run_goes_on(tmp_path):
    clock, seen = FakeClock(), []
    stages = [fake_stage(clock, "broken", 5, 1, seen, fails=True), fake_stage(clock, "after", 5, 1, seen)]
    assert selftest.run_stages(stages, tmp_path, CPU, budget_s=100, clock=clock, stdout=io.StringIO()) == 1
    outcomes = _outcomes(tmp_path)
    assert (outcomes[0]["stage"], outcomes[0]["status"]) == ("broken", "fail")
    assert "RuntimeError: the GPU fell over" in outcomes[0]["detail"]
    assert (outcomes[1]["stage"], outcomes[1]["status"]) == ("after", "pass")


TINY_REGION = Grid(batch=(1, 2, 3), hidden=(16,), seq_len=(3,), precisions=("fp32",), modes=("forward", "train"))
TINY_PROVIDERS = {
    "tritongru-cudnn": "cudnn",
    "tritongru-cudnn-tagged": "cudnn",
    "tritongru-classic": "classic",
    "torch-cpu": None,
}


def _bench_stage(points=None) -> Stage:
    points = points or selftest.bench_points(TINY_REGION, ("fp32", 2, 16, 3))
    return Stage("bench", "a tiny bench", (), 10, "", selftest.bench_stage(TINY_REGION, points, TINY_PROVIDERS))


def test_the_bench_leaves_valid_results_after_every_point_and_a_kill_keeps_them(tmp_path, monkeypatch, device):
    """The results file is rewritten whole after every point, valid each time; a bench that dies at its third
    point leaves the two points it measured, and the folder stays flat and small."""
    real_measure, real_write = bench._measure_point, results.write_file
    measured, seen = [], []

    def dies_at_the_third(grid, point, *args, **kwargs):
        if len(measured) == 2:
            raise RuntimeError("killed")
        measured.append(point)
        return real_measure(grid, point, *args, **kwargs)

    def write_and_read_back(document, path):
        real_write(document, path)
        seen.append({(row["batch"], row["provider"]) for row in results.load(path)["rows"]})
        return path

    monkeypatch.setattr(bench, "_measure_point", dies_at_the_third)
    monkeypatch.setattr(results, "write_file", write_and_read_back)
    assert selftest.run_stages([_bench_stage()], tmp_path, device, budget_s=100, stdout=io.StringIO()) == 1
    assert measured == [("fp32", 2, 16, 3), ("fp32", 1, 16, 3)], "the first point first, then the grid's order"
    assert [{batch for batch, _ in rows} for rows in seen] == [{2}, {2, 1}], "valid after every point"
    document = results.load(tmp_path / selftest.BENCH_FILE)
    assert {row["batch"] for row in document["rows"]} == {1, 2}
    assert {row["provider"] for row in document["rows"]} == set(TINY_PROVIDERS)
    assert (tmp_path / selftest.TABLE_FILE).exists(), "the speed-up table is written after every point too"
    assert "bench fp32 B=1 H=16 T=3: " in (tmp_path / selftest.LOG_FILE).read_text()
    _assert_flat_and_small(tmp_path)


def _assert_flat_and_small(out) -> None:
    entries = list(out.iterdir())
    assert all(entry.is_file() for entry in entries), "no subfolders"
    assert len(entries) <= 8
    assert {entry.name for entry in entries} <= set(selftest.OUTPUT_FILES)


def test_a_whole_bench_draws_its_plots_into_one_pdf(tmp_path, device):
    stages = [_bench_stage([("fp32", 2, 16, 3)])]
    assert selftest.run_stages(stages, tmp_path, device, budget_s=100, stdout=io.StringIO()) == 0
    assert (tmp_path / selftest.PLOTS_FILE).read_bytes().startswith(b"%PDF")
    _assert_flat_and_small(tmp_path)


def test_the_bench_stops_taking_points_when_its_time_is_up(tmp_path, device):
    clock = FakeClock()
    stage = _bench_stage()
    later = Stage("later", "", (), 95, "", lambda ctx: None)  # leaves the bench 5 s: less than a point and plots
    assert selftest.run_stages([stage, later], tmp_path, device, budget_s=100, clock=clock, stdout=io.StringIO()) == 0
    assert "bench: stopping after 0 of 3 points" in (tmp_path / selftest.LOG_FILE).read_text()
    assert not (tmp_path / selftest.BENCH_FILE).exists()


# ------------------------------------------------------------------- the plan's launches against the run's


@pytest.fixture
def recorded(monkeypatch):
    """Every launcher call made, as the plan names it (:class:`LauncherCall`)."""
    calls = set()
    real = launchers._launch_config

    def record(kernel, *, variant, dtype, batch, hidden, input_size, device, allow_tf32, flags, head_dim):
        assert head_dim is None, "the proof runs the dense GRU"
        precision = precision_of(dtype, allow_tf32).name
        flags_made = tuple(sorted(flags.items()))
        calls.add(LauncherCall(kernel, variant, precision, batch, hidden, input_size, flags_made, launchers.exchange()))
        return real(
            kernel,
            variant=variant,
            dtype=dtype,
            batch=batch,
            hidden=hidden,
            input_size=input_size,
            device=device,
            allow_tf32=allow_tf32,
            flags=flags,
            head_dim=head_dim,
        )

    monkeypatch.setattr(launchers, "_launch_config", record)
    return calls


def _recording(device, out) -> tuple[proof_plan.Context, list[tuple]]:
    """A stage's context on ``device`` with all the time it wants, and the list its outcomes go to."""
    outcomes = []
    return proof_plan.Context(device, out, lambda line: None, lambda *o: outcomes.append(o), lambda: 1e9), outcomes


def _context(device, out) -> proof_plan.Context:
    return _recording(device, out)[0]


def _measured_as(monkeypatch, median_ms: float) -> None:
    """Make the timer call what it times once and report ``median_ms``."""

    def measure(fn, *, device):
        fn()
        return median_ms, median_ms, median_ms

    monkeypatch.setattr(selftest.timing, "measure", measure)


def test_the_barrier_stage_times_the_barrier_without_delays_where_its_tags_held(monkeypatch, tmp_path):
    """Each count's stress run under delays, then (where no tag was stale) its timed runs without delays, priced
    per step: the measured milliseconds over the steps of a launch."""
    runs = []

    def stress_barrier(programs, steps, max_delay_ns, device):
        runs.append((programs, steps, max_delay_ns))
        return 3 if programs == 32 else 0

    monkeypatch.setattr(launchers, "stress_barrier", stress_barrier)
    _measured_as(monkeypatch, 6.0)
    context, outcomes = _recording(CPU, tmp_path)
    selftest._barrier((2, 32))(context)
    steps, delay = selftest.BARRIER_STEPS, selftest.BARRIER_DELAY_NS
    assert runs == [(2, steps, delay), (2, steps, 0), (32, steps, delay)]
    assert outcomes == [
        (f"barrier alone, 2 programs x {steps} steps, delays up to {delay} ns", True, "0 stale tags seen"),
        (
            "barrier alone, 2 programs, no delay, timed",
            True,
            f"{6.0e3 / steps:.2f} us per step (the model's BARRIER_US + L2_ROUND_TRIP_US)",
        ),
        (f"barrier alone, 32 programs x {steps} steps, delays up to {delay} ns", False, "3 stale tags seen"),
    ]


def test_the_rates_check_each_launch_then_price_its_flop_per_clock(monkeypatch, tmp_path, device):
    """Every instruction and precision on every SM: its output checked exactly (a wrong one is a failure and is
    not timed), then timed and priced as FLOP a clock an SM at the rated clock."""
    monkeypatch.setattr(selftest, "RATE_ITERS", {"mma.sync": 3, "wgmma": 5})
    real = launchers.mma_rate
    launched = []

    def mma_rate(instruction, precision, programs, iters, device):
        launched.append((instruction, precision, programs, iters))
        out = real(instruction, precision, programs, iters, device)
        return out + 1 if (instruction, precision) == ("wgmma", "tf32") else out

    monkeypatch.setattr(launchers, "mma_rate", mma_rate)
    _measured_as(monkeypatch, 2.0)
    context, outcomes = _recording(device, tmp_path)
    selftest._rates(context, 2, 1.5e9)
    shapes = launchers.MMA_RATE_SHAPES
    assert launched == [
        ("mma.sync", "bf16", 2 * shapes["mma.sync"].programs_per_sm, 3),
        ("mma.sync", "bf16", 2 * shapes["mma.sync"].programs_per_sm, 3),
        ("mma.sync", "tf32", 2 * shapes["mma.sync"].programs_per_sm, 3),
        ("mma.sync", "tf32", 2 * shapes["mma.sync"].programs_per_sm, 3),
        ("wgmma", "bf16", 2 * shapes["wgmma"].programs_per_sm, 5),
        ("wgmma", "bf16", 2 * shapes["wgmma"].programs_per_sm, 5),
        ("wgmma", "tf32", 2 * shapes["wgmma"].programs_per_sm, 5),
    ], "checked, then timed; the wrong one not timed"
    assert [(what.split(",")[0], passed) for what, passed, _ in outcomes] == [
        ("mma.sync rate", True),
        ("mma.sync rate", True),
        ("wgmma rate", True),
        ("wgmma rate", False),
    ]
    shape = shapes["mma.sync"]
    flop = 2 * shape.programs_per_sm * 3 * 2 * shape.block_m * shape.block_n * shape.block_k
    per_sm = flop / 2e-3 / 2
    assert outcomes[0][0] == "mma.sync rate, bf16, 16x64x64 on 1 warp"
    assert outcomes[0][2].startswith(
        f"{per_sm / 1e12:.2f} TFLOP/s an SM: {per_sm / 1.5e9:.0f} FLOP a clock at the rated 1.50 GHz"
    )
    products = 2 * shapes["wgmma"].programs_per_sm * 64 * 16
    assert outcomes[3][2] == f"{products} of {products} products wrong"


def test_the_l2_round_trip_is_checked_then_timed_per_load(monkeypatch, tmp_path, device):
    monkeypatch.setattr(selftest, "L2_LINES", 64)
    monkeypatch.setattr(selftest, "L2_HOPS", 300)

    _measured_as(monkeypatch, 0.15)
    context, outcomes = _recording(device, tmp_path)
    selftest._l2_round_trip(context, 2e9)
    ((what, passed, detail),) = outcomes
    assert what == "L2 round trip alone, 300 dependent loads past L1 over 0 MB" and passed
    assert detail.startswith("0.500 us a load, 1000 clocks at the rated 2.00 GHz")
    monkeypatch.setattr(launchers, "l2_chase", lambda links, hops: -1)
    selftest._l2_round_trip(context, 2e9)
    assert outcomes[1][1:] == (False, f"reached index -1, expected {_followed(launchers.l2_chase_links(64), 300)}")


def _followed(links, hops: int) -> int:
    index = 0
    for _ in range(hops):
        index = int(links[index])
    return index


def test_the_smoke_launches_what_it_plans(recorded, device, tmp_path):
    selftest.smoke("bf16", 3, 17, 4)(_context(device, tmp_path))
    assert recorded == set(selftest.smoke_calls("bf16", 3, 17))


def test_the_bench_launches_what_it_plans(recorded, device, tmp_path):
    points = [("fp32", 2, 16, 3)]
    selftest.bench_stage(TINY_REGION, points, TINY_PROVIDERS)(_context(device, tmp_path))
    assert recorded == set(selftest.bench_calls(TINY_REGION, points, TINY_PROVIDERS))


def test_the_layer_stress_launches_what_it_plans(recorded, device, tmp_path, monkeypatch):
    monkeypatch.setattr(selftest, "stress_plan_problem", lambda call, device, arch: None)
    layers = [("fp32", 2, 17, 3)]
    selftest.layer_stress(layers, 90)(_context(device, tmp_path))
    assert recorded == set(selftest.stress_calls(layers))


@pytest.fixture
def planning_for_a_gpu(monkeypatch):
    """Configs as a GPU machine picks them (the heuristic for 132 SMs), not the interpreter's."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    configs.clear_memo()
    yield
    configs.clear_memo()


def test_the_stress_layers_are_grid_synchronised_at_128_programs_or_more(planning_for_a_gpu):
    for call in selftest.stress_calls(selftest.STRESS_LAYERS):
        assert selftest.stress_plan_problem(call, CPU, 90) is None, call
        plan, _, _ = proof_plan.own_plan(call, CPU, 90)
        assert plan.grid_sync and math.prod(plan.grid) >= selftest.STRESS_MIN_PROGRAMS
    narrow = LauncherCall.of("forward", "cudnn", "bf16", 16, 256, bias=True, lengths=False, store_gates=True)
    assert "16 programs, not grid-synchronised with 128+" in selftest.stress_plan_problem(narrow, CPU, 90)
    per_step = LauncherCall.of("backward", "cudnn", "fp64", 16, 1024, bias=True, lengths=False)
    assert "runs per step" in selftest.stress_plan_problem(per_step, CPU, 90)


# ------------------------------------------------------------------------------------------ the tests' box


def test_the_tests_are_streamed_and_stopped_by_their_time_box(tmp_path, monkeypatch):
    (tmp_path / "test_slow.py").write_text(
        "import time\n\ndef test_quick():\n    pass\n\ndef test_slow():\n    time.sleep(120)\n"
    )
    monkeypatch.setattr(selftest, "TEST_FILES", ("test_slow.py",))
    monkeypatch.setattr(selftest, "TEST_WORKERS", 0)
    lines = []
    passed, summary = selftest.run_tests(tmp_path, 20, lines.append)
    assert passed and summary == "time box of 20 s ended: 1 passed, 0 failed so far"
    assert any("test_quick PASSED" in line for line in lines), "lines come as pytest writes them"


# ------------------------------------------------------------------------------ the plan, the real compiler

NO_INTERPRETER = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}

PLAN = """
import torch
from pathlib import Path
from tritongru.harness import precompile, selftest

stages = selftest.proof_stages(torch.device("cpu"), Path("."))
later = [kernel for stage in stages[2:] for kernel in stage.kernels]
planned = [kernel.key() for kernel in stages[1].kernels]
assert stages[1].name == "precompile"
assert planned == [kernel.key() for kernel in precompile.distinct(later)], "precompile = what the later stages launch"
assert len(set(planned)) == len(planned)
lines = []
assert selftest.plan(420, echo=lines.append) == 0 and selftest.plan(10, echo=lines.append) == 1
print(lines[len(lines) // 2 - 1])
"""


def test_the_plan_precompiles_what_the_stages_launch_within_the_default_budget():
    done = subprocess.run([sys.executable, "-c", PLAN], env=NO_INTERPRETER, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    total = int(done.stdout.split()[-2])
    assert done.stdout.strip() == f"total {total} s" and total <= selftest.BUDGET_S
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"**{total} s estimated**" in readme, "the README's proof section quotes today's plan"


TAGGED_PLAN = """
import json
import torch
from pathlib import Path
from tritongru.harness import proof_plan, selftest

def forwards(providers):
    calls = selftest.bench_calls(selftest.TARGET_REGION, [selftest.FIRST_POINT], providers)
    kernels = proof_plan.launched_kernels(calls, torch.device("cpu"), 90)
    return calls, kernels, [kernel.call for kernel in kernels if kernel.kind == "forward"]

calls, kernels, made = forwards(selftest.BENCH_PROVIDERS)
plain = {key: form for key, form in selftest.BENCH_PROVIDERS.items() if key != "tritongru-cudnn-tagged"}
_, without, _ = forwards(plain)
(compile_,) = [stage for stage in selftest.proof_stages(torch.device("cpu"), Path(".")) if stage.name == "precompile"]
print(json.dumps({
    "tagged_calls": sorted({call.kernel for call in calls if call.exchange == "tagged"}),
    "forwards": [[call["TAGGED"], call["xh_ptr"] is not None] for call in made],
    "extra": len(kernels) - len(without),
    "precompiled_tagged": sum(k.kind == "forward" and k.call["TAGGED"] for k in compile_.kernels),
}))
"""


def test_the_plan_precompiles_the_tagged_forward_beside_the_counter():
    """At the first point the tagged contender's forward is planned with the tagged exchange (its word buffers,
    ``TAGGED``), the plain contender's with the counter; the tagged one adds only its two forwards (with and
    without saved gates: its backward is the plain one's), and the precompile stage compiles them."""
    done = subprocess.run(
        [sys.executable, "-c", TAGGED_PLAN], env=NO_INTERPRETER, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr
    facts = json.loads(done.stdout.splitlines()[-1])
    assert facts["tagged_calls"] == ["forward"]
    assert sorted(facts["forwards"]) == [[False, False]] * 4 + [[True, True]] * 2
    assert facts["extra"] == 2 and facts["precompiled_tagged"] >= 2


def test_plan_on_the_command_line_lists_every_stage_and_fails_over_budget(capfd):
    from tritongru import cli

    assert cli.main(["selftest", "--plan", "--budget", "10"]) == 1
    lines = capfd.readouterr().out.splitlines()
    assert "budget 10 s" in lines[0] and "estimate" in lines[0]
    names = [line.split()[1] for line in lines[2:-1]]
    assert names == ["environment", "precompile", "barrier", "smoke", "bench", "stress", "calibrate", "tests"]
    assert lines[-1].startswith("total ") and lines[-1].endswith(" s")


PRECOMPILED = """
import os, sys
import torch, triton
from triton.backends.compiler import GPUTarget
from tritongru import configs, launchers
from tritongru.harness import precompile
from tritongru.harness.proof_plan import LauncherCall, launched_kernels, own_plan

target = GPUTarget("cuda", 90, 32)
calls = [
    LauncherCall.of("forward", "cudnn", "bf16", 16, 256, bias=True, lengths=False, store_gates=False),
    LauncherCall.of("forward", "cudnn", "bf16", 16, 256, "tagged", bias=True, lengths=False, store_gates=False),
    LauncherCall.of("cell", "classic", "bf16", 16, 256, bias=True, store_gates=False),
]
kernels = launched_kernels(calls, torch.device("cpu"), 90)
assert precompile.precompile(kernels, target, jobs=2) == []
entries = sorted(os.listdir(os.environ["TRITON_CACHE_DIR"]))

# the JIT, as a launch drives it: real tensors from the launchers' own argument code, the launch plan's calls
triton.runtime.driver.set_active(precompile.CompileOnly(target))
b = torch.bfloat16
w_hh, b_hh, h0 = torch.randn(768, 256, dtype=b), torch.randn(768, dtype=b), torch.randn(16, 256, dtype=b)
for call in calls:
    plan, kind, _ = own_plan(call, torch.device("cpu"), 90)
    config = configs.select_config(
        call.kernel, variant=call.variant, dtype=b, batch=16, hidden=256, input_size=call.input_size,
        device=torch.device("cpu"),
    )
    cell = call.kernel == "cell"
    args, _ = launchers.forward_arguments(
        gi=None if cell else torch.randn(7, 16, 768, dtype=b), x=torch.randn(16, 256, dtype=b) if cell else None,
        w_ih=torch.randn(768, 256, dtype=b) if cell else None, b_ih=torch.randn(768, dtype=b) if cell else None,
        h0=h0, w_hh=w_hh, b_hh=b_hh, steps=1 if cell else 7, lengths=None, variant=call.variant,
        store_gates=False, allow_tf32=False, config=config,
    )
    with launchers.using_exchange(call.exchange):
        launches = launchers.kernel_calls(kind, call.variant, plan, 1 if cell else 7, args)
    for launch in launches:
        print(launchers.gru_forward_kernel.warmup(grid=plan.grid, **launch).hash)
assert sorted(os.listdir(os.environ["TRITON_CACHE_DIR"])) == entries, "the JIT wrote nothing new: it found them"
print(len(kernels), "precompiled")
"""


def test_precompiled_kernels_are_the_entries_the_jit_reads(tmp_path):
    """What :func:`precompile` writes is what the JIT then finds: same cache key (the entry's hash) for a
    grid-synchronised forward with either exchange and both phases of a per-step classic cell (launched with
    and without PDL), and the JIT compiles nothing new."""
    env = {**NO_INTERPRETER, "TRITON_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", PRECOMPILED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    *hashes, last = done.stdout.split("\n")[:-1]
    assert last == "4 precompiled"
    assert len(hashes) == 2 + 2 and len(set(hashes)) == 4
    assert len(list(tmp_path.iterdir())) == 4, "one cache entry per precompiled kernel"


def test_a_stage_says_how_many_kernels_it_compiled_itself(tmp_path):
    """Kernels the JIT compiles during a stage, not found in the cache, are counted (Triton's listener)."""
    import triton

    def compiles_one(ctx) -> None:
        triton.knobs.compilation.listener(src=None, metadata={}, metadata_group={}, times=None, cache_hit=False)
        triton.knobs.compilation.listener(src=None, metadata={}, metadata_group={}, times=None, cache_hit=True)

    stages = [Stage("compiling", "", (), 1, "", compiles_one), Stage("quiet", "", (), 1, "", lambda ctx: None)]
    selftest.run_stages(stages, tmp_path, CPU, budget_s=10, stdout=io.StringIO())
    log = (tmp_path / selftest.LOG_FILE).read_text()
    assert "compiling: done in 0 s, 1 kernels compiled outside the precompile" in log
    assert "quiet: done in 0 s\n" in log
    assert triton.knobs.compilation.listener is None, "the listener is put back"
