"""The benchmark library and results files: a real (tiny) run on the test device, the schema, staleness,
providers, the one timer."""

import subprocess

import pytest
import torch

from tritongru.environment import device_name, slug
from tritongru.harness import bench, providers, results, timing
from tritongru.harness.grids import MODES, Grid

TINY = Grid(batch=(2,), hidden=(16,), seq_len=(3,), precisions=("fp32",), modes=MODES)


@pytest.fixture(scope="module")
def document(device):
    """A results document written by a real run: through the CPU interpreter, or on the GPU."""
    return bench.run_bench(
        TINY,
        providers=[*providers.default_providers(device), "flashrnn"],
        device=device,
        progress=False,
    )


def gpu_label(device):
    """The name a run on ``device`` is filed under."""
    return device_name(device) if timing.device_events(device) else "cpu-interpreter"


def test_a_run_follows_the_schema(document, device):
    assert results.validate(document) == []
    meta = document["meta"]
    assert meta["gpu"] == gpu_label(device)
    if timing.device_events(device):
        assert meta["timing"] == "device-events"
        assert meta["baseline"] == "cudnn"
        assert meta["notes"] == []
    else:
        assert meta["timing"] == "interpreter"
        assert meta["baseline"] == "torch-cpu"
        assert any("mean nothing" in note or "not speed" in note for note in meta["notes"])
    assert set(results.META_FIELDS) <= set(meta)
    for row in document["rows"]:
        assert set(row) == set(results.BENCH_FIELDS)


def test_every_contender_runs_every_mode_and_agrees_with_the_reference(document, device):
    ok = [row for row in document["rows"] if row["status"] == "ok"]
    expected = {(p, m) for p in providers.default_providers(device) for m in MODES}
    assert {(row["provider"], row["mode"]) for row in ok} == expected
    baseline = providers.baseline_provider(device)
    for row in ok:
        assert row["max_abs_err"] < 1e-5, row
        assert row["median_ms"] > 0
        assert row["us_per_step"] == pytest.approx(row["median_ms"] * 1e3 / row["seq_len"])
        assert row["tokens_per_s"] == pytest.approx(row["batch"] * row["seq_len"] / (row["median_ms"] * 1e-3))
        assert row["tflops"] == pytest.approx(row["flops"] / (row["median_ms"] * 1e-3) / 1e12)
        if row["provider"] == baseline:
            assert row["speedup_vs_baseline"] == pytest.approx(1.0)
        assert row["speedup_vs_baseline"] > 0
        if device.type == "cuda" and row["mode"] == "train":
            assert row["peak_mem_mb"] > 0, "training memory is measured on CUDA"
        else:
            assert row["peak_mem_mb"] is None, "peak memory is only measured for training on CUDA"
    classic = {row["mode"] for row in ok if row["variant"] == "classic"}
    assert classic == set(MODES), "the classic form is compared with the classic reference"


def test_a_missing_peer_is_skipped_with_a_note(document, device):
    if device.type == "cuda" and providers.importable_peers()["flashrnn"]:
        pytest.skip("flashrnn is installed beside a GPU here, so it runs instead of being skipped")
    skipped = [row for row in document["rows"] if row["provider"] == "flashrnn"]
    assert len(skipped) == len(MODES)
    assert all(row["status"] == "skipped" for row in skipped)
    assert all("not installed" in row["note"] or "CUDA only" in row["note"] for row in skipped)


def test_the_research_variants_agree_with_their_own_references(device):
    """Multi-head, zoneout and LayerNorm-GRU contenders, in the kernels and as plain-PyTorch loops, run every
    mode and are checked against the reference of their own variant (which differs from the plain GRU's)."""
    document = bench.run_bench(TINY, providers=list(providers.VARIANT_PROVIDERS), device=device, progress=False)
    ok = [row for row in document["rows"] if row["status"] == "ok"]
    assert {(row["provider"], row["mode"]) for row in ok} == {
        (p, m) for p in providers.VARIANT_PROVIDERS for m in MODES
    }
    assert all(row["max_abs_err"] < 1e-5 for row in ok), ok
    torch.manual_seed(0)
    base = torch.nn.GRU(4, 16, device=device)
    x, h0 = torch.randn(3, 2, 4, device=device), torch.randn(1, 2, 16, device=device)
    plain = bench._reference(base, x, h0, "cudnn", providers.Variant())
    for variant in (providers.HEADS, providers.ZONEOUT, providers.LAYERNORM):
        assert (bench._reference(base, x, h0, "cudnn", variant) - plain).abs().max() > 1e-3, variant
    with pytest.raises(LookupError, match="heads"):
        providers.build("tritongru-heads", torch.nn.GRU(4, 12), allow_tf32=False)


def test_work_model():
    flops, data = bench.work("forward", batch=2, hidden=4, input_size=3, seq_len=5, dtype=torch.float32)
    assert flops == 2 * 5 * 2 * 12 * 7
    assert data == (5 * 2 * 7 + 12 * 7) * 4
    assert bench.work("train", batch=2, hidden=4, input_size=3, seq_len=5, dtype=torch.bfloat16)[0] == 3 * flops


def test_add_speedups():
    point = {"mode": "forward", "dtype": "fp32", "batch": 1, "hidden": 8, "input_size": 8, "seq_len": 4}
    rows = [
        {"provider": p, **point, "status": "ok", "median_ms": t, "speedup_vs_baseline": None}
        for p, t in (("cudnn", 2.0), ("tritongru-cudnn", 1.0))
    ]
    bench.add_speedups(rows, "cudnn")
    assert [r["speedup_vs_baseline"] for r in rows] == [1.0, 2.0]


def test_results_round_trip_and_schema_errors(document, device, tmp_path):
    path = results.write(document, tmp_path)
    assert path.parent.name == slug(gpu_label(device))
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
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True
    )
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def test_staleness_follows_the_latest_change_to_kernels(tmp_path, device):
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
    meta = results.environment(device, interpreter=not timing.device_events(device))
    assert "STALE" in results.describe({"meta": {**meta, "git_commit": first}}, repo)


def test_providers_match_exact_keys(device):
    assert providers.provider("cudnn").label.startswith("cuDNN")
    with pytest.raises(KeyError):
        providers.provider("tritongru")
    with pytest.raises(LookupError, match="unknown provider"):
        providers.build("tritongru", torch.nn.GRU(4, 8, device=device), allow_tf32=False)
    assert set(providers.importable_peers()) == set(providers.PEERS) == {"torchrl", "flag_gems", "flashrnn"}
    assert len({p.color for p in providers.PROVIDERS.values()}) == len(providers.PROVIDERS)


def test_flashrnn_adapter_maps_torch_weights(device):
    """FlashRNN's pure-PyTorch backend runs anywhere: the weight mapping must reproduce torch.nn.GRU."""
    pytest.importorskip("flashrnn")
    gru = torch.nn.GRU(5, 8, device=device)
    x, h0 = torch.randn(4, 3, 5, device=device), torch.randn(1, 3, 8, device=device)
    expected, expected_h = gru(x, h0)
    output, h_n = providers._FlashRNNGRU(gru, backend="vanilla")(x, h0)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)


def test_compiled_reference_runs_every_mode(device):
    """torch.compile of the reference, including backward-only timing (a retained graph)."""
    grid = Grid(batch=(2,), hidden=(8,), seq_len=(2,), precisions=("fp32",), modes=MODES)
    document = bench.run_bench(
        grid, providers=[providers.baseline_provider(device), "compiled-ref"], device=device, progress=False
    )
    compiled = [row for row in document["rows"] if row["provider"] == "compiled-ref"]
    assert {row["mode"] for row in compiled if row["status"] == "ok"} == set(MODES)
    assert all(row["max_abs_err"] < 1e-5 for row in compiled)


def test_peaks_and_tf32_switches_are_restored(device):
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    peaks = timing.measure_peaks(device, ["fp32", "tf32"])
    assert set(peaks["tflops"]) == {"fp32", "tf32"}
    assert all(value > 0 for value in peaks["tflops"].values()) and peaks["gbps"] > 0
    with timing.tf32_mode(not before[0]):
        assert torch.backends.cuda.matmul.allow_tf32 is (not before[0])
    after = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    assert after == before


def test_the_one_timer_follows_the_device(device):
    """Device events over many calls on a GPU; one labelled wall-clock call under the interpreter."""
    calls = []
    x = torch.randn(256, 256, device=device)
    leaf = torch.ones(3, requires_grad=True)
    leaf.grad = torch.ones(3)

    def fn():
        calls.append(1)
        return x @ x

    median, p20, p80 = timing.measure(fn, device=device, grad_to_none=[leaf])
    assert leaf.grad is None, "gradients are cleared before timing"
    if timing.device_events(device):
        assert timing.timing_label(device) == "device-events"
        assert len(calls) > 1, "warm-up and repetitions"
        assert 0 < p20 <= median <= p80
    else:
        assert timing.timing_label(device) == "interpreter"
        assert len(calls) == 1
        assert median == p20 == p80 > 0
