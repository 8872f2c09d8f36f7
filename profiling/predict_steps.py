"""Predict the µs per step of the weight-stationary kernels on an H100 from what their compiled code does.

    python profiling/predict_steps.py                      # the performance issue's sizes, bf16 and TF32
    python profiling/predict_steps.py --batch 16 --hidden 768 --precisions bf16

No GPU is needed (nor used): each size's config, as the launchers would take it on an H100, is compiled for
sm_90 (``tritongru.compile_check.compile_call``), and its time loop is read (``tritongru.compiled.step_facts``):
round trips to L2 for data other programs wrote, ``mma`` instructions per warp, grid-barrier arrivals, and
every other instruction a warp issues in one pass (the gates, the update, staging through shared memory,
addresses, CTA barriers). A step is priced from those counts alone:

    step = arrivals x BARRIER + batch blocks x (round trips x L2_ROUND_TRIP + mma time + issue time)
    mma time = max(every warp's mma x FLOP per mma / the SM's mma rate,      (the SM's tensor cores, shared)
                   one warp's mma x MMA_ISSUE / independent accumulators)      (one warp's chain)
    issue time = other instructions x warps per scheduler / ISSUE_PER_CLOCK   (the SM's 4 warp schedulers)

``batch blocks``: those a program steps in turn (the facts are one batch block's pass). Where part of the
weights is streamed (``streamed_chunks``), the PTX holds the streamed chunks' loop once: its round trips (the
body's wait and the one after it) are priced instead as one chunk after another, each the larger of an L2 round
trip shared over ``num_stages - 1`` chunks in flight and its bytes (operands and weights) at L2_BYTES_PER_CLK_SM,
and its body's ``mma`` and instructions once per chunk.

Every number it prints is a PREDICTION, to be replaced by what ``tritongru selftest`` measures; the
constants below are assumptions or published H100 SXM figures, named so that a measurement can say which one
was wrong. A per-step launch (where no grid of held weights fits) pays LAUNCH per phase instead of a barrier
and streams its weights from L2 every step, chunk after chunk as the streamed chunks above, its programs (a
slice and batch block each) in as many waves over the SMs as their registers and shared memory leave room for.
"""

from __future__ import annotations

import argparse
import concurrent.futures

from tritongru.compile_check import Call, compile_call
from tritongru.compiled import EXCHANGED_OPERANDS, MMA_SHAPE, copy_loops, instruction_count, step_facts, time_loop
from tritongru.configs import SHARED_BYTES_MAX
from tritongru.environment import interpreting
from tritongru.precisions import PRECISIONS
from tritongru.variants import VARIANTS

CLOCK_GHZ = 1.755  # H100 SXM boost clock (spec)
BARRIER_US = 0.8  # assumption: a release add and acquire polls through L2 across the programs of a group
L2_ROUND_TRIP_US = 0.5  # assumption: ~900 cycles from issuing a wave of exchange loads to using them
MMA_FLOP_PER_CLK_SM = {2: 1024, 4: 512}  # assumption, by operand bytes: mma.sync per SM, a quarter of the dense
# wgmma rate (spec: 989 TFLOP/s bf16, 495 TFLOP/s TF32)
MMA_ISSUE_CYCLES = 32  # assumption: latency of one mma.sync a dependent accumulator waits for
EPILOGUE_US = 0.1  # assumption, per-step launches only: activations, the update and the stores of a phase's tiles
SCHEDULERS_PER_SM = 4  # spec: warp schedulers per SM
ISSUE_PER_CLOCK = 1  # assumption: instructions one scheduler issues per clock, PTX counted as SASS
LAUNCH_US = 3.0  # assumption: a per-step launch behind the previous one with programmatic dependent launch
L2_BYTES_PER_CLK_SM = 64  # assumption: L2 to one SM (half of the L1's 128 B/clk port)
SM_COUNT = 132  # spec: H100 SXM
REGISTERS_PER_SM = 65536  # spec

STREAMED_GATES = {("forward", "cudnn"): (3,), ("forward", "classic"): (2, 1)}
STREAMED_GATES |= {("backward", "cudnn"): (3,), ("backward", "classic"): (1, 2)}
"""Gates whose streamed weights each phase's loop multiplies (beside :data:`EXCHANGED_OPERANDS`' operands)."""

SIZES = [(16, 768), (64, 256), (64, 1024), (256, 1024), (512, 512)]
"""``(batch, hidden)`` of the performance issue: the target region's corners and two large batches."""


def predict(kernel: str, variant: str, precision: str, batch: int, hidden: int) -> tuple[str, float, dict]:
    """``(description of the config and its compiled figures, predicted µs per step, the counts used)``."""
    flags = {"bias": True, "lengths": False} | ({"store_gates": True} if kernel == "forward" else {})
    config, compiled = compile_call(Call(kernel, variant, precision, batch, hidden, tuple(flags.items())), 90)
    first = compiled[0]
    slices, groups = config.grid(batch, hidden)
    dtype = PRECISIONS[precision].dtype
    rate = CLOCK_GHZ * 1e3  # cycles per µs
    phases = 2 if variant == "classic" else 1
    per_step = [c.resources for c in compiled if c.mode == "per-step"]
    fallback = per_step_us(config, per_step, batch, hidden, dtype, phases) if per_step else float("nan")
    if first.mode == "per-step":
        counts = {"round trips": "-", "mma per warp": "-", "arrivals": 0, "instructions": "-"}
        step = fallback
    else:
        facts = step_facts(first.resources.ptx)
        m, n, k = MMA_SHAPE[dtype.itemsize]
        flop_per_mma = 2 * m * n * k
        trips_us = sum(facts.round_trips) * L2_ROUND_TRIP_US
        mma, issued = facts.mma, instruction_count(time_loop(first.resources.ptx))
        streamed = min(config.streamed_chunks, -(-hidden // config.block_k))
        if streamed:
            # the loop read once: its waits priced per chunk, its body's mma and instructions repeated
            read = 2 if config.num_stages >= 2 else 1
            chunk_mma = config.block_b * config.block_h * 3 * config.block_k // (m * n * k) // config.num_warps
            body = instruction_count(copy_loops(first.resources.ptx))
            trips_us -= read * len(facts.round_trips) * L2_ROUND_TRIP_US
            for operands, gates in zip(
                EXCHANGED_OPERANDS[kernel, variant], STREAMED_GATES[kernel, variant], strict=True
            ):
                chunk = (operands * config.block_b + gates * config.block_h) * config.block_k
                trips_us += streamed * _chunk_us(chunk * dtype.itemsize, config.num_stages)
            mma += (streamed - 1) * chunk_mma * len(facts.round_trips)
            issued += (streamed - 1) * body * len(facts.round_trips)
        # independent accumulators per warp: a tile of m16n8 blocks per gate (the backward sums its three gates)
        chains = (config.block_b // 16) * (config.block_h // 8) * (1 if kernel == "backward" else 3)
        throughput = mma * config.num_warps * flop_per_mma / (MMA_FLOP_PER_CLK_SM[dtype.itemsize] * rate)
        chain = mma * MMA_ISSUE_CYCLES / max(1, chains) / rate
        warps_per_scheduler = -(-config.num_warps // SCHEDULERS_PER_SM)
        issue = (issued - mma) * warps_per_scheduler / ISSUE_PER_CLOCK / rate
        counts = {
            "round trips": facts.round_trips,
            "mma per warp": facts.mma,
            "arrivals": facts.arrivals,
            "instructions": issued,
        }
        barrier = BARRIER_US if slices > 1 else 0.0
        blocks = min(config.batch_blocks, -(-batch // config.block_b))
        step = facts.arrivals * barrier + blocks * (trips_us + max(throughput, chain) + issue)
    described = (
        f"{first.mode}, {slices * groups} programs (slice {config.block_h}, {config.batch_blocks} x {config.block_b}"
        f" rows, K chunk {config.block_k}, {config.num_warps} warps): {first.resources.registers} registers, "
        f"{first.resources.shared // 1024} KB shared, {first.resources.spills} B spilled"
    )
    return described, step, counts | {"per step": fallback}


def per_step_us(config, kernels: list, batch: int, hidden: int, dtype, phases: int) -> float:
    """µs of a step launched per phase with ``config``'s tiles (``kernels``: the resources of its phases' kernels):
    every program (a slice and batch block) streams its slice's weights and the whole operand from L2 in its K
    loop, each chunk (as the streamed chunks of a grid-synchronised step) the larger of an L2 round trip shared
    over ``num_stages - 1`` chunks in flight and its bytes; as many programs at once on an SM as the largest
    kernel's registers and shared memory allow, sharing its L2 bandwidth and MMA rate."""
    rate = CLOCK_GHZ * 1e3
    registers = max(r.registers for r in kernels) * 32 * config.num_warps
    shared = max(1, max(r.shared for r in kernels))
    per_sm = max(1, min(REGISTERS_PER_SM // registers, SHARED_BYTES_MAX // shared))
    programs = -(-hidden // config.block_h) * -(-batch // config.block_b)
    together = min(per_sm, -(-programs // SM_COUNT))  # programs on one SM at once
    chunk = (3 * config.block_h + config.block_b) * config.block_k * dtype.itemsize
    loop = -(-hidden // config.block_k) * _chunk_us(together * chunk, config.num_stages)
    flops = 2 * config.block_b * hidden * 3 * config.block_h
    work = max(loop, together * flops / (MMA_FLOP_PER_CLK_SM[dtype.itemsize] * rate))
    return phases * (LAUNCH_US + EPILOGUE_US) + -(-programs // (SM_COUNT * together)) * work


def _chunk_us(chunk_bytes: int, num_stages: int) -> float:
    """µs of one chunk of a pipelined K loop from L2: the larger of an L2 round trip shared over the
    ``num_stages - 1`` chunks in flight and its ``chunk_bytes`` at L2_BYTES_PER_CLK_SM."""
    in_flight = max(1, num_stages - 1)
    return max(L2_ROUND_TRIP_US / in_flight, chunk_bytes / (L2_BYTES_PER_CLK_SM * CLOCK_GHZ * 1e3))


def _row(args: tuple) -> str:
    kernel, variant, precision, batch, hidden = args
    described, step, counts = predict(kernel, variant, precision, batch, hidden)
    trips = counts["round trips"]
    trips = "-" if trips == "-" else "/".join(str(n) for n in trips if n)
    return (
        f"| {precision} | {batch} | {hidden} | {kernel} | {variant} | {described} | {trips} | "
        f"{counts['mma per warp']} | {counts['instructions']} | {counts['arrivals']} | {step:.2f} (prediction) | "
        f"{counts['per step']:.2f} (prediction) |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", help="batch sizes (default: the issue's sizes)")
    parser.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (default: the issue's sizes)")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "tf32"], choices=["bf16", "fp16", "tf32"])
    parser.add_argument("--jobs", type=int, default=2, help="compiler processes")
    args = parser.parse_args(argv)
    if interpreting():
        raise SystemExit("unset TRITON_INTERPRET: the prediction compiles for sm_90")
    sizes = [(b, h) for b in args.batch for h in args.hidden] if args.batch and args.hidden else SIZES
    todo = [
        (kernel, variant, precision, batch, hidden)
        for precision in args.precisions
        for batch, hidden in sizes
        for kernel in ("forward", "backward")
        for variant in VARIANTS
    ]
    print(
        "| precision | B | H | kernel | form | config and compiled figures (sm_90) | round trips per phase | "
        "mma per warp | instructions per warp | barriers | predicted µs/step | the same tiles per step, µs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        for line in pool.map(_row, todo):
            print(line, flush=True)


if __name__ == "__main__":
    main()
