"""The ``tritongru`` command line.

- ``tritongru bench``: time tritongru against cuDNN and the other contenders, write a results file and its
  plots under ``profiling/results/<gpu>/``. Without CUDA: a small functional comparison through Triton's CPU
  interpreter against torch's CPU GRU, whose timings mean nothing.
- ``tritongru tune``: sweep block sizes, warps and stages; write winners to the tuning cache and the sweep to
  a results file (with its tuning-landscape plots).
- ``tritongru plot [FILE_OR_DIR ...]``: draw the figures of existing results files.
- ``tritongru info``: device, versions, cache paths and which optional peers are importable.
- ``tritongru selftest [--budget S] [--out DIR] [--plan]``: the proof on a GPU within a budget (420 s): the
  kernels precompiled in parallel, the grid barrier under stress (then timed), a smoke check of every kernel, the
  benchmark against cuDNN over the target region with a table of speed-ups, the layer stress, the tensor cores'
  rate and an L2 round trip alone, the CUDA tests; ``--plan`` prints its stages and estimates on any machine.

Triton decides whether a kernel runs through its interpreter when the kernel is defined, so that must be
settled before ``tritongru.kernels`` is imported. Importing this module imports the package (and with it the
kernels); on a machine without CUDA, ``bench`` and ``tune`` therefore rerun themselves once in a fresh Python
with ``TRITON_INTERPRET=1`` unless it was already set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tritongru.configs import KERNELS
from tritongru.environment import interpreting
from tritongru.harness.grids import GRIDS, MEASURED_PRECISIONS, MODES
from tritongru.variants import VARIANTS

CPU_BANNER = (
    "No CUDA device: tritongru ran through Triton's CPU interpreter and was compared with torch's CPU GRU.\n"
    "This is a functional check (see max_abs_err); the timings below mean nothing about speed."
)


def _rerun_with_interpreter(argv: Sequence[str]) -> int | None:
    """Settle the interpreter question before any kernel runs.

    Returns None when this process can go on (CUDA present, the interpreter already on, or the kernels not
    imported yet, in which case it is switched on); else reruns the command with it on and returns its exit
    status."""
    if torch.cuda.is_available() or interpreting():
        return None
    if not any(name == "tritongru.kernels" or name.startswith("tritongru.kernels.") for name in sys.modules):
        os.environ["TRITON_INTERPRET"] = "1"
        return None
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.call([sys.executable, "-m", "tritongru.cli", *argv], env=env)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not interpreting() else "cpu")


def _draw(document: dict, path: Path, out: Path | None) -> list[Path]:
    from tritongru.harness import plots

    return plots.draw_all([document], out if out is not None else path.with_suffix(""))


def _bench(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from tritongru.harness import bench, results

    device = _device()
    grid = GRIDS[args.grid or ("quick" if device.type == "cuda" else "cpu")]
    overrides = {
        "batch": args.batch,
        "hidden": args.hidden,
        "seq_len": args.seq_len,
        "precisions": args.precisions,
        "modes": args.modes,
    }
    grid = replace(grid, **{k: tuple(v) for k, v in overrides.items() if v}, input_size=args.input_size)
    document = bench.run_bench(grid, providers=args.providers, device=device, progress=not args.quiet, seed=args.seed)
    path = results.write(document, args.out)
    if device.type != "cuda":
        print(CPU_BANNER)
    print(
        f"{'provider':<18} {'mode':<8} {'dtype':<5} {'B':>4} {'H':>5} {'T':>5} {'median ms':>10} "
        f"{'speed-up':>8} {'max err':>9}"
    )
    for row in document["rows"]:
        if row["status"] != "ok":
            print(f"{row['provider']:<18} {row['mode']:<8} skipped: {row['note']}")
            continue
        speedup = row["speedup_vs_baseline"]
        print(
            f"{row['provider']:<18} {row['mode']:<8} {row['dtype']:<5} {row['batch']:>4} {row['hidden']:>5} "
            f"{row['seq_len']:>5} {row['median_ms']:>10.4g} {speedup if speedup else float('nan'):>8.3g} "
            f"{row['max_abs_err']:>9.2g}"
        )
    print(f"results: {path}")
    if not args.no_plots:
        print(f"plots: {len(_draw(document, path, None))} files in {path.with_suffix('')}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from tritongru.harness import results, tuning

    device = _device()
    cuda = device.type == "cuda"
    document = tuning.sweep(
        kernels=args.kernels,
        variants=args.variants,
        precisions=args.precisions or ["fp32"],
        batches=args.batch or ([1, 16, 64, 256] if cuda else [3]),
        hiddens=args.hidden or ([256, 1024] if cuda else [20]),
        input_size=args.input_size,
        seq_len=args.seq_len or (64 if cuda else 3),
        device=device,
        tiny=args.space == "tiny" if args.space else not cuda,
        store_gates=args.store_gates,
        progress=not args.quiet,
        write_cache=args.write_cache,
        cache_dir=args.cache_dir,
    )
    path = results.write(document, args.out)
    if not cuda:
        print(
            "No CUDA device: configs were checked and run once through Triton's CPU interpreter; the times "
            "mean nothing, so no winner is cached unless --write-cache is given."
        )
    for winner in document["meta"]["winners"]:
        where = f" -> {winner['cache']}" if winner["cache"] else ""
        print(
            f"{winner['kernel']:<8} {winner['variant']:<7} {winner['dtype']:<5} B={winner['batch']:<4} "
            f"H={winner['hidden']:<5} {winner['config']}{where}"
        )
    print(f"sweep: {path}")
    if not args.no_plots:
        print(f"plots: {len(_draw(document, path, None))} files in {path.with_suffix('')}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from tritongru.harness import results

    files = []
    for target in map(Path, args.paths):
        files += results.find(target) if target.is_dir() else [target]
    if not files:
        print("no results files found", file=sys.stderr)
        return 1
    for path in files:
        document = results.load(path)
        written = _draw(document, path, Path(args.out) / path.stem if args.out else None)
        print(f"{path}: {results.describe(document)}")
        print(f"  {len(written)} plots in {written[0].parent if written else '-'}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from tritongru import __version__, tuning_cache
    from tritongru.environment import device_name, triton_version
    from tritongru.harness import results
    from tritongru.harness.providers import importable_peers

    cuda = torch.cuda.is_available()
    device = torch.device("cuda") if cuda else torch.device("cpu")
    commit, dirty = results.git_state()
    lines = {
        "tritongru": __version__,
        "device": device_name(device) if cuda else "cpu (no CUDA)",
        "kernels run": "on the GPU" if cuda and not interpreting() else "through Triton's CPU interpreter",
        "torch": torch.__version__,
        "triton": triton_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "git commit": f"{commit}{' (dirty)' if dirty else ''}" if commit else None,
        "kernels/ last changed": results.kernels_last_commit(),
        "user tuning cache": tuning_cache.user_cache_dir(),
        "shipped tuning cache": tuning_cache.SHIPPED_DIR,
    }
    for key, value in lines.items():
        print(f"{key:<22} {value}")
    for path in tuning_cache.search_paths(device_name(device)):
        print(f"{'cache file':<22} {path} ({'present' if path.exists() else 'absent'})")
    for peer, present in importable_peers().items():
        print(f"{'peer ' + peer:<22} {'importable' if present else 'not installed'}")
    return 0


def _selftest(args: argparse.Namespace) -> int:
    from tritongru.harness import selftest

    if args.plan:
        return selftest.plan(args.budget)
    return selftest.run_selftest(Path(args.repo), Path(args.out or selftest.default_out()), budget_s=args.budget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritongru", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def sizes(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--batch", type=int, nargs="+", help="batch sizes")
        sub.add_argument("--hidden", type=int, nargs="+", help="hidden sizes")
        sub.add_argument("--input-size", type=int, default=None, help="input size (default: the hidden size)")
        sub.add_argument("--precisions", nargs="+", choices=MEASURED_PRECISIONS)
        sub.add_argument("--out", default="profiling/results", help="results root (default: %(default)s)")
        sub.add_argument("--no-plots", action="store_true", help="write the results file only")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")

    bench = commands.add_parser("bench", help="compare tritongru with cuDNN and other contenders")
    bench.add_argument("--grid", choices=tuple(GRIDS), help="preset grid (default: quick with CUDA, cpu without)")
    sizes(bench)
    bench.add_argument("--seq-len", type=int, nargs="+", help="sequence lengths (default: the grid's)")
    bench.add_argument("--modes", nargs="+", choices=MODES)
    bench.add_argument(
        "--providers",
        nargs="+",
        help="contenders (default: tritongru both forms, the baseline, the eager cell loop); also compiled-ref, "
        "torchrl, flag_gems, flashrnn, tritongru-cudnn-tagged (the cudnn form, its forward with the tagged "
        "exchange), and the research variants tritongru-heads, reference-heads, tritongru-zoneout, "
        "reference-zoneout, tritongru-layernorm, reference-layernorm",
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(handler=_bench)

    tune = commands.add_parser("tune", help="autotune block sizes and write winners to the tuning cache")
    tune.add_argument("--kernels", nargs="+", default=list(KERNELS), choices=KERNELS)
    tune.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    sizes(tune)
    tune.add_argument(
        "--seq-len",
        type=int,
        help="the one sequence length the sequence kernels are tuned at (default: 64 with "
        "CUDA, 3 without); winners hold for every length",
    )
    tune.add_argument("--space", choices=("full", "tiny"), help="search space (default: full with CUDA)")
    tune.add_argument(
        "--store-gates",
        action="store_true",
        help="tune the forward and cell kernels as training runs them, saving gates for backward",
    )
    tune.add_argument(
        "--write-cache",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write winners to the cache (default: only with CUDA)",
    )
    tune.add_argument("--cache-dir", default=None, help="cache directory (default: the user cache)")
    tune.set_defaults(handler=_tune)

    plot = commands.add_parser("plot", help="draw the figures of results files")
    plot.add_argument(
        "paths",
        nargs="*",
        default=["profiling/results"],
        help="results files or directories holding them (default: %(default)s)",
    )
    plot.add_argument("--out", default=None, help="directory for the PNGs (default: beside each file)")
    plot.set_defaults(handler=_plot)

    info = commands.add_parser("info", help="device, versions, cache paths, optional peers")
    info.set_defaults(handler=_info)

    selftest = commands.add_parser(
        "selftest",
        help="prove the kernels on a GPU within a time budget: precompile, barrier stress, smoke check, benchmark "
        "against cuDNN, layer stress, calibration, CUDA tests",
    )
    selftest.add_argument(
        "--budget", type=float, default=420, help="seconds the whole run may take (default: %(default)s)"
    )
    selftest.add_argument(
        "--out",
        default=None,
        help="the one flat folder it writes (default: profiling/results/selftest-<UTC time>)",
    )
    selftest.add_argument(
        "--plan",
        action="store_true",
        help="print the stages, their kernels and estimated seconds, no GPU needed; exit 1 over the budget",
    )
    selftest.add_argument("--repo", default=".", help="the repository whose tests run (default: %(default)s)")
    selftest.set_defaults(handler=_selftest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command in ("bench", "tune"):
        status = _rerun_with_interpreter(argv)
        if status is not None:
            return status
    if args.command == "selftest" and interpreting():
        # the plan reads what the real compiler specialises, and the run needs it: never the interpreter
        env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "tritongru.cli", *argv], env=env)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
