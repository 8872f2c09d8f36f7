"""Figures drawn from results files only (never from numbers typed in).

Every function takes a results document (:func:`tritongru.harness.results.load`) and returns a matplotlib
``Figure`` built without pyplot, so nothing here touches a global backend: figures render with Agg when
saved, and display inline in notebooks. Colours and labels come from :mod:`tritongru.harness.providers`.

Each title carries the device and, for a CPU run, the reminder that interpreter times mean nothing; results
measured before the latest change to ``kernels/`` are marked STALE.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.ticker import ScalarFormatter

from tritongru.harness import results
from tritongru.harness.providers import PROVIDERS

_VARIANT_PROVIDERS = ("tritongru-cudnn", "tritongru-classic")


def select(rows: Iterable[dict], **filters: object) -> list[dict]:
    """Timed rows (``status == "ok"``) whose fields equal every ``filters`` value."""
    return [r for r in rows if r.get("status") == "ok" and all(r.get(key) == value for key, value in filters.items())]


def _values(rows: Iterable[dict], key: str) -> list:
    return sorted({r[key] for r in rows if r.get(key) is not None})


def caption(document: dict) -> str:
    """The device line under every title, with the interpreter and staleness caveats."""
    meta = document["meta"]
    text = meta["gpu"]
    if meta["timing"] == "interpreter":
        text += " - CPU interpreter: times mean nothing"
    if results.is_stale(document):
        text += " - STALE (kernels/ changed since)"
    return text


def _figure(document: dict, title: str, ncols: int = 1, width: float = 6.4) -> tuple[Figure, list]:
    fig = Figure(figsize=(max(6.4, width * ncols), 4.8), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    fig.suptitle(f"{title}\n{caption(document)}", fontsize=10)
    return fig, axes


def speedup_heatmap(
    document: dict,
    *,
    precision: str,
    mode: str,
    provider: str = "tritongru-cudnn",
    seq_len: int | None = None,
) -> Figure:
    """Speed-up of ``provider`` over the baseline on the batch x hidden grid (at ``seq_len``, default the
    longest measured). Cells > 1: ``provider`` is faster."""
    rows = select(document["rows"], provider=provider, dtype=precision, mode=mode)
    seq_len = seq_len or max(_values(rows, "seq_len"), default=None)
    rows = [r for r in rows if r["seq_len"] == seq_len and r["speedup_vs_baseline"] is not None]
    batches, hiddens = _values(rows, "batch"), _values(rows, "hidden")
    grid = np.full((len(batches), len(hiddens)), np.nan)
    for r in rows:
        grid[batches.index(r["batch"]), hiddens.index(r["hidden"])] = r["speedup_vs_baseline"]
    baseline = document["meta"].get("baseline", "cudnn")
    fig, (ax,) = _figure(
        document,
        f"{PROVIDERS[provider].label} vs {PROVIDERS[baseline].label}: speed-up, {precision} {mode}, T={seq_len}",
    )
    if rows:
        low, high = np.nanmin(grid), np.nanmax(grid)
        norm = TwoSlopeNorm(vcenter=1.0, vmin=min(low, 0.99), vmax=max(high, 1.01))
        image = ax.imshow(grid, cmap="RdBu", norm=norm, origin="lower", aspect="auto")
        fig.colorbar(image, ax=ax, label="speed-up (baseline time / time)")
        for (i, j), value in np.ndenumerate(grid):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8, color=_ink(image, value))
    ax.set_xticks(range(len(hiddens)), [str(h) for h in hiddens])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    ax.set_xlabel("hidden size")
    ax.set_ylabel("batch")
    return fig


def us_per_step_vs_hidden(document: dict, *, precision: str, mode: str, seq_len: int | None = None) -> Figure:
    """µs per time step against hidden size, one panel per batch size, one line per provider."""
    rows = select(document["rows"], dtype=precision, mode=mode)
    seq_len = seq_len or max(_values(rows, "seq_len"), default=None)
    rows = [r for r in rows if r["seq_len"] == seq_len]
    batches = _values(rows, "batch") or [None]
    fig, axes = _figure(document, f"µs per step, {precision} {mode}, T={seq_len}", ncols=len(batches), width=4.5)
    for ax, batch in zip(axes, batches, strict=True):
        for provider in _providers(rows):
            line = sorted(select(rows, provider=provider, batch=batch), key=lambda r: r["hidden"])
            _line(ax, provider, [r["hidden"] for r in line], [r["us_per_step"] for r in line])
        ax.set_title(f"batch {batch}", fontsize=9)
        ax.set_xlabel("hidden size")
        ax.set_ylabel("µs / step")
        _log_axes(ax, x=True, y=True)
    axes[0].legend(fontsize=7)
    return fig


def throughput_vs_seq_len(document: dict, *, precision: str, mode: str, batch: int | None = None) -> Figure:
    """Tokens per second against sequence length, one panel per hidden size (at ``batch``, default largest)."""
    rows = select(document["rows"], dtype=precision, mode=mode)
    batch = batch or max(_values(rows, "batch"), default=None)
    rows = [r for r in rows if r["batch"] == batch]
    hiddens = _values(rows, "hidden") or [None]
    fig, axes = _figure(
        document,
        f"throughput, {precision} {mode}, batch {batch}",
        ncols=len(hiddens),
        width=4.5,
    )
    for ax, hidden in zip(axes, hiddens, strict=True):
        for provider in _providers(rows):
            line = sorted(select(rows, provider=provider, hidden=hidden), key=lambda r: r["seq_len"])
            _line(ax, provider, [r["seq_len"] for r in line], [r["tokens_per_s"] for r in line])
        ax.set_title(f"hidden {hidden}", fontsize=9)
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("tokens / s")
        _log_axes(ax, x=True, y=True)
    axes[0].legend(fontsize=7)
    return fig


def roofline(document: dict, *, precision: str, mode: str) -> Figure:
    """Achieved TFLOP/s against arithmetic intensity (FLOPs per byte of the work model), under the roofs of
    the measured matmul peak and copy bandwidth."""
    rows = select(document["rows"], dtype=precision, mode=mode)
    peaks = document["meta"]["peaks"]
    peak_tflops, peak_gbps = peaks["tflops"][precision], peaks["gbps"]
    fig, (ax,) = _figure(document, f"roofline, {precision} {mode}")
    intensities = [r["flops"] / r["bytes"] for r in rows]
    if intensities:
        span = np.geomspace(min(intensities) / 2, max(intensities) * 2, 200)
        ax.plot(
            span,
            np.minimum(peak_tflops, span * peak_gbps / 1e3),
            color="black",
            linewidth=1,
            label=f"roof: {peak_tflops:.3g} TFLOP/s, {peak_gbps:.3g} GB/s",
        )
    for provider in _providers(rows):
        subset = select(rows, provider=provider)
        style = PROVIDERS[provider]
        ax.scatter(
            [r["flops"] / r["bytes"] for r in subset],
            [r["tflops"] for r in subset],
            s=14,
            color=style.color,
            marker=style.marker,
            label=style.label,
        )
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    return fig


def classic_vs_cudnn(document: dict, *, precision: str, mode: str, seq_len: int | None = None) -> Figure:
    """The cost of the classic form: its time over the cudnn form's, against hidden size, per batch size.
    Above 1, applying the reset before the hidden product costs that factor."""
    rows = select(document["rows"], dtype=precision, mode=mode)
    seq_len = seq_len or max(_values(rows, "seq_len"), default=None)
    rows = [r for r in rows if r["seq_len"] == seq_len]
    fig, (ax,) = _figure(document, f"classic / cudnn form time, {precision} {mode}, T={seq_len}")
    times = {(r["provider"], r["batch"], r["hidden"]): r["median_ms"] for r in rows}
    colours = iter(["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d"] * 4)
    for batch in _values(rows, "batch"):
        hiddens = [h for h in _values(rows, "hidden") if all((p, batch, h) in times for p in _VARIANT_PROVIDERS)]
        ratios = [times[("tritongru-classic", batch, h)] / times[("tritongru-cudnn", batch, h)] for h in hiddens]
        ax.plot(hiddens, ratios, marker="o", color=next(colours), label=f"batch {batch}")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xlabel("hidden size")
    ax.set_ylabel("time(classic) / time(cudnn)")
    _log_axes(ax, x=True, y=False)
    ax.legend(fontsize=7)
    return fig


def tuning_landscape(
    document: dict,
    *,
    kernel: str,
    variant: str,
    precision: str | None = None,
    batch: int | None = None,
    hidden: int | None = None,
) -> Figure:
    """Best time over the block_h x block_k grid of one tuning sweep (the best over the other parameters in
    each cell); pruned-only cells are marked ``p``, rejected ones ``x``, the winner's cell ``*``."""
    rows = [r for r in document["rows"] if r["kernel"] == kernel and r["variant"] == variant]
    precision = precision or (_values(rows, "dtype") or [None])[0]
    batch = batch or (_values(rows, "batch") or [None])[0]
    hidden = hidden or (_values(rows, "hidden") or [None])[-1]
    rows = [r for r in rows if (r["dtype"], r["batch"], r["hidden"]) == (precision, batch, hidden)]
    block_h, block_k = _values(rows, "block_h"), _values(rows, "block_k")
    grid = np.full((len(block_k), len(block_h)), np.nan)
    marks: dict[tuple[int, int], str] = {}
    for r in rows:
        cell = (block_k.index(r["block_k"]), block_h.index(r["block_h"]))
        if r["status"] == "ok":
            grid[cell] = np.fmin(grid[cell], r["median_ms"])
            if r["winner"]:
                marks[cell] = "*"
        elif r["status"] in ("rejected", "error"):
            marks.setdefault(cell, "x")
        else:
            marks.setdefault(cell, "p")
    fig, (ax,) = _figure(
        document,
        f"tuning landscape: {kernel} ({variant}), {precision}, batch {batch}, hidden {hidden}",
    )
    image = None
    if not np.isnan(grid).all():
        image = ax.imshow(grid, cmap="viridis_r", origin="lower", aspect="auto")
        fig.colorbar(image, ax=ax, label="best median ms in cell")
    for (i, j), value in np.ndenumerate(grid):
        mark = marks.get((i, j), "")
        if math.isnan(value):
            ax.text(j, i, mark, ha="center", va="center", fontsize=8, color="black")
        else:
            text = f"{value:.3g}{'*' if mark == '*' else ''}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color=_ink(image, value))
    ax.set_xticks(range(len(block_h)), [str(b) for b in block_h])
    ax.set_yticks(range(len(block_k)), [str(b) for b in block_k])
    ax.set_xlabel("block_h")
    ax.set_ylabel("block_k")
    return fig


def _ink(image: AxesImage, value: float) -> str:
    """The annotation colour that reads on the cell ``value`` is drawn in: white on dark cells, black on light.

    Lightness is the relative luminance of the cell's colour (sRGB weights on linearised channels)."""
    red, green, blue, _ = image.cmap(image.norm(value))
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "white" if luminance < 0.18 else "black"


def _providers(rows: Iterable[dict]) -> list[str]:
    present = {r["provider"] for r in rows}
    return [key for key in PROVIDERS if key in present]


def _line(ax, provider: str, xs: list, ys: list) -> None:
    style = PROVIDERS[provider]
    ax.plot(xs, ys, marker=style.marker, color=style.color, label=style.label)


def _log_axes(ax, *, x: bool, y: bool) -> None:
    if x:
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    if y:
        ax.set_yscale("log")


def figures(documents: Iterable[dict]) -> list[tuple[str, Figure]]:
    """``(name, figure)`` for every figure the documents support: the tuning landscape of each tuned kernel;
    per precision and mode of a bench, speed-up maps, µs per step, throughput, roofline, classic vs cudnn."""
    drawn: list[tuple[str, Figure]] = []
    for document in documents:
        rows = document["rows"]
        if document["kind"] == "tune":
            for kernel, variant in sorted({(r["kernel"], r["variant"]) for r in rows}):
                drawn.append((f"tuning-{kernel}-{variant}", tuning_landscape(document, kernel=kernel, variant=variant)))
            continue
        timed = select(rows)
        for precision in _values(timed, "dtype"):
            for mode in _values(select(timed, dtype=precision), "mode"):
                stem = f"{precision}-{mode}"
                for seq_len in _values(
                    select(timed, provider="tritongru-cudnn", dtype=precision, mode=mode), "seq_len"
                ):
                    figure = speedup_heatmap(document, precision=precision, mode=mode, seq_len=seq_len)
                    drawn.append((f"speedup-{stem}-T{seq_len}", figure))
                drawn.append((f"us-per-step-{stem}", us_per_step_vs_hidden(document, precision=precision, mode=mode)))
                drawn.append((f"throughput-{stem}", throughput_vs_seq_len(document, precision=precision, mode=mode)))
                drawn.append((f"roofline-{stem}", roofline(document, precision=precision, mode=mode)))
                if all(select(timed, provider=p, dtype=precision, mode=mode) for p in _VARIANT_PROVIDERS):
                    drawn.append(
                        (f"classic-vs-cudnn-{stem}", classic_vs_cudnn(document, precision=precision, mode=mode))
                    )
    return drawn


def draw_all(documents: Iterable[dict], out_dir: Path | str) -> list[Path]:
    """Draw every figure the documents support (:func:`figures`) into ``out_dir`` as PNGs; returns the files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, figure in figures(documents):
        path = out / f"{stem}.png"
        figure.savefig(path, dpi=110)
        written.append(path)
    return written


def draw_pdf(documents: Iterable[dict], path: Path | str) -> int:
    """Draw every figure the documents support (:func:`figures`) into one PDF, a page each, written
    atomically; returns the number of pages."""
    from matplotlib.backends.backend_pdf import PdfPages

    path = Path(path)
    drawn = figures(documents)
    partial = path.with_name(path.name + ".partial")
    with PdfPages(partial) as pdf:
        for _, figure in drawn:
            pdf.savefig(figure)
    partial.replace(path)
    return len(drawn)
