"""Shared ``@triton.jit`` helpers: gate names, activations, tiles of a program, and the products of a step.

Every recurrent program owns one tile of ``BLOCK_B`` batch rows x ``BLOCK_H`` hidden units (its *slice*). In a
launch that runs many steps, the weights it multiplies by are loaded once as tuples of ``[BLOCK_K, BLOCK_H]``
tiles (:func:`gate_weights`), one tuple per gate, and stay on chip while the time loop runs; a step's products
(:func:`products`) stream the full-width operand (``h_{t-1}``, ``R * h``, gate gradients) from global memory
chunk by chunk against them.
"""

import triton
import triton.language as tl

from tritongru.environment import interpreting

GATE_R: tl.constexpr = tl.constexpr(0)
GATE_Z: tl.constexpr = tl.constexpr(1)
GATE_N: tl.constexpr = tl.constexpr(2)
"""Gate order everywhere, as torch stores it: ``W = [W_r; W_z; W_n]``, gate ``g`` in rows ``g*H .. g*H+H-1``."""

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
def program_tile(B, H, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """This program's tile: batch rows ``o_b`` (int64) and their mask ``m_b``, hidden units ``o_j`` and their
    mask ``m_j``, the ``[BLOCK_B, BLOCK_H]`` mask ``m`` and the tile's offsets ``p_own`` in a ``[B, H]`` array.
    Grid axis 0 runs over hidden slices, axis 1 over batch blocks."""
    o_j = tl.program_id(0) * BLOCK_H + tl.arange(0, BLOCK_H)
    o_b = (tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    m_b = o_b < B
    m_j = o_j < H
    return o_b, m_b, o_j, m_j, m_b[:, None] & m_j[None, :], o_b[:, None] * H + o_j[None, :]


@triton.jit
def gate_row(p, gate, o_j, m_j, H, ACC_DTYPE: tl.constexpr):
    """``p[gate*H + j]`` for this slice's units, as a ``[1, BLOCK_H]`` row in ``ACC_DTYPE`` (a bias)."""
    return tl.load(p + gate * H + o_j, mask=m_j, other=0.0).to(ACC_DTYPE)[None, :]


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
def gate_weights(
    p_w,
    stride_k,
    stride_j,
    o_j,
    m_j,
    K,
    RESIDENT: tl.constexpr,
    K_CHUNKS: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One gate's weights for this slice, ``w[k, j]`` at ``p_w + k*stride_k + j*stride_j`` (``k < K``). The
    forward reads ``W_g^T`` (``stride_k=1``), the backward ``W_g`` (``stride_j=1``).

    ``RESIDENT``: loaded once and held for the whole launch, a tuple of ``K_CHUNKS`` tiles
    ``[BLOCK_K, BLOCK_H]`` (zero past ``K``); the compiler keeps them in shared memory. Otherwise (one step per
    launch, where holding buys nothing) just ``p_w``: :func:`products` streams the tiles chunk by chunk."""
    if RESIDENT:
        o_k = tl.arange(0, BLOCK_K)
        tiles = ()
        for c in tl.static_range(K_CHUNKS):
            k = c * BLOCK_K + o_k
            m_w = (k < K)[:, None] & m_j[None, :]
            tiles = tiles + (tl.load(p_w + k[:, None] * stride_k + o_j[None, :] * stride_j, mask=m_w, other=0.0),)
        return tiles
    else:
        return p_w


@triton.jit
def products(
    accs,
    p_a,
    stride_a,
    o_b,
    m_b,
    K,
    weights,
    w_stride_k,
    w_stride_j,
    o_j,
    m_j,
    RESIDENT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    """``tuple(acc + a @ w for acc, w in zip(accs, weights))``: ``a[b, k]`` at ``p_a + o_b*stride_a + k``
    (``k < K``), ``weights`` a tuple of gates from :func:`gate_weights`. One K loop: each chunk of ``a`` is
    loaded once, bypassing L1 (other programs wrote it), and feeds every gate's product. Resident weights:
    the loop is unrolled over their tiles and nothing but ``a`` is loaded; streamed weights: a loop that the
    compiler may pipeline, loading each gate's tile beside ``a``."""
    o_k = tl.arange(0, BLOCK_K)
    if RESIDENT:
        for c in tl.static_range(K_CHUNKS):
            k = c * BLOCK_K + o_k
            m_a = m_b[:, None] & (k < K)[None, :]
            a = tl.load(p_a + o_b[:, None] * stride_a + k[None, :], mask=m_a, other=0.0, cache_modifier=".cg")
            updated = ()
            for g in tl.static_range(len(weights)):
                updated = updated + (dot(a, weights[g][c], accs[g], DOT_PRECISION),)
            accs = updated
    else:
        for k0 in tl.range(0, K, BLOCK_K):
            k = k0 + o_k
            m_k = k < K
            m_a = m_b[:, None] & m_k[None, :]
            a = tl.load(p_a + o_b[:, None] * stride_a + k[None, :], mask=m_a, other=0.0, cache_modifier=".cg")
            m_w = m_k[:, None] & m_j[None, :]
            updated = ()
            for g in tl.static_range(len(weights)):
                p_w = weights[g] + k[:, None] * w_stride_k + o_j[None, :] * w_stride_j
                updated = updated + (dot(a, tl.load(p_w, mask=m_w, other=0.0), accs[g], DOT_PRECISION),)
            accs = updated
    return accs
