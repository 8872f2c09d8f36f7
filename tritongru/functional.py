"""Functional API for research code that owns its weights. Same conventions as ``torch.nn.GRU``/``GRUCell``:
gate order r, z, n; ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H]``, biases ``[3H]``.

Multi-head (``num_heads=k``): the recurrent weight is block-diagonal, ``k`` heads of ``d = H // k`` units that do
not see each other's state; ``weight_hh`` ``[3H, d]`` holds the blocks (row ``g*H + h*d + u``: gate ``g``, head
``h``, unit ``u``), as :func:`tritongru.reference.block_diagonal_weight_hh` defines them.

Each call is checked once, here, before any kernel launches (:mod:`tritongru.validation`); the kernels run as
the custom ops of :mod:`tritongru.ops`. ``run_gru``/``run_cell`` are the checked-once entry points the modules
use: their weights are right by construction, so only their dtypes and devices are checked per call.

Under ``torch.autocast``: the dtypes ``torch.nn.GRU``/``GRUCell`` give (see :func:`autocast_dtypes`). Empty
batches (and ``GRUCell``'s ``hidden_size=0``) give empty outputs, as torch does, through the reference.

Zoneout (``zoneout=p``, Krueger et al., 2017): ``h_t = m_t h_{t-1} + (1 - m_t) h'_t`` when ``training``, with
``m_t ~ Bernoulli(p)`` per batch row, unit and step drawn inside the kernels from ``zoneout_seed``
(:mod:`tritongru.zoneout` defines the masks; None: a seed drawn from torch's default generator, so that
``torch.manual_seed`` reproduces the call), and ``h_t = p h_{t-1} + (1 - p) h'_t`` otherwise. One seed serves a
whole call: every layer and direction draws from its own stream of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tritongru import launchers, ops, reference
from tritongru.validation import (
    GRU_WEIGHT_NAMES,
    LAYERNORM_WEIGHT_NAMES,
    GRUInputError,
    check_cell_input,
    check_device,
    check_floating,
    check_layernorm_weights,
    check_lengths,
    check_like,
    check_sequence_input,
    check_shape,
    check_weights,
    check_weights_like,
    check_zoneout,
    check_zoneout_seed,
    rnn_dtype_phrase,
    with_torch_phrase,
)
from tritongru.variants import check_variant
from tritongru.zoneout import Zoneout, draw_zoneout_seed, zoneout_stream

Weights = Sequence[torch.Tensor | None]


def reverse_time(sequence: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence of ``[T, B, *]`` within its own length (padding stays where it is)."""
    if lengths is None:
        return sequence.flip(0)
    steps = torch.arange(sequence.shape[0], device=sequence.device)[:, None]
    index = torch.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)
    return sequence.gather(0, index[..., None].expand_as(sequence))


def autocast_dtypes(
    device_type: str, kind: str, input_dtype: torch.dtype, state_dtype: torch.dtype
) -> tuple[torch.dtype, torch.dtype] | None:
    """``(run dtype, output dtype)`` under ``torch.autocast`` on ``device_type``, as torch's modules behave;
    None when autocast is off there or the input is float64 (autocast leaves float64 alone).

    CUDA: ``torch.nn.GRU`` runs cuDNN's RNN, whose autocast wrapper casts input, state and weights to float16
    (whatever the autocast dtype); ``GRUCell`` is on autocast's lower-precision list (the autocast dtype).
    CPU: torch's GRU is a composition of ops in which the products follow autocast and the state update
    promotes: the output dtype is ``promote(autocast dtype, state dtype)``. ``kind``: ``"layer"`` or ``"cell"``.
    """
    if input_dtype == torch.float64 or not torch.is_autocast_enabled(device_type):
        return None
    if device_type == "cuda":
        run = torch.float16 if kind == "layer" else torch.get_autocast_dtype(device_type)
        return run, run
    run = torch.get_autocast_dtype(device_type)
    return run, torch.promote_types(run, state_dtype)


def _cast(tensor: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Autocast's eligibility rule: floating tensors other than float64 are cast."""
    if tensor is None or tensor.dtype == torch.float64 or not tensor.is_floating_point():
        return tensor
    return tensor.to(dtype)


def _autocast(kind: str, input: torch.Tensor, state: torch.Tensor | None, weights: Weights):
    """``(input, state, weights, output dtype)`` as :func:`autocast_dtypes` says (unchanged when it is off)."""
    state_dtype = input.dtype if state is None else state.dtype
    dtypes = autocast_dtypes(input.device.type, kind, input.dtype, state_dtype)
    if dtypes is None:
        return input, state, weights, input.dtype
    run, output = dtypes
    return _cast(input, run), _cast(state, run), [_cast(w, run) for w in weights], output


def _check_not_empty_in_time(input: torch.Tensor, time_dim: int = 0) -> None:
    if input.shape[time_dim] == 0:
        raise GRUInputError(
            with_torch_phrase(
                "Expected sequence length to be larger than 0 in RNN",
                f"input must not be empty in time; got shape {tuple(input.shape)}",
            )
        )


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
    layer: int = 0,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    training: bool = False,
    num_heads: int = 1,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer, one direction, time-major.

    ``input`` ``[T, B, I]`` (float16/bfloat16/float32/float64), ``h0`` ``[B, H]`` or None (zeros). ``lengths``
    ``[B]`` in ``[1, T]``: sequence ``b`` stops at ``lengths[b]`` (output zero after it, ``h_n`` its last valid
    state). ``reverse`` runs each sequence backwards within its length. ``zoneout``, ``zoneout_seed`` and
    ``training``: see the module docstring (``layer`` picks the layer's masks). ``num_heads``: ``weight_hh``
    ``[3H, H // num_heads]`` (module docstring). ``allow_tf32`` lets the recurrent kernels use TF32 for float32.
    Returns (``output`` ``[T, B, H]``, ``h_n`` ``[B, H]``), differentiable to any order. Same signature as
    :func:`tritongru.reference.gru_layer_ref` (less its explicit ``zoneout_mask``).
    """
    variant = check_variant(variant)
    seed = _zoneout_seed(zoneout, zoneout_seed, training)
    _check_layer_input(input)
    hidden = check_weights("", weight_ih, weight_hh, bias_ih, bias_hh, input.shape[2], num_heads=num_heads)
    weights = [weight_ih, weight_hh, bias_ih, bias_hh]
    return _run_layer(input, h0, weights, hidden, variant, lengths, reverse, layer, zoneout, seed, allow_tf32)


def _check_layer_input(input: torch.Tensor) -> None:
    check_floating("input", input)
    if input.dim() != 3:
        raise GRUInputError(f"input must be 3-D (T, B, input_size); got {input.dim()}-D")
    check_device("input", input)
    _check_not_empty_in_time(input)


def _run_layer(
    input, h0, weights: Weights, hidden, variant, lengths, reverse, layer, zoneout, seed, allow_tf32
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gru_layer` (or :func:`layernorm_gru_layer`) once its input and weights are checked."""
    T, B, _ = input.shape
    if h0 is not None:
        check_floating("h0", h0)
        check_shape("h0", h0, (B, hidden))
    input, h0, weights, out_dtype = _autocast("layer", input, h0, weights)
    if h0 is None:
        h0 = input.new_zeros((B, hidden))
    check_like("h0", h0, "input", input)
    check_weights_like("", weights, input)
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, input.device)
    zoneout = _zoneout(zoneout, seed, layer, reverse)
    with ops.no_autocast(input.device.type):
        if reverse:
            input = reverse_time(input, lengths)
        output, h_n = _layer(input, h0, weights, variant, lengths, allow_tf32, zoneout)
        if reverse:
            output = reverse_time(output, lengths)
    return output.to(out_dtype), h_n.to(out_dtype)


def _zoneout_seed(zoneout: float, zoneout_seed: int | None, training: bool) -> int | None:
    """The checked seed of a call's masks: ``zoneout_seed``, or one drawn from torch's default generator when
    None; None where no mask is drawn (``zoneout`` 0, or not ``training``)."""
    p, seed = check_zoneout(zoneout), check_zoneout_seed(zoneout_seed)
    if p == 0 or not training:
        return None
    return draw_zoneout_seed() if seed is None else seed


def _zoneout(zoneout: float, seed: int | None, layer: int, reverse: bool) -> Zoneout | None:
    """The zoneout of one layer and direction (None when ``zoneout`` is 0); ``seed`` None: the expectation."""
    if zoneout == 0:
        return None
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise GRUInputError(f"layer must be a non-negative int (it picks the layer's zoneout masks); got {layer!r}")
    return Zoneout(float(zoneout), seed, zoneout_stream(layer, int(reverse)), reverse)


def _layer(
    input, h0, weights: Weights, variant, lengths, allow_tf32, zoneout: Zoneout | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One checked layer and direction, a GRU's (four ``weights``) or a LayerNorm-GRU's (six); an empty batch
    goes through the reference (no launch, still differentiable; zoneout changes nothing there)."""
    layer_norm = len(weights) == len(LAYERNORM_WEIGHT_NAMES)
    if input.shape[1] == 0:
        heads = launchers.num_heads_of(weights[1])
        if layer_norm:
            return reference.layernorm_gru_layer_ref(input, h0, *weights, variant=variant, num_heads=heads)
        return reference.gru_layer_ref(input, h0, *weights, variant=variant, num_heads=heads)
    if layer_norm:
        return ops.layernorm_layer(input, h0, *weights, lengths, variant, allow_tf32, zoneout)
    return ops.layer(input, h0, *weights, lengths, variant, allow_tf32, zoneout)


def _layer_name(index: int, directions: int) -> str:
    """How messages name the weights of layer-and-direction ``index``: ``"layer 1 (reverse): "``."""
    return f"layer {index // directions}{' (reverse)' if index % directions else ''}: "


def gru(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Weights,
    *,
    num_layers: int = 1,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    bidirectional: bool = False,
    variant: str = "cudnn",
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    num_heads: int = 1,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-layer, optionally bidirectional GRU, as ``torch.nn.GRU`` computes it.

    ``input`` ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``) or unbatched ``[T, I]``; ``hx``
    ``[num_layers*D, B, H]`` (``[num_layers*D, H]`` unbatched) or None for zeros; ``weights``: for each layer
    and direction (forward first) ``weight_ih, weight_hh, bias_ih, bias_hh`` — the order of
    ``torch.nn.GRU.all_weights`` flattened, with None for absent biases. ``dropout`` applies to every layer's
    output but the last when ``training``. ``lengths``: per-sequence lengths (see :func:`gru_layer`). ``zoneout``
    and ``zoneout_seed``: see the module docstring; ``num_heads`` too (every layer's ``weight_hh`` then
    ``[3H, H // num_heads]``). Returns (``output`` ``[T, B, D*H]`` (batch-first if asked; ``[T, D*H]``
    unbatched), ``h_n`` like ``hx``). Same signature as :func:`tritongru.reference.gru_ref` (less its explicit
    ``zoneout_mask``).
    """
    variant = check_variant(variant)
    options = dict(
        num_layers=num_layers,
        batch_first=batch_first,
        dropout=dropout,
        training=training,
        bidirectional=bidirectional,
        variant=variant,
        lengths=lengths,
        zoneout=zoneout,
        zoneout_seed=zoneout_seed,
        allow_tf32=allow_tf32,
    )
    return _run_checked_stack(input, hx, weights, GRU_WEIGHT_NAMES, check_weights, num_heads, **options)


def _run_checked_stack(
    input, hx, weights: Weights, names, check_layer, num_heads, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gru` and :func:`layernorm_gru` once their variant is checked: check the options, the input and
    every layer's ``names`` tensors by ``check_layer`` (:func:`check_weights` or :func:`check_layernorm_weights`),
    then :func:`run_gru`."""
    num_layers, dropout = options["num_layers"], options["dropout"]
    check_zoneout(options["zoneout"])
    check_zoneout_seed(options["zoneout_seed"])
    check_sequence_input(input)
    if not isinstance(num_layers, int) or num_layers < 1:
        raise GRUInputError(f"num_layers must be a positive int; got {num_layers!r}")
    if not 0.0 <= float(dropout) <= 1.0:
        raise GRUInputError(f"dropout must lie in [0, 1]; got {dropout!r}")
    directions = 2 if options["bidirectional"] else 1
    per_layer = len(names)
    if len(weights) != per_layer * num_layers * directions:
        raise GRUInputError(
            f"weights must hold {per_layer} tensors ({', '.join(names)}) per layer and direction, "
            f"{per_layer * num_layers * directions} in all; got {len(weights)}"
        )
    hidden = 0
    for index in range(num_layers * directions):
        layer_input_size = input.shape[-1] if index < directions else directions * hidden
        hidden = check_layer(
            _layer_name(index, directions),
            *weights[per_layer * index : per_layer * (index + 1)],
            layer_input_size,
            num_heads=num_heads,
        )
    return run_gru(input, hx, weights, hidden_size=hidden, **options)


def _check_gru_state(hx: torch.Tensor, shape: tuple[int, ...], input: torch.Tensor, unbatched: bool) -> None:
    """``hx`` of a multi-layer GRU, reported in the caller's terms (torch's phrase first)."""
    check_floating("hx", hx)
    if hx.dim() != len(shape):
        kind = "unbatched 2-D" if unbatched else "batched 3-D"
        raise GRUInputError(
            with_torch_phrase(
                f"For {kind} input, hx should also be {len(shape)}-D but got {hx.dim()}-D tensor",
                f"hx must be {len(shape)}-D for {kind.split()[0]} input, shape {shape}; got {hx.dim()}-D",
            )
        )
    if tuple(hx.shape) != shape:
        raise GRUInputError(
            with_torch_phrase(
                f"Expected hidden size {shape}, got {list(hx.shape)}",
                f"hx must have shape {shape}; got {tuple(hx.shape)}",
            )
        )
    if hx.device != input.device:
        raise GRUInputError(
            with_torch_phrase(
                "Input and hidden tensors are not at the same device, found input tensor at "
                f"{input.device} and hidden tensor at {hx.device}",
                f"hx must be on the device of input ({input.device}); got {hx.device}",
            )
        )


def run_gru(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Weights,
    *,
    hidden_size: int,
    num_layers: int,
    batch_first: bool,
    dropout: float,
    training: bool,
    bidirectional: bool,
    variant: str,
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    allow_tf32: bool = False,
    hx_permutation: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gru` (or :func:`layernorm_gru`: six ``weights`` per layer and direction) for weights whose shapes
    are known to fit (``hidden_size``; the modules' own): checks the input's time length, ``hx``, dtypes and
    devices, then runs. ``hx_permutation``: batch order to put ``hx`` in after it is checked (a
    ``PackedSequence``'s ``sorted_indices``). Zoneout as :func:`gru`'s (a module's training call draws its seed
    here)."""
    seed = _zoneout_seed(zoneout, zoneout_seed, training)
    directions = 2 if bidirectional else 1
    per_layer = len(weights) // (num_layers * directions)  # a GRU's four tensors, or a LayerNorm-GRU's six
    unbatched = input.dim() == 2
    _check_not_empty_in_time(input, 1 if batch_first and not unbatched else 0)
    if unbatched:
        input = input.unsqueeze(1)
    elif batch_first:
        input = input.transpose(0, 1)
    T, B = input.shape[0], input.shape[1]
    state_shape = (num_layers * directions, B, hidden_size)
    if hx is not None:
        _check_gru_state(hx, (state_shape[0], hidden_size) if unbatched else state_shape, input, unbatched)
        if unbatched:
            hx = hx.unsqueeze(1)
    input, hx, weights, out_dtype = _autocast("layer", input, hx, weights)
    if hx is None:
        hx = input.new_zeros(state_shape)
    else:
        check_like("hx", hx, "input", input)
        if hx_permutation is not None:
            hx = hx.index_select(1, hx_permutation)
    for index in range(num_layers * directions):
        layer_weights = weights[per_layer * index : per_layer * (index + 1)]
        phrase = rnn_dtype_phrase(input.dtype, weights[0].dtype)
        check_weights_like(_layer_name(index, directions), layer_weights, input, phrase)
    if lengths is not None:
        lengths = check_lengths(lengths, B, T, input.device)

    with ops.no_autocast(input.device.type):
        layer_input, h_n = input, []
        for layer in range(num_layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                x = reverse_time(layer_input, lengths) if direction else layer_input
                zoned = _zoneout(zoneout, seed, layer, bool(direction))
                layer_weights = weights[per_layer * index : per_layer * (index + 1)]
                output, h = _layer(x, hx[index], layer_weights, variant, lengths, allow_tf32, zoned)
                outputs.append(reverse_time(output, lengths) if direction else output)
                h_n.append(h)
            layer_input = torch.cat(outputs, dim=-1) if directions > 1 else outputs[0]
            if training and dropout > 0 and layer < num_layers - 1:
                layer_input = F.dropout(layer_input, p=dropout, training=True)
    output, h_n = layer_input.to(out_dtype), torch.stack(h_n).to(out_dtype)
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
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    training: bool = False,
    num_heads: int = 1,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """One GRU step in one fused launch. ``input`` ``[B, I]`` or unbatched ``[I]``; ``hx`` ``[B, H]`` / ``[H]``
    or None (zeros). ``zoneout``, ``zoneout_seed`` and ``training``: see the module docstring (a step's masks are
    position 0 of layer 0: draw a new seed for every step); ``num_heads`` too. Returns ``h'`` shaped like ``hx``,
    differentiable to any order. Same signature as :func:`tritongru.reference.gru_cell_ref` (less
    ``zoneout_mask``)."""
    variant = check_variant(variant)
    check_zoneout(zoneout)
    check_zoneout_seed(zoneout_seed)
    check_cell_input(input)
    check_weights("", weight_ih, weight_hh, bias_ih, bias_hh, input.shape[-1], allow_empty=True, num_heads=num_heads)
    return run_cell(
        input,
        hx,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        variant=variant,
        allow_tf32=allow_tf32,
        zoneout=zoneout,
        zoneout_seed=zoneout_seed,
        training=training,
    )


def _check_cell_state(hx: torch.Tensor, shape: tuple[int, ...]) -> None:
    """``hx`` of a cell, reported in the caller's terms (torch's phrase first where torch has one)."""
    check_floating("hx", hx)
    if hx.dim() not in (1, 2):
        raise GRUInputError(
            with_torch_phrase(
                f"GRUCell: Expected hidden to be 1D or 2D, got {hx.dim()}D instead",
                f"hx must be {len(shape)}-D like input; got {hx.dim()}-D",
            )
        )
    if hx.dim() != len(shape):
        raise GRUInputError(f"hx must be {len(shape)}-D like input; got {hx.dim()}-D")
    if tuple(hx.shape) != shape:
        if len(shape) == 2 and hx.shape[0] != shape[0]:
            phrase = f"Input batch size {shape[0]} doesn't match hidden0 batch size {hx.shape[0]}"
        else:
            phrase = f"hidden0 has inconsistent hidden_size: got {hx.shape[-1]}, expected {shape[-1]}"
        raise GRUInputError(with_torch_phrase(phrase, f"hx must have shape {shape}; got {tuple(hx.shape)}"))


def run_cell(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None,
    bias_hh: torch.Tensor | None,
    *,
    variant: str,
    allow_tf32: bool,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    training: bool = False,
) -> torch.Tensor:
    """:func:`gru_cell` for a checked input and weights whose shapes fit it (the module's own): checks ``hx``,
    dtypes and devices, then runs. Zoneout as :func:`gru_cell`'s (a module's training call draws its seed
    here)."""
    weights = [weight_ih, weight_hh, bias_ih, bias_hh]
    return _run_step(input, hx, weights, variant, allow_tf32, zoneout, zoneout_seed, training)


def _run_step(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Weights,
    variant: str,
    allow_tf32: bool,
    zoneout: float,
    zoneout_seed: int | None,
    training: bool,
) -> torch.Tensor:
    """One checked step of a GRU cell (four ``weights``: one fused launch) or a LayerNorm-GRU cell (six: the
    layer's kernels over one step)."""
    zoned = _zoneout(zoneout, _zoneout_seed(zoneout, zoneout_seed, training), 0, False)
    unbatched = input.dim() == 1
    hidden = weights[1].shape[0] // 3
    state_shape = (hidden,) if unbatched else (input.shape[0], hidden)
    if hx is not None:
        _check_cell_state(hx, state_shape)
    input, hx, weights, out_dtype = _autocast("cell", input, hx, weights)
    if hx is None:
        hx = input.new_zeros(state_shape)
    check_like("hx", hx, "input", input)
    check_weights_like("", weights, input)
    if unbatched:
        input, hx = input.unsqueeze(0), hx.unsqueeze(0)
    layer_norm = len(weights) == len(LAYERNORM_WEIGHT_NAMES)
    with ops.no_autocast(input.device.type):
        if input.shape[0] == 0 or hidden == 0:
            cell_ref = reference.layernorm_gru_cell_ref if layer_norm else reference.gru_cell_ref
            h_new = cell_ref(input, hx, *weights, variant=variant, num_heads=launchers.num_heads_of(weights[1]))
        elif layer_norm:
            _, h_new = ops.layernorm_layer(input[None], hx, *weights, None, variant, allow_tf32, zoned)
        else:
            h_new = ops.cell(input, hx, *weights, variant, allow_tf32, zoned)
    h_new = h_new.to(out_dtype)
    return h_new.squeeze(0) if unbatched else h_new


# ------------------------------------------------------------------------------------------- LayerNorm-GRU


def layernorm_gru(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Weights,
    *,
    num_layers: int = 1,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    bidirectional: bool = False,
    variant: str = "cudnn",
    lengths: torch.Tensor | Sequence[int] | None = None,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    num_heads: int = 1,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A multi-layer, optionally bidirectional LayerNorm-GRU (Ba et al., 2016; the equations:
    :mod:`tritongru.reference`), every argument as :func:`gru`'s but ``weights``: for each layer and direction
    (forward first) ``weight_ih`` ``[3H, I]``, ``weight_hh`` ``[3H, H // num_heads]``, ``ln_ih_weight``,
    ``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` ``[3H]`` (the input-side and recurrent-side
    normalisations' gains and biases, gate order r, z, n; no other biases). Each gate's pre-activation is
    normalised over the ``H`` units of its row (with heads, over each head's ``d``). Same signature as
    :func:`tritongru.reference.layernorm_gru_ref` (less ``zoneout_mask``)."""
    variant = check_variant(variant)
    options = dict(
        num_layers=num_layers,
        batch_first=batch_first,
        dropout=dropout,
        training=training,
        bidirectional=bidirectional,
        variant=variant,
        lengths=lengths,
        zoneout=zoneout,
        zoneout_seed=zoneout_seed,
        allow_tf32=allow_tf32,
    )
    return _run_checked_stack(input, hx, weights, LAYERNORM_WEIGHT_NAMES, check_layernorm_weights, num_heads, **options)


def layernorm_gru_layer(
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
    lengths: torch.Tensor | Sequence[int] | None = None,
    reverse: bool = False,
    layer: int = 0,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    training: bool = False,
    num_heads: int = 1,
    allow_tf32: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LayerNorm-GRU layer, one direction, time-major: arguments and results as :func:`gru_layer`'s, the
    weights as :func:`layernorm_gru`'s (one layer's). Same signature as
    :func:`tritongru.reference.layernorm_gru_layer_ref` (less ``zoneout_mask``)."""
    variant = check_variant(variant)
    seed = _zoneout_seed(zoneout, zoneout_seed, training)
    _check_layer_input(input)
    weights = [weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias]
    hidden = check_layernorm_weights("", *weights, input.shape[2], num_heads=num_heads)
    return _run_layer(input, h0, weights, hidden, variant, lengths, reverse, layer, zoneout, seed, allow_tf32)


def layernorm_gru_cell(
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
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    training: bool = False,
    num_heads: int = 1,
    allow_tf32: bool = False,
) -> torch.Tensor:
    """One LayerNorm-GRU step: arguments as :func:`gru_cell`'s, the weights as :func:`layernorm_gru`'s (one
    layer's). Same signature as :func:`tritongru.reference.layernorm_gru_cell_ref` (less ``zoneout_mask``)."""
    variant = check_variant(variant)
    check_zoneout(zoneout)
    check_zoneout_seed(zoneout_seed)
    check_cell_input(input)
    weights = [weight_ih, weight_hh, ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias]
    check_layernorm_weights("", *weights, input.shape[-1], num_heads=num_heads)
    return run_layernorm_cell(
        input,
        hx,
        weights,
        variant=variant,
        allow_tf32=allow_tf32,
        zoneout=zoneout,
        zoneout_seed=zoneout_seed,
        training=training,
    )


def run_layernorm_cell(
    input: torch.Tensor,
    hx: torch.Tensor | None,
    weights: Weights,
    *,
    variant: str,
    allow_tf32: bool,
    zoneout: float = 0.0,
    zoneout_seed: int | None = None,
    training: bool = False,
) -> torch.Tensor:
    """:func:`layernorm_gru_cell` for a checked input and the six ``weights`` of a module (as :func:`run_cell`)."""
    return _run_step(input, hx, weights, variant, allow_tf32, zoneout, zoneout_seed, training)
