"""Shared ``@triton.jit`` helpers: gate names, activations, tiles of a program, and the products of a step.

Every recurrent program owns ``BLOCK_H`` hidden units (its *slice*) of one or more blocks of ``BLOCK_B`` batch
rows. In a launch that runs many steps, the weights it multiplies by are loaded once (:func:`gate_weights`) and
stay on chip while the time loop runs (all of them, or the first ``HELD_CHUNKS`` K chunks with the rest loaded
in every step beside the operand, in a pipelined loop); a step's products stream the full-width operand
(``h_{t-1}``, ``R * h``, gate gradients) that other programs wrote, against them. Multi-head (block-diagonal
``W_hh``, heads of ``D`` units, :func:`hidden_slice`): the products run over the ``D`` columns of the slice's own
head only.

**How the warps share a product** (``SPLIT_K``, chosen per launch by ``tritongru.configs``): a tile product
``a [BLOCK_B, K] @ w [K, BLOCK_H]`` is too small for Triton's default split of a dot over the warps: with
``BLOCK_B = 16`` the ``mma`` layout puts every warp on the same 16 rows, and each warp computes the whole tile.
With ``SPLIT_K`` the warps split ``K`` instead: every chunk of ``BLOCK_K`` columns is a batch of ``S = num_warps``
sub-chunks (``a [S, BLOCK_B, BLOCK_K / S]``, ``w [S, BLOCK_K / S, BLOCK_H]``), one per warp (a batched
``tl.dot`` puts its warps on the batch axis), and one cross-warp sum per product ends it, its tile then shared
out over all the threads for what follows (:func:`finish_products`). Without ``SPLIT_K``
the tile must have a row block of 16 per warp (``BLOCK_B >= 16 * num_warps``), and the warps split the rows.

**One round trip per operand** (:func:`products`): every chunk of the exchanged operand is loaded before any is
used. Triton would place each chunk's store to shared memory (on its way into the ``mma`` layout) right after
that chunk's load, and a load cannot issue past a store that waits for the one before it; :func:`_issued_together`
makes every chunk's first use depend on the last chunk's load, so all loads of the operand are in flight at once.
"""

import triton
import triton.language as tl
from tritongru.kernels.grid_sync import load_tagged, wait_for_tag

from tritongru.environment import interpreting

GATE_R: tl.constexpr = tl.constexpr(0)
GATE_Z: tl.constexpr = tl.constexpr(1)
GATE_N: tl.constexpr = tl.constexpr(2)
"""Gate order everywhere, as torch stores it: ``W = [W_r; W_z; W_n]``, gate ``g`` in rows ``g*H .. g*H+H-1``."""

_INTERPRETING = tl.constexpr(interpreting())
# Triton's interpreter multiplies bfloat16 ``tl.dot`` operands as raw bits (seen with triton 3.9); there the
# operands are widened to float32 first, which is exact (a product of two bf16 values fits in float32).


@triton.jit
def sigmoid(x):
    """Logistic function, stable for large |x| (never forms exp of a large positive number); one division."""
    e = tl.exp(-tl.abs(x))
    s = 1.0 / (1.0 + e)
    return tl.where(x >= 0, s, e * s)


@triton.jit
def tanh(x):
    """tanh(x) = 2 sigmoid(2x) - 1, written with ``exp``: ``libdevice.tanh`` returns nothing under the
    interpreter, and this form never overflows."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x >= 0, t, -t)


@triton.jit
def step_rows(t, B):
    """Rows of a ``[T, B, ...]`` array before step ``t``, as int64: ``t * B * 3H`` passes 2^31 at sizes people
    train at (T=4096, B=256, H=1024)."""
    return tl.cast(t, tl.int64) * B


@triton.jit
def opaque_zero(x):
    """An int32 zero the compilers can neither fold nor move, made from the int32 scalar ``x`` by an inline ``mov``
    with side effects, so it is evaluated where it stands. Added to an index inside the time loop, it keeps what
    is derived from the index (addresses, masks, counts) in that place, recomputed on each pass, where LLVM would
    compute it once before the loop and hold it in registers through every phase (see
    :func:`tritongru.kernels.layernorm.layernorm_gru_backward_kernel`)."""
    if _INTERPRETING:
        return x * 0
    else:
        return tl.inline_asm_elementwise("mov.b32 $0, 0;", "=r,r", [x], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def batch_block(i_block, B, BLOCK_B: tl.constexpr):
    """Rows ``o_b`` (int64) of batch block ``i_block`` and their mask ``m_b``."""
    o_b = tl.cast(i_block, tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    return o_b, o_b < B


@triton.jit
def hidden_slice(D, BLOCK_H: tl.constexpr):
    """``(o_j, m_j, head_start)``: this program's hidden units ``o_j`` (grid axis 0 runs over slices), their mask
    and the first unit of their head. Units come in heads of ``D`` (``D = H``: one head, the dense GRU), each
    covered by ``cdiv(D, BLOCK_H)`` slices, so a slice never spans two heads."""
    per_head = tl.cdiv(D, BLOCK_H)
    head_start = (tl.program_id(0) // per_head) * D
    o_u = (tl.program_id(0) % per_head) * BLOCK_H + tl.arange(0, BLOCK_H)
    return head_start + o_u, o_u < D, head_start


@triton.jit
def gate_row(p, gate, o_j, m_j, H, ACC_DTYPE: tl.constexpr):
    """``p[gate*H + j]`` for this slice's units, as a ``[1, BLOCK_H]`` row in ``ACC_DTYPE`` (a bias)."""
    return tl.load(p + gate * H + o_j, mask=m_j, other=0.0).to(ACC_DTYPE)[None, :]


@triton.jit
def _chunk_columns(k0, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr):
    """The K offsets of the chunk that starts at ``k0``: ``[BLOCK_K]``, or with ``SPLIT > 1`` ``[SPLIT, BLOCK_K /
    SPLIT]`` (row ``s`` the sub-chunk of warp ``s``)."""
    if SPLIT > 1:
        KC: tl.constexpr = BLOCK_K // SPLIT
        return k0 + tl.arange(0, SPLIT)[:, None] * KC + tl.arange(0, KC)[None, :]
    else:
        return k0 + tl.arange(0, BLOCK_K)


@triton.jit
def _operand_chunk(
    p_a, stride_a, o_b, m_b, k0, K, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, EVEN_K: tl.constexpr
):  # fmt: skip
    """``a[b, k]`` at ``p_a + b*stride_a + k`` for the chunk at ``k0``, zero past ``K`` (unless ``EVEN_K``: chunks
    that tile ``K`` exactly) and outside ``m_b``: ``[BLOCK_B, BLOCK_K]``, or ``[SPLIT, BLOCK_B, BLOCK_K /
    SPLIT]``. Loaded past L1: other programs wrote it."""
    p, mask = _operand_addresses(p_a, stride_a, o_b, m_b, k0, K, BLOCK_K, SPLIT, EVEN_K)
    return tl.load(p, mask=mask, other=0.0, cache_modifier=".cg")


@triton.jit
def _operand_addresses(
    p_a, stride_a, o_b, m_b, k0, K, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr, EVEN_K: tl.constexpr
):  # fmt: skip
    """``(pointers, mask)`` of :func:`_operand_chunk`'s chunk."""
    k = _chunk_columns(k0, BLOCK_K, SPLIT)
    if SPLIT > 1:
        k = k[:, None, :]
        if EVEN_K:
            mask = tl.broadcast_to(m_b[None, :, None], (SPLIT, o_b.shape[0], BLOCK_K // SPLIT))
        else:
            mask = m_b[None, :, None] & (k < K)
        return p_a + o_b[None, :, None] * stride_a + k, mask
    else:
        if EVEN_K:
            mask = tl.broadcast_to(m_b[:, None], (o_b.shape[0], BLOCK_K))
        else:
            mask = m_b[:, None] & (k < K)[None, :]
        return p_a + o_b[:, None] * stride_a + k[None, :], mask


@triton.jit
def _weight_chunk(p_w, stride_k, stride_j, o_j, m_j, k0, K, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr):
    """``w[k, j]`` at ``p_w + k*stride_k + j*stride_j`` for the chunk at ``k0`` (zero past ``K``):
    ``[BLOCK_K, BLOCK_H]``, or ``[SPLIT, BLOCK_K / SPLIT, BLOCK_H]``."""
    k = _chunk_columns(k0, BLOCK_K, SPLIT)
    if SPLIT > 1:
        k = k[:, :, None]
        mask = (k < K) & m_j[None, None, :]
        p = p_w + k * stride_k + o_j[None, None, :] * stride_j
    else:
        mask = (k < K)[:, None] & m_j[None, :]
        p = p_w + k[:, None] * stride_k + o_j[None, :] * stride_j
    return tl.load(p, mask=mask, other=0.0)


@triton.jit
def gate_weights(
    p_w,
    stride_k,
    stride_j,
    o_j,
    m_j,
    K,
    RESIDENT: tl.constexpr,
    HELD_CHUNKS: tl.constexpr,
    BLOCK_K: tl.constexpr,
    SPLIT: tl.constexpr,
):
    """One gate's weights for this slice, ``w[k, j]`` at ``p_w + k*stride_k + j*stride_j`` (``k < K``). The
    forward reads ``W_g^T`` (``stride_k=1``), the backward ``W_g`` (``stride_j=1``).

    ``RESIDENT``: ``(p_w, held)``, ``held`` the first ``HELD_CHUNKS`` chunk tiles (zero past ``K``; see
    :func:`_weight_chunk`), loaded once and held for the whole launch (the compiler keeps them in shared
    memory); :func:`products` streams the chunks after them from ``p_w`` every step (where a slice's weights
    do not all fit on chip). Otherwise (one step per launch, where holding buys nothing) just ``p_w``:
    :func:`products` streams every chunk."""
    if RESIDENT:
        held = ()
        for c in tl.static_range(HELD_CHUNKS):
            held = held + (_weight_chunk(p_w, stride_k, stride_j, o_j, m_j, c * BLOCK_K, K, BLOCK_K, SPLIT),)
        return p_w, held
    else:
        return p_w


@triton.jit
def _tie(a, b, zero):
    """``(a | (b & zero), b)``, which is ``(a, b)`` for ``zero == 0``: ``a`` now depends on ``b``, so nothing
    uses ``a`` before ``b`` has arrived, and no instruction that uses ``a`` is scheduled (by Triton or ptxas)
    between the loads of ``a`` and ``b``. ``zero``: an integer tile of ``a``'s element width that is 0 at run time
    and unknown to the compilers (else they fold the ``and`` away). Two integer instructions per 32-bit
    register."""
    if _INTERPRETING:
        return a, b
    else:
        if a.dtype.primitive_bitwidth == 64:
            return tl.inline_asm_elementwise(
                "{ .reg .b64 t; and.b64 t, $3, $4; or.b64 $0, $2, t; mov.b64 $1, $3; }",
                "=l,=l,l,l,l",
                [a, b, zero],
                dtype=(a.dtype, b.dtype),
                is_pure=False,
                pack=1,
            )
        else:
            return tl.inline_asm_elementwise(
                "{ .reg .b32 t; and.b32 t, $3, $4; or.b32 $0, $2, t; mov.b32 $1, $3; }",
                "=r,=r,r,r,r",
                [a, b, zero],
                dtype=(a.dtype, b.dtype),
                is_pure=False,
                pack=32 // a.dtype.primitive_bitwidth,
            )


@triton.jit
def _issued_together(tiles, K):
    """``tiles`` (two or more loaded tiles of one shape), all loaded before any is used: each is tied (:func:`_tie`)
    to the last one, and the last comes out of the tie too, so every load is issued before the first tile is stored
    to shared memory on its way into the ``mma`` layout (one round trip for all). The ties are not pure: the
    compiler would otherwise move those conversions above them, next to each load. ``K > 0`` is the run-time value
    the zero is made of."""
    last = tiles[len(tiles) - 1]
    if last.dtype.primitive_bitwidth == 64:
        zero = tl.zeros(last.shape, dtype=tl.int64) + (K < 0).to(tl.int64)
    elif last.dtype.primitive_bitwidth == 32:
        zero = tl.zeros(last.shape, dtype=tl.int32) + (K < 0).to(tl.int32)
    else:
        zero = tl.zeros(last.shape, dtype=tl.int16) + (K < 0).to(tl.int16)
    tied = ()
    for i in tl.static_range(len(tiles) - 1):
        tile, last = _tie(tiles[i], last, zero)
        tied = tied + (tile,)
    return tied + (last,)


@triton.jit
def dot(a, w, acc, DOT_PRECISION: tl.constexpr):
    """``acc + a @ w`` (batched when 3-D) with ``a`` cast to ``w``'s dtype (tensor cores for bf16/fp16/tf32)."""
    a = a.to(w.dtype)
    if _INTERPRETING:
        if w.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            w = w.to(tl.float32)
    return tl.dot(a, w, acc, input_precision=DOT_PRECISION, out_dtype=acc.dtype)


@triton.jit
def zero_accumulators(
    n: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, SPLIT: tl.constexpr, ACC_DTYPE: tl.constexpr
):
    """``n`` zero accumulators of :func:`products` (``[SPLIT, BLOCK_B, BLOCK_H]`` when the warps split K)."""
    zeros = ()
    for _ in tl.static_range(n):
        if SPLIT > 1:
            zeros = zeros + (tl.zeros((SPLIT, BLOCK_B, BLOCK_H), dtype=ACC_DTYPE),)
        else:
            zeros = zeros + (tl.zeros((BLOCK_B, BLOCK_H), dtype=ACC_DTYPE),)
    return zeros


@triton.jit
def finish_products(accs, SPLIT: tl.constexpr):
    """The tile of each accumulator: with ``SPLIT > 1`` the cross-warp sum of its sub-chunk products, spread over
    the warps. The partials come in the dot's layout, the summed axis the warps'. Summed in it, the compiler's
    reduction runs through shared memory and lane shuffles and leaves the tile whole in every warp, and what follows
    would keep that layout (every warp evaluating every gate). So each accumulator is first passed, flattened,
    through an identity ``tl.gather``, whose result takes its index's layout: element ``e`` of ``[SPLIT * BLOCK_B *
    BLOCK_H]`` in thread ``e`` mod the threads, so an element's ``SPLIT`` partials lie in one thread's registers
    (when the tile's size is a multiple of the threads) and the sum is one shared-memory exchange and adds in
    registers, the tile shared out over all threads. Compiled for sm_90 (Triton 3.6), forward cudnn bf16 B=16 H=768
    with bias, 8 warps: the time loop's instructions 728 -> 376 and CTA barriers 22 -> 13 against summing first and
    gathering the sum (which had already cut every warp's 24 ``ex2`` per step to 3)."""
    if SPLIT > 1:
        BLOCK_B: tl.constexpr = accs[0].shape[1]
        BLOCK_H: tl.constexpr = accs[0].shape[2]
        done = ()
        for g in tl.static_range(len(accs)):
            flat = tl.reshape(accs[g], (SPLIT * BLOCK_B * BLOCK_H,))
            spread = tl.gather(flat, tl.arange(0, SPLIT * BLOCK_B * BLOCK_H), 0)
            tile = tl.sum(tl.reshape(spread, (SPLIT, BLOCK_B * BLOCK_H)), axis=0)
            done = done + (tl.reshape(tile, (BLOCK_B, BLOCK_H)),)
        return done
    else:
        return accs


@triton.jit
def _wave(
    accs, p_as, strides_a, o_b, m_b, K, weights, FIRST: tl.constexpr, COUNT: tl.constexpr, CHUNKS: tl.constexpr,
    SUMMED: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr,
    EVEN_K: tl.constexpr, tagged,
):  # fmt: skip
    """``accs`` plus the products of one wave against held weights, as one round trip: pairs ``FIRST .. FIRST +
    COUNT - 1`` of the (operand, chunk) pairs over the ``CHUNKS`` held chunks (pair ``i``: operand ``i // CHUNKS``,
    chunk ``i % CHUNKS``). Every operand chunk of the wave is loaded before any is used (:func:`_issued_together`,
    where there are several). ``tagged`` (None, or ``(tag, sync_ptr, i_group, spin_limit)``): the operands are
    tagged words (:func:`~tritongru.kernels.grid_sync.wait_for_tag`), every chunk's first poll issued before the
    first wait (the polls are volatile, so they stay in that order)."""
    WORD_BITS: tl.constexpr = 2 * weights[0][1][0].dtype.primitive_bitwidth  # of tagged operands
    tiles = ()
    for u in tl.static_range(COUNT):
        p, mask = _operand_addresses(
            p_as[(FIRST + u) // CHUNKS], strides_a[(FIRST + u) // CHUNKS], o_b, m_b,
            ((FIRST + u) % CHUNKS) * BLOCK_K, K, BLOCK_K, SPLIT, EVEN_K,
        )  # fmt: skip
        if tagged is None:
            tiles = tiles + (tl.load(p, mask=mask, other=0.0, cache_modifier=".cg"),)
        else:
            tiles = tiles + ((p, mask, load_tagged(p, mask, tagged[0], WORD_BITS)),)
    if tagged is not None:
        tag, sync_ptr, i_group, spin_limit = tagged
        value_dtype: tl.constexpr = weights[0][1][0].dtype
        waited = ()
        for u in tl.static_range(COUNT):
            p, mask, words = tiles[u]
            waited = waited + (wait_for_tag(p, mask, words, tag, value_dtype, sync_ptr, i_group, spin_limit),)
        tiles = waited
    elif COUNT > 1:
        tiles = _issued_together(tiles, K)
    for u in tl.static_range(COUNT):
        if SUMMED:
            w = weights[(FIRST + u) // CHUNKS][1][(FIRST + u) % CHUNKS]
            accs = (dot(tiles[u], w, accs[0], DOT_PRECISION),)
        else:
            updated = ()
            for g in tl.static_range(len(weights)):
                updated = updated + (dot(tiles[u], weights[g][1][(FIRST + u) % CHUNKS], accs[g], DOT_PRECISION),)
            accs = updated
    return accs


@triton.jit
def _chunk_loop(
    accs, p_as, strides_a, o_b, m_b, K, p_ws, w_stride_k, w_stride_j, o_j, m_j, K_FIRST: tl.constexpr,
    SUMMED: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT: tl.constexpr,
    EVEN_K: tl.constexpr,
):  # fmt: skip
    """``accs`` plus the products over the K chunks from ``K_FIRST`` on, each chunk's operands and weights (at
    ``p_ws``, one per gate) loaded in the iteration that uses them: a loop the compiler pipelines over the
    launch's ``num_stages`` (with 2, each chunk's loads are copied straight into shared memory, ``cp.async``,
    while the chunk before is multiplied; no register holds them in flight)."""
    for k0 in tl.range(K_FIRST, K, BLOCK_K):
        updated = ()
        for g in tl.static_range(len(p_ws)):
            w = _weight_chunk(p_ws[g], w_stride_k, w_stride_j, o_j, m_j, k0, K, BLOCK_K, SPLIT)
            if SUMMED:
                a = _operand_chunk(p_as[g], strides_a[g], o_b, m_b, k0, K, BLOCK_K, SPLIT, EVEN_K)
                if g == 0:
                    updated = (dot(a, w, accs[0], DOT_PRECISION),)
                else:
                    updated = (dot(a, w, updated[0], DOT_PRECISION),)
            else:
                if g == 0:
                    a = _operand_chunk(p_as[0], strides_a[0], o_b, m_b, k0, K, BLOCK_K, SPLIT, EVEN_K)
                updated = updated + (dot(a, w, accs[g], DOT_PRECISION),)
        accs = updated
    return accs


@triton.jit
def products(
    p_as,
    strides_a,
    o_b,
    m_b,
    K,
    weights,
    w_stride_k,
    w_stride_j,
    o_j,
    m_j,
    ACC_DTYPE: tl.constexpr,
    RESIDENT: tl.constexpr,
    SUMMED: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    K_CHUNKS: tl.constexpr,
    HELD_CHUNKS: tl.constexpr,
    WAVE: tl.constexpr,
    SPLIT: tl.constexpr,
    EVEN_K: tl.constexpr = False,
    init=None,
    FINISH: tl.constexpr = True,
    tagged=None,
):
    """Tile products ``a @ w`` over ``K``: ``a[b, k]`` at ``p_a + b*stride_a + k`` (``b`` in ``o_b``, masked by
    ``m_b``) for each ``p_a`` of the tuple ``p_as`` and its ``stride_a`` of ``strides_a``, ``w`` each gate of the
    tuple ``weights`` (:func:`gate_weights`). One ``p_a`` with several gates: one ``[BLOCK_B, BLOCK_H]``
    product per gate (the forward's r, z, n from one ``h_{t-1}``); with ``SUMMED``, one ``p_a`` per gate and a
    1-tuple of their sum (the backward's ``[dar, daz, dhn] @ W_hh[:, slice]``). Float ``ACC_DTYPE`` accumulators,
    zero at the start or ``init`` (unfinished sums of an earlier call, one per product: the cell's hidden products
    continue its input products, one product over ``[h, x]``); ``FINISH=False`` returns them unfinished
    (:func:`finish_products` ends them).

    Resident weights: the (operand, chunk) pairs of the ``HELD_CHUNKS`` held chunks ``WAVE`` at a time, every
    load of a wave issued before any is used (one round trip per wave: :func:`_wave`), then its unrolled
    products; the chunks past them, whose weights are streamed from L2 every step, in a pipelined loop
    (:func:`_chunk_loop`). Streamed weights (one step per launch): that loop over every chunk. ``tagged``: the
    operands are tagged words, waited for in each wave (see :func:`_wave`; held weights only)."""
    n_acc: tl.constexpr = 1 if SUMMED else len(weights)
    BLOCK_B: tl.constexpr = o_b.shape[0]
    BLOCK_H: tl.constexpr = o_j.shape[0]
    if init is None:
        accs = zero_accumulators(n_acc, BLOCK_B, BLOCK_H, SPLIT, ACC_DTYPE)
    else:
        accs = init
    if RESIDENT:
        held: tl.constexpr = len(p_as) * HELD_CHUNKS
        for first in tl.static_range(0, held, WAVE):
            accs = _wave(
                accs, p_as, strides_a, o_b, m_b, K, weights, first, min(WAVE, held - first), HELD_CHUNKS,
                SUMMED, DOT_PRECISION, BLOCK_K, SPLIT, EVEN_K, tagged,
            )  # fmt: skip
        if HELD_CHUNKS < K_CHUNKS:
            p_ws = ()
            for g in tl.static_range(len(weights)):
                p_ws = p_ws + (weights[g][0],)
            accs = _chunk_loop(
                accs, p_as, strides_a, o_b, m_b, K, p_ws, w_stride_k, w_stride_j, o_j, m_j, HELD_CHUNKS * BLOCK_K,
                SUMMED, DOT_PRECISION, BLOCK_K, SPLIT, EVEN_K,
            )  # fmt: skip
    else:
        accs = _chunk_loop(
            accs, p_as, strides_a, o_b, m_b, K, weights, w_stride_k, w_stride_j, o_j, m_j, 0,
            SUMMED, DOT_PRECISION, BLOCK_K, SPLIT, False,
        )  # fmt: skip
    if FINISH:
        return finish_products(accs, SPLIT)
    else:
        return accs
