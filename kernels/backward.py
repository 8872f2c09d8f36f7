"""Backward kernel (BPTT) of both GRU formulations: the sequential ``dh`` recurrence.

Only ``dh`` is sequential; weight, bias and input gradients are large products over all steps done by the
host afterwards. Step ``t`` (from ``T-1`` down to 0) takes the total gradient ``g = dL/dh_t`` (the output's
gradient ``grad_hs[t+1]`` plus the carry from step ``t+1``), forms the gate gradients from the gates saved in
the forward pass, stores them (``dgates_x``, and ``dgates_hn`` for cudnn), and writes ``dL/dh_{t-1}`` to the
other slot of a two-slot carry buffer.

cudnn form (one phase): ``dL/dh_{t-1} = g * z + dgates_h @ W_hh`` with ``dgates_h = [dar, daz, dhn]``.
A program's hidden tile needs ``dgates_h`` over the whole hidden width, so each tile recomputes those
elementwise gate gradients chunk by chunk inside its reduction loop instead of waiting for other tiles:
the elementwise work is repeated once per tile, the barrier it saves is not.

classic form (two phases): the candidate's product ran on ``R * h``, so ``d(R h) = dan @ W_hn`` (a full
reduction) comes first; phase 1 forms it (``dan`` recomputed chunk by chunk as above), then ``dR``,
``dar``, ``daz``, the gate gradients and the partial ``g * (1 - Z) + d(R h) * R``; phase 2 (after a barrier,
or in the next launch) adds ``[dar, daz] @ [W_hr; W_hz]``, which needs ``dar`` over the whole width.

Launch modes and layouts as in ``tritongru.kernels.forward``; ``carry`` is ``[2, B, H]``: step ``t`` reads slot
``t % 2`` and writes slot ``(t + 1) % 2``. Rows past a sequence's length pass ``g`` through unchanged with zero
gate gradients. Every gradient is written by exactly one program: no atomics, bitwise reproducible.
"""

import triton
import triton.language as tl
from tritongru.kernels.gru_math import dot, hidden_tile


@triton.jit
def _load_step(
    rows, o_b, m_b, active, cols, m_c, t, B, H, grad_hs_ptr, carry_in_ptr, hs_ptr, gates_ptr, NG: tl.constexpr
):
    """Load, for batch rows ``rows`` (of step ``t``) and hidden columns ``cols``: the total gradient ``g``
    (zero on inactive rows), ``h_{t-1}``, and the saved gates ``(r, z, n)``; ``p_gates`` points at ``r``."""
    m = m_b[:, None] & m_c[None, :]
    g = tl.load(grad_hs_ptr + (rows + B)[:, None] * H + cols[None, :], mask=m, other=0.0)
    g += tl.load(carry_in_ptr + o_b[:, None] * H + cols[None, :], mask=m, other=0.0)
    h_prev = tl.load(hs_ptr + rows[:, None] * H + cols[None, :], mask=m, other=0.0)
    p_gates = gates_ptr + rows[:, None] * (NG * H) + cols[None, :]
    r = tl.load(p_gates, mask=m, other=0.0)
    z = tl.load(p_gates + H, mask=m, other=0.0)
    n = tl.load(p_gates + 2 * H, mask=m, other=0.0)
    return g, tl.where(active[:, None], g, 0.0), h_prev, r, z, n, p_gates


@triton.jit
def _cudnn_gate_grads(g, h_prev, r, z, n, hn):
    """Gate gradients of ``h' = (1 - z) n + z h``, ``n = tanh(xn + r hn)``: (dar, daz, dan, dhn)."""
    dn = g * (1.0 - z)
    dan = dn * (1.0 - n * n)
    dar = dan * hn * r * (1.0 - r)
    daz = g * (h_prev - n) * z * (1.0 - z)
    return dar, daz, dan, dan * r


@triton.jit
def gru_backward_kernel(
    grad_hs_ptr,
    carry_ptr,
    hs_ptr,
    gates_ptr,
    w_hh_ptr,
    dgates_x_ptr,
    dgates_hn_ptr,
    lengths_ptr,
    t_hi,
    t_lo,
    B,
    H,
    CLASSIC: tl.constexpr,
    RUN_PHASE_1: tl.constexpr,
    RUN_PHASE_2: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Runs steps ``t_hi - 1`` down to ``t_lo``."""
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    n_h_programs = tl.num_programs(1)
    n_tiles = tl.cdiv(H, BLOCK_H)
    NG: tl.constexpr = 3 if CLASSIC else 4

    o_b = (i_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    m_b = o_b < B
    if HAS_LENGTHS:
        lengths = tl.load(lengths_ptr + o_b, mask=m_b, other=0)
    o_k = tl.arange(0, BLOCK_K)

    for i_step in range(t_lo, t_hi):
        t = t_hi - 1 - (i_step - t_lo)
        rows = t * B + o_b
        carry_in_ptr = carry_ptr + (t % 2) * B * H
        carry_out_ptr = carry_ptr + ((t + 1) % 2) * B * H
        if HAS_LENGTHS:
            active = m_b & (t < lengths)
        else:
            active = m_b
        if CLASSIC:
            if RUN_PHASE_1:
                for i_tile in range(i_h, n_tiles, n_h_programs):
                    o_j, m_j, m = hidden_tile(i_tile, H, m_b, BLOCK_H)
                    # d(R h)[:, j] = sum_k dan[:, k] W_hn[k, j], dan = g Z (1 - H~^2) recomputed per chunk
                    d_rh = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
                    for k0 in range(0, H, BLOCK_K):
                        k = k0 + o_k
                        m_k = k < H
                        _, g_k, _, _, z_k, n_k, _ = _load_step(
                            rows,
                            o_b,
                            m_b,
                            active,
                            k,
                            m_k,
                            t,
                            B,
                            H,
                            grad_hs_ptr,
                            carry_in_ptr,
                            hs_ptr,
                            gates_ptr,
                            NG,
                        )
                        dan_k = g_k * z_k * (1.0 - n_k * n_k)
                        w = tl.load(
                            w_hh_ptr + (2 * H + k[:, None]) * H + o_j[None, :],
                            mask=m_k[:, None] & m_j[None, :],
                            other=0.0,
                        )
                        d_rh = dot(dan_k, w, d_rh, DOT_PRECISION)
                    g_raw, g, h_prev, r, z, n, _ = _load_step(
                        rows,
                        o_b,
                        m_b,
                        active,
                        o_j,
                        m_j,
                        t,
                        B,
                        H,
                        grad_hs_ptr,
                        carry_in_ptr,
                        hs_ptr,
                        gates_ptr,
                        NG,
                    )
                    dar = d_rh * h_prev * r * (1.0 - r)
                    daz = g * (n - h_prev) * z * (1.0 - z)
                    dan = g * z * (1.0 - n * n)
                    p_dgates = dgates_x_ptr + rows[:, None] * (3 * H) + o_j[None, :]
                    tl.store(p_dgates, dar, mask=m)
                    tl.store(p_dgates + H, daz, mask=m)
                    tl.store(p_dgates + 2 * H, dan, mask=m)
                    dh_prev = tl.where(active[:, None], g * (1.0 - z) + d_rh * r, g_raw)
                    tl.store(carry_out_ptr + o_b[:, None] * H + o_j[None, :], dh_prev, mask=m)
                # dar, daz must be complete over the whole hidden width before phase 2 reduces over them
                tl.debug_barrier()
            if RUN_PHASE_2:
                for i_tile in range(i_h, n_tiles, n_h_programs):
                    o_j, m_j, m = hidden_tile(i_tile, H, m_b, BLOCK_H)
                    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
                    for k0 in range(0, 2 * H, BLOCK_K):
                        # [dar, daz] @ [W_hr; W_hz]: k runs over the first 2H gate columns
                        k = k0 + o_k
                        m_k = k < 2 * H
                        d = tl.load(
                            dgates_x_ptr + rows[:, None] * (3 * H) + k[None, :],
                            mask=m_b[:, None] & m_k[None, :],
                            other=0.0,
                        )
                        w = tl.load(
                            w_hh_ptr + k[:, None] * H + o_j[None, :],
                            mask=m_k[:, None] & m_j[None, :],
                            other=0.0,
                        )
                        acc = dot(d, w, acc, DOT_PRECISION)
                    p_carry = carry_out_ptr + o_b[:, None] * H + o_j[None, :]
                    tl.store(p_carry, tl.load(p_carry, mask=m, other=0.0) + acc, mask=m)
        else:
            for i_tile in range(i_h, n_tiles, n_h_programs):
                o_j, m_j, m = hidden_tile(i_tile, H, m_b, BLOCK_H)
                # sum_k dgates_h[:, k] W_hh[k, j] over the three gates, dgates_h recomputed per chunk
                acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
                for k0 in range(0, H, BLOCK_K):
                    k = k0 + o_k
                    m_k = k < H
                    _, g_k, h_k, r_k, z_k, n_k, p_gates_k = _load_step(
                        rows,
                        o_b,
                        m_b,
                        active,
                        k,
                        m_k,
                        t,
                        B,
                        H,
                        grad_hs_ptr,
                        carry_in_ptr,
                        hs_ptr,
                        gates_ptr,
                        NG,
                    )
                    hn_k = tl.load(p_gates_k + 3 * H, mask=m_b[:, None] & m_k[None, :], other=0.0)
                    dar_k, daz_k, _, dhn_k = _cudnn_gate_grads(g_k, h_k, r_k, z_k, n_k, hn_k)
                    p_w = w_hh_ptr + k[:, None] * H + o_j[None, :]
                    m_w = m_k[:, None] & m_j[None, :]
                    w = tl.load(p_w, mask=m_w, other=0.0)
                    acc = dot(dar_k, w, acc, DOT_PRECISION)
                    w = tl.load(p_w + H * H, mask=m_w, other=0.0)
                    acc = dot(daz_k, w, acc, DOT_PRECISION)
                    w = tl.load(p_w + 2 * H * H, mask=m_w, other=0.0)
                    acc = dot(dhn_k, w, acc, DOT_PRECISION)
                g_raw, g, h_prev, r, z, n, p_gates = _load_step(
                    rows,
                    o_b,
                    m_b,
                    active,
                    o_j,
                    m_j,
                    t,
                    B,
                    H,
                    grad_hs_ptr,
                    carry_in_ptr,
                    hs_ptr,
                    gates_ptr,
                    NG,
                )
                hn = tl.load(p_gates + 3 * H, mask=m, other=0.0)
                dar, daz, dan, dhn = _cudnn_gate_grads(g, h_prev, r, z, n, hn)
                p_dgates = dgates_x_ptr + rows[:, None] * (3 * H) + o_j[None, :]
                tl.store(p_dgates, dar, mask=m)
                tl.store(p_dgates + H, daz, mask=m)
                tl.store(p_dgates + 2 * H, dan, mask=m)
                tl.store(dgates_hn_ptr + rows[:, None] * H + o_j[None, :], dhn, mask=m)
                dh_prev = tl.where(active[:, None], g * z + acc, g_raw)
                tl.store(carry_out_ptr + o_b[:, None] * H + o_j[None, :], dh_prev, mask=m)
        # dL/dh_{t-1} must be complete before step t - 1 reads it
        tl.debug_barrier()
