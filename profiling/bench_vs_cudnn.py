"""Time tritongru against cuDNN and the other contenders over the issue's full grid.

    python profiling/bench_vs_cudnn.py                       # full grid: hours on one GPU
    python profiling/bench_vs_cudnn.py --grid quick          # minutes
    python profiling/bench_vs_cudnn.py --providers tritongru-cudnn cudnn compiled-ref flashrnn

Writes ``profiling/results/<gpu>/bench-<timestamp>.json`` and its plots beside it. Every option of
``tritongru bench`` is accepted; this script only changes the defaults (full grid, results in this folder).
Without CUDA it runs the small interpreter check instead, whose timings mean nothing.
"""

import sys
from pathlib import Path

import torch

from tritongru.cli import main

if __name__ == "__main__":
    defaults = ["--out", str(Path(__file__).resolve().parent / "results")]
    if torch.cuda.is_available() and "--grid" not in sys.argv:
        defaults += ["--grid", "full"]
    sys.exit(main(["bench", *defaults, *sys.argv[1:]]))
