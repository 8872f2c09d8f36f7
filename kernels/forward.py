"""Forward kernel of both GRU formulations: the weight-stationary recurrent step, as a sequence or a cell.

Program ``(i_slice, i_group)`` owns ``BLOCK_H`` hidden units (its slice, within one head of ``D`` units:
:func:`~tritongru.kernels.gru_math.hidden_slice`; ``D = H`` for the dense GRU) of ``BATCH_BLOCKS`` blocks of
``BLOCK_B`` batch rows (block ``i_group*BATCH_BLOCKS + q``, ``q < BATCH_BLOCKS``), stepped in turn. In a launch of
many steps (``RESIDENT``) it loads the three gate rows of ``W_hh`` for its units once and holds them on chip for
the whole launch, however many batch blocks it steps (but the last ``K_CHUNKS - HELD_CHUNKS`` K chunks, which
it streams from L2 with ``h_{t-1}`` in a pipelined loop where they do not fit: ``tritongru.configs.held_chunks``).
Every step of a batch block loads, together (one round trip): the full ``h_{t-1}`` of its rows (written by every
program of its group) from ``hs``, its own tile of the input side and its exact float32 state from ``state``.
``hs`` is both the output and the exchange buffer: step ``t`` reads ``hs[t]`` and writes its slice of ``hs[t+1]``,
so no slot is ever reused.

cudnn form, one phase per step: for each batch block, ``h_{t-1}``'s chunks feed the three products (r, z, n),
then ``r = σ(gi_r + W_hr h + b_hr)``, ``z = σ(...)``, ``n = tanh(gi_n + r (W_hn h + b_hn))``,
``h_t = (1 - z) n + z h``; store ``hs[t+1]`` and ``state``; barrier.
classic form, two phases per step: phase 1 forms R and Z (two products) and publishes ``R * h`` to ``rh`` (and
``Z`` to ``z_scratch``); barrier; phase 2 forms ``H~ = tanh(gi_n + W_hn (R h) + b_hn)`` from the whole ``rh`` and
``h_t = Z H~ + (1 - Z) h``; store ``hs[t+1]`` and ``state``; barrier.

How the warps share the products and why each phase is one round trip to L2: :mod:`~tritongru.kernels.gru_math`.

Launch modes (chosen by ``tritongru.launchers``):
- ``GRID_SYNC``: the whole sequence in one cooperative launch, the programs of a group meeting at
  :func:`~tritongru.kernels.grid_sync.step_barrier` after every phase;
- one slice (``BLOCK_H >= H``): the whole sequence in one launch, CTA barriers only;
  With ``TAGGED`` (the tagged exchange, :mod:`~tritongru.kernels.grid_sync`) no counter: ``h_t`` and classic's
  ``R * h`` are published with the step's tag into two slots of words (``xh``, ``xrh`` ``[2, B, H]``, int32 for
  2-byte values, int64 for 4-byte; slot ``(t - t_lo) % 2`` holds step ``t``'s input), each read by polling its
  words until they carry the tag; only a CTA barrier remains where the step barrier was;
- per step: ``t_hi = t_lo + 1`` and one launch per phase (``FIRST_PHASE == LAST_PHASE``; classic has two).
  With ``USE_PDL`` a launch is dispatched while the previous one finishes (programmatic dependent launch).

The cell (``x_ptr`` given) is the notes' literal concat-matmul: the input side ``x @ W_ih^T + b_ih`` is formed
in the same kernel instead of read from a precomputed ``gi`` (:func:`cell_input`), r's and z's products over
``x`` and over ``h`` one sum each, as over ``[h, x]``.

Layouts (contiguous): ``gi`` ``[T, B, 3H]``; ``x`` ``[B, I]``; ``W_ih`` ``[3H, I]``; ``W_hh`` ``[3H, D]`` (the dense
``[3H, H]``, or a multi-head GRU's diagonal blocks: a slice's products then read only its head's ``h``);
biases ``[3H]``; ``hs`` ``[T+1, B, H]`` storage dtype, ``hs[0] = h0``; ``state`` ``[B, H]`` compute dtype, the
exact ``h`` at ``t_lo`` on entry and at ``t_hi`` on exit; ``gates`` ``[T, B, NG*H]`` storage dtype with
``NG = 4`` (cudnn: r, z, n, W_hn h + b_hn) or ``3`` (classic: R, Z, H~); ``rh``, ``z_scratch`` ``[B, H]`` (storage,
compute dtype). Step offsets are int64 (:func:`~tritongru.kernels.gru_math.step_rows`).

Zoneout (``ZONEOUT``, :mod:`~tritongru.kernels.zoneout`): the step's result ``h'`` is mixed with ``h_{t-1}`` as
``k h_{t-1} + (1 - k) h'`` before it is stored, ``k`` the keep mask drawn in the kernel (training) or ``p``
(evaluation); the stored gates are those that formed ``h'``. ``T`` is the sequence's length, which a reversed
direction's masks need.
"""

import triton
import triton.language as tl
from tritongru.kernels.grid_sync import after_previous_launch, exchange_tag, publish_tagged, step_barrier
from tritongru.kernels.gru_math import (
    GATE_N,
    GATE_R,
    GATE_Z,
    batch_block,
    finish_products,
    gate_row,
    gate_weights,
    hidden_slice,
    products,
    sigmoid,
    step_rows,
    tanh,
    zero_accumulators,
)
from tritongru.kernels.zoneout import zone_out


@triton.jit
def gi_rows(gi_ptr, t, B, H, o_b, m_b, o_j, m_j, ACC_DTYPE: tl.constexpr):
    """``(gx_r, gx_z, gx_n)`` of step ``t`` for one tile: its rows of the precomputed input side ``gi``."""
    m = m_b[:, None] & m_j[None, :]
    p = gi_ptr + (step_rows(t, B) + o_b)[:, None] * (3 * H) + o_j[None, :]
    gx_r = tl.load(p + GATE_R * H, mask=m, other=0.0).to(ACC_DTYPE)
    gx_z = tl.load(p + GATE_Z * H, mask=m, other=0.0).to(ACC_DTYPE)
    gx_n = tl.load(p + GATE_N * H, mask=m, other=0.0).to(ACC_DTYPE)
    return gx_r, gx_z, gx_n


@triton.jit
def cell_input(
    x_ptr,
    w_ih_ptr,
    b_ih_ptr,
    H,
    I,
    o_b,
    m_b,
    o_j,
    m_j,
    CLASSIC: tl.constexpr,
    PHASE: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """The cell's input half of the notes' concat-matmul ``[h, x] @ [W_h; W_i]^T`` for one tile and ``PHASE``
    (its weights streamed): ``(init, gx_r, gx_z, gx_n)``. ``init``: the unfinished sums of ``x @ W_ig^T`` for the
    gates whose input and hidden products are one sum, which the hidden products continue (r and z; in the
    classic form's second phase, ``PHASE = 1``, n); the cudnn form's n keeps ``x @ W_in^T`` apart (r scales only
    the hidden half), finished into ``gx_n`` (its ``init`` a zero). ``gx_*``: what is added to the finished
    products, the biases ``b_i*``."""
    w_r = w_ih_ptr + GATE_R * H * I
    w_z = w_ih_ptr + GATE_Z * H * I
    w_n = w_ih_ptr + GATE_N * H * I
    if CLASSIC:
        gates = (w_n,) if PHASE == 1 else (w_r, w_z)
    else:
        gates = (w_r, w_z, w_n)
    init = products(
        (x_ptr,), (I,), o_b, m_b, I, gates, 1, I, o_j, m_j,
        ACC_DTYPE, False, False, DOT_PRECISION, BLOCK_K, 0, 0, 0, SPLIT, FINISH=False,
    )  # fmt: skip
    gx_r = tl.zeros((1, o_j.shape[0]), dtype=ACC_DTYPE)
    gx_z = tl.zeros((1, o_j.shape[0]), dtype=ACC_DTYPE)
    gx_n = tl.zeros((1, o_j.shape[0]), dtype=ACC_DTYPE)
    if HAS_BIAS:
        gx_r = gate_row(b_ih_ptr, GATE_R, o_j, m_j, H, ACC_DTYPE)
        gx_z = gate_row(b_ih_ptr, GATE_Z, o_j, m_j, H, ACC_DTYPE)
        gx_n = gate_row(b_ih_ptr, GATE_N, o_j, m_j, H, ACC_DTYPE)
    if not CLASSIC:
        (x_n,) = finish_products((init[2],), SPLIT)
        gx_n += x_n
        init = (init[0], init[1], zero_accumulators(1, o_b.shape[0], o_j.shape[0], SPLIT, ACC_DTYPE)[0])
    return init, gx_r, gx_z, gx_n


@triton.jit
def block_inputs(
    gi_ptr, x_ptr, w_ih_ptr, b_ih_ptr, t, B, H, I, o_b, m_b, o_j, m_j,
    FUSE_INPUT: tl.constexpr, CLASSIC: tl.constexpr, PHASE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    HAS_BIAS: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr,
):  # fmt: skip
    """One batch block's own inputs to step ``t``'s ``PHASE``: ``(init, gx_r, gx_z, gx_n)``, the cell's
    (:func:`cell_input`, ``FUSE_INPUT``) or the sequence's ``gi`` rows (:func:`gi_rows`; ``init`` zeros: the
    hidden products start from nothing)."""
    if FUSE_INPUT:
        init, gx_r, gx_z, gx_n = cell_input(
            x_ptr, w_ih_ptr, b_ih_ptr, H, I, o_b, m_b, o_j, m_j,
            CLASSIC, PHASE, ACC_DTYPE, HAS_BIAS, DOT_PRECISION, BLOCK_K, SPLIT,
        )  # fmt: skip
    else:
        PRODUCTS: tl.constexpr = (1 if PHASE == 1 else 2) if CLASSIC else 3
        init = zero_accumulators(PRODUCTS, o_b.shape[0], o_j.shape[0], SPLIT, ACC_DTYPE)
        gx_r, gx_z, gx_n = gi_rows(gi_ptr, t, B, H, o_b, m_b, o_j, m_j, ACC_DTYPE)
    return init, gx_r, gx_z, gx_n


@triton.jit
def update_state(
    hs_ptr, state_ptr, lengths_ptr, t, B, H, o_b, m_b, o_j, m, p_own, stepped, h, zoneout,
    HAS_LENGTHS: tl.constexpr, ZONEOUT: tl.constexpr, ZONEOUT_REVERSED: tl.constexpr, ACC_DTYPE: tl.constexpr,
):  # fmt: skip
    """Store ``h_t``: ``stepped`` (``h'_t``, zoned out with ``h`` when ``ZONEOUT`` is on) where the row is still
    running (``t`` below its length), else ``h``, into ``hs[t+1]`` (storage dtype, the exchange) and ``state``
    (exact); return it."""
    stepped = zone_out(
        h, stepped, zoneout, t, o_b, m_b, o_j, B, H, lengths_ptr, ZONEOUT, ZONEOUT_REVERSED, HAS_LENGTHS, ACC_DTYPE
    )
    if HAS_LENGTHS:
        active = (t < tl.load(lengths_ptr + o_b, mask=m_b, other=0))[:, None]
    else:
        active = m_b[:, None]
    h = tl.where(active, stepped, h)
    tl.store(hs_ptr + (step_rows(t + 1, B) * H) + p_own, h, mask=m)
    tl.store(state_ptr + p_own, h, mask=m)
    return h


@triton.jit
def publish_next(xh_ptr, t, t_lo, B, H, p_own, h, m):
    """Publish ``h_t`` (this tile, storage dtype) to the tagged exchange's slot for step ``t + 1``."""
    publish_tagged(xh_ptr + ((t + 1 - t_lo) % 2) * B * H + p_own, h, exchange_tag(t + 1, t_lo), m)


@triton.heuristics(
    {
        "FUSE_INPUT": lambda args: args["x_ptr"] is not None,
        "HAS_BIAS": lambda args: args["b_hh_ptr"] is not None,
        "HAS_LENGTHS": lambda args: args["lengths_ptr"] is not None,
        "STORE_GATES": lambda args: args["gates_ptr"] is not None,
        "K_CHUNKS": lambda args: triton.cdiv(args["D"], args["BLOCK_K"]),
        "EVEN_K": lambda args: args["D"] % args["BLOCK_K"] == 0,
    }
)
@triton.jit(
    do_not_specialize=["t_lo", "t_hi", "T", "spin_limit", "zoneout_seed_lo", "zoneout_seed_hi", "zoneout_stream"]
)
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
    xh_ptr,
    xrh_ptr,
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
    I,
    spin_limit,
    CLASSIC: tl.constexpr,
    FIRST_PHASE: tl.constexpr,
    LAST_PHASE: tl.constexpr,
    GRID_SYNC: tl.constexpr,
    TAGGED: tl.constexpr,
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
    FUSE_INPUT: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    STORE_GATES: tl.constexpr,
    K_CHUNKS: tl.constexpr,
    EVEN_K: tl.constexpr,
    ZONEOUT: tl.constexpr,
    ZONEOUT_REVERSED: tl.constexpr,
):
    """Steps ``t_lo .. t_hi-1``, phases ``FIRST_PHASE .. LAST_PHASE`` of each; see the module docstring."""
    NG: tl.constexpr = 3 if CLASSIC else 4
    BARRIERS_PER_STEP: tl.constexpr = 2 if CLASSIC else 1
    RUN_PHASE_1: tl.constexpr = FIRST_PHASE == 0
    RUN_PHASE_2: tl.constexpr = LAST_PHASE == BARRIERS_PER_STEP - 1
    n_slices = tl.num_programs(0)
    i_group = tl.program_id(1)
    first_block = i_group * BATCH_BLOCKS
    # the batch blocks of this group (the last group may have fewer), a run-time count: the loops over them
    # stay loops, so no block's registers live through another's
    blocks = tl.minimum(BATCH_BLOCKS, tl.cdiv(B, BLOCK_B) - first_block)
    o_j, m_j, head_start = hidden_slice(D, BLOCK_H)
    zoneout = (zoneout_p_ptr, zoneout_seed_lo, zoneout_seed_hi, zoneout_stream, T)
    after_previous_launch(USE_PDL)

    # W_hg^T for this slice, held for the whole launch when it runs many steps (only the gates of the phases
    # this launch runs: classic phase 1 multiplies by W_hr and W_hz, phase 2 by W_hn).
    if RUN_PHASE_1 or not CLASSIC:
        w_r = gate_weights(w_hh_ptr + GATE_R * H * D, 1, D, o_j, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
        w_z = gate_weights(w_hh_ptr + GATE_Z * H * D, 1, D, o_j, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
    if RUN_PHASE_2 or not CLASSIC:
        w_n = gate_weights(w_hh_ptr + GATE_N * H * D, 1, D, o_j, m_j, D, RESIDENT, HELD_CHUNKS, BLOCK_K, SPLIT)
    b_hr = tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)
    b_hz = tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)
    b_hn = tl.zeros((1, BLOCK_H), dtype=ACC_DTYPE)
    if HAS_BIAS:
        b_hr = gate_row(b_hh_ptr, GATE_R, o_j, m_j, H, ACC_DTYPE)
        b_hz = gate_row(b_hh_ptr, GATE_Z, o_j, m_j, H, ACC_DTYPE)
        b_hn = gate_row(b_hh_ptr, GATE_N, o_j, m_j, H, ACC_DTYPE)

    if TAGGED:
        # h_{t_lo}, this program's part, into the exchange's first slot
        for q in tl.range(0, blocks, num_stages=1):
            o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
            m = m_b[:, None] & m_j[None, :]
            p_own = o_b[:, None] * H + o_j[None, :]
            h = tl.load(hs_ptr + step_rows(t_lo, B) * H + p_own, mask=m, other=0.0)
            publish_tagged(xh_ptr + p_own, h, exchange_tag(t_lo, t_lo), m)

    for t in tl.range(t_lo, t_hi, num_stages=1):
        barrier = (t - t_lo) * BARRIERS_PER_STEP
        slot = ((t - t_lo) % 2) * B * H  # the tagged exchange's slot of h_{t-1} and of this step's R * h
        if TAGGED:
            p_prev = xh_ptr + slot + head_start
            tagged = (exchange_tag(t, t_lo), sync_ptr, i_group, spin_limit)
        else:
            p_prev = hs_ptr + step_rows(t, B) * H + head_start  # this head's h_{t-1}
            tagged = None
        if RUN_PHASE_1:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                m = m_b[:, None] & m_j[None, :]
                p_own = o_b[:, None] * H + o_j[None, :]
                # this block's own inputs, loaded with (and waited for with) the exchanged h_{t-1}
                init, gx_r, gx_z, gx_n = block_inputs(
                    gi_ptr, x_ptr, w_ih_ptr, b_ih_ptr, t, B, H, I, o_b, m_b, o_j, m_j,
                    FUSE_INPUT, CLASSIC, 0, ACC_DTYPE, HAS_BIAS, DOT_PRECISION, BLOCK_K, SPLIT,
                )  # fmt: skip
                h = tl.load(state_ptr + p_own, mask=m, other=0.0)
                if CLASSIC:
                    acc_r, acc_z = products(
                        (p_prev,), (H,), o_b, m_b, D, (w_r, w_z), 1, D, o_j, m_j,
                        ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K, init, tagged=tagged,
                    )  # fmt: skip
                    r = sigmoid(gx_r + acc_r + b_hr)
                    z = sigmoid(gx_z + acc_z + b_hz)
                    if TAGGED:
                        publish_tagged(xrh_ptr + slot + p_own, (r * h).to(hs_ptr.dtype.element_ty), tagged[0], m)
                    else:
                        tl.store(rh_ptr + p_own, r * h, mask=m)
                    tl.store(z_scratch_ptr + p_own, z, mask=m)
                    if STORE_GATES:
                        p_gates = gates_ptr + (step_rows(t, B) + o_b)[:, None] * (NG * H) + o_j[None, :]
                        tl.store(p_gates + GATE_R * H, r, mask=m)
                else:
                    acc_r, acc_z, acc_n = products(
                        (p_prev,), (H,), o_b, m_b, D, (w_r, w_z, w_n), 1, D, o_j, m_j,
                        ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                        K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K, init, tagged=tagged,
                    )  # fmt: skip
                    r = sigmoid(gx_r + acc_r + b_hr)
                    z = sigmoid(gx_z + acc_z + b_hz)
                    # r scales only the hidden half of the candidate: that is what makes this one phase
                    hn = acc_n + b_hn
                    n = tanh(gx_n + r * hn)
                    stepped = (1.0 - z) * n + z * h
                    h = update_state(
                        hs_ptr, state_ptr, lengths_ptr, t, B, H, o_b, m_b, o_j, m, p_own, stepped, h, zoneout,
                        HAS_LENGTHS, ZONEOUT, ZONEOUT_REVERSED, ACC_DTYPE,
                    )  # fmt: skip
                    if TAGGED:
                        publish_next(xh_ptr, t, t_lo, B, H, p_own, h.to(hs_ptr.dtype.element_ty), m)
                    if STORE_GATES:
                        p_gates = gates_ptr + (step_rows(t, B) + o_b)[:, None] * (NG * H) + o_j[None, :]
                        tl.store(p_gates + GATE_R * H, r, mask=m)
                        tl.store(p_gates + GATE_Z * H, z, mask=m)
                        tl.store(p_gates + GATE_N * H, n, mask=m)
                        tl.store(p_gates + 3 * H, hn, mask=m)
            if CLASSIC:
                # R * h must be complete over the whole hidden width before phase 2 reads it (tagged: each
                # word is waited for; the CTA barrier orders this program's own z_scratch)
                if TAGGED:
                    tl.debug_barrier()
                else:
                    step_barrier(sync_ptr, i_group, n_slices * (barrier + 1), spin_limit, GRID_SYNC)
        if CLASSIC and RUN_PHASE_2:
            for q in tl.range(0, blocks, num_stages=1):
                o_b, m_b = batch_block(first_block + q, B, BLOCK_B)
                m = m_b[:, None] & m_j[None, :]
                p_own = o_b[:, None] * H + o_j[None, :]
                init, _, _, gx_n = block_inputs(
                    gi_ptr, x_ptr, w_ih_ptr, b_ih_ptr, t, B, H, I, o_b, m_b, o_j, m_j,
                    FUSE_INPUT, CLASSIC, 1, ACC_DTYPE, HAS_BIAS, DOT_PRECISION, BLOCK_K, SPLIT,
                )  # fmt: skip
                h = tl.load(state_ptr + p_own, mask=m, other=0.0)
                z = tl.load(z_scratch_ptr + p_own, mask=m, other=0.0)
                if TAGGED:
                    p_rh = xrh_ptr + slot + head_start
                else:
                    p_rh = rh_ptr + head_start
                (acc_n,) = products(
                    (p_rh,), (H,), o_b, m_b, D, (w_n,), 1, D, o_j, m_j,
                    ACC_DTYPE, RESIDENT, False, DOT_PRECISION, BLOCK_K,
                    K_CHUNKS, HELD_CHUNKS, WAVE, SPLIT, EVEN_K, init, tagged=tagged,
                )  # fmt: skip
                n = tanh(gx_n + acc_n + b_hn)
                stepped = z * n + (1.0 - z) * h
                h = update_state(
                    hs_ptr, state_ptr, lengths_ptr, t, B, H, o_b, m_b, o_j, m, p_own, stepped, h, zoneout,
                    HAS_LENGTHS, ZONEOUT, ZONEOUT_REVERSED, ACC_DTYPE,
                )  # fmt: skip
                if TAGGED:
                    publish_next(xh_ptr, t, t_lo, B, H, p_own, h.to(hs_ptr.dtype.element_ty), m)
                if STORE_GATES:
                    p_gates = gates_ptr + (step_rows(t, B) + o_b)[:, None] * (NG * H) + o_j[None, :]
                    tl.store(p_gates + GATE_Z * H, z, mask=m)
                    tl.store(p_gates + GATE_N * H, n, mask=m)
        if RUN_PHASE_2:
            # h_t must be complete over the whole hidden width before step t + 1 reads it (tagged: each word is
            # waited for; the CTA barrier orders this program's own state)
            if TAGGED:
                tl.debug_barrier()
            else:
                step_barrier(sync_ptr, i_group, n_slices * (barrier + BARRIERS_PER_STEP), spin_limit, GRID_SYNC)
