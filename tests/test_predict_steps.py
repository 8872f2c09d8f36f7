"""The per-step launch's price in ``profiling/predict_steps.py``: programs that share an SM share its rates, so
no launch is priced faster than the whole GPU could move its bytes and do its products."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tritongru.configs import KernelConfig

PREDICT = runpy.run_path(str(Path(__file__).resolve().parents[1] / "profiling" / "predict_steps.py"))


@pytest.mark.parametrize("registers", [64, 128, 255])
@pytest.mark.parametrize(("batch", "hidden"), [(16, 768), (256, 1024), (512, 512)])
def test_a_per_step_launch_is_no_faster_than_the_whole_gpu(registers, batch, hidden):
    config = KernelConfig(16, 16, block_k=512, num_warps=8, persistent=False, split_k=True)
    kernels = [SimpleNamespace(registers=registers, shared=32 * 1024)]
    dtype = torch.bfloat16
    rate = PREDICT["CLOCK_GHZ"] * 1e3
    programs = -(-hidden // config.block_h) * -(-batch // config.block_b)
    chunk = (3 * config.block_h + config.block_b) * config.block_k * dtype.itemsize
    total_bytes = programs * -(-hidden // config.block_k) * chunk
    total_flops = programs * 2 * config.block_b * hidden * 3 * config.block_h
    whole_gpu = PREDICT["SM_COUNT"] * rate
    floor = max(
        total_bytes / (whole_gpu * PREDICT["L2_BYTES_PER_CLK_SM"]),
        total_flops / (whole_gpu * PREDICT["MMA_FLOP_PER_CLK_SM"][dtype.itemsize]),
    )
    overhead = PREDICT["LAUNCH_US"] + PREDICT["EPILOGUE_US"]
    step = PREDICT["per_step_us"](config, kernels, batch, hidden, dtype, 1)
    assert step >= overhead + floor * (1 - 1e-9)
