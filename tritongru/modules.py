"""Drop-ins for ``torch.nn.GRU`` and ``torch.nn.GRUCell``.

They subclass torch's modules, so arguments, parameter names and shapes, initialisation and ``state_dict``
keys are torch's own (``load_state_dict`` works both ways, strictly); only ``forward`` is replaced. Two
keyword-only additions: ``variant`` (``"cudnn"``, torch's formulation, or ``"classic"``) and ``allow_tf32``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from tritongru.functional import gru, gru_cell
from tritongru.variants import check_variant


def _check_input_size(input: object, input_size: int) -> None:
    """A module's weights are right by construction: a size mismatch is the input's, and is reported so."""
    if isinstance(input, torch.Tensor) and input.dim() > 0 and input.shape[-1] != input_size:
        raise ValueError(
            f"input must have input_size={input_size} features in its last dimension; got {input.shape[-1]}"
        )


class _TritonOptions:
    """The keyword-only arguments tritongru's modules add to torch's: ``variant`` and ``allow_tf32``."""

    def __init__(self, *args, variant: str = "cudnn", allow_tf32: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.variant = check_variant(variant)
        self.allow_tf32 = allow_tf32

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variant={self.variant!r}"


class GRU(_TritonOptions, nn.GRU):
    """``torch.nn.GRU`` computed by tritongru's Triton kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None, *, variant="cudnn", allow_tf32=False)``.
    ``forward(input, hx=None)`` takes what ``torch.nn.GRU`` takes (batched or unbatched tensors, or a
    ``PackedSequence``) and returns ``(output, h_n)`` the same way.
    """

    def _weights(self) -> list[torch.Tensor | None]:
        """``weight_ih, weight_hh, bias_ih, bias_hh`` per layer and direction (None biases when bias=False)."""
        weights = []
        for layer in range(self.num_layers):
            for suffix in ("", "_reverse")[: 2 if self.bidirectional else 1]:
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    weights.append(getattr(self, f"{name}_l{layer}{suffix}") if self.bias or "weight" in name else None)
        return weights

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        options = dict(
            num_layers=self.num_layers,
            dropout=self.dropout,
            training=self.training,
            bidirectional=self.bidirectional,
            variant=self.variant,
            allow_tf32=self.allow_tf32,
        )
        _check_input_size(input.data if isinstance(input, PackedSequence) else input, self.input_size)
        if not isinstance(input, PackedSequence):
            return gru(input, hx, self._weights(), batch_first=self.batch_first, **options)
        # Work on the padded batch in the caller's order (hx and h_n are in that order, as in torch), and pack
        # the output with the input's own batch_sizes and permutation.
        padded, lengths = pad_packed_sequence(input)
        output, h_n = gru(padded, hx, self._weights(), lengths=lengths, **options)
        if input.sorted_indices is not None:
            output, lengths = (
                output.index_select(1, input.sorted_indices),
                lengths[input.sorted_indices.cpu()],
            )
        data = pack_padded_sequence(output, lengths, enforce_sorted=True).data
        return PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices), h_n


class GRUCell(_TritonOptions, nn.GRUCell):
    """``torch.nn.GRUCell`` computed by one fused Triton launch per step.

    ``GRUCell(input_size, hidden_size, bias=True, device=None, dtype=None, *, variant="cudnn",
    allow_tf32=False)``; ``forward(input, hx=None)`` as torch's: ``[B, I]`` or unbatched ``[I]``.
    """

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        _check_input_size(input, self.input_size)
        return gru_cell(
            input,
            hx,
            self.weight_ih,
            self.weight_hh,
            self.bias_ih,
            self.bias_hh,
            variant=self.variant,
            allow_tf32=self.allow_tf32,
        )
