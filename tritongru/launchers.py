"""Host launchers of the recurrent kernels: allocate outputs, plan the launches, launch, check the barrier.

Every tensor handed in must be contiguous and on one device (the layer above makes it so). Tensors that other
programs read across a barrier (``hs``, gate gradients) and the saved gates are kept in the *storage dtype*;
the exact recurrent state (``h``, ``dh``) is kept in the *compute dtype* (float32, or float64 for float64).

How a sequence runs (:func:`plan_launch`, from the :class:`~tritongru.configs.KernelConfig`):

- **persistent**, one slice (``block_h >= H``, or with heads ``block_h >= H // heads``): the whole sequence in one
  launch, one program per group of ``batch_blocks`` batch blocks (and head) owning the whole width of its
  head; CTA barriers only.
- **persistent**, several slices: the whole sequence in one *cooperative* launch of ``slices x groups``
  programs (each stepping its group's ``batch_blocks`` batch blocks in turn, the slice's weights held once)
  that meet at a grid barrier after every phase. Used where programs run concurrently: on CUDA when
  the compiled kernel's resources let the whole grid be resident at once (checked before launching; the
  driver refuses a cooperative grid that cannot be), under the interpreter only when its programs run in
  threads (the test suite's barrier tests). The barrier counters are checked after the launch: a timed-out
  barrier raises ``RuntimeError`` (results invalid); on a GPU without waiting for it, at a later launch or
  :func:`check_grid_barriers` (see :func:`_check_barriers`).
- **per step**: one launch per step and phase (cudnn forward 1, classic forward 2, cudnn backward 2, classic
  backward 3; the LayerNorm-GRU's: :data:`PHASES`), ``slices x batch blocks`` programs (one batch block each);
  on Hopper and newer each launch after the first is dispatched while the previous one finishes (programmatic
  dependent launch), hiding the gap.

``TRITONGRU_GRID_SYNC=0`` in the environment turns the grid barrier off: several slices then run per step.
``TRITONGRU_EXCHANGE=tagged`` makes the grid-synchronised forward of 2- and 4-byte dtypes (its weights all held)
wait for the data itself instead of a counter (:mod:`tritongru.kernels.grid_sync`'s tagged exchange):
experimental, until a GPU has measured it; the default, ``counter``, is the barrier. Within one thread,
:func:`using_exchange` overrides the environment (the bench's ``tritongru-cudnn-tagged`` contender runs its
forward under it).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import math
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.runtime.errors import OutOfResources

from tritongru.compiled import compile_key, kernel_resources
from tritongru.configs import (
    SHARED_MEMORY_MAX,
    KernelConfig,
    held_chunks,
    heuristic_config,
    heuristic_configs,
    select_config,
    streams_past_l1,
    wave_chunks,
)
from tritongru.environment import interpreting
from tritongru.kernels.backward import gru_backward_kernel
from tritongru.kernels.calibrate import l2_chase_kernel, mma_rate_kernel
from tritongru.kernels.forward import gru_forward_kernel
from tritongru.kernels.grid_sync import POISON, barrier_stress_kernel
from tritongru.kernels.layernorm import layernorm_gru_backward_kernel, layernorm_gru_forward_kernel
from tritongru.kernels.zoneout import EXPECTED, OFF, SAMPLED
from tritongru.precisions import PRECISIONS, compute_dtype, precision_of
from tritongru.zoneout import Zoneout

SAVED_GATES = {"cudnn": 4, "classic": 3}
"""Gate activations saved per hidden unit for backward: cudnn r, z, n, W_hn h + b_hn; classic R, Z, H~."""

PHASES = {
    ("forward", "cudnn"): 1,
    ("forward", "classic"): 2,
    ("backward", "cudnn"): 2,
    ("backward", "classic"): 3,
    ("layernorm-forward", "cudnn"): 2,
    ("layernorm-forward", "classic"): 4,
    ("layernorm-backward", "cudnn"): 3,
    ("layernorm-backward", "classic"): 5,
}
"""Phases of one step of each kernel (``tritongru.kernels.layernorm``'s as ``layernorm-*``); a grid barrier
separates them (and, in a forward, ends each step)."""

KIND_KERNELS = {
    "forward": gru_forward_kernel,
    "backward": gru_backward_kernel,
    "layernorm-forward": layernorm_gru_forward_kernel,
    "layernorm-backward": layernorm_gru_backward_kernel,
}
"""The Triton kernel of each kind."""


def base_kernel(kernel: str) -> str:
    """The plain kernel whose configs a ``kernel`` call takes: a LayerNorm-GRU kernel runs the same tiles as the
    plain one (same products, an elementwise phase more)."""
    return kernel.removeprefix("layernorm-")


GRID_SYNC_REGISTERS = 255
"""``maxnreg`` of a grid-synchronised launch. Its grid fits on the SMs at once, one program of 8 warps each;
without a limit ptxas aims at two such programs per SM (128 registers a thread) and spills to get there
(forward classic TF32 B=16 H=768 with bias and saved gates, compiled for sm_90 with Triton 3.6: 128 registers
and 8 B spilled; with this limit 204 registers, none spilled)."""

BARRIER_TIMEOUT_S = 2.0
"""How long one program waits at a grid barrier before it gives up and marks the launch failed."""

INTERPRETER_POLLS_PER_S = 100_000
"""Under the interpreter the barrier's budget is counted in polls: about this many per second of waiting."""


@dataclass(frozen=True)
class LaunchPlan:
    """How one sequence runs: ``grid`` ``(hidden slices, groups of batch blocks)`` (per step a group is one
    batch block); ``persistent`` (whole sequence in one launch); ``grid_sync`` (programs meet at a grid
    barrier); ``use_pdl`` (programmatic dependent launch)."""

    grid: tuple[int, int]
    persistent: bool
    grid_sync: bool
    use_pdl: bool


def grid_sync_available(device: torch.device) -> bool:
    """Whether programs of one launch can wait for each other: on CUDA (unless ``TRITONGRU_GRID_SYNC=0``); not
    under the interpreter, which runs programs one after another."""
    return device.type == "cuda" and not interpreting() and os.environ.get("TRITONGRU_GRID_SYNC", "1") != "0"


EXCHANGES = ("counter", "tagged")
"""How the programs of a grid-synchronised forward learn that the others' data of a step is there."""


_exchange_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("exchange_override", default=None)


def exchange() -> str:
    """The exchange in force (one of :data:`EXCHANGES`): the innermost :func:`using_exchange`'s, else the one
    ``TRITONGRU_EXCHANGE`` asks for (default ``counter``)."""
    name = _exchange_override.get() or os.environ.get("TRITONGRU_EXCHANGE", "counter")
    if name not in EXCHANGES:
        raise ValueError(f"TRITONGRU_EXCHANGE must be one of {EXCHANGES}; got {name!r}")
    return name


@contextlib.contextmanager
def using_exchange(name: str) -> Iterator[None]:
    """Launch with the exchange ``name`` (one of :data:`EXCHANGES`) inside the block, whatever the environment
    says; only in this thread (and context), so a backward that autograd runs later or elsewhere keeps its own."""
    if name not in EXCHANGES:
        raise ValueError(f"exchange must be one of {EXCHANGES}; got {name!r}")
    token = _exchange_override.set(name)
    try:
        yield
    finally:
        _exchange_override.reset(token)


def tags_exchange(kind: str, args: dict) -> bool:
    """Whether a grid-synchronised ``kind`` launch with ``args`` uses the tagged exchange: asked for
    (:func:`exchange`), the sequence forward (not the cell), 2- or 4-byte values, every K chunk held."""
    return (
        exchange() == "tagged"
        and kind == "forward"
        and args["x_ptr"] is None
        and args["hs_ptr"].element_size() in (2, 4)
        and args["HELD_CHUNKS"] * args["BLOCK_K"] >= args["D"]
    )


def _tagged_buffers(args: dict, variant: str) -> dict:
    """The tagged exchange's two slots of ``h`` (and classic's ``R * h``), ``[2, B, H]`` words, zeroed (no tag)."""
    hs = args["hs_ptr"]
    words = torch.int32 if hs.element_size() == 2 else torch.int64
    shape = (2, args["B"], args["H"])
    rh = torch.zeros(shape, dtype=words, device=hs.device) if variant == "classic" else None
    return dict(xh_ptr=torch.zeros(shape, dtype=words, device=hs.device), xrh_ptr=rh, TAGGED=True)


def _pdl_available(device: torch.device) -> bool:
    return device.type == "cuda" and not interpreting() and torch.cuda.get_device_capability(device)[0] >= 9


def plan_launch(
    config: KernelConfig, batch: int, hidden: int, device: torch.device, head_dim: int | None = None
) -> LaunchPlan:
    """The launch plan of ``config`` for a ``[batch, hidden]`` state in heads of ``head_dim`` units (None: one
    head) on ``device`` (see the module docstring)."""
    grid = config.grid(batch, hidden, head_dim)
    if config.persistent and config.slices_per_head(hidden, head_dim) == 1:
        return LaunchPlan(grid, persistent=True, grid_sync=False, use_pdl=False)
    coherent = interpreting() or streams_past_l1(config, hidden, head_dim)  # the interpreter has no L1
    if config.persistent and grid_sync_available(device) and coherent:
        return LaunchPlan(grid, persistent=True, grid_sync=True, use_pdl=False)
    return _per_step(config, batch, hidden, _pdl_available(device), head_dim)


def _per_step(config: KernelConfig, batch: int, hidden: int, use_pdl: bool, head_dim: int | None) -> LaunchPlan:
    """One launch per step and phase: a program per slice and batch block (stepping several batch blocks per
    program only pays where the programs hold their weights across steps)."""
    return LaunchPlan(replace(config, batch_blocks=1).grid(batch, hidden, head_dim), False, False, use_pdl)


def head_dim_of(w_hh: torch.Tensor) -> int | None:
    """The units per head of a recurrent weight: ``D`` for a multi-head ``[3H, D]`` (its diagonal blocks), None
    for the dense ``[3H, H]``."""
    return None if 3 * w_hh.shape[1] == w_hh.shape[0] else w_hh.shape[1]


def num_heads_of(w_hh: torch.Tensor) -> int:
    """The heads of a recurrent weight ``[3H, H // heads]`` (1 for the dense ``[3H, H]``)."""
    head_dim = head_dim_of(w_hh)
    return 1 if head_dim is None else w_hh.shape[0] // 3 // head_dim


@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    """Make ``device`` current so Triton launches on it (tensors may live on any CUDA device)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


def _kernel_constants(dtype: torch.dtype, allow_tf32: bool, config: KernelConfig, width: int) -> dict:
    precision = precision_of(dtype, allow_tf32)
    return dict(
        ACC_DTYPE=tl.float64 if precision.compute_dtype == torch.float64 else tl.float32,
        DOT_PRECISION=precision.dot_precision,
        BLOCK_B=config.block_b,
        BLOCK_H=config.block_h,
        BLOCK_K=config.block_k,
        BATCH_BLOCKS=config.batch_blocks,
        SPLIT=config.num_warps if config.split_k else 1,
        WAVE=wave_chunks(config, width, dtype),
        HELD_CHUNKS=held_chunks(config, width),
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )


def zoneout_arguments(zoneout: Zoneout | None, steps: int, dtype: torch.dtype, device: torch.device) -> dict:
    """The recurrent kernels' zoneout arguments (``tritongru.kernels.zoneout.kept_share``) for ``zoneout`` (None:
    off) over a sequence of ``steps`` in storage ``dtype``: ``p`` as a one-element compute-dtype tensor, so that
    float64 sees it exactly, and the seed as two int32 halves."""
    mode = OFF if zoneout is None else (EXPECTED if zoneout.seed is None else SAMPLED)
    seed = 0 if zoneout is None or zoneout.seed is None else zoneout.seed
    low, high = seed & 0xFFFFFFFF, seed >> 32
    p = None if zoneout is None else torch.full((1,), zoneout.p, dtype=compute_dtype(dtype), device=device)
    return dict(
        zoneout_p_ptr=p,
        zoneout_seed_lo=low - (1 << 32) if low >= 1 << 31 else low,
        zoneout_seed_hi=high,
        zoneout_stream=0 if zoneout is None else zoneout.stream,
        T=steps,
        ZONEOUT=mode.value,
        ZONEOUT_REVERSED=zoneout is not None and zoneout.reversed,
    )


def _spin_limit() -> int:
    """The barrier's budget as the kernel counts it: nanoseconds on a GPU, polls under the interpreter."""
    return int(BARRIER_TIMEOUT_S * (INTERPRETER_POLLS_PER_S if interpreting() else 1e9))


@functools.cache
def _resident_programs(compiled, device_index: int) -> int:
    """How many programs of ``compiled`` the GPU can hold at once, from its registers, shared memory and
    threads per program (the limits of CUDA's occupancy calculation)."""
    props = torch.cuda.get_device_properties(device_index)
    warps = compiled.metadata.num_warps
    registers_per_warp = -(-compiled.n_regs * 32 // 256) * 256  # allocated per warp in units of 256
    per_sm = min(
        props.regs_per_multiprocessor // registers_per_warp // warps,
        props.max_threads_per_multi_processor // (warps * 32),
        props.shared_memory_per_multiprocessor // (compiled.metadata.shared + 1024),  # 1 KB reserved per block
        32,
    )
    return per_sm * props.multi_processor_count


def _fits_at_once(kernel, grid: tuple[int, ...], kwargs: dict, device: torch.device) -> bool:
    """Whether every program of ``grid`` can be resident at once (always, for threaded interpreter programs)."""
    if device.type != "cuda":
        return True
    compiled = kernel.warmup(grid=grid, **kwargs)
    compiled._init_handles()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return math.prod(grid) <= _resident_programs(compiled, index)


class _Unchecked(NamedTuple):
    """A GPU launch's barrier counters, copied to pinned host memory; readable once ``copied`` has passed."""

    counters: torch.Tensor
    expected: int
    copied: torch.cuda.Event


_unchecked: collections.deque[_Unchecked] = collections.deque()
_unchecked_lock = threading.Lock()


def _raise_on_bad_counts(counts: list[int], expected: int) -> None:
    """Raise if a grid barrier timed out (a counter at :data:`POISON` or above) or counted wrong."""
    if any(count >= POISON for count in counts):
        raise RuntimeError(
            f"tritongru: a grid barrier of a persistent launch timed out after {BARRIER_TIMEOUT_S} s: not every "
            "program of the launch was running at once (another kernel, process or MIG slice may hold part of "
            "the GPU). Its results, and whatever was computed from them, are invalid. Set TRITONGRU_GRID_SYNC=0 "
            "to run per step instead."
        )
    if any(count != expected for count in counts):
        raise RuntimeError(f"tritongru: grid barrier counters {counts}, expected {expected} each (internal error)")


def _check_barriers(sync: torch.Tensor, expected: int) -> None:
    """Check a launch's barrier counters ``sync`` (int32, one per batch block) against ``expected`` arrivals.

    On the CPU now. On a GPU without waiting for it: the counters are copied to pinned host memory behind an
    event and read by :func:`check_grid_barriers` once the launch has finished (every grid-synchronised launch
    first checks the finished ones), so the tensor path never synchronises with the host. Not at all while a
    CUDA graph is being captured."""
    if not sync.is_cuda:
        _raise_on_bad_counts(sync.tolist(), expected)
        return
    if torch.cuda.is_current_stream_capturing():
        return
    counters = torch.empty(sync.shape, dtype=sync.dtype, pin_memory=True)
    counters.copy_(sync, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record()
    with _unchecked_lock:
        _unchecked.append(_Unchecked(counters, expected, copied))


def check_grid_barriers(wait: bool = True) -> None:
    """Raise ``RuntimeError`` if a grid barrier of an earlier launch timed out (its results are invalid).

    ``wait=True`` waits for every launch made so far to finish and checks them all; ``wait=False`` checks only
    those that have finished. Grid-synchronised launches on a GPU are checked without waiting, so a timeout is
    reported by a later launch, or here: call it at the end of a run to be sure. Nothing is checked while
    the current stream is capturing a CUDA graph (querying an event would end the capture)."""
    if not _unchecked or torch.cuda.is_current_stream_capturing():
        return
    with _unchecked_lock:
        finished = []
        while _unchecked and (wait or _unchecked[0].copied.query()):
            finished.append(_unchecked.popleft())
    for check in finished:
        check.copied.synchronize()
        _raise_on_bad_counts(check.counters.tolist(), check.expected)


def _descending(kind: str) -> bool:
    """Whether a ``kind`` kernel steps from the last step down (a backward, whose first phase 0 runs once
    before its time loop)."""
    return kind.endswith("backward")


def kernel_calls(kind: str, variant: str, plan: LaunchPlan, steps: int, args: dict) -> list[dict]:
    """The keyword arguments (launch options included) of every call of the ``kind`` kernel (a key of
    :data:`KIND_KERNELS`; a forward steps ascending, a backward descending) that runs ``steps`` steps as ``plan``
    says; ``args`` holds every kernel argument but the step range, the phases and the barrier's."""
    phases = PHASES[kind, variant]
    whole = dict(args, t_lo=0, t_hi=steps, spin_limit=_spin_limit(), FIRST_PHASE=0, LAST_PHASE=phases - 1)
    if kind == "forward":
        whole.update(xh_ptr=None, xrh_ptr=None, TAGGED=False)
    persistent = dict(whole, RESIDENT=True, USE_PDL=False)
    if plan.grid_sync:
        sync = torch.zeros(plan.grid[1], dtype=torch.int32, device=args["hs_ptr"].device)
        if tags_exchange(kind, args):
            persistent.update(_tagged_buffers(args, variant))
        return [
            dict(persistent, sync_ptr=sync, GRID_SYNC=True, launch_cooperative_grid=True, maxnreg=GRID_SYNC_REGISTERS)
        ]
    if plan.persistent:
        return [dict(persistent, sync_ptr=None, GRID_SYNC=False)]
    order = reversed(range(steps)) if _descending(kind) else range(steps)
    return [
        dict(
            whole,
            t_lo=t,
            t_hi=t + 1,
            FIRST_PHASE=phase,
            LAST_PHASE=phase,
            sync_ptr=None,
            GRID_SYNC=False,
            RESIDENT=False,
            BATCH_BLOCKS=1,
            USE_PDL=plan.use_pdl,
            launch_pdl=plan.use_pdl and (i, phase) != (0, 0),
        )
        for i, t in enumerate(order)
        for phase in range(phases)
    ]


def _launch(kernel, kind: str, variant: str, plan: LaunchPlan, steps: int, args: dict) -> None:
    """Make the calls of :func:`kernel_calls`; a grid-synchronised launch is checked afterwards, and falls
    back to per-step launches where its grid cannot be resident at once (or its counters could overflow)."""
    device = args["hs_ptr"].device
    with _on_device(device):
        if plan.grid_sync:
            (call,) = kernel_calls(kind, variant, plan, steps, args)
            # the tagged exchange never arrives at the counter: it stays 0 unless a wait timed out
            arrivals = 0 if call.get("TAGGED") else plan.grid[0] * (PHASES[kind, variant] - _descending(kind)) * steps
            # a count that could reach POISON (millions of steps) would read as a timeout: run those per step
            if arrivals < POISON and _fits_at_once(kernel, plan.grid, call, device):
                check_grid_barriers(wait=False)
                kernel[plan.grid](**call)
                _check_barriers(call["sync_ptr"], arrivals)
                return
            per_step_grid = (plan.grid[0], triton.cdiv(args["B"], args["BLOCK_B"]))
            plan = LaunchPlan(per_step_grid, persistent=False, grid_sync=False, use_pdl=_pdl_available(device))
        for call in kernel_calls(kind, variant, plan, steps, args):
            kernel[plan.grid](**call)


def _forward_buffers(h0, steps: int, variant: str, storage: torch.dtype, store_gates: bool) -> dict:
    """A forward kernel's outputs and exchange buffers: ``hs`` ``[T+1, B, H]`` (``hs[0] = h0``), the exact
    ``state``, the saved gates (or None), and classic's ``rh`` and ``z_scratch`` (else None)."""
    B, H = h0.shape
    device = h0.device
    hs = torch.empty((steps + 1, B, H), dtype=storage, device=device)
    hs[0].copy_(h0)
    state = h0.to(compute_dtype(storage), copy=True)
    classic = variant == "classic"
    gates = torch.empty((steps, B, SAVED_GATES[variant] * H), dtype=storage, device=device) if store_gates else None
    return dict(
        hs_ptr=hs,
        state_ptr=state,
        gates_ptr=gates,
        rh_ptr=torch.empty((B, H), dtype=storage, device=device) if classic else None,
        z_scratch_ptr=torch.empty_like(state) if classic else None,
    )


def forward_arguments(
    *,
    gi,
    x,
    w_ih,
    b_ih,
    h0,
    w_hh,
    b_hh,
    steps,
    lengths,
    variant,
    store_gates,
    allow_tf32,
    config,
    zoneout=None,
) -> tuple[dict, KernelConfig]:
    """The forward kernel's arguments, its outputs allocated (``hs_ptr``, ``state_ptr``, ``gates_ptr``; see
    :func:`forward_sequence`), and the config: ``config``, or the one :func:`select_config` gives."""
    B, H = h0.shape
    D = w_hh.shape[1]
    input_size = 0 if x is None else x.shape[1]
    storage, device = w_hh.dtype, w_hh.device
    if config is None:
        config = _launch_config(
            "forward" if x is None else "cell",
            variant=variant,
            dtype=storage,
            batch=B,
            hidden=H,
            input_size=input_size,
            device=device,
            allow_tf32=allow_tf32,
            flags={"bias": b_hh is not None, "store_gates": store_gates}
            | ({} if x is not None else {"lengths": lengths is not None})
            | ({"zoneout": True} if zoneout is not None else {}),
            head_dim=head_dim_of(w_hh),
        )
    args = dict(
        gi_ptr=gi,
        x_ptr=x,
        w_ih_ptr=w_ih,
        b_ih_ptr=b_ih,
        w_hh_ptr=w_hh,
        b_hh_ptr=b_hh,
        **_forward_buffers(h0, steps, variant, storage, store_gates),
        lengths_ptr=lengths,
        B=B,
        H=H,
        D=D,
        I=input_size,
        CLASSIC=variant == "classic",
        **zoneout_arguments(zoneout, steps, storage, device),
        **_kernel_constants(storage, allow_tf32, config, D),
    )
    return args, config


def _initial_carry(grad_h_n, B: int, H: int, storage: torch.dtype, device: torch.device) -> torch.Tensor:
    """A backward's ``dh`` on entry, ``[B, H]`` compute dtype: ``h_n``'s gradient, or zeros."""
    if grad_h_n is None:
        return torch.zeros((B, H), dtype=compute_dtype(storage), device=device)
    return grad_h_n.to(compute_dtype(storage), copy=True)


def backward_arguments(
    *, grad_output, grad_h_n, hs, gates, w_hh, variant, lengths, allow_tf32, config, zoneout=None
) -> tuple[dict, KernelConfig]:
    """The backward kernel's arguments, its outputs allocated (``dgates_x_ptr``, ``dgates_hn_ptr``,
    ``carry_ptr``; see :func:`backward_sequence`), and the config."""
    T, B, H = gates.shape[0], hs.shape[1], hs.shape[2]
    storage, device = w_hh.dtype, w_hh.device
    carry = _initial_carry(grad_h_n, B, H, storage, device)
    if config is None:
        config = _launch_config(
            "backward",
            variant=variant,
            dtype=storage,
            batch=B,
            hidden=H,
            input_size=0,
            device=device,
            allow_tf32=allow_tf32,
            flags={"bias": True, "lengths": lengths is not None} | ({"zoneout": True} if zoneout is not None else {}),
            head_dim=head_dim_of(w_hh),
        )
    args = dict(
        grad_out_ptr=grad_output,
        carry_ptr=carry,
        hs_ptr=hs,
        gates_ptr=gates,
        w_hh_ptr=w_hh,
        dgates_x_ptr=torch.empty((T, B, 3 * H), dtype=storage, device=device),
        dgates_hn_ptr=torch.empty((T, B, H), dtype=storage, device=device) if variant == "cudnn" else None,
        lengths_ptr=lengths,
        B=B,
        H=H,
        D=w_hh.shape[1],
        CLASSIC=variant == "classic",
        **zoneout_arguments(zoneout, T, storage, device),
        **_kernel_constants(storage, allow_tf32, config, w_hh.shape[1]),
    )
    return args, config


def gpu_plans(
    config: KernelConfig, batch: int, hidden: int, arch: int, head_dim: int | None = None
) -> dict[str, LaunchPlan]:
    """The plans the launchers can run ``config`` with on a GPU of compute capability ``arch`` (e.g. 90): its
    own (``"one-slice"``: one slice per head, ``"grid-sync"`` or ``"per-step"``, also where its streamed chunks
    would pass through L1: :func:`streams_past_l1`), and for a grid-synchronised one also the per-step fallback
    taken where its grid cannot be resident at once."""
    grid = config.grid(batch, hidden, head_dim)
    per_step = _per_step(config, batch, hidden, arch >= 90, head_dim)
    if not config.persistent:
        return {"per-step": per_step}
    if config.slices_per_head(hidden, head_dim) == 1:
        return {"one-slice": LaunchPlan(grid, persistent=True, grid_sync=False, use_pdl=False)}
    if not streams_past_l1(config, hidden, head_dim):
        return {"per-step": per_step}
    return {"grid-sync": LaunchPlan(grid, persistent=True, grid_sync=True, use_pdl=False), "per-step": per_step}


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def meta_arguments(
    kernel: str,
    variant: str,
    precision: str,
    batch: int,
    hidden: int,
    input_size: int,
    flags: dict[str, bool],
    config: KernelConfig,
    head_dim: int | None = None,
) -> tuple[str, dict]:
    """``(kind, args)``: the arguments a launcher passes to the ``kind`` kernel (``"forward"``, which also
    runs the cell, ``"backward"``, or a LayerNorm-GRU kernel, ``kind`` then ``kernel`` itself) for one call of
    ``kernel`` (``"forward"``, ``"cell"``, ``"backward"``, ``"layernorm-forward"``, ``"layernorm-backward"``), on
    meta tensors: what compiling it needs, without memory or a GPU. ``flags``: ``bias``, ``lengths`` (sequences)
    and ``store_gates`` (forward and cell) given or not, and ``zoneout`` (absent: off; on: masks drawn from a
    seed, in reverse, the most code zoneout adds). ``head_dim``: a multi-head GRU's units per head (None: dense)."""
    p = PRECISIONS[precision]
    dtype, H, T = p.dtype, hidden, 2
    zoneout = Zoneout(0.5, 1, 1, reversed=True) if flags.get("zoneout") else None
    w_hh = _meta(3 * H, H if head_dim is None else head_dim, dtype=dtype)
    b_hh = _meta(3 * H, dtype=dtype) if flags["bias"] else None
    lengths = _meta(batch, dtype=torch.int64) if flags.get("lengths") else None
    if kernel == "layernorm-forward":
        args, _ = layernorm_forward_arguments(
            gi=_meta(T, batch, 3 * H, dtype=dtype),
            h0=_meta(batch, H, dtype=dtype),
            w_hh=w_hh,
            ln_w=_meta(3 * H, dtype=dtype),
            ln_b=_meta(3 * H, dtype=dtype),
            variant=variant,
            lengths=lengths,
            store_gates=flags["store_gates"],
            allow_tf32=p.allow_tf32,
            config=config,
            zoneout=zoneout,
        )
        return kernel, args
    if kernel == "layernorm-backward":
        heads = H // w_hh.shape[1]
        args, _ = layernorm_backward_arguments(
            grad_output=_meta(T, batch, H, dtype=dtype),
            grad_h_n=_meta(batch, H, dtype=p.compute_dtype),
            hs=_meta(T + 1, batch, H, dtype=dtype),
            gates=_meta(T, batch, SAVED_GATES[variant] * H, dtype=dtype),
            xhat=_meta(T, batch, 3 * H, dtype=p.compute_dtype),
            rstd=_meta(T, batch, 3, heads, dtype=p.compute_dtype),
            w_hh=w_hh,
            ln_w=_meta(3 * H, dtype=dtype),
            variant=variant,
            lengths=lengths,
            allow_tf32=p.allow_tf32,
            config=config,
            zoneout=zoneout,
        )
        return kernel, args
    if kernel == "backward":
        args, _ = backward_arguments(
            grad_output=_meta(T, batch, H, dtype=dtype),
            grad_h_n=_meta(batch, H, dtype=p.compute_dtype),
            hs=_meta(T + 1, batch, H, dtype=dtype),
            gates=_meta(T, batch, SAVED_GATES[variant] * H, dtype=dtype),
            w_hh=w_hh,
            variant=variant,
            lengths=lengths,
            allow_tf32=p.allow_tf32,
            config=config,
            zoneout=zoneout,
        )
        return "backward", args
    cell = kernel == "cell"
    args, _ = forward_arguments(
        gi=None if cell else _meta(T, batch, 3 * H, dtype=dtype),
        x=_meta(batch, input_size, dtype=dtype) if cell else None,
        w_ih=_meta(3 * H, input_size, dtype=dtype) if cell else None,
        b_ih=_meta(3 * H, dtype=dtype) if cell and flags["bias"] else None,
        h0=_meta(batch, H, dtype=dtype),
        w_hh=w_hh,
        b_hh=b_hh,
        steps=1 if cell else T,
        lengths=lengths,
        variant=variant,
        store_gates=flags["store_gates"],
        allow_tf32=p.allow_tf32,
        config=config,
        zoneout=zoneout,
    )
    return "forward", args


def compiled_calls(
    kind: str,
    variant: str,
    config: KernelConfig,
    batch: int,
    hidden: int,
    args: dict,
    arch: int,
    head_dim: int | None = None,
    fallbacks: bool = True,
):
    """``(mode, call)`` for every distinct compile of the ``kind`` kernel that ``config`` may launch on an
    ``arch`` GPU (see :func:`gpu_plans`; ``launch_pdl`` changes how a kernel is launched, not its code);
    ``fallbacks=False``: of its own plan only, not the per-step fallback of a grid-synchronised one."""
    kernel = KIND_KERNELS[kind]
    found = {}
    plans = list(gpu_plans(config, batch, hidden, arch, head_dim).items())
    for mode, plan in plans if fallbacks else plans[:1]:
        for call in kernel_calls(kind, variant, plan, 2, args):
            found.setdefault(compile_key(kernel, call), (mode, call))
    return list(found.values())


@functools.lru_cache(maxsize=1024)
def first_spill_free(
    kernel: str,
    variant: str,
    precision: str,
    batch: int,
    hidden: int,
    input_size: int,
    flags: tuple[tuple[str, bool], ...],
    arch: int,
    sm_count: int,
    on_gpu: bool = False,
    head_dim: int | None = None,
    fallbacks: bool = True,
    exchange_name: str = "counter",
) -> KernelConfig:
    """The first of :func:`~tritongru.configs.heuristic_configs` whose compiled kernels for an ``arch`` GPU do
    not spill registers and fit its shared memory, a forward's with the exchange ``exchange_name`` (one of
    :data:`EXCHANGES`); the first one where none does.

    Without a GPU (``on_gpu=False``: the compile check, the tests) every kernel the config may launch, its
    per-step fallback too, is compiled and its spills read from its cubin. On the current CUDA device
    (``on_gpu=True``, compute capability ``arch``) only the kernels of the config's own plan are compiled, by
    the JIT itself (they are what the launch then runs, found in Triton's cache), and the spills read from the
    loaded kernel (``n_spills``); a per-step fallback is compiled only when a launch takes it. ``head_dim``: a
    multi-head GRU's units per head (None: dense). ``fallbacks=False`` (the quick compile check): off the GPU
    too, only the kernels of the config's own plan."""
    p = PRECISIONS[precision]
    candidates = heuristic_configs(
        base_kernel(kernel), batch, hidden, dtype=p.dtype, allow_tf32=p.allow_tf32, sm_count=sm_count, head_dim=head_dim
    )
    for config in candidates:
        kind, args = meta_arguments(
            kernel, variant, precision, batch, hidden, input_size, dict(flags), config, head_dim
        )
        with using_exchange(exchange_name):
            calls = compiled_calls(kind, variant, config, batch, hidden, args, arch, head_dim, fallbacks)
        if on_gpu:
            own = next(iter(gpu_plans(config, batch, hidden, arch, head_dim)))
            fit = all(_jit_fits(KIND_KERNELS[kind], call) for mode, call in calls if mode == own)
        else:
            found = [kernel_resources(KIND_KERNELS[kind], call, arch) for _, call in calls]
            fit = all(not r.spills and r.shared <= SHARED_MEMORY_MAX[arch] for r in found)
        if fit:
            return config
    return candidates[0]


def _jit_fits(kernel, call: dict) -> bool:
    """Whether the JIT's compile of ``kernel(**call)`` spills no register and fits the current CUDA device's
    shared memory (loading it raises ``OutOfResources`` where it does not)."""
    compiled = kernel.warmup(grid=(1,), **call)
    try:
        compiled._init_handles()
    except OutOfResources:
        return False
    return compiled.n_spills == 0


def _launch_config(
    kernel: str, *, variant, dtype, batch, hidden, input_size, device, allow_tf32, flags, head_dim
) -> KernelConfig:
    """The config of one launcher call: :func:`select_config`'s, where that is the heuristic's on a GPU the
    first of its alternatives that compiles without spilling (:func:`first_spill_free`)."""
    store_gates = flags.get("store_gates", False)
    config = select_config(
        base_kernel(kernel),
        variant=variant,
        dtype=dtype,
        batch=batch,
        hidden=hidden,
        input_size=input_size,
        device=device,
        allow_tf32=allow_tf32,
        store_gates=store_gates,
        head_dim=head_dim,
    )
    if device.type != "cuda" or interpreting():
        return config
    major, minor = torch.cuda.get_device_capability(device)
    sm_count = torch.cuda.get_device_properties(device).multi_processor_count
    heuristic = heuristic_config(
        base_kernel(kernel), batch, hidden, dtype=dtype, allow_tf32=allow_tf32, sm_count=sm_count, head_dim=head_dim
    )
    if config != heuristic and base_kernel(kernel) == kernel:
        return config  # a tuned winner: the tuner pruned every config that spills (it tunes the plain kernels)
    precision = precision_of(dtype, allow_tf32).name
    return first_spill_free(
        kernel,
        variant,
        precision,
        batch,
        hidden,
        input_size,
        tuple(sorted(flags.items())),
        10 * major + minor,
        sm_count,
        on_gpu=True,
        head_dim=head_dim,
        exchange_name=exchange(),
    )


def forward_sequence(
    gi: torch.Tensor,
    h0: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor | None,
    *,
    variant: str,
    lengths: torch.Tensor | None = None,
    store_gates: bool = False,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
    zoneout: Zoneout | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run the recurrence of one layer and direction over a whole sequence.

    ``gi`` ``[T, B, 3H]``: the input projection ``x @ W_ih^T + b_ih`` (storage dtype); ``h0`` ``[B, H]``;
    ``w_hh`` ``[3H, H]`` (or a multi-head GRU's blocks ``[3H, H // heads]``); ``b_hh`` ``[3H]`` or None;
    ``lengths`` int64 ``[B]`` (rows stop updating at their length) or None. Returns ``hs`` ``[T+1, B, H]`` in
    the storage dtype (``hs[0] = h0``, ``hs[t+1] = h_t``),
    ``h_last`` ``[B, H]`` in the compute dtype (each row's last state, exact), and, when ``store_gates``, the
    gates ``[T, B, NG*H]`` (storage dtype) saved for :func:`backward_sequence` (else None). ``zoneout``: mix
    each step's result with the previous state (``tritongru.zoneout.Zoneout``; None: none).
    """
    args, config = forward_arguments(
        gi=gi,
        x=None,
        w_ih=None,
        b_ih=None,
        h0=h0,
        w_hh=w_hh,
        b_hh=b_hh,
        steps=gi.shape[0],
        lengths=lengths,
        variant=variant,
        store_gates=store_gates,
        allow_tf32=allow_tf32,
        config=config,
        zoneout=zoneout,
    )
    B, H = h0.shape
    plan = plan_launch(config, B, H, h0.device, head_dim_of(w_hh))
    _launch(gru_forward_kernel, "forward", variant, plan, gi.shape[0], args)
    return args["hs_ptr"], args["state_ptr"], args["gates_ptr"]


def cell_forward(
    x: torch.Tensor,
    h: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    *,
    variant: str,
    store_gates: bool = False,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
    zoneout: Zoneout | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One GRU step, the concat-matmul ``[h, x] @ [W_hh | W_ih]^T``, gates and interpolation in one kernel.

    ``x`` ``[B, I]``, ``h`` ``[B, H]``, ``w_ih`` ``[3H, I]``, ``w_hh`` ``[3H, H]`` or ``[3H, H // heads]``, biases
    ``[3H]`` or None (both or neither). Returns ``h'`` ``[B, H]`` in the compute dtype and, when ``store_gates``,
    the gates ``[1, B, NG*H]`` for :func:`backward_sequence` with ``T = 1``. One launch, or, for the classic form
    run per step (several slices without a grid barrier), one per phase. ``zoneout`` as
    :func:`forward_sequence`'s (a cell's step is position 0 of stream 0).
    """
    args, config = forward_arguments(
        gi=None,
        x=x,
        w_ih=w_ih,
        b_ih=b_ih,
        h0=h,
        w_hh=w_hh,
        b_hh=b_hh,
        steps=1,
        lengths=None,
        variant=variant,
        store_gates=store_gates,
        allow_tf32=allow_tf32,
        config=config,
        zoneout=zoneout,
    )
    _launch(gru_forward_kernel, "forward", variant, plan_launch(config, *h.shape, h.device, head_dim_of(w_hh)), 1, args)
    return args["state_ptr"], args["gates_ptr"]


def backward_sequence(
    grad_output: torch.Tensor,
    grad_h_n: torch.Tensor | None,
    hs: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    *,
    variant: str,
    lengths: torch.Tensor | None = None,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
    zoneout: Zoneout | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The ``dh`` recurrence (BPTT) of one layer and direction.

    ``grad_output`` ``[T, B, H]`` (any float dtype): ``dL/d output_t``, ignored past a sequence's length;
    ``grad_h_n`` ``[B, H]`` or None; ``hs`` and ``gates`` as :func:`forward_sequence` returned them. Returns
    ``dgates_x`` ``[T, B, 3H]`` (the gradient of the input projection ``gi``: ``[dar, daz, dan]``),
    ``dgates_hn`` ``[T, B, H]`` (cudnn: the gradient of ``W_hn h + b_hn``; None for classic, whose hidden-side
    gate gradients equal ``dgates_x``), both in the storage dtype, and ``dh0`` ``[B, H]`` in the compute dtype.
    ``zoneout``: the forward's, whose masks the kernel draws again.
    """
    args, config = backward_arguments(
        grad_output=grad_output,
        grad_h_n=grad_h_n,
        hs=hs,
        gates=gates,
        w_hh=w_hh,
        variant=variant,
        lengths=lengths,
        allow_tf32=allow_tf32,
        config=config,
        zoneout=zoneout,
    )
    T, B, H = gates.shape[0], hs.shape[1], hs.shape[2]
    _launch(gru_backward_kernel, "backward", variant, plan_launch(config, B, H, hs.device, head_dim_of(w_hh)), T, args)
    return args["dgates_x_ptr"], args["dgates_hn_ptr"], args["carry_ptr"]


def layernorm_forward_arguments(
    *, gi, h0, w_hh, ln_w, ln_b, variant, lengths, store_gates, allow_tf32, config, zoneout=None
) -> tuple[dict, KernelConfig]:
    """The LayerNorm-GRU forward kernel's arguments, its outputs and scratch allocated (see
    :func:`layernorm_forward_sequence`), and the config (``config``, or the launchers' for these sizes)."""
    B, H = h0.shape
    T, D = gi.shape[0], w_hh.shape[1]
    storage, device = w_hh.dtype, w_hh.device
    compute = compute_dtype(storage)
    head_dim = head_dim_of(w_hh)
    if config is None:
        config = _launch_config(
            "layernorm-forward",
            variant=variant,
            dtype=storage,
            batch=B,
            hidden=H,
            input_size=0,
            device=device,
            allow_tf32=allow_tf32,
            flags={"bias": False, "store_gates": store_gates, "lengths": lengths is not None}
            | ({"zoneout": True} if zoneout is not None else {}),
            head_dim=head_dim,
        )
    args = dict(
        gi_ptr=gi,
        w_hh_ptr=w_hh,
        ln_w_ptr=ln_w,
        ln_b_ptr=ln_b,
        **_forward_buffers(h0, T, variant, storage, store_gates),
        xhat_ptr=torch.empty((T if store_gates else 1, B, 3 * H), dtype=compute, device=device),
        rstd_ptr=torch.empty((T, B, 3, H // D), dtype=compute, device=device) if store_gates else None,
        partials_ptr=torch.empty((B, 3, config.grid(B, H, head_dim)[0], 2), dtype=compute, device=device),
        lengths_ptr=lengths,
        B=B,
        H=H,
        D=D,
        CLASSIC=variant == "classic",
        **zoneout_arguments(zoneout, T, storage, device),
        **_kernel_constants(storage, allow_tf32, config, D),
    )
    return args, config


def layernorm_forward_sequence(
    gi: torch.Tensor,
    h0: torch.Tensor,
    w_hh: torch.Tensor,
    ln_w: torch.Tensor,
    ln_b: torch.Tensor,
    *,
    variant: str,
    lengths: torch.Tensor | None = None,
    store_gates: bool = False,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
    zoneout: Zoneout | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The recurrence of one LayerNorm-GRU layer and direction (:mod:`tritongru.kernels.layernorm`).

    ``gi`` ``[T, B, 3H]``: the normalised input side ``LN^i(x @ W_ih^T)`` (storage dtype); ``h0``, ``w_hh``,
    ``lengths``, ``zoneout`` as :func:`forward_sequence`'s; ``ln_w``, ``ln_b`` ``[3H]`` the recurrent side's
    gains and biases. Returns ``hs``, ``h_last`` and the gates as :func:`forward_sequence` does, and when
    ``store_gates`` ``xhat`` ``[T, B, 3H]`` and ``rstd`` ``[T, B, 3, heads]`` (compute dtype) for
    :func:`layernorm_backward_sequence` (else None). The config is the plain forward's heuristic for the same
    sizes (on a GPU the first of its alternatives whose LayerNorm kernels do not spill).
    """
    args, config = layernorm_forward_arguments(
        gi=gi,
        h0=h0,
        w_hh=w_hh,
        ln_w=ln_w,
        ln_b=ln_b,
        variant=variant,
        lengths=lengths,
        store_gates=store_gates,
        allow_tf32=allow_tf32,
        config=config,
        zoneout=zoneout,
    )
    B, H = h0.shape
    plan = plan_launch(config, B, H, h0.device, head_dim_of(w_hh))
    _launch(layernorm_gru_forward_kernel, "layernorm-forward", variant, plan, gi.shape[0], args)
    xhat = args["xhat_ptr"] if store_gates else None
    return args["hs_ptr"], args["state_ptr"], args["gates_ptr"], xhat, args["rstd_ptr"]


def layernorm_backward_arguments(
    *, grad_output, grad_h_n, hs, gates, xhat, rstd, w_hh, ln_w, variant, lengths, allow_tf32, config, zoneout=None
) -> tuple[dict, KernelConfig]:
    """The LayerNorm-GRU backward kernel's arguments, its outputs allocated (see
    :func:`layernorm_backward_sequence`), and the config."""
    T, B, H = gates.shape[0], hs.shape[1], hs.shape[2]
    storage, device = w_hh.dtype, w_hh.device
    compute = compute_dtype(storage)
    head_dim = head_dim_of(w_hh)
    if config is None:
        config = _launch_config(
            "layernorm-backward",
            variant=variant,
            dtype=storage,
            batch=B,
            hidden=H,
            input_size=0,
            device=device,
            allow_tf32=allow_tf32,
            flags={"bias": True, "lengths": lengths is not None} | ({"zoneout": True} if zoneout is not None else {}),
            head_dim=head_dim,
        )
    args = dict(
        grad_out_ptr=grad_output,
        carry_ptr=_initial_carry(grad_h_n, B, H, storage, device),
        hs_ptr=hs,
        gates_ptr=gates,
        xhat_ptr=xhat,
        rstd_ptr=rstd,
        w_hh_ptr=w_hh,
        ln_w_ptr=ln_w,
        dgates_x_ptr=torch.empty((T, B, 3 * H), dtype=storage, device=device),
        dln_ptr=torch.empty((T, B, 3 * H), dtype=compute, device=device),
        da_ptr=torch.empty((T, B, 3 * H), dtype=storage, device=device),
        partials_ptr=torch.empty((B, 3, config.grid(B, H, head_dim)[0], 2), dtype=compute, device=device),
        lengths_ptr=lengths,
        B=B,
        H=H,
        D=w_hh.shape[1],
        CLASSIC=variant == "classic",
        **zoneout_arguments(zoneout, T, storage, device),
        **_kernel_constants(storage, allow_tf32, config, w_hh.shape[1]),
    )
    return args, config


def layernorm_backward_sequence(
    grad_output: torch.Tensor,
    grad_h_n: torch.Tensor | None,
    hs: torch.Tensor,
    gates: torch.Tensor,
    xhat: torch.Tensor,
    rstd: torch.Tensor,
    w_hh: torch.Tensor,
    ln_w: torch.Tensor,
    *,
    variant: str,
    lengths: torch.Tensor | None = None,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
    zoneout: Zoneout | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``dh`` recurrence of one LayerNorm-GRU layer and direction; the forward's saved ``hs``, ``gates``,
    ``xhat``, ``rstd``. Returns ``dgates_x`` ``[T, B, 3H]`` (the gradient of the normalised input side ``gi``,
    storage dtype), ``dln`` ``[T, B, 3H]`` (of each recurrent normalisation's output, compute dtype), ``da``
    ``[T, B, 3H]`` (of each raw recurrent product, storage dtype) and ``dh0`` ``[B, H]`` (compute dtype)."""
    args, config = layernorm_backward_arguments(
        grad_output=grad_output,
        grad_h_n=grad_h_n,
        hs=hs,
        gates=gates,
        xhat=xhat,
        rstd=rstd,
        w_hh=w_hh,
        ln_w=ln_w,
        variant=variant,
        lengths=lengths,
        allow_tf32=allow_tf32,
        config=config,
        zoneout=zoneout,
    )
    T, B, H = gates.shape[0], hs.shape[1], hs.shape[2]
    plan = plan_launch(config, B, H, hs.device, head_dim_of(w_hh))
    _launch(layernorm_gru_backward_kernel, "layernorm-backward", variant, plan, T, args)
    return args["dgates_x_ptr"], args["dln_ptr"], args["da_ptr"], args["carry_ptr"]


def stress_arguments(programs: int, steps: int, max_delay_ns: int, device: torch.device | str) -> dict:
    """The keyword arguments (launch options included) of :func:`stress_barrier`'s launch, its buffers
    allocated on ``device`` (``"meta"``: what compiling it needs, without memory or a GPU)."""
    return dict(
        tags_ptr=torch.full((2, programs), -1, dtype=torch.int32, device=device),
        errors_ptr=torch.zeros(1, dtype=torch.int32, device=device),
        sync_ptr=torch.zeros(1, dtype=torch.int32, device=device),
        steps=steps,
        max_delay=max_delay_ns,
        spin_limit=_spin_limit(),
        BLOCK=triton.next_power_of_2(programs),
        num_warps=1,
        launch_cooperative_grid=True,
    )


def stress_barrier(programs: int, steps: int, max_delay_ns: int, device: torch.device) -> int:
    """Run the grid barrier alone (:func:`~tritongru.kernels.grid_sync.barrier_stress_kernel`) with ``programs``
    programs for ``steps`` steps, each program waiting up to ``max_delay_ns`` at random before it arrives;
    return how many stale tags the programs saw after a barrier (0 when the barrier holds). Raises like every
    grid-synchronised launch when a barrier times out."""
    call = stress_arguments(programs, steps, max_delay_ns, device)
    errors, sync = call["errors_ptr"], call["sync_ptr"]
    with _on_device(device):
        if not _fits_at_once(barrier_stress_kernel, (programs,), call, device):
            raise ValueError(f"{programs} programs cannot all be resident on {device} at once")
        barrier_stress_kernel[(programs,)](**call)
        _check_barriers(sync, programs * steps)
        check_grid_barriers()
    return int(errors.item())


class MmaRateShape(NamedTuple):
    """A tile shape of :func:`~tritongru.kernels.calibrate.mma_rate_kernel`: ``a [block_m, block_k] @ b [block_k,
    block_n]`` on ``num_warps`` warps, ``programs_per_sm`` of them launched per SM."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    programs_per_sm: int


MMA_RATE_SHAPES = {
    "mma.sync": MmaRateShape(block_m=16, block_n=64, block_k=64, num_warps=1, programs_per_sm=16),
    "wgmma": MmaRateShape(block_m=64, block_n=16, block_k=64, num_warps=4, programs_per_sm=4),
}
"""The instruction each shape compiles to for sm_90 (checked by ``tests/test_calibrate.py``): 16 rows on one warp,
as today's kernels multiply (16 warps an SM); 64 rows on one warpgroup, the gate rows as M (4 warpgroups an
SM)."""

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


def mma_rate_arguments(instruction: str, precision: str, programs: int, iters: int, device: torch.device | str) -> dict:
    """The keyword arguments (launch options included) of :func:`mma_rate`'s launch: ``programs`` programs of
    the :data:`MMA_RATE_SHAPES` shape of ``instruction``, ``iters`` products each, in ``precision`` (bf16,
    fp16, tf32 or fp32); ``device`` ``"meta"``: what compiling it needs."""
    if instruction not in MMA_RATE_SHAPES:
        raise ValueError(f"instruction must be one of {tuple(MMA_RATE_SHAPES)}; got {instruction!r}")
    if precision not in PRECISIONS or PRECISIONS[precision].dtype not in _TL_DTYPES:
        raise ValueError(f"the tensor cores take bf16, fp16, tf32 or fp32; got {precision!r}")
    p = PRECISIONS[precision]
    shape = MMA_RATE_SHAPES[instruction]
    return dict(
        out_ptr=torch.empty((programs, shape.block_m, shape.block_n), dtype=torch.float32, device=device),
        iters=iters,
        OPERAND_DTYPE=_TL_DTYPES[p.dtype],
        DOT_PRECISION=p.dot_precision,
        BLOCK_M=shape.block_m,
        BLOCK_N=shape.block_n,
        BLOCK_K=shape.block_k,
        num_warps=shape.num_warps,
    )


def mma_rate(instruction: str, precision: str, programs: int, iters: int, device: torch.device) -> torch.Tensor:
    """Launch :func:`~tritongru.kernels.calibrate.mma_rate_kernel` (see :func:`mma_rate_arguments`); returns its
    output ``[programs, block_m, block_n]``: ``iters`` times each program's ``a @ b``."""
    call = mma_rate_arguments(instruction, precision, programs, iters, device)
    with _on_device(device):
        mma_rate_kernel[(programs,)](**call)
    return call["out_ptr"]


L2_LINE_WORDS = 32
"""int32 words in a 128-byte cache line: :func:`l2_chase_links` links one word a line."""


def l2_chase_links(lines: int, seed: int = 0) -> torch.Tensor:
    """``next`` of :func:`l2_chase` on the CPU: ``lines`` 128-byte lines in one random cycle, each line's first
    word the index of the next line's first word (the other words zero), so every load is a line of its own."""
    order = torch.randperm(lines, generator=torch.Generator().manual_seed(seed))
    links = torch.zeros(lines * L2_LINE_WORDS, dtype=torch.int32)
    links[order * L2_LINE_WORDS] = (torch.roll(order, -1) * L2_LINE_WORDS).int()
    return links


def l2_chase_arguments(links: torch.Tensor, hops: int) -> dict:
    """The keyword arguments (launch options included) of :func:`l2_chase`'s launch (``links`` may be a meta
    tensor: what compiling it needs)."""
    return dict(next_ptr=links, out_ptr=torch.empty(1, dtype=torch.int32, device=links.device), hops=hops, num_warps=1)


def l2_chase(links: torch.Tensor, hops: int) -> int:
    """Follow ``hops`` links of ``links`` (:func:`l2_chase_links`, on the device) from index 0 in one program
    (:func:`~tritongru.kernels.calibrate.l2_chase_kernel`), each a load past L1 waiting for the one before;
    returns the index reached."""
    call = l2_chase_arguments(links, hops)
    with _on_device(links.device):
        l2_chase_kernel[(1,)](**call)
    return int(call["out_ptr"].item())
