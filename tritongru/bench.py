"""The benchmark library: contenders, modes, grids, timing and metrics, written as tidy result rows.

Each point of a :class:`Grid` (batch x hidden x sequence length x precision) gets fresh random inputs and one
``torch.nn.GRU``'s weights, copied into every contender; each contender is then checked against the
reference output and timed in each mode:

- ``"forward"``: inference, under ``torch.no_grad()``;
- ``"train"``: forward and backward (gradients of the input and every weight);
- ``"backward"``: backward only, through a graph built once and retained.

On CUDA, times come from ``triton.testing.do_bench`` (quantiles 0.5/0.2/0.8 after warm-up), cuDNN runs with
``torch.backends.cudnn.benchmark = True``, and every contender sees the same TF32 setting. Without CUDA the
tritongru kernels run through Triton's CPU interpreter: the run is a functional comparison against torch's
CPU GRU and its times mean nothing (``meta["timing"] == "interpreter"``).

FLOPs and bytes follow a simple model, stated in :func:`work`: matrix products only, and the compulsory
traffic (inputs, outputs and weights once). Achieved TFLOP/s and GB/s are reported against peaks measured on
the same device at the start of the run (:func:`measure_peaks`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass

import torch
from torch._functorch import config as functorch_config
from tqdm.auto import tqdm

from tritongru import results
from tritongru.environment import interpreting
from tritongru.providers import PEERS, importable_peers
from tritongru.reference import gru_layer_ref

PRECISIONS: dict[str, tuple[torch.dtype, bool]] = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}
"""Precision name -> (storage dtype, TF32 allowed in float32 products)."""

MODES = ("forward", "train", "backward")


@dataclass(frozen=True)
class Grid:
    """The points to measure. ``input_size=None`` uses ``input_size = hidden``."""

    batch: tuple[int, ...]
    hidden: tuple[int, ...]
    seq_len: tuple[int, ...]
    precisions: tuple[str, ...]
    modes: tuple[str, ...]
    input_size: int | None = None

    def points(self) -> list[tuple[str, int, int, int]]:
        """``(precision, batch, hidden, seq_len)`` for every point, precision outermost."""
        return [(p, b, h, t) for p in self.precisions for h in self.hidden for b in self.batch for t in self.seq_len]


GRIDS: dict[str, Grid] = {
    "full": Grid(
        batch=(1, 8, 16, 32, 64, 256),
        hidden=(128, 256, 512, 768, 1024, 2048),
        seq_len=(64, 256, 1024),
        precisions=("fp32", "tf32", "bf16", "fp16"),
        modes=MODES,
    ),
    "quick": Grid(
        batch=(1, 16, 64, 256),
        hidden=(256, 1024),
        seq_len=(256,),
        precisions=("fp32", "bf16"),
        modes=("forward", "train"),
    ),
    "cpu": Grid(batch=(2,), hidden=(16, 32), seq_len=(4,), precisions=("fp32",), modes=("forward", "train")),
}
"""``full``: the issue's grid (hours). ``quick``: the default on a GPU (minutes). ``cpu``: the interpreter's
functional run (seconds to minutes)."""


def baseline_provider(device: torch.device) -> str:
    """The contender speed-ups are measured against: cuDNN on CUDA, torch's own GRU on the CPU."""
    return "cudnn" if device.type == "cuda" else "torch-cpu"


def default_providers(device: torch.device) -> tuple[str, ...]:
    """tritongru in both forms, the baseline and the eager cell loop (``compiled-ref`` and the peers are
    opt-in: compiling an unrolled loop takes minutes per shape)."""
    return ("tritongru-cudnn", "tritongru-classic", baseline_provider(device), "eager-cell")


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


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Set torch's TF32 switches for matmul and cuDNN (restored on exit)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def measure(
    fn: Callable[[], object], *, device: torch.device, grad_to_none: Sequence[torch.Tensor] = ()
) -> tuple[float, float, float]:
    """(median, p20, p80) in ms: device events over repetitions after warm-up on CUDA; one wall-clock call
    under the CPU interpreter (a functional check, not a measurement)."""
    if device.type == "cuda" and not interpreting():
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(
            fn,
            warmup=25,
            rep=100,
            quantiles=[0.5, 0.2, 0.8],
            grad_to_none=list(grad_to_none) or None,
        )
        return median, p20, p80
    for tensor in grad_to_none:
        tensor.grad = None
    start = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - start) * 1e3
    return elapsed, elapsed, elapsed


def measure_peaks(device: torch.device, precisions: Sequence[str]) -> dict:
    """Measured peaks on ``device``: dense matmul TFLOP/s per precision and copy bandwidth in GB/s.

    On the CPU these are wall-clock numbers of small problems, kept only so that every results file has the
    same fields."""
    cuda = device.type == "cuda"
    n = 8192 if cuda else 256
    tflops = {}
    for name in precisions:
        dtype, tf32 = PRECISIONS[name]
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with tf32_mode(tf32):
            median, _, _ = measure(lambda a=a, b=b: a @ b, device=device)
        tflops[name] = 2 * n**3 / (median * 1e-3) / 1e12
    elements = (1 << 28) if cuda else (1 << 22)
    source = torch.randn(elements, device=device)
    target = torch.empty_like(source)
    median, _, _ = measure(lambda: target.copy_(source), device=device)
    gbps = 2 * elements * source.element_size() / (median * 1e-3) / 1e9
    return {"tflops": tflops, "gbps": gbps, "matmul_n": n, "copy_bytes": elements * source.element_size()}


class _EagerCellLoop(torch.nn.Module):
    """``torch.nn.GRUCell`` stepped in a Python loop: what a model that owns its loop pays."""

    def __init__(self, gru: torch.nn.GRU) -> None:
        super().__init__()
        self.cell = torch.nn.GRUCell(
            gru.input_size,
            gru.hidden_size,
            device=gru.weight_ih_l0.device,
            dtype=gru.weight_ih_l0.dtype,
        )
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(gru, f"{name}_l0"))

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, outputs = h0[0], []
        for step in x:
            h = self.cell(step, h)
            outputs.append(h)
        return torch.stack(outputs), h[None]


class _TorchRLGRU(torch.nn.Module):
    """TorchRL's Triton GRU (what its ``GRUModule`` runs with ``recurrent_backend="triton"``), called through
    ``torchrl.modules.tensordict_module._rnn_triton.gru_triton`` on the GRU's own weights. It takes
    batch-major float32 inputs and a per-step reset state; here only step 0 resets, to ``h0``."""

    def __init__(self, gru: torch.nn.GRU, *, allow_tf32: bool) -> None:
        super().__init__()
        if gru.weight_ih_l0.dtype != torch.float32:
            raise LookupError("torchrl's Triton GRU takes float32 inputs and weights only")
        from torchrl.modules.tensordict_module._rnn_triton import gru_triton

        self.gru, self.kernel, self.precision = gru, gru_triton, "tf32" if allow_tf32 else "ieee"

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        steps, batch, hidden = x.shape[0], x.shape[1], g.hidden_size
        states = torch.zeros(batch, steps, hidden, device=x.device, dtype=x.dtype)
        states[:, 0] = h0[0]
        is_init = torch.zeros(batch, steps, device=x.device, dtype=torch.bool)
        is_init[:, 0] = True
        output, h_n = self.kernel(
            x.transpose(0, 1).contiguous(),
            states,
            g.weight_ih_l0,
            g.weight_hh_l0,
            g.bias_ih_l0,
            g.bias_hh_l0,
            is_init,
            torch.float32,
            input_precision=self.precision,
        )
        return output.transpose(0, 1), h_n[None]


class _FlashRNNGRU(torch.nn.Module):
    """FlashRNN's fused CUDA GRU on the GRU's own weights, mapped to FlashRNN's layout (one head):
    ``Wx = x W_ih^T`` as ``[B, T, 3 (r, z, n), 1, H]``; ``R = [W_hn; W_hr; W_hz]`` as ``[3, 1, H, H]``;
    ``b = [b_hn, b_ir + b_hr, b_iz + b_hz, b_in]`` as ``[4, 1, H]``. The mapping was checked against
    ``torch.nn.GRU`` with FlashRNN's pure-PyTorch ``vanilla`` backend."""

    def __init__(self, gru: torch.nn.GRU, *, backend: str = "cuda_fused") -> None:
        super().__init__()
        from flashrnn import flashrnn

        self.gru, self.kernel, self.backend = gru, flashrnn, backend
        self.dtype = str(gru.weight_ih_l0.dtype).removeprefix("torch.")

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        steps, batch, hidden = x.shape[0], x.shape[1], g.hidden_size
        w_hr, w_hz, w_hn = g.weight_hh_l0.chunk(3)
        b_ir, b_iz, b_in = g.bias_ih_l0.chunk(3)
        b_hr, b_hz, b_hn = g.bias_hh_l0.chunk(3)
        wx = torch.nn.functional.linear(x, g.weight_ih_l0).view(steps, batch, 3, 1, hidden).transpose(0, 1)
        recurrent = torch.stack([w_hn, w_hr, w_hz])[:, None]
        bias = torch.stack([b_hn, b_ir + b_hr, b_iz + b_hz, b_in])[:, None]
        states = h0[0][None, :, None, None, :]
        output, last = self.kernel(
            wx,
            recurrent,
            bias,
            states=states,
            function="gru",
            backend=self.backend,
            dtype=self.dtype,
        )
        return output[0, :, :, 0].transpose(0, 1), last[0, :, -1, 0][None]


class _CompiledReference(torch.nn.Module):
    """``torch.compile`` of the plain-PyTorch reference (cudnn form), on the GRU's own parameters."""

    def __init__(self, gru: torch.nn.GRU) -> None:
        super().__init__()
        self.gru = gru
        self.layer = torch.compile(gru_layer_ref)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        output, h_n = self.layer(x, h0[0], g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        return output, h_n[None]


def build(provider: str, base: torch.nn.GRU, *, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    """The contender ``provider`` holding ``base``'s weights, and the formulation it computes.

    Raises ``LookupError`` (with the reason) for a contender that cannot run here."""
    import tritongru

    if provider in ("tritongru-cudnn", "tritongru-classic"):
        variant = provider.removeprefix("tritongru-")
        weight = base.weight_ih_l0
        model = tritongru.GRU(
            base.input_size,
            base.hidden_size,
            device=weight.device,
            dtype=weight.dtype,
            variant=variant,
            allow_tf32=allow_tf32,
        )
        model.load_state_dict(base.state_dict())
        return model, variant
    if provider in ("cudnn", "torch-cpu"):
        wanted = "cuda" if provider == "cudnn" else "cpu"
        if base.weight_ih_l0.device.type != wanted:
            raise LookupError(f"{provider} runs on {wanted} only")
        return base, "cudnn"
    if provider == "eager-cell":
        return _EagerCellLoop(base), "cudnn"
    if provider == "compiled-ref":
        return _CompiledReference(base), "cudnn"
    if provider in PEERS:
        if not importable_peers()[provider]:
            raise LookupError(f"{provider} is not installed")
        if base.weight_ih_l0.device.type != "cuda":
            raise LookupError(f"{provider} runs on CUDA only")
        if provider == "torchrl":
            return _TorchRLGRU(base, allow_tf32=allow_tf32), "cudnn"
        if provider == "flashrnn":
            return _FlashRNNGRU(base), "cudnn"
        raise LookupError(f"{provider} ships no GRU operator (none in FlagGems 5.0.2, the latest checked)")
    raise LookupError(f"unknown provider {provider!r}")


def _row(
    provider: str, variant: str, mode: str, precision: str, batch: int, hidden: int, input_size: int, seq_len: int
) -> dict:
    row = dict.fromkeys(results.BENCH_FIELDS)
    row.update(
        provider=provider,
        variant=variant,
        mode=mode,
        dtype=precision,
        batch=batch,
        hidden=hidden,
        input_size=input_size,
        seq_len=seq_len,
        status="ok",
        note="",
    )
    return row


def _time_modes(
    model: torch.nn.Module,
    x: torch.Tensor,
    h0: torch.Tensor,
    grad_out: torch.Tensor,
    modes: Sequence[str],
    device: torch.device,
) -> dict[str, tuple[float, float, float, float | None]]:
    """(median, p20, p80, peak training MB) per mode.

    Backward-only timing replays one graph (``retain_graph=True``); graphs compiled by ``torch.compile`` donate
    their saved buffers to the backward unless told not to, which forbids that, hence the config patch."""
    params = [p for p in model.parameters() if p.requires_grad]
    timings = {}
    with functorch_config.patch(donated_buffer=False):
        for mode in modes:
            timings[mode] = _time_mode(model, x, h0, grad_out, mode, params, device)
    return timings


def _time_mode(
    model: torch.nn.Module,
    x: torch.Tensor,
    h0: torch.Tensor,
    grad_out: torch.Tensor,
    mode: str,
    params: list[torch.Tensor],
    device: torch.device,
) -> tuple[float, float, float, float | None]:
    if mode == "forward":

        def forward() -> object:
            with torch.no_grad():
                return model(x, h0)

        return (*measure(forward, device=device), None)
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
    timing = measure(fn, device=device, grad_to_none=[x, *params])
    x.requires_grad_(False)
    x.grad = None
    return (*timing, peak)


def run_bench(
    grid: Grid,
    *,
    providers: Sequence[str] | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    seed: int = 0,
) -> dict:
    """Measure every provider at every point of ``grid`` and return a results document (``kind="bench"``)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    interpreter = interpreting() or device.type != "cuda"
    providers = tuple(providers or default_providers(device))
    baseline = baseline_provider(device)
    meta = results.environment(device, interpreter=interpreter)
    notes = []
    if interpreter:
        notes.append("CPU run: tritongru ran through Triton's interpreter; times are functional, not speed.")
    meta.update(
        grid={k: list(v) if isinstance(v, tuple) else v for k, v in asdict(grid).items()},
        providers=list(providers),
        baseline=baseline,
        cudnn_benchmark=True,
        seed=seed,
        precisions={
            name: {"dtype": str(PRECISIONS[name][0]), "allow_tf32": PRECISIONS[name][1]} for name in grid.precisions
        },
        peaks=measure_peaks(device, grid.precisions),
        notes=notes,
        work_model="flops: 2*T*B*3H*(I+H) per pass; bytes: (T*B*(I+H) + 3H*(I+H)) * itemsize per pass; "
        "backward = 2 passes, train = 3",
    )
    saved_benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    try:
        rows = _measure_grid(grid, providers, device, meta, seed=seed, progress=progress)
    finally:
        torch.backends.cudnn.benchmark = saved_benchmark
    add_speedups(rows, baseline)
    return results.new_document("bench", meta, rows)


def _measure_grid(
    grid: Grid,
    providers: Sequence[str],
    device: torch.device,
    meta: dict,
    *,
    seed: int,
    progress: bool,
) -> list[dict]:
    rows = []
    points = grid.points()
    for index, (precision, batch, hidden, seq_len) in enumerate(tqdm(points, desc="bench", disable=not progress)):
        dtype, tf32 = PRECISIONS[precision]
        input_size = grid.input_size or hidden
        point = (precision, batch, hidden, input_size, seq_len)
        with tf32_mode(tf32):
            torch.manual_seed(seed * 1_000_003 + index)  # fresh inputs and weights at every point
            base = torch.nn.GRU(input_size, hidden, device=device, dtype=dtype)
            x = torch.randn(seq_len, batch, input_size, device=device, dtype=dtype)
            h0 = torch.randn(1, batch, hidden, device=device, dtype=dtype) * 0.5
            grad_out = torch.randn(seq_len, batch, hidden, device=device, dtype=dtype)
            expected = {}
            for variant in ("cudnn", "classic"):
                with torch.no_grad():
                    out, _ = gru_layer_ref(
                        x.float(),
                        h0[0].float(),
                        base.weight_ih_l0.float(),
                        base.weight_hh_l0.float(),
                        base.bias_ih_l0.float(),
                        base.bias_hh_l0.float(),
                        variant=variant,
                    )
                expected[variant] = out
            for provider in providers:
                try:
                    model, variant = build(provider, base, allow_tf32=tf32)
                except LookupError as reason:
                    rows += [
                        {**_row(provider, "", mode, *point), "status": "skipped", "note": str(reason)}
                        for mode in grid.modes
                    ]
                    continue
                try:
                    with torch.no_grad():
                        out, _ = model(x, h0)
                    timings = _time_modes(model, x, h0, grad_out, grid.modes, device)
                except Exception as failure:  # an optional peer that fails is recorded; our own failures raise
                    if provider not in PEERS:
                        raise
                    note = f"{type(failure).__name__}: {failure}"
                    rows += [
                        {**_row(provider, variant, mode, *point), "status": "error", "note": note}
                        for mode in grid.modes
                    ]
                    continue
                error = (out.float() - expected[variant]).abs().max().item()
                for mode, (median, p20, p80, peak) in timings.items():
                    flops, data = work(
                        mode,
                        batch=batch,
                        hidden=hidden,
                        input_size=input_size,
                        seq_len=seq_len,
                        dtype=dtype,
                    )
                    seconds = median * 1e-3
                    row = _row(provider, variant, mode, *point)
                    row.update(
                        median_ms=median,
                        p20_ms=p20,
                        p80_ms=p80,
                        us_per_step=median * 1e3 / seq_len,
                        tokens_per_s=batch * seq_len / seconds,
                        flops=flops,
                        bytes=data,
                        tflops=flops / seconds / 1e12,
                        gbps=data / seconds / 1e9,
                        peak_mem_mb=peak,
                        max_abs_err=error,
                    )
                    row["tflops_frac_of_peak"] = row["tflops"] / meta["peaks"]["tflops"][precision]
                    row["gbps_frac_of_peak"] = row["gbps"] / meta["peaks"]["gbps"]
                    rows.append(row)
    return rows


def add_speedups(rows: list[dict], baseline: str) -> None:
    """Set each timed row's ``speedup_vs_baseline``: the baseline's median over its own, at the same point."""
    point = lambda r: (r["mode"], r["dtype"], r["batch"], r["hidden"], r["input_size"], r["seq_len"])
    reference = {point(r): r["median_ms"] for r in rows if r["provider"] == baseline and r["status"] == "ok"}
    for row in rows:
        base = reference.get(point(row))
        if row["status"] == "ok" and base is not None:
            row["speedup_vs_baseline"] = base / row["median_ms"]
