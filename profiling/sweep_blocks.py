"""Sweep block sizes, warps and stages of every kernel and draw the tuning landscape.

    python profiling/sweep_blocks.py                                  # all kernels, both forms, fp32 and bf16
    python profiling/sweep_blocks.py --kernels forward --hidden 512 1024 --batch 8 64

Winners go to the user tuning cache (``tritongru info`` prints where); the whole sweep goes to
``profiling/results/<gpu>/tune-<timestamp>.json`` with one landscape plot per kernel and form. To ship winners
for a GPU, copy the cache file into ``tritongru/tuned/``. Every option of ``tritongru tune`` is accepted.
"""

import sys
from pathlib import Path

import torch

from tritongru.cli import main

if __name__ == "__main__":
    defaults = ["--out", str(Path(__file__).resolve().parent / "results")]
    if torch.cuda.is_available():
        defaults += ["--precisions", "fp32", "bf16", "--batch", "1", "16", "64", "256"]
        defaults += ["--hidden", "256", "512", "1024"]
    sys.exit(main(["tune", *defaults, *sys.argv[1:]]))
