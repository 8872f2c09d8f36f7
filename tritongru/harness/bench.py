"""The benchmark's run loop: every contender at every point of a grid, checked, timed, written as tidy rows.

Each point of a :class:`~tritongru.harness.grids.Grid` (batch x hidden x sequence length x precision) gets fresh
random inputs and one ``torch.nn.GRU``'s weights, copied into every contender
(:mod:`tritongru.harness.providers`); each contender is then checked against the reference output and timed in
each mode of :data:`~tritongru.harness.grids.MODES` with the harness's one timer
(:func:`tritongru.harness.timing.measure`).

On CUDA, cuDNN runs with ``torch.backends.cudnn.benchmark = True`` and every contender sees the same TF32
setting. Without CUDA the tritongru kernels run through Triton's CPU interpreter: the run is a functional
comparison against torch's CPU GRU and its times mean nothing (``meta["timing"] == "interpreter"``).

FLOPs and bytes follow a simple model, stated in :func:`work`: matrix products only, and the compulsory
traffic (inputs, outputs and weights once). Achieved TFLOP/s and GB/s are reported against peaks measured on
the same device at the start of the run (:func:`~tritongru.harness.timing.measure_peaks`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict

import torch
from torch._functorch import config as functorch_config
from tqdm.auto import tqdm

from tritongru.harness import results, timing
from tritongru.harness.grids import Grid
from tritongru.harness.providers import PEERS, PROVIDERS, Variant, baseline_provider, build, default_providers
from tritongru.precisions import PRECISIONS

Point = tuple[str, int, int, int]
"""``(precision, batch, hidden, seq_len)``: one point of a :class:`~tritongru.harness.grids.Grid`."""

Timings = tuple[float, float, float, float | None]
"""``(median_ms, p20_ms, p80_ms, peak training MB or None)`` of one contender in one mode."""


def work(
    mode: str, *, batch: int, hidden: int, input_size: int, seq_len: int, dtype: torch.dtype
) -> tuple[float, float]:
    """(FLOPs, bytes) of one call in ``mode``.

    FLOPs count the matrix products: ``2 T B 3H (I + H)`` forward; backward twice that (input and weight
    gradients); ``train`` both. Bytes count the compulsory traffic in the storage dtype: ``x`` and the output
    ``[T, B, I + H]`` and the weights ``3H (I + H)`` once per pass; backward reads and writes about twice that.
    """
    flops = 2.0 * seq_len * batch * 3 * hidden * (input_size + hidden)
    data = (seq_len * batch * (input_size + hidden) + 3 * hidden * (input_size + hidden)) * dtype.itemsize
    factor = {"forward": 1, "backward": 2, "train": 3}[mode]
    return flops * factor, float(data * factor)


def run_bench(
    grid: Grid,
    *,
    providers: Sequence[str] | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    seed: int = 0,
    points: Iterable[Point] | None = None,
    on_point: Callable[[dict], None] | None = None,
) -> dict:
    """Measure every provider at every point of ``grid`` and return a results document (``kind="bench"``).

    ``points``: the points of ``grid`` to measure, in that order (default: all, as :meth:`Grid.points` lists
    them); taken one at a time, so a generator can stop the run. A point's inputs depend on its place in
    :meth:`Grid.points`, not on the order. ``on_point(document)``: called after every point with the document of
    every row measured so far, speed-ups included."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    interpreter = not timing.device_events(device)
    keys = tuple(providers or default_providers(device))
    baseline = baseline_provider(device)
    meta = results.environment(device, interpreter=interpreter)
    meta.update(
        grid={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(grid).items()},
        providers=list(keys),
        baseline=baseline,
        cudnn_benchmark=True,
        seed=seed,
        precisions={
            name: {"dtype": str(PRECISIONS[name].dtype), "allow_tf32": PRECISIONS[name].allow_tf32}
            for name in grid.precisions
        },
        peaks=timing.measure_peaks(device, grid.precisions),
        notes=["CPU run: tritongru ran through Triton's interpreter; times are functional, not speed."]
        if interpreter
        else [],
        work_model="flops: 2*T*B*3H*(I+H) per pass; bytes: (T*B*(I+H) + 3H*(I+H)) * itemsize per pass; "
        "backward = 2 passes, train = 3",
    )
    saved_benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    index = {point: place for place, point in enumerate(grid.points())}
    rows: list[dict] = []
    try:
        for point in tqdm(grid.points() if points is None else points, desc="bench", disable=not progress):
            measured = _measure_point(grid, point, keys, device, meta["peaks"], seed=seed * 1_000_003 + index[point])
            add_speedups(measured, baseline)
            rows += measured
            if on_point is not None:
                on_point(results.new_document("bench", meta, list(rows)))
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark
    return results.new_document("bench", meta, rows)


def _measure_point(
    grid: Grid,
    point: Point,
    keys: Sequence[str],
    device: torch.device,
    peaks: dict,
    *,
    seed: int,
) -> list[dict]:
    """The rows of every contender at one point: fresh inputs and weights (seeded by ``seed``), one reference
    per formulation, then each contender checked and timed in every mode of ``grid``."""
    precision, batch, hidden, seq_len = point
    dtype, tf32 = PRECISIONS[precision].dtype, PRECISIONS[precision].allow_tf32
    sizes = dict(dtype=precision, batch=batch, hidden=hidden, input_size=grid.input_size or hidden, seq_len=seq_len)
    rows = []
    with timing.tf32_mode(tf32):
        torch.manual_seed(seed)
        base = torch.nn.GRU(sizes["input_size"], hidden, device=device, dtype=dtype)
        x = torch.randn(seq_len, batch, sizes["input_size"], device=device, dtype=dtype)
        h0 = torch.randn(1, batch, hidden, device=device, dtype=dtype) * 0.5
        grad_out = torch.randn(seq_len, batch, hidden, device=device, dtype=dtype)
        expected = {}
        for key in keys:
            try:
                model, variant = build(key, base, allow_tf32=tf32)
            except LookupError as reason:
                rows += [_row(key, "", mode, sizes, status="skipped", note=str(reason)) for mode in grid.modes]
                continue
            try:
                with torch.no_grad():
                    out, _ = model(x, h0)
                timings = _time_modes(model, x, h0, grad_out, grid.modes, device)
            except Exception as failure:  # an optional peer that fails is recorded; our own failures raise
                if key not in PEERS:
                    raise
                note = f"{type(failure).__name__}: {failure}"
                rows += [_row(key, variant, mode, sizes, status="error", note=note) for mode in grid.modes]
                continue
            oracle = (variant, PROVIDERS[key].variant)
            if oracle not in expected:
                expected[oracle] = _reference(base, x, h0, *oracle)
            error = (out.float() - expected[oracle]).abs().max().item()
            for mode, measured in timings.items():
                rows.append(_timed_row(key, variant, mode, sizes, measured, error, peaks))
    return rows


def _reference(
    base: torch.nn.GRU, x: torch.Tensor, h0: torch.Tensor, formulation: str, variant: Variant
) -> torch.Tensor:
    """The float32 reference output ``[T, B, H]`` of ``formulation`` and research ``variant`` (the plain GRU by
    default) on ``base``'s weights."""
    with torch.no_grad():
        weights = [w.float() for w in variant.weights(base)]
        output, _ = variant.reference(x.float(), h0[0].float(), *weights, variant=formulation, **variant.options())
    return output


def _row(key: str, variant: str, mode: str, sizes: dict, *, status: str = "ok", note: str = "") -> dict:
    row = dict.fromkeys(results.BENCH_FIELDS)
    row.update(provider=key, variant=variant, mode=mode, **sizes, status=status, note=note)
    return row


def _timed_row(key: str, variant: str, mode: str, sizes: dict, measured: Timings, error: float, peaks: dict) -> dict:
    median, p20, p80, peak = measured
    flops, data = work(
        mode,
        batch=sizes["batch"],
        hidden=sizes["hidden"],
        input_size=sizes["input_size"],
        seq_len=sizes["seq_len"],
        dtype=PRECISIONS[sizes["dtype"]].dtype,
    )
    seconds = median * 1e-3
    row = _row(key, variant, mode, sizes)
    row.update(
        median_ms=median,
        p20_ms=p20,
        p80_ms=p80,
        us_per_step=median * 1e3 / sizes["seq_len"],
        tokens_per_s=sizes["batch"] * sizes["seq_len"] / seconds,
        flops=flops,
        bytes=data,
        tflops=flops / seconds / 1e12,
        gbps=data / seconds / 1e9,
        peak_mem_mb=peak,
        max_abs_err=error,
    )
    row["tflops_frac_of_peak"] = row["tflops"] / peaks["tflops"][sizes["dtype"]]
    row["gbps_frac_of_peak"] = row["gbps"] / peaks["gbps"]
    return row


def _time_modes(
    model: torch.nn.Module,
    x: torch.Tensor,
    h0: torch.Tensor,
    grad_out: torch.Tensor,
    modes: Sequence[str],
    device: torch.device,
) -> dict[str, Timings]:
    """:data:`Timings` per mode.

    Backward-only timing replays one graph (``retain_graph=True``); graphs compiled by ``torch.compile`` donate
    their saved buffers to the backward unless told not to, which forbids that, hence the config patch."""
    params = [p for p in model.parameters() if p.requires_grad]
    with functorch_config.patch(donated_buffer=False):
        return {mode: _time_mode(model, x, h0, grad_out, mode, params, device) for mode in modes}


def _time_mode(
    model: torch.nn.Module,
    x: torch.Tensor,
    h0: torch.Tensor,
    grad_out: torch.Tensor,
    mode: str,
    params: list[torch.Tensor],
    device: torch.device,
) -> Timings:
    if mode == "forward":

        def forward() -> object:
            with torch.no_grad():
                return model(x, h0)

        return (*timing.measure(forward, device=device), None)
    x.requires_grad_(True)
    if mode == "train":

        def fn() -> object:
            output, _ = model(x, h0)
            torch.autograd.backward(output, grad_out)
    else:
        output, _ = model(x, h0)

        def fn(output: torch.Tensor = output) -> object:
            torch.autograd.backward(output, grad_out, retain_graph=True)

    peak = None
    if device.type == "cuda" and mode == "train":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    measured = timing.measure(fn, device=device, grad_to_none=[x, *params])
    x.requires_grad_(False)
    x.grad = None
    return (*measured, peak)


def add_speedups(rows: list[dict], baseline: str) -> None:
    """Set each timed row's ``speedup_vs_baseline``: the baseline's median over its own, at the same point."""
    point = lambda r: (r["mode"], r["dtype"], r["batch"], r["hidden"], r["input_size"], r["seq_len"])
    reference = {point(r): r["median_ms"] for r in rows if r["provider"] == baseline and r["status"] == "ok"}
    for row in rows:
        base = reference.get(point(row))
        if row["status"] == "ok" and base is not None:
            row["speedup_vs_baseline"] = base / row["median_ms"]
