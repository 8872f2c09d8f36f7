"""LayerNorm-GRU kernels (Ba et al., 2016): the recurrent side of each gate normalised over its head's units.

The input side, ``LN^i(W_i x)`` for every step, has no time dependency: the host computes it in one pass
before the loop and hands it in as ``gi``. What is left is the recurrent side, ``LN^h_g(W_hg h)`` per gate ``g``
(cudnn: ``W_hn h``; classic: ``W_hn (R h)``), with no recurrent bias (the LN bias takes its place).

Its statistics need the whole width of a row (a head's ``D`` units), which the programs of a group split into
slices. So a step's products end in a **statistics phase**: each program stores its raw pre-activations (its own
tile, ``xhat``) and its slice's partial moments (mean and sum of squared deviations, per row and gate) into
``partials``; after a barrier every program combines its head's partials (Chan's pairwise formula:
algebraically exact, numerically stable), normalises its own tile and finishes the step. That is one more
barrier per product phase:

- forward: cudnn 2 barriers per step (products r, z, n | normalise, gates, ``h_t``); classic 4 (products r, z |
  normalise, publish ``R h`` | product n | normalise, ``h_t``);
- backward: cudnn 2 per step; classic 4 (see :func:`layernorm_gru_backward_kernel`).

Saved for the backward (``STORE_GATES``): ``xhat`` ``[T, B, 3H]`` (the normalised recurrent pre-activations,
compute dtype), ``rstd`` ``[T, B, 3, heads]`` (``1 / sqrt(var + eps)``, written by each head's first slice) and
the gates (cudnn: r, z, n and ``LN^h_n(W_hn h)``; classic: R, Z, H~), as the plain kernels save them.
Without it ``xhat`` is one step's ``[1, B, 3H]`` scratch.

Everything else is as in :mod:`~tritongru.kernels.forward` and :mod:`~tritongru.kernels.backward`: slices within
heads, batch blocks stepped in turn, the three launch modes (grid barrier, one slice with CTA barriers only,
one launch per step and phase), lengths and zoneout. ``partials`` ``[B, 3, slices, 2]`` (compute dtype) is one
step's exchange: every reader of step ``t``'s partials has passed the barrier before any program writes step
``t + 1``'s.
"""

import triton
import triton.language as tl
from tritongru.kernels.backward import step_inputs
from tritongru.kernels.forward import gi_rows, update_state
from tritongru.kernels.grid_sync import after_previous_launch, step_barrier
from tritongru.kernels.gru_math import (
    GATE_N,
    GATE_R,
    GATE_Z,
    batch_block,
    gate_weights,
    hidden_slice,
    opaque_zero,
    products,
    sigmoid,
    step_rows,
    tanh,
)
from tritongru.kernels.zoneout import OFF, kept_share, zoned_direct

LAYER_NORM_EPS: tl.constexpr = tl.constexpr(1e-5)
"""Added to the biased variance (``tritongru.reference.LAYER_NORM_EPS``, tested equal)."""


@triton.jit
def _partials_row(partials_ptr, o_b, gate, slice_index):
    """Where row ``o_b``'s pair of partials of ``gate`` from slice ``slice_index`` lives in ``partials``."""
    return partials_ptr + ((o_b * 3 + gate) * tl.num_programs(0) + slice_index) * 2


@triton.jit
def _publish_moments(partials_ptr, a, gate, o_b, m_b, m_j):
    """Store this slice's moments of ``a`` ``[BLOCK_B, BLOCK_H]`` per row: the mean over its units and the sum of
    squared deviations from it."""
    m = m_b[:, None] & m_j[None, :]
    count = tl.sum(m_j.to(a.dtype), axis=0)
    mean = tl.sum(tl.where(m, a, 0.0), axis=1) / count
    centred = tl.where(m, a - mean[:, None], 0.0)
    p = _partials_row(partials_ptr, o_b, gate, tl.program_id(0))
    tl.store(p, mean, mask=m_b)
    tl.store(p + 1, tl.sum(centred * centred, axis=1), mask=m_b)


@triton.jit
def _publish_sums(partials_ptr, u, v, gate, o_b, m_b):
    """Store this slice's row sums of ``u`` and ``v`` (zero outside the tile's mask)."""
    p = _partials_row(partials_ptr, o_b, gate, tl.program_id(0))
    tl.store(p, tl.sum(u, axis=1), mask=m_b)
    tl.store(p + 1, tl.sum(v, axis=1), mask=m_b)


@triton.jit
def _head_partials(partials_ptr, gate, o_b, m_b, D, BLOCK_H: tl.constexpr, SLICES: tl.constexpr, zero=0):
    """``(first, second, count)``: the pairs of partials of every slice of this program's head for its rows,
    ``[BLOCK_B, SLICES]`` each (zero past the head's slices), and each slice's unit count ``[1, SLICES]``. Read
    past L1: other programs wrote them. ``zero``: added to the slice indices (:func:`opaque_zero`, or 0)."""
    per_head = tl.cdiv(D, BLOCK_H)
    first_slice = (tl.program_id(0) // per_head) * per_head
    s = tl.arange(0, SLICES) + zero
    valid = s < per_head
    p = _partials_row(partials_ptr, o_b[:, None], gate, first_slice + s[None, :])
    m = m_b[:, None] & valid[None, :]
    first = tl.load(p, mask=m, other=0.0, cache_modifier=".cg")
    second = tl.load(p + 1, mask=m, other=0.0, cache_modifier=".cg")
    count = tl.where(valid, tl.minimum(BLOCK_H, D - s * BLOCK_H), 0).to(first.dtype)[None, :]
    return first, second, count


@triton.jit
def _normalised(
    xhat_ptr, partials_ptr, rstd_ptr, ln_w_ptr, ln_b_ptr, gate, t, t_x, B, H, D, o_b, m_b, o_j, m_j,
    STORE_GATES: tl.constexpr, BLOCK_H: tl.constexpr, SLICES: tl.constexpr,
):  # fmt: skip
    """``LN^h_gate`` of this tile: its raw pre-activations (stored by the products phase in ``xhat[t_x]``)
    normalised with the moments of the whole head (Chan's combination of the slices' partials), times the gain,
    plus the bias. With ``STORE_GATES`` the normalised values replace the raw ones and the head's first slice
    stores ``rstd``."""
    means, deviations, count = _head_partials(partials_ptr, gate, o_b, m_b, D, BLOCK_H, SLICES)
    mean = tl.sum(means * count, axis=1) / D
    spread = means - mean[:, None]
    variance = tl.sum(deviations + count * spread * spread, axis=1) / D
    rstd = 1.0 / tl.sqrt(variance + LAYER_NORM_EPS)
    m = m_b[:, None] & m_j[None, :]
    p_x = xhat_ptr + (step_rows(t_x, B) + o_b)[:, None] * (3 * H) + gate * H + o_j[None, :]
    xhat = (tl.load(p_x, mask=m, other=0.0) - mean[:, None]) * rstd[:, None]
    if STORE_GATES:
        tl.store(p_x, xhat, mask=m)
        per_head = tl.cdiv(D, BLOCK_H)
        heads = H // D
        if tl.program_id(0) % per_head == 0:
            head = tl.program_id(0) // per_head
            tl.store(rstd_ptr + ((step_rows(t, B) + o_b) * 3 + gate) * heads + head, rstd, mask=m_b)
    gain = tl.load(ln_w_ptr + gate * H + o_j, mask=m_j, other=0.0).to(xhat.dtype)[None, :]
    bias = tl.load(ln_b_ptr + gate * H + o_j, mask=m_j, other=0.0).to(xhat.dtype)[None, :]
    return xhat * gain + bias


@triton.jit
def _store_raw(xhat_ptr, partials_ptr, a, gate, t_x, B, H, o_b, m_b, o_j, m_j):
    """The products phase's end for one gate: the raw tile into ``xhat[t_x]``, its moments into ``partials``."""
    m = m_b[:, None] & m_j[None, :]
    tl.store(xhat_ptr + (step_rows(t_x, B) + o_b)[:, None] * (3 * H) + gate * H + o_j[None, :], a, mask=m)
    _publish_moments(partials_ptr, a, gate, o_b, m_b, m_j)


@triton.heuristics(
    {
        "HAS_LENGTHS": lambda args: args["lengths_ptr"] is not None,
        "STORE_GATES": lambda args: args["gates_ptr"] is not None,
        "K_CHUNKS": lambda args: triton.cdiv(args["D"], args["BLOCK_K"]),
        "EVEN_K": lambda args: args["D"] % args["BLOCK_K"] == 0,
        "SLICES": lambda args: triton.next_power_of_2(triton.cdiv(args["D"], args["BLOCK_H"])),
    }
)
@triton.jit(
    do_not_specialize=["t_lo", "t_hi", "T", "spin_limit", "zoneout_seed_lo", "zoneout_seed_hi", "zoneout_stream"]
)
def layernorm_gru_forward_kernel(
    gi_ptr,
    w_hh_ptr,
    ln_w_ptr,
    ln_b_ptr,
    hs_ptr,
    state_ptr,
    gates_ptr,
    xhat_ptr,
    rstd_ptr,
    partials_ptr,
    rh_ptr,
    z_scratch_ptr,
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
    STORE_GATES: tl.constexpr,
    K_CHUNKS: tl.constexpr,
    EVEN_K: tl.constexpr,
    SLICES: tl.constexpr,
    ZONEOUT: tl.constexpr,
    ZONEOUT_REVERSED: tl.constexpr,
):
    """Steps ``t_lo .. t_hi-1``, phases ``FIRST_PHASE .. LAST_PHASE`` of each (cudnn 0-1, classic 0-3: even
    phases form products, odd ones normalise and finish), a barrier after every phase; ``gi`` ``[T, B, 3H]`` the
    normalised input side; ``ln_w``, ``ln_b`` ``[3H]`` the recurrent side's gains and biases. See the module
    docstring."""
    NG: tl.constexpr = 3 if CLASSIC else 4
    PHASES: tl.constexpr = 4 if CLASSIC else 2
    n_slices = tl.num_programs(0)
    i_group = tl.program_id(1)
    first_block = i_group * BATCH_BLOCKS
    blocks = tl.minimum(BATCH_BLOCKS, tl.cdiv(B, BLOCK_B) - first_block)
    o_j, m_j, head_start = hidden_slice(D, BLOCK_H)
    zoneout = (zoneout_p_ptr, zoneout_seed_lo, zoneout_seed_hi, zoneout_stream, T)
    after_previous_launch(USE_PDL)

    # W_hg^T of the gates this launch multiplies by (classic: r and z in phase 0, n in phase 2)
    if FIRST_PHASE == 0:
        w_r = gate_weights(w_hh_ptr + GATE_R * H * D, 1, D, o_j, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
        w_z = gate_weights(w_hh_ptr + GATE_Z * H * D, 1, D, o_j, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
    if (not CLASSIC and FIRST_PHASE == 0) or (CLASSIC and FIRST_PHASE <= 2 and LAST_PHASE >= 2):
        w_n = gate_weights(w_hh_ptr + GATE_N * H * D, 1, D, o_j, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)

    for t in tl.range(t_lo, t_hi, num_stages=1):
        t_x = t if STORE_GATES else 0
        p_prev = hs_ptr + step_rows(t, B) * H + head_start  # this head's h_{t-1}
        passed = (t - t_lo) * PHASES  # barriers passed before this step
        if FIRST_PHASE == 0:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                if CLASSIC:
                    acc_r, acc_z = products(
                        (p_prev,), (H,), o_b, m_b, D, (w_r, w_z), 1, D, o_j, m_j,
                        ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                    )  # fmt: skip
                else:
                    acc_r, acc_z, acc_n = products(
                        (p_prev,), (H,), o_b, m_b, D, (w_r, w_z, w_n), 1, D, o_j, m_j,
                        ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                    )  # fmt: skip
                    _store_raw(xhat_ptr, partials_ptr, acc_n, GATE_N, t_x, B, H, o_b, m_b, o_j, m_j)
                _store_raw(xhat_ptr, partials_ptr, acc_r, GATE_R, t_x, B, H, o_b, m_b, o_j, m_j)
                _store_raw(xhat_ptr, partials_ptr, acc_z, GATE_Z, t_x, B, H, o_b, m_b, o_j, m_j)
            step_barrier(sync_ptr, i_group, n_slices * (passed + 1), spin_limit, GRID_SYNC)
        if FIRST_PHASE <= 1 and LAST_PHASE >= 1:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                m = m_b[:, None] & m_j[None, :]
                p_own = o_b[:, None] * H + o_j[None, :]
                gx_r, gx_z, gx_n = gi_rows(gi_ptr, t, B, H, o_b, m_b, o_j, m_j, ACC_DTYPE)
                h = tl.load(state_ptr + p_own, mask=m, other=0.0)
                ln_r = _normalised(
                    xhat_ptr, partials_ptr, rstd_ptr, ln_w_ptr, ln_b_ptr, GATE_R, t, t_x, B, H, D, o_b, m_b, o_j, m_j,
                    STORE_GATES, BLOCK_H, SLICES,
                )  # fmt: skip
                ln_z = _normalised(
                    xhat_ptr, partials_ptr, rstd_ptr, ln_w_ptr, ln_b_ptr, GATE_Z, t, t_x, B, H, D, o_b, m_b, o_j, m_j,
                    STORE_GATES, BLOCK_H, SLICES,
                )  # fmt: skip
                r = sigmoid(gx_r + ln_r)
                z = sigmoid(gx_z + ln_z)
                if CLASSIC:
                    tl.store(rh_ptr + p_own, r * h, mask=m)
                    tl.store(z_scratch_ptr + p_own, z, mask=m)
                    if STORE_GATES:
                        p_gates = gates_ptr + (step_rows(t, B) + o_b)[:, None] * (NG * H) + o_j[None, :]
                        tl.store(p_gates + GATE_R * H, r, mask=m)
                        tl.store(p_gates + GATE_Z * H, z, mask=m)
                else:
                    ln_n = _normalised(
                        xhat_ptr, partials_ptr, rstd_ptr, ln_w_ptr, ln_b_ptr, GATE_N, t, t_x, B, H, D, o_b, m_b, o_j,
                        m_j, STORE_GATES, BLOCK_H, SLICES,
                    )  # fmt: skip
                    n = tanh(gx_n + r * ln_n)
                    update_state(
                        hs_ptr, state_ptr, lengths_ptr, t, B, H, o_b, m_b, o_j, m, p_own, (1.0 - z) * n + z * h, h,
                        zoneout, HAS_LENGTHS, ZONEOUT, ZONEOUT_REVERSED, ACC_DTYPE,
                    )  # fmt: skip
                    if STORE_GATES:
                        p_gates = gates_ptr + (step_rows(t, B) + o_b)[:, None] * (NG * H) + o_j[None, :]
                        tl.store(p_gates + GATE_R * H, r, mask=m)
                        tl.store(p_gates + GATE_Z * H, z, mask=m)
                        tl.store(p_gates + GATE_N * H, n, mask=m)
                        tl.store(p_gates + 3 * H, ln_n, mask=m)
            step_barrier(sync_ptr, i_group, n_slices * (passed + 2), spin_limit, GRID_SYNC)
        if CLASSIC and FIRST_PHASE <= 2 and LAST_PHASE >= 2:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                (acc_n,) = products(
                    (rh_ptr + head_start,), (H,), o_b, m_b, D, (w_n,), 1, D, o_j, m_j,
                    ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                    K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                )  # fmt: skip
                _store_raw(xhat_ptr, partials_ptr, acc_n, GATE_N, t_x, B, H, o_b, m_b, o_j, m_j)
            step_barrier(sync_ptr, i_group, n_slices * (passed + 3), spin_limit, GRID_SYNC)
        if CLASSIC and LAST_PHASE == 3:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                m = m_b[:, None] & m_j[None, :]
                p_own = o_b[:, None] * H + o_j[None, :]
                _, _, gx_n = gi_rows(gi_ptr, t, B, H, o_b, m_b, o_j, m_j, ACC_DTYPE)
                h = tl.load(state_ptr + p_own, mask=m, other=0.0)
                z = tl.load(z_scratch_ptr + p_own, mask=m, other=0.0)
                ln_n = _normalised(
                    xhat_ptr, partials_ptr, rstd_ptr, ln_w_ptr, ln_b_ptr, GATE_N, t, t_x, B, H, D, o_b, m_b, o_j, m_j,
                    STORE_GATES, BLOCK_H, SLICES,
                )  # fmt: skip
                n = tanh(gx_n + ln_n)
                update_state(
                    hs_ptr, state_ptr, lengths_ptr, t, B, H, o_b, m_b, o_j, m, p_own, z * n + (1.0 - z) * h, h,
                    zoneout, HAS_LENGTHS, ZONEOUT, ZONEOUT_REVERSED, ACC_DTYPE,
                )  # fmt: skip
                if STORE_GATES:
                    tl.store(
                        gates_ptr + (step_rows(t, B) + o_b)[:, None] * (NG * H) + GATE_N * H + o_j[None, :], n, mask=m
                    )
            step_barrier(sync_ptr, i_group, n_slices * (passed + 4), spin_limit, GRID_SYNC)


@triton.jit
def _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, dln, gate, t, B, H, o_b, m_b, o_j, m_j):
    """The gradient ``dln`` of ``LN^h_gate``'s output for one tile: stored (the gain's and bias's gradients are
    sums of it over all steps), and this slice's row sums of ``dxhat = dln * gain`` and ``dxhat * xhat`` published."""
    m = m_b[:, None] & m_j[None, :]
    p = (step_rows(t, B) + o_b)[:, None] * (3 * H) + gate * H + o_j[None, :]
    tl.store(dln_ptr + p, dln, mask=m)
    gain = tl.load(ln_w_ptr + gate * H + o_j, mask=m_j, other=0.0).to(dln.dtype)[None, :]
    dxhat = tl.where(m, dln * gain, 0.0)
    xhat = tl.load(xhat_ptr + p, mask=m, other=0.0)
    _publish_sums(partials_ptr, dxhat, dxhat * xhat, gate, o_b, m_b)


@triton.jit
def _ln_gate_gradients(
    dgates_x_ptr, dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, lengths_ptr, t, B, H, o_b, m_b, m, o_j, m_j, dh,
    inputs, zoneout, CLASSIC: tl.constexpr, ZONEOUT: tl.constexpr, ZONEOUT_REVERSED: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """Phase 0 of step ``t`` for one tile, from ``dh`` and the step's inputs: the gradients of the input side
    (``dgates_x``) and of the recurrent normalisations' outputs that need no other program's data (cudnn: all
    three, classic: z and n), with their row sums published. With zoneout, of ``h'_t``: ``(1 - k) g``."""
    grad_out, h_prev, r, z, n, ln_n, active = inputs
    g = tl.where(active, dh + grad_out, 0.0)
    if ZONEOUT != OFF:
        kept = kept_share(
            zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE
        )
        g = g * (1.0 - kept)
    p_dgates = dgates_x_ptr + (step_rows(t, B) + o_b)[:, None] * (3 * H) + o_j[None, :]
    if CLASSIC:
        dan = g * z * (1.0 - n * n)
        daz = g * (n - h_prev) * z * (1.0 - z)
        tl.store(p_dgates + GATE_N * H, dan, mask=m)
        tl.store(p_dgates + GATE_Z * H, daz, mask=m)
        _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, dan, GATE_N, t, B, H, o_b, m_b, o_j, m_j)
        _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, daz, GATE_Z, t, B, H, o_b, m_b, o_j, m_j)
    else:
        dan = g * (1.0 - z) * (1.0 - n * n)
        dar = dan * ln_n * r * (1.0 - r)
        daz = g * (h_prev - n) * z * (1.0 - z)
        tl.store(p_dgates + GATE_R * H, dar, mask=m)
        tl.store(p_dgates + GATE_Z * H, daz, mask=m)
        tl.store(p_dgates + GATE_N * H, dan, mask=m)
        _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, dar, GATE_R, t, B, H, o_b, m_b, o_j, m_j)
        _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, daz, GATE_Z, t, B, H, o_b, m_b, o_j, m_j)
        _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, dan * r, GATE_N, t, B, H, o_b, m_b, o_j, m_j)


@triton.jit
def _pre_activation_gradient(
    da_ptr, dln_ptr, partials_ptr, xhat_ptr, rstd_ptr, ln_w_ptr, gate, t, B, H, D, o_b, m_b, o_j, m_j,
    BLOCK_H: tl.constexpr, SLICES: tl.constexpr,
):  # fmt: skip
    """The normalisation's backward for one tile and gate: ``da = rstd (dxhat - mean(dxhat) - xhat mean(dxhat
    xhat))``, the means over the head (the slices' published sums), stored into ``da`` (storage dtype), the
    operand of the next products. Its units' and slices' indices are made here (:func:`opaque_zero`), not
    before the time loop."""
    zero = opaque_zero(t)
    o_j = o_j + zero
    sums, weighted, _ = _head_partials(partials_ptr, gate, o_b, m_b, D, BLOCK_H, SLICES, zero)
    mean_dxhat = tl.sum(sums, axis=1)[:, None] / D
    mean_weighted = tl.sum(weighted, axis=1)[:, None] / D
    m = m_b[:, None] & m_j[None, :]
    p = (step_rows(t, B) + o_b)[:, None] * (3 * H) + gate * H + o_j[None, :]
    heads = H // D
    head = tl.program_id(0) // tl.cdiv(D, BLOCK_H)
    rstd = tl.load(rstd_ptr + ((step_rows(t, B) + o_b) * 3 + gate) * heads + head, mask=m_b, other=0.0)
    dln = tl.load(dln_ptr + p, mask=m, other=0.0)
    gain = tl.load(ln_w_ptr + gate * H + o_j, mask=m_j, other=0.0).to(dln.dtype)[None, :]
    xhat = tl.load(xhat_ptr + p, mask=m, other=0.0)
    da = rstd[:, None] * (dln * gain - mean_dxhat - xhat * mean_weighted)
    tl.store(da_ptr + p, da, mask=m)


@triton.jit
def _phase_block(i_block, B, BLOCK_B: tl.constexpr):
    """:func:`batch_block` with rows made in the phase that uses them (:func:`opaque_zero`)."""
    return batch_block(i_block + opaque_zero(i_block), B, BLOCK_B)


@triton.heuristics(
    {
        "HAS_LENGTHS": lambda args: args["lengths_ptr"] is not None,
        "K_CHUNKS": lambda args: triton.cdiv(args["D"], args["BLOCK_K"]),
        "EVEN_K": lambda args: args["D"] % args["BLOCK_K"] == 0,
        "SLICES": lambda args: triton.next_power_of_2(triton.cdiv(args["D"], args["BLOCK_H"])),
    }
)
@triton.jit(
    do_not_specialize=["t_lo", "t_hi", "T", "spin_limit", "zoneout_seed_lo", "zoneout_seed_hi", "zoneout_stream"]
)
def layernorm_gru_backward_kernel(
    grad_out_ptr,
    carry_ptr,
    hs_ptr,
    gates_ptr,
    xhat_ptr,
    rstd_ptr,
    w_hh_ptr,
    ln_w_ptr,
    dgates_x_ptr,
    dln_ptr,
    da_ptr,
    partials_ptr,
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
    SLICES: tl.constexpr,
    ZONEOUT: tl.constexpr,
    ZONEOUT_REVERSED: tl.constexpr,
):
    """Steps ``t_hi - 1`` down to ``t_lo``, phases ``FIRST_PHASE .. LAST_PHASE``; a barrier after each phase.

    cudnn (phases 0-2, two barriers per step):
      0. :func:`_ln_gate_gradients` (all three gates); barrier;
      1. ``da_g`` of every gate (:func:`_pre_activation_gradient`); barrier;
      2. ``dh = g z + [da_r, da_z, da_n] @ W_hh[:, slice]``, then phase 0 of step ``t - 1``; barrier.
    classic (phases 0-4, four barriers per step):
      0. :func:`_ln_gate_gradients` (z and n); barrier;
      1. ``da_n``, ``da_z``; barrier;
      2. ``d(Rh) = da_n @ W_hn[:, slice]``, ``dar = d(Rh) h R(1-R)`` (the input side's and ``LN^h_r``'s
         gradient), its row sums; ``dh = g (1-Z) + d(Rh) R`` so far; barrier;
      3. ``da_r``; barrier;
      4. ``dh += [da_r, da_z] @ [W_hr; W_hz][:, slice]``, then phase 0 of step ``t - 1``; barrier.
    Outputs (``[T, B, 3H]``): ``dgates_x`` (the gradient of ``gi``), ``dln`` (of each ``LN^h_g``'s output,
    compute dtype), ``da`` (of each raw ``W_hg h``, or ``W_hn (R h)``; storage dtype); ``carry`` as the plain
    backward's. ``xhat``, ``rstd`` and ``gates`` as the forward saved them.

    Registers: a grid-synchronised launch runs every phase in one loop body, so whatever the compilers compute
    once before the time loop is held through all of its phases. Each phase makes its own rows
    (:func:`_phase_block`), the fused phase 0 its units, and the normalisation's backward its units and slices
    (:func:`~tritongru.kernels.gru_math.opaque_zero`): a few integer instructions a step. Compiled for sm_90
    (Triton 3.6; cudnn, every flag on, the first config), held before the loop they spilled 56 B at 255
    registers (TF32, B=64 H=768) and 184 B (float64, B=256 H=256); made in each phase, 236 and 222 registers and
    no spill.
    """
    NG: tl.constexpr = 3 if CLASSIC else 4
    PHASES: tl.constexpr = 5 if CLASSIC else 3
    n_slices = tl.num_programs(0)
    i_group = tl.program_id(1)
    first_block = i_group * BATCH_BLOCKS
    blocks = tl.minimum(BATCH_BLOCKS, tl.cdiv(B, BLOCK_B) - first_block)
    o_j, m_j, head_start = hidden_slice(D, BLOCK_H)
    o_u = o_j - head_start  # the units' columns in their head's block of W_hh
    zoneout = (zoneout_p_ptr, zoneout_seed_lo, zoneout_seed_hi, zoneout_stream, T)
    after_previous_launch(USE_PDL)

    w_head = w_hh_ptr + head_start * D
    if LAST_PHASE == PHASES - 1:
        w_r = gate_weights(w_head + GATE_R * H * D, D, 1, o_u, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
        w_z = gate_weights(w_head + GATE_Z * H * D, D, 1, o_u, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
    if (not CLASSIC and LAST_PHASE == 2) or (CLASSIC and FIRST_PHASE <= 2 and LAST_PHASE >= 2):
        w_n = gate_weights(w_head + GATE_N * H * D, D, 1, o_u, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)

    if FIRST_PHASE == 0:
        # phase 0 of the first step (the last of the sequence); every later phase 0 follows its step above
        for q in tl.range(0, blocks, num_stages=1):
            o_b, m_b = _phase_block(first_block + q, B, BLOCK_B)
            m = m_b[:, None] & m_j[None, :]
            dh = tl.load(carry_ptr + o_b[:, None] * H + o_j[None, :], mask=m, other=0.0)
            inputs = step_inputs(
                grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, t_hi - 1, B, H, o_b, m_b, m, o_j,
                NG, ACC_DTYPE, HAS_LENGTHS,
            )  # fmt: skip
            _ln_gate_gradients(
                dgates_x_ptr, dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, lengths_ptr, t_hi - 1, B, H, o_b, m_b, m,
                o_j, m_j, dh, inputs, zoneout, CLASSIC, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE,
            )  # fmt: skip
        step_barrier(sync_ptr, i_group, n_slices, spin_limit, GRID_SYNC)

    for i in tl.range(0, (t_hi - t_lo) if LAST_PHASE > 0 else 0, num_stages=1):
        t = t_hi - 1 - i
        below = t > t_lo  # phase 0 of step t - 1 follows this step: its inputs come with this step's exchange
        below_t = tl.maximum(t - 1, t_lo)  # (the last step loads its own again, unused)
        passed = 1 + i * (PHASES - 1)  # barriers every program has passed
        p_da = da_ptr + step_rows(t, B) * (3 * H) + head_start  # this head's pre-activation gradients
        if FIRST_PHASE <= 1:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = _phase_block(first_block + q, B, BLOCK_B)
                for gate in tl.range(GATE_Z if CLASSIC else GATE_R, GATE_N + 1, num_stages=1, loop_unroll_factor=1):
                    _pre_activation_gradient(
                        da_ptr, dln_ptr, partials_ptr, xhat_ptr, rstd_ptr, ln_w_ptr, gate, t, B, H, D, o_b, m_b,
                        o_j, m_j, BLOCK_H, SLICES,
                    )  # fmt: skip
            step_barrier(sync_ptr, i_group, n_slices * (passed + 1), spin_limit, GRID_SYNC)
        if CLASSIC:
            if FIRST_PHASE <= 2 and LAST_PHASE >= 2:
                for q in tl.range(0, blocks, num_stages=1):
                    o_b, m_b = _phase_block(first_block + q, B, BLOCK_B)
                    m = m_b[:, None] & m_j[None, :]
                    p_own = o_b[:, None] * H + o_j[None, :]
                    dh = tl.load(carry_ptr + p_own, mask=m, other=0.0)
                    grad_out, h_prev, r, z, _, _, active = step_inputs(
                        grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, t, B, H, o_b, m_b, m, o_j,
                        NG, ACC_DTYPE, HAS_LENGTHS,
                    )  # fmt: skip
                    (d_rh,) = products(
                        (p_da + GATE_N * H,), (3 * H,), o_b, m_b, D, (w_n,), D, 1, o_u, m_j,
                        ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                    )  # fmt: skip
                    dar = d_rh * h_prev * r * (1.0 - r)
                    tl.store(
                        dgates_x_ptr + (step_rows(t, B) + o_b)[:, None] * (3 * H) + GATE_R * H + o_j[None, :],
                        dar,
                        mask=m,
                    )
                    o_jq = o_j + opaque_zero(q)
                    _store_dln(dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, dar, GATE_R, t, B, H, o_b, m_b, o_jq, m_j)
                    g = dh + grad_out
                    direct = zoned_direct(
                        1.0 - z, zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr,
                        ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE,
                    )  # fmt: skip
                    tl.store(carry_ptr + p_own, tl.where(active, g * direct + d_rh * r, g), mask=m)
                step_barrier(sync_ptr, i_group, n_slices * (passed + 2), spin_limit, GRID_SYNC)
            if FIRST_PHASE <= 3 and LAST_PHASE >= 3:
                for q in tl.range(0, blocks, num_stages=1):
                    o_b, m_b = _phase_block(first_block + q, B, BLOCK_B)
                    _pre_activation_gradient(
                        da_ptr, dln_ptr, partials_ptr, xhat_ptr, rstd_ptr, ln_w_ptr, GATE_R, t, B, H, D, o_b, m_b,
                        o_j, m_j, BLOCK_H, SLICES,
                    )  # fmt: skip
                step_barrier(sync_ptr, i_group, n_slices * (passed + 3), spin_limit, GRID_SYNC)
            if LAST_PHASE == 4:
                for q in tl.range(0, blocks, num_stages=1):
                    o_b, m_b = _phase_block(first_block + q, B, BLOCK_B)
                    m = m_b[:, None] & m_j[None, :]
                    p_own = o_b[:, None] * H + o_j[None, :]
                    partial = tl.load(carry_ptr + p_own, mask=m, other=0.0)
                    inputs = step_inputs(
                        grad_out_ptr, hs_ptr, gates_ptr, lengths_ptr, below_t, B, H, o_b, m_b, m, o_j,
                        NG, ACC_DTYPE, HAS_LENGTHS,
                    )  # fmt: skip
                    (acc,) = products(
                        (p_da + GATE_R * H, p_da + GATE_Z * H), (3 * H, 3 * H), o_b, m_b, D, (w_r, w_z), D, 1, o_u,
                        m_j, ACC_DTYPE, RESIDENT, True, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K,
                    )  # fmt: skip
                    dh = partial + acc
                    tl.store(carry_ptr + p_own, dh, mask=m)
                    if below:
                        _ln_gate_gradients(
                            dgates_x_ptr, dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, lengths_ptr, below_t, B, H, o_b,
                            m_b, m, o_j + opaque_zero(q), m_j, dh, inputs, zoneout, CLASSIC, ZONEOUT, ZONEOUT_REVERSED,
                            HAS_LENGTHS, ACC_DTYPE,
                        )  # fmt: skip
                if below:
                    step_barrier(sync_ptr, i_group, n_slices * (passed + 4), spin_limit, GRID_SYNC)
        elif LAST_PHASE == 2:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = _phase_block(first_block + q, B, BLOCK_B)
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
                    (p_da + GATE_R * H, p_da + GATE_Z * H, p_da + GATE_N * H), (3 * H, 3 * H, 3 * H), o_b, m_b, D,
                    (w_r, w_z, w_n), D, 1, o_u, m_j,
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
                    _ln_gate_gradients(
                        dgates_x_ptr, dln_ptr, partials_ptr, xhat_ptr, ln_w_ptr, lengths_ptr, below_t, B, H, o_b, m_b,
                        m, o_j + opaque_zero(q), m_j, dh, inputs, zoneout, CLASSIC, ZONEOUT, ZONEOUT_REVERSED,
                        HAS_LENGTHS, ACC_DTYPE,
                    )  # fmt: skip
            if below:
                step_barrier(sync_ptr, i_group, n_slices * (passed + 2), spin_limit, GRID_SYNC)
