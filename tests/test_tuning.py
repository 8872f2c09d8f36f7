"""The tuning harness on a tiny search space: pruning, the correctness gate, winners in the cache, the sweep."""

import math

import pytest
import torch

from tritongru import launchers, results, tuning, tuning_cache
from tritongru.configs import KernelConfig


def config(**overrides) -> KernelConfig:
    return KernelConfig(**({"block_b": 16, "block_h": 16, "block_k": 16} | overrides))


def reason(cfg, *, kernel="forward", batch=3, hidden=20, input_size=12, dtype=torch.float32,
           limits=tuning.NOMINAL_LIMITS):
    return tuning.prune_reason(
        cfg, kernel=kernel, batch=batch, hidden=hidden, input_size=input_size, dtype=dtype, limits=limits,
    )


def test_candidates_cover_the_declared_space():
    for kernel, space in tuning.SEARCH_SPACE.items():
        assert len(tuning.candidates(kernel)) == math.prod(len(values) for values in space.values())
    assert all(c.persistent for c in tuning.candidates("cell"))
    assert len(tuning.candidates("forward", tuning.search_space("forward", tiny=True))) == 8


def test_pruning_reasons():
    assert reason(config()) is None
    assert "persistent" in reason(config(persistent=False), kernel="cell")
    assert "block_b" in reason(config(block_b=32), batch=3)
    assert reason(config(block_b=32), batch=17) is None
    assert "block_h" in reason(config(block_h=64), hidden=20)
    assert "block_k" in reason(config(block_k=64), hidden=20)
    assert reason(config(block_k=64), kernel="cell", hidden=20, input_size=40) is None, "cell reduces over I"
    assert "threads" in reason(config(num_warps=16), batch=3)
    tight = tuning.DeviceLimits(shared_memory=4096, registers=65_536)
    assert "shared memory" in reason(config(block_h=32, block_k=32), hidden=64, limits=tight)
    few = tuning.DeviceLimits(shared_memory=1 << 20, registers=65_536, registers_per_thread=40)
    assert "registers" in reason(config(block_b=64, block_h=128, block_k=16), batch=64, hidden=128, limits=few)


def test_prune_splits_the_candidates():
    configs = tuning.candidates("forward")
    kept, pruned = tuning.prune(
        configs, kernel="forward", batch=3, hidden=20, input_size=12, dtype=torch.float32,
        limits=tuning.NOMINAL_LIMITS,
    )
    assert len(kept) + len(pruned) == len(configs)
    assert kept and pruned
    assert all(c.block_b == 16 and c.block_h <= 32 and c.block_k <= 32 for c in kept)


def small_problem(kernel, variant="cudnn", **overrides):
    args = dict(variant=variant, dtype=torch.float32, batch=3, hidden=20, input_size=12, seq_len=3,
                device=torch.device("cpu")) | overrides
    return tuning.make_problem(kernel, **args)


@pytest.mark.parametrize("kernel", ["forward", "backward", "cell"])
@pytest.mark.parametrize("variant", ["cudnn", "classic"])
def test_a_correct_config_passes_the_gate(kernel, variant):
    problem = small_problem(kernel, variant)
    error = tuning.max_error(problem.compare(problem.run(config(block_h=32, block_k=32))), problem.expected)
    assert error <= tuning.tolerance(torch.float32, False)


def test_tune_picks_a_checked_winner_and_caches_it(tmp_path):
    problem = small_problem("forward")
    outcome = tuning.tune(
        problem, space=tuning.search_space("forward", tiny=True), progress=False, write_cache=True,
        cache_dir=tmp_path,
    )
    assert outcome.winner is not None
    assert {row["status"] for row in outcome.rows} == {"ok"}
    assert sum(row["winner"] for row in outcome.rows) == 1
    assert all(row["max_abs_err"] <= tuning.tolerance(torch.float32, False) for row in outcome.rows)
    entries = tuning_cache.read_file(tmp_path / tuning_cache.cache_file_name("cpu"), device="cpu")
    key = tuning_cache.entry_key("forward", variant="cudnn", dtype=torch.float32, batch=3, hidden=20,
                                 input_size=0)
    assert entries[key]["config"] == outcome.winner.to_dict()
    assert entries[key]["timing"] == "interpreter"


def test_interpreter_times_are_not_cached_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONGRU_CACHE_DIR", str(tmp_path))
    outcome = tuning.tune(small_problem("cell"), space=tuning.search_space("cell", tiny=True), progress=False)
    assert outcome.winner is not None and outcome.cache_path is None
    assert not list(tmp_path.iterdir())


def test_a_wrong_config_is_rejected_even_when_it_is_fastest():
    """The gate runs before the timer: a config whose output is wrong never gets a time, so cannot win."""
    problem = small_problem("forward")
    honest_run = problem.run
    bad = config(block_h=32, block_k=16, num_stages=1, persistent=False)
    broken = config(block_h=16, block_k=32, num_stages=1, persistent=True)

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

    outcome = tuning.tune(problem, space=tuning.search_space("forward", tiny=True), timer=timer, progress=False)
    by_config = {KernelConfig.from_dict(row): row for row in outcome.rows}
    assert by_config[bad]["status"] == "rejected"
    assert by_config[bad]["median_ms"] is None
    assert by_config[broken]["status"] == "error" and "out of resources" in by_config[broken]["reason"]
    assert bad not in timed and broken not in timed
    assert outcome.winner not in (bad, broken)
    assert by_config[outcome.winner]["status"] == "ok"


def test_nothing_passes_means_no_winner(tmp_path):
    problem = small_problem("cell")
    problem.expected = tuple(e + 1.0 for e in problem.expected)
    outcome = tuning.tune(problem, space=tuning.search_space("cell", tiny=True), progress=False,
                          write_cache=True, cache_dir=tmp_path)
    assert outcome.winner is None
    assert {row["status"] for row in outcome.rows} == {"rejected"}
    assert not list(tmp_path.iterdir())


def test_sweep_is_a_valid_results_document(tmp_path):
    document = tuning.sweep(
        kernels=["forward", "cell"], variants=["classic"], precisions=["fp32"], batches=[2], hiddens=[20],
        input_size=None, seq_len=2, device=torch.device("cpu"), tiny=True, progress=False,
    )
    assert results.validate(document) == []
    assert document["meta"]["timing"] == "interpreter"
    assert {row["kernel"] for row in document["rows"]} == {"forward", "cell"}
    assert len(document["meta"]["winners"]) == 2
    path = results.write(document, tmp_path)
    assert results.load(path)["rows"] == document["rows"]


@pytest.mark.parametrize("kernel", ["forward", "backward", "cell"])
def test_winners_are_filed_under_the_key_the_launchers_look_up(kernel, monkeypatch):
    problem = small_problem(kernel)
    looked_up = {}
    real_select = launchers.select_config

    def spy(name, **key):
        looked_up[name] = key
        return real_select(name, **key)

    monkeypatch.setattr(launchers, "select_config", spy)
    problem.run(None)
    key = {name: value for name, value in looked_up[kernel].items() if name != "device"}
    assert tuning_cache.entry_key(kernel, **key) == tuning_cache.entry_key(
        kernel, variant="cudnn", dtype=torch.float32, batch=3, hidden=20,
        input_size=tuning.cache_input_size(kernel, problem.input_size),
    )
