"""Backward kernel (BPTT) of both GRU formulations: the sequential ``dh`` recurrence, weight-stationary.

Only ``dh`` is sequential; the weight, bias and input gradients are large products over all steps done by the
host afterwards from the gate gradients this kernel stores. Program ``(i_slice, i_group)`` owns ``BLOCK_H``
hidden units within one head of ``D`` (``W_hh`` ``[3H, D]``, dense when ``D = H``) of ``BATCH_BLOCKS`` blocks of
``BLOCK_B`` batch rows (as in :mod:`~tritongru.kernels.forward`). In a launch of many steps (``RESIDENT``) it
holds the columns ``W_hh[:, slice]`` of every gate on chip for the whole launch (with heads, of its head's rows
only; the row chunks past ``HELD_CHUNKS`` streamed every step, as in the forward); its exact slice of ``dh``
lives in ``carry``.
Step ``t`` runs from ``t_hi - 1`` down to ``t_lo``; ``g = dh + dL/d output_t`` is the total gradient of ``h_t``
(zero output gradient past a sequence's length, where ``g`` passes through unchanged).

cudnn form (phases 0 and 1, one barrier per step):
  0. gate gradients of the slice, ``dn = g(1-z); dan = dn(1-n²); dar = dan·hn·r(1-r); daz = g(h-n)z(1-z);
     dhn = dan·r``; store ``dgates_x[t] = [dar, daz, dan]`` and ``dgates_hn[t] = dhn``; barrier;
  1. ``dh = g z + [dar, daz, dhn] @ W_hh[:, slice]``, the gate gradients read over the whole width, every chunk
     of all three at once (one round trip), the three products summed.
classic form (phases 0, 1 and 2, two barriers per step):
  0. ``dan = g Z (1-H~²)``, ``daz = g (H~-h) Z(1-Z)``; store them; barrier;
  1. ``d(Rh) = dan @ W_hn[:, slice]``; ``dar = d(Rh) h R(1-R)``; store it; ``dh = g(1-Z) + d(Rh) R``; barrier;
  2. ``dh += [dar, daz] @ [W_hr; W_hz][:, slice]``.
Phase 0 of step ``t - 1`` needs no other program's data, only ``dh`` after step ``t``: it runs right after
step ``t``'s last phase, its inputs loaded with that phase's exchanged gate gradients (one round trip for both),
and only step ``t_hi - 1``'s phase 0 runs on its own, before the time loop. The stored gate gradients are the
exchange between programs; every step has its own rows, so nothing is overwritten while another program may
still read it. Every value is written by exactly one program: no atomics on data, bitwise reproducible.

Zoneout (``ZONEOUT``; ``h_t = k h_{t-1} + (1 - k) h'_t``, :mod:`~tritongru.kernels.zoneout`): the gate gradients
are those of ``h'_t``, from ``(1 - k) g``, and ``dh`` gains ``k g`` along the direct path; ``k`` is drawn again
from the same seed, never stored.

Launch modes as in :mod:`tritongru.kernels.forward`: the whole sequence with ``GRID_SYNC`` (or one slice), or
one launch per step and phase (``FIRST_PHASE == LAST_PHASE``; a launch never reaches the step below its
``t_lo``), ``carry`` holding ``dh`` between launches (and, between a classic step's phases 1 and 2, the partial
sum).

Layouts (contiguous): ``grad_out`` ``[T, B, H]``; ``carry`` ``[B, H]`` compute dtype (``dL/dh_{T-1}`` from
``h_n``'s gradient on the first entry; ``dL/dh0`` after step 0); ``hs`` ``[T+1, B, H]`` and ``gates``
``[T, B, NG*H]`` as the forward stored them; ``dgates_x`` ``[T, B, 3H]`` and ``dgates_hn`` ``[T, B, H]``
(cudnn only) in the storage dtype. Step offsets are int64.
"""

import triton
import triton.language as tl
from tritongru.kernels.grid_sync import after_previous_launch, step_barrier
from tritongru.kernels.gru_math import (
    GATE_N,
    GATE_R,
    GATE_Z,
    batch_block,
    gate_weights,
    hidden_slice,
    products,
    step_rows,
)
from tritongru.kernels.zoneout import OFF, kept_share, zoned_direct


@triton.jit
def step_inputs(
    grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, t, B, H, o_b, m_b, m, o_j,
    NG: tl.constexpr, ACC_DTYPE: tl.constexpr, HAS_LENGTHS: tl.constexpr,
):  # fmt: skip
    """One tile's inputs of step ``t``: ``dL/d output_t`` (zero past a row's length), ``h_{t-1}``, the saved
    gates ``(r, z, n, hn)`` (``hn = W_hn h + b_hn``, cudnn only) and whether each row is still running."""
    rows = step_rows(t, B) + o_b
    p_own = rows[:, None] * H + o_j[None, :]
    if HAS_LENGTHS:
        active = (t < tl.load(lengths_ptr + o_b, mask=m_b, other=0))[:, None]
    else:
        active = m_b[:, None]
    grad_out = tl.load(grad_out_ptr + p_own, mask=m & active, other=0.0).to(ACC_DTYPE)
    h_prev = tl.load(hs_ptr + p_own, mask=m, other=0.0).to(ACC_DTYPE)
    p_gates = gates_ptr + rows[:, None] * (NG * H) + o_j[None, :]
    r = tl.load(p_gates + GATE_R * H, mask=m, other=0.0).to(ACC_DTYPE)
    z = tl.load(p_gates + GATE_Z * H, mask=m, other=0.0).to(ACC_DTYPE)
    n = tl.load(p_gates + GATE_N * H, mask=m, other=0.0).to(ACC_DTYPE)
    if NG == 4:
        hn = tl.load(p_gates + 3 * H, mask=m, other=0.0).to(ACC_DTYPE)
    else:
        hn = tl.zeros_like(n)
    return grad_out, h_prev, r, z, n, hn, active


@triton.jit
def _gate_gradients(
    dgates_x_ptr, dgates_hn_ptr, lengths_ptr, t, B, H, o_b, m_b, m, o_j, dh, inputs, zoneout,
    CLASSIC: tl.constexpr, ZONEOUT: tl.constexpr, ZONEOUT_REVERSED: tl.constexpr, HAS_LENGTHS: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """Phase 0 of step ``t`` for one tile: from ``dh`` (the gradient of ``h_t`` from the steps above) and the
    step's :func:`step_inputs`, store the gate gradients that need no other program's data (cudnn: all of
    them, ``[dar, daz, dan]`` and ``dhn``; classic: ``daz`` and ``dan``). With zoneout, of ``h'_t``: ``(1 - k) g``."""
    grad_out, h_prev, r, z, n, hn, active = inputs
    g = tl.where(active, dh + grad_out, 0.0)
    if ZONEOUT != OFF:
        kept = kept_share(
            zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE
        )
        g = g * (1.0 - kept)
    p_dgates = dgates_x_ptr + (step_rows(t, B) + o_b)[:, None] * (3 * H) + o_j[None, :]
    if CLASSIC:
        tl.store(p_dgates + GATE_Z * H, g * (n - h_prev) * z * (1.0 - z), mask=m)
        tl.store(p_dgates + GATE_N * H, g * z * (1.0 - n * n), mask=m)
    else:
        dan = g * (1.0 - z) * (1.0 - n * n)
        tl.store(p_dgates + GATE_R * H, dan * hn * r * (1.0 - r), mask=m)
        tl.store(p_dgates + GATE_Z * H, g * (h_prev - n) * z * (1.0 - z), mask=m)
        tl.store(p_dgates + GATE_N * H, dan, mask=m)
        tl.store(dgates_hn_ptr + (step_rows(t, B) + o_b)[:, None] * H + o_j[None, :], dan * r, mask=m)


@triton.heuristics(
    {
        "HAS_LENGTHS": lambda args: args["lengths_ptr"] is not None,
        "K_CHUNKS": lambda args: triton.cdiv(args["D"], args["BLOCK_K"]),
        "EVEN_K": lambda args: args["D"] % args["BLOCK_K"] == 0,
    }
)
@triton.jit(
    do_not_specialize=["t_lo", "t_hi", "T", "spin_limit", "zoneout_seed_lo", "zoneout_seed_hi", "zoneout_stream"]
)
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
    zoneout_p_ptr,
    zoneout_seed_lo,
    zoneout_seed_hi,
    zoneout_stream,
    t_lo,
    t_hi,
    T,
    B,
    H,
    D,
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
    BATCH_BLOCKS: tl.constexpr,
    SPLIT: tl.constexpr,
    WAVE: tl.constexpr,
    HELD_CHUNKS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    K_CHUNKS: tl.constexpr,
    EVEN_K: tl.constexpr,
    ZONEOUT: tl.constexpr,
    ZONEOUT_REVERSED: tl.constexpr,
):
    """Steps ``t_hi - 1`` down to ``t_lo``, phases ``FIRST_PHASE .. LAST_PHASE`` of each; see the module docstring."""
    NG: tl.constexpr = 3 if CLASSIC else 4
    BARRIERS_PER_STEP: tl.constexpr = 2 if CLASSIC else 1
    n_slices = tl.num_programs(0)
    i_group = tl.program_id(1)
    first_block = i_group * BATCH_BLOCKS
    # the batch blocks of this group (the last group may have fewer), a run-time count: the loops over them
    # stay loops, so no block's registers live through another's
    blocks = tl.minimum(BATCH_BLOCKS, tl.cdiv(B, BLOCK_B) - first_block)
    o_j, m_j, head_start = hidden_slice(D, BLOCK_H)
    o_u = o_j - head_start  # the units' columns in their head's block of W_hh
    zoneout = (zoneout_p_ptr, zoneout_seed_lo, zoneout_seed_hi, zoneout_stream, T)
    after_previous_launch(USE_PDL)

    # The columns W_hg[:, slice] of every gate, held for the whole launch when it runs many steps.
    # (multi-head: the rows of this slice's head only, ``W_hg[head rows, slice]``)
    w_head = w_hh_ptr + head_start * D
    w_r = gate_weights(w_head + GATE_R * H * D, D, 1, o_u, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
    w_z = gate_weights(w_head + GATE_Z * H * D, D, 1, o_u, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
    w_n = gate_weights(w_head + GATE_N * H * D, D, 1, o_u, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)

    if FIRST_PHASE == 0:
        # phase 0 of the first step (the last of the sequence); every later phase 0 follows its step above
        for q in tl.range(0, blocks, num_stages=1):
            o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
            m = m_b[:, None] & m_j[None, :]
            dh = tl.load(carry_ptr + o_b[:, None] * H + o_j[None, :], mask=m, other=0.0)
            inputs = step_inputs(
                grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, t_hi - 1, B, H, o_b, m_b, m, o_j,
                NG, ACC_DTYPE, HAS_LENGTHS,
            )  # fmt: skip
            _gate_gradients(
                dgates_x_ptr, dgates_hn_ptr, lengths_ptr, t_hi - 1, B, H, o_b, m_b, m, o_j, dh, inputs, zoneout,
                CLASSIC, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE,
            )  # fmt: skip
        step_barrier(sync_ptr, i_group, n_slices, spin_limit, GRID_SYNC)

    for i in tl.range(0, (t_hi - t_lo) if LAST_PHASE > 0 else 0, num_stages=1):
        t = t_hi - 1 - i
        below = t > t_lo  # phase 0 of step t - 1 follows this step: its inputs come with this step's exchange
        below_t = tl.maximum(t - 1, t_lo)  # (the last step loads its own again, unused)
        passed = 1 + i * BARRIERS_PER_STEP  # barriers every program has passed
        p_step = dgates_x_ptr + step_rows(t, B) * (3 * H)
        p_head = p_step + head_start  # this head's gate gradients
        if CLASSIC:
            if FIRST_PHASE <= 1:
                for q in tl.range(0, blocks, num_stages=1):
                    o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                    m = m_b[:, None] & m_j[None, :]
                    p_own = o_b[:, None] * H + o_j[None, :]
                    dh = tl.load(carry_ptr + p_own, mask=m, other=0.0)
                    grad_out, h_prev, r, z, _, _, active = step_inputs(
                        grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, t, B, H, o_b, m_b, m, o_j,
                        NG, ACC_DTYPE, HAS_LENGTHS,
                    )  # fmt: skip
                    (d_rh,) = products(
                        (p_head + GATE_N * H,), (3 * H,), o_b, m_b, D, (w_n,), D, 1, o_u, m_j,
                        ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                    )  # fmt: skip
                    p_dgates = p_step + o_b[:, None] * (3 * H) + o_j[None, :]
                    tl.store(p_dgates + GATE_R * H, d_rh * h_prev * r * (1.0 - r), mask=m)
                    # the partial sum; [dar, daz] @ [W_hr; W_hz] is added once dar is complete (phase 2)
                    g = dh + grad_out
                    direct = zoned_direct(
                        1.0 - z, zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr,
                        ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE,
                    )  # fmt: skip
                    tl.store(carry_ptr + p_own, tl.where(active, g * direct + d_rh * r, g), mask=m)
                step_barrier(sync_ptr, i_group, n_slices * (passed + 1), spin_limit, GRID_SYNC)
            if LAST_PHASE == 2:
                for q in tl.range(0, blocks, num_stages=1):
                    o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                    m = m_b[:, None] & m_j[None, :]
                    p_own = o_b[:, None] * H + o_j[None, :]
                    partial = tl.load(carry_ptr + p_own, mask=m, other=0.0)
                    inputs = step_inputs(
                        grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, below_t, B, H, o_b, m_b, m, o_j,
                        NG, ACC_DTYPE, HAS_LENGTHS,
                    )  # fmt: skip
                    (acc,) = products(
                        (p_head + GATE_R * H, p_head + GATE_Z * H), (3 * H, 3 * H), o_b, m_b, D, (w_r, w_z), D, 1, o_u,
                        m_j, ACC_DTYPE, RESIDENT, True, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                    )  # fmt: skip
                    dh = partial + acc
                    tl.store(carry_ptr + p_own, dh, mask=m)
                    if below:
                        _gate_gradients(
                            dgates_x_ptr, dgates_hn_ptr, lengths_ptr, below_t, B, H, o_b, m_b, m, o_j, dh, inputs,
                            zoneout, CLASSIC, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE,
                        )  # fmt: skip
                if below:
                    step_barrier(sync_ptr, i_group, n_slices * (passed + 2), spin_limit, GRID_SYNC)
        else:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                m = m_b[:, None] & m_j[None, :]
                p_own = o_b[:, None] * H + o_j[None, :]
                dh = tl.load(carry_ptr + p_own, mask=m, other=0.0)
                grad_out, _, _, z, _, _, active = step_inputs(
                    grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, t, B, H, o_b, m_b, m, o_j, NG, ACC_DTYPE, HAS_LENGTHS
                )
                inputs = step_inputs(
                    grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, below_t, B, H, o_b, m_b, m, o_j,
                    NG, ACC_DTYPE, HAS_LENGTHS,
                )  # fmt: skip
                (acc,) = products(
                    (p_head + GATE_R * H, p_head + GATE_Z * H, dgates_hn_ptr + step_rows(t, B) * H + head_start),
                    (3 * H, 3 * H, H), o_b, m_b, D, (w_r, w_z, w_n), D, 1, o_u, m_j,
                    ACC_DTYPE, RESIDENT, True, DOT_PRECISION, BLOCK_K,
                    K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                )  # fmt: skip
                g = dh + grad_out
                direct = zoned_direct(
                    z, zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE
                )
                dh = tl.where(active, g * direct, g) + acc
                tl.store(carry_ptr + p_own, dh, mask=m)
                if below:
                    _gate_gradients(
                        dgates_x_ptr, dgates_hn_ptr, lengths_ptr, below_t, B, H, o_b, m_b, m, o_j, dh, inputs,
                        zoneout, CLASSIC, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE,
                    )  # fmt: skip
            if below:
                step_barrier(sync_ptr, i_group, n_slices * (passed + 1), spin_limit, GRID_SYNC)
