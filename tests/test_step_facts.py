"""What one step of the persistent kernels waits for, read from their compiled sm_90 code (Triton's compiler and
ptxas run without a GPU): one round trip to L2 per wave of data other programs wrote, per phase and batch
block; every warp computing its own share of the tile's ``mma``; no spills. First the reading itself, on PTX
written here, so that the counting is shown to have teeth; then the launchers' configs at the sizes the
performance work is judged at."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tritongru.compiled import (
    StepFacts,
    copy_problems,
    instruction_count,
    mma_shape,
    planned_step,
    step_facts,
    time_loop,
)
from tritongru.configs import KernelConfig

PREAMBLE = """
.visible .entry kernel(
)
{
\tmov.b32 \t%r1, 0;
"""

LOOP_HEADER = """$L__BB0_2:                              // =>This Loop Header: Depth=1
                                        //     Child Loop BB0_3 Depth 2
"""

SPIN = """$L__BB0_3:                              // =>  This Inner Loop Header: Depth=2
                                        //   Parent Loop BB0_2 Depth=1
\tld.global.gpu.acquire.b32 \t%r90, [ %rd9 + 0 ];
\tsetp.lt.s32 \t%p9, %r90, %r91;
\t@%p9 bra \t$L__BB0_3;
"""

LATCH = """$L__BB0_6:                              // %._crit_edge
                                        //   in Loop: Header=BB0_2 Depth=1
\tadd.s32 \t%r2, %r2, 1;
\tsetp.lt.s32 \t%p1, %r2, %r3;
\t@%p1 bra \t$L__BB0_2;
$L__BB0_7:
\tret;
}
"""


def kernel(*body: str, latch_first: bool = False) -> str:
    """PTX of a kernel whose time loop runs ``body``; LLVM may place the loop's latch before its header."""
    loop = LOOP_HEADER + "".join(body) + SPIN
    if not latch_first:
        return PREAMBLE + loop + LATCH
    latch, end = LATCH.split("$L__BB0_7")
    return PREAMBLE + latch + loop + "$L__BB0_7" + end


def load(n: int) -> str:
    return f"\t@%p2 ld.global.cg.v4.b32 \t{{ %r{n}0, %r{n}1, %r{n}2, %r{n}3 }}, [ %rd{n} + 0 ];\n"


def stage(n: int) -> str:
    return f"\tst.shared.v4.b32 \t[%r7+{n}], {{%r{n}0, %r{n}1, %r{n}2, %r{n}3}};\n"


MMA = (
    "\tmma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 { %f1, %f2, %f3, %f4 }, { %r5, %r6, %r7, %r8 }, "
    "{ %r9, %r10 }, { %f1, %f2, %f3, %f4 };\n"
)
ARRIVE = "\tbar.sync \t0;\n\tred.global.gpu.release.add.u32 \t[ %rd9 + 0 ], %r4;\n"
TIE = "\t{ .reg .b32 t; and.b32 t, %r30, %r60; or.b32 %r70, %r10, t; mov.b32 %r71, %r30; }\n"


def test_chunks_loaded_one_after_another_are_one_round_trip_each():
    """The old kernels' pattern: a chunk's load, its store to shared memory (which waits for it), the next."""
    facts = step_facts(kernel(load(1), stage(1), load(2), stage(2), load(3), stage(3), MMA, ARRIVE))
    assert facts == StepFacts(round_trips=(3,), mma=1, arrivals=1)


def test_chunks_loaded_together_are_one_round_trip():
    assert step_facts(kernel(load(1), load(2), load(3), stage(1), stage(2), stage(3), ARRIVE)).round_trips == (1,)


def test_a_copy_is_not_a_use_but_arithmetic_is():
    """A register copy only renames a loaded value (ptxas propagates it), so the wait is at the copy's first
    use; arithmetic on it (the tie of two chunks) waits for both loads at once."""
    copies = "\tmov.b32 \t%r80, %r10;\n\tmov.b32 \t%r81, %r20;\n"
    assert step_facts(kernel(load(1), copies, load(2), "\tst.shared.b32 \t[%r7], %r80;\n", ARRIVE)).round_trips == (1,)
    assert step_facts(kernel(load(1), load(3), TIE, load(2), stage(2), ARRIVE)).round_trips == (2,)


def test_barrier_arrivals_end_phases_and_the_latch_comes_last():
    """Two phases (the classic form): each its own round trip, counted in the order one iteration runs even
    where LLVM placed the loop's latch before its header."""
    body = (load(1), stage(1), MMA, MMA, ARRIVE, load(2), stage(2), MMA, ARRIVE)
    for latch_first in (False, True):
        assert step_facts(kernel(*body, latch_first=latch_first)) == StepFacts((1, 1), mma=3, arrivals=2)


def test_exponentials_are_counted_per_thread():
    """The gates' ``ex2``: a thread that evaluates every element of a replicated tile issues them all."""
    ex2 = "\tex2.approx.f32 \t%f20, %f21;\n"
    assert step_facts(kernel(load(1), stage(1), MMA, ex2, ex2, ex2, ARRIVE)).exponentials == 3
    assert step_facts(kernel(load(1), stage(1), MMA, ARRIVE)).exponentials == 0


def test_lane_shuffles_are_counted_per_thread():
    """A cross-warp sum compiled as Triton's general reduction: a butterfly of ``shfl.sync`` per element."""
    butterfly = "".join(
        f"\tshfl.sync.bfly.b32 \t%r{60 + i}, %r{50 + i}, {lane}, 31, -1;\n" for i, lane in enumerate((4, 2, 1))
    )
    assert step_facts(kernel(load(1), stage(1), MMA, butterfly, ARRIVE)).shuffles == 3
    assert step_facts(kernel(load(1), stage(1), MMA, ARRIVE)).shuffles == 0


def test_the_mma_shape_is_read_from_the_ptx():
    assert mma_shape(kernel(MMA)) == (16, 8, 16)
    dmma = "\tmma.sync.aligned.m8n8k4.row.col.f64.f64.f64.f64 { %fd1, %fd2 }, { %fd3 }, { %fd4 }, { %fd1, %fd2 };\n"
    assert mma_shape(kernel(dmma)) == (8, 8, 4)
    assert mma_shape(kernel(load(1))) is None


def test_the_time_loop_is_the_largest_outer_loop():
    """A loop before the time loop (a K loop that is not unrolled) is not the step."""
    before = (
        f"$L__BB0_1:                              // =>This Inner Loop Header: Depth=1\n{MMA}\t@%p5 bra \t$L__BB0_1;\n"
    )
    ptx = kernel(load(1), stage(1), MMA, MMA, ARRIVE).replace(LOOP_HEADER, before + LOOP_HEADER)
    assert any("ld.global.cg" in line for line in time_loop(ptx))
    assert step_facts(ptx).mma == 2


def test_instructions_are_counted_without_line_labels_and_with_each_of_an_inline_asm_block():
    """A line-table label is no instruction; a tie (:func:`tritongru.kernels.gru_math._tie`) is three."""
    ptx = kernel(load(1), "$L__tmp7:\n", TIE, stage(1), MMA, ARRIVE)
    loop = time_loop(ptx)
    assert not any(line.startswith("$L__tmp") for line in loop)
    assert instruction_count(loop) == len(loop) + 2
    assert step_facts(ptx) == step_facts(ptx.replace("$L__tmp7:\n", ""))


def test_the_plan_counts_waves_and_the_tile():
    """The plan's arithmetic: B=16 H=768 bf16 forward in chunks of 256 on 8 warps, all chunks in one wave; the
    same per batch block when a program steps two; the backward's three gate gradients in one wave, classic's
    two phases; TF32's mma is m16n8k8."""
    import torch

    config = KernelConfig(16, 16, 256, num_warps=8, split_k=True)
    # the forward's three gates: a 16 x 16 tile on 256 threads is one element each
    planned = planned_step("forward", "cudnn", config, 768, torch.bfloat16)
    assert planned == StepFacts((1,), mma=36, arrivals=1, exponentials=3)
    two = KernelConfig(16, 16, 256, num_warps=8, split_k=True, batch_blocks=2)
    planned = planned_step("forward", "classic", two, 768, torch.bfloat16)
    assert planned == StepFacts((1, 1), mma=36, arrivals=2, exponentials=3)
    four = KernelConfig(16, 16, 128, num_warps=4, split_k=True)
    assert planned_step("forward", "cudnn", four, 768, torch.bfloat16).exponentials == 6
    assert planned_step("backward", "cudnn", config, 768, torch.bfloat16) == StepFacts((1,), mma=36, arrivals=1)
    assert planned_step("backward", "classic", config, 768, torch.bfloat16) == StepFacts((1, 1), 36, arrivals=2)
    assert planned_step("forward", "cudnn", config, 768, torch.float32).mma == 72
    # TF32 at H=1024: 192 KB of weights held leave room for four 8 KB chunks of the eight at a time
    few = KernelConfig(16, 16, 128, num_warps=8, split_k=True)
    assert planned_step("forward", "cudnn", few, 1024, torch.float32).round_trips == (2,)
    # IEEE float32 multiplies on the FMA units: no mma to count
    assert planned_step("forward", "cudnn", few, 1024, torch.float32, tensor_cores=False).mma == 0
    # float64's DMMA in the shape the compiler chose (Triton 3.6: m16n8k16, 3.9: m8n8k4); its exp is FMAs
    assert planned_step("forward", "cudnn", config, 768, torch.float64, shape=(16, 8, 16)).mma == 36
    double = planned_step("forward", "cudnn", config, 768, torch.float64, shape=(8, 8, 4))
    assert double.mma == 288 and double.exponentials == 0


def test_streamed_chunks_are_a_loop_read_once_beside_the_held_chunks_waves():
    """TF32 at H=2048 in chunks of 128 (16 of them), 10 streamed: the 6 held chunks' 144 KB leave 81 KB of
    shared memory, so the held chunks of ``h`` (8 KB each) load in one wave; the streamed chunks are a loop whose
    body (one chunk's products) the PTX holds once: with pipelined copies (2 stages) its wait and the one after
    it, without (1 stage) one."""
    import torch

    from tritongru.configs import held_chunks, resident_bytes, wave_chunks

    config = KernelConfig(16, 16, 128, num_warps=8, split_k=True, streamed_chunks=10)
    assert held_chunks(config, 2048) == 6 and resident_bytes(config, 2048, torch.float32) == 6 * 3 * 128 * 16 * 4
    assert held_chunks(KernelConfig(16, 16, 128, num_warps=8, split_k=True, streamed_chunks=20), 2048) == 0
    assert wave_chunks(config, 2048, torch.float32) == 10
    # the tile's mma over 6 held chunks and the loop's one: 16 x 16 x 3 gates x 7 x 128 / (16 x 8 x 8) / 8 warps
    assert planned_step("forward", "cudnn", config, 2048, torch.float32) == StepFacts((1 + 2,), 84, 1, 3)
    assert planned_step("forward", "classic", config, 2048, torch.float32).round_trips == (3, 3)
    # the backward's three gate gradients: 18 held pairs in waves of 10, then the loop
    assert planned_step("backward", "cudnn", config, 2048, torch.float32).round_trips == (2 + 2,)
    unpipelined = KernelConfig(16, 16, 128, num_warps=8, num_stages=1, split_k=True, streamed_chunks=10)
    assert planned_step("forward", "cudnn", unpipelined, 2048, torch.float32).round_trips == (1 + 1,)
    every = KernelConfig(16, 16, 128, num_warps=8, split_k=True, streamed_chunks=16)
    assert planned_step("backward", "cudnn", every, 2048, torch.float32) == StepFacts((2,), 12, 1, 0)


def test_cp_async_copies_are_a_round_trip_at_their_wait():
    """A pipelined loop's copies into shared memory: issued, committed, then one wait for all since the last."""
    copy = "\tcp.async.cg.shared.global [ %r7 + 0 ], [ %rd3 + 0 ], 0x10, %r8;\n\tcp.async.commit_group;\n"
    wait = "\tcp.async.wait_group \t0;\n"
    assert step_facts(kernel(copy, copy, wait, MMA, ARRIVE)).round_trips == (1,)
    assert step_facts(kernel(copy, wait, copy, wait, MMA, ARRIVE)).round_trips == (2,)
    assert step_facts(kernel(wait, MMA, ARRIVE)).round_trips == (0,), "a wait with nothing in flight"
    assert step_facts(kernel(load(1), stage(1), copy, wait, MMA, ARRIVE)).round_trips == (2,)


def test_copies_into_shared_memory_are_waited_for_before_the_barrier_and_issued_after_its_poll():
    """``cp.async`` in a grid-synchronised step is safe only between the poll's acquire and the next arrival, and
    all waited for (``wait_group 0``) before that arrival; the loop is read around its end."""
    copy = "\tcp.async.cg.shared.global [ %r7 + 0 ], [ %rd3 + 0 ], 0x10, %r8;\n\tcp.async.commit_group;\n"
    wait = "\tcp.async.wait_group \t0;\n"
    assert copy_problems(kernel(copy, wait, MMA, ARRIVE)) == []
    in_flight = ["an asynchronous copy (cp.async) in flight at a barrier arrival"]
    assert copy_problems(kernel(copy, "\tcp.async.wait_group \t1;\n", MMA, ARRIVE)) == in_flight
    assert copy_problems(kernel(wait, copy, MMA, ARRIVE)) == in_flight, "waited for before it was issued"
    # the spin loop (the poll's acquire) ends the loop's body: a copy after the arrival, before it
    before_poll = kernel(copy, wait, MMA, ARRIVE, copy, wait)
    assert copy_problems(before_poll) == [
        "an asynchronous copy (cp.async) issued between a barrier arrival and its poll"
    ]
    through_l1 = copy.replace("cp.async.cg", "cp.async.ca").replace("0x10", "0x4")
    assert copy_problems(kernel(through_l1, wait, MMA, ARRIVE)) == [
        "an asynchronous copy through L1 (cp.async.ca), which is not coherent across SMs"
    ]
    outside = PREAMBLE + copy + wait + LOOP_HEADER + MMA + ARRIVE + SPIN + LATCH
    assert copy_problems(outside) == ["an asynchronous copy (cp.async) outside the time loop could cross the barrier"]


def test_a_loops_latch_placed_before_its_header_is_read_after_its_body():
    """LLVM may place a nested loop's latch (here the loop over batch blocks: its last chunk's wait) above the
    loop's header; one iteration runs it after the body, before the barrier."""
    inner_latch = "$L__BB0_17:    // %._crit_edge\n    //   in Loop: Header=BB0_14 Depth=2\n"
    inner_header = "$L__BB0_14:    //   Parent Loop BB0_2 Depth=1\n    // =>  This Loop Header: Depth=2\n"
    after = "$L__BB0_18:    // %._crit_edge152\n    //   in Loop: Header=BB0_2 Depth=1\n"
    copy = "\tcp.async.cg.shared.global [ %r7 + 0 ], [ %rd3 + 0 ], 0x10, %r8;\n"
    wait = "\tcp.async.wait_group \t0;\n"
    latch_first = f"{inner_latch}{wait}\t@%p3 bra \t$L__BB0_14;\n"
    ptx = kernel(latch_first, f"{inner_header}{copy}{MMA}\t@%p4 bra \t$L__BB0_17;\n", after, ARRIVE)
    loop = time_loop(ptx)
    assert loop.index(next(line for line in loop if line.startswith("cp.async.wait"))) > loop.index(
        next(line for line in loop if line.startswith("cp.async.cg"))
    )
    assert copy_problems(ptx) == [] and step_facts(ptx).round_trips == (1,)


def test_the_float32_kernels_stream_the_weights_that_do_not_fit_and_nothing_else_does(monkeypatch):
    """At H=2048 a slice's float32 weights (384 KB) do not fit in shared memory: the forward (TF32 or IEEE)
    holds 6 of 16 K chunks of 128 (144 KB, beside its loop's two stages of an ``h`` chunk and three gates'
    weights, 64 KB) and streams 10, the backward (two stages of three gate gradients' chunks and three gates'
    weights, 96 KB) holds 5 and streams 11, where a program steps one batch block (B <= 16; with more, each would
    stream the weights again, in turn: per step); the next alternative streams every chunk, then the launch per
    step and its own alternatives. bf16 (whose weights fit), float64 and the narrower widths do not stream."""
    import torch

    from tritongru import configs
    from tritongru.configs import PER_STEP, heuristic_config, heuristic_configs

    monkeypatch.setattr(configs, "interpreting", lambda: False)  # the configs of a GPU
    tf32 = dict(dtype=torch.float32, allow_tf32=True, sm_count=132)
    for kernel, streamed in (("forward", 10), ("backward", 11)):
        for batch in (1, 16):
            config = heuristic_config(kernel, batch, 2048, **tf32)
            assert (config.persistent, config.block_k, config.streamed_chunks) == (True, 128, streamed), kernel
            assert (config.block_b, config.block_h, config.batch_blocks, config.num_stages) == (16, 16, 1, 2)
        assert heuristic_config(kernel, 17, 2048, **tf32) == PER_STEP, "two batch blocks a program"
        first, every, per_step, *per_step_alternatives = heuristic_configs(kernel, 16, 2048, **tf32)
        assert first == heuristic_config(kernel, 16, 2048, **tf32)
        assert (every.block_k, every.streamed_chunks, per_step) == (128, 16, PER_STEP)
        assert {c.block_h for c in per_step_alternatives} == {16, 32, 64}
        assert not any(c.persistent for c in per_step_alternatives)
        assert heuristic_config(kernel, 16, 2048, dtype=torch.float32, sm_count=132).streamed_chunks == streamed
        assert heuristic_config(kernel, 16, 1024, **tf32).streamed_chunks == 0
        assert heuristic_config(kernel, 16, 2048, dtype=torch.bfloat16, sm_count=132).streamed_chunks == 0
        assert not heuristic_config(kernel, 16, 2048, dtype=torch.float64, sm_count=132).persistent
    assert heuristic_config("forward", 16, 4096, head_dim=2048, **tf32) == PER_STEP, "two heads: 256 slices"
    # rows not 16-element aligned: the loop's copies would pass through L1, so no streaming there
    assert heuristic_config("backward", 16, 2032, **tf32).streamed_chunks == 11
    assert heuristic_config("backward", 16, 2044, **tf32) == PER_STEP


def test_a_program_that_would_step_blocks_of_16_twice_steps_half_as_many_of_32(monkeypatch):
    """bf16 and fp16 with a slice's weights up to 96 KB (H <= 1024): where a program of the heuristic's grid would
    step two or more batch blocks of 16 rows and blocks of 32 halve that, it steps blocks of 32; the next
    alternative is the same launch in blocks of 16. Not where it would not halve the steps, not for wider slices'
    weights, not for 4- or 8-byte dtypes (whose registers spilled), not where a program steps one block."""
    import torch

    from tritongru import configs
    from tritongru.configs import heuristic_config, heuristic_configs

    monkeypatch.setattr(configs, "interpreting", lambda: False)  # the configs of a GPU

    def tile(batch, hidden, dtype=torch.bfloat16, kernel="forward", head_dim=None):
        config = heuristic_config(kernel, batch, hidden, dtype=dtype, sm_count=132, head_dim=head_dim)
        return config.block_b, config.batch_blocks

    for kernel in ("forward", "backward"):
        for dtype in (torch.bfloat16, torch.float16):
            assert tile(64, 1024, dtype, kernel) == (32, 1), "64 slices in 2 groups: 2 blocks of 16 a program"
            assert tile(256, 1024, dtype, kernel) == (32, 4)
        wide, narrow, *_ = heuristic_configs(kernel, 64, 1024, dtype=torch.bfloat16, sm_count=132)
        assert (wide.block_b, narrow.block_b, narrow.batch_blocks) == (32, 16, 2)
        assert narrow.persistent and narrow.block_h == wide.block_h
    assert tile(512, 512) == (32, 4) and tile(256, 256) == (32, 1) and tile(128, 256) == (16, 1)
    assert tile(80, 1024) == (16, 3), "blocks of 32 would take 2 steps, not half of 3"
    assert tile(16, 768) == (16, 1) and tile(64, 2048) == (16, 4)
    assert tile(256, 1024, head_dim=64) == (32, 4), "16 heads of 4 slices"
    assert tile(256, 512, torch.float32) == (16, 4) and tile(256, 256, torch.float64) == (16, 2)


def test_a_grid_synchronised_launch_streams_only_rows_it_can_copy_past_l1(monkeypatch):
    """The launchers run a config that streams part of its weights per step where its rows are not 16-element
    aligned (its copies would be cached in L1, not coherent across SMs); one that holds them all, at any size."""
    import torch

    from tritongru import launchers
    from tritongru.configs import streams_past_l1
    from tritongru.launchers import gpu_plans, plan_launch

    streaming = KernelConfig(16, 16, 128, num_warps=8, split_k=True, streamed_chunks=10)
    holding = KernelConfig(16, 16, 128, num_warps=8, split_k=True)
    assert streams_past_l1(streaming, 2048) and streams_past_l1(holding, 2045)
    assert not streams_past_l1(streaming, 2045) and not streams_past_l1(streaming, 4096, head_dim=2040)
    assert list(gpu_plans(streaming, 16, 2048, 90)) == ["grid-sync", "per-step"]
    assert list(gpu_plans(streaming, 16, 2045, 90)) == ["per-step"]
    assert list(gpu_plans(holding, 16, 2045, 90)) == ["grid-sync", "per-step"]
    monkeypatch.setattr(launchers, "grid_sync_available", lambda device: True)
    monkeypatch.setattr(launchers, "interpreting", lambda: False)  # a GPU's launch
    assert not plan_launch(streaming, 16, 2045, torch.device("cpu")).persistent
    assert plan_launch(streaming, 16, 2048, torch.device("cpu")).grid_sync
    monkeypatch.setattr(launchers, "interpreting", lambda: True)  # the interpreter's programs share no L1
    assert plan_launch(streaming, 16, 2045, torch.device("cpu")).grid_sync


SIZES = [(16, 768), (64, 256), (64, 1024), (256, 1024), (512, 512)]
"""The sizes of the performance issue: the target region's corners and two large batches."""

FORWARD_WAVES = {("tf32", 1024): 2}
"""Waves of one batch block's ``h_{t-1}`` in the forward where not one: TF32 at H=1024 holds 192 KB of weights
per program (slices of 16), which leaves room in shared memory for one 32 KB chunk of two at a time."""

FACTS = """
import json, sys
from tritongru import launchers
from tritongru.compiled import kernel_resources, planned_step, step_facts
from tritongru.configs import heuristic_config
from tritongru.precisions import PRECISIONS

kernel, variant = sys.argv[1:3]
for point in sys.argv[3:]:
    precision, batch, hidden = point.split(":")
    batch, hidden, p = int(batch), int(hidden), PRECISIONS[precision]
    config = heuristic_config(kernel, batch, hidden, dtype=p.dtype, allow_tf32=p.allow_tf32, sm_count=132)
    flags = {"bias": True, "lengths": False} | ({"store_gates": True} if kernel == "forward" else {})
    kind, args = launchers.meta_arguments(kernel, variant, precision, batch, hidden, 64, flags, config)
    plan = launchers.gpu_plans(config, batch, hidden, 90)
    (call,) = launchers.kernel_calls(kind, variant, plan["grid-sync"], 2, args)
    kernel_fn = launchers.gru_forward_kernel if kind == "forward" else launchers.gru_backward_kernel
    found = kernel_resources(kernel_fn, call, 90)
    print(json.dumps({
        "point": point, "config": config.to_dict(), "plans": sorted(plan), "spills": found.spills,
        "found": step_facts(found.ptx).__dict__,
        "planned": planned_step(kind, variant, config, hidden, p.dtype).__dict__,
    }))
"""

POINTS = [(precision, batch, hidden) for precision in ("bf16", "tf32") for batch, hidden in SIZES]


@pytest.mark.parametrize("kernel", ["forward", "backward"])
@pytest.mark.parametrize("variant", ["cudnn", "classic"])
def test_the_launchers_step_is_one_round_trip_per_wave_with_the_warps_splitting_the_tile(kernel, variant):
    """The grid-synchronised kernel of the config the launchers take on an H100 (its heuristic: the compile
    check shows that it and its fallback compile without spilling, so the launchers take it), compiled for
    sm_90 at every size of :data:`SIZES`, bf16 and TF32 (one process compiles them all): its time loop does
    what the plan says, the forward's one round trip per phase and batch block, each thread evaluating its own
    share of the gates, no cross-warp sum through lane shuffles."""
    import json

    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    points = [f"{precision}:{batch}:{hidden}" for precision, batch, hidden in POINTS]
    command = [sys.executable, "-c", FACTS, kernel, variant, *points]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [report["point"] for report in reports] == points, "one report per size and precision"
    for (precision, _, hidden), report in zip(POINTS, reports, strict=True):
        where = report["point"]
        config = KernelConfig.from_dict(report["config"])
        assert config.persistent and "grid-sync" in report["plans"], f"{where}: persistent, one cooperative launch"
        assert report["spills"] == 0, where
        assert report["found"] == report["planned"], f"{where}: the compiled step against its plan"
        if kernel == "forward":
            waves = FORWARD_WAVES.get((precision, hidden), 1)
            rounds = [waves] * (2 if variant == "classic" else 1)
            assert report["found"]["round_trips"] == rounds, f"{where}: per batch block"
