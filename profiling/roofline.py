"""Roofline of a bench results file: achieved TFLOP/s against arithmetic intensity, under measured peaks.

    python profiling/roofline.py                       # the newest bench file under profiling/results/
    python profiling/roofline.py path/to/bench-....json

Draws ``roofline-<precision>-<mode>.png`` beside the file and prints, per contender, the best fraction of the
measured matmul peak and copy bandwidth it reached. Reads results only; runs no kernel.
"""

import argparse
from pathlib import Path

from tritongru.harness import plots, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="a bench results file (default: the newest)")
    args = parser.parse_args()
    path = Path(args.path) if args.path else results.latest(Path(__file__).resolve().parent / "results", "bench")
    if path is None:
        raise SystemExit("no bench results yet: run `tritongru bench` first")
    document = results.load(path)
    print(results.describe(document))
    out = path.with_suffix("")
    out.mkdir(parents=True, exist_ok=True)
    rows = plots.select(document["rows"])
    for precision, mode in sorted({(r["dtype"], r["mode"]) for r in rows}):
        target = out / f"roofline-{precision}-{mode}.png"
        plots.roofline(document, precision=precision, mode=mode).savefig(target, dpi=110)
        print(f"\n{precision} {mode}: {target}")
        for provider in sorted({r["provider"] for r in rows}):
            mine = plots.select(rows, provider=provider, dtype=precision, mode=mode)
            if mine:
                compute = max(r["tflops_frac_of_peak"] for r in mine)
                memory = max(r["gbps_frac_of_peak"] for r in mine)
                print(f"  {provider:<18} best {compute:7.2%} of matmul peak, {memory:7.2%} of copy bandwidth")


if __name__ == "__main__":
    main()
