"""Compile, in parallel and before anything launches, exactly the kernels a run will launch, so that every
launch then finds its kernel in Triton's on-disk cache.

A launch compiles through the JIT: it specialises the call's arguments, forms the cache key from that
specialisation, the target GPU and the options, and reads the compiled kernel from the on-disk cache when the
key is there. :func:`precompile` has the JIT itself write those entries: each worker process runs
``kernel.warmup(grid=..., **call)`` (the JIT's own path: compile, no launch) under a driver that only names
the target GPU (:class:`CompileOnly`), on meta tensors, which specialise as the launch's tensors do (dtype,
16-byte alignment; :func:`tritongru.launchers.meta_arguments`). Calling ``triton.compile`` on the
``ASTSource`` that :func:`tritongru.compiled.specialise` builds would not do: its attributes of ``None`` and
unspecialised arguments differ from the JIT's, and so does its cache key (checked with Triton 3.6 and 3.9;
the code it compiles is the same).

Workers are spawned, not forked (the parent may hold a CUDA context), and touch no GPU. The cache directory
and every environment variable that enters the cache key are the parent's. Triton's cache is keyed by its own
build too, which differs per Python version: precompile with the Python and Triton that will launch.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass, field

import triton
from triton.backends.compiler import GPUTarget

from tritongru.compiled import compile_key
from tritongru.environment import interpreting
from tritongru.kernels.backward import gru_backward_kernel
from tritongru.kernels.calibrate import l2_chase_kernel, mma_rate_kernel
from tritongru.kernels.forward import gru_forward_kernel
from tritongru.kernels.grid_sync import barrier_stress_kernel

KERNELS = {
    "forward": gru_forward_kernel,
    "backward": gru_backward_kernel,
    "stress": barrier_stress_kernel,
    "mma-rate": mma_rate_kernel,
    "l2-chase": l2_chase_kernel,
}
"""The kernels a :class:`Kernel` names by ``kind``."""


@dataclass(frozen=True)
class Kernel:
    """One entry of Triton's cache: the ``kind`` of kernel (a key of :data:`KERNELS`) and one call's keyword
    arguments, launch options included, as the launcher passes them (tensors may be meta tensors)."""

    kind: str
    call: dict = field(compare=False, hash=False)

    def key(self) -> tuple:
        """What tells two entries apart: the compiled code (:func:`~tritongru.compiled.compile_key`), and
        ``launch_pdl``, which changes only how that code is launched but is one of the options Triton's cache
        key includes (a per-step launch with and without it are two entries)."""
        return self.kind, compile_key(KERNELS[self.kind], self.call), bool(self.call.get("launch_pdl", False))


def distinct(kernels: Sequence[Kernel]) -> list[Kernel]:
    """``kernels`` without repeated cache entries, first occurrences in order."""
    found: dict[tuple, Kernel] = {}
    for kernel in kernels:
        found.setdefault(kernel.key(), kernel)
    return list(found.values())


class CompileOnly:
    """A stand-in for Triton's CUDA driver with just what the JIT asks before it compiles: a device, a stream
    and the target. Nothing compiled under it can be loaded or launched."""

    def __init__(self, target: GPUTarget) -> None:
        self.target = target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int) -> int:
        return 0

    def get_current_target(self) -> GPUTarget:
        return self.target


def _start_worker(target: GPUTarget) -> None:
    triton.runtime.driver.set_active(CompileOnly(target))


def _warm(kernel: Kernel) -> str | None:
    """Compile one entry through the JIT (in a worker); the error as a line, or None."""
    try:
        KERNELS[kernel.kind].warmup(grid=(1,), **kernel.call)
    except Exception as error:  # a compile error is a finding to report, not the end of the run
        return f"{kernel.kind}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def precompile(kernels: Sequence[Kernel], target: GPUTarget, *, jobs: int) -> list[str]:
    """Compile every one of ``kernels`` for ``target`` into Triton's on-disk cache, in ``jobs`` spawned
    processes, in the order given; return one line per kernel that failed to compile (empty when none)."""
    if interpreting():
        raise RuntimeError("precompiling needs the real compiler: unset TRITON_INTERPRET")
    if not kernels:
        return []
    context = multiprocessing.get_context("spawn")
    workers = min(jobs, len(kernels))
    with concurrent.futures.ProcessPoolExecutor(workers, context, _start_worker, (target,)) as pool:
        return [line for line in pool.map(_warm, kernels) if line is not None]
