"""The harness's one timer, shared by the benchmark and the tuning sweep, and the peaks it measures.

On a GPU with the interpreter off, :func:`measure` is ``triton.testing.do_bench``: warm-up, then the median and
the 20th/80th percentiles of device-event times over repetitions. Under Triton's CPU interpreter it makes one
wall-clock call, which shows that the code ran and says nothing about speed; results files label such times
``"interpreter"`` (:func:`timing_label`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence

import torch

from tritongru.environment import interpreting
from tritongru.precisions import PRECISIONS

WARMUP_MS = 25
"""Milliseconds of warm-up calls before timing (``do_bench``'s ``warmup``)."""

REPEAT_MS = 100
"""Milliseconds of timed repetitions (``do_bench``'s ``rep``)."""

QUANTILES = (0.5, 0.2, 0.8)
"""Median, p20 and p80: the three times every timed row records."""


def device_events(device: torch.device) -> bool:
    """True when times on ``device`` come from device events: CUDA with the interpreter off."""
    return device.type == "cuda" and not interpreting()


def timing_label(device: torch.device) -> str:
    """How times on ``device`` are taken, as results files record it: ``"device-events"`` or ``"interpreter"``."""
    return "device-events" if device_events(device) else "interpreter"


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
    """``(median, p20, p80)`` of ``fn()`` in ms; the gradients of ``grad_to_none`` are cleared before each call.

    Device events over repetitions after warm-up where :func:`device_events`; else one wall-clock call (a
    functional check, not a measurement), reported three times."""
    if device_events(device):
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(
            fn,
            warmup=WARMUP_MS,
            rep=REPEAT_MS,
            quantiles=list(QUANTILES),
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
    """Measured peaks on ``device``: dense matmul TFLOP/s per precision name and copy bandwidth in GB/s.

    On the CPU these are wall-clock numbers of small problems, kept only so that every results file has the
    same fields."""
    cuda = device.type == "cuda"
    n = 8192 if cuda else 256
    tflops = {}
    for name in precisions:
        precision = PRECISIONS[name]
        a = torch.randn(n, n, device=device, dtype=precision.dtype)
        b = torch.randn(n, n, device=device, dtype=precision.dtype)
        with tf32_mode(precision.allow_tf32):
            median, _, _ = measure(lambda a=a, b=b: a @ b, device=device)
        tflops[name] = 2 * n**3 / (median * 1e-3) / 1e12
    elements = (1 << 28) if cuda else (1 << 22)
    source = torch.randn(elements, device=device)
    target = torch.empty_like(source)
    median, _, _ = measure(lambda: target.copy_(source), device=device)
    gbps = 2 * elements * source.element_size() / (median * 1e-3) / 1e9
    return {"tflops": tflops, "gbps": gbps, "matmul_n": n, "copy_bytes": elements * source.element_size()}
