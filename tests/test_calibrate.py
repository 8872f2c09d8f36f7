"""The calibrate stage's kernels (``tritongru.kernels.calibrate``). The rate kernel: exact products wherever it runs
(the interpreter on the CPU), a wrong output caught, the instruction each shape compiles to for sm_90
(``mma.sync`` on one warp of 16 rows, ``wgmma`` on a warpgroup of 64), bad arguments refused. The L2 chase: its
links one cycle through every line, the index it reaches, one load past L1 a link in its sm_90 loop."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

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


def test_the_chase_links_are_one_cycle_through_every_line():
    links = launchers.l2_chase_links(50, seed=3)
    words = launchers.L2_LINE_WORDS
    assert links.shape == (50 * words,) and links.dtype == torch.int32
    index, seen = 0, []
    for _ in range(50):
        seen.append(index)
        index = int(links[index])
    assert index == 0 and sorted(seen) == [line * words for line in range(50)]
    assert (links.view(50, words)[:, 1:] == 0).all(), "one word a line"


def test_the_chase_reaches_the_index_its_links_lead_to(monkeypatch, device):
    links = launchers.l2_chase_links(37, seed=1)
    assert selftest.chase_check(links, links.to(device), 100) is None
    real = launchers.l2_chase
    monkeypatch.setattr(launchers, "l2_chase", lambda links, hops: real(links, hops - 1))
    assert selftest.chase_check(links, links.to(device), 100).startswith("reached index ")


COMPILED = """
import json, re
import torch
from tritongru import launchers
from tritongru.compiled import kernel_resources, time_loop
from tritongru.kernels.calibrate import l2_chase_kernel, mma_rate_kernel

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
links = launchers.l2_chase_arguments(torch.empty(64, dtype=torch.int32, device="meta"), 1)
loop = time_loop(kernel_resources(l2_chase_kernel, links, 90).ptx)
print(json.dumps({"chase loads": [line.split()[0] for line in loop if line.startswith("ld.")]}))
"""


def test_each_kernel_compiles_to_what_it_measures_for_hopper():
    """Compiled for sm_90: each rate shape's loop issues only the instruction it is named for and loads nothing
    from memory (the operands stay on chip, in registers or shared memory, as the recurrent kernels' weights);
    the chase's loop is one load past L1."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", COMPILED], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    *reports, chase = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    (load,) = chase["chase loads"]
    assert load.startswith("ld.global.cg."), "one load past L1 a link, nothing else"
    assert [(r["instruction"], r["precision"]) for r in reports] == [
        (instruction, precision) for instruction in INSTRUCTIONS for precision in ("bf16", "tf32")
    ]
    for report in reports:
        other = "wgmma" if report["instruction"] == "mma.sync" else "mma.sync"
        assert report[report["instruction"]] > 0 and report[other] == 0, report
        assert report["spills"] == 0 and report["global loads"] == 0, report
