"""Plain-PyTorch reference of both GRU formulations and their variants: the ground truth that tests, benchmarks
and users share.

Same signatures as the fast path in :mod:`tritongru.functional` (``gru_ref`` ~ ``gru``, ``gru_layer_ref`` ~
``gru_layer``, ``gru_cell_ref`` ~ ``gru_cell``), written straight from the equations (gate order r, z, n;
``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H]``):

cudnn (reset after the hidden product, what ``torch.nn.GRU`` computes)::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

classic (reset before the hidden product, the notes' "fully gated unit")::

    R = σ(W_ir x + b_ir + W_hr h + b_hr)        Z = σ(W_iz x + b_iz + W_hz h + b_hz)
    H~ = tanh(W_in x + b_in + W_hn (R * h) + b_hn)
    h' = Z * H~ + (1 - Z) * h

Variants, each composing with the others, with both formulations, ``h0=None``, lengths, layers, directions:

- **multi-head** (``num_heads=k``): the recurrent weight is block-diagonal, head ``h`` owning units
  ``[h*d, (h+1)*d)``, ``d = H // k``; ``weight_hh`` ``[3H, d]`` holds the blocks, row ``g*H + h*d + u`` (gate
  ``g``, head ``h``, unit ``u``) the ``d`` entries of that row within its head (:func:`block_diagonal_weight_hh`
  gives the dense ``[3H, H]``). Every ``W_h·`` product above, ``W_hn (R * h)`` included, is per head.
- **zoneout** (``zoneout=p``; Krueger et al., 2017): training ``h_t = m_t * h_{t-1} + (1 - m_t) * h'_t`` with
  ``m_t ~ Bernoulli(p)`` per batch row, unit and step, from an explicit bool ``zoneout_mask`` or regenerated
  from ``zoneout_seed`` exactly as the kernels draw it (:mod:`tritongru.zoneout`); evaluation the expectation
  ``h_t = p * h_{t-1} + (1 - p) * h'_t``. Outputs and ``h_n`` are the zoned-out states.
- **LayerNorm-GRU** (``layernorm_gru_*_ref``; Ba et al., 2016): the input-side and the recurrent-side
  pre-activation of each gate normalised separately (:func:`layer_norm_ref`), each with its own gain and bias,
  no ``bias_ih``/``bias_hh``::

    cudnn:   r = σ(LN_r^i(W_ir x) + LN_r^h(W_hr h))     z = σ(LN_z^i(W_iz x) + LN_z^h(W_hz h))
             n = tanh(LN_n^i(W_in x) + r * LN_n^h(W_hn h))              h' = (1 - z) * n + z * h
    classic: R, Z as r, z    H~ = tanh(LN_n^i(W_in x) + LN_n^h(W_hn (R * h)))    h' = Z * H~ + (1 - Z) * h

Differentiable to any order with autograd (tritongru's double backward recomputes through it), traceable by
``torch.compile``, any device and dtype, no host synchronisation. ``allow_tf32`` is accepted so that a call can
switch between the fast path and the reference by name alone; the reference follows torch's own matmul settings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from tritongru.validation import (
    GRUInputError,
    check_num_heads,
    check_zoneout,
    check_zoneout_mask,
    check_zoneout_seed,
)
from tritongru.variants import check_variant
from tritongru.zoneout import draw_zoneout_seed, zoneout_keep_mask, zoneout_keep_masks

LAYER_NORM_EPS = 1e-5
"""Added to the (biased) variance before the square root, as ``torch.nn.LayerNorm`` does by default."""

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""One step without zoneout: ``(x_t, h) -> h'``."""

# ----------------------------------------------------------------------------------------- multi-head weights


def block_diagonal_weight_hh(weight_hh: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The dense recurrent weight of a multi-head GRU: ``weight_hh`` ``[3H, d]`` (the diagonal blocks, ``d = H //
    num_heads``) → ``[3H, H]`` with those blocks on each gate's diagonal and zeros elsewhere; same dtype and
    device, differentiable. ``num_heads=1`` returns ``weight_hh`` itself."""
    hidden = weight_hh.shape[0] // 3
    _check_heads(weight_hh, num_heads)
    if num_heads == 1:
        return weight_hh
    blocks = weight_hh.reshape(3, num_heads, hidden // num_heads, hidden // num_heads)
    eye = torch.eye(num_heads, dtype=weight_hh.dtype, device=weight_hh.device)
    return torch.einsum("ghuc,hk->ghukc", blocks, eye).reshape(3 * hidden, hidden)


def diagonal_blocks_weight_hh(dense_weight_hh: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The inverse of :func:`block_diagonal_weight_hh`: ``[3H, H]`` → its diagonal blocks ``[3H, d]`` (what lies
    off them is dropped). Initialises a multi-head GRU from a dense one, or restricts a dense gradient."""
    hidden = dense_weight_hh.shape[1]
    check_num_heads(num_heads, hidden)
    d = hidden // num_heads
    tiles = dense_weight_hh.reshape(3, num_heads, d, num_heads, d)
    return torch.diagonal(tiles, dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(3 * hidden, d)


def _check_heads(weight_hh: torch.Tensor, num_heads: int) -> None:
    """``num_heads`` divides ``H`` and ``weight_hh`` is ``[3H, H // num_heads]``."""
    hidden = weight_hh.shape[0] // 3
    check_num_heads(num_heads, hidden)
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 3 * hidden or weight_hh.shape[1] * num_heads != hidden:
        raise GRUInputError(
            f"weight_hh must have shape (3*hidden_size, hidden_size // num_heads) with num_heads={num_heads}; "
            f"got {tuple(weight_hh.shape)}"
        )


def _hidden_product(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, num_heads: int) -> torch.Tensor:
    """One gate's recurrent product ``W h + b``: ``h`` ``[..., H]``, ``weight`` that gate's ``[H, H // num_heads]``
    rows (each head's units against its own ``d`` inputs), ``bias`` ``[H]`` or None → ``[..., H]``."""
    if num_heads == 1:
        return F.linear(h, weight, bias)
    d = weight.shape[1]
    product = torch.einsum("...hc,huc->...hu", h.unflatten(-1, (num_heads, d)), weight.reshape(num_heads, d, d))
    product = product.flatten(-2)
    return product if bias is None else product + bias


# ------------------------------------------------------------------------------------------------- layer norm


def layer_norm_ref(
    pre: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, *, groups: int = 1, eps: float = LAYER_NORM_EPS
) -> torch.Tensor:
    """Layer normalisation of each of ``groups`` equal, contiguous parts of the last dimension on its own:
    ``(v - mean(v)) / sqrt(var(v) + eps) * gain + bias`` (biased variance). ``pre`` ``[..., N]``, ``gain`` and
    ``bias`` ``[N]`` → ``[..., N]``. The LayerNorm-GRU normalises ``[..., 3H]`` in ``3 * num_heads`` groups:
    every gate, and with heads every head's ``d`` units of it, apart."""
    parts = pre.unflatten(-1, (groups, pre.shape[-1] // groups))
    centred = parts - parts.mean(-1, keepdim=True)
    variance = centred.square().mean(-1, keepdim=True)
    return (centred * torch.rsqrt(variance + eps)).flatten(-2) * gain + bias


# ---------------------------------------------------------------------------------------------------- zoneout


def zoneout_ref(h_old: torch.Tensor, h_new: torch.Tensor, p: float, keep: torch.Tensor | None) -> torch.Tensor:
    """Zoneout of one step: ``keep`` bool, shaped like ``h_new``: ``where(keep, h_old, h_new)`` (training);
    None: the expectation ``p * h_old + (1 - p) * h_new`` (evaluation). ``p = 0`` returns ``h_new`` itself."""
    if p == 0:
        return h_new
    if keep is None:
        return p * h_old + (1 - p) * h_new
    return torch.where(keep, h_old, h_new)


def _zoneout_masks(
    p: float,
    zoneout_mask: torch.Tensor | None,
    zoneout_seed: int | None,
    training: bool,
    expected: tuple[int, ...],
    what: str,
    regenerate: Callable[[int], torch.Tensor],
) -> torch.Tensor | None:
    """The keep masks a call uses, shaped ``expected``: the explicit ``zoneout_mask``, or ``regenerate(seed)``
    (the seed drawn from torch's generator when None); None in evaluation or when ``p = 0``."""
    if zoneout_mask is not None and zoneout_seed is not None:
        raise GRUInputError("zoneout_mask and zoneout_seed are two sources of one mask: give at most one")
    if zoneout_mask is not None:
        check_zoneout_mask(zoneout_mask, expected, what)
        if p == 0:
            raise GRUInputError("zoneout_mask is given but zoneout is 0: give the probability it was drawn with")
    if p == 0 or not training:
        return None
    if zoneout_mask is not None:
        return zoneout_mask
    return regenerate(draw_zoneout_seed() if zoneout_seed is None else zoneout_seed)


# ------------------------------------------------------------------------------------------------------ cells


def _gru_step(
    input: torch.Tensor,
    hx: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None,
    bias_hh: torch.Tensor | None,
    variant: str,
    num_heads: int,
) -> torch.Tensor:
    x_r, x_z, x_n = F.linear(input, weight_ih, bias_ih).chunk(3, dim=-1)
    w_hr, w_hz, w_hn = weight_hh.chunk(3, dim=0)
    b_hr, b_hz, b_hn = bias_hh.chunk(3) if bias_hh is not None else (None, None, None)
    r = torch.sigmoid(x_r + _hidden_product(hx, w_hr, b_hr, num_heads))
    z = torch.sigmoid(x_z + _hidden_product(hx, w_hz, b_hz, num_heads))
    if variant == "cudnn":
        n = torch.tanh(x_n + r * _hidden_product(hx, w_hn, b_hn, num_heads))
        return (1 - z) * n + z * hx
    candidate = torch.tanh(x_n + _hidden_product(r * hx, w_hn, b_hn, num_heads))
    return z * candidate + (1 - z) * hx


def _layernorm_gru_step(
    input: torch.Tensor,
    hx: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    ln_ih_weight: torch.Tensor,
    ln_ih_bias: torch.Tensor,
    ln_hh_weight: torch.Tensor,
    ln_hh_bias: torch.Tensor,
    variant: str,
    num_heads: int,
) -> torch.Tensor:
    input_side = layer_norm_ref(F.linear(input, weight_ih), ln_ih_weight, ln_ih_bias, groups=3 * num_heads)
    x_r, x_z, x_n = input_side.chunk(3, dim=-1)
    w_hr, w_hz, w_hn = weight_hh.chunk(3, dim=0)
    gains, biases = ln_hh_weight.chunk(3), ln_hh_bias.chunk(3)

    def normalised(gate: int, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return layer_norm_ref(_hidden_product(h, weight, None, num_heads), gains[gate], biases[gate], groups=num_heads)

    r = torch.sigmoid(x_r + normalised(0, hx, w_hr))
    z = torch.sigmoid(x_z + normalised(1, hx, w_hz))
    if variant == "cudnn":
        n = torch.tanh(x_n + r * normalised(2, hx, w_hn))
        return (1 - z) * n + z * hx
    candidate = torch.tanh(x_n + normalised(2, r * hx, w_hn))
    return z * candidate + (1 - z) * hx


def _cell(
    step: Step,
    input: torch.Tensor,
    hx: torch.Tensor | None,
    hidden: int,
    zoneout: float,
    zoneout_mask: torch.Tensor | None,
    zoneout_seed: int | None,
    training: bool,
) -> torch.Tensor:
    """One step with zoneout: ``input`` ``[B, I]`` or ``[I]``; the seeded mask is position 0 of layer 0, forward."""
    p, seed = check_zoneout(zoneout), check_zoneout_seed(zoneout_seed)
    if hx is None:
        hx = input.new_zeros((*input.shape[:-1], hidden))
    shape = tuple(hx.shape)
    keep = _zoneout_masks(
        p,
        zoneout_mask,
        seed,
        training,
        shape,
        "shaped like hx",
        lambda seed: zoneout_keep_mask(
            seed, p, layer=0, direction=0, t=0, batch=shape[0] if hx.dim() == 2 else 1, hidden=hidden, device=hx.device
        ).view(shape),
    )
    return zoneout_ref(hx, step(input, hx), p, keep)


def gru_cell_ref(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    num_heads: int = 1,
    zoneout: float = 0.0,
    zoneout_mask: torch.Tensor | None = None,
    zoneout_seed: int | None = None,
    training: bool = False,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """One step. ``input`` ``[B, I]`` (or unbatched ``[I]``), ``hx`` ``[B, H]`` (``[H]``) or None (zeros)
    → ``h'`` shaped like ``hx``. ``weight_hh`` ``[3H, H // num_heads]``. Zoneout when ``training``: bool
    ``zoneout_mask`` shaped like ``hx``, or the mask of ``zoneout_seed`` at layer 0, direction 0, ``t = 0``."""
    check_variant(variant)
    _check_heads(weight_hh, num_heads)
    step = functools.partial(
        _gru_step,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        bias_ih=bias_ih,
        bias_hh=bias_hh,
        variant=variant,
        num_heads=num_heads,
    )
    return _cell(step, input, hx, weight_hh.shape[0] // 3, zoneout, zoneout_mask, zoneout_seed, training)


def layernorm_gru_cell_ref(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    ln_ih_weight: torch.Tensor,
    ln_ih_bias: torch.Tensor,
    ln_hh_weight: torch.Tensor,
    ln_hh_bias: torch.Tensor,
    *,
    variant: str = "cudnn",
    num_heads: int = 1,
    zoneout: float = 0.0,
    zoneout_mask: torch.Tensor | None = None,
    zoneout_seed: int | None = None,
    training: bool = False,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """One LayerNorm-GRU step. ``input`` ``[B, I]`` (``[I]``), ``hx`` ``[B, H]`` (``[H]``) or None (zeros) → ``h'``
    shaped like ``hx``. ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H // num_heads]``; gains and biases
    ``[3H]`` (gate order r, z, n) of the input-side (``ln_ih_*``) and recurrent-side (``ln_hh_*``) normalisation,
    over each gate's ``H`` units (with heads, each head's ``d``). Zoneout as :func:`gru_cell_ref`."""
    check_variant(variant)
    _check_heads(weight_hh, num_heads)
    step = functools.partial(
        _layernorm_gru_step,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        ln_ih_weight=ln_ih_weight,
        ln_ih_bias=ln_ih_bias,
        ln_hh_weight=ln_hh_weight,
        ln_hh_bias=ln_hh_bias,
        variant=variant,
        num_heads=num_heads,
    )
    return _cell(step, input, hx, weight_hh.shape[0] // 3, zoneout, zoneout_mask, zoneout_seed, training)


# ----------------------------------------------------------------------------------------------------- layers


def _lengths_tensor(lengths: torch.Tensor | Sequence[int] | None, input: torch.Tensor) -> torch.Tensor | None:
    return None if lengths is None else torch.as_tensor(lengths, device=input.device)


def _scan(
    step: Step,
    input: torch.Tensor,
    h0: torch.Tensor | None,
    hidden: int,
    *,
    lengths: torch.Tensor | None,
    reverse: bool,
    zoneout: float,
    keep: torch.Tensor | None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run ``step`` over ``input`` ``[T, B, I]`` from ``h0`` (None: zeros) → (the state after each position ``t``,
    held at its last value past a sequence's length; ``h_n``). ``keep`` ``[T, B, H]``: zoneout masks by position."""
    T, B = input.shape[0], input.shape[1]
    h = h0 if h0 is not None else input.new_zeros((B, hidden))
    held: list[torch.Tensor] = [h] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_new = zoneout_ref(h, step(input[t], h), zoneout, None if keep is None else keep[t])
        h = held[t] = h_new if lengths is None else torch.where((t < lengths)[:, None], h_new, h)
    return held, h


def _layer(
    step: Step,
    input: torch.Tensor,
    h0: torch.Tensor | None,
    hidden: int,
    *,
    lengths: torch.Tensor | Sequence[int] | None,
    reverse: bool,
    layer: int,
    zoneout: float,
    zoneout_mask: torch.Tensor | None,
    zoneout_seed: int | None,
    training: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer and direction: (``output`` ``[T, B, H]``, zero past a sequence's length; ``h_n`` ``[B, H]``)."""
    p, seed = check_zoneout(zoneout), check_zoneout_seed(zoneout_seed)
    T, B = input.shape[0], input.shape[1]
    keep = _zoneout_masks(
        p,
        zoneout_mask,
        seed,
        training,
        (T, B, hidden),
        "T, B, hidden_size",
        lambda seed: zoneout_keep_masks(
            seed, p, layer=layer, direction=int(reverse), steps=T, batch=B, hidden=hidden, device=input.device
        ),
    )
    lengths = _lengths_tensor(lengths, input)
    held, h_n = _scan(step, input, h0, hidden, lengths=lengths, reverse=reverse, zoneout=p, keep=keep)
    output = torch.stack(held)
    if lengths is not None:
        output = torch.where((torch.arange(T, device=input.device)[:, None] < lengths)[..., None], output, 0)
    return output, h_n


def gru_states_ref(
    input: torch.Tensor,
    h0: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    num_heads: int = 1,
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every state of one forward layer: ``input`` ``[T, B, I]``, ``h0`` ``[B, H]`` or None → ``hs``
    ``[T+1, B, H]`` with ``hs[0] = h0`` and ``hs[t+1]`` the state after step ``t``; a sequence's state stops
    changing after its ``lengths[b]`` steps (what tritongru's forward kernel saves). Zoneout ``zoneout`` with
    the bool masks ``zoneout_keep`` ``[T, B, H]`` (``[t]`` at step ``t``), or their expectation when None."""
    check_variant(variant)
    _check_heads(weight_hh, num_heads)
    step = functools.partial(
        _gru_step,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        bias_ih=bias_ih,
        bias_hh=bias_hh,
        variant=variant,
        num_heads=num_heads,
    )
    return _states(step, input, h0, weight_hh.shape[0] // 3, lengths, zoneout, zoneout_keep)


def layernorm_gru_states_ref(
    input: torch.Tensor,
    h0: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    ln_ih_weight: torch.Tensor,
    ln_ih_bias: torch.Tensor,
    ln_hh_weight: torch.Tensor,
    ln_hh_bias: torch.Tensor,
    *,
    variant: str = "cudnn",
    num_heads: int = 1,
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`gru_states_ref` of a LayerNorm-GRU layer (weights as :func:`layernorm_gru_cell_ref`)."""
    check_variant(variant)
    _check_heads(weight_hh, num_heads)
    step = functools.partial(
        _layernorm_gru_step,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        ln_ih_weight=ln_ih_weight,
        ln_ih_bias=ln_ih_bias,
        ln_hh_weight=ln_hh_weight,
        ln_hh_bias=ln_hh_bias,
        variant=variant,
        num_heads=num_heads,
    )
    return _states(step, input, h0, weight_hh.shape[0] // 3, lengths, zoneout, zoneout_keep)


def _states(step: Step, input, h0, hidden: int, lengths, zoneout: float, keep) -> torch.Tensor:
    """``hs`` ``[T+1, B, H]`` of ``step`` run forward over ``input`` from ``h0`` (None: zeros)."""
    if h0 is None:
        h0 = input.new_zeros((input.shape[1], hidden))
    held, _ = _scan(
        step,
        input,
        h0,
        hidden,
        lengths=_lengths_tensor(lengths, input),
        reverse=False,
        zoneout=check_zoneout(zoneout),
        keep=keep,
    )
    return torch.stack([h0, *held])


def gru_layer_ref(
    input: torch.Tensor,
    h0: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    num_heads: int = 1,
    lengths: torch.Tensor | Sequence[int] | None = None,
    reverse: bool = False,
    layer: int = 0,
    zoneout: float = 0.0,
    zoneout_mask: torch.Tensor | None = None,
    zoneout_seed: int | None = None,
    training: bool = False,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer, one direction. ``input`` ``[T, B, I]``, ``h0`` ``[B, H]`` or None (zeros) → (``output``
    ``[T, B, H]``, ``h_n`` ``[B, H]``). ``weight_hh`` ``[3H, H // num_heads]``.

    ``lengths`` ``[B]``: sequence ``b`` has ``lengths[b]`` valid steps; its state stops changing after them and
    its output there is zero. ``reverse``: run each sequence from its last valid step back to its first.
    Zoneout when ``training``: bool ``zoneout_mask`` ``[T, B, H]`` (``[t]`` applies at the step that reads
    ``input[t]``, in either direction), or the masks of ``zoneout_seed`` for layer ``layer`` and this direction.
    """
    check_variant(variant)
    _check_heads(weight_hh, num_heads)
    step = functools.partial(
        _gru_step,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        bias_ih=bias_ih,
        bias_hh=bias_hh,
        variant=variant,
        num_heads=num_heads,
    )
    return _layer(
        step,
        input,
        h0,
        weight_hh.shape[0] // 3,
        lengths=lengths,
        reverse=reverse,
        layer=layer,
        zoneout=zoneout,
        zoneout_mask=zoneout_mask,
        zoneout_seed=zoneout_seed,
        training=training,
    )


def layernorm_gru_layer_ref(
    input: torch.Tensor,
    h0: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    ln_ih_weight: torch.Tensor,
    ln_ih_bias: torch.Tensor,
    ln_hh_weight: torch.Tensor,
    ln_hh_bias: torch.Tensor,
    *,
    variant: str = "cudnn",
    num_heads: int = 1,
    lengths: torch.Tensor | Sequence[int] | None = None,
    reverse: bool = False,
    layer: int = 0,
    zoneout: float = 0.0,
    zoneout_mask: torch.Tensor | None = None,
    zoneout_seed: int | None = None,
    training: bool = False,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LayerNorm-GRU layer, one direction: arguments and results as :func:`gru_layer_ref`, the weights as
    :func:`layernorm_gru_cell_ref`."""
    check_variant(variant)
    _check_heads(weight_hh, num_heads)
    step = functools.partial(
        _layernorm_gru_step,
        weight_ih=weight_ih,
        weight_hh=weight_hh,
        ln_ih_weight=ln_ih_weight,
        ln_ih_bias=ln_ih_bias,
        ln_hh_weight=ln_hh_weight,
        ln_hh_bias=ln_hh_bias,
        variant=variant,
        num_heads=num_heads,
    )
    return _layer(
        step,
        input,
        h0,
        weight_hh.shape[0] // 3,
        lengths=lengths,
        reverse=reverse,
        layer=layer,
        zoneout=zoneout,
        zoneout_mask=zoneout_mask,
        zoneout_seed=zoneout_seed,
        training=training,
    )


# ----------------------------------------------------------------------------------------------------- stacks

LayerRef = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _stack(
    layer_ref: LayerRef,
    tensors_per_layer: int,
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Sequence[torch.Tensor | None],
    *,
    num_layers: int,
    batch_first: bool,
    dropout: float,
    training: bool,
    bidirectional: bool,
    lengths: torch.Tensor | Sequence[int] | None,
    zoneout: float,
    zoneout_mask: torch.Tensor | None,
    zoneout_seed: int | None,
    **options: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Layers as ``torch.nn.GRU`` stacks them, each layer and direction computed by ``layer_ref`` from its
    ``tensors_per_layer`` weights; one zoneout seed for all of them (drawn once when None), told apart by
    their streams."""
    directions = 2 if bidirectional else 1
    unbatched = input.dim() == 2
    if zoneout_mask is not None:
        expected = (num_layers * directions, *input.shape[:-1], weights[1].shape[0] // 3)
        check_zoneout_mask(zoneout_mask, expected, "one mask per layer and direction, laid out like input")
        if unbatched:
            zoneout_mask = zoneout_mask.unsqueeze(2)
        elif batch_first:
            zoneout_mask = zoneout_mask.transpose(1, 2)
    elif training and check_zoneout(zoneout) > 0 and check_zoneout_seed(zoneout_seed) is None:
        zoneout_seed = draw_zoneout_seed()
    if unbatched:
        input, hx = input.unsqueeze(1), hx.unsqueeze(1) if hx is not None else None
    elif batch_first:
        input = input.transpose(0, 1)
    layer_input, h_n = input, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            output, h = layer_ref(
                layer_input,
                hx[index] if hx is not None else None,
                *weights[tensors_per_layer * index : tensors_per_layer * (index + 1)],
                lengths=lengths,
                reverse=direction == 1,
                layer=layer,
                zoneout=zoneout,
                zoneout_mask=zoneout_mask[index] if zoneout_mask is not None else None,
                zoneout_seed=zoneout_seed,
                training=training,
                **options,
            )
            outputs.append(output)
            h_n.append(h)
        layer_input = torch.cat(outputs, dim=-1)
        if training and dropout > 0 and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, p=dropout, training=True)
    output, h_n = layer_input, torch.stack(h_n)
    if unbatched:
        return output.squeeze(1), h_n.squeeze(1)
    return (output.transpose(0, 1) if batch_first else output), h_n


def gru_ref(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Sequence[torch.Tensor | None],
    *,
    num_layers: int = 1,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    bidirectional: bool = False,
    variant: str = "cudnn",
    num_heads: int = 1,
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_mask: torch.Tensor | None = None,
    zoneout_seed: int | None = None,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack of layers, as ``torch.nn.GRU`` computes it. ``input`` ``[T, B, I]`` (``[B, T, I]`` if
    ``batch_first``, or unbatched ``[T, I]``), ``hx`` ``[L*D, B, H]`` (``[L*D, H]``) or None (zeros),
    ``weights``: per layer and direction (forward first) ``weight_ih, weight_hh, bias_ih, bias_hh`` (biases may
    be None; ``weight_hh`` ``[3H, H // num_heads]``), the order of ``torch.nn.GRU.all_weights`` flattened.
    ``dropout`` on every layer's output but the last when ``training``. Returns (``output`` ``[T, B, D*H]`` laid
    out like ``input``, ``h_n`` like ``hx``).

    Zoneout when ``training``: bool ``zoneout_mask`` ``[L*D, T, B, H]`` (each layer and direction's masks laid
    out like ``input``: ``[L*D, B, T, H]`` if ``batch_first``, ``[L*D, T, H]`` unbatched), or one
    ``zoneout_seed`` for every layer and direction (drawn from torch's generator when None).
    """
    return _stack(
        gru_layer_ref,
        4,
        input,
        hx,
        weights,
        num_layers=num_layers,
        batch_first=batch_first,
        dropout=dropout,
        training=training,
        bidirectional=bidirectional,
        lengths=lengths,
        zoneout=zoneout,
        zoneout_mask=zoneout_mask,
        zoneout_seed=zoneout_seed,
        variant=variant,
        num_heads=num_heads,
    )


def layernorm_gru_ref(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Sequence[torch.Tensor],
    *,
    num_layers: int = 1,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    bidirectional: bool = False,
    variant: str = "cudnn",
    num_heads: int = 1,
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_mask: torch.Tensor | None = None,
    zoneout_seed: int | None = None,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack of LayerNorm-GRU layers: as :func:`gru_ref`, with ``weights`` per layer and direction (forward
    first) ``weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias``."""
    return _stack(
        layernorm_gru_layer_ref,
        6,
        input,
        hx,
        weights,
        num_layers=num_layers,
        batch_first=batch_first,
        dropout=dropout,
        training=training,
        bidirectional=bidirectional,
        lengths=lengths,
        zoneout=zoneout,
        zoneout_mask=zoneout_mask,
        zoneout_seed=zoneout_seed,
        variant=variant,
        num_heads=num_heads,
    )
