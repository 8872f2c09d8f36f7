"""What a kernel call compiles to for a CUDA architecture, read without a GPU.

Triton's JIT specialises every call: each argument by its type, 16-byte alignment and divisibility by 16 (and
the value 1 or ``None`` as a constant), unless the kernel says ``do_not_specialize``. :func:`specialise`
reproduces that for a call's keyword arguments (meta tensors do: only dtypes and alignment matter), and
:func:`kernel_resources` compiles it to a cubin with Triton's bundled ``ptxas`` for ``sm_<arch>`` and reads
what one program needs: registers and spilled bytes (``ptxas -v``), shared memory (Triton's metadata). It needs
Triton's CUDA backend but no GPU, and must run without ``TRITON_INTERPRET``.

The code is the JIT's; the on-disk cache entry is not: the JIT gives ``None`` arguments and constexprs
(empty) attributes and unspecialised ones none, :func:`specialise` the other way round, so the cache keys
differ and a launch of the same call compiles again (seen with Triton 3.6 and 3.9). What must be found in the
cache at launch is compiled through the JIT itself (:mod:`tritongru.harness.precompile`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource
from triton.runtime.autotuner import Heuristics


@dataclass(frozen=True)
class Resources:
    """What one program of a compiled kernel needs: ``registers`` per thread, ``spills`` (bytes of spill
    stores), ``shared`` (bytes of shared memory), and the kernel's ``ptx``."""

    registers: int
    spills: int
    shared: int
    ptx: str


def specialise(kernel, call: dict) -> tuple[ASTSource, dict]:
    """What the JIT would compile for ``kernel(**call)``: the heuristics' constants, each argument specialised
    as the JIT specialises it, and the launch options (``num_warps``, ``launch_pdl``, ...)."""
    call = dict(call)
    jit = kernel
    if isinstance(kernel, Heuristics):
        for name, rule in kernel.values.items():
            call[name] = rule(call)
        jit = kernel.fn
    options = {name: call.pop(name) for name in list(call) if name not in jit.arg_names}
    signature, constants, attrs = {}, {}, {}
    for index, (name, param) in enumerate(zip(jit.arg_names, jit.params, strict=True)):
        value = call[name]
        arg_type, hint = ("constexpr", "") if param.is_constexpr else _specialise(value, param)
        signature[name] = arg_type
        if arg_type == "constexpr":
            constants[(index,)] = value
        else:
            attrs[(index,)] = BaseBackend.parse_attr(hint)
    return ASTSource(fn=jit, signature=signature, constexprs=constants, attrs=attrs), options


def _specialise(value, param) -> tuple[str, str]:
    """``(type, hint)`` of an argument as the JIT specialises it (``do_not_specialize`` honoured)."""
    from triton._C.libtriton import native_specialize_impl

    arg_type, hint = native_specialize_impl(
        BaseBackend, value, False, not param.do_not_specialize, not param.do_not_specialize_on_alignment
    )
    return arg_type, hint if isinstance(hint, str) else ""


def compile_key(kernel, call: dict) -> tuple:
    """What makes two calls compile to different code: signature, constants, hints and options, but for
    ``launch_pdl``, which only changes how the same code is launched."""
    source, options = specialise(kernel, call)
    options.pop("launch_pdl", None)
    return (
        source.name,
        tuple(sorted(source.signature.items())),
        tuple(sorted((k, str(v)) for k, v in source.constants.items())),
        tuple(sorted((k, str(v)) for k, v in source.attrs.items())),
        tuple(sorted(options.items())),
    )


def kernel_resources(kernel, call: dict, arch: int) -> Resources:
    """Compile ``kernel(**call)`` for ``sm_<arch>`` and read its resources (registers and spills from
    ``ptxas -v``); remembered per distinct compile for the life of the process."""
    key = (compile_key(kernel, call), arch)
    if key not in _found:
        _found[key] = _compile(kernel, call, arch)
    return _found[key]


_found: dict[tuple, Resources] = {}


def _compile(kernel, call: dict, arch: int) -> Resources:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    source, options = specialise(kernel, call)
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
