"""The ``tritongru`` command line, in process where possible (one subprocess checks the interpreter switch)."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tritongru import cli
from tritongru.harness import results, timing

TINY_BENCH = ["--batch", "2", "--hidden", "16", "--seq-len", "2", "--modes", "forward", "--quiet"]


def test_info_reports_device_versions_caches_and_peers(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONGRU_CACHE_DIR", str(tmp_path / "cache"))
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "torch",
        "triton",
        "user tuning cache",
        str(tmp_path / "cache"),
        "shipped tuning cache",
        "peer torchrl",
        "peer flag_gems",
        "peer flashrnn",
    ):
        assert needle in out


def test_bench_writes_results_and_plots_and_says_how_it_timed(capsys, tmp_path, device):
    assert cli.main(["bench", *TINY_BENCH, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    [path] = results.find(tmp_path, "bench")
    document = results.load(path)
    if timing.device_events(device):
        assert "mean nothing" not in out
        assert document["meta"]["timing"] == "device-events"
        assert {row["provider"] for row in document["rows"]} >= {"tritongru-cudnn", "tritongru-classic", "cudnn"}
    else:
        assert "mean nothing" in out
        assert document["meta"]["timing"] == "interpreter"
        assert {row["provider"] for row in document["rows"]} >= {"tritongru-cudnn", "tritongru-classic", "torch-cpu"}
    assert f"results: {path}" in out
    assert list(path.with_suffix("").glob("*.png")), "plots are drawn beside the results"


TINY_TUNE = ["tune", "--kernels", "cell", "--variants", "classic", "--batch", "2", "--hidden", "16", "--quiet"]


def test_tune_then_plot(capsys, tmp_path):
    args = [*TINY_TUNE, "--space", "tiny", "--store-gates", "--out", str(tmp_path / "res"), "--no-plots"]
    assert cli.main([*args, "--cache-dir", str(tmp_path / "cache")]) == 0
    [path] = results.find(tmp_path / "res", "tune")
    document = results.load(path)
    assert document["meta"]["store_gates"] is True
    assert document["meta"]["winners"][0]["config"]["persistent"] is True
    assert cli.main(["plot", str(tmp_path / "res"), "--out", str(tmp_path / "png")]) == 0
    assert (tmp_path / "png" / path.stem / "tuning-cell-classic.png").exists()


def test_tune_with_an_unwritable_cache_warns_and_still_writes_the_sweep(capsys, tmp_path):
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache directory should be")
    args = [*TINY_TUNE, "--space", "tiny", "--write-cache", "--cache-dir", str(blocked), "--no-plots"]
    with pytest.warns(UserWarning, match="could not write the tuning cache"):
        assert cli.main([*args, "--out", str(tmp_path / "res")]) == 0
    [path] = results.find(tmp_path / "res", "tune")
    [winner] = results.load(path)["meta"]["winners"]
    assert winner["config"] is not None and winner["cache"] is None
    assert f"sweep: {path}" in capsys.readouterr().out


def test_seq_len_takes_several_lengths_for_bench_and_one_for_tune(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["bench", "--seq-len", "5", "7"]).seq_len == [5, 7]
    assert parser.parse_args(["tune", "--seq-len", "5"]).seq_len == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["tune", "--seq-len", "5", "7"])
    capsys.readouterr()
    for command, help_text in (("bench", "sequence lengths"), ("tune", "the one sequence length")):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "--help"])
        assert help_text in " ".join(capsys.readouterr().out.split())


def test_plot_without_results_fails_cleanly(capsys, tmp_path):
    assert cli.main(["plot", str(tmp_path)]) == 1
    assert "no results" in capsys.readouterr().err


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit):
        cli.main(["bench", "--precisions", "fp8"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="only a machine without CUDA needs the interpreter switch")
def test_console_run_without_the_interpreter_variable_switches_it_on(tmp_path):
    """Run as a user would, TRITON_INTERPRET unset: the command must rerun itself under the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "tritongru.cli", "bench", *TINY_BENCH, "--no-plots", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "mean nothing" in done.stdout
    assert results.find(tmp_path, "bench")


def test_roofline_script_reads_a_results_file(tmp_path, monkeypatch, capsys):
    assert cli.main(["bench", *TINY_BENCH, "--no-plots", "--out", str(tmp_path)]) == 0
    [path] = results.find(tmp_path, "bench")
    script = Path(__file__).resolve().parents[1] / "profiling" / "roofline.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(path)])
    runpy.run_path(str(script), run_name="__main__")
    assert "of matmul peak" in capsys.readouterr().out
    assert (path.with_suffix("") / "roofline-fp32-forward.png").exists()
