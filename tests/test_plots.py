"""Plots drawn from results files that a real CPU run wrote (no hand-typed numbers)."""

import pytest
import torch
from matplotlib.figure import Figure

from tritongru import bench, plots, results, tuning

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A bench file and a tuning sweep file, written by tiny runs through the CPU interpreter."""
    root = tmp_path_factory.mktemp("results")
    grid = bench.Grid(batch=(1, 3), hidden=(16, 32), seq_len=(2, 3), precisions=("fp32",), modes=("forward", "train"))
    bench_path = results.write(bench.run_bench(grid, device=CPU, progress=False), root)
    sweep = tuning.sweep(
        kernels=["forward"], variants=["cudnn"], precisions=["fp32"], batches=[2], hiddens=[20], input_size=None,
        seq_len=2, device=CPU, tiny=True, progress=False,
    )
    return bench_path, results.write(sweep, root)


def test_each_figure_draws_from_a_results_file(files):
    document = results.load(files[0])
    figures = [
        plots.speedup_heatmap(document, precision="fp32", mode="forward"),
        plots.us_per_step_vs_hidden(document, precision="fp32", mode="train"),
        plots.throughput_vs_seq_len(document, precision="fp32", mode="forward"),
        plots.roofline(document, precision="fp32", mode="train"),
        plots.classic_vs_cudnn(document, precision="fp32", mode="forward"),
        plots.tuning_landscape(results.load(files[1]), kernel="forward", variant="cudnn"),
    ]
    for figure in figures:
        assert isinstance(figure, Figure)
        assert "CPU interpreter: times mean nothing" in figure._suptitle.get_text()
        assert any(ax.has_data() for ax in figure.axes)


def test_heatmap_cells_are_the_recorded_speedups(files):
    document = results.load(files[0])
    figure = plots.speedup_heatmap(document, precision="fp32", mode="forward", seq_len=3)
    shown = figure.axes[0].images[0].get_array()
    rows = plots.select(document["rows"], provider="tritongru-cudnn", mode="forward", seq_len=3)
    expected = {(r["batch"], r["hidden"]): r["speedup_vs_baseline"] for r in rows}
    for (i, batch) in enumerate((1, 3)):
        for (j, hidden) in enumerate((16, 32)):
            assert shown[i, j] == pytest.approx(expected[(batch, hidden)])


def test_draw_all_writes_pngs(files, tmp_path):
    written = plots.draw_all([results.load(path) for path in files], tmp_path)
    names = {path.name for path in written}
    for mode in ("forward", "train"):
        for kind in ("us-per-step", "throughput", "roofline", "classic-vs-cudnn"):
            assert f"{kind}-fp32-{mode}.png" in names
        assert {f"speedup-fp32-{mode}-T2.png", f"speedup-fp32-{mode}-T3.png"} <= names, "one heatmap per T"
    assert "tuning-forward-cudnn.png" in names
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_only_timed_rows_are_plotted(files):
    document = results.load(files[0])
    document["rows"].append({**document["rows"][0], "provider": "flashrnn", "status": "skipped", "median_ms": None})
    assert all(row["status"] == "ok" for row in plots.select(document["rows"]))
    plots.us_per_step_vs_hidden(document, precision="fp32", mode="forward")
