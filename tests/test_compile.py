"""The kernels through Triton's real compiler (to a cubin for sm_90), on any machine: the interpreter that runs
the other tests on the CPU forgives what the code generator rejects. Registers, spills and shared memory come
from the compiled kernels, and every grid-synchronised kernel's barrier is read back from its PTX."""

import os
import subprocess
import sys

import pytest

from tritongru.compile_check import CHECK_KERNELS, barrier_problems, calls


def compiled(script: str, *args: str, timeout: int = 600) -> str:
    """The standard output of ``python -c script args`` run by the real compiler (``TRITON_INTERPRET`` unset),
    which must succeed."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _compile_check(*options: str) -> str:
    """``python -m tritongru.compile_check --arch 90 --quick OPTIONS`` without the interpreter; its output, once
    it has passed."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-m", "tritongru.compile_check", "--arch", "90", "--quick", *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 failed" in result.stdout
    return result.stdout


def test_kernels_compile_for_hopper_without_spills_and_with_their_barrier():
    """Every kernel at the quick size, the LayerNorm-GRU's included."""
    output = _compile_check("--sizes", "dense")
    assert "grid-sync" in output and "stress" in output, "the barrier's kernels were compiled"
    assert "layernorm-backward classic" in output, "the LayerNorm-GRU's kernels were compiled"


def test_multi_head_kernels_compile_in_both_plans():
    """Heads of 32 units (one program each, no grid barrier) and of 128 (a grid barrier), forward and backward
    in the cudnn form (the full check compiles both forms): no spill, and the grid-synchronised step as its plan
    says."""
    output = _compile_check("--sizes", "heads", "--kernels", "forward", "backward", "--variants", "cudnn")
    lines = output.splitlines()
    assert any("heads=8" in line and "one-slice" in line for line in lines), output
    assert any("heads=8" in line and "grid-sync" in line for line in lines), output


def test_the_check_runs_in_parts():
    """``--kernels`` and ``--precisions`` select a part of the full check, every formulation of it."""
    part = calls(kernels=("backward",), precisions=("bf16", "tf32"))
    assert {(c.kernel, c.variant, c.precision) for c in part} == {
        ("backward", variant, precision) for variant in ("cudnn", "classic") for precision in ("bf16", "tf32")
    }
    assert len(calls()) == sum(len(calls(kernels=(kernel,))) for kernel in CHECK_KERNELS)
    assert {"layernorm-forward", "layernorm-backward"} <= {c.kernel for c in calls(quick=True)}
    assert len(calls()) == len(calls(sizes="dense")) + len(calls(sizes="heads"))
    assert {c.heads for c in calls(sizes="heads")} == {8, 16} and {c.heads for c in calls(sizes="dense")} == {1}


def test_barrier_check_reads_ptx():
    """The PTX check has teeth: each missing or unsafe piece of a barrier is named."""
    arrive = "@%p8 red.global.gpu.release.add.u32 [ %rd62 + 0 ], %r178;"
    poll = "@%p8 ld.global.gpu.acquire.b32 %r179, [ %rd62 + 0 ];"
    assert barrier_problems(f"{arrive}\n{poll}") == []
    assert barrier_problems(poll) == ["no release atomic add (arrival)"]
    assert barrier_problems(arrive) == ["no acquire load (poll)"]
    relaxed = arrive.replace("release", "relaxed")
    assert barrier_problems(f"{relaxed}\n{poll}") == ["no release atomic add (arrival)"]
    assert barrier_problems(f"{arrive}\n{poll}\ncp.async.cg.shared.global [%r1], [%rd2], 16;") == [
        "an asynchronous copy (cp.async) outside the time loop could cross the barrier"
    ]


FIRST_SPILL_FREE = """
import sys
from tritongru import launchers
from tritongru.compiled import Resources

spilling = sys.argv[1]  # a K chunk, "every" kernel or every "grid-sync" kernel spills
launchers.kernel_resources = lambda kernel, call, arch: Resources(
    registers=128,
    spills=8 if spilling in (str(call["BLOCK_K"]), "every") or (spilling == "grid-sync" and call["GRID_SYNC"]) else 0,
    shared=0,
    ptx="",
)
flags = (("bias", True), ("lengths", False), ("store_gates", False))
config = launchers.first_spill_free("forward", "cudnn", "bf16", 16, 256, 64, flags, 90, 132)
print(config.block_k, config.num_warps, config.persistent)
"""


def test_launchers_take_the_first_alternative_that_does_not_spill():
    """Where the heuristic's own config spills, the next alternative that compiles clean is taken; where every
    grid-synchronised kernel spills, the heuristic's tiles launched once per step; where every one would spill,
    the heuristic's own (the compile check then reports it)."""

    def chosen(spilling: str) -> list[str]:
        return compiled(FIRST_SPILL_FREE, spilling, timeout=300).split()[-3:]

    assert chosen("0") == ["256", "8", "True"], "nothing spills: the heuristic's own config"
    assert chosen("256") == ["128", "8", "True"], "K chunks of 256 spill: the same launch with chunks of 128"
    assert chosen("grid-sync") == ["256", "8", "False"], "no persistent alternative is clean: one launch a step"
    assert chosen("every") == ["256", "8", "True"], "every alternative spills: the heuristic's own config"


FLOAT64_OWN_CONFIGS = """
import json
from tritongru import launchers
from tritongru.compile_check import Call, Compiled, FLAGS, step_problems
from tritongru.compiled import kernel_resources
from tritongru.configs import heuristic_config
import torch

SIZES = (("cell", 1, 64), ("forward", 16, 256), ("backward", 256, 256), ("forward", 16, 2048), ("backward", 256, 512))
for kernel, batch, hidden in SIZES:
    config = heuristic_config(kernel, batch, hidden, dtype=torch.float64, sm_count=132)
    flags = FLAGS[kernel][0]
    kind, args = launchers.meta_arguments(kernel, "cudnn", "fp64", batch, hidden, 64, flags, config)
    for mode, call in launchers.compiled_calls(kind, "cudnn", config, batch, hidden, args, 90):
        found = kernel_resources(launchers.KIND_KERNELS[kind], call, 90)
        problems = []
        if mode == "grid-sync":
            check = Call(kernel, "cudnn", "fp64", batch, hidden, tuple(flags.items()))
            problems = step_problems(check, Compiled(mode, "", config, found))
        print(json.dumps([kernel, hidden, mode, found.spills, problems]))
"""


def test_float64s_own_configs_compile_without_spills():
    """float64 (every flag on): the heuristic's own config, not an alternative, and its per-step fallback, at the
    cell (B=1 H=64: 448 B spilled before its gates were shared out over the threads), the grid-synchronised
    forward and backward (their DMMA counted against the plan; the backward stepping two batch blocks) and the
    launches per step at H=2048 and H=512 (the slices of 64 these took spilled 2104-3336 B at H=2048)."""
    import json

    reports = [json.loads(line) for line in compiled(FLOAT64_OWN_CONFIGS).splitlines()]
    assert {(kernel, hidden, mode) for kernel, hidden, mode, _, _ in reports} == {
        ("cell", 64, "per-step"),
        ("forward", 256, "grid-sync"),
        ("forward", 256, "per-step"),
        ("backward", 256, "grid-sync"),
        ("backward", 256, "per-step"),
        ("forward", 2048, "per-step"),
        ("backward", 512, "per-step"),
    }
    for kernel, hidden, mode, spills, problems in reports:
        assert spills == 0 and problems == [], (kernel, hidden, mode, spills, problems)


SPILLS_READ = """
from tritongru import launchers
from tritongru.compiled import kernel_resources
from tritongru.configs import KernelConfig

config = KernelConfig(16, 16, 128, num_warps=8, split_k=True)
flags = {"bias": True, "store_gates": False}
kind, args = launchers.meta_arguments("forward", "cudnn", "bf16", 16, 256, 64, flags, config)
(_, call), *_ = launchers.compiled_calls(kind, "cudnn", config, 16, 256, args, 90)
free, capped = (
    kernel_resources(launchers.gru_forward_kernel, {**call, **extra}, 90) for extra in ({}, {"maxnreg": 40})
)
print(free.registers, capped.registers, capped.spills)
"""


def test_spills_and_registers_are_read_from_the_cubin():
    """The figures come from the compiled cubin: the persistent forward kernel capped at 40 registers reports
    them capped, and the registers it had to spill."""
    free_registers, capped_registers, capped_spills = map(int, compiled(SPILLS_READ, timeout=300).split()[-3:])
    assert free_registers > 40
    assert capped_registers <= 40 and capped_spills > 0


ON_GPU_PATH = """
from tritongru import launchers
from tritongru.compiled import Resources

asked = {"jit": [], "ptxas": []}
spilling_chunk, crowded_chunk = 256, None


def jit_fits(kernel, call):
    asked["jit"].append((call["GRID_SYNC"], call["RESIDENT"], call["BLOCK_K"]))
    return call["BLOCK_K"] != spilling_chunk


def ptxas(kernel, call, arch):
    asked["ptxas"].append((call["GRID_SYNC"], call["RESIDENT"], call["BLOCK_K"]))
    shared = 228 * 1024 if call["BLOCK_K"] == crowded_chunk else 0
    return Resources(registers=128, spills=0, shared=shared, ptx="")


launchers._jit_fits, launchers.kernel_resources = jit_fits, ptxas
flags = (("bias", True), ("lengths", False), ("store_gates", False))
on_gpu = launchers.first_spill_free("forward", "cudnn", "bf16", 16, 256, 0, flags, 90, 132, on_gpu=True)
print(on_gpu.block_k, sorted(set(asked["jit"])), asked["ptxas"])
asked["jit"].clear()
off_gpu = launchers.first_spill_free("forward", "cudnn", "bf16", 16, 256, 0, flags, 90, 132)
print(off_gpu.block_k, asked["jit"], sorted(set(asked["ptxas"])))
crowded_chunk = 256  # over an SM's shared memory: off the GPU too, the next alternative
# (another input size: a new lookup, not the answer first_spill_free memoised above)
print(launchers.first_spill_free("forward", "cudnn", "bf16", 16, 256, 1, flags, 90, 132).block_k)
"""


def test_on_a_gpu_spills_come_from_the_jit_and_the_fallback_is_not_compiled():
    """On a GPU the spills of the grid-synchronised kernel are read from the JIT's own compile and its per-step
    fallback is left alone (compiled only where a launch takes it); without one, both are read from their
    cubins, and so is their shared memory."""
    on_gpu, off_gpu, crowded = compiled(ON_GPU_PATH, timeout=300).splitlines()[-3:]
    assert on_gpu == "128 [(True, True, 128), (True, True, 256)] []", "grid-sync kernels only, from the JIT"
    assert off_gpu == "256 [] [(False, False, 256), (True, True, 256)]", "the cubins: the fallback too"
    assert crowded == "128", "a config over an SM's shared memory is passed over like one that spills"


WAVE_LADDER = """
from dataclasses import replace
import torch
from tritongru.configs import heuristic_configs, wave_chunks

configs = heuristic_configs("backward", 1, 1024, dtype=torch.float32, sm_count=132)
*persistent, per_step = configs
capped = [i for i, config in enumerate(persistent) if config.max_wave_chunks]
print(all(config.persistent for config in persistent), per_step == replace(configs[0], persistent=False))
print(capped == list(range(len(persistent) - len(capped), len(persistent))))
print([(c.block_k, c.max_wave_chunks, wave_chunks(c, 1024, torch.float32)) for c in configs if c.max_wave_chunks])
"""


def test_the_last_alternatives_halve_the_wave_down_to_one_chunk_then_launch_per_step():
    """IEEE float32, B=1 H=1024, the backward's persistent alternatives on 8 warps: K chunks of 512 one a wave,
    of 256 two, of 128 four. Then come every K chunk with half its wave (256 one a wave, 128 two), then with a
    quarter (128 one): the LayerNorm backward there (cudnn every flag off, classic every flag on, sm_90) spilled
    16 B and 8 B two a wave and nothing one a wave. Last, the heuristic's tiles launched once per step."""
    last, capped_last, ladder = compiled(WAVE_LADDER, timeout=300).splitlines()[-3:]
    assert last == "True True", "every alternative is persistent but the last, the first's tiles per step"
    assert capped_last == "True", "the capped waves come after the other persistent alternatives"
    assert ladder == "[(256, 1, 1), (128, 2, 2), (128, 1, 1)]"


FIRST_CONFIG_CLEAN = """
import sys
from tritongru import launchers
from tritongru.compile_check import EVERY_FLAG
from tritongru.compiled import kernel_resources
from tritongru.configs import heuristic_config
from tritongru.precisions import PRECISIONS

precision, batch, hidden = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
p = PRECISIONS[precision]
first = heuristic_config("backward", batch, hidden, dtype=p.dtype, allow_tf32=p.allow_tf32, sm_count=132)
print(first.persistent, first.block_b, first.batch_blocks, first.block_k)
flags = EVERY_FLAG["layernorm-backward"][0]
kind, args = launchers.meta_arguments("layernorm-backward", "cudnn", precision, batch, hidden, 64, flags, first)
calls = launchers.compiled_calls(kind, "cudnn", first, batch, hidden, args, 90)
print(len(calls), max(kernel_resources(launchers.KIND_KERNELS[kind], call, 90).spills for _, call in calls))
"""


@pytest.mark.parametrize(
    "precision, batch, hidden, config",
    [("bf16", 64, 768, "True 32 1 256"), ("tf32", 64, 768, "True 16 2 256"), ("fp64", 256, 256, "True 16 2 128")],
)
def test_the_layernorm_backward_compiles_clean_in_its_first_config(precision, batch, hidden, config):
    """The LayerNorm-GRU's backward (cudnn, every flag on, sm_90) where a program would step two batch blocks of
    16 rows: it steps them (TF32, float64) or one block of 32 (bf16, ``configs.WIDE_BLOCK_B``), and neither the
    grid-synchronised kernel nor any of the three per-step phases spills. In blocks of 16, when the normalisation
    phase ran its three gates unrolled, ptxas spilled 8 B in both (bf16); while the rows, units and slices of
    every phase were computed once before the time loop and held through all of it (before each phase made its
    own with ``opaque_zero``), the grid-synchronised kernel spilled 56 B (TF32) and 184 B (float64)."""
    found, kernels = compiled(FIRST_CONFIG_CLEAN, precision, str(batch), str(hidden)).splitlines()[-2:]
    assert found == config
    assert kernels == "4 0", "the grid-synchronised kernel and the three per-step phases, none spilling"


STREAMED = """
import sys
import torch
import triton
from tritongru import launchers
from tritongru.compile_check import EVERY_FLAG
from tritongru.compiled import copy_problems, kernel_resources, planned_step, step_facts
from tritongru.configs import heuristic_config
from tritongru.precisions import PRECISIONS

kernel, precision = sys.argv[1:3]
tf32 = PRECISIONS[precision].allow_tf32
config = heuristic_config(kernel, 16, 2048, dtype=torch.float32, allow_tf32=tf32, sm_count=132)
print(config.block_k, config.num_warps, config.streamed_chunks)
flags = EVERY_FLAG[kernel][0]
kind, args = launchers.meta_arguments(kernel, "cudnn", precision, 16, 2048, 64, flags, config)
((mode, call),) = launchers.compiled_calls(kind, "cudnn", config, 16, 2048, args, 90, fallbacks=False)
found = kernel_resources(launchers.KIND_KERNELS[kind], call, 90)
print(mode, found.spills, found.shared <= 227 * 1024, triton.__version__)
facts = step_facts(found.ptx)
planned = planned_step(kernel, "cudnn", config, 2048, torch.float32, tensor_cores=tf32)
copies = "cp.async" in found.ptx
print(facts.round_trips, planned.round_trips, facts.mma == planned.mma, copies, copy_problems(found.ptx))
"""


@pytest.mark.parametrize("precision", ["tf32", "fp32"])
@pytest.mark.parametrize("kernel", ["forward", "backward"])
def test_the_float32_kernels_streaming_part_of_their_weights_copy_it_in_a_pipelined_loop_without_spilling(
    kernel, precision
):
    """The heuristic's float32 kernels at B=16 H=2048 (every flag on, sm_90), K chunks of 128, 6 held (forward)
    or 5 (backward) and the rest streamed from L2 every step in a loop the compiler pipelines: the
    grid-synchronised kernel fits an SM's shared memory and spills nothing with Triton 3.6 (the GPU machine's;
    with 3.9 a few bytes are allowed, the launchers then take the next alternative); the loop's copies go
    straight into shared memory (``cp.async``), all waited for before the barrier, and the step waits as planned
    (the held chunks' waves, the loop's body and its end). Before the loop, the backward's streamed waves spilled
    48-240 B in every config tried (its launch was per step), and the forward's took 255 registers."""
    config, resources, trips = compiled(STREAMED, kernel, precision).splitlines()[-3:]
    assert config == {"forward": "128 8 10", "backward": "128 8 11"}[kernel]
    mode, spills, fits, version = resources.split()
    assert (mode, fits) == ("grid-sync", "True")
    assert int(spills) <= (0 if version.startswith("3.6.") else 32)
    planned = {"forward": "(3,) (3,)", "backward": "(4,) (4,)"}[kernel]
    assert trips == f"{planned} True True []"
