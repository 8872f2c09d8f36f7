"""Plots drawn from results files that a real run on the test device wrote (no hand-typed numbers)."""

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from tritongru.environment import device_name
from tritongru.harness import bench, plots, providers, results, timing, tuning
from tritongru.harness.grids import Grid
from tritongru.harness.providers import PROVIDERS


@pytest.fixture(scope="module")
def files(tmp_path_factory, device):
    """A bench file and a tuning sweep file, written by tiny runs on the test device."""
    root = tmp_path_factory.mktemp("results")
    grid = Grid(batch=(1, 3), hidden=(16, 32), seq_len=(2, 3), precisions=("fp32",), modes=("forward", "train"))
    bench_path = results.write(bench.run_bench(grid, device=device, progress=False), root)
    sweep = tuning.sweep(
        kernels=["forward"],
        variants=["cudnn"],
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
    return bench_path, results.write(sweep, root)


def test_each_figure_draws_from_a_results_file(files, device):
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
        title = figure._suptitle.get_text()
        if timing.device_events(device):
            assert device_name(device) in title and "interpreter" not in title
        else:
            assert "CPU interpreter: times mean nothing" in title
        assert any(ax.has_data() for ax in figure.axes)


def test_heatmap_cells_are_the_recorded_speedups(files):
    document = results.load(files[0])
    figure = plots.speedup_heatmap(document, precision="fp32", mode="forward", seq_len=3)
    shown = figure.axes[0].images[0].get_array()
    rows = plots.select(document["rows"], provider="tritongru-cudnn", mode="forward", seq_len=3)
    expected = {(r["batch"], r["hidden"]): r["speedup_vs_baseline"] for r in rows}
    for i, batch in enumerate((1, 3)):
        for j, hidden in enumerate((16, 32)):
            assert shown[i, j] == pytest.approx(expected[(batch, hidden)])


def luminance(colour) -> float:
    red, green, blue = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(colour))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(a, b) -> float:
    """The WCAG contrast ratio of two colours (1: none, 21: black on white)."""
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("kind", ["tuning", "speedup"])
def test_cell_annotations_read_on_their_cells(files, kind):
    """Every number printed on a heatmap cell contrasts with the cell's colour, dark cells included."""
    if kind == "tuning":
        figure = plots.tuning_landscape(results.load(files[1]), kernel="forward", variant="cudnn")
    else:
        figure = plots.speedup_heatmap(results.load(files[0]), precision="fp32", mode="forward")
    ax = figure.axes[0]
    image = ax.images[0]
    values = image.get_array()
    annotated = 0
    for text in ax.texts:
        x, y = text.get_position()
        value = values[round(y), round(x)]
        if np.ma.is_masked(value) or np.isnan(value):
            continue
        assert contrast(text.get_color(), image.cmap(image.norm(value))) >= 3, (text.get_text(), text.get_color())
        annotated += 1
    assert annotated == np.count_nonzero(~np.isnan(np.ma.filled(values, np.nan)))


def test_annotation_ink_is_white_on_dark_cells_and_black_on_light_ones():
    ax = Figure().add_subplot()
    image = ax.imshow([[0.0, 1.0]], cmap="viridis_r")
    assert plots._ink(image, 1.0) == "white", "viridis_r is darkest at its maximum"
    assert plots._ink(image, 0.0) == "black"


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


def test_only_timed_rows_are_plotted(files, device):
    document = results.load(files[0])
    timed_row = next(r for r in document["rows"] if r["provider"] == "tritongru-cudnn" and r["mode"] == "forward")
    document["rows"].append({**timed_row, "provider": "flashrnn", "status": "skipped", "median_ms": None})
    document["rows"].append({**timed_row, "hidden": 24, "status": "error", "median_ms": None, "us_per_step": None})
    assert all(row["status"] == "ok" for row in plots.select(document["rows"]))
    figure = plots.us_per_step_vs_hidden(document, precision="fp32", mode="forward")
    drawn = {PROVIDERS[key].label for key in providers.default_providers(device)}
    assert len(figure.axes) == 2, "one panel per batch size"
    for ax in figure.axes:
        lines = ax.get_lines()
        assert {line.get_label() for line in lines} == drawn, "the skipped contender draws no line"
        for line in lines:
            assert list(line.get_xdata()) == [16, 32], "the failed row at hidden 24 draws no point"
