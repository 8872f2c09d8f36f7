"""The rates stage's calibration kernel (``tritongru.kernels.calibrate``): exact products wherever it runs (the
interpreter on the CPU), a wrong output caught, the instruction each shape compiles to for sm_90 (``mma.sync``
on one warp of 16 rows, ``wgmma`` on a warpgroup of 64), and bad arguments refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tritongru import launchers
from tritongru.harness import selftest

INSTRUCTIONS = list(launchers.MMA_RATE_SHAPES)


@pytest.mark.parametrize("precision", ["bf16", "tf32", "fp16"])
@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_the_rate_kernel_multiplies_exactly(instruction, precision, device):
    """Three programs of seven products: each ``7 * (a @ b)`` of its own operands, exactly."""
    assert selftest.rate_check(instruction, precision, 3, 7, device) is None


def test_a_wrong_product_is_caught(monkeypatch, device):
    real = launchers.mma_rate

    def off_by_one(*args):
        out = real(*args)
        out[1, 2, 3] += 1
        return out

    monkeypatch.setattr(launchers, "mma_rate", off_by_one)
    assert selftest.rate_check("mma.sync", "bf16", 2, 3, device) == "1 of 2048 products wrong"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"instruction must be one of \('mma.sync', 'wgmma'\); got 'hmma'"):
        launchers.mma_rate_arguments("hmma", "bf16", 1, 1, "meta")
    with pytest.raises(ValueError, match=r"the tensor cores take bf16, fp16, tf32 or fp32; got 'fp64'"):
        launchers.mma_rate_arguments("wgmma", "fp64", 1, 1, "meta")
    with pytest.raises(ValueError, match=r"the tensor cores take bf16, fp16, tf32 or fp32; got 'int8'"):
        launchers.mma_rate_arguments("mma.sync", "int8", 1, 1, "meta")


COMPILED = """
import json, re
from tritongru import launchers
from tritongru.compiled import kernel_resources, time_loop
from tritongru.kernels.calibrate import mma_rate_kernel

for instruction in launchers.MMA_RATE_SHAPES:
    for precision in ("bf16", "tf32"):
        call = launchers.mma_rate_arguments(instruction, precision, 1, 1, "meta")
        found = kernel_resources(mma_rate_kernel, call, 90)
        loop = time_loop(found.ptx)
        print(json.dumps({
            "instruction": instruction, "precision": precision, "spills": found.spills,
            "mma.sync": sum(bool(re.match(r"mma\\.sync", line)) for line in loop),
            "wgmma": sum(line.startswith("wgmma.mma_async") for line in loop),
            "global loads": sum(line.startswith("ld.global") for line in loop),
        }))
"""


def test_each_shape_compiles_to_its_instruction_for_hopper():
    """Compiled for sm_90: the product loop issues only the instruction its shape is named for, and loads nothing
    from memory (the operands stay on chip, in registers or shared memory, as the recurrent kernels' weights)."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [(r["instruction"], r["precision"]) for r in reports] == [
        (instruction, precision) for instruction in INSTRUCTIONS for precision in ("bf16", "tf32")
    ]
    for report in reports:
        other = "wgmma" if report["instruction"] == "mma.sync" else "mma.sync"
        assert report[report["instruction"]] > 0 and report[other] == 0, report
        assert report["spills"] == 0 and report["global loads"] == 0, report
