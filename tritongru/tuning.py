"""The autotuning harness: search, prune, check, time, keep the winner, log the whole sweep.

For one kernel (``"forward"``, ``"backward"`` or ``"cell"``), formulation, dtype and problem size:

1. :func:`candidates` expands the declared :data:`SEARCH_SPACE` into ``KernelConfig`` objects;
2. :func:`prune` drops the configs that cannot fit (tile larger than the problem, more threads than tile
   elements, shared-memory or register estimates over the device's limits), with the reason;
3. every remaining config runs once and its output is checked against the plain-PyTorch reference in float64
   (:func:`make_problem`); a config whose output is wrong is rejected and never timed, so it cannot win;
4. the survivors are timed: on a GPU with ``triton.testing.do_bench`` (median and p20/p80 after warm-up,
   device events); under Triton's CPU interpreter one wall-clock run, labelled ``"interpreter"``, which says
   only that the config runs;
5. the fastest is written to the tuning cache (:mod:`tritongru.tuning_cache`) under the key the launchers look
   up, and every candidate's row (pruned, rejected and timed) is returned for the tuning-landscape plot.

The cache key never holds the sequence length: the time loop repeats one step, so the config that wins at the
tuning length wins at any length.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tritongru import launchers, results, tuning_cache
from tritongru.bench import PRECISIONS
from tritongru.configs import KERNELS, KernelConfig, heuristic_config
from tritongru.environment import interpreting
from tritongru.reference import gru_cell_ref, gru_layer_ref
from tritongru.variants import check_variant

_SEQUENCE_SPACE = {
    "block_b": (16, 32, 64),
    "block_h": (32, 64, 128),
    "block_k": (32, 64),
    "num_warps": (4, 8),
    "num_stages": (1, 2),
    "persistent": (True, False),
}
SEARCH_SPACE: dict[str, dict[str, tuple]] = {
    "forward": _SEQUENCE_SPACE,
    "backward": _SEQUENCE_SPACE,
    "cell": {**_SEQUENCE_SPACE, "block_k": (32, 64, 128), "persistent": (True,)},
}
"""The declared search space per kernel: 144 configs for the sequence kernels, 108 for the cell (always one
launch, so persistent only), before pruning. Kept small on purpose: every config costs a compile, and a full
``tritongru tune`` should finish in well under an hour."""

TINY_SPACE: dict[str, tuple] = {
    "block_b": (16,),
    "block_h": (16, 32),
    "block_k": (16, 32),
    "num_warps": (4,),
    "num_stages": (1,),
    "persistent": (True, False),
}
"""A few configs for the CPU interpreter and tests, where warps and stages mean nothing."""

TOLERANCE = {
    ("float64", False): 1e-9,
    ("float32", False): 1e-4,
    ("float32", True): 1e-2,
    ("bfloat16", False): 6e-2,
    ("float16", False): 1e-2,
}
"""Allowed ``|out - ref| <= tol * (1 + |ref|)`` per (storage dtype, TF32) against the float64 reference."""


@dataclass(frozen=True)
class DeviceLimits:
    """Per-block budgets a config must fit: shared memory in bytes and 32-bit registers."""

    shared_memory: int
    registers: int
    registers_per_thread: int = 255


NOMINAL_LIMITS = DeviceLimits(shared_memory=101_376, registers=65_536)
"""The budget assumed where the device cannot be asked (CPU interpreter): an A100-class GPU's."""


def device_limits(device: torch.device) -> DeviceLimits:
    """The shared-memory and register budgets of ``device`` (:data:`NOMINAL_LIMITS` off CUDA)."""
    if device.type != "cuda":
        return NOMINAL_LIMITS
    props = torch.cuda.get_device_properties(device)
    shared = getattr(props, "shared_memory_per_block_optin", 0) or getattr(props, "shared_memory_per_block", 0)
    registers = getattr(props, "regs_per_multiprocessor", 0) or NOMINAL_LIMITS.registers
    return DeviceLimits(shared_memory=shared or NOMINAL_LIMITS.shared_memory, registers=min(registers, 65_536))


def search_space(kernel: str, *, tiny: bool = False) -> dict[str, tuple]:
    """The search space of ``kernel``; ``tiny`` gives :data:`TINY_SPACE` (persistent only for the cell)."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if not tiny:
        return SEARCH_SPACE[kernel]
    return {**TINY_SPACE, "persistent": (True,)} if kernel == "cell" else TINY_SPACE


def candidates(kernel: str, space: dict[str, Sequence] | None = None) -> list[KernelConfig]:
    """Every config of the Cartesian product of ``space`` (default: the kernel's :data:`SEARCH_SPACE`)."""
    space = space if space is not None else search_space(kernel)
    names = ("block_b", "block_h", "block_k", "num_warps", "num_stages", "persistent")
    return [
        KernelConfig(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*(space[name] for name in names))
    ]


def _cover(n: int) -> int:
    """The smallest legal tile (a power of two >= 16) that covers ``n``."""
    return max(16, 1 << max(0, n - 1).bit_length())


def estimate_shared_memory(config: KernelConfig, dtype: torch.dtype) -> int:
    """Bytes of shared memory a program stages: per pipeline stage, an ``h`` tile ``[block_b, block_k]`` and
    the three gates' weight tiles ``[block_k, block_h]`` in the storage dtype (fp32 for TF32 and IEEE)."""
    elements = config.block_b * config.block_k + 3 * config.block_k * config.block_h
    return elements * dtype.itemsize * max(1, config.num_stages)


def estimate_registers(config: KernelConfig, dtype: torch.dtype) -> int:
    """32-bit registers per thread: three fp32 gate accumulators ``[block_b, block_h]`` and one stage of
    operand tiles, spread over ``32 * num_warps`` threads, plus a fixed 32 for addresses and loop state."""
    words_per_acc = 2 if dtype == torch.float64 else 1
    accumulators = 3 * config.block_b * config.block_h * words_per_acc
    operands = (config.block_b * config.block_k + 3 * config.block_k * config.block_h) * dtype.itemsize / 4
    return math.ceil((accumulators + operands) / (32 * config.num_warps)) + 32


def prune_reason(
    config: KernelConfig,
    *,
    kernel: str,
    batch: int,
    hidden: int,
    input_size: int,
    dtype: torch.dtype,
    limits: DeviceLimits,
) -> str | None:
    """Why ``config`` cannot (or need not) run this problem, or ``None`` when it is worth trying."""
    if kernel == "cell" and not config.persistent:
        return "the cell kernel runs as one launch: persistent only"
    if config.block_b > _cover(batch):
        return f"block_b {config.block_b} > {_cover(batch)}, which already covers batch {batch}"
    if config.block_h > _cover(hidden):
        return f"block_h {config.block_h} > {_cover(hidden)}, which already covers hidden {hidden}"
    reduction = max(hidden, input_size) if kernel == "cell" else hidden
    if config.block_k > _cover(reduction):
        return f"block_k {config.block_k} > {_cover(reduction)}, which already covers K {reduction}"
    threads = 32 * config.num_warps
    if config.block_b * config.block_h < threads:
        return f"{threads} threads for a {config.block_b}x{config.block_h} tile"
    shared = estimate_shared_memory(config, dtype)
    if shared > limits.shared_memory:
        return f"shared memory ~{shared} B > {limits.shared_memory} B"
    registers = estimate_registers(config, dtype)
    if registers > limits.registers_per_thread or registers * threads > limits.registers:
        return f"~{registers} registers per thread x {threads} threads over the budget"
    return None


def prune(
    configs: Sequence[KernelConfig],
    *,
    kernel: str,
    batch: int,
    hidden: int,
    input_size: int,
    dtype: torch.dtype,
    limits: DeviceLimits,
) -> tuple[list[KernelConfig], list[tuple[KernelConfig, str]]]:
    """Split ``configs`` into those worth timing and ``(config, reason)`` for those pruned."""
    kept, pruned = [], []
    for config in configs:
        reason = prune_reason(
            config,
            kernel=kernel,
            batch=batch,
            hidden=hidden,
            input_size=input_size,
            dtype=dtype,
            limits=limits,
        )
        if reason is None:
            kept.append(config)
        else:
            pruned.append((config, reason))
    return kept, pruned


@dataclass
class Problem:
    """One tuning problem. ``run(config)`` launches the kernel under ``config`` and returns what the launcher
    returned (this is what is timed); ``compare(outputs)`` turns that into the tensors checked against
    ``expected``, the float64 reference."""

    kernel: str
    variant: str
    dtype: torch.dtype
    allow_tf32: bool
    batch: int
    hidden: int
    input_size: int
    seq_len: int
    device: torch.device
    run: Callable[[KernelConfig | None], tuple]
    compare: Callable[[tuple], tuple[torch.Tensor, ...]]
    expected: tuple[torch.Tensor, ...]


def make_problem(
    kernel: str,
    *,
    variant: str,
    dtype: torch.dtype,
    batch: int,
    hidden: int,
    input_size: int,
    seq_len: int,
    device: torch.device,
    allow_tf32: bool = False,
    seed: int = 0,
) -> Problem:
    """Fresh random inputs and weights in ``dtype`` on ``device`` for ``kernel``, with the float64 reference.

    ``forward``: the sequence ``[seq_len, batch]`` from ``gi = x W_ih^T + b_ih``; compares every ``h_t``.
    ``backward``: BPTT of a random output gradient; compares ``dgi``, ``dh0`` (and ``dW_hh`` for cudnn).
    ``cell``: one fused step on ``x [batch, input_size]``; compares ``h'``.
    """
    check_variant(variant)
    generator = torch.Generator().manual_seed(seed)
    bound = hidden**-0.5

    def uniform(*shape: int) -> torch.Tensor:
        values = (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        return values.to(device=device, dtype=dtype)

    def normal(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)

    w_ih, w_hh = uniform(3 * hidden, input_size), uniform(3 * hidden, hidden)
    b_ih, b_hh = uniform(3 * hidden), uniform(3 * hidden)
    h0 = normal(batch, hidden) * 0.5
    common = dict(
        kernel=kernel,
        variant=variant,
        dtype=dtype,
        allow_tf32=allow_tf32,
        batch=batch,
        hidden=hidden,
        input_size=input_size,
        seq_len=seq_len,
        device=device,
    )
    f64 = lambda t: t.detach().to(torch.float64)

    if kernel == "cell":
        x = normal(batch, input_size)

        def run_cell(config: KernelConfig | None) -> tuple:
            return launchers.cell_forward(
                x,
                h0,
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                variant=variant,
                allow_tf32=allow_tf32,
                config=config,
            )

        expected = gru_cell_ref(f64(x), f64(h0), f64(w_ih), f64(w_hh), f64(b_ih), f64(b_hh), variant=variant)
        return Problem(**common, run=run_cell, compare=lambda out: (out[0],), expected=(expected,))

    x = normal(seq_len, batch, input_size)
    gi = (f64(x) @ f64(w_ih).T + f64(b_ih)).to(dtype)
    eye = torch.eye(3 * hidden, dtype=torch.float64, device=device)
    if kernel == "forward":

        def run_forward(config: KernelConfig | None) -> tuple:
            return launchers.forward_sequence(
                gi,
                h0,
                w_hh,
                b_hh,
                variant=variant,
                allow_tf32=allow_tf32,
                config=config,
            )

        output, _ = gru_layer_ref(f64(gi), f64(h0), eye, f64(w_hh), None, f64(b_hh), variant=variant)
        return Problem(**common, run=run_forward, compare=lambda out: (out[0][1:],), expected=(output,))

    if kernel != "backward":
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    hs, gates = launchers.forward_sequence(
        gi,
        h0,
        w_hh,
        b_hh,
        variant=variant,
        store_gates=True,
        allow_tf32=allow_tf32,
        config=heuristic_config("forward", batch, hidden),
    )
    grad_out = torch.randn(seq_len, batch, hidden, generator=generator, dtype=torch.float64).to(device)
    grad_hs = torch.zeros((seq_len + 1, batch, hidden), dtype=hs.dtype, device=device)
    grad_hs[1:] = grad_out.to(hs.dtype)

    def run_backward(config: KernelConfig | None) -> tuple:
        return launchers.backward_sequence(
            grad_hs,
            hs,
            gates,
            w_hh,
            variant=variant,
            allow_tf32=allow_tf32,
            config=config,
        )

    def compare_backward(outputs: tuple) -> tuple[torch.Tensor, ...]:
        """``dgi`` and ``dh0``; for cudnn also ``dW_hh = sum_t [dar, daz, dhn]^T h_{t-1}``."""
        dgates_x, dgates_hn, dh0 = outputs
        if dgates_hn is None:
            return dgates_x, dh0
        dgates_h = torch.cat([dgates_x[..., : 2 * hidden], dgates_hn], dim=-1)
        return dgates_x, dh0, torch.einsum("tbg,tbh->gh", f64(dgates_h), f64(hs[:-1]))

    gi_ref = f64(gi).requires_grad_()
    h0_ref = f64(h0).requires_grad_()
    w_hh_ref = f64(w_hh).requires_grad_()
    output, _ = gru_layer_ref(gi_ref, h0_ref, eye, w_hh_ref, None, f64(b_hh), variant=variant)
    output.backward(grad_out)
    expected = (gi_ref.grad, h0_ref.grad)
    if variant == "cudnn":
        expected += (w_hh_ref.grad,)
    return Problem(**common, run=run_backward, compare=compare_backward, expected=expected)


def max_error(outputs: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    """The largest ``|out - ref| / (1 + |ref|)`` over all outputs (inf for a NaN, a shape mismatch)."""
    worst = 0.0
    for out, ref in zip(outputs, expected, strict=True):
        if out.shape != ref.shape:
            return math.inf
        error = ((out.detach().to(torch.float64) - ref).abs() / (1 + ref.abs())).max().item()
        if not math.isfinite(error):
            return math.inf
        worst = max(worst, error)
    return worst


def tolerance(dtype: torch.dtype, allow_tf32: bool) -> float:
    return TOLERANCE[(tuning_cache.dtype_name(dtype), allow_tf32 and dtype == torch.float32)]


Timer = Callable[[Callable[[], object], KernelConfig], tuple[float, float, float]]
"""``timer(fn, config) -> (median_ms, p20_ms, p80_ms)``."""


def device_timer(fn: Callable[[], object], config: KernelConfig) -> tuple[float, float, float]:
    """Median, p20 and p80 in ms over repetitions after warm-up, timed with device events."""
    import triton.testing

    median, p20, p80 = triton.testing.do_bench(fn, warmup=25, rep=100, quantiles=[0.5, 0.2, 0.8])
    return median, p20, p80


def interpreter_timer(fn: Callable[[], object], config: KernelConfig) -> tuple[float, float, float]:
    """One wall-clock run under the CPU interpreter: proves the config runs, says nothing about speed."""
    start = time.perf_counter()
    fn()
    elapsed = (time.perf_counter() - start) * 1e3
    return elapsed, elapsed, elapsed


def cache_input_size(kernel: str, input_size: int) -> int:
    """The input size the launchers look the kernel up with: the sequence kernels never read the input
    (its projection is one GEMM outside them), so they are filed under 0."""
    return input_size if kernel == "cell" else 0


@dataclass
class TuneResult:
    """The outcome of :func:`tune`: the winner (None when nothing passed) and every candidate's row."""

    winner: KernelConfig | None
    rows: list[dict] = field(default_factory=list)
    cache_path: str | None = None


def _row(problem: Problem, config: KernelConfig, status: str, reason: str = "", **values: object) -> dict:
    row = {
        "kernel": problem.kernel,
        "variant": problem.variant,
        "dtype": "tf32"
        if problem.allow_tf32 and problem.dtype == torch.float32
        else tuning_cache.dtype_name(problem.dtype),
        "batch": problem.batch,
        "hidden": problem.hidden,
        "input_size": problem.input_size,
        "seq_len": problem.seq_len,
        **config.to_dict(),
        "status": status,
        "reason": reason,
        "median_ms": None,
        "p20_ms": None,
        "p80_ms": None,
        "max_abs_err": None,
        "winner": False,
    }
    row.update(values)
    return row


def tune(
    problem: Problem,
    *,
    space: dict[str, Sequence] | None = None,
    limits: DeviceLimits | None = None,
    timer: Timer | None = None,
    progress: bool = True,
    write_cache: bool | None = None,
    cache_dir: Path | str | None = None,
) -> TuneResult:
    """Sweep ``space`` for ``problem``: prune, check each config against the reference, time, keep the best.

    ``timer`` defaults to device events on CUDA and a single labelled wall-clock run under the interpreter.
    ``write_cache`` defaults to True on a GPU and False under the interpreter (whose times mean nothing).
    """
    interpreter = interpreting() or problem.device.type != "cuda"
    timer = timer or (interpreter_timer if interpreter else device_timer)
    limits = limits or device_limits(problem.device)
    configs = candidates(problem.kernel, space if space is not None else search_space(problem.kernel))
    kept, pruned = prune(
        configs,
        kernel=problem.kernel,
        batch=problem.batch,
        hidden=problem.hidden,
        input_size=problem.input_size,
        dtype=problem.dtype,
        limits=limits,
    )
    rows = [_row(problem, config, "pruned", reason) for config, reason in pruned]
    allowed = tolerance(problem.dtype, problem.allow_tf32)
    best: tuple[float, KernelConfig, dict] | None = None
    description = f"tune {problem.kernel}/{problem.variant} B={problem.batch} H={problem.hidden}"
    for config in tqdm(kept, desc=description, disable=not progress, leave=False):
        try:
            error = max_error(problem.compare(problem.run(config)), problem.expected)
        except Exception as failure:  # a config the compiler or launcher refuses is recorded, not fatal
            rows.append(_row(problem, config, "error", f"{type(failure).__name__}: {failure}"))
            continue
        if error > allowed:
            reason = f"error {error:.3g} > {allowed:g}"
            rows.append(_row(problem, config, "rejected", reason, max_abs_err=error))
            continue
        median, p20, p80 = timer(lambda config=config: problem.run(config), config)
        row = _row(problem, config, "ok", max_abs_err=error, median_ms=median, p20_ms=p20, p80_ms=p80)
        rows.append(row)
        if best is None or median < best[0]:
            best = (median, config, row)
    result = TuneResult(winner=None, rows=rows)
    if best is None:
        return result
    median, winner, row = best
    row["winner"] = True
    result.winner = winner
    if write_cache if write_cache is not None else not interpreter:
        key = tuning_cache.entry_key(
            problem.kernel,
            variant=problem.variant,
            dtype=problem.dtype,
            batch=problem.batch,
            hidden=problem.hidden,
            input_size=cache_input_size(problem.kernel, problem.input_size),
            allow_tf32=problem.allow_tf32,
        )
        entry = {
            "config": winner.to_dict(),
            "median_ms": median,
            "batch": problem.batch,
            "seq_len": problem.seq_len,
            "allow_tf32": problem.allow_tf32,
            "timing": "interpreter" if interpreter else "device-events",
            "tuned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = tuning_cache.store(
            {key: entry},
            device=tuning_cache.device_name(problem.device),
            directory=None if cache_dir is None else Path(cache_dir),
        )
        result.cache_path = str(path)
    return result


def sweep(
    *,
    kernels: Sequence[str],
    variants: Sequence[str],
    precisions: Sequence[str],
    batches: Sequence[int],
    hiddens: Sequence[int],
    input_size: int | None,
    seq_len: int,
    device: torch.device,
    tiny: bool = False,
    progress: bool = True,
    write_cache: bool | None = None,
    cache_dir: Path | str | None = None,
) -> dict:
    """Tune every (kernel, variant, precision, batch, hidden) and return the whole sweep as a results document
    (``kind="tune"``); winners go to the cache as :func:`tune` decides. ``input_size=None`` means ``hidden``."""
    interpreter = interpreting() or device.type != "cuda"
    rows, winners = [], []
    jobs = list(itertools.product(kernels, variants, precisions, batches, hiddens))
    for kernel, variant, precision, batch, hidden in tqdm(jobs, desc="tune", disable=not progress):
        dtype, tf32 = PRECISIONS[precision]
        problem = make_problem(
            kernel,
            variant=variant,
            dtype=dtype,
            allow_tf32=tf32,
            batch=batch,
            hidden=hidden,
            input_size=input_size or hidden,
            seq_len=1 if kernel == "cell" else seq_len,
            device=device,
        )
        outcome = tune(
            problem,
            space=search_space(kernel, tiny=tiny),
            progress=progress,
            write_cache=write_cache,
            cache_dir=cache_dir,
        )
        rows += outcome.rows
        winners.append(
            {
                "kernel": kernel,
                "variant": variant,
                "dtype": precision,
                "batch": batch,
                "hidden": hidden,
                "config": outcome.winner.to_dict() if outcome.winner else None,
                "cache": outcome.cache_path,
            }
        )
    meta = results.environment(device, interpreter=interpreter)
    meta.update(
        space="tiny" if tiny else "full",
        winners=winners,
        limits=asdict(device_limits(device)),
        notes=["CPU run: configs checked and run once through Triton's interpreter; times mean nothing."]
        if interpreter
        else [],
    )
    return results.new_document("tune", meta, rows)
