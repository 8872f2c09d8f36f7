"""Compile the recurrent kernels for a CUDA architecture on a machine without a GPU, and report their resources.

Triton's interpreter runs kernels as NumPy and forgives what the compiler does not (type rules, layouts,
constructs the code generator rejects). For every launcher call at a set of sizes (kernel, formulation,
precision, batch, hidden size, optional inputs and outputs), this module takes the config the launchers would
take on a GPU of the given architecture (the heuristic's first alternative that compiles without spilling,
:func:`tritongru.launchers.first_spill_free`), sends every kernel that config may launch through the real
compiler down to a cubin with Triton's bundled ``ptxas``, with the specialisation the JIT would choose
(:mod:`tritongru.compiled`), and reports what each needs: registers per thread, bytes of spilled registers,
shared memory per program.

It checks what must hold before a GPU ever runs them: nothing fails to compile; no config the launchers
would take spills or needs more shared memory than an SM has; in every grid-synchronised kernel the
barrier is what it must be (a release atomic to arrive, acquire loads to poll, no asynchronous copy that could
cross it: :func:`tritongru.compiled.copy_problems`); and every grid-synchronised step does what its plan says
(:func:`step_problems`): one round trip to L2 per wave of exchanged data and phase, no warp computing products
or gates another warp computes. It needs Triton's CUDA backend but no GPU, and must run without
``TRITON_INTERPRET``::

    python -m tritongru.compile_check --arch 90               # every size of SIZES, the extreme flags
    python -m tritongru.compile_check --arch 90 --every-flag  # ... and every combination of flags
    python -m tritongru.compile_check --arch 90 --quick       # a few sizes, bf16, one flag, no fallbacks
    python -m tritongru.compile_check --arch 90 --kernels backward --precisions bf16 tf32  # a part
    python -m tritongru.compile_check --arch 90 --sizes heads --variants cudnn  # the multi-head sizes, one form
    python -m tritongru.compile_check --arch 90 --kernels layernorm-forward layernorm-backward  # LayerNorm-GRU

The LayerNorm-GRU's kernels take the plain kernels' configs and are checked for everything but the step plan
(their statistics phases add barriers the plan does not model).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import re
import sys
from dataclasses import dataclass

import triton

from tritongru.compiled import Resources, copy_problems, kernel_resources, mma_shape, planned_step, step_facts
from tritongru.configs import KERNELS, SHARED_MEMORY_MAX, KernelConfig
from tritongru.environment import interpreting
from tritongru.kernels.grid_sync import barrier_stress_kernel
from tritongru.launchers import (
    KIND_KERNELS,
    compiled_calls,
    exchange,
    first_spill_free,
    meta_arguments,
    stress_arguments,
)
from tritongru.precisions import PRECISIONS
from tritongru.variants import VARIANTS

SM_COUNT = {80: 108, 90: 132, 100: 148}
"""SMs of the reference GPU of each architecture (A100, H100 SXM, B200), for the heuristic's grid."""


SIZES = [(batch, hidden) for batch in (1, 16, 64, 256) for hidden in (64, 256, 512, 768, 1024, 2048)]
"""``(batch, hidden)`` of the full check: the benchmark's region."""

QUICK_SIZES = [(16, 256)]
"""A grid-synchronised size: its kernels, their per-step fallbacks, and the cell (run per step). The heuristic's
own per-step configs (float32 and TF32 at ``H = 2048`` and ``B > 16``, float64 above ``H = 256``) are the full
check's."""

HEAD_SIZES = [(16, 512, 16), (64, 1024, 8), (256, 1024, 16)]
"""``(batch, hidden, num_heads)`` of the multi-head GRU in the full check: heads of 32 units (one program per
head, no grid barrier), of 128 and of 64 (several slices per head at a grid barrier, batch blocks stepped in
turn)."""

QUICK_HEAD_SIZES = [(16, 256, 8), (64, 1024, 8)]
"""The multi-head sizes of the quick check: a head per program, and several programs per head."""

SIZE_SETS = ("all", "dense", "heads")
"""``--sizes``: the dense GRU's and the multi-head GRU's sizes, or one of the two."""

INPUT_SIZE = 64
"""Input width of the cell's calls."""

CHECK_KERNELS = (*KERNELS, "layernorm-forward", "layernorm-backward")
"""``--kernels``: the launchers' calls (forward, backward, cell) and the LayerNorm-GRU's two kernels."""

EVERY_FLAG = {
    "forward": [
        dict(bias=bias, lengths=lengths, store_gates=store, zoneout=zoneout)
        for bias, lengths, store, zoneout in itertools.product((True, False), repeat=4)
    ],
    "cell": [
        dict(bias=bias, store_gates=store, zoneout=zoneout)
        for bias, store, zoneout in itertools.product((True, False), repeat=3)
    ],
    "backward": [
        dict(bias=True, lengths=lengths, zoneout=zoneout)
        for lengths, zoneout in itertools.product((True, False), repeat=2)
    ],
    "layernorm-forward": [
        dict(bias=False, lengths=lengths, store_gates=store, zoneout=zoneout)
        for lengths, store, zoneout in itertools.product((True, False), repeat=3)
    ],
    "layernorm-backward": [
        dict(bias=True, lengths=lengths, zoneout=zoneout)
        for lengths, zoneout in itertools.product((True, False), repeat=2)
    ],
}
FLAGS = {kernel: [flags[0], flags[-1]] for kernel, flags in EVERY_FLAG.items()}
"""The flags of the full check: every optional input and output on, and every one off (each flag adds or
removes whole loads and stores); ``--every-flag`` compiles each combination, ``--quick`` only all on."""


@dataclass(frozen=True)
class Call:
    """One launcher call: ``kernel`` (one of :data:`CHECK_KERNELS`), formulation, precision name, sizes and the
    optional inputs and outputs it passes."""

    kernel: str
    variant: str
    precision: str
    batch: int
    hidden: int
    flags: tuple[tuple[str, bool], ...]
    heads: int = 1

    @property
    def head_dim(self) -> int | None:
        """Units per head of a multi-head call (None: the dense GRU)."""
        return None if self.heads == 1 else self.hidden // self.heads

    def describe(self) -> str:
        flags = " ".join(name for name, on in self.flags if on) or "-"
        heads = f" heads={self.heads}" if self.heads > 1 else ""
        return (
            f"{self.kernel:8} {self.variant:7} {self.precision:4} B={self.batch:<4} H={self.hidden:<5} {flags}{heads}"
        )


@dataclass(frozen=True)
class Compiled:
    """One kernel a call may launch: the launch ``mode`` and ``phases``, its ``config``, and its resources."""

    mode: str
    phases: str
    config: KernelConfig
    resources: Resources

    def describe(self) -> str:
        c, r = self.config, self.resources
        split = "K" if c.split_k else "rows"
        streamed = f"/streamed {c.streamed_chunks}" if c.streamed_chunks else ""
        wave = f"/wave {c.max_wave_chunks}" if c.max_wave_chunks else ""
        return (
            f"{self.mode:9} {self.phases:9} b{c.block_b}x{c.batch_blocks}/h{c.block_h}/k{c.block_k}/w{c.num_warps}"
            f"({split})/s{c.num_stages}{streamed}{wave}"
            f"  regs {r.registers:3}  spill {r.spills:4} B  smem {r.shared:6} B"
        )


def calls(
    *,
    quick: bool = False,
    every_flag: bool = False,
    precisions: tuple[str, ...] = tuple(PRECISIONS),
    kernels: tuple[str, ...] = CHECK_KERNELS,
    sizes: str = "all",
    variants: tuple[str, ...] = VARIANTS,
):
    """Every launcher call the check covers: each of ``kernels`` and formulation at :data:`SIZES` and
    :data:`HEAD_SIZES` (or :data:`QUICK_SIZES` and :data:`QUICK_HEAD_SIZES`, bf16, all flags on; ``sizes``:
    one of :data:`SIZE_SETS`) in ``precisions`` and ``variants``, with :data:`FLAGS` (or every combination)."""
    dense = [(batch, hidden, 1) for batch, hidden in (QUICK_SIZES if quick else SIZES)]
    heads = QUICK_HEAD_SIZES if quick else HEAD_SIZES
    sizes = {"all": dense + heads, "dense": dense, "heads": heads}[sizes]
    precisions = ("bf16",) if quick else precisions
    found = []
    for kernel, variant, precision, (batch, hidden, heads) in itertools.product(kernels, variants, precisions, sizes):
        choices = EVERY_FLAG[kernel] if every_flag else FLAGS[kernel][:1] if quick else FLAGS[kernel]
        found += [Call(kernel, variant, precision, batch, hidden, tuple(flags.items()), heads) for flags in choices]
    return found


def compile_call(call: Call, arch: int, fallbacks: bool = True) -> tuple[KernelConfig, list[Compiled]]:
    """The config the launchers take for ``call`` on an ``arch`` GPU, and every kernel it may launch there
    (``fallbacks=False``: those of its own plan, not a grid-synchronised plan's per-step fallback)."""
    config = first_spill_free(
        call.kernel,
        call.variant,
        call.precision,
        call.batch,
        call.hidden,
        INPUT_SIZE,
        call.flags,
        arch,
        SM_COUNT[arch],
        head_dim=call.head_dim,
        fallbacks=fallbacks,
        exchange_name=exchange(),
    )
    kind, args = meta_arguments(
        call.kernel,
        call.variant,
        call.precision,
        call.batch,
        call.hidden,
        INPUT_SIZE,
        dict(call.flags),
        config,
        call.head_dim,
    )
    compiled = []
    launches = compiled_calls(kind, call.variant, config, call.batch, call.hidden, args, arch, call.head_dim, fallbacks)
    for mode, launch in launches:
        first, last = launch["FIRST_PHASE"], launch["LAST_PHASE"]
        phases = f"phase {first}" + (f"-{last}" if last > first else "")
        compiled.append(Compiled(mode, phases, config, kernel_resources(KIND_KERNELS[kind], launch, arch)))
    return config, compiled


def stress_resources(arch: int) -> Resources:
    """The barrier stress kernel as :func:`tritongru.launchers.stress_barrier` launches it (132 programs)."""
    return kernel_resources(barrier_stress_kernel, stress_arguments(132, 4000, 2000, "meta"), arch)


def barrier_problems(ptx: str) -> list[str]:
    """What is wrong with a grid-synchronised kernel's barrier in its PTX (empty when nothing is)."""
    problems = []
    if not re.search(r"(red|atom)\.global\.gpu\.release\.add", ptx):
        problems.append("no release atomic add (arrival)")
    if not re.search(r"(ld|atom)\.global\.gpu\.acquire", ptx):
        problems.append("no acquire load (poll)")
    return problems + copy_problems(ptx)


def step_problems(call: Call, compiled: Compiled) -> list[str]:
    """How a grid-synchronised kernel's time loop (:func:`tritongru.compiled.step_facts`) differs from its plan
    (:func:`tritongru.compiled.planned_step`): more round trips for exchanged data than waves, warps computing
    the same products or evaluating the same gates, cross-warp sums through lane shuffles, or barriers other
    than one per phase (empty when it does what the plan says)."""
    kind = "backward" if call.kernel == "backward" else "forward"
    precision = PRECISIONS[call.precision]
    found = step_facts(compiled.resources.ptx)
    width = call.head_dim or call.hidden
    # IEEE float32 multiplies on the FMA units; float64 on the tensor cores (DMMA) in the shape the compiler chose
    tensor_cores = precision.dot_precision != "ieee" or precision.dtype.itemsize != 4
    shape = mma_shape(compiled.resources.ptx) if precision.dtype.itemsize == 8 else None
    planned = planned_step(kind, call.variant, compiled.config, width, precision.dtype, tensor_cores, shape)
    problems = []
    if found.round_trips != planned.round_trips:
        problems.append(f"round trips per phase {found.round_trips}, planned {planned.round_trips}")
    if found.mma != planned.mma:
        problems.append(f"{found.mma} mma per warp and step, planned {planned.mma} (the tile's over the warps)")
    if found.exponentials != planned.exponentials:
        problems.append(
            f"{found.exponentials} ex2 per thread and step, planned {planned.exponentials} (the gates' elements"
            " shared out over the threads)"
        )
    if found.shuffles != planned.shuffles:
        problems.append(
            f"{found.shuffles} lane shuffles per thread and step, planned {planned.shuffles} (each element's"
            " cross-warp partials summed in one thread's registers)"
        )
    if found.arrivals != planned.arrivals:
        problems.append(f"{found.arrivals} barrier arrivals per step, planned {planned.arrivals}")
    return problems


def _problems(call: Call, compiled: Compiled, arch: int) -> list[str]:
    found = []
    if compiled.resources.spills:
        found.append(f"spills {compiled.resources.spills} bytes of registers")
    if compiled.resources.shared > SHARED_MEMORY_MAX[arch]:
        found.append(f"needs {compiled.resources.shared} bytes of shared memory")
    if compiled.mode == "grid-sync":
        found += barrier_problems(compiled.resources.ptx)
        if call.kernel in ("forward", "backward"):  # the step plan models the plain kernels' phases
            found += step_problems(call, compiled)
    return found


def _check_call(call: Call, arch: int, fallbacks: bool) -> list[tuple[str, list[str]]] | str:
    """``(line, problems)`` per kernel of ``call``, or the compiler's error as a line (in a worker process)."""
    try:
        _, compiled = compile_call(call, arch, fallbacks)
    except Exception as error:  # any compiler error is a finding to report
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"
    return [(f"{call.describe()}  {c.describe()}", _problems(call, c, arch)) for c in compiled]


def check(
    arch: int,
    *,
    quick: bool = False,
    every_flag: bool = False,
    precisions: tuple[str, ...] = tuple(PRECISIONS),
    kernels: tuple[str, ...] = CHECK_KERNELS,
    sizes: str = "all",
    variants: tuple[str, ...] = VARIANTS,
    jobs: int = 1,
    echo=None,
) -> tuple[int, list[str]]:
    """Compile every call's kernels (in ``jobs`` processes) and the barrier stress kernel; return (how many
    kernels compiled, one line per failure): a compile error, a spill, too much shared memory, or a broken
    barrier in a grid-synchronised kernel."""
    if interpreting():
        raise RuntimeError("compile_check needs the real compiler: unset TRITON_INTERPRET")
    todo = calls(
        quick=quick, every_flag=every_flag, precisions=precisions, kernels=kernels, sizes=sizes, variants=variants
    )
    compiled, failures = 0, []
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        outcomes = pool.map(_check_call, todo, itertools.repeat(arch), itertools.repeat(not quick))
        for call, outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, str):
                failures.append(f"{call.describe()}: {outcome}")
                continue
            for line, problems in outcome:
                compiled += 1
                if echo is not None:
                    echo(line)
                failures += [f"{line}: {problem}" for problem in problems]
    stress = stress_resources(arch)
    compiled += 1
    line = f"stress   barrier alone, 132 programs  regs {stress.registers:3}  spill {stress.spills:4} B"
    if echo is not None:
        echo(line)
    failures += [f"{line}: {problem}" for problem in barrier_problems(stress.ptx)]
    return compiled, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(SM_COUNT), help="CUDA compute capability")
    parser.add_argument(
        "--quick", action="store_true", help="a few sizes, bf16, one flag combination, the own plans' kernels only"
    )
    parser.add_argument("--every-flag", action="store_true", help="every combination of optional inputs/outputs")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--kernels", nargs="+", default=list(CHECK_KERNELS), choices=list(CHECK_KERNELS))
    parser.add_argument("--sizes", default="all", choices=SIZE_SETS, help="the dense sizes, the multi-head, or all")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes (default: CPUs)")
    args = parser.parse_args(argv)
    compiled, failures = check(
        args.arch,
        quick=args.quick,
        every_flag=args.every_flag,
        precisions=tuple(args.precisions),
        kernels=tuple(args.kernels),
        sizes=args.sizes,
        variants=tuple(args.variants),
        jobs=args.jobs,
        echo=print,
    )
    print(f"triton {triton.__version__}, sm_{args.arch}: {compiled} compiled, {len(failures)} failed")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
