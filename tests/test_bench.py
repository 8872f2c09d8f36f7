"""The benchmark library and results files: a real (tiny) CPU run, the schema, staleness, providers."""

import subprocess

import pytest
import torch

from tritongru import bench, providers, results

TINY = bench.Grid(batch=(2,), hidden=(16,), seq_len=(3,), precisions=("fp32",), modes=bench.MODES)


@pytest.fixture(scope="module")
def document():
    """A results document written by a real run through the CPU interpreter."""
    return bench.run_bench(
        TINY, providers=[*bench.default_providers(torch.device("cpu")), "flashrnn"], device=torch.device("cpu"),
        progress=False,
    )


def test_a_cpu_run_follows_the_schema(document):
    assert results.validate(document) == []
    meta = document["meta"]
    assert meta["timing"] == "interpreter"
    assert meta["gpu"] == "cpu-interpreter"
    assert meta["baseline"] == "torch-cpu"
    assert any("mean nothing" in note or "not speed" in note for note in meta["notes"])
    assert set(results.META_FIELDS) <= set(meta)
    for row in document["rows"]:
        assert set(row) == set(results.BENCH_FIELDS)


def test_every_contender_runs_every_mode_and_agrees_with_the_reference(document):
    ok = [row for row in document["rows"] if row["status"] == "ok"]
    expected = {(p, m) for p in bench.default_providers(torch.device("cpu")) for m in bench.MODES}
    assert {(row["provider"], row["mode"]) for row in ok} == expected
    for row in ok:
        assert row["max_abs_err"] < 1e-5, row
        assert row["median_ms"] > 0
        assert row["us_per_step"] == pytest.approx(row["median_ms"] * 1e3 / row["seq_len"])
        assert row["tokens_per_s"] == pytest.approx(row["batch"] * row["seq_len"] / (row["median_ms"] * 1e-3))
        assert row["tflops"] == pytest.approx(row["flops"] / (row["median_ms"] * 1e-3) / 1e12)
        if row["provider"] == "torch-cpu":
            assert row["speedup_vs_baseline"] == pytest.approx(1.0)
        assert row["speedup_vs_baseline"] > 0
        assert row["peak_mem_mb"] is None, "peak memory is only measured on CUDA"
    classic = {row["mode"] for row in ok if row["variant"] == "classic"}
    assert classic == set(bench.MODES), "the classic form is compared with the classic reference"


def test_a_missing_peer_is_skipped_with_a_note(document):
    skipped = [row for row in document["rows"] if row["provider"] == "flashrnn"]
    assert len(skipped) == len(bench.MODES)
    assert all(row["status"] == "skipped" for row in skipped)
    assert all("not installed" in row["note"] or "CUDA only" in row["note"] for row in skipped)


def test_work_model():
    flops, data = bench.work("forward", batch=2, hidden=4, input_size=3, seq_len=5, dtype=torch.float32)
    assert flops == 2 * 5 * 2 * 12 * 7
    assert data == (5 * 2 * 7 + 12 * 7) * 4
    assert bench.work("train", batch=2, hidden=4, input_size=3, seq_len=5, dtype=torch.bfloat16)[0] == 3 * flops


def test_add_speedups():
    rows = [
        {"provider": p, "mode": "forward", "dtype": "fp32", "batch": 1, "hidden": 8, "input_size": 8, "seq_len": 4,
         "status": "ok", "median_ms": t, "speedup_vs_baseline": None}
        for p, t in (("cudnn", 2.0), ("tritongru-cudnn", 1.0))
    ]
    bench.add_speedups(rows, "cudnn")
    assert [r["speedup_vs_baseline"] for r in rows] == [1.0, 2.0]


def test_results_round_trip_and_schema_errors(document, tmp_path):
    path = results.write(document, tmp_path)
    assert path.parent.name == "cpu-interpreter"
    assert results.load(path) == document
    assert results.latest(tmp_path, "bench") == path
    assert results.write(document, tmp_path) != path, "a second file never overwrites the first"
    broken = {**document, "rows": [{"provider": "cudnn"}]}
    assert any("lacks" in error for error in results.validate(broken))
    assert results.validate({**document, "meta": {**document["meta"], "timing": "guessed"}})
    bad = tmp_path / "bench-bad.json"
    bad.write_text('{"schema": "something else"}')
    with pytest.raises(ValueError, match=r"bench-bad\.json"):
        results.load(bad)
    with pytest.raises(ValueError):
        results.new_document("bench", {}, [])


def git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_staleness_follows_the_latest_change_to_kernels(tmp_path):
    repo = tmp_path / "repo"
    (repo / "kernels").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "kernels" / "k.py").write_text("a = 1\n")
    git(repo, "add", ".")
    first = git(repo, "commit", "-qm", "kernels")
    (repo / "README").write_text("docs\n")
    git(repo, "add", ".")
    docs = git(repo, "commit", "-qm", "docs")
    at = lambda commit: {"meta": {"git_commit": commit}}
    assert results.is_stale(at(first), repo) is False
    assert results.is_stale(at(docs), repo) is False
    (repo / "kernels" / "k.py").write_text("a = 2\n")
    git(repo, "add", ".")
    changed = git(repo, "commit", "-qm", "kernels again")
    assert results.is_stale(at(first), repo) is True
    assert results.is_stale(at(docs), repo) is True
    assert results.is_stale(at(changed), repo) is False
    assert results.is_stale(at("0" * 40), repo) is None, "a commit this checkout lacks cannot be judged"
    assert results.is_stale(at(None), repo) is None
    assert "STALE" in results.describe({"meta": {**results.environment(torch.device("cpu"), interpreter=True),
                                                 "git_commit": first}}, repo)


def test_providers_match_exact_keys():
    assert providers.provider("cudnn").label.startswith("cuDNN")
    with pytest.raises(KeyError):
        providers.provider("tritongru")
    assert set(providers.importable_peers()) == set(providers.PEERS) == {"torchrl", "flag_gems", "flashrnn"}
    assert len({p.color for p in providers.PROVIDERS.values()}) == len(providers.PROVIDERS)


def test_flashrnn_adapter_maps_torch_weights():
    """FlashRNN's pure-PyTorch backend runs on the CPU: the weight mapping must reproduce torch.nn.GRU."""
    pytest.importorskip("flashrnn")
    gru = torch.nn.GRU(5, 8)
    x, h0 = torch.randn(4, 3, 5), torch.randn(1, 3, 8)
    expected, expected_h = gru(x, h0)
    output, h_n = bench._FlashRNNGRU(gru, backend="vanilla")(x, h0)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)


def test_compiled_reference_runs_every_mode():
    """torch.compile of the reference, including backward-only timing (a retained graph)."""
    grid = bench.Grid(batch=(2,), hidden=(8,), seq_len=(2,), precisions=("fp32",), modes=bench.MODES)
    document = bench.run_bench(grid, providers=["torch-cpu", "compiled-ref"], device=torch.device("cpu"),
                               progress=False)
    compiled = [row for row in document["rows"] if row["provider"] == "compiled-ref"]
    assert {row["mode"] for row in compiled if row["status"] == "ok"} == set(bench.MODES)
    assert all(row["max_abs_err"] < 1e-5 for row in compiled)


def test_peaks_and_tf32_switches_are_restored():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    peaks = bench.measure_peaks(torch.device("cpu"), ["fp32", "tf32"])
    assert set(peaks["tflops"]) == {"fp32", "tf32"}
    assert all(value > 0 for value in peaks["tflops"].values()) and peaks["gbps"] > 0
    with bench.tf32_mode(not before[0]):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[0])
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark) == before
