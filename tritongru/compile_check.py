"""Compile the recurrent kernels for a CUDA architecture on a machine without a GPU, and report their resources.

Triton's interpreter runs kernels as NumPy and forgives what the compiler does not (type rules, layouts,
constructs the code generator rejects). This module sends every kernel call the launchers make for a set of
sizes through the real compiler, down to a cubin with Triton's bundled ``ptxas``, with the specialisation the
JIT would choose (16-byte-aligned pointers, integers divisible by 16, ``1`` and ``None`` as constants), and
reports what each needs: registers per thread, bytes of spilled registers, shared memory per program.

It checks what must hold before a GPU ever runs them: nothing fails to compile; no config the heuristic picks
spills or needs more shared memory than an SM has; and in every grid-synchronised kernel the barrier is what
it must be (a release atomic to arrive, acquire loads to poll, no asynchronous copy that could cross it).
It needs Triton's CUDA backend but no GPU, and must run without ``TRITON_INTERPRET``::

    python -m tritongru.compile_check --arch 90               # every size of SIZES, the extreme flags
    python -m tritongru.compile_check --arch 90 --every-flag  # ... and every combination of flags
    python -m tritongru.compile_check --arch 90 --quick       # one size, one specialisation per code path
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import itertools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Heuristics

from tritongru.configs import KernelConfig, heuristic_config
from tritongru.environment import interpreting
from tritongru.kernels.backward import gru_backward_kernel
from tritongru.kernels.forward import gru_forward_kernel
from tritongru.kernels.grid_sync import barrier_stress_kernel
from tritongru.launchers import LaunchPlan, backward_arguments, forward_arguments, kernel_calls
from tritongru.precisions import PRECISIONS

SM_COUNT = {80: 108, 90: 132, 100: 148}
"""SMs of the reference GPU of each architecture (A100, H100 SXM, B200), for the heuristic's grid."""

SHARED_MEMORY_MAX = {80: 163 * 1024, 90: 227 * 1024, 100: 227 * 1024}
"""Shared memory one program may use on each architecture."""

SIZES = [(batch, hidden) for batch in (1, 16, 64, 256) for hidden in (64, 256, 512, 768, 1024, 2048)]
"""``(batch, hidden)`` of the full check: the benchmark's region."""

QUICK_SIZES = [(16, 256)]
"""A grid-synchronised size (the cell runs it per step)."""

INPUT_SIZE = 64
"""Input width of the cell's specialisations."""


@dataclass(frozen=True)
class Specialisation:
    """One compiled kernel: which launcher call it serves and the keyword arguments that call passes."""

    kernel: str
    variant: str
    precision: str
    batch: int
    hidden: int
    config: KernelConfig
    mode: str
    flags: str
    call: dict

    def describe(self) -> str:
        if self.kernel == "stress":
            return f"stress   barrier alone, {self.call['tags_ptr'].shape[1]} programs"
        c, call = self.config, self.call
        phases = f"phase {call['FIRST_PHASE']}" + (
            f"-{call['LAST_PHASE']}" if call["LAST_PHASE"] > call["FIRST_PHASE"] else ""
        )
        return (
            f"{self.kernel:8} {self.variant:7} {self.precision:4} B={self.batch:<4} H={self.hidden:<5} "
            f"{self.mode:9} {phases:9} {'pdl' if call.get('launch_pdl') else '   '} "
            f"b{c.block_b}/h{c.block_h}/k{c.block_k}/w{c.num_warps}/s{c.num_stages} {self.flags}"
        )


@dataclass(frozen=True)
class Resources:
    """What one program of a compiled kernel needs: ``registers`` per thread, ``spills`` (bytes of spill
    stores), ``shared`` (bytes of shared memory), and the kernel's ``ptx``."""

    registers: int
    spills: int
    shared: int
    ptx: str


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


def _plans(config: KernelConfig, batch: int, hidden: int, arch: int) -> dict[str, LaunchPlan]:
    """The plans the launchers can choose for ``config`` on a GPU of ``arch``: its own, and the per-step
    fallback of a grid-synchronised config whose grid would not fit at once."""
    grid = (triton.cdiv(hidden, config.block_h), triton.cdiv(batch, config.block_b))
    per_step = LaunchPlan(grid, persistent=False, grid_sync=False, use_pdl=arch >= 90)
    if not config.persistent:
        return {"per-step": per_step}
    if grid[0] == 1:
        return {"one-slice": LaunchPlan(grid, persistent=True, grid_sync=False, use_pdl=False)}
    return {"grid-sync": LaunchPlan(grid, persistent=True, grid_sync=True, use_pdl=False), "per-step": per_step}


def _calls(
    kernel: str,
    variant: str,
    precision: str,
    batch: int,
    hidden: int,
    flags: dict,
    config: KernelConfig,
    input_size: int = INPUT_SIZE,
):
    """``(kind, args)``: the launcher's kernel arguments for one problem, on meta tensors."""
    p = PRECISIONS[precision]
    dtype, H, T = p.dtype, hidden, 2
    weights = dict(w_hh=_meta(3 * H, H, dtype=dtype), b_hh=_meta(3 * H, dtype=dtype) if flags["bias"] else None)
    lengths = _meta(batch, dtype=torch.int64) if flags.get("lengths") else None
    if kernel == "backward":
        NG = 4 if variant == "cudnn" else 3
        args, _ = backward_arguments(
            grad_output=_meta(T, batch, H, dtype=dtype),
            grad_h_n=_meta(batch, H, dtype=p.compute_dtype),
            hs=_meta(T + 1, batch, H, dtype=dtype),
            gates=_meta(T, batch, NG * H, dtype=dtype),
            w_hh=weights["w_hh"],
            variant=variant,
            lengths=lengths,
            allow_tf32=p.allow_tf32,
            config=config,
        )
        return "backward", args
    cell = kernel == "cell"
    args, _ = forward_arguments(
        gi=None if cell else _meta(T, batch, 3 * H, dtype=dtype),
        x=_meta(batch, input_size, dtype=dtype) if cell else None,
        w_ih=_meta(3 * H, input_size, dtype=dtype) if cell else None,
        b_ih=_meta(3 * H, dtype=dtype) if cell and flags["bias"] else None,
        h0=_meta(batch, H, dtype=dtype),
        steps=1 if cell else T,
        lengths=lengths,
        variant=variant,
        store_gates=flags["store_gates"],
        allow_tf32=p.allow_tf32,
        config=config,
        **weights,
    )
    return "forward", args


def config_specialisations(
    kernel: str,
    variant: str,
    precision: str,
    batch: int,
    hidden: int,
    config: KernelConfig,
    arch: int,
    *,
    flags: dict,
    input_size: int = INPUT_SIZE,
) -> list[Specialisation]:
    """The distinct compiles one launcher call makes under ``config`` (every launch of its plan, and of the
    per-step fallback of a grid-synchronised plan)."""
    kind, args = _calls(kernel, variant, precision, batch, hidden, flags, config, input_size)
    label = " ".join(name for name, on in flags.items() if on) or "-"
    found = {}
    for mode, plan in _plans(config, batch, hidden, arch).items():
        for call in kernel_calls(kind, variant, plan, 2, args):
            found.setdefault(
                _compile_key(kind, call),
                Specialisation(kernel, variant, precision, batch, hidden, config, mode, label, call),
            )
    return list(found.values())


EVERY_FLAG = {
    "forward": [
        dict(bias=bias, lengths=lengths, store_gates=store)
        for bias, lengths, store in itertools.product((True, False), repeat=3)
    ],
    "cell": [dict(bias=bias, store_gates=store) for bias, store in itertools.product((True, False), repeat=2)],
    "backward": [dict(bias=True, lengths=lengths) for lengths in (False, True)],
}
FLAGS = {kernel: [flags[0], flags[-1]] for kernel, flags in EVERY_FLAG.items()}
"""The flags of the full check: every optional input and output on, and every one off (each flag adds or
removes whole loads and stores); ``--every-flag`` compiles each combination."""
QUICK_FLAGS = {
    "forward": [dict(bias=True, lengths=True, store_gates=True)],
    "cell": [dict(bias=True, store_gates=True)],
    "backward": [dict(bias=True, lengths=True)],
}


def specialisations(
    arch: int, *, quick: bool = False, every_flag: bool = False, precisions: tuple[str, ...] = tuple(PRECISIONS)
) -> list[Specialisation]:
    """Every distinct kernel compile the launchers ask for at :data:`SIZES` (or :data:`QUICK_SIZES`), with
    the heuristic's config for an ``arch`` GPU, every variant, ``precisions`` (bf16 only when ``quick``),
    and :data:`FLAGS` (or every flag combination)."""
    sizes = QUICK_SIZES if quick else SIZES
    precisions = ("bf16",) if quick else precisions
    found: dict[tuple, Specialisation] = {}
    for kernel, variant, precision, (batch, hidden) in itertools.product(
        ("forward", "cell", "backward"), ("cudnn", "classic"), precisions, sizes
    ):
        p = PRECISIONS[precision]
        config = heuristic_config(
            kernel, batch, hidden, dtype=p.dtype, allow_tf32=p.allow_tf32, sm_count=SM_COUNT[arch]
        )
        for flags in (QUICK_FLAGS if quick else EVERY_FLAG if every_flag else FLAGS)[kernel]:
            for spec in config_specialisations(kernel, variant, precision, batch, hidden, config, arch, flags=flags):
                found.setdefault((kernel, _compile_key(_kind(kernel), spec.call)), spec)
    return list(found.values())


def stress_specialisation() -> Specialisation:
    """The barrier stress kernel as :func:`tritongru.launchers.stress_barrier` launches it (132 programs)."""
    call = dict(
        tags_ptr=_meta(2, 132, dtype=torch.int32),
        errors_ptr=_meta(1, dtype=torch.int32),
        sync_ptr=_meta(1, dtype=torch.int32),
        steps=4000,
        max_delay=2000,
        spin_limit=2_000_000_000,
        BLOCK=256,
        num_warps=1,
        launch_cooperative_grid=True,
    )
    return Specialisation("stress", "-", "-", 0, 0, KernelConfig(16, 16, 16, num_warps=1), "grid-sync", "-", call)


def _kind(kernel: str) -> str:
    """The kernel function a launcher call runs: the cell is the forward kernel with its input side fused."""
    return "forward" if kernel == "cell" else kernel


def _kernel(kind: str):
    return {"forward": gru_forward_kernel, "backward": gru_backward_kernel, "stress": barrier_stress_kernel}[kind]


def _source_and_options(kind: str, call: dict) -> tuple[ASTSource, dict]:
    """What the JIT would compile for ``call``: the heuristics' constants, each argument specialised as the
    JIT specialises it, and the launch options."""
    kernel = _kernel(kind)
    call = dict(call)
    jit = kernel
    if isinstance(kernel, Heuristics):
        for name, rule in kernel.values.items():
            call[name] = rule(call)
        jit = kernel.fn
    options = {name: call.pop(name) for name in list(call) if name not in jit.arg_names}
    signature, constexprs, attrs = {}, {}, {}
    for index, (name, param) in enumerate(zip(jit.arg_names, jit.params, strict=True)):
        value = call[name]
        if param.is_constexpr:
            signature[name] = "constexpr"
            constexprs[(index,)] = value
            continue
        arg_type, hint = _specialise(value, param)
        if arg_type == "constexpr":
            signature[name] = "constexpr"
            constexprs[(index,)] = value
        else:
            signature[name] = arg_type
            attrs[(index,)] = BaseBackend.parse_attr(hint or "")
    return ASTSource(fn=jit, signature=signature, constexprs=constexprs, attrs=attrs), options


def _specialise(value, param) -> tuple[str, str]:
    """``(type, hint)`` of an argument as the JIT specialises it (``do_not_specialize`` honoured)."""
    from triton._C.libtriton import native_specialize_impl

    arg_type, hint = native_specialize_impl(
        BaseBackend, value, False, not param.do_not_specialize, not param.do_not_specialize_on_alignment
    )
    return arg_type, hint if isinstance(hint, str) else ""


def _compile_key(kind: str, call: dict) -> tuple:
    """What makes two calls compile to different code: signature, constants, hints and options, but for
    ``launch_pdl``, which only changes how the same code is launched."""
    source, options = _source_and_options(kind, call)
    options.pop("launch_pdl", None)
    return (
        tuple(sorted(source.signature.items())),
        tuple(sorted((k, str(v)) for k, v in source.constants.items())),
        tuple(sorted((k, str(v)) for k, v in source.attrs.items())),
        tuple(sorted(options.items())),
    )


def resources(spec: Specialisation, arch: int) -> Resources:
    """Compile ``spec`` for ``sm_<arch>`` and read its resources (registers and spills from ``ptxas -v``)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    source, options = _source_and_options(_kind(spec.kernel), spec.call)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = compiled.asm["ptx"]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "kernel.ptx"
        path.write_text(ptx)
        report = subprocess.run(
            [get_ptxas(arch).path, "-v", f"--gpu-name={sm_arch_from_capability(arch)}", str(path), "-o", "/dev/null"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    spills = int(re.search(r"(\d+) bytes spill stores", report).group(1))
    return Resources(registers=registers, spills=spills, shared=compiled.metadata.shared, ptx=ptx)


def barrier_problems(ptx: str) -> list[str]:
    """What is wrong with a grid-synchronised kernel's barrier in its PTX (empty when nothing is)."""
    problems = []
    if not re.search(r"(red|atom)\.global\.gpu\.release\.add", ptx):
        problems.append("no release atomic add (arrival)")
    if not re.search(r"(ld|atom)\.global\.gpu\.acquire", ptx):
        problems.append("no acquire load (poll)")
    if "cp.async" in ptx:
        problems.append("an asynchronous copy (cp.async) could cross the barrier")
    return problems


@functools.cache
def _all_specialisations(arch: int, quick: bool, every_flag: bool, precisions: tuple[str, ...]) -> list:
    found = specialisations(arch, quick=quick, every_flag=every_flag, precisions=precisions)
    return [*found, stress_specialisation()]


def _compile_one(arch: int, selection: tuple, index: int) -> Resources | str:
    """Resources of specialisation ``index``, or the compiler's error as a line (run in a worker process)."""
    try:
        return resources(_all_specialisations(arch, *selection)[index], arch)
    except Exception as error:  # any compiler error is a finding to report
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def check(
    arch: int,
    *,
    quick: bool = False,
    every_flag: bool = False,
    precisions: tuple[str, ...] = tuple(PRECISIONS),
    jobs: int = 1,
    echo=None,
) -> tuple[list[tuple[Specialisation, Resources]], list[str]]:
    """Compile every specialisation (in ``jobs`` processes); return (each with its resources, one line per
    failure). A failure is a compile error, a spill or too much shared memory, or a broken barrier in a
    grid-synchronised kernel."""
    if interpreting():
        raise RuntimeError("compile_check needs the real compiler: unset TRITON_INTERPRET")
    selection = (quick, every_flag, tuple(precisions))
    specs = _all_specialisations(arch, *selection)
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        repeat = itertools.repeat
        outcomes = pool.map(_compile_one, repeat(arch), repeat(selection), range(len(specs)))
        compiled, failures = [], []
        for spec, found in zip(specs, outcomes, strict=True):
            if isinstance(found, str):
                failures.append(f"{spec.describe()}: {found}")
                continue
            compiled.append((spec, found))
            if echo is not None:
                echo(f"{spec.describe()}  regs {found.registers:3}  spill {found.spills:5} B  smem {found.shared:6} B")
            if found.spills:
                failures.append(f"{spec.describe()}: spills {found.spills} bytes of registers")
            if found.shared > SHARED_MEMORY_MAX[arch]:
                failures.append(f"{spec.describe()}: needs {found.shared} bytes of shared memory")
            if spec.mode == "grid-sync":
                failures += [f"{spec.describe()}: {problem}" for problem in barrier_problems(found.ptx)]
    return compiled, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, choices=sorted(SM_COUNT), help="CUDA compute capability")
    parser.add_argument("--quick", action="store_true", help="a few sizes, one specialisation per code path")
    parser.add_argument("--every-flag", action="store_true", help="every combination of optional inputs/outputs")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes (default: CPUs)")
    args = parser.parse_args(argv)
    compiled, failures = check(
        args.arch,
        quick=args.quick,
        every_flag=args.every_flag,
        precisions=tuple(args.precisions),
        jobs=args.jobs,
        echo=print,
    )
    print(f"triton {triton.__version__}, sm_{args.arch}: {len(compiled)} compiled, {len(failures)} failed")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
