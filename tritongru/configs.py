"""Launch configurations: one place where every launcher gets its block sizes, warps and stages.

A :class:`KernelConfig` is what the autotuning harness (:mod:`tritongru.tuning`) searches over and stores.
:func:`select_config` is the lookup every launcher calls: the tuning cache first, then :func:`heuristic_config`.
Under Triton's interpreter (CPU) tuning collapses to the heuristic's single config.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch

from tritongru import tuning_cache
from tritongru.environment import interpreting

KERNELS = ("forward", "backward", "cell")
"""Kernel names used as tuning keys: the sequence forward, the sequence backward (BPTT), the fused cell."""

MIN_BLOCK = 16
"""``tl.dot`` needs every tile dimension to be at least 16 on the GPU."""


@dataclass(frozen=True)
class KernelConfig:
    """Block sizes and launch parameters of one recurrent kernel launch.

    ``block_b`` batch rows and ``block_h`` hidden units per tile, ``block_k`` the reduction chunk of the
    hidden (and, for the cell, input) product. ``persistent=True`` keeps the whole time loop inside one launch
    (one program per batch block, looping over every hidden tile); ``False`` launches once per step (and phase)
    with one program per (batch block, hidden tile).
    """

    block_b: int
    block_h: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 2
    persistent: bool = True

    def __post_init__(self) -> None:
        for name in ("block_b", "block_h", "block_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < MIN_BLOCK or value & (value - 1):
                raise ValueError(f"{name} must be a power of two >= {MIN_BLOCK}; got {value!r}")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"num_warps must be one of 1, 2, 4, 8, 16; got {self.num_warps!r}")
        if not isinstance(self.num_stages, int) or self.num_stages < 1:
            raise ValueError(f"num_stages must be a positive int; got {self.num_stages!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> KernelConfig:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def _pow2_clamp(n: int, low: int, high: int) -> int:
    return max(low, min(high, 1 << max(0, n - 1).bit_length()))


PERSISTENT_MAX_HIDDEN = 256
"""Widest hidden size the heuristic runs persistently: one program per batch block then owns few enough
hidden tiles that the sequential loop over them costs less than a launch per step."""


def heuristic_config(kernel: str, batch: int, hidden: int) -> KernelConfig:
    """A config that is correct for every shape and reasonable without tuning."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {kernel!r}")
    if interpreting():
        # Few, large tiles: the interpreter's cost is per program and per tile, not per element.
        block = _pow2_clamp(hidden, MIN_BLOCK, 64)
        return KernelConfig(block_b=_pow2_clamp(batch, MIN_BLOCK, 64), block_h=block, block_k=block)
    return KernelConfig(
        block_b=16 if batch <= 16 else 32,
        block_h=_pow2_clamp(hidden, MIN_BLOCK, 64),
        block_k=_pow2_clamp(hidden, MIN_BLOCK, 32),
        num_warps=4,
        num_stages=2,
        persistent=kernel == "cell" or hidden <= PERSISTENT_MAX_HIDDEN,
    )


def select_config(
    kernel: str,
    *,
    variant: str,
    dtype: torch.dtype,
    batch: int,
    hidden: int,
    input_size: int,
    device: torch.device,
    allow_tf32: bool = False,
) -> KernelConfig:
    """The config a launcher uses: the tuned winner for this key if one is cached, else the heuristic.

    The cell kernel always runs as one launch (both phases of the classic form inside it), so a cached
    config for it is only used when it is persistent.
    """
    if not interpreting() and device.type == "cuda":
        tuned = tuning_cache.lookup(
            kernel,
            variant=variant,
            dtype=dtype,
            batch=batch,
            hidden=hidden,
            input_size=input_size,
            device=device,
            allow_tf32=allow_tf32,
        )
        if tuned is not None:
            try:
                config = KernelConfig.from_dict(tuned)
            except (TypeError, ValueError) as error:
                warnings.warn(f"ignoring an invalid tuned config for {kernel!r}: {error}", stacklevel=2)
            else:
                if kernel != "cell" or config.persistent:
                    return config
    return heuristic_config(kernel, batch, hidden)
