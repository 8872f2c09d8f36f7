"""Compile the recurrent kernels for a CUDA architecture on a machine without a GPU.

Triton's interpreter runs kernels as NumPy and forgives what the compiler does not (type rules, layouts,
constructs the code generator rejects). This module sends every kernel specialisation the launchers can ask
for through the real compiler, down to a cubin with Triton's bundled ``ptxas``, for a target architecture.
It needs Triton's CUDA backend but no GPU, and must run without ``TRITON_INTERPRET``::

    python -m tritongru.compile_check --arch 90          # H100
    python -m tritongru.compile_check --arch 80 --quick  # A100, one specialisation per code path
"""

from __future__ import annotations

import argparse
import itertools
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tritongru.environment import interpreting
from tritongru.kernels.backward import gru_backward_kernel
from tritongru.kernels.forward import gru_forward_kernel

STORAGE = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32", "fp64": "*fp64"}
BLOCKS = {"BLOCK_B": 16, "BLOCK_H": 64, "BLOCK_K": 32}


def _forward_variants(quick: bool) -> list[tuple[dict[str, str], dict]]:
    variants = []
    for storage, classic, fuse_input, has_bias, has_lengths, store_gates in itertools.product(
        STORAGE, (False, True), (False, True), (True, False), (False, True), (False, True)
    ):
        if fuse_input and has_lengths:  # the cell has no lengths
            continue
        if quick and (not has_bias or has_lengths != store_gates or storage in ("fp16", "fp64")):
            continue
        compute = "*fp64" if storage == "fp64" else "*fp32"
        pointers = dict.fromkeys(("gi_ptr", "x_ptr", "w_ih_ptr", "b_ih_ptr", "w_hh_ptr", "b_hh_ptr"), STORAGE[storage])
        pointers.update(dict.fromkeys(("hs_ptr", "gates_ptr", "rh_ptr"), compute), lengths_ptr="*i64")
        constexprs = dict(
            CLASSIC=classic,
            RUN_PHASE_1=True,
            RUN_PHASE_2=True,
            FUSE_INPUT=fuse_input,
            HAS_BIAS=has_bias,
            HAS_LENGTHS=has_lengths,
            STORE_GATES=store_gates,
            ACC_DTYPE=tl.float64 if storage == "fp64" else tl.float32,
            DOT_PRECISION="tf32" if storage == "fp32" else "ieee",
            **BLOCKS,
        )
        variants.append((pointers, constexprs))
    return variants


def _backward_variants(quick: bool) -> list[tuple[dict[str, str], dict]]:
    variants = []
    for storage, classic, has_lengths in itertools.product(STORAGE, (False, True), (False, True)):
        if quick and (has_lengths or storage in ("fp16", "fp64")):
            continue
        compute = "*fp64" if storage == "fp64" else "*fp32"
        pointers = dict.fromkeys(
            ("grad_hs_ptr", "carry_ptr", "hs_ptr", "gates_ptr", "dgates_x_ptr", "dgates_hn_ptr"), compute
        )
        pointers.update(w_hh_ptr=STORAGE[storage], lengths_ptr="*i64")
        constexprs = dict(
            CLASSIC=classic,
            RUN_PHASE_1=True,
            RUN_PHASE_2=True,
            HAS_LENGTHS=has_lengths,
            ACC_DTYPE=tl.float64 if storage == "fp64" else tl.float32,
            DOT_PRECISION="tf32" if storage == "fp32" else "ieee",
            **BLOCKS,
        )
        variants.append((pointers, constexprs))
    return variants


def _compile(kernel, pointers: dict[str, str], constexprs: dict, arch: int) -> None:
    names = kernel.arg_names
    signature = {name: "constexpr" if name in constexprs else pointers.get(name, "i32") for name in names}
    source = ASTSource(fn=kernel, signature=signature, constexprs={(names.index(k),): v for k, v in constexprs.items()})
    triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4, "num_stages": 2})


def check(arch: int, *, quick: bool = False) -> tuple[int, list[str]]:
    """Compile every specialisation for ``sm_<arch>``; return (how many compiled, one line per failure)."""
    if interpreting():
        raise RuntimeError("compile_check needs the real compiler: unset TRITON_INTERPRET")
    compiled, failures = 0, []
    for kernel, variants in (
        (gru_forward_kernel, _forward_variants(quick)),
        (gru_backward_kernel, _backward_variants(quick)),
    ):
        for pointers, constexprs in variants:
            try:
                _compile(kernel, pointers, constexprs, arch)
            except Exception as error:  # any compiler error is a finding to report
                flags = {k: v for k, v in constexprs.items() if k not in BLOCKS}
                failures.append(
                    f"{kernel.__name__} {pointers.get('w_hh_ptr')} {flags}: {type(error).__name__}: {error}"
                )
            else:
                compiled += 1
    return compiled, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90, help="CUDA compute capability, e.g. 80 (A100), 90 (H100)")
    parser.add_argument("--quick", action="store_true", help="one specialisation per code path")
    args = parser.parse_args(argv)
    compiled, failures = check(args.arch, quick=args.quick)
    print(f"triton {triton.__version__}, sm_{args.arch}: {compiled} compiled, {len(failures)} failed")
    for line in failures:
        print(line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
