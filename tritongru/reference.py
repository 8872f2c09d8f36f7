"""Plain-PyTorch reference of both GRU formulations: the ground truth that tests, benchmarks and users share.

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

Differentiable to any order with autograd (tritongru's double backward recomputes through it), traceable by
``torch.compile``, any device and dtype, no host synchronisation. ``allow_tf32`` is accepted so that a call can
switch between the fast path and the reference by name alone; the reference follows torch's own matmul settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tritongru.variants import check_variant


def gru_cell_ref(
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
    """One step. ``input`` ``[B, I]`` (or unbatched ``[I]``), ``hx`` ``[B, H]`` (``[H]``) or None (zeros)
    → ``h'`` shaped like ``hx``."""
    check_variant(variant)
    if hx is None:
        hx = input.new_zeros((*input.shape[:-1], weight_hh.shape[1]))
    x_r, x_z, x_n = F.linear(input, weight_ih, bias_ih).chunk(3, dim=-1)
    w_hr, w_hz, w_hn = weight_hh.chunk(3, dim=0)
    b_hr, b_hz, b_hn = bias_hh.chunk(3) if bias_hh is not None else (None, None, None)
    r = torch.sigmoid(x_r + F.linear(hx, w_hr, b_hr))
    z = torch.sigmoid(x_z + F.linear(hx, w_hz, b_hz))
    if variant == "cudnn":
        n = torch.tanh(x_n + r * F.linear(hx, w_hn, b_hn))
        return (1 - z) * n + z * hx
    candidate = torch.tanh(x_n + F.linear(r * hx, w_hn, b_hn))
    return z * candidate + (1 - z) * hx


def _lengths_tensor(lengths: torch.Tensor | Sequence[int] | None, input: torch.Tensor) -> torch.Tensor | None:
    return None if lengths is None else torch.as_tensor(lengths, device=input.device)


def gru_states_ref(
    input: torch.Tensor,
    h0: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    lengths: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Every state of one forward layer: ``input`` ``[T, B, I]``, ``h0`` ``[B, H]`` or None → ``hs``
    ``[T+1, B, H]`` with ``hs[0] = h0`` and ``hs[t+1]`` the state after step ``t``; a sequence's state stops
    changing after its ``lengths[b]`` steps (what tritongru's forward kernel saves)."""
    if h0 is None:
        h0 = input.new_zeros((input.shape[1], weight_hh.shape[1]))
    lengths = _lengths_tensor(lengths, input)
    states = [h0]
    for t in range(input.shape[0]):
        h_new = gru_cell_ref(input[t], states[-1], weight_ih, weight_hh, bias_ih, bias_hh, variant=variant)
        states.append(h_new if lengths is None else torch.where((t < lengths)[:, None], h_new, states[-1]))
    return torch.stack(states)


def gru_layer_ref(
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
    """One layer, one direction. ``input`` ``[T, B, I]``, ``h0`` ``[B, H]`` or None (zeros) → (``output``
    ``[T, B, H]``, ``h_n`` ``[B, H]``).

    ``lengths`` ``[B]``: sequence ``b`` has ``lengths[b]`` valid steps; its state stops changing after them and
    its output there is zero. ``reverse``: run each sequence from its last valid step back to its first.
    """
    check_variant(variant)
    T, B = input.shape[0], input.shape[1]
    h = h0 if h0 is not None else input.new_zeros((B, weight_hh.shape[1]))
    lengths = _lengths_tensor(lengths, input)
    outputs: list[torch.Tensor] = [h] * T
    for t in range(T - 1, -1, -1) if reverse else range(T):
        h_new = gru_cell_ref(input[t], h, weight_ih, weight_hh, bias_ih, bias_hh, variant=variant)
        if lengths is None:
            h = outputs[t] = h_new
        else:
            active = (t < lengths)[:, None]
            h = torch.where(active, h_new, h)
            outputs[t] = torch.where(active, h, 0)
    return torch.stack(outputs), h


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
    lengths: torch.Tensor | Sequence[int] | None = None,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack of layers, as ``torch.nn.GRU`` computes it. ``input`` ``[T, B, I]`` (``[B, T, I]`` if
    ``batch_first``, or unbatched ``[T, I]``), ``hx`` ``[L*D, B, H]`` (``[L*D, H]``) or None (zeros),
    ``weights``: per layer and direction (forward first) ``weight_ih, weight_hh, bias_ih, bias_hh`` (biases may
    be None), the order of ``torch.nn.GRU.all_weights`` flattened. ``dropout`` on every layer's output but the
    last when ``training``. Returns (``output`` ``[T, B, D*H]`` laid out like ``input``, ``h_n`` like ``hx``).
    """
    directions = 2 if bidirectional else 1
    unbatched = input.dim() == 2
    if unbatched:
        input, hx = input.unsqueeze(1), hx.unsqueeze(1) if hx is not None else None
    elif batch_first:
        input = input.transpose(0, 1)
    layer_input, h_n = input, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            output, h = gru_layer_ref(
                layer_input,
                hx[index] if hx is not None else None,
                *weights[4 * index : 4 * index + 4],
                variant=variant,
                lengths=lengths,
                reverse=direction == 1,
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
