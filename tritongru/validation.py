"""Input checks shared by the functional API and the modules. Each raises ``TypeError``/``ValueError`` naming
the argument, what was expected and what came, before any kernel is launched."""

from __future__ import annotations

import torch

from tritongru.environment import interpreting

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_floating(name: str, tensor: object) -> torch.Tensor:
    """``tensor`` must be a tensor of a supported floating dtype."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(tensor).__name__}")
    if tensor.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d).removeprefix("torch.") for d in SUPPORTED_DTYPES)
        raise TypeError(f"{name} must have a floating dtype ({names}); got {tensor.dtype}")
    return tensor


def check_device(name: str, tensor: torch.Tensor) -> None:
    """Triton kernels run on CUDA, or on the CPU through Triton's interpreter only."""
    if tensor.device.type == "cuda" or (tensor.device.type == "cpu" and interpreting()):
        return
    if tensor.device.type == "cpu":
        raise ValueError(
            f"{name} is on the CPU: tritongru's Triton kernels need a CUDA device (or Triton's interpreter, "
            "TRITON_INTERPRET=1 set before triton is imported); use tritongru.reference on the CPU"
        )
    raise ValueError(f"{name} is on {tensor.device}: tritongru's Triton kernels need a CUDA device")


def check_like(name: str, tensor: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """``tensor`` must share ``ref``'s dtype (``TypeError``) and device (``ValueError``)."""
    if tensor.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}); got {tensor.dtype}")
    if tensor.device != ref.device:
        raise ValueError(f"{name} must be on the device of {ref_name} ({ref.device}); got {tensor.device}")


def check_shape(name: str, tensor: torch.Tensor, expected: tuple[int, ...], what: str = "") -> None:
    if tuple(tensor.shape) != tuple(expected):
        detail = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {tuple(expected)}{detail}; got {tuple(tensor.shape)}")


def check_weights(
    prefix: str,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor | None,
    bias_hh: torch.Tensor | None,
    input_size: int,
    ref_name: str,
    ref: torch.Tensor,
) -> int:
    """Check one layer's weights against each other, ``input_size`` and the input tensor; return ``H``."""
    check_floating(f"{prefix}weight_hh", weight_hh)
    if weight_hh.dim() != 2 or weight_hh.shape[0] != 3 * weight_hh.shape[1] or weight_hh.shape[1] == 0:
        raise ValueError(
            f"{prefix}weight_hh must have shape (3*hidden_size, hidden_size); got {tuple(weight_hh.shape)}"
        )
    hidden = weight_hh.shape[1]
    check_floating(f"{prefix}weight_ih", weight_ih)
    check_shape(f"{prefix}weight_ih", weight_ih, (3 * hidden, input_size), "3*hidden_size, input_size")
    if (bias_ih is None) != (bias_hh is None):
        raise ValueError(f"{prefix}bias_ih and {prefix}bias_hh must be given together or both be None")
    tensors = {"weight_ih": weight_ih, "weight_hh": weight_hh}
    if bias_ih is not None:
        for bias_name, bias in (("bias_ih", bias_ih), ("bias_hh", bias_hh)):
            check_floating(f"{prefix}{bias_name}", bias)
            check_shape(f"{prefix}{bias_name}", bias, (3 * hidden,), "3*hidden_size")
            tensors[bias_name] = bias
    for tensor_name, tensor in tensors.items():
        check_like(f"{prefix}{tensor_name}", tensor, ref_name, ref)
    return hidden


def check_lengths(lengths: object, batch: int, steps: int, device: torch.device) -> torch.Tensor:
    """Sequence lengths: ``batch`` integers in ``[1, steps]``; returned as int64 on ``device``."""
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(
                f"lengths must be a 1-D tensor or sequence of ints; got {type(lengths).__name__}"
            ) from error
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers; got {lengths.dtype}")
    check_shape("lengths", lengths, (batch,), "one length per batch element")
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(
            f"lengths must lie in [1, {steps}] (the sequence length); got values from {int(lengths.min())} "
            f"to {int(lengths.max())}"
        )
    return lengths.to(device=device, dtype=torch.int64)
