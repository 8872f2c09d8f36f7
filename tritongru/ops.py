"""The kernels as ``torch.library`` custom ops (namespace ``tritongru``): the one module that calls
:mod:`tritongru.launchers`.

Five ops, each with a fake (meta) implementation, so ``torch.compile`` and ``torch.export`` see them as opaque
nodes, and a vmap rule; the three forward ops have registered autograd:

- ``tritongru::gru_layer(input [T,B,I], h0 [B,H], weight_ih, weight_hh, bias_ih?, bias_hh?, lengths? [B] int64,
  variant, allow_tf32, store_gates, zoneout=0, zoneout_seed=None, zoneout_stream=0, zoneout_reversed=False) ->
  (hs [T+1,B,H], h_n [B,H], gates [T,B,NG*H] or [0])``: the input projection (one GEMM) and the recurrence.
  ``hs[0] = h0``, ``hs[t+1]`` the state after step ``t``; a sequence's state stops changing after its length.
  ``gates`` (what backward needs) only when ``store_gates``.
- ``tritongru::gru_cell(input [B,I], hx [B,H], weight_ih, weight_hh, bias_ih?, bias_hh?, variant, allow_tf32,
  store_gates, zoneout=0, zoneout_seed=None) -> (h' [B,H], gates [1,B,NG*H] or [0])``: one fused step.
- ``tritongru::gru_backward(grad_output [T,B,H], grad_h_n? [B,H], hs, gates, weight_hh, lengths?, variant,
  allow_tf32, zoneout=0, zoneout_seed=None, zoneout_stream=0, zoneout_reversed=False) -> (dgates_x [T,B,3H],
  dgates_hn [T,B,H] or [0] (classic), dh0 [B,H])``: the ``dh`` recurrence (BPTT) of both; the cell's backward
  is this op with ``T = 1``.
- ``tritongru::layernorm_gru_layer(input, h0, weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight,
  ln_hh_bias, lengths?, variant, allow_tf32, store_gates, zoneout...) -> (hs, h_n, gates, xhat [T,B,3H],
  rstd [T,B,3,heads])`` (the last three ``[0]`` unless ``store_gates``): the LayerNorm-GRU layer, its input side
  normalised in plain PyTorch before the loop (:func:`layernorm_input_side`), its recurrence in
  :mod:`tritongru.kernels.layernorm`. Its cell is this op with ``T = 1``.
- ``tritongru::layernorm_gru_backward(grad_output, grad_h_n?, hs, gates, xhat, rstd, weight_hh, ln_hh_weight,
  lengths?, variant, allow_tf32, zoneout...) -> (dgates_x, dln, da [T,B,3H], dh0 [B,H])``: its ``dh``
  recurrence.

Zoneout (``zoneout`` > 0, :class:`tritongru.zoneout.Zoneout`): with ``zoneout_seed`` the masks of that seed,
drawn inside the kernels (and again by the backward); without, the expectation (evaluation).

``hs``, the gates and their gradients are in the storage dtype (the weights'); ``h_n``, ``h'`` and ``dh0`` in
the compute dtype (float64 for float64 storage, float32 otherwise). Every parameter and input gradient is then
one product over all ``T*B`` rows (:func:`parameter_grads`, plain PyTorch, in the storage dtype, so
``torch.func`` transforms and compilers see through it).

Gradients: first-order gradients always come from the backward kernel and :func:`parameter_grads`, also
under ``create_graph=True`` and ``torch.func`` (whose ``grad``/``vjp``/``jacrev`` always build that graph).
Differentiating those gradients again (double backward, ``gradgradcheck``, nested ``torch.func``) and forward
mode (``jvp``, ``jacfwd``, ``hessian``) go through :mod:`tritongru.reference` (plain PyTorch, differentiable to
any order): correct higher derivatives, at the reference's speed. In eager mode the ops are called through
``autograd.Function``s carrying the same formulas (the form ``torch.func`` accepts); under ``torch.compile`` and
``torch.export`` directly (dynamo traces custom ops natively).

vmap: with the weights shared across the mapped dimension (per-sample gradients), the mapped dimension is
folded into the batch and the kernel runs once; with mapped weights, the op runs once per mapped slice.

Triton's interpreter (CPU) is not thread-safe, so launches are serialised with a lock while it is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tritongru import launchers
from tritongru.environment import interpreting
from tritongru.precisions import compute_dtype
from tritongru.reference import LAYER_NORM_EPS, gru_cell_ref, gru_states_ref, layernorm_gru_states_ref
from tritongru.zoneout import Zoneout, zoneout_loop_masks

_INTERPRETER_LOCK = threading.Lock()


def _serialised() -> contextlib.AbstractContextManager:
    """One launch at a time under Triton's interpreter, which patches module-level state while it runs."""
    return _INTERPRETER_LOCK if interpreting() else contextlib.nullcontext()


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off inside (the caller has already chosen the dtypes); no context at all when it is off."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _contiguous(*tensors: Tensor | None) -> list[Tensor | None]:
    return [t.contiguous() if t is not None else None for t in tensors]


def input_projection(input: Tensor, weight_ih: Tensor, bias_ih: Tensor | None) -> Tensor:
    """``x @ W_ih^T + b_ih`` for every step at once: ``[T, B, I]`` → ``[T, B, 3H]`` (storage dtype).

    It has no time dependency, so it leaves the recurrence as one large GEMM: ``torch.addmm`` (cuBLAS), already
    at the roofline for a dense product, and following torch's own TF32 setting.
    """
    T, B, input_size = input.shape
    flat = input.reshape(T * B, input_size)
    gi = torch.addmm(bias_ih, flat, weight_ih.t()) if bias_ih is not None else flat @ weight_ih.t()
    return gi.reshape(T, B, -1)


# ---------------------------------------------------------------------------------------------------- the ops

_ZONEOUT_SCHEMA = "float zoneout=0., int? zoneout_seed=None"
_STREAM_SCHEMA = "int zoneout_stream=0, bool zoneout_reversed=False"
_LAYER_SCHEMA = (
    "(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
    f"Tensor? lengths, str variant, bool allow_tf32, bool store_gates, {_ZONEOUT_SCHEMA}, {_STREAM_SCHEMA}) "
    "-> (Tensor, Tensor, Tensor)"
)
_CELL_SCHEMA = (
    "(Tensor input, Tensor hx, Tensor weight_ih, Tensor weight_hh, Tensor? bias_ih, Tensor? bias_hh, "
    f"str variant, bool allow_tf32, bool store_gates, {_ZONEOUT_SCHEMA}) -> (Tensor, Tensor)"
)
_BACKWARD_SCHEMA = (
    "(Tensor grad_output, Tensor? grad_h_n, Tensor hs, Tensor gates, Tensor weight_hh, Tensor? lengths, "
    f"str variant, bool allow_tf32, {_ZONEOUT_SCHEMA}, {_STREAM_SCHEMA}) -> (Tensor, Tensor, Tensor)"
)
_NO_ZONEOUT = (0.0, None, 0, False)
"""The four zoneout arguments' defaults: ``zoneout``, ``zoneout_seed``, ``zoneout_stream``, ``zoneout_reversed``."""


def _zoneout(p: float, seed: int | None, stream: int = 0, reversed: bool = False) -> Zoneout | None:
    """The launchers' zoneout of an op call (None when ``p`` is 0)."""
    return Zoneout(p, seed, stream, reversed) if p > 0 else None


@torch.library.custom_op("tritongru::gru_layer", mutates_args=(), schema=_LAYER_SCHEMA)
def gru_layer(
    input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, variant, allow_tf32, store_gates,
    zoneout=0.0, zoneout_seed=None, zoneout_stream=0, zoneout_reversed=False,
):  # fmt: skip
    input, h0, weight_ih, weight_hh, bias_ih, bias_hh = _contiguous(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    with no_autocast(input.device.type):
        gi = input_projection(input, weight_ih, bias_ih)
    with _serialised():
        hs, h_last, gates = launchers.forward_sequence(
            gi,
            h0,
            weight_hh,
            bias_hh,
            variant=variant,
            lengths=lengths,
            store_gates=store_gates,
            allow_tf32=allow_tf32,
            zoneout=_zoneout(zoneout, zoneout_seed, zoneout_stream, zoneout_reversed),
        )
    return hs, h_last, gates if gates is not None else hs.new_empty(0)


@torch.library.custom_op("tritongru::gru_cell", mutates_args=(), schema=_CELL_SCHEMA)
def gru_cell(
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32, store_gates, zoneout=0.0, zoneout_seed=None
):
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh = _contiguous(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    with _serialised():
        h_new, gates = launchers.cell_forward(
            input,
            hx,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            variant=variant,
            store_gates=store_gates,
            allow_tf32=allow_tf32,
            zoneout=_zoneout(zoneout, zoneout_seed),
        )
    return h_new, gates if gates is not None else h_new.new_empty(0)


@torch.library.custom_op("tritongru::gru_backward", mutates_args=(), schema=_BACKWARD_SCHEMA)
def gru_backward(
    grad_output, grad_h_n, hs, gates, weight_hh, lengths, variant, allow_tf32,
    zoneout=0.0, zoneout_seed=None, zoneout_stream=0, zoneout_reversed=False,
):  # fmt: skip
    grad_output, hs, gates, weight_hh = _contiguous(grad_output, hs, gates, weight_hh)
    with _serialised():
        dgates_x, dgates_hn, dh0 = launchers.backward_sequence(
            grad_output,
            grad_h_n,
            hs,
            gates,
            weight_hh,
            variant=variant,
            lengths=lengths,
            allow_tf32=allow_tf32,
            zoneout=_zoneout(zoneout, zoneout_seed, zoneout_stream, zoneout_reversed),
        )
    return dgates_x, dgates_hn if dgates_hn is not None else dgates_x.new_empty(0), dh0


_LAYERNORM_SCHEMA = (
    "(Tensor input, Tensor h0, Tensor weight_ih, Tensor weight_hh, Tensor ln_ih_weight, Tensor ln_ih_bias, "
    "Tensor ln_hh_weight, Tensor ln_hh_bias, Tensor? lengths, str variant, bool allow_tf32, bool store_gates, "
    f"{_ZONEOUT_SCHEMA}, {_STREAM_SCHEMA}) -> (Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_LAYERNORM_BACKWARD_SCHEMA = (
    "(Tensor grad_output, Tensor? grad_h_n, Tensor hs, Tensor gates, Tensor xhat, Tensor rstd, Tensor weight_hh, "
    f"Tensor ln_hh_weight, Tensor? lengths, str variant, bool allow_tf32, {_ZONEOUT_SCHEMA}, {_STREAM_SCHEMA}) "
    "-> (Tensor, Tensor, Tensor, Tensor)"
)


def layernorm_input_side(
    input: Tensor, weight_ih: Tensor, weight_hh: Tensor, ln_ih_weight: Tensor, ln_ih_bias: Tensor
) -> Tensor:
    """``LN^i(x @ W_ih^T)`` for every step at once: ``[T, B, I]`` → ``[T, B, 3H]`` (storage dtype), each gate
    (with heads, each head's units of it; the heads read from ``weight_hh``'s shape) normalised apart. It has no
    time dependency: one GEMM and one ``layer_norm`` pass over all steps, before the recurrence."""
    T, B, input_size = input.shape
    groups = 3 * launchers.num_heads_of(weight_hh)
    pre = input.reshape(T * B, input_size) @ weight_ih.t()
    return _grouped_layer_norm(pre, ln_ih_weight, ln_ih_bias, groups).reshape(T, B, -1)


def _grouped_layer_norm(pre: Tensor, gain: Tensor, bias: Tensor, groups: int) -> Tensor:
    """``pre`` ``[N, G*d]`` normalised over each of its ``groups`` parts (biased variance, eps 1e-5), times
    ``gain`` plus ``bias`` ``[G*d]``."""
    parts = pre.unflatten(-1, (groups, -1))
    normalised = F.layer_norm(parts, parts.shape[-1:], eps=LAYER_NORM_EPS).flatten(-2)
    return torch.addcmul(bias, normalised, gain)


def _layer_norm_grads(pre: Tensor, gain: Tensor, grad: Tensor, groups: int) -> tuple[Tensor, Tensor, Tensor]:
    """The backward of :func:`_grouped_layer_norm`: gradients of ``pre``, ``gain`` and ``bias`` from that of its
    output, ``grad`` ``[N, G*d]``, computed in ``grad``'s dtype."""
    parts = pre.to(grad.dtype).unflatten(-1, (groups, -1))
    centred = parts - parts.mean(-1, keepdim=True)
    rstd = torch.rsqrt(centred.square().mean(-1, keepdim=True) + LAYER_NORM_EPS)
    xhat = centred * rstd
    dxhat = (grad * gain.to(grad.dtype)).unflatten(-1, (groups, -1))
    d_pre = rstd * (dxhat - dxhat.mean(-1, keepdim=True) - xhat * (dxhat * xhat).mean(-1, keepdim=True))
    return d_pre.flatten(-2), (grad * xhat.flatten(-2)).sum(0), grad.sum(0)


@torch.library.custom_op("tritongru::layernorm_gru_layer", mutates_args=(), schema=_LAYERNORM_SCHEMA)
def layernorm_gru_layer(
    input, h0, weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias, lengths, variant,
    allow_tf32, store_gates, zoneout=0.0, zoneout_seed=None, zoneout_stream=0, zoneout_reversed=False,
):  # fmt: skip
    tensors = _contiguous(input, h0, weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias)
    input, h0, weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias = tensors
    with no_autocast(input.device.type):
        gi = layernorm_input_side(input, weight_ih, weight_hh, ln_ih_weight, ln_ih_bias).contiguous()
    with _serialised():
        hs, h_last, gates, xhat, rstd = launchers.layernorm_forward_sequence(
            gi,
            h0,
            weight_hh,
            ln_hh_weight,
            ln_hh_bias,
            variant=variant,
            lengths=lengths,
            store_gates=store_gates,
            allow_tf32=allow_tf32,
            zoneout=_zoneout(zoneout, zoneout_seed, zoneout_stream, zoneout_reversed),
        )
    if not store_gates:
        gates, xhat, rstd = hs.new_empty(0), h_last.new_empty(0), h_last.new_empty(0)
    return hs, h_last, gates, xhat, rstd


@torch.library.custom_op("tritongru::layernorm_gru_backward", mutates_args=(), schema=_LAYERNORM_BACKWARD_SCHEMA)
def layernorm_gru_backward(
    grad_output, grad_h_n, hs, gates, xhat, rstd, weight_hh, ln_hh_weight, lengths, variant, allow_tf32,
    zoneout=0.0, zoneout_seed=None, zoneout_stream=0, zoneout_reversed=False,
):  # fmt: skip
    grad_output, hs, gates, xhat, rstd, weight_hh, ln_hh_weight = _contiguous(
        grad_output, hs, gates, xhat, rstd, weight_hh, ln_hh_weight
    )
    with _serialised():
        return launchers.layernorm_backward_sequence(
            grad_output,
            grad_h_n,
            hs,
            gates,
            xhat,
            rstd,
            weight_hh,
            ln_hh_weight,
            variant=variant,
            lengths=lengths,
            allow_tf32=allow_tf32,
            zoneout=_zoneout(zoneout, zoneout_seed, zoneout_stream, zoneout_reversed),
        )


# ------------------------------------------------------------------------------------------ fake implementations


def _gates_like(ref: Tensor, steps: int, batch: int, hidden: int, variant: str, store: bool, dtype) -> Tensor:
    shape = (steps, batch, launchers.SAVED_GATES[variant] * hidden) if store else (0,)
    return ref.new_empty(shape, dtype=dtype)


@gru_layer.register_fake
def _(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, variant, allow_tf32, store_gates, *zoneout):
    T, B, H = input.shape[0], input.shape[1], weight_hh.shape[0] // 3
    storage = weight_hh.dtype
    hs = input.new_empty((T + 1, B, H), dtype=storage)
    h_last = input.new_empty((B, H), dtype=compute_dtype(storage))
    return hs, h_last, _gates_like(input, T, B, H, variant, store_gates, storage)


@gru_cell.register_fake
def _(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32, store_gates, *zoneout):
    B, H = input.shape[0], weight_hh.shape[0] // 3
    storage = weight_hh.dtype
    h_new = input.new_empty((B, H), dtype=compute_dtype(storage))
    return h_new, _gates_like(input, 1, B, H, variant, store_gates, storage)


@gru_backward.register_fake
def _(grad_output, grad_h_n, hs, gates, weight_hh, lengths, variant, allow_tf32, *zoneout):
    T, B, H = grad_output.shape
    storage = weight_hh.dtype
    dgates_hn = hs.new_empty((T, B, H) if variant == "cudnn" else (0,), dtype=storage)
    dh0 = hs.new_empty((B, H), dtype=compute_dtype(storage))
    return hs.new_empty((T, B, 3 * H), dtype=storage), dgates_hn, dh0


@layernorm_gru_layer.register_fake
def _(input, h0, weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias, lengths, variant,
      allow_tf32, store_gates, *zoneout):  # fmt: skip
    T, B, H = input.shape[0], input.shape[1], weight_hh.shape[0] // 3
    storage = weight_hh.dtype
    compute = compute_dtype(storage)
    hs = input.new_empty((T + 1, B, H), dtype=storage)
    h_last = input.new_empty((B, H), dtype=compute)
    xhat = input.new_empty((T, B, 3 * H) if store_gates else (0,), dtype=compute)
    rstd = input.new_empty((T, B, 3, launchers.num_heads_of(weight_hh)) if store_gates else (0,), dtype=compute)
    return hs, h_last, _gates_like(input, T, B, H, variant, store_gates, storage), xhat, rstd


@layernorm_gru_backward.register_fake
def _(grad_output, grad_h_n, hs, gates, xhat, rstd, weight_hh, ln_hh_weight, lengths, variant, allow_tf32, *zoneout):
    T, B, H = grad_output.shape
    storage = weight_hh.dtype
    compute = compute_dtype(storage)
    grads = hs.new_empty((T, B, 3 * H), dtype=storage)
    return (
        grads,
        hs.new_empty((T, B, 3 * H), dtype=compute),
        torch.empty_like(grads),
        hs.new_empty((B, H), dtype=compute),
    )


# --------------------------------------------------------------------------------------------------- autograd


def parameter_grads(
    needs: Sequence[bool],
    input: Tensor,
    weight_ih: Tensor,
    hs_prev: Tensor,
    gates: Tensor,
    dgates_x: Tensor,
    dgates_hn: Tensor | None,
    has_bias: bool,
    head_dim: int | None = None,
) -> tuple[Tensor | None, ...]:
    """Gradients of ``(input, weight_ih, weight_hh, bias_ih, bias_hh)`` as products over all ``N = T*B`` rows.

    ``input`` ``[N, I]``, ``hs_prev`` ``[N, H]`` (``h_{t-1}`` of every row), ``gates`` ``[N, NG*H]``,
    ``dgates_x`` ``[N, 3H]``, ``dgates_hn`` ``[N, H]`` or None (classic). ``needs``: which of the five are wanted
    (the rest come back None). The products run in ``dgates_x``'s dtype. ``W_hn``'s input is ``h`` for cudnn and
    ``R * h`` for classic. ``head_dim``: a multi-head GRU's units per head, whose ``weight_hh`` gradient is that
    of its diagonal blocks, ``[3H, head_dim]`` (None: dense, ``[3H, H]``).
    """
    need_input, need_w_ih, need_w_hh, need_b_ih, need_b_hh = needs
    dtype = dgates_x.dtype
    H = hs_prev.shape[1]
    hs_prev = hs_prev.to(dtype)
    grad_input = (dgates_x @ weight_ih.to(dtype)).to(input.dtype) if need_input else None
    grad_w_ih = (dgates_x.t() @ input.to(dtype)).to(weight_ih.dtype) if need_w_ih else None
    grad_w_hh = grad_b_hh = None
    if need_w_hh or (need_b_hh and has_bias):
        d_gates_rz = dgates_x[:, : 2 * H]
        if dgates_hn is not None:
            d_hn, n_input = dgates_hn, hs_prev
        else:
            d_hn, n_input = dgates_x[:, 2 * H :], gates[:, :H].to(dtype) * hs_prev
        if need_w_hh:
            grad_w_hh = torch.cat(
                [_recurrent_weight_grad(d_gates_rz, hs_prev, head_dim), _recurrent_weight_grad(d_hn, n_input, head_dim)]
            ).to(weight_ih.dtype)
        if need_b_hh and has_bias:
            grad_b_hh = torch.cat([d_gates_rz.sum(0), d_hn.sum(0)]).to(weight_ih.dtype)
    grad_b_ih = dgates_x.sum(0).to(weight_ih.dtype) if need_b_ih and has_bias else None
    return grad_input, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


def _recurrent_weight_grad(d_gates: Tensor, inputs: Tensor, head_dim: int | None) -> Tensor:
    """``d_gates^T @ inputs`` (``[N, G*H]``, ``[N, H]`` → ``[G*H, H]``), or with heads only its diagonal blocks,
    ``[G*H, head_dim]``: row ``g*H + h*d + u`` against head ``h``'s inputs, one batched product per gate."""
    if head_dim is None:
        return d_gates.t() @ inputs
    heads = inputs.shape[1] // head_dim
    per_head = d_gates.reshape(-1, d_gates.shape[1] // inputs.shape[1], heads, head_dim)
    blocks = torch.einsum("ngku,nkv->gkuv", per_head, inputs.reshape(-1, heads, head_dim))
    return blocks.reshape(-1, head_dim)


@dataclass(frozen=True)
class _Call:
    """What differentiating one op call needs besides tensors: which op (``cell``), its options, the dtypes of
    its differentiable outputs (``(hs, h_n)`` of the layer, ``(h',)`` of the cell), its zoneout (the op's four
    zoneout arguments; the cell's stream is 0, forward), and which of its six tensor inputs want a gradient
    (``needs``)."""

    cell: bool
    variant: str
    allow_tf32: bool
    store_gates: bool
    dtypes: tuple[torch.dtype, ...]
    zoneout: tuple = _NO_ZONEOUT
    needs: tuple[bool, ...] = ()
    layernorm: bool = False

    @property
    def outputs(self) -> int:
        """How many differentiable outputs the op has."""
        return len(self.dtypes)

    @property
    def saved(self) -> int:
        """How many of the op's outputs its gradients read: ``(outputs, gates)``, or the LayerNorm-GRU's
        ``(hs, gates, xhat, rstd)``."""
        return 4 if self.layernorm else 2


def _reference(call: _Call, lengths: Tensor | None) -> Callable[..., tuple[Tensor, ...]]:
    """The op's differentiable outputs recomputed in plain PyTorch from its tensor inputs (six, a missing bias
    as None; the LayerNorm-GRU layer's eight): ``(hs, h_n)`` of a layer or ``(h',)`` of the cell, in the op's
    dtypes."""
    p, seed, stream, reversed = call.zoneout
    if call.cell:
        training = seed is not None
        return lambda *args: (
            gru_cell_ref(
                *args,
                variant=call.variant,
                zoneout=p,
                zoneout_seed=seed,
                training=training,
                num_heads=launchers.num_heads_of(args[3]),
            ).to(call.dtypes[0]),
        )

    def states(*args: Tensor | None) -> tuple[Tensor, Tensor]:
        input, h0 = args[0], args[1]
        keep = None
        if p > 0 and seed is not None:
            T, B, H = input.shape[0], h0.shape[0], h0.shape[1]
            keep = zoneout_loop_masks(Zoneout(p, seed, stream, reversed), T, B, H, lengths, input.device)
        hs = (layernorm_gru_states_ref if call.layernorm else gru_states_ref)(
            *args,
            variant=call.variant,
            lengths=lengths,
            zoneout=p,
            zoneout_keep=keep,
            num_heads=launchers.num_heads_of(args[3]),
        )
        return hs.to(call.dtypes[0]), hs[-1].to(call.dtypes[1])

    return states


def _over(fn: Callable[..., tuple[Tensor, ...]], args: Sequence[Tensor | None], wanted: Sequence[int]):
    """``fn`` as a function of ``args[i] for i in wanted`` alone, the others fixed."""

    def of_wanted(*values: Tensor) -> tuple[Tensor, ...]:
        full = list(args)
        for i, value in zip(wanted, values, strict=True):
            full[i] = value
        return fn(*full)

    return of_wanted


def _reference_vjp(
    fn: Callable[..., tuple[Tensor, ...]],
    args: Sequence[Tensor | None],
    needs: Sequence[bool],
    cotangents: Sequence[Tensor | None],
) -> list[Tensor | None]:
    """Gradients of ``fn(*args)`` (plain PyTorch) against ``cotangents`` (None: zero) for the ``args`` in
    ``needs`` (None for the others), as a graph that can itself be differentiated."""
    wanted = [i for i, (arg, need) in enumerate(zip(args, needs, strict=True)) if need and arg is not None]
    outputs, vjp_fn = torch.func.vjp(_over(fn, args, wanted), *(args[i] for i in wanted))
    cotangents = tuple(c if c is not None else torch.zeros_like(o) for c, o in zip(cotangents, outputs, strict=True))
    grads: list[Tensor | None] = [None] * len(args)
    for i, grad in zip(wanted, vjp_fn(cotangents), strict=True):
        grads[i] = grad
    return grads


def _reference_jvp(
    fn: Callable[..., tuple[Tensor, ...]], args: Sequence[Tensor | None], tangents: Sequence[Tensor | None]
) -> tuple[Tensor, ...]:
    """Forward-mode derivative of ``fn(*args)`` (plain PyTorch) along ``tangents`` (None: zero), by reverse mode
    alone (forward mode cannot nest in torch 2.13): the vector-Jacobian product is linear in the cotangent
    ``u``, so ``J v`` is the gradient of ``<J^T u, v>`` with respect to ``u``."""
    wanted = [i for i, arg in enumerate(args) if arg is not None]
    present = tuple(args[i] for i in wanted)
    directions = [tangents[i] if tangents[i] is not None else torch.zeros_like(args[i]) for i in wanted]
    fn = _over(fn, args, wanted)

    def pulled_back(*cotangents: Tensor) -> Tensor:
        _, vjp_fn = torch.func.vjp(fn, *present)
        return sum((grad * direction).sum() for grad, direction in zip(vjp_fn(cotangents), directions, strict=True))

    zeros = tuple(torch.zeros_like(out) for out in fn(*present))
    return torch.func.grad(pulled_back, argnums=tuple(range(len(zeros))))(*zeros)


def _kernel_grads(call: _Call, cotangents, primals, lengths, outputs, gates) -> list[Tensor | None]:
    """First-order gradients of the six tensor inputs by the backward kernel and :func:`parameter_grads`
    (None where not needed). ``outputs``: the op's ``hs`` (layer) or ``h'`` (cell) as it returned them."""
    input, h0, weight_ih, weight_hh, bias_ih, _ = primals
    needs = call.needs
    with no_autocast(input.device.type):
        if not call.store_gates:  # the op was called without them: run it again, keeping them this time
            if call.cell:
                outputs, gates = gru_cell(*primals, call.variant, call.allow_tf32, True, *call.zoneout[:2])
            else:
                outputs, _, gates = gru_layer(*primals, lengths, call.variant, call.allow_tf32, True, *call.zoneout)
        if call.cell:
            (grad_h_new,) = cotangents
            # hs in the storage dtype, as the layer's: the backward kernel compiles the same specialisation
            hs = torch.stack([h0.to(gates.dtype), outputs.to(gates.dtype)])
            grad_output, grad_h_n, grad_h0_direct = grad_h_new[None], None, None
        else:
            grad_hs, grad_h_n = cotangents
            hs, grad_output, grad_h0_direct = outputs, grad_hs[1:], grad_hs[0]
        dgates_x, dgates_hn, dh0 = gru_backward(
            grad_output, grad_h_n, hs, gates, weight_hh, lengths, call.variant, call.allow_tf32, *call.zoneout
        )
        T, B, H = gates.shape[0], gates.shape[1], hs.shape[2]
        n = T * B
        grad_input, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = parameter_grads(
            (needs[0], *needs[2:]),
            input.reshape(n, -1),
            weight_ih,
            hs[:T].reshape(n, H),
            gates.reshape(n, -1),
            dgates_x.reshape(n, 3 * H),
            dgates_hn.reshape(n, H) if call.variant == "cudnn" else None,
            bias_ih is not None,
            launchers.head_dim_of(weight_hh),
        )
        if needs[1] and grad_h0_direct is not None:
            dh0 = dh0 + grad_h0_direct
        grad_h0 = dh0.to(h0.dtype) if needs[1] else None
    if grad_input is not None:
        grad_input = grad_input.reshape(input.shape)
    return [grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh]


def _layernorm_kernel_grads(call: _Call, cotangents, primals, lengths, hs, gates, xhat, rstd) -> list[Tensor | None]:
    """First-order gradients of the LayerNorm-GRU layer's eight tensor inputs (None where not needed): the
    recurrence's by the backward kernel, the rest as products over all ``T*B`` rows (plain PyTorch): ``W_hh``'s
    from the raw products' gradients ``da``, the recurrent gains' and biases' from ``dln`` and ``xhat``, the
    input side's through its normalisation (:func:`_layer_norm_grads`)."""
    input, h0, weight_ih, weight_hh, ln_ih_weight, _, ln_hh_weight, _ = primals
    needs = call.needs
    with no_autocast(input.device.type):
        if not call.store_gates:  # the op was called without them: run it again, keeping them this time
            hs, _, gates, xhat, rstd = layernorm_gru_layer(
                *primals, lengths, call.variant, call.allow_tf32, True, *call.zoneout
            )
        grad_hs, grad_h_n = cotangents
        dgates_x, dln, da, dh0 = layernorm_gru_backward(
            grad_hs[1:], grad_h_n, hs, gates, xhat, rstd, weight_hh, ln_hh_weight, lengths, call.variant,
            call.allow_tf32, *call.zoneout,
        )  # fmt: skip
        T, B, H = gates.shape[0], gates.shape[1], hs.shape[2]
        n, storage = T * B, weight_hh.dtype
        grad_w_hh = grad_ln_hh_weight = grad_ln_hh_bias = None
        if needs[3]:
            da = da.reshape(n, 3 * H)
            hs_prev = hs[:T].reshape(n, H).to(da.dtype)
            n_input = hs_prev if call.variant == "cudnn" else gates.reshape(n, -1)[:, :H].to(da.dtype) * hs_prev
            head_dim = launchers.head_dim_of(weight_hh)
            grad_w_hh = torch.cat(
                [
                    _recurrent_weight_grad(da[:, : 2 * H], hs_prev, head_dim),
                    _recurrent_weight_grad(da[:, 2 * H :], n_input, head_dim),
                ]
            ).to(storage)
        dln = dln.reshape(n, 3 * H)
        if needs[6]:
            grad_ln_hh_weight = (dln * xhat.reshape(n, 3 * H)).sum(0).to(storage)
        if needs[7]:
            grad_ln_hh_bias = dln.sum(0).to(storage)
        grad_input = grad_w_ih = grad_ln_ih_weight = grad_ln_ih_bias = None
        if needs[0] or needs[2] or needs[4] or needs[5]:
            flat = input.reshape(n, -1)
            groups = 3 * launchers.num_heads_of(weight_hh)
            d_pre, grad_ln_ih_weight, grad_ln_ih_bias = _layer_norm_grads(
                flat @ weight_ih.t(), ln_ih_weight, dgates_x.reshape(n, 3 * H).to(dln.dtype), groups
            )
            d_pre = d_pre.to(storage)
            grad_input = (d_pre @ weight_ih).reshape(input.shape) if needs[0] else None
            grad_w_ih = d_pre.t() @ flat if needs[2] else None
            grad_ln_ih_weight = grad_ln_ih_weight.to(storage) if needs[4] else None
            grad_ln_ih_bias = grad_ln_ih_bias.to(storage) if needs[5] else None
        grad_h0 = (dh0 + grad_hs[0]).to(h0.dtype) if needs[1] else None
    return [
        grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_ln_ih_weight, grad_ln_ih_bias, grad_ln_hh_weight,
        grad_ln_hh_bias,
    ]  # fmt: skip


class _Grads(torch.autograd.Function):
    """First-order gradients of either op as a function of its cotangents and tensor inputs: computed by the
    backward kernel; when they are differentiated in turn (double backward, nested ``torch.func``), through the
    reference, to any order. ``apply(call, lengths, *saved, *cotangents, *primals)``, ``saved`` the
    ``call.saved`` outputs of the op its gradients read."""

    generate_vmap_rule = True

    @staticmethod
    def forward(call, lengths, *tensors):
        saved, tensors = tensors[: call.saved], tensors[call.saved :]
        cotangents, primals = tensors[: call.outputs], tensors[call.outputs :]
        if call.layernorm:
            return tuple(_layernorm_kernel_grads(call, cotangents, primals, lengths, *saved))
        return tuple(_kernel_grads(call, cotangents, primals, lengths, *saved))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        call, lengths, *tensors = inputs
        ctx.call = call
        tensors = tensors[call.saved :]
        ctx.save_for_backward(lengths, *tensors)
        ctx.save_for_forward(lengths, *tensors)

    @staticmethod
    def _reference_grads(call: _Call, lengths: Tensor | None) -> Callable[..., tuple[Tensor, ...]]:
        """``(*cotangents, *primals) -> the gradients this op returned (the not-None ones)``, in plain PyTorch."""

        def grads(*tensors: Tensor | None) -> tuple[Tensor, ...]:
            cotangents, primals = tensors[: call.outputs], tensors[call.outputs :]
            computed = _reference_vjp(_reference(call, lengths), primals, call.needs, cotangents)
            return tuple(g for g in computed if g is not None)

        return grads

    @staticmethod
    def backward(ctx, *grad_grads):
        lengths, *tensors = ctx.saved_tensors
        fn = _Grads._reference_grads(ctx.call, lengths)
        returned = [g for g, need in zip(grad_grads, ctx.call.needs, strict=True) if need]
        first = 2 + ctx.call.saved
        grads = _reference_vjp(fn, tensors, ctx.needs_input_grad[first:], returned)
        return (*[None] * first, *grads)

    @staticmethod
    def jvp(ctx, *tangents):
        lengths, *tensors = ctx.saved_tensors
        first = 2 + ctx.call.saved
        out_tangents = iter(_reference_jvp(_Grads._reference_grads(ctx.call, lengths), tensors, tangents[first:]))
        return tuple(next(out_tangents) if need else None for need in ctx.call.needs)


def _with_defaults(zoneout: Sequence) -> tuple:
    """An op call's four zoneout arguments, the defaults filling those it was not given (the cell has two)."""
    return (*zoneout, *_NO_ZONEOUT[len(zoneout) :])


def _setup_layer(ctx, inputs, output) -> None:
    input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, variant, allow_tf32, store_gates, *zoneout = inputs
    hs, h_n, gates = output
    ctx.save_for_backward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, hs, gates)
    ctx.save_for_forward(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths)
    ctx.call = _Call(False, variant, allow_tf32, store_gates, (hs.dtype, h_n.dtype), _with_defaults(zoneout))
    ctx.mark_non_differentiable(gates)


def _layer_backward(ctx, grad_hs, grad_h_n, _):
    *primals, lengths, hs, gates = ctx.saved_tensors
    call = dataclasses.replace(ctx.call, needs=tuple(ctx.needs_input_grad[:6]))
    grads = _Grads.apply(call, lengths, hs, gates, grad_hs, grad_h_n, *primals)
    return (*grads, *[None] * (len(ctx.needs_input_grad) - 6))


def _setup_cell(ctx, inputs, output) -> None:
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32, store_gates, *zoneout = inputs
    h_new, gates = output
    ctx.save_for_backward(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, h_new, gates)
    ctx.save_for_forward(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, None)
    ctx.call = _Call(True, variant, allow_tf32, store_gates, (h_new.dtype,), _with_defaults(zoneout))
    ctx.mark_non_differentiable(gates)


def _cell_backward(ctx, grad_h_new, _):
    *primals, h_new, gates = ctx.saved_tensors
    call = dataclasses.replace(ctx.call, needs=tuple(ctx.needs_input_grad[:6]))
    grads = _Grads.apply(call, None, h_new, gates, grad_h_new, *primals)
    return (*grads, *[None] * (len(ctx.needs_input_grad) - 6))


def _jvp(ctx, *tangents: Tensor | None) -> tuple[Tensor | None, ...]:
    """Forward-mode derivative (``torch.func.jvp``/``jacfwd``/``hessian``, ``torch.autograd.forward_ad``) of
    either op, through the reference: no kernel computes tangents. None for the gates."""
    *primals, lengths = ctx.saved_tensors
    return (*_reference_jvp(_reference(ctx.call, lengths), primals, tangents[:6]), None)


def _setup_layernorm(ctx, inputs, output) -> None:
    *primals, lengths, variant, allow_tf32, store_gates = inputs[:12]
    hs, h_n, gates, xhat, rstd = output
    ctx.save_for_backward(*primals, lengths, hs, gates, xhat, rstd)
    ctx.save_for_forward(*primals, lengths)
    zoneout = _with_defaults(inputs[12:])
    ctx.call = _Call(False, variant, allow_tf32, store_gates, (hs.dtype, h_n.dtype), zoneout, layernorm=True)
    ctx.mark_non_differentiable(gates, xhat, rstd)


def _layernorm_backward(ctx, grad_hs, grad_h_n, *_):
    *primals, lengths, hs, gates, xhat, rstd = ctx.saved_tensors
    call = dataclasses.replace(ctx.call, needs=tuple(ctx.needs_input_grad[:8]))
    grads = _Grads.apply(call, lengths, hs, gates, xhat, rstd, grad_hs, grad_h_n, *primals)
    return (*grads, *[None] * (len(ctx.needs_input_grad) - 8))


def _layernorm_jvp(ctx, *tangents: Tensor | None) -> tuple[Tensor | None, ...]:
    """Forward-mode derivative of the LayerNorm-GRU layer, through the reference (as :func:`_jvp`)."""
    *primals, lengths = ctx.saved_tensors
    return (*_reference_jvp(_reference(ctx.call, lengths), primals, tangents[:8]), None, None, None)


gru_layer.register_autograd(_layer_backward, setup_context=_setup_layer)
gru_cell.register_autograd(_cell_backward, setup_context=_setup_cell)
layernorm_gru_layer.register_autograd(_layernorm_backward, setup_context=_setup_layernorm)


class _LayerFunction(torch.autograd.Function):
    """``gru_layer`` with its autograd formula, as an ``autograd.Function`` with ``setup_context``: the form
    ``torch.func`` transforms accept (they refuse a custom op's own autograd in torch 2.13), plus forward mode
    through the reference. Eager calls go through it; under ``torch.compile``/``torch.export`` the op is called
    directly (dynamo refuses an ``autograd.Function`` with a custom ``jvp``)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return gru_layer(*args)

    setup_context = staticmethod(_setup_layer)
    backward = staticmethod(_layer_backward)
    jvp = staticmethod(_jvp)


class _CellFunction(torch.autograd.Function):
    """``gru_cell`` with its autograd formula, for ``torch.func`` (see :class:`_LayerFunction`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return gru_cell(*args)

    setup_context = staticmethod(_setup_cell)
    backward = staticmethod(_cell_backward)
    jvp = staticmethod(_jvp)


class _LayerNormFunction(torch.autograd.Function):
    """``layernorm_gru_layer`` with its autograd formula, for ``torch.func`` (see :class:`_LayerFunction`)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*args):
        return layernorm_gru_layer(*args)

    setup_context = staticmethod(_setup_layernorm)
    backward = staticmethod(_layernorm_backward)
    jvp = staticmethod(_layernorm_jvp)


# ------------------------------------------------------------------------------------------------------- vmap


def _fold(arg, in_dim: int | None, batch_dim: int | None, size: int):
    """Move the mapped dimension of ``arg`` into its batch dimension (broadcast first if ``arg`` is unmapped)."""
    if batch_dim is None or arg is None:
        return arg
    if in_dim is None:
        arg = arg.unsqueeze(batch_dim).expand(*arg.shape[:batch_dim], size, *arg.shape[batch_dim:])
    else:
        arg = arg.movedim(in_dim, batch_dim)
    return arg.flatten(batch_dim, batch_dim + 1)


def _register_vmap(op, batch_dims: tuple[int | None, ...], out_batch_dims: tuple[int, ...]) -> None:
    """vmap ``op``: ``batch_dims[i]`` is the batch dimension of argument ``i`` (None: shared across the batch,
    like the weights, or not a tensor); ``out_batch_dims`` the same for the outputs. An empty output (a
    placeholder for gates not stored) stays unmapped."""

    def rule(info, in_dims, *args):
        size = info.batch_size
        arg_dims = batch_dims[: len(args)]  # arguments left at their schema defaults are not passed
        if any(d is not None and b is None for d, b in zip(in_dims, arg_dims, strict=True)):
            # mapped weights: one launch per slice
            per_slice = [
                op(*(a.select(d, v) if d is not None else a for a, d in zip(args, in_dims, strict=True)))
                for v in range(size)
            ]
            return tuple(torch.stack(outs) for outs in zip(*per_slice, strict=True)), (0,) * len(out_batch_dims)
        outputs = op(*(_fold(a, d, b, size) for a, d, b in zip(args, in_dims, arg_dims, strict=True)))
        results, dims = [], []
        for out, b in zip(outputs, out_batch_dims, strict=True):
            if out.dim() == 1 and out.numel() == 0:
                results.append(out)
                dims.append(None)
            else:
                results.append(out.unflatten(b, (size, -1)))
                dims.append(b)
        return tuple(results), tuple(dims)

    torch.library.register_vmap(op, rule)


_register_vmap(gru_layer, (1, 0, None, None, None, None, 0, *[None] * 7), (1, 0, 1))
_register_vmap(gru_cell, (0, 0, *[None] * 9), (0, 1))
_register_vmap(gru_backward, (1, 0, 1, 1, None, 0, *[None] * 6), (1, 1, 0))
_register_vmap(layernorm_gru_layer, (1, 0, *[None] * 6, 0, *[None] * 7), (1, 0, 1, 1, 1))
_register_vmap(layernorm_gru_backward, (1, 0, 1, 1, 1, 1, None, None, 0, *[None] * 6), (1, 1, 1, 0))


# ----------------------------------------------------------------------------------- what functional.py calls


def _refuse_jit_trace() -> None:
    if torch.jit.is_tracing():
        raise RuntimeError(
            "torch.jit.trace is not supported by tritongru: a trace would freeze its Python input checks and "
            "autograd; use torch.export.export to save a program, or torch.compile"
        )


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def sequence_mask(lengths: Tensor, steps: int) -> Tensor:
    """``[T, B, 1]`` bool, True where step ``t`` is inside sequence ``b`` (``t < lengths[b]``)."""
    return (torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :])[..., None]


def layer(
    input: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    lengths: Tensor | None,
    variant: str,
    allow_tf32: bool,
    zoneout: Zoneout | None = None,
) -> tuple[Tensor, Tensor]:
    """One checked layer and direction: (``output`` ``[T, B, H]``, zero past each length; ``h_n`` ``[B, H]``),
    both in ``input``'s dtype. Gates are stored for backward only when a gradient can be asked for."""
    weights = (weight_ih, weight_hh, bias_ih, bias_hh)
    return _run_layer(gru_layer, _LayerFunction, input, h0, weights, lengths, variant, allow_tf32, zoneout)


def layernorm_layer(
    input: Tensor,
    h0: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    ln_ih_weight: Tensor,
    ln_ih_bias: Tensor,
    ln_hh_weight: Tensor,
    ln_hh_bias: Tensor,
    lengths: Tensor | None,
    variant: str,
    allow_tf32: bool,
    zoneout: Zoneout | None = None,
) -> tuple[Tensor, Tensor]:
    """One checked LayerNorm-GRU layer and direction, as :func:`layer`."""
    weights = (weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias)
    return _run_layer(
        layernorm_gru_layer, _LayerNormFunction, input, h0, weights, lengths, variant, allow_tf32, zoneout
    )


def _run_layer(op, function, input, h0, weights, lengths, variant, allow_tf32, zoneout) -> tuple[Tensor, Tensor]:
    """:func:`layer` and :func:`layernorm_layer` through ``op`` (under ``torch.compile``) or its
    ``autograd.Function`` (eagerly); ``weights``: the op's tensors after ``h0``."""
    _refuse_jit_trace()
    store = _needs_grad(input, h0, *weights)
    apply = op if torch.compiler.is_compiling() else function.apply
    zoneout_args = _NO_ZONEOUT if zoneout is None else tuple(zoneout)
    hs, h_n, *_ = apply(input, h0, *weights, lengths, variant, allow_tf32, store, *zoneout_args)
    output = hs[1:]
    if lengths is not None:
        output = torch.where(sequence_mask(lengths, output.shape[0]), output, 0)
    return output.to(input.dtype), h_n.to(input.dtype)


def cell(
    input: Tensor,
    hx: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor | None,
    bias_hh: Tensor | None,
    variant: str,
    allow_tf32: bool,
    zoneout: Zoneout | None = None,
) -> Tensor:
    """One checked step: ``h'`` ``[B, H]`` in ``input``'s dtype (``zoneout``'s stream and direction unused)."""
    _refuse_jit_trace()
    store = _needs_grad(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    apply = gru_cell if torch.compiler.is_compiling() else _CellFunction.apply
    zoneout_args = _NO_ZONEOUT[:2] if zoneout is None else tuple(zoneout)[:2]
    h_new, _ = apply(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32, store, *zoneout_args)
    return h_new.to(input.dtype)
