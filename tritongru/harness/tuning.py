"""The tuning sweep: search, prune, check, time, keep the winner, log every candidate.

For one problem (:mod:`tritongru.harness.problems`: a kernel, formulation, precision and size):

1. the kernel's search space is expanded and pruned (:mod:`tritongru.harness.search_space`), each pruned config
   with its reason;
2. every remaining config runs once and its output is checked against the float64 reference
   (:func:`~tritongru.harness.problems.gate_error`); a config whose output is wrong is rejected and never
   timed, so it cannot win;
3. the survivors are timed with the harness's one timer (:func:`tritongru.harness.timing.measure`): device
   events on a GPU, one labelled wall-clock run under the CPU interpreter, which says only that the config runs;
4. the fastest is written to the tuning cache (:mod:`tritongru.tuning_cache`) under the key the launchers look
   up (:func:`cache_key`), and every candidate's row (pruned, rejected, failed and timed) is returned for the
   tuning-landscape plot.

The cache key never holds the sequence length: the time loop repeats one step, so the config that wins at the
tuning length wins at any length. A cache that cannot be written costs a warning, never the sweep: the winner
stays in the returned rows and the results file.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tritongru import configs, tuning_cache
from tritongru.configs import KernelConfig
from tritongru.environment import device_name
from tritongru.harness import results, timing
from tritongru.harness.problems import Problem, gate_error, make_problem, max_abs_error
from tritongru.harness.search_space import (
    DeviceLimits,
    ProblemSpec,
    ResourceModel,
    candidates,
    default_resources,
    device_limits,
    prune,
    search_space,
)
from tritongru.precisions import PRECISIONS

Timer = Callable[[Callable[[], object], KernelConfig], tuple[float, float, float]]
"""``timer(fn, config) -> (median_ms, p20_ms, p80_ms)``; the default is :func:`tritongru.harness.timing.measure`
on the problem's device."""


def cache_input_size(kernel: str, input_size: int) -> int:
    """The input size the launchers look the kernel up with: the sequence kernels never read the input
    (its projection is one GEMM outside them), so they are filed under 0."""
    return input_size if kernel == "cell" else 0


def cache_key(spec: ProblemSpec) -> str:
    """The tuning-cache key of ``spec``: the key the launchers look up for the same launch."""
    return tuning_cache.entry_key(
        spec.kernel,
        variant=spec.variant,
        dtype=spec.precision.dtype,
        batch=spec.batch,
        hidden=spec.hidden,
        input_size=cache_input_size(spec.kernel, spec.input_size),
        allow_tf32=spec.precision.allow_tf32,
        store_gates=spec.store_gates,
    )


@dataclass
class TuneResult:
    """The outcome of :func:`tune`: the winner (None when nothing passed), every candidate's row, and the cache
    file the winner went to (None when it was not written)."""

    winner: KernelConfig | None
    rows: list[dict] = field(default_factory=list)
    cache_path: str | None = None


def _row(problem: Problem, config: KernelConfig, status: str, reason: str = "", **values: object) -> dict:
    spec = problem.spec
    row = {
        "kernel": spec.kernel,
        "variant": spec.variant,
        "dtype": spec.precision.name,
        "batch": spec.batch,
        "hidden": spec.hidden,
        "input_size": spec.input_size,
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
    resources: ResourceModel | None = None,
    timer: Timer | None = None,
    progress: bool = True,
    write_cache: bool | None = None,
    cache_dir: Path | str | None = None,
) -> TuneResult:
    """Sweep ``space`` for ``problem``: prune, check each config against the reference, time, keep the best.

    ``resources`` tells pruning what a config uses (default: read from the compiled kernels on a GPU, estimated
    elsewhere). ``write_cache`` defaults to True where times come from device events and False under the
    interpreter (whose times mean nothing).
    """
    spec = problem.spec
    timer = timer or (lambda fn, config: timing.measure(fn, device=problem.device))
    configs = candidates(spec.kernel, space if space is not None else search_space(spec.kernel))
    resources = resources or default_resources(problem.device)
    kept, pruned = prune(configs, spec, limits or device_limits(problem.device), resources)
    rows = [_row(problem, config, "pruned", reason) for config, reason in pruned]
    precision = spec.precision
    best: tuple[float, KernelConfig, dict] | None = None
    description = f"tune {spec.kernel}/{spec.variant} B={spec.batch} H={spec.hidden}"
    for config in tqdm(kept, desc=description, disable=not progress, leave=False):
        try:
            outputs = problem.compare(problem.run(config))
        except Exception as failure:  # a config the compiler or launcher refuses is recorded, not fatal
            rows.append(_row(problem, config, "error", f"{type(failure).__name__}: {failure}"))
            continue
        error = max_abs_error(outputs, problem.expected)
        excess = gate_error(outputs, problem.expected, precision)
        if excess > 1:
            tolerance = f"{precision.name} tolerance (atol {precision.atol:g}, rtol {precision.rtol:g})"
            reason = f"error {excess:.3g}x the {tolerance}"
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
    median, result.winner, row = best
    row["winner"] = True
    if write_cache if write_cache is not None else timing.device_events(problem.device):
        result.cache_path = _cache_winner(problem, result.winner, median, cache_dir)
    return result


def _cache_winner(problem: Problem, winner: KernelConfig, median: float, cache_dir: Path | str | None) -> str | None:
    """Merge ``winner`` into the device's cache file and return its path; warn and return None when the cache
    cannot be written (the winner is still in the sweep's rows)."""
    entry = {
        "config": winner.to_dict(),
        "median_ms": median,
        "batch": problem.spec.batch,
        "seq_len": problem.seq_len,
        "allow_tf32": problem.spec.precision.allow_tf32,
        "store_gates": problem.spec.store_gates,
        "timing": timing.timing_label(problem.device),
        "tuned_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    directory = tuning_cache.user_cache_dir() if cache_dir is None else Path(cache_dir)
    try:
        path = tuning_cache.store(
            {cache_key(problem.spec): entry}, device=device_name(problem.device), directory=directory
        )
    except OSError as error:
        warnings.warn(
            f"could not write the tuning cache in {directory} ({error}); the winner is kept in the sweep's results",
            stacklevel=3,
        )
        return None
    configs.clear_memo()  # this process's launchers see the new winner from their next call
    return str(path)


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
    store_gates: bool = False,
    resources: ResourceModel | None = None,
    progress: bool = True,
    write_cache: bool | None = None,
    cache_dir: Path | str | None = None,
) -> dict:
    """Tune every (kernel, variant, precision, batch, hidden) and return the whole sweep as a results document
    (``kind="tune"``); winners go to the cache as :func:`tune` decides. ``input_size=None`` means ``hidden``;
    ``store_gates`` tunes the forward and cell kernels as training runs them (saving gates for backward);
    ``resources`` is the resource model pruning uses (:mod:`tritongru.harness.search_space`)."""
    rows, winners = [], []
    jobs = list(itertools.product(kernels, variants, precisions, batches, hiddens))
    for kernel, variant, precision, batch, hidden in tqdm(jobs, desc="tune", disable=not progress):
        spec = ProblemSpec(
            kernel=kernel,
            variant=variant,
            precision=PRECISIONS[precision],
            batch=batch,
            hidden=hidden,
            input_size=input_size or hidden,
            store_gates=store_gates and kernel != "backward",
        )
        problem = make_problem(spec, seq_len=1 if kernel == "cell" else seq_len, device=device)
        outcome = tune(
            problem,
            space=search_space(kernel, tiny=tiny),
            resources=resources,
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
    interpreter = not timing.device_events(device)
    meta = results.environment(device, interpreter=interpreter)
    meta.update(
        space="tiny" if tiny else "full",
        store_gates=store_gates,
        winners=winners,
        limits=asdict(device_limits(device)),
        notes=["CPU run: configs checked and run once through Triton's interpreter; times mean nothing."]
        if interpreter
        else [],
    )
    return results.new_document("tune", meta, rows)
