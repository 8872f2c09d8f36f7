"""Calibration kernels: what the step model (``profiling/predict_steps.py``) assumes of the GPU, measured alone.

:func:`mma_rate_kernel` is the tensor cores' rate at the tile shapes the recurrent kernels issue: each program
multiplies one on-chip tile by another ``iters`` times into one accumulator, nothing else in its loop. Triton
picks the instruction from the shape and warps: a ``[16, K]`` tile on one warp is ``mma.sync`` (what today's
kernels issue, ``m16n8k16`` for bf16), a ``[64, K]`` tile on 4 warps is Hopper's ``wgmma`` (the gate rows as M,
``profiling/NOTES.md``, Next versions, item 6). :func:`l2_chase_kernel` is one L2 round trip alone: a chain of
dependent loads past L1.
"""

import triton
import triton.language as tl
from tritongru.kernels.gru_math import dot


@triton.jit(do_not_specialize=["iters"])
def mma_rate_kernel(
    out_ptr,
    iters,
    OPERAND_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """``out[pid] = iters * (a @ b)``, ``iters`` products accumulated one after another (float32): ``a [BLOCK_M,
    BLOCK_K]`` and ``b [BLOCK_K, BLOCK_N]`` hold -1, 0 and 1 (so every sum is exact) made from the program id,
    so that nothing is known to the compiler; ``out`` ``[programs, BLOCK_M, BLOCK_N]`` float32."""
    pid = tl.program_id(0)
    o_m = tl.arange(0, BLOCK_M)
    o_n = tl.arange(0, BLOCK_N)
    o_k = tl.arange(0, BLOCK_K)
    # through float32: Triton's interpreter turns int32 into bfloat16 as NaN (seen with triton 3.9)
    a = ((o_m[:, None] + 2 * o_k[None, :] + pid) % 3 - 1).to(tl.float32).to(OPERAND_DTYPE)
    b = ((3 * o_k[:, None] + o_n[None, :] + pid) % 3 - 1).to(tl.float32).to(OPERAND_DTYPE)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in tl.range(0, iters, num_stages=1):
        acc = dot(a, b, acc, DOT_PRECISION)
    tl.store(out_ptr + pid * BLOCK_M * BLOCK_N + o_m[:, None] * BLOCK_N + o_n[None, :], acc)


@triton.jit(do_not_specialize=["hops"])
def l2_chase_kernel(next_ptr, out_ptr, hops):
    """One program follows ``hops`` links of ``next`` (int32 indices into itself), each load past L1 (``.cg``, as
    the exchange's) and waiting for the one before: one L2 round trip a link, nothing else in flight. ``out[0]``:
    the index reached."""
    i = tl.zeros((), dtype=tl.int32)
    for _ in tl.range(0, hops, num_stages=1):
        i = tl.load(next_ptr + i, cache_modifier=".cg")
    tl.store(out_ptr, i)
