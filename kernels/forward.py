"""Forward kernel of both GRU formulations: the fused recurrent step, run as a sequence or as a cell.

One program owns ``BLOCK_B`` batch rows. For each time step it loops over the hidden tiles given to it
(``range(i_h, n_tiles, n_h_programs)``) and, per tile, forms the hidden product ``h @ W_hh^T`` of the gates it
needs, adds the input side and the biases, applies sigmoid/tanh and the Z interpolation, and stores ``h_t``.
Gates never round-trip through memory unless ``STORE_GATES`` (training) saves them for backward.

Two launch modes share this code (the host picks one, see ``tritongru.launchers``):
- persistent: grid ``(batch blocks, 1)``, ``t`` over the whole sequence in one launch. The program owns every
  hidden tile of its rows, so a CTA barrier between steps (and between the classic form's phases) is all the
  synchronisation needed; programs never read what another program writes.
- per step: grid ``(batch blocks, hidden tiles)``, one step and one phase per launch; kernel boundaries order
  the steps.

The cudnn form needs one phase per step: ``r * (W_hn h + b_hn)`` only needs the tile's own ``r``. The classic
form needs ``R * h`` over the *whole* hidden width before the candidate's product ``W_hn (R * h)`` can start,
so its step has two phases: phase 1 computes ``R`` and writes ``R * h`` to a ``[B, H]`` scratch buffer;
phase 2 (after a barrier, or in the next launch) computes ``Z`` and the candidate from it.

The cell (``FUSE_INPUT``) is the notes' literal concat-matmul: each gate's tile accumulates ``h @ W_h^T`` and
``x @ W_i^T`` in the kernel instead of reading a precomputed input projection ``gi``.

Layouts (all contiguous): ``gi`` ``[T, B, 3H]``; ``x`` ``[B, I]`` (cell); ``hs`` ``[T+1, B, H]`` with
``hs[0] = h0``; ``W_ih`` ``[3H, I]``; ``W_hh`` ``[3H, H]``; biases ``[3H]``; ``gates`` ``[T, B, NG*H]`` with
``NG = 4`` (cudnn: r, z, n, W_hn h + b_hn) or ``3`` (classic: R, Z, H~); ``rh`` ``[B, H]``. Gate order r, z, n.
Rows of ``[T, B, *]`` tensors at step ``t`` are ``t * B + b``; ``h_{t-1}`` is row ``t * B + b`` of ``hs``.
"""

import triton
import triton.language as tl
from tritongru.kernels.gru_math import accumulate_product, hidden_tile, sigmoid, tanh


@triton.jit
def _hidden_product(
    a_ptr,
    rows,
    m_b,
    w_hh_ptr,
    gate,
    o_j,
    m_j,
    H,
    ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Tile of ``a @ W_h{gate}^T``; ``a`` is ``[*, H]``: ``h_{t-1}``, or ``R * h`` for the classic candidate."""
    acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
    return accumulate_product(
        acc, a_ptr, H, rows, m_b, w_hh_ptr + gate * H * H, 1, H, o_j, m_j, H, BLOCK_K, DOT_PRECISION
    )


@triton.jit
def _input_side(
    gate,
    o_b,
    step_rows,
    m_b,
    o_j,
    m_j,
    gi_ptr,
    x_ptr,
    w_ih_ptr,
    b_ih_ptr,
    H,
    I,
    FUSE_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Tile of ``x @ W_i{gate}^T + b_i{gate}``: computed here for the cell, read from ``gi`` for a sequence."""
    if FUSE_INPUT:
        acc = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
        acc = accumulate_product(
            acc, x_ptr, I, o_b, m_b, w_ih_ptr + gate * H * I, 1, I, o_j, m_j, I, BLOCK_K, DOT_PRECISION
        )
        if HAS_BIAS:
            acc += tl.load(b_ih_ptr + gate * H + o_j, mask=m_j, other=0.0).to(ACC_DTYPE)[None, :]
    else:
        m = m_b[:, None] & m_j[None, :]
        acc = tl.load(gi_ptr + step_rows[:, None] * (3 * H) + gate * H + o_j[None, :], mask=m, other=0.0)
        acc = acc.to(ACC_DTYPE)
    return acc


@triton.jit
def _hidden_bias(b_hh_ptr, gate, o_j, m_j, H, HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_H: tl.constexpr):
    """``b_h{gate}`` as a ``[1, BLOCK_H]`` row (zeros without bias)."""
    if HAS_BIAS:
        return tl.load(b_hh_ptr + gate * H + o_j, mask=m_j, other=0.0).to(ACC_DTYPE)[None, :]
    return tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)


@triton.jit
def _gate_preactivation(
    gate,
    a_ptr,
    a_rows,
    o_b,
    step_rows,
    m_b,
    o_j,
    m_j,
    gi_ptr,
    x_ptr,
    w_ih_ptr,
    b_ih_ptr,
    w_hh_ptr,
    b_hh_ptr,
    H,
    I,
    FUSE_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """Tile of ``W_i{gate} x + b_i{gate} + W_h{gate} a + b_h{gate}``, the argument of a gate's activation."""
    return (
        _input_side(
            gate,
            o_b,
            step_rows,
            m_b,
            o_j,
            m_j,
            gi_ptr,
            x_ptr,
            w_ih_ptr,
            b_ih_ptr,
            H,
            I,
            FUSE_INPUT,
            HAS_BIAS,
            ACC_DTYPE,
            BLOCK_B,
            BLOCK_H,
            BLOCK_K,
            DOT_PRECISION,
        )
        + _hidden_product(
            a_ptr,
            a_rows,
            m_b,
            w_hh_ptr,
            gate,
            o_j,
            m_j,
            H,
            ACC_DTYPE,
            BLOCK_B,
            BLOCK_H,
            BLOCK_K,
            DOT_PRECISION,
        )
        + _hidden_bias(b_hh_ptr, gate, o_j, m_j, H, HAS_BIAS, ACC_DTYPE, BLOCK_H)
    )


@triton.jit
def gru_forward_kernel(
    gi_ptr,
    x_ptr,
    w_ih_ptr,
    b_ih_ptr,
    hs_ptr,
    w_hh_ptr,
    b_hh_ptr,
    gates_ptr,
    rh_ptr,
    lengths_ptr,
    t_begin,
    t_end,
    B,
    H,
    I,
    CLASSIC: tl.constexpr,
    RUN_PHASE_1: tl.constexpr,
    RUN_PHASE_2: tl.constexpr,
    FUSE_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    STORE_GATES: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    n_h_programs = tl.num_programs(1)
    n_tiles = tl.cdiv(H, BLOCK_H)
    NG: tl.constexpr = 3 if CLASSIC else 4

    o_b = (i_b * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    m_b = o_b < B
    if HAS_LENGTHS:
        lengths = tl.load(lengths_ptr + o_b, mask=m_b, other=0)

    for t in range(t_begin, t_end):
        step_rows = t * B + o_b
        if HAS_LENGTHS:
            active = m_b & (t < lengths)
        else:
            active = m_b
        if CLASSIC:
            if RUN_PHASE_1:
                for i_tile in range(i_h, n_tiles, n_h_programs):
                    o_j, m_j, m = hidden_tile(i_tile, H, m_b, BLOCK_H)
                    r = sigmoid(
                        _gate_preactivation(
                            0,
                            hs_ptr,
                            step_rows,
                            o_b,
                            step_rows,
                            m_b,
                            o_j,
                            m_j,
                            gi_ptr,
                            x_ptr,
                            w_ih_ptr,
                            b_ih_ptr,
                            w_hh_ptr,
                            b_hh_ptr,
                            H,
                            I,
                            FUSE_INPUT,
                            HAS_BIAS,
                            ACC_DTYPE,
                            BLOCK_B,
                            BLOCK_H,
                            BLOCK_K,
                            DOT_PRECISION,
                        )
                    )
                    h_prev = tl.load(hs_ptr + step_rows[:, None] * H + o_j[None, :], mask=m, other=0.0)
                    tl.store(rh_ptr + o_b[:, None] * H + o_j[None, :], r * h_prev, mask=m)
                    if STORE_GATES:
                        tl.store(gates_ptr + step_rows[:, None] * (NG * H) + o_j[None, :], r, mask=m)
                # R * h must be complete over the whole hidden width before phase 2 reads it
                tl.debug_barrier()
            if RUN_PHASE_2:
                for i_tile in range(i_h, n_tiles, n_h_programs):
                    o_j, m_j, m = hidden_tile(i_tile, H, m_b, BLOCK_H)
                    z = sigmoid(
                        _gate_preactivation(
                            1,
                            hs_ptr,
                            step_rows,
                            o_b,
                            step_rows,
                            m_b,
                            o_j,
                            m_j,
                            gi_ptr,
                            x_ptr,
                            w_ih_ptr,
                            b_ih_ptr,
                            w_hh_ptr,
                            b_hh_ptr,
                            H,
                            I,
                            FUSE_INPUT,
                            HAS_BIAS,
                            ACC_DTYPE,
                            BLOCK_B,
                            BLOCK_H,
                            BLOCK_K,
                            DOT_PRECISION,
                        )
                    )
                    n = tanh(
                        _gate_preactivation(
                            2,
                            rh_ptr,
                            o_b,
                            o_b,
                            step_rows,
                            m_b,
                            o_j,
                            m_j,
                            gi_ptr,
                            x_ptr,
                            w_ih_ptr,
                            b_ih_ptr,
                            w_hh_ptr,
                            b_hh_ptr,
                            H,
                            I,
                            FUSE_INPUT,
                            HAS_BIAS,
                            ACC_DTYPE,
                            BLOCK_B,
                            BLOCK_H,
                            BLOCK_K,
                            DOT_PRECISION,
                        )
                    )
                    h_prev = tl.load(hs_ptr + step_rows[:, None] * H + o_j[None, :], mask=m, other=0.0)
                    h_new = tl.where(active[:, None], z * n + (1.0 - z) * h_prev, h_prev)
                    tl.store(hs_ptr + (step_rows + B)[:, None] * H + o_j[None, :], h_new, mask=m)
                    if STORE_GATES:
                        p_gates = gates_ptr + step_rows[:, None] * (NG * H) + o_j[None, :]
                        tl.store(p_gates + H, z, mask=m)
                        tl.store(p_gates + 2 * H, n, mask=m)
        else:
            for i_tile in range(i_h, n_tiles, n_h_programs):
                o_j, m_j, m = hidden_tile(i_tile, H, m_b, BLOCK_H)
                r = sigmoid(
                    _gate_preactivation(
                        0,
                        hs_ptr,
                        step_rows,
                        o_b,
                        step_rows,
                        m_b,
                        o_j,
                        m_j,
                        gi_ptr,
                        x_ptr,
                        w_ih_ptr,
                        b_ih_ptr,
                        w_hh_ptr,
                        b_hh_ptr,
                        H,
                        I,
                        FUSE_INPUT,
                        HAS_BIAS,
                        ACC_DTYPE,
                        BLOCK_B,
                        BLOCK_H,
                        BLOCK_K,
                        DOT_PRECISION,
                    )
                )
                z = sigmoid(
                    _gate_preactivation(
                        1,
                        hs_ptr,
                        step_rows,
                        o_b,
                        step_rows,
                        m_b,
                        o_j,
                        m_j,
                        gi_ptr,
                        x_ptr,
                        w_ih_ptr,
                        b_ih_ptr,
                        w_hh_ptr,
                        b_hh_ptr,
                        H,
                        I,
                        FUSE_INPUT,
                        HAS_BIAS,
                        ACC_DTYPE,
                        BLOCK_B,
                        BLOCK_H,
                        BLOCK_K,
                        DOT_PRECISION,
                    )
                )
                # r scales only the hidden half of the candidate: that is what makes this one phase
                hn = _hidden_product(
                    hs_ptr,
                    step_rows,
                    m_b,
                    w_hh_ptr,
                    2,
                    o_j,
                    m_j,
                    H,
                    ACC_DTYPE,
                    BLOCK_B,
                    BLOCK_H,
                    BLOCK_K,
                    DOT_PRECISION,
                ) + _hidden_bias(b_hh_ptr, 2, o_j, m_j, H, HAS_BIAS, ACC_DTYPE, BLOCK_H)
                n = tanh(
                    _input_side(
                        2,
                        o_b,
                        step_rows,
                        m_b,
                        o_j,
                        m_j,
                        gi_ptr,
                        x_ptr,
                        w_ih_ptr,
                        b_ih_ptr,
                        H,
                        I,
                        FUSE_INPUT,
                        HAS_BIAS,
                        ACC_DTYPE,
                        BLOCK_B,
                        BLOCK_H,
                        BLOCK_K,
                        DOT_PRECISION,
                    )
                    + r * hn
                )
                h_prev = tl.load(hs_ptr + step_rows[:, None] * H + o_j[None, :], mask=m, other=0.0)
                h_new = tl.where(active[:, None], (1.0 - z) * n + z * h_prev, h_prev)
                tl.store(hs_ptr + (step_rows + B)[:, None] * H + o_j[None, :], h_new, mask=m)
                if STORE_GATES:
                    p_gates = gates_ptr + step_rows[:, None] * (NG * H) + o_j[None, :]
                    tl.store(p_gates, r, mask=m)
                    tl.store(p_gates + H, z, mask=m)
                    tl.store(p_gates + 2 * H, n, mask=m)
                    tl.store(p_gates + 3 * H, hn, mask=m)
        # h_t must be complete, across every thread of the program, before step t + 1 reads it
        tl.debug_barrier()
