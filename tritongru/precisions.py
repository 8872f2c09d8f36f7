"""The ground floor of numerics: the precisions tritongru runs in, named once.

A precision is a storage dtype plus whether float32 products may use TF32. Everything that crosses a time
step or accumulates (the recurrent state, activations, sums) is kept in the *compute dtype*: float64 for
float64 storage, float32 for everything else. ``tf32`` is its own precision everywhere a precision is a key
(tuning cache, results, tolerances), because its numbers differ from IEEE float32's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """``name`` (``"fp32"``, ``"tf32"``, ``"bf16"``, ``"fp16"``, ``"fp64"``), the storage ``dtype``, whether
    float32 products use TF32, and the tolerance of tritongru against a float64 reference computed on the
    same (rounded) inputs: ``|actual - expected| <= atol + rtol * |expected|``."""

    name: str
    dtype: torch.dtype
    allow_tf32: bool
    atol: float
    rtol: float

    @property
    def compute_dtype(self) -> torch.dtype:
        """Accumulation, activations and the recurrent state."""
        return compute_dtype(self.dtype)

    @property
    def dot_precision(self) -> str:
        """``input_precision`` of the kernels' ``tl.dot``: ``"tf32"`` or exact ``"ieee"``."""
        return "tf32" if self.allow_tf32 else "ieee"


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp64", torch.float64, False, atol=1e-10, rtol=1e-8),
        Precision("fp32", torch.float32, False, atol=2e-5, rtol=1e-4),
        Precision("tf32", torch.float32, True, atol=1e-2, rtol=1e-2),
        Precision("bf16", torch.bfloat16, False, atol=3e-2, rtol=3e-2),
        Precision("fp16", torch.float16, False, atol=5e-3, rtol=5e-3),
    )
}
"""Every precision by name. The tolerances are the ones the test suite and the tuning gate hold kernels to."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The compute dtype of a storage ``dtype``: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def precision_of(dtype: torch.dtype, allow_tf32: bool = False) -> Precision:
    """The precision of a run: storage ``dtype``, with TF32 products only where asked for and meaningful
    (float32 storage). Raises ``ValueError`` for a dtype tritongru does not run in."""
    for precision in PRECISIONS.values():
        if precision.dtype == dtype and precision.allow_tf32 == (allow_tf32 and dtype == torch.float32):
            return precision
    raise ValueError(f"no tritongru precision stores {dtype}; expected one of float16, bfloat16, float32, float64")
