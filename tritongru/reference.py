"""Plain-PyTorch reference of both GRU formulations: the ground truth that tests, benchmarks and users share.

Same signatures as the fast path in :mod:`tritongru.functional`, written straight from the equations
(gate order r, z, n; ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H]``):

cudnn (reset after the hidden product, what ``torch.nn.GRU`` computes)::

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

classic (reset before the hidden product, the notes' "fully gated unit")::

    R = σ(W_ir x + b_ir + W_hr h + b_hr)        Z = σ(W_iz x + b_iz + W_hz h + b_hz)
    H~ = tanh(W_in x + b_in + W_hn (R * h) + b_hn)
    h' = Z * H~ + (1 - Z) * h

Differentiable with autograd; runs on any device and dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tritongru.variants import check_variant


def gru_cell_ref(
    input: torch.Tensor,
    hx: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
) -> torch.Tensor:
    """One step. ``input`` ``[B, I]``, ``hx`` ``[B, H]`` → ``h'`` ``[B, H]``."""
    check_variant(variant)
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


def gru_layer_ref(
    input: torch.Tensor,
    h0: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None = None,
    bias_hh: torch.Tensor | None = None,
    *,
    variant: str = "cudnn",
    lengths: torch.Tensor | None = None,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer, one direction. ``input`` ``[T, B, I]``, ``h0`` ``[B, H]`` → (``output`` ``[T, B, H]``,
    ``h_n`` ``[B, H]``).

    ``lengths`` ``[B]``: sequence ``b`` has ``lengths[b]`` valid steps; its state stops changing after them and
    its output there is zero. ``reverse``: run each sequence from its last valid step back to its first.
    """
    T, B = input.shape[0], input.shape[1]
    lengths_list = [T] * B if lengths is None else [int(n) for n in lengths]
    h = h0
    outputs = [None] * T
    zero = torch.zeros_like(h0)
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        active = torch.tensor([t < n for n in lengths_list], device=input.device)[:, None]
        h_new = gru_cell_ref(input[t], h, weight_ih, weight_hh, bias_ih, bias_hh, variant=variant)
        h = torch.where(active, h_new, h)
        outputs[t] = torch.where(active, h, zero)
    return torch.stack(outputs), h


def gru_ref(
    input: torch.Tensor,
    hx: torch.Tensor,
    weights: Sequence[torch.Tensor | None],
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    variant: str = "cudnn",
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A stack of layers, time-major, no dropout. ``input`` ``[T, B, I]``, ``hx`` ``[L*D, B, H]``,
    ``weights``: per layer and direction (forward first) ``weight_ih, weight_hh, bias_ih, bias_hh`` (biases
    may be None), the order of ``torch.nn.GRU.all_weights`` flattened. Returns (``output`` ``[T, B, D*H]``,
    ``h_n`` ``[L*D, B, H]``).
    """
    directions = 2 if bidirectional else 1
    layer_input, h_n = input, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, b_ih, b_hh = weights[4 * index : 4 * index + 4]
            output, h = gru_layer_ref(
                layer_input,
                hx[index],
                w_ih,
                w_hh,
                b_ih,
                b_hh,
                variant=variant,
                lengths=lengths,
                reverse=direction == 1,
            )
            outputs.append(output)
            h_n.append(h)
        layer_input = torch.cat(outputs, dim=-1)
    return layer_input, torch.stack(h_n)
