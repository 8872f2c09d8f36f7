"""The tuning harness on a tiny search space: pruning, the correctness gate, winners in the cache, the sweep."""

import itertools
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tritongru import launchers, tuning_cache
from tritongru.configs import KernelConfig
from tritongru.environment import device_name
from tritongru.harness import problems, results, search_space, timing, tuning
from tritongru.harness.search_space import NOMINAL_LIMITS, DeviceLimits, ProblemSpec, Resources
from tritongru.precisions import PRECISIONS
from tritongru.variants import VARIANTS

FP32 = PRECISIONS["fp32"]


def config(**overrides) -> KernelConfig:
    return KernelConfig(**({"block_b": 16, "block_h": 16, "block_k": 16, "num_warps": 1} | overrides))


def spec(kernel="forward", variant="cudnn", **overrides) -> ProblemSpec:
    sizes = dict(precision=FP32, batch=3, hidden=20, input_size=12) | overrides
    return ProblemSpec(kernel=kernel, variant=variant, **sizes)


def reason(cfg, *, limits=NOMINAL_LIMITS, **overrides):
    return search_space.prune_reason(cfg, spec(**overrides), limits)


def test_candidates_cover_the_declared_space():
    """Every combination of the declared values whose warps share the tile without computing the same
    products: splitting K takes 16 columns per warp, splitting the rows 16 rows per warp."""
    for kernel, space in search_space.SEARCH_SPACE.items():
        combinations = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
        valid = [c for c in combinations if (c["block_k"] if c["split_k"] else c["block_b"]) >= 16 * c["num_warps"]]
        assert len(search_space.candidates(kernel)) == len(valid) < math.prod(len(v) for v in space.values())
    assert len(search_space.candidates("forward", search_space.search_space("forward", tiny=True))) == 8


def test_pruning_reasons():
    assert reason(config()) is None
    assert reason(config(persistent=False), kernel="cell") is None, "the classic cell may run per phase"
    assert "block_b" in reason(config(block_b=32), batch=3)
    assert reason(config(block_b=32), batch=17) is None
    assert "block_h" in reason(config(block_h=64), hidden=20)
    assert "block_k" in reason(config(block_k=64), hidden=20)
    assert reason(config(block_k=64), kernel="cell", hidden=20, input_size=40) is None, "cell reduces over I"
    assert "threads" in reason(config(num_warps=16, split_k=True, block_k=256), batch=3, hidden=256)
    assert reason(config(num_warps=4, split_k=True, block_k=64), hidden=20) is None, "4 warps x 16 columns"
    assert "batch blocks" in reason(config(batch_blocks=2), batch=40), "one batch block per program fits"
    assert "unrolled chunks" in reason(config(block_k=16), hidden=2048)
    small_gpu = DeviceLimits(shared_memory=1 << 20, registers=65_536, sm_count=4)
    assert "resident" in reason(config(), batch=40, hidden=40, limits=small_gpu), "3 slices x 3 batch blocks > 4"
    assert reason(config(persistent=False), batch=40, hidden=40, limits=small_gpu) is None
    tight = DeviceLimits(shared_memory=4096, registers=65_536)
    assert "shared memory" in reason(config(block_h=32, block_k=32), hidden=64, limits=tight)
    few = DeviceLimits(shared_memory=1 << 20, registers=65_536, registers_per_thread=40)
    assert "registers" in reason(config(block_b=64, block_h=128, block_k=16), batch=64, hidden=128, limits=few)


def test_compiled_resources_replace_the_estimates():
    """A resource model read from the real compile plugs into pruning in place of the estimates."""
    seen = []

    def compiled(cfg, problem):
        seen.append((cfg, problem))
        return Resources(registers_per_thread=255, shared_memory=1024, spill_bytes=64 if cfg.block_k == 32 else 0)

    fits, spills = config(), config(block_k=32)
    assert search_space.prune_reason(fits, spec(), NOMINAL_LIMITS) is None
    assert search_space.prune_reason(fits, spec(), NOMINAL_LIMITS, compiled) is None
    assert "spills 64 B" in search_space.prune_reason(spills, spec(), NOMINAL_LIMITS, compiled)
    kept, pruned = search_space.prune([fits, spills], spec(), NOMINAL_LIMITS, compiled)
    assert kept == [fits] and [c for c, _ in pruned] == [spills]
    assert seen[0] == (fits, spec()), "the model sees the config and the whole problem spec"
    estimated = search_space.estimate_resources(config(block_h=32, block_k=32), spec())
    assert estimated.shared_memory == (3 * 32 * 32 + 16 * 32) * 4, "resident weights of 3 gates + one chunk"
    assert estimated.spill_bytes == 0


COMPILED_RESOURCES = """
import json
from tritongru import launchers
from tritongru.compiled import kernel_resources
from tritongru.configs import KernelConfig
from tritongru.harness.search_space import ProblemSpec, compiled_resources
from tritongru.precisions import PRECISIONS

problem = ProblemSpec("forward", "cudnn", PRECISIONS["fp32"], batch=3, hidden=40, input_size=12)
config = KernelConfig(16, 16, 128, num_warps=8, split_k=True)
used = compiled_resources(config, problem, arch=90)
flags = {"bias": True, "store_gates": False, "lengths": False}
kind, args = launchers.meta_arguments("forward", "cudnn", "fp32", 3, 40, 12, flags, config)
each = [
    kernel_resources(launchers.gru_forward_kernel, call, 90)
    for _, call in launchers.compiled_calls(kind, "cudnn", config, 3, 40, args, 90)
]
print(json.dumps([used.registers_per_thread, used.shared_memory, used.spill_bytes, len(each),
                  max(r.registers for r in each), max(r.spills for r in each)]))
"""


def test_resources_read_from_the_sm90_compile():
    """Without a GPU: every kernel a grid-synchronised config compiles to (the persistent launch and its
    per-step fallback) is compiled for sm_90 (in a process without the interpreter); the most any of
    them needs is reported."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", COMPILED_RESOURCES], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    registers, shared, spills, kernels, most_registers, most_spills = json.loads(done.stdout.splitlines()[-1])
    assert kernels == 2, "the grid-synchronised kernel and its per-step fallback"
    assert 0 < registers == most_registers <= 255
    assert spills == most_spills
    weights = 3 * 128 * 16 * 4  # three gates x K=40 in one chunk of 128 (16 per warp) x a 16-unit slice, fp32
    assert weights <= shared <= 2 * weights


def test_prune_splits_the_candidates():
    configs = search_space.candidates("forward")
    kept, pruned = search_space.prune(configs, spec(), NOMINAL_LIMITS)
    assert len(kept) + len(pruned) == len(configs)
    assert kept and pruned
    assert all(c.block_b == 16 and c.block_h <= 32 and c.block_k <= 16 * c.num_warps for c in kept)
    assert {c.split_k for c in kept} == {True}, "4 or 8 warps cannot split 16 rows"


def small_problem(device, kernel, variant="cudnn", seq_len=3, **overrides):
    return problems.make_problem(spec(kernel, variant, **overrides), seq_len=seq_len, device=device)


def test_the_gate_holds_kernels_to_the_precision_table():
    """One table of tolerances: the gate passes what the precision's (atol, rtol) allows and no more."""
    ref = torch.tensor([0.0, 0.5, -2.0], dtype=torch.float64)
    allowed = FP32.atol + FP32.rtol * ref.abs()
    assert problems.gate_error([ref + 0.9 * allowed], [ref], FP32) <= 1
    assert problems.gate_error([ref + 1.1 * allowed], [ref], FP32) > 1
    assert problems.gate_error([ref + 1.1 * allowed], [ref], PRECISIONS["bf16"]) <= 1
    big = ref * 1000
    assert problems.gate_error([big + 0.9 * (FP32.atol * 2000 + FP32.rtol * big.abs())], [big], FP32) <= 1, (
        "outputs are scaled by their largest reference value, as the tests scale gradients"
    )
    assert problems.gate_error([ref.float().fill_(math.nan)], [ref], FP32) == math.inf
    assert problems.gate_error([ref[:2]], [ref], FP32) == math.inf
    assert problems.max_abs_error([ref + 0.25], [ref]) == pytest.approx(0.25)


@pytest.mark.parametrize("kernel", ["forward", "backward", "cell"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_a_correct_config_passes_the_gate(kernel, variant, device):
    problem = small_problem(device, kernel, variant)
    outputs = problem.compare(problem.run(config(block_h=32, block_k=32)))
    assert problems.gate_error(outputs, problem.expected, FP32) <= 1
    assert problems.max_abs_error(outputs, problem.expected) < 1e-4


@pytest.mark.parametrize("kernel", ["forward", "cell"])
def test_training_problems_save_gates_and_have_their_own_key(kernel, device):
    problem = small_problem(device, kernel, store_gates=True)
    launched = problem.run(config(block_h=32, block_k=32))
    assert launched[1] is not None, "the kernel ran with store_gates"
    assert problems.gate_error(problem.compare(launched), problem.expected, FP32) <= 1
    assert tuning.cache_key(problem.spec) != tuning.cache_key(spec(kernel))


def test_tune_picks_a_checked_winner_and_caches_it(tmp_path, device):
    problem = small_problem(device, "forward")
    outcome = tuning.tune(
        problem,
        space=search_space.search_space("forward", tiny=True),
        progress=False,
        write_cache=True,
        cache_dir=tmp_path,
    )
    assert outcome.winner is not None
    assert {row["status"] for row in outcome.rows} == {"ok"}
    assert sum(row["winner"] for row in outcome.rows) == 1
    bound = FP32.atol + FP32.rtol * max(e.abs().max().item() for e in problem.expected)
    assert all(row["max_abs_err"] <= bound for row in outcome.rows)
    assert all(row["dtype"] == "fp32" for row in outcome.rows)
    name = device_name(device)
    entries = tuning_cache.read_file(tmp_path / tuning_cache.cache_file_name(name), device=name)
    key = tuning_cache.entry_key("forward", variant="cudnn", dtype=torch.float32, batch=3, hidden=20, input_size=0)
    assert entries[key]["config"] == outcome.winner.to_dict()
    assert entries[key]["timing"] == timing.timing_label(device)


def test_cache_writes_follow_the_timer(tmp_path, monkeypatch, device):
    """By default device-event winners are cached and interpreter winners (whose times mean nothing) are not."""
    monkeypatch.setenv("TRITONGRU_CACHE_DIR", str(tmp_path))
    outcome = tuning.tune(
        small_problem(device, "cell"), space=search_space.search_space("cell", tiny=True), progress=False
    )
    assert outcome.winner is not None
    if timing.device_events(device):
        assert outcome.cache_path == str(tmp_path / tuning_cache.cache_file_name(device_name(device)))
    else:
        assert outcome.cache_path is None
        assert not list(tmp_path.iterdir())


def test_an_unwritable_cache_warns_and_keeps_the_winner(tmp_path, device):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the cache directory should be")
    problem = small_problem(device, "cell")
    with pytest.warns(UserWarning, match="could not write the tuning cache"):
        outcome = tuning.tune(
            problem,
            space=search_space.search_space("cell", tiny=True),
            progress=False,
            write_cache=True,
            cache_dir=blocked,
        )
    assert outcome.winner is not None and outcome.cache_path is None
    assert [row for row in outcome.rows if row["winner"]], "the winner is still in the sweep's rows"


def test_a_wrong_config_is_rejected_even_when_it_is_fastest(device):
    """The gate runs before the timer: a config whose output is wrong never gets a time, so cannot win."""
    problem = small_problem(device, "forward")
    honest_run = problem.run
    bad = config(block_h=32, block_k=16, persistent=False)
    broken = config(block_h=16, block_k=32, persistent=True)

    def faulty_run(cfg):
        if cfg == broken:
            raise RuntimeError("out of resources")
        outputs = honest_run(cfg)
        return tuple(o if o is None else o + 1e-2 for o in outputs) if cfg == bad else outputs

    problem.run = faulty_run
    timed = []

    def timer(fn, cfg):
        timed.append(cfg)
        fn()
        return (0.001,) * 3 if cfg == bad else (1.0,) * 3

    outcome = tuning.tune(problem, space=search_space.search_space("forward", tiny=True), timer=timer, progress=False)
    by_config = {KernelConfig.from_dict(row): row for row in outcome.rows}
    assert by_config[bad]["status"] == "rejected"
    assert "fp32 tolerance" in by_config[bad]["reason"]
    assert by_config[bad]["median_ms"] is None
    assert by_config[broken]["status"] == "error" and "out of resources" in by_config[broken]["reason"]
    assert bad not in timed and broken not in timed
    assert outcome.winner not in (bad, broken)
    assert by_config[outcome.winner]["status"] == "ok"


def test_nothing_passes_means_no_winner(tmp_path, device):
    problem = small_problem(device, "cell")
    problem.expected = tuple(e + 1.0 for e in problem.expected)
    outcome = tuning.tune(
        problem,
        space=search_space.search_space("cell", tiny=True),
        progress=False,
        write_cache=True,
        cache_dir=tmp_path,
    )
    assert outcome.winner is None
    assert {row["status"] for row in outcome.rows} == {"rejected"}
    assert not list(tmp_path.iterdir())


def test_sweep_is_a_valid_results_document(tmp_path, device):
    document = tuning.sweep(
        kernels=["forward", "cell"],
        variants=["classic"],
        precisions=["fp32"],
        batches=[2],
        hiddens=[20],
        input_size=None,
        seq_len=2,
        device=device,
        tiny=True,
        progress=False,
        write_cache=False,
    )
    assert results.validate(document) == []
    assert document["meta"]["timing"] == timing.timing_label(device)
    assert document["meta"]["store_gates"] is False
    assert {row["kernel"] for row in document["rows"]} == {"forward", "cell"}
    assert len(document["meta"]["winners"]) == 2
    path = results.write(document, tmp_path)
    assert results.load(path)["rows"] == document["rows"]


@pytest.mark.parametrize("kernel", ["forward", "backward", "cell"])
def test_winners_are_filed_under_the_key_the_launchers_look_up(kernel, monkeypatch, device):
    problem = small_problem(device, kernel)
    looked_up = {}
    real_select = launchers.select_config

    def spy(name, **key):
        looked_up[name] = key
        return real_select(name, **key)

    monkeypatch.setattr(launchers, "select_config", spy)
    problem.run(None)
    assert looked_up[kernel]["head_dim"] is None, "the tuning cache holds the dense GRU"
    key = {name: value for name, value in looked_up[kernel].items() if name not in ("device", "head_dim")}
    assert tuning_cache.entry_key(kernel, **key) == tuning.cache_key(problem.spec)
    assert tuning.cache_key(problem.spec) == tuning_cache.entry_key(
        kernel,
        variant="cudnn",
        dtype=torch.float32,
        batch=3,
        hidden=20,
        input_size=tuning.cache_input_size(kernel, problem.spec.input_size),
    )
