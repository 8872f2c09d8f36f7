"""Input checks shared by the functional API and the modules, run once per call before any kernel launches.

Errors are catchable the way ``torch.nn.GRU``'s are: :class:`GRUInputError` derives from both ``ValueError`` and
``RuntimeError`` (torch raises either, depending on the check), :class:`GRUDtypeError` from ``TypeError``,
``ValueError`` and ``RuntimeError``. Where torch has a message for the same mistake, tritongru's message starts
with torch's phrase and adds its own detail in parentheses: what was expected, what came, which argument.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

from tritongru.environment import interpreting
from tritongru.zoneout import MAX_SEED

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

INTERPRETING_AT_IMPORT = interpreting()
"""Whether Triton's interpreter was on when tritongru (and so its ``@triton.jit`` kernels) was imported: Triton
fixes the choice per kernel at definition, so a later ``TRITON_INTERPRET=1`` cannot take effect."""


class GRUInputError(ValueError, RuntimeError):
    """A shape, size, device, length or option tritongru cannot run: a ``ValueError`` and, like the
    ``RuntimeError``s of torch's own GRU checks, a ``RuntimeError``."""


class GRUDtypeError(TypeError, ValueError, RuntimeError):
    """A dtype tritongru cannot run, or dtypes that disagree: a ``TypeError``, and a ``ValueError``/``RuntimeError``
    as torch's GRU (``ValueError``) and GRUCell (``RuntimeError``) raise for the same mistakes."""


def with_torch_phrase(phrase: str, detail: str) -> str:
    """``"<torch's phrase> (<tritongru's detail>)"``."""
    return f"{phrase} ({detail})"


def check_floating(name: str, tensor: object) -> torch.Tensor:
    """``tensor`` must be a tensor (``TypeError``) of a supported floating dtype (:class:`GRUDtypeError`)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        raise GRUDtypeError(f"{name} must have a floating dtype ({names}); got {tensor.dtype}")
    return tensor


def check_device(name: str, tensor: torch.Tensor) -> None:
    """Triton kernels run on CUDA, or on the CPU through Triton's interpreter only."""
    if tensor.device.type == "cuda":
        return
    if tensor.device.type == "cpu" and interpreting():
        if not INTERPRETING_AT_IMPORT:
            raise GRUInputError(
                f"{name} is on the CPU and TRITON_INTERPRET is set, but it was set after tritongru was imported: "
                "Triton chooses its interpreter when the kernels are defined, at import. Set TRITON_INTERPRET=1 "
                "before importing tritongru or triton (in the shell, or first thing in the script or conftest.py)"
            )
        return
    if tensor.device.type == "cpu":
        raise GRUInputError(
            f"{name} is on the CPU: tritongru's Triton kernels need a CUDA device (or Triton's interpreter, "
            "TRITON_INTERPRET=1 set before triton is imported); use tritongru.reference on the CPU"
        )
    raise GRUInputError(f"{name} is on {tensor.device}: tritongru's Triton kernels need a CUDA device")


def check_like(name: str, tensor: torch.Tensor, ref_name: str, ref: torch.Tensor, torch_phrase: str = "") -> None:
    """``tensor`` must share ``ref``'s dtype (:class:`GRUDtypeError`) and device (:class:`GRUInputError`);
    ``torch_phrase`` leads a dtype error."""
    if tensor.dtype != ref.dtype:
        detail = f"{name} must have the dtype of {ref_name} ({ref.dtype}); got {tensor.dtype}"
        raise GRUDtypeError(with_torch_phrase(torch_phrase, detail) if torch_phrase else detail)
    if tensor.device != ref.device:
        raise GRUInputError(f"{name} must be on the device of {ref_name} ({ref.device}); got {tensor.device}")


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], what: str = "") -> None:
    if tuple(tensor.shape) != tuple(expected):
        detail = f" ({what})" if what else ""
        raise GRUInputError(f"{name} must have shape {tuple(expected)}{detail}; got {tuple(tensor.shape)}")


def check_weights(
    prefix: str,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None,
    bias_hh: torch.Tensor | None,
    input_size: int,
    *,
    allow_empty: bool = False,
    num_heads: int = 1,
) -> int:
    """Check one layer's weight shapes and dtypes against each other and ``input_size``; return ``H``.

    ``allow_empty``: ``H = 0`` is accepted (``torch.nn.GRUCell(10, 0)`` is valid; ``torch.nn.GRU(10, 0)`` is not).
    ``num_heads``: ``weight_hh`` holds the diagonal blocks of a block-diagonal recurrent weight, shape
    ``(3*hidden_size, hidden_size // num_heads)`` (``num_heads=1``: the dense ``(3*hidden_size, hidden_size)``).
    """
    check_floating(f"{prefix}weight_hh", weight_hh)
    check_floating(f"{prefix}weight_ih", weight_ih)
    if num_heads == 1 and not isinstance(num_heads, bool):
        if weight_hh.dim() != 2 or weight_hh.shape[0] != 3 * weight_hh.shape[1]:
            raise GRUInputError(
                f"{prefix}weight_hh must have shape (3*hidden_size, hidden_size); got {tuple(weight_hh.shape)}"
            )
    else:
        if weight_hh.dim() != 2 or weight_hh.shape[0] % 3:
            raise GRUInputError(
                f"{prefix}weight_hh must have shape (3*hidden_size, hidden_size // num_heads); got "
                f"{tuple(weight_hh.shape)}"
            )
        check_num_heads(num_heads, weight_hh.shape[0] // 3)
        if weight_hh.shape[0] != 3 * num_heads * weight_hh.shape[1]:
            raise GRUInputError(
                f"{prefix}weight_hh must have shape (3*hidden_size, hidden_size // num_heads) with num_heads="
                f"{num_heads}; got {tuple(weight_hh.shape)}"
            )
    hidden = weight_hh.shape[0] // 3
    if hidden == 0 and not (allow_empty and weight_ih.dim() == 2 and weight_ih.shape[0] == 0):
        raise GRUInputError(
            f"{prefix}weight_hh must have shape (3*hidden_size, hidden_size) with hidden_size > 0"
            f"{' (or weight_ih with 0 rows too)' if allow_empty else ''}; got {tuple(weight_hh.shape)}"
        )
    check_shape(f"{prefix}weight_ih", weight_ih, (3 * hidden, input_size), "3*hidden_size, input_size")
    if (bias_ih is None) != (bias_hh is None):
        raise GRUInputError(f"{prefix}bias_ih and {prefix}bias_hh must be given together or both be None")
    for bias_name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
        if bias is not None:
            check_floating(f"{prefix}{bias_name}", bias)
            check_shape(f"{prefix}{bias_name}", bias, (3 * hidden,), "3*hidden_size")
    return hidden


def check_layernorm_weights(
    prefix: str,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    ln_ih_weight: torch.Tensor,
    ln_ih_bias: torch.Tensor,
    ln_hh_weight: torch.Tensor,
    ln_hh_bias: torch.Tensor,
    input_size: int,
    *,
    num_heads: int = 1,
) -> int:
    """:func:`check_weights` for one LayerNorm-GRU layer (no ``bias_ih``/``bias_hh``), and its four
    normalisation gains and biases, each ``(3*hidden_size,)``; return ``H``."""
    hidden = check_weights(prefix, weight_ih, weight_hh, None, None, input_size, num_heads=num_heads)
    for name, tensor in zip(
        LAYERNORM_WEIGHT_NAMES[2:], (ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias), strict=True
    ):
        check_floating(f"{prefix}{name}", tensor)
        check_shape(f"{prefix}{name}", tensor, (3 * hidden,), "3*hidden_size")
    return hidden


GRU_WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
LAYERNORM_WEIGHT_NAMES = ("weight_ih", "weight_hh", "ln_ih_weight", "ln_ih_bias", "ln_hh_weight", "ln_hh_bias")
"""One layer's tensors, in the order the functional API takes them: a GRU's and a LayerNorm-GRU's."""


def check_weights_like(
    prefix: str, weights: Sequence[torch.Tensor | None], input: torch.Tensor, torch_phrase: str = ""
) -> None:
    """Every tensor of one layer (:data:`GRU_WEIGHT_NAMES` or :data:`LAYERNORM_WEIGHT_NAMES`) shares
    ``input``'s dtype and device."""
    names = LAYERNORM_WEIGHT_NAMES if len(weights) == len(LAYERNORM_WEIGHT_NAMES) else GRU_WEIGHT_NAMES
    for name, tensor in zip(names, weights, strict=True):
        if tensor is not None:
            check_like(f"{prefix}{name}", tensor, "input", input, torch_phrase)


def rnn_dtype_phrase(input_dtype: torch.dtype, weight_dtype: torch.dtype) -> str:
    """torch.nn.GRU's words for an input whose dtype is not its weights'."""
    return (
        f"RNN input dtype ({input_dtype}) does not match weight dtype ({weight_dtype}). "
        f"Convert input: input.to({weight_dtype}), or convert model: model.to({input_dtype})"
    )


def check_lengths(lengths: object, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Sequence lengths: ``batch`` integers in ``[1, steps]``; returned as int64 on ``device``.

    Values are range-checked where they live on the host (a list, a CPU tensor) outside ``torch.compile``: no
    device synchronisation. Lengths on the device are taken as they are (a length above ``steps`` acts as
    ``steps``; below 1, the sequence keeps its initial state and outputs zeros).
    """
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"lengths must be a 1-D tensor or sequence of ints; got {type(lengths).__name__}"
            ) from error
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise GRUDtypeError(f"lengths must hold integers; got {lengths.dtype}")
    check_shape("lengths", lengths, (batch,), "one length per batch element")
    if batch and lengths.device.type == "cpu" and not torch.compiler.is_compiling():
        low, high = int(lengths.min()), int(lengths.max())
        if low < 1 or high > steps:
            raise GRUInputError(
                f"lengths must lie in [1, {steps}] (the sequence length); got values from {low} to {high}"
            )
    return lengths.to(device=device, dtype=torch.int64, non_blocking=True)


def check_sequence_input(input: object) -> torch.Tensor:
    """A sequence input: a floating tensor, 2-D (unbatched) or 3-D (batched), on a device the kernels run on."""
    check_floating("input", input)
    if input.dim() not in (2, 3):
        raise GRUInputError(
            with_torch_phrase(
                f"GRU: Expected input to be 2D or 3D, got {input.dim()}D instead",
                "input must be 2-D (unbatched: L, H_in) or 3-D (batched: L, N, H_in, or N, L, H_in with "
                f"batch_first); got {input.dim()}-D of shape {tuple(input.shape)}",
            )
        )
    check_device("input", input)
    return input


def check_cell_input(input: object) -> torch.Tensor:
    """A cell input: a floating tensor, 1-D (unbatched) or 2-D (batched), on a device the kernels run on."""
    check_floating("input", input)
    if input.dim() not in (1, 2):
        raise GRUInputError(
            with_torch_phrase(
                f"GRUCell: Expected input to be 1D or 2D, got {input.dim()}D instead",
                f"input must be 1-D (unbatched: input_size) or 2-D (batch, input_size); got {input.dim()}-D",
            )
        )
    check_device("input", input)
    return input


def check_input_size(input: torch.Tensor, input_size: int, cell: bool = False) -> None:
    """A module's weights are right by construction: a size mismatch is the input's, and is reported so."""
    if input.shape[-1] != input_size:
        phrase = (
            f"input has inconsistent input_size: got {input.shape[-1]} expected {input_size}"
            if cell
            else f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.shape[-1]}"
        )
        detail = f"input must have input_size={input_size} features in its last dimension; got {input.shape[-1]}"
        raise GRUInputError(with_torch_phrase(phrase, detail))


def _is_int(value: object) -> bool:
    """An integer that is not a bool (``True`` as a count or a seed is a slip, as torch's checks treat it)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_num_heads(num_heads: object, hidden_size: int) -> int:
    """``num_heads``: a positive int that divides ``hidden_size`` (each head owns ``hidden_size // num_heads``
    units); returned as an int."""
    if not _is_int(num_heads):
        raise GRUDtypeError(
            f"num_heads must be an int (heads of the block-diagonal recurrent weight); got {type(num_heads).__name__}"
        )
    if num_heads < 1 or hidden_size % num_heads:
        raise GRUInputError(
            f"num_heads must be a positive int that divides hidden_size={hidden_size} (each head owns "
            f"hidden_size // num_heads units); got {num_heads}"
        )
    return int(num_heads)


def check_zoneout(zoneout: object) -> float:
    """``zoneout``: a float in ``[0, 1)``, the probability that a unit keeps its previous state at a step;
    returned as a float."""
    if not isinstance(zoneout, numbers.Real) or isinstance(zoneout, bool):
        raise GRUDtypeError(
            f"zoneout must be a float in [0, 1) (the probability that a unit keeps its state); "
            f"got {type(zoneout).__name__}"
        )
    if not 0 <= zoneout < 1:
        raise GRUInputError(
            f"zoneout must be a float in [0, 1) (the probability that a unit keeps its state); got {zoneout}"
        )
    return float(zoneout)


def check_zoneout_seed(zoneout_seed: object) -> int | None:
    """``zoneout_seed``: None (drawn from torch's generator) or an int in ``[0, 2**63 - 1]``; returned as an int."""
    if zoneout_seed is None:
        return None
    if not _is_int(zoneout_seed):
        raise GRUDtypeError(f"zoneout_seed must be an int or None; got {type(zoneout_seed).__name__}")
    if not 0 <= zoneout_seed <= MAX_SEED:
        raise GRUInputError(f"zoneout_seed must be an int in [0, 2**63 - 1] or None; got {zoneout_seed}")
    return int(zoneout_seed)


def check_zoneout_mask(zoneout_mask: object, expected: tuple[int, ...], what: str) -> torch.Tensor:
    """An explicit zoneout mask: a bool tensor (True where a unit keeps its previous state) of shape ``expected``."""
    if not isinstance(zoneout_mask, torch.Tensor):
        raise GRUDtypeError(f"zoneout_mask must be a bool torch.Tensor or None; got {type(zoneout_mask).__name__}")
    if zoneout_mask.dtype != torch.bool:
        raise GRUDtypeError(
            f"zoneout_mask must be a bool tensor (True where a unit keeps its state); got {zoneout_mask.dtype}"
        )
    check_shape("zoneout_mask", zoneout_mask, expected, what)
    return zoneout_mask
