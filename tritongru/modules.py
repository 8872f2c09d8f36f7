"""Drop-ins for ``torch.nn.GRU`` and ``torch.nn.GRUCell``.

``GRU`` subclasses ``torch.nn.RNNBase`` (mode ``"GRU"``), the base torch's own ``nn.GRU`` is built on, rather
than ``nn.GRU`` itself: ``torch.compile`` refuses to trace any instance of ``nn.RNN``/``nn.GRU``/``nn.LSTM``
(subclasses included) unless ``torch._dynamo.config.allow_rnn`` is set, and an ``RNNBase`` subclass keeps
everything else of torch's: the constructor and its argument checks, parameter names, shapes, initialisation,
``state_dict`` (``load_state_dict`` works both ways, strictly), ``_flat_weights``, ``all_weights``,
``flatten_parameters``, pickling and ``torch.func.functional_call``. The cost: ``isinstance(m, nn.GRU)`` is
False (``isinstance(m, nn.RNNBase)`` is True). ``GRUCell`` subclasses ``nn.GRUCell`` (dynamo has no guard on
cells). Only ``forward`` is replaced. Keyword-only additions: ``variant`` (``"cudnn"``, torch's formulation,
or ``"classic"``), ``zoneout``, ``num_heads`` and ``allow_tf32``.

``num_heads=k`` makes the recurrent weight block-diagonal (:mod:`tritongru.functional`): every ``weight_hh*``
parameter becomes ``[3H, H // k]``, initialised uniform in ``±1/sqrt(H // k)`` (the fan-in a unit sees), every
other parameter as torch does; ``num_heads=1`` is torch's layout, ``state_dict`` and initialisation exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from tritongru.functional import run_cell, run_gru, run_layernorm_cell
from tritongru.validation import (
    check_cell_input,
    check_device,
    check_floating,
    check_input_size,
    check_num_heads,
    check_sequence_input,
    check_zoneout,
)
from tritongru.variants import check_variant


class _TritonOptions:
    """The keyword-only arguments tritongru's modules add to torch's: ``variant``, ``zoneout``, ``num_heads``
    and ``allow_tf32``."""

    def __init__(
        self,
        *args,
        variant: str = "cudnn",
        zoneout: float = 0.0,
        num_heads: int = 1,
        allow_tf32: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.variant = check_variant(variant)
        self.zoneout = check_zoneout(zoneout)
        self.num_heads = check_num_heads(num_heads, self.hidden_size)
        self.allow_tf32 = allow_tf32
        if self.num_heads > 1:
            for name in self._recurrent_weight_names():
                dense = getattr(self, name)
                blocks = dense.new_empty(dense.shape[0], self.hidden_size // self.num_heads)
                setattr(self, name, nn.Parameter(blocks, requires_grad=dense.requires_grad))
            self.reset_parameters()

    def _recurrent_weight_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters(recurse=False) if name.startswith("weight_hh")]

    def reset_parameters(self) -> None:
        """torch's initialisation; with heads, the recurrent blocks uniform in ``±1/sqrt(H // num_heads)``."""
        super().reset_parameters()
        if getattr(self, "num_heads", 1) > 1:
            bound = 1.0 / math.sqrt(self.hidden_size // self.num_heads)
            for name in self._recurrent_weight_names():
                nn.init.uniform_(getattr(self, name), -bound, bound)

    def extra_repr(self) -> str:
        zoneout = f", zoneout={self.zoneout}" if self.zoneout else ""
        heads = f", num_heads={self.num_heads}" if self.num_heads > 1 else ""
        return f"{super().extra_repr()}, variant={self.variant!r}{zoneout}{heads}"

    def __prepare_scriptable__(self):
        """``torch.jit.script`` asks every module this first: refuse with a way forward."""
        raise RuntimeError(
            f"tritongru.{type(self).__name__} is not supported by torch.jit.script (TorchScript cannot run "
            "Triton kernels or Python custom ops): use torch.compile(model, fullgraph=True), or torch.export "
            "to save a program"
        )


class GRU(_TritonOptions, nn.RNNBase):
    """``torch.nn.GRU`` computed by tritongru's Triton kernels.

    ``GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
    bidirectional=False, device=None, dtype=None, *, proj_size=0, variant="cudnn", zoneout=0.0, num_heads=1,
    allow_tf32=False)``. ``zoneout=p``: in training each unit keeps its previous state with probability ``p``
    at every step (masks drawn in the kernels from a seed taken from torch's default generator on each call, so
    ``torch.manual_seed`` reproduces a run); in evaluation the expectation (:mod:`tritongru.functional`).
    ``forward(input, hx=None)`` takes what ``torch.nn.GRU`` takes (batched ``[L, N, H_in]`` / ``[N, L, H_in]``
    or unbatched ``[L, H_in]`` tensors, or a ``PackedSequence``) and returns ``(output, h_n)`` the same way.
    ``proj_size`` exists for LSTMs only: 0 is accepted, anything else raises torch's ``ValueError``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        proj_size: int = 0,
        variant: str = "cudnn",
        zoneout: float = 0.0,
        num_heads: int = 1,
        allow_tf32: bool = False,
    ) -> None:
        if proj_size != 0:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device=device,
            dtype=dtype,
            variant=variant,
            zoneout=zoneout,
            num_heads=num_heads,
            allow_tf32=allow_tf32,
        )

    def flatten_parameters(self) -> None:
        """torch's (cuDNN's packed weight buffer), except with heads: cuDNN has no block-diagonal layout, and the
        kernels read the parameters as they are."""
        if getattr(self, "num_heads", 1) == 1:
            super().flatten_parameters()

    def _weights(self) -> list[torch.Tensor | None]:
        """``weight_ih, weight_hh, bias_ih, bias_hh`` per layer and direction (None biases when bias=False), read
        from the attributes on every call (so ``functional_call``, weight norm and reassignment are seen)."""
        weights: list[torch.Tensor | None] = []
        for names in self._all_weights:
            weights += [getattr(self, name) for name in names] + [None] * (4 - len(names))
        return weights

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        return _run_stack(self, input, hx, self._weights())


def _run_stack(
    module: nn.Module, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None, weights: list
) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
    """A stack module's ``forward(input, hx)`` over its ``weights`` (a GRU's or a LayerNorm-GRU's): tensors or a
    ``PackedSequence`` in, the same out, as ``torch.nn.GRU`` does."""
    options = dict(
        hidden_size=module.hidden_size,
        num_layers=module.num_layers,
        dropout=module.dropout,
        training=module.training,
        bidirectional=module.bidirectional,
        variant=check_variant(module.variant),
        zoneout=check_zoneout(module.zoneout),
        allow_tf32=module.allow_tf32,
    )
    if not isinstance(input, PackedSequence):
        check_sequence_input(input)
        check_input_size(input, module.input_size)
        return run_gru(input, hx, weights, batch_first=module.batch_first, **options)
    # As torch does: run in the packed (sorted) batch order, with hx put in that order, and return h_n in
    # the caller's. The lengths come from batch_sizes, on the host: no device synchronisation.
    data, batch_sizes, sorted_indices, unsorted_indices = input
    check_floating("input", data)
    check_device("input", data)
    check_input_size(data, module.input_size)
    padded, lengths = pad_packed_sequence(PackedSequence(data, batch_sizes))
    output, h_n = run_gru(
        padded, hx, weights, batch_first=False, lengths=lengths, hx_permutation=sorted_indices, **options
    )
    packed = pack_padded_sequence(output, lengths, enforce_sorted=True)
    if unsorted_indices is not None:
        h_n = h_n.index_select(1, unsorted_indices)
    return PackedSequence(packed.data, batch_sizes, sorted_indices, unsorted_indices), h_n


class GRUCell(_TritonOptions, nn.GRUCell):
    """``torch.nn.GRUCell`` computed by one fused Triton launch per step.

    ``GRUCell(input_size, hidden_size, bias=True, device=None, dtype=None, *, variant="cudnn", zoneout=0.0,
    num_heads=1, allow_tf32=False)``; ``forward(input, hx=None)`` as torch's: ``[B, I]`` or unbatched ``[I]``.
    ``zoneout`` as :class:`GRU`'s, a new seed drawn for every training step; ``num_heads`` as :class:`GRU`'s.
    """

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        check_cell_input(input)
        check_input_size(input, self.input_size, cell=True)
        return run_cell(
            input,
            hx,
            self.weight_ih,
            self.weight_hh,
            self.bias_ih,
            self.bias_hh,
            variant=check_variant(self.variant),
            allow_tf32=self.allow_tf32,
            zoneout=check_zoneout(self.zoneout),
            training=self.training,
        )


# ------------------------------------------------------------------------------------------- LayerNorm-GRU

_LAYERNORM_PARAMETERS = ("weight_ih", "weight_hh", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias")


def _check_size(name: str, value: object, minimum: int) -> int:
    """A module's size argument, as torch's RNN modules check theirs (``TypeError`` for a non-int)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be {'greater than zero' if minimum else 'non-negative'}; got {value}")
    return value


def _layernorm_parameters(
    module: nn.Module, suffix: str, input_size: int, hidden_size: int, factory: dict
) -> list[str]:
    """Register one layer's (or the cell's) six parameters under ``name + suffix``; return their names. Shapes:
    ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H]`` (the heads' blocks replace it), the rest ``[3H]``."""
    shapes = [(3 * hidden_size, input_size), (3 * hidden_size, hidden_size)] + [(3 * hidden_size,)] * 4
    names = [name + suffix for name in _LAYERNORM_PARAMETERS]
    for name, shape in zip(names, shapes, strict=True):
        module.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
    return names


def _reset_layernorm_parameters(module: nn.Module) -> None:
    """The weights uniform in ``±1/sqrt(H)`` (as torch's GRU), the gains 1 and the biases 0 (as
    ``torch.nn.LayerNorm``)."""
    bound = 1.0 / math.sqrt(module.hidden_size) if module.hidden_size else 0.0
    for name, parameter in module.named_parameters(recurse=False):
        if name.startswith("weight_"):
            nn.init.uniform_(parameter, -bound, bound)
        elif "_weight" in name:
            nn.init.ones_(parameter)
        else:
            nn.init.zeros_(parameter)


class _LayerNormGRUStack(nn.Module):
    """The parameters of a stack of LayerNorm-GRU layers, named as ``torch.nn.GRU`` names its own:
    ``{name}_l{layer}`` (``_reverse`` for the second direction) for each of :data:`_LAYERNORM_PARAMETERS`."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        self.input_size = _check_size("input_size", input_size, 0)
        self.hidden_size = _check_size("hidden_size", hidden_size, 1)
        self.num_layers = _check_size("num_layers", num_layers, 1)
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        directions = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                layer_input = input_size if layer == 0 else hidden_size * directions
                self._all_weights.append(_layernorm_parameters(self, suffix, layer_input, hidden_size, factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_layernorm_parameters(self)

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        return text


class LayerNormGRU(_TritonOptions, _LayerNormGRUStack):
    """A LayerNorm-GRU (Ba et al., 2016): each gate's input-side and recurrent-side pre-activation normalised
    apart over the ``H`` units of its row, each with its own gain and bias (the equations:
    :mod:`tritongru.reference`), on tritongru's kernels.

    ``LayerNormGRU(input_size, hidden_size, num_layers=1, batch_first=False, dropout=0.0, bidirectional=False,
    device=None, dtype=None, *, variant="cudnn", zoneout=0.0, num_heads=1, allow_tf32=False)``: the arguments of
    :class:`GRU` but ``bias`` (the normalisations' biases take its place). Parameters per layer and direction:
    ``weight_ih_l{n}`` ``[3H, I]``, ``weight_hh_l{n}`` ``[3H, H]`` (with heads ``[3H, H // num_heads]``, normalised
    over each head's units), ``ln_ih_weight_l{n}``, ``ln_ih_bias_l{n}``, ``ln_hh_weight_l{n}``, ``ln_hh_bias_l{n}``
    ``[3H]`` (gate order r, z, n); gains start at 1, biases at 0. ``forward(input, hx=None)`` as :class:`GRU`'s
    (tensors or a ``PackedSequence``).
    """

    def _weights(self) -> list[torch.Tensor]:
        return [getattr(self, name) for names in self._all_weights for name in names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The six parameters of each layer and direction, as ``torch.nn.GRU.all_weights`` lists its four."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """Nothing to flatten (there is no cuDNN weight buffer): the kernels read the parameters as they are.
        Here so that code written for ``torch.nn.GRU`` (``DataParallel`` replicas call it) runs unchanged."""

    def forward(
        self, input: torch.Tensor | PackedSequence, hx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | PackedSequence, torch.Tensor]:
        return _run_stack(self, input, hx, self._weights())


class _LayerNormGRUCellParameters(nn.Module):
    """A LayerNorm-GRU cell's parameters, named as ``torch.nn.GRUCell`` names its own (no suffix)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.input_size = _check_size("input_size", input_size, 0)
        self.hidden_size = _check_size("hidden_size", hidden_size, 0)
        _layernorm_parameters(self, "", input_size, hidden_size, {"device": device, "dtype": dtype})
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_layernorm_parameters(self)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class LayerNormGRUCell(_TritonOptions, _LayerNormGRUCellParameters):
    """One LayerNorm-GRU step (:class:`LayerNormGRU`'s cell).

    ``LayerNormGRUCell(input_size, hidden_size, device=None, dtype=None, *, variant="cudnn", zoneout=0.0,
    num_heads=1, allow_tf32=False)``; parameters ``weight_ih``, ``weight_hh``, ``ln_ih_weight``, ``ln_ih_bias``,
    ``ln_hh_weight``, ``ln_hh_bias``; ``forward(input, hx=None)`` as :class:`GRUCell`'s.
    """

    def forward(self, input: torch.Tensor, hx: torch.Tensor | None = None) -> torch.Tensor:
        check_cell_input(input)
        check_input_size(input, self.input_size, cell=True)
        return run_layernorm_cell(
            input,
            hx,
            [getattr(self, name) for name in _LAYERNORM_PARAMETERS],
            variant=check_variant(self.variant),
            allow_tf32=self.allow_tf32,
            zoneout=check_zoneout(self.zoneout),
            training=self.training,
        )
