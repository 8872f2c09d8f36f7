"""Backward kernel (BPTT) of both GRU formulations: the sequential ``dh`` recurrence, weight-stationary.

Only ``dh`` is sequential; the weight, bias and input gradients are large products over all steps done by the
host afterwards from the gate gradients this kernel stores. Program ``(i_slice, i_batch)`` owns hidden units
``[i_slice*BLOCK_H, +BLOCK_H)`` of batch rows ``[i_batch*BLOCK_B, +BLOCK_B)``. In a launch of many steps
(``RESIDENT``) it holds the columns ``W_hh[:, slice]`` of every gate on chip for the whole launch; it keeps its
float32 slice of ``dh`` in registers. Step ``t`` runs from ``t_hi - 1`` down to ``t_lo``;
``g = dh + dL/d output_t`` is the total gradient of ``h_t`` (zero output gradient past a sequence's length,
where ``g`` passes through unchanged).

cudnn form (phases 0 and 1, one barrier per step):
  0. gate gradients of the slice, ``dn = g(1-z); dan = dn(1-n²); dar = dan·hn·r(1-r); daz = g(h-n)z(1-z);
     dhn = dan·r``; store ``dgates_x[t] = [dar, daz, dan]`` and ``dgates_hn[t] = dhn``; barrier;
  1. ``dh = g z + [dar, daz, dhn] @ W_hh[:, slice]``, the gate gradients read over the whole width.
classic form (phases 0, 1 and 2, two barriers per step):
  0. ``dan = g Z (1-H~²)``, ``daz = g (H~-h) Z(1-Z)``; store them; barrier;
  1. ``d(Rh) = dan @ W_hn[:, slice]``; ``dar = d(Rh) h R(1-R)``; store it; ``dh = g(1-Z) + d(Rh) R``; barrier;
  2. ``dh += [dar, daz] @ [W_hr; W_hz][:, slice]``.
The stored gate gradients are the exchange between programs; every step has its own rows, so nothing is
overwritten while another program may still read it. Every value is written by exactly one program: no
atomics on data, bitwise reproducible.

Launch modes as in :mod:`tritongru.kernels.forward`: the whole sequence with ``GRID_SYNC`` (or one slice), or
one launch per step and phase (``FIRST_PHASE == LAST_PHASE``), ``carry`` holding ``dh`` between launches (and,
between a classic step's phases 1 and 2, the partial sum).

Layouts (contiguous): ``grad_out`` ``[T, B, H]``; ``carry`` ``[B, H]`` compute dtype (``dL/dh_{T-1}`` from
``h_n``'s gradient on the first entry; ``dL/dh0`` after step 0); ``hs`` ``[T+1, B, H]`` and ``gates``
``[T, B, NG*H]`` as the forward stored them; ``dgates_x`` ``[T, B, 3H]`` and ``dgates_hn`` ``[T, B, H]``
(cudnn only) in the storage dtype.
"""

import triton
import triton.language as tl
from tritongru.kernels.grid_sync import after_previous_launch, step_barrier
from tritongru.kernels.gru_math import GATE_N, GATE_R, GATE_Z, gate_weights, products, program_tile


@triton.jit
def _step_inputs(
    grad_out_ptr, hs_ptr, gates_ptr, t, t_lo, B, H, o_b, o_j, m, p_own, NG: tl.constexpr, ACC_DTYPE: tl.constexpr
):
    """This tile's inputs of step ``t``: ``dL/d output_t``, ``h_{t-1}`` and the saved gates ``(r, z, n, hn)``
    (``hn = W_hn h + b_hn``, cudnn only). A prefetch past the end (``t < t_lo``) reads step ``t_lo`` again, which
    is never used."""
    t = tl.maximum(t, t_lo)
    grad_out = tl.load(grad_out_ptr + t * B * H + p_own, mask=m, other=0.0).to(ACC_DTYPE)
    h_prev = tl.load(hs_ptr + t * B * H + p_own, mask=m, other=0.0).to(ACC_DTYPE)
    p_gates = gates_ptr + (t * B + o_b)[:, None] * (NG * H) + o_j[None, :]
    r = tl.load(p_gates + GATE_R * H, mask=m, other=0.0).to(ACC_DTYPE)
    z = tl.load(p_gates + GATE_Z * H, mask=m, other=0.0).to(ACC_DTYPE)
    n = tl.load(p_gates + GATE_N * H, mask=m, other=0.0).to(ACC_DTYPE)
    if NG == 4:
        hn = tl.load(p_gates + 3 * H, mask=m, other=0.0).to(ACC_DTYPE)
    else:
        hn = tl.zeros_like(n)
    return grad_out, h_prev, r, z, n, hn


@triton.jit
def _reduce(
    acc,
    p_a,
    stride_a,
    w,
    tile,
    H,
    RESIDENT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    """``acc + a @ W_g[:, slice]``: ``a`` one gate's gradients ``[B, H]`` at ``p_a`` (row stride ``stride_a``), read
    over the whole width; ``w`` that gate's weights (:func:`gate_weights`); ``tile`` ``(o_b, m_b, o_j, m_j)``."""
    o_b, m_b, o_j, m_j = tile
    (acc,) = products(
        (acc,), p_a, stride_a, o_b, m_b, H, (w,), H, 1, o_j, m_j, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS
    )
    return acc


@triton.heuristics(
    {
        "HAS_LENGTHS": lambda args: args["lengths_ptr"] is not None,
        "K_CHUNKS": lambda args: triton.cdiv(args["H"], args["BLOCK_K"]),
    }
)
@triton.jit(do_not_specialize=["t_lo", "t_hi", "spin_limit"])
def gru_backward_kernel(
    grad_out_ptr,
    carry_ptr,
    hs_ptr,
    gates_ptr,
    w_hh_ptr,
    dgates_x_ptr,
    dgates_hn_ptr,
    lengths_ptr,
    sync_ptr,
    t_lo,
    t_hi,
    B,
    H,
    spin_limit,
    CLASSIC: tl.constexpr,
    FIRST_PHASE: tl.constexpr,
    LAST_PHASE: tl.constexpr,
    GRID_SYNC: tl.constexpr,
    RESIDENT: tl.constexpr,
    USE_PDL: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    """Steps ``t_hi - 1`` down to ``t_lo``, phases ``FIRST_PHASE .. LAST_PHASE`` of each; see the module docstring."""
    NG: tl.constexpr = 3 if CLASSIC else 4
    BARRIERS_PER_STEP: tl.constexpr = 2 if CLASSIC else 1
    n_slices = tl.num_programs(0)
    o_b, m_b, o_j, m_j, m, p_own = program_tile(B, H, BLOCK_B, BLOCK_H)
    after_previous_launch(USE_PDL)

    # The columns W_hg[:, slice] of every gate, held for the whole launch when it runs many steps.
    w_r = gate_weights(w_hh_ptr + GATE_R * H * H, H, 1, o_j, m_j, H, RESIDENT, K_CHUNKS, BLOCK_K)
    w_z = gate_weights(w_hh_ptr + GATE_Z * H * H, H, 1, o_j, m_j, H, RESIDENT, K_CHUNKS, BLOCK_K)
    w_n = gate_weights(w_hh_ptr + GATE_N * H * H, H, 1, o_j, m_j, H, RESIDENT, K_CHUNKS, BLOCK_K)
    tile = (o_b, m_b, o_j, m_j)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + o_b, mask=m_b, other=0).to(tl.int32)
    inputs = _step_inputs(grad_out_ptr, hs_ptr, gates_ptr, t_hi - 1, t_lo, B, H, o_b, o_j, m, p_own, NG, ACC_DTYPE)
    dh = tl.load(carry_ptr + p_own, mask=m, other=0.0)

    for i in tl.range(0, t_hi - t_lo, num_stages=1):
        t = t_hi - 1 - i
        grad_out, h_prev, r, z, n, hn = inputs
        # the previous step's own inputs do not depend on any barrier: load them before waiting
        inputs = _step_inputs(grad_out_ptr, hs_ptr, gates_ptr, t - 1, t_lo, B, H, o_b, o_j, m, p_own, NG, ACC_DTYPE)
        if HAS_LENGTHS:
            active = (t < length)[:, None]
        else:
            active = m_b[:, None]
        g = dh + tl.where(active, grad_out, 0.0)
        g_active = tl.where(active, g, 0.0)
        barrier = i * BARRIERS_PER_STEP
        p_step = dgates_x_ptr + t * B * (3 * H)
        p_dgates = p_step + o_b[:, None] * (3 * H) + o_j[None, :]
        acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
        if CLASSIC:
            if FIRST_PHASE <= 0:
                dan = g_active * z * (1.0 - n * n)
                daz = g_active * (n - h_prev) * z * (1.0 - z)
                tl.store(p_dgates + GATE_Z * H, daz, mask=m)
                tl.store(p_dgates + GATE_N * H, dan, mask=m)
                step_barrier(sync_ptr, tl.program_id(1), n_slices * (barrier + 1), spin_limit, GRID_SYNC)
            if FIRST_PHASE <= 1 and LAST_PHASE >= 1:
                d_rh = _reduce(
                    acc, p_step + GATE_N * H, 3 * H, w_n, tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS
                )
                tl.store(p_dgates + GATE_R * H, d_rh * h_prev * r * (1.0 - r), mask=m)
                # the partial sum; [dar, daz] @ [W_hr; W_hz] is added once dar is complete (phase 2)
                dh = tl.where(active, g * (1.0 - z) + d_rh * r, g)
                step_barrier(sync_ptr, tl.program_id(1), n_slices * (barrier + 2), spin_limit, GRID_SYNC)
            if LAST_PHASE >= 2:
                acc = _reduce(acc, p_step + GATE_R * H, 3 * H, w_r, tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS)
                acc = _reduce(acc, p_step + GATE_Z * H, 3 * H, w_z, tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS)
                dh += acc
        else:
            if FIRST_PHASE <= 0:
                dan = g_active * (1.0 - z) * (1.0 - n * n)
                tl.store(p_dgates + GATE_R * H, dan * hn * r * (1.0 - r), mask=m)
                tl.store(p_dgates + GATE_Z * H, g_active * (h_prev - n) * z * (1.0 - z), mask=m)
                tl.store(p_dgates + GATE_N * H, dan, mask=m)
                tl.store(dgates_hn_ptr + t * B * H + p_own, dan * r, mask=m)
                step_barrier(sync_ptr, tl.program_id(1), n_slices * (barrier + 1), spin_limit, GRID_SYNC)
            if LAST_PHASE >= 1:
                acc = _reduce(acc, p_step + GATE_R * H, 3 * H, w_r, tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS)
                acc = _reduce(acc, p_step + GATE_Z * H, 3 * H, w_z, tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS)
                acc = _reduce(
                    acc, dgates_hn_ptr + t * B * H, H, w_n, tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS
                )
                dh = tl.where(active, g * z, g) + acc
    tl.store(carry_ptr + p_own, dh, mask=m)
