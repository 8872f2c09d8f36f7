"""Functional API for research code that owns its weights. Same conventions as ``torch.nn.GRU``/``GRUCell``:
gate order r, z, n; ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H]``, biases ``[3H]``. Inputs are checked
here, before any kernel launches; the work is done by :mod:`tritongru.autograd` and :mod:`tritongru.launchers`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tritongru.autograd import (
    GRUCellFunction,
    GRULayerFunction,
    input_projection,
    layer_outputs,
)
from tritongru.launchers import cell_forward, forward_sequence
from tritongru.validation import (
    check_device,
    check_floating,
    check_lengths,
    check_like,
    check_shape,
    check_weights,
)
from tritongru.variants import check_variant


def _needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _contiguous(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [t.contiguous() if t is not None else None for t in tensors]


def reverse_time(sequence: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence of ``[T, B, *]`` within its own length (padding stays where it is)."""
    if lengths is None:
        return sequence.flip(0)
    steps = torch.arange(sequence.shape[0], device=sequence.device)[:, None]
    index = torch.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)
    return sequence.gather(0, index[..., None].expand_as(sequence))


def _layer(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, variant, lengths, allow_tf32):
    """One checked, contiguous layer: autograd when a gradient is wanted, the bare kernels otherwise."""
    input, h0, weight_ih, weight_hh, bias_ih, bias_hh = _contiguous(input, h0, weight_ih, weight_hh, bias_ih, bias_hh)
    if _needs_grad(input, h0, weight_ih, weight_hh, bias_ih, bias_hh):
        return GRULayerFunction.apply(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, variant, allow_tf32)
    gi = input_projection(input, weight_ih, bias_ih)
    hs, h_last, _ = forward_sequence(
        gi, h0, weight_hh, bias_hh, variant=variant, lengths=lengths, allow_tf32=allow_tf32
    )
    return layer_outputs(hs, h_last, lengths, input.dtype)


def _check_input(input: object) -> torch.Tensor:
    """A sequence input: a floating tensor, 2-D or 3-D, on a device the kernels run on, not empty."""
    check_floating("input", input)
    if input.dim() not in (2, 3):
        raise ValueError(f"input must be 2-D (unbatched: L, H_in) or 3-D (batched); got {input.dim()}-D")
    check_device("input", input)
    if input.numel() == 0:
        raise ValueError(f"input must not be empty (zero-length sequence or batch); got shape {tuple(input.shape)}")
    return input


def gru_layer(
    input: torch.Tensor,
    h0: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    lengths: torch.Tensor | Sequence[int] | None = None,
    reverse: bool = False,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer, one direction, time-major.

    ``input`` ``[T, B, I]`` (float16/bfloat16/float32/float64), ``h0`` ``[B, H]`` or None (zeros). ``lengths``
    ``[B]`` in ``[1, T]``: sequence ``b`` stops at ``lengths[b]`` (output zero after it, ``h_n`` its last valid
    state). ``reverse`` runs each sequence backwards within its length. ``allow_tf32`` lets the recurrent
    kernels use TF32 for float32. Returns (``output`` ``[T, B, H]``, ``h_n`` ``[B, H]``), differentiable.
    Same signature as :func:`tritongru.reference.gru_layer_ref`.
    """
    variant = check_variant(variant)
    _check_input(input)
    if input.dim() != 3:
        raise ValueError(f"input must be 3-D (T, B, input_size); got {input.dim()}-D")
    T, B, input_size = input.shape
    hidden = check_weights("", weight_ih, weight_hh, bias_ih, bias_hh, input_size, "input", input)
    h0 = _check_state("h0", h0, (B, hidden), input)
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, input.device)
    if reverse:
        input = reverse_time(input, lengths)
    output, h_n = _layer(input, h0, weight_ih, weight_hh, bias_ih, bias_hh, variant, lengths, allow_tf32)
    return (reverse_time(output, lengths) if reverse else output), h_n


def _check_state(name: str, state: torch.Tensor | None, shape: tuple[int, ...], input: torch.Tensor) -> torch.Tensor:
    """A state argument of the caller's ``shape``, dtype and device; None becomes zeros."""
    if state is None:
        return torch.zeros(shape, dtype=input.dtype, device=input.device)
    check_floating(name, state)
    check_shape(name, state, shape)
    check_like(name, state, "input", input)
    return state


def gru(
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
    lengths: torch.Tensor | Sequence[int] | None = None,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-layer, optionally bidirectional GRU, as ``torch.nn.GRU`` computes it.

    ``input`` ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``) or unbatched ``[T, I]``; ``hx``
    ``[num_layers*D, B, H]`` (``[num_layers*D, H]`` unbatched) or None for zeros; ``weights``: for each layer
    and direction (forward first) ``weight_ih, weight_hh, bias_ih, bias_hh`` — the order of
    ``torch.nn.GRU.all_weights`` flattened, with None for absent biases. ``dropout`` applies to every layer's
    output but the last when ``training``. ``lengths``: per-sequence lengths (see :func:`gru_layer`). Returns
    (``output`` ``[T, B, D*H]`` (batch-first if asked; ``[T, D*H]`` unbatched), ``h_n`` like ``hx``).
    """
    variant = check_variant(variant)
    _check_input(input)
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int; got {num_layers!r}")
    if not 0.0 <= float(dropout) <= 1.0:
        raise ValueError(f"dropout must lie in [0, 1]; got {dropout!r}")
    directions = 2 if bidirectional else 1
    if len(weights) != 4 * num_layers * directions:
        raise ValueError(
            f"weights must hold 4 tensors (weight_ih, weight_hh, bias_ih, bias_hh) per layer and direction, "
            f"{4 * num_layers * directions} in all; got {len(weights)}"
        )
    unbatched = input.dim() == 2
    if unbatched:
        input = input.unsqueeze(1)
    elif batch_first:
        input = input.transpose(0, 1)
    T, B, input_size = input.shape
    hidden = None
    for index in range(num_layers * directions):
        layer_input_size = input_size if index < directions else directions * hidden
        layer = f"layer {index // directions}{' (reverse)' if index % directions else ''}: "
        hidden = check_weights(layer, *weights[4 * index : 4 * index + 4], layer_input_size, "input", input)
    state_shape = (num_layers * directions, hidden) if unbatched else (num_layers * directions, B, hidden)
    if hx is not None:
        check_floating("hx", hx)
        if hx.dim() != len(state_shape):
            kind = "unbatched" if unbatched else "batched"
            raise ValueError(f"hx must be {len(state_shape)}-D for {kind} input, shape {state_shape}; got {hx.dim()}-D")
    hx = _check_state("hx", hx, state_shape, input)
    if unbatched:
        hx = hx.unsqueeze(1)
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, input.device)

    layer_input, h_n = input, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            x = reverse_time(layer_input, lengths) if direction else layer_input
            output, h = _layer(x, hx[index], *weights[4 * index : 4 * index + 4], variant, lengths, allow_tf32)
            outputs.append(reverse_time(output, lengths) if direction else output)
            h_n.append(h)
        layer_input = torch.cat(outputs, dim=-1) if directions > 1 else outputs[0]
        if training and dropout > 0 and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, p=dropout, training=True)
    output, h_n = layer_input, torch.stack(h_n)
    if unbatched:
        return output.squeeze(1), h_n.squeeze(1)
    return (output.transpose(0, 1) if batch_first else output), h_n


def gru_cell(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    allow_tf32: bool = False,
) -> torch.Tensor:
    """One GRU step in one fused launch. ``input`` ``[B, I]`` or unbatched ``[I]``; ``hx`` ``[B, H]`` / ``[H]``
    or None (zeros). Returns ``h'`` shaped like ``hx``, differentiable. Same signature as
    :func:`tritongru.reference.gru_cell_ref`."""
    variant = check_variant(variant)
    check_floating("input", input)
    if input.dim() not in (1, 2):
        raise ValueError(f"input must be 1-D (unbatched: input_size) or 2-D (batch, input_size); got {input.dim()}-D")
    check_device("input", input)
    if input.numel() == 0:
        raise ValueError(f"input must not be empty; got shape {tuple(input.shape)}")
    unbatched = input.dim() == 1
    if unbatched:
        input = input.unsqueeze(0)
    B, input_size = input.shape
    hidden = check_weights("", weight_ih, weight_hh, bias_ih, bias_hh, input_size, "input", input)
    state_shape = (hidden,) if unbatched else (B, hidden)
    if hx is not None:
        check_floating("hx", hx)
        if hx.dim() != len(state_shape):
            raise ValueError(f"hx must be {len(state_shape)}-D like input; got {hx.dim()}-D")
    hx = _check_state("hx", hx, state_shape, input)
    if unbatched:
        hx = hx.unsqueeze(0)
    input, hx, weight_ih, weight_hh, bias_ih, bias_hh = _contiguous(input, hx, weight_ih, weight_hh, bias_ih, bias_hh)
    if _needs_grad(input, hx, weight_ih, weight_hh, bias_ih, bias_hh):
        h_new = GRUCellFunction.apply(input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32)
    else:
        h_new, _ = cell_forward(
            input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant=variant, allow_tf32=allow_tf32
        )
        h_new = h_new.to(input.dtype)
    return h_new.squeeze(0) if unbatched else h_new
