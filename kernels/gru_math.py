"""Shared ``@triton.jit`` helpers: numerically stable activations and the tile product of a gate."""

import triton
import triton.language as tl

from tritongru.environment import interpreting

# Triton's interpreter multiplies bfloat16 ``tl.dot`` operands as raw bits (seen with triton 3.9); there the
# operands are widened to float32 first, which is exact (a product of two bf16 values fits in float32).
_WIDEN_BF16_DOT = tl.constexpr(interpreting())


@triton.jit
def sigmoid(x):
    """Logistic function, stable for large |x| (never forms exp of a large positive number)."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@triton.jit
def tanh(x):
    """tanh(x) = 2 sigmoid(2x) - 1, written with ``exp``: ``libdevice.tanh`` returns nothing under the
    interpreter, and this form never overflows."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def hidden_tile(i_tile, H, m_b, BLOCK_H: tl.constexpr):
    """Hidden tile ``i_tile``: its column offsets ``o_j``, their mask ``m_j``, and the ``[BLOCK_B, BLOCK_H]`` mask
    with the batch rows ``m_b``."""
    o_j = i_tile * BLOCK_H + tl.arange(0, BLOCK_H)
    m_j = o_j < H
    return o_j, m_j, m_b[:, None] & m_j[None, :]


@triton.jit
def dot(a, w, acc, DOT_PRECISION: tl.constexpr):
    """``acc + a @ w`` with ``a`` cast to ``w``'s dtype (tensor cores for bf16/fp16/tf32), ``acc``'s precision."""
    a = a.to(w.dtype)
    if _WIDEN_BF16_DOT:
        if w.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
    return tl.dot(a, w, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def accumulate_product(
    acc,
    a_ptr,
    a_row_stride,
    rows,
    m_b,
    w_ptr,
    w_stride_k,
    w_stride_j,
    o_j,
    m_j,
    K,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """``acc[b, j] += sum_k a[rows[b], k] * w[k, j]`` over ``k < K``, for one ``[BLOCK_B, BLOCK_H]`` tile.

    ``a`` is row-major with row stride ``a_row_stride``, ``rows`` its (int64) row indices; element ``w[k, j]`` lives at
    ``w_ptr + k * w_stride_k + j * w_stride_j``, so the same helper reads ``W`` (backward, ``w[k, j] = W[k, j]``)
    and ``W^T`` (forward, ``w[k, j] = W[j, k]``); see :func:`dot` for precision.
    """
    o_k = tl.arange(0, BLOCK_K)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + o_k
        m_k = k < K
        a = tl.load(a_ptr + rows[:, None] * a_row_stride + k[None, :], mask=m_b[:, None] & m_k[None, :], other=0.0)
        w = tl.load(
            w_ptr + k[:, None] * w_stride_k + o_j[None, :] * w_stride_j,
            mask=m_k[:, None] & m_j[None, :],
            other=0.0,
        )
        acc = dot(a, w, acc, DOT_PRECISION)
    return acc
