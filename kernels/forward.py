"""Forward kernel of both GRU formulations: the weight-stationary recurrent step, as a sequence or a cell.

Program ``(i_slice, i_batch)`` owns hidden units ``[i_slice*BLOCK_H, +BLOCK_H)`` of batch rows
``[i_batch*BLOCK_B, +BLOCK_B)``. In a launch of many steps (``RESIDENT``) it loads the three gate rows of
``W_hh`` for its units once and holds them on chip for the whole launch; it keeps its float32 slice of ``h``
in registers across steps, and reads the full ``h_{t-1}`` (written by every program of its batch block) from
``hs``, which is both the output and the exchange buffer: step ``t`` reads ``hs[t]`` and writes its slice of
``hs[t+1]``, so no slot is ever reused.

cudnn form, one phase per step: one K loop over ``h_{t-1}`` feeds the three products (r, z, n), then
``r = σ(gi_r + W_hr h + b_hr)``, ``z = σ(...)``, ``n = tanh(gi_n + r (W_hn h + b_hn))``,
``h_t = (1 - z) n + z h``; store ``hs[t+1]``; barrier.
classic form, two phases per step: phase 1 forms R and Z (one K loop, two products) and publishes ``R * h``
to ``rh``; barrier; phase 2 forms ``H~ = tanh(gi_n + W_hn (R h) + b_hn)`` from the whole ``rh`` and
``h_t = Z H~ + (1 - Z) h``; store ``hs[t+1]``; barrier.

Launch modes (chosen by ``tritongru.launchers``):
- ``GRID_SYNC``: the whole sequence in one cooperative launch, the programs of a batch block meeting at
  :func:`~tritongru.kernels.grid_sync.step_barrier` after every phase;
- one slice (``BLOCK_H >= H``): the whole sequence in one launch, CTA barriers only;
- per step: ``t_hi = t_lo + 1`` and one launch per phase (``FIRST_PHASE == LAST_PHASE``; classic has two);
  the exact state travels through ``state`` and, between the two phases, ``Z`` through ``z_scratch``. With
  ``USE_PDL`` a launch is dispatched while the previous one finishes (programmatic dependent launch).

The cell (``x_ptr`` given) is the notes' literal concat-matmul: the input side ``x @ W_ih^T + b_ih`` is a
second set of products in the same kernel instead of a row of a precomputed ``gi``.

Layouts (contiguous): ``gi`` ``[T, B, 3H]``; ``x`` ``[B, I]``; ``W_ih`` ``[3H, I]``; ``W_hh`` ``[3H, H]``;
biases ``[3H]``; ``hs`` ``[T+1, B, H]`` storage dtype, ``hs[0] = h0``; ``state`` ``[B, H]`` compute dtype, the
exact ``h`` at ``t_lo`` on entry and at ``t_hi`` on exit; ``gates`` ``[T, B, NG*H]`` storage dtype with
``NG = 4`` (cudnn: r, z, n, W_hn h + b_hn) or ``3`` (classic: R, Z, H~); ``rh`` ``[B, H]`` storage dtype.
"""

import triton
import triton.language as tl
from tritongru.kernels.grid_sync import after_previous_launch, step_barrier
from tritongru.kernels.gru_math import (
    GATE_N,
    GATE_R,
    GATE_Z,
    gate_row,
    gate_weights,
    products,
    program_tile,
    sigmoid,
    tanh,
)


@triton.jit
def _input_side(gi_ptr, t, t_hi, B, H, o_b, o_j, m, ACC_DTYPE: tl.constexpr):
    """``(gi_r, gi_z, gi_n)`` of step ``t`` for this tile; a prefetch past the end (``t >= t_hi``) reads the last
    step again, which is never used."""
    p = gi_ptr + (tl.minimum(t, t_hi - 1) * B + o_b)[:, None] * (3 * H) + o_j[None, :]
    gi_r = tl.load(p + GATE_R * H, mask=m, other=0.0).to(ACC_DTYPE)
    gi_z = tl.load(p + GATE_Z * H, mask=m, other=0.0).to(ACC_DTYPE)
    gi_n = tl.load(p + GATE_N * H, mask=m, other=0.0).to(ACC_DTYPE)
    return gi_r, gi_z, gi_n


@triton.jit
def _hidden_products(
    accs,
    p_a,
    weights,
    tile,
    H,
    RESIDENT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    """``acc + a @ W_g^T[:, slice]`` for each gate's ``weights`` (:func:`gate_weights` of ``W_g^T``): ``a`` is
    ``[B, H]`` at ``p_a`` (``h_{t-1}`` in ``hs``, or ``R * h``), read over the whole width; ``tile`` is
    ``(o_b, m_b, o_j, m_j)``."""
    o_b, m_b, o_j, m_j = tile
    return products(accs, p_a, H, o_b, m_b, H, weights, 1, H, o_j, m_j, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS)


@triton.heuristics(
    {
        "FUSE_INPUT": lambda args: args["x_ptr"] is not None,
        "HAS_BIAS": lambda args: args["b_hh_ptr"] is not None,
        "HAS_LENGTHS": lambda args: args["lengths_ptr"] is not None,
        "STORE_GATES": lambda args: args["gates_ptr"] is not None,
        "K_CHUNKS": lambda args: triton.cdiv(args["H"], args["BLOCK_K"]),
    }
)
@triton.jit(do_not_specialize=["t_lo", "t_hi", "spin_limit"])
def gru_forward_kernel(
    gi_ptr,
    x_ptr,
    w_ih_ptr,
    b_ih_ptr,
    w_hh_ptr,
    b_hh_ptr,
    hs_ptr,
    state_ptr,
    gates_ptr,
    rh_ptr,
    z_scratch_ptr,
    lengths_ptr,
    sync_ptr,
    t_lo,
    t_hi,
    B,
    H,
    I,
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
    FUSE_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    STORE_GATES: tl.constexpr,
    K_CHUNKS: tl.constexpr,
):
    """Steps ``t_lo .. t_hi-1``, phases ``FIRST_PHASE .. LAST_PHASE`` of each; see the module docstring."""
    NG: tl.constexpr = 3 if CLASSIC else 4
    BARRIERS_PER_STEP: tl.constexpr = 2 if CLASSIC else 1
    RUN_PHASE_1: tl.constexpr = FIRST_PHASE == 0
    RUN_PHASE_2: tl.constexpr = LAST_PHASE == BARRIERS_PER_STEP - 1
    n_slices = tl.num_programs(0)
    o_b, m_b, o_j, m_j, m, p_own = program_tile(B, H, BLOCK_B, BLOCK_H)
    after_previous_launch(USE_PDL)

    # W_hg^T for this slice, held for the whole launch when it runs many steps (only the gates of the phases
    # this launch runs: classic phase 1 multiplies by W_hr and W_hz, phase 2 by W_hn).
    if RUN_PHASE_1 or not CLASSIC:
        w_r = gate_weights(w_hh_ptr + GATE_R * H * H, 1, H, o_j, m_j, H, RESIDENT, K_CHUNKS, BLOCK_K)
        w_z = gate_weights(w_hh_ptr + GATE_Z * H * H, 1, H, o_j, m_j, H, RESIDENT, K_CHUNKS, BLOCK_K)
    if RUN_PHASE_2 or not CLASSIC:
        w_n = gate_weights(w_hh_ptr + GATE_N * H * H, 1, H, o_j, m_j, H, RESIDENT, K_CHUNKS, BLOCK_K)
    zero = tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE)
    tile = (o_b, m_b, o_j, m_j)
    b_hr = tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)
    b_hz = tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)
    b_hn = tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)
    if HAS_BIAS:
        b_hr = gate_row(b_hh_ptr, GATE_R, o_j, m_j, H, ACC_DTYPE)
        b_hz = gate_row(b_hh_ptr, GATE_Z, o_j, m_j, H, ACC_DTYPE)
        b_hn = gate_row(b_hh_ptr, GATE_N, o_j, m_j, H, ACC_DTYPE)
    if FUSE_INPUT:
        # the cell: [h, x] @ [W_hh | W_ih]^T, the input half here, its weights streamed (one step)
        w_ih = (w_ih_ptr + GATE_R * H * I, w_ih_ptr + GATE_Z * H * I, w_ih_ptr + GATE_N * H * I)
        gx_r, gx_z, gx_n = products(
            (zero, zero, zero), x_ptr, I, o_b, m_b, I, w_ih, 1, I, o_j, m_j, False, DOT_PRECISION, BLOCK_K, 0
        )
        if HAS_BIAS:
            gx_r += gate_row(b_ih_ptr, GATE_R, o_j, m_j, H, ACC_DTYPE)
            gx_z += gate_row(b_ih_ptr, GATE_Z, o_j, m_j, H, ACC_DTYPE)
            gx_n += gate_row(b_ih_ptr, GATE_N, o_j, m_j, H, ACC_DTYPE)
    else:
        gx_r, gx_z, gx_n = _input_side(gi_ptr, t_lo, t_hi, B, H, o_b, o_j, m, ACC_DTYPE)
    if HAS_LENGTHS:
        length = tl.load(lengths_ptr + o_b, mask=m_b, other=0).to(tl.int32)
    h = tl.load(state_ptr + p_own, mask=m, other=0.0)

    for t in tl.range(t_lo, t_hi, num_stages=1):
        if HAS_LENGTHS:
            active = (t < length)[:, None]
        else:
            active = m_b[:, None]
        p_prev = hs_ptr + t * B * H
        barrier = (t - t_lo) * BARRIERS_PER_STEP
        if STORE_GATES:
            p_gates = gates_ptr + (t * B + o_b)[:, None] * (NG * H) + o_j[None, :]
        if CLASSIC:
            if RUN_PHASE_1:
                acc_r, acc_z = _hidden_products(
                    (zero, zero), p_prev, (w_r, w_z), tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS
                )
                r = sigmoid(gx_r + acc_r + b_hr)
                z = sigmoid(gx_z + acc_z + b_hz)
                tl.store(rh_ptr + p_own, r * h, mask=m)
                if STORE_GATES:
                    tl.store(p_gates + GATE_R * H, r, mask=m)
                if not RUN_PHASE_2:
                    tl.store(z_scratch_ptr + p_own, z, mask=m)
                # R * h must be complete over the whole hidden width before phase 2 reads it
                step_barrier(sync_ptr, tl.program_id(1), n_slices * (barrier + 1), spin_limit, GRID_SYNC)
            if RUN_PHASE_2:
                if not RUN_PHASE_1:
                    z = tl.load(z_scratch_ptr + p_own, mask=m, other=0.0)
                (acc_n,) = _hidden_products(
                    (zero,), rh_ptr, (w_n,), tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS
                )
                n = tanh(gx_n + acc_n + b_hn)
                h = tl.where(active, z * n + (1.0 - z) * h, h)
                if STORE_GATES:
                    tl.store(p_gates + GATE_Z * H, z, mask=m)
                    tl.store(p_gates + GATE_N * H, n, mask=m)
        else:
            acc_r, acc_z, acc_n = _hidden_products(
                (zero, zero, zero), p_prev, (w_r, w_z, w_n), tile, H, RESIDENT, DOT_PRECISION, BLOCK_K, K_CHUNKS
            )
            r = sigmoid(gx_r + acc_r + b_hr)
            z = sigmoid(gx_z + acc_z + b_hz)
            # r scales only the hidden half of the candidate: that is what makes this one phase
            hn = acc_n + b_hn
            n = tanh(gx_n + r * hn)
            h = tl.where(active, (1.0 - z) * n + z * h, h)
            if STORE_GATES:
                tl.store(p_gates + GATE_R * H, r, mask=m)
                tl.store(p_gates + GATE_Z * H, z, mask=m)
                tl.store(p_gates + GATE_N * H, n, mask=m)
                tl.store(p_gates + 3 * H, hn, mask=m)
        if RUN_PHASE_2:
            tl.store(p_prev + B * H + p_own, h, mask=m)
            if not FUSE_INPUT:
                # the next step's input side does not depend on the barrier: load it before waiting
                gx_r, gx_z, gx_n = _input_side(gi_ptr, t + 1, t_hi, B, H, o_b, o_j, m, ACC_DTYPE)
            # h_t must be complete over the whole hidden width before step t + 1 reads it
            step_barrier(sync_ptr, tl.program_id(1), n_slices * (barrier + BARRIERS_PER_STEP), spin_limit, GRID_SYNC)
    if RUN_PHASE_2:
        tl.store(state_ptr + p_own, h, mask=m)
