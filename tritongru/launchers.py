"""Host launchers of the recurrent kernels: check shapes, allocate outputs, choose a config, launch.

Every tensor handed in must be contiguous and on one device (the autograd layer above makes it so). Values
that cross time steps (the hidden states ``hs``, the saved gates, gate gradients) are kept in the *compute
dtype*: float32, or float64 for float64 inputs, whatever the storage dtype of inputs and weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import triton
import triton.language as tl

from tritongru.configs import KernelConfig, select_config
from tritongru.kernels.backward import gru_backward_kernel
from tritongru.kernels.forward import gru_forward_kernel

SAVED_GATES = {"cudnn": 4, "classic": 3}
"""Gate activations saved per hidden unit for backward: cudnn r, z, n, W_hn h + b_hn; classic R, Z, H~."""


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Dtype of accumulation, activations and the hidden state between steps for a storage ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _dot_precision(dtype: torch.dtype, allow_tf32: bool) -> str:
    """``tf32`` only where asked for and meaningful (float32 operands); exact products otherwise."""
    return "tf32" if allow_tf32 and dtype == torch.float32 else "ieee"


@contextlib.contextmanager
def _on_device(device: torch.device) -> Iterator[None]:
    """Make ``device`` current so Triton launches on it (tensors may live on any CUDA device)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            yield
    else:
        yield


def _resolve_config(
    config: KernelConfig | None,
    kernel: str,
    variant: str,
    weight: torch.Tensor,
    batch: int,
    hidden: int,
    input_size: int,
    allow_tf32: bool,
) -> KernelConfig:
    if config is not None:
        return config
    return select_config(
        kernel,
        variant=variant,
        dtype=weight.dtype,
        batch=batch,
        hidden=hidden,
        input_size=input_size,
        device=weight.device,
        allow_tf32=allow_tf32,
    )


def _phases(variant: str, persistent: bool) -> list[tuple[bool, bool]]:
    """``(RUN_PHASE_1, RUN_PHASE_2)`` per launch of one step: both in one launch unless the classic form is
    run per step, where the launch boundary is the barrier between its phases."""
    if variant == "classic" and not persistent:
        return [(True, False), (False, True)]
    return [(True, True)]


def _grid(config: KernelConfig, batch: int, hidden: int) -> tuple[int, int]:
    n_h_programs = 1 if config.persistent else triton.cdiv(hidden, config.block_h)
    return (triton.cdiv(batch, config.block_b), n_h_programs)


def _launch_forward(
    *,
    gi,
    x,
    w_ih,
    b_ih,
    hs,
    w_hh,
    b_hh,
    gates,
    rh,
    lengths,
    variant,
    allow_tf32,
    config,
    input_size,
) -> None:
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    placeholder = hs  # pointer arguments that the constexpr flags leave unread
    fused_input = x is not None
    grid = _grid(config, B, H)
    steps = [(0, T)] if config.persistent else [(t, t + 1) for t in range(T)]
    with _on_device(hs.device):
        for t_begin, t_end in steps:
            for run_phase_1, run_phase_2 in _phases(variant, config.persistent):
                gru_forward_kernel[grid](
                    gi if gi is not None else placeholder,
                    x if fused_input else placeholder,
                    w_ih if fused_input else placeholder,
                    b_ih if b_ih is not None else placeholder,
                    hs,
                    w_hh,
                    b_hh if b_hh is not None else placeholder,
                    gates if gates is not None else placeholder,
                    rh if rh is not None else placeholder,
                    lengths if lengths is not None else placeholder,
                    t_begin,
                    t_end,
                    B,
                    H,
                    input_size,
                    CLASSIC=variant == "classic",
                    RUN_PHASE_1=run_phase_1,
                    RUN_PHASE_2=run_phase_2,
                    FUSE_INPUT=fused_input,
                    HAS_BIAS=b_hh is not None,
                    HAS_LENGTHS=lengths is not None,
                    STORE_GATES=gates is not None,
                    ACC_DTYPE=_acc_dtype(hs.dtype),
                    DOT_PRECISION=_dot_precision(w_hh.dtype, allow_tf32),
                    BLOCK_B=config.block_b,
                    BLOCK_H=config.block_h,
                    BLOCK_K=config.block_k,
                    num_warps=config.num_warps,
                    num_stages=config.num_stages,
                )


def forward_sequence(
    gi: torch.Tensor,
    h0: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor | None,
    *,
    variant: str,
    lengths: torch.Tensor | None = None,
    store_gates: bool = False,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the recurrence of one layer and direction over a whole sequence.

    ``gi`` ``[T, B, 3H]``: the input projection ``x @ W_ih^T + b_ih`` (storage dtype); ``h0`` ``[B, H]``;
    ``w_hh`` ``[3H, H]``; ``b_hh`` ``[3H]`` or None; ``lengths`` int64 ``[B]`` (rows stop updating at their
    length) or None. Returns ``hs`` ``[T+1, B, H]`` in the compute dtype (``hs[0] = h0``, ``hs[t+1] = h_t``)
    and, when ``store_gates``, the gates saved for :func:`backward_sequence` (else None).
    """
    T, B, H = gi.shape[0], gi.shape[1], w_hh.shape[1]
    dtype = compute_dtype(w_hh.dtype)
    hs = torch.empty((T + 1, B, H), dtype=dtype, device=gi.device)
    hs[0].copy_(h0)
    gates = torch.empty((T, B, SAVED_GATES[variant] * H), dtype=dtype, device=gi.device) if store_gates else None
    rh = torch.empty((B, H), dtype=dtype, device=gi.device) if variant == "classic" else None
    config = _resolve_config(config, "forward", variant, w_hh, B, H, 0, allow_tf32)
    _launch_forward(
        gi=gi,
        x=None,
        w_ih=None,
        b_ih=None,
        hs=hs,
        w_hh=w_hh,
        b_hh=b_hh,
        gates=gates,
        rh=rh,
        lengths=lengths,
        variant=variant,
        allow_tf32=allow_tf32,
        config=config,
        input_size=0,
    )
    return hs, gates


def cell_forward(
    x: torch.Tensor,
    h: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    *,
    variant: str,
    store_gates: bool = False,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One GRU step as one launch: the concat-matmul ``[h, x] @ [W_hh | W_ih]^T``, gates and interpolation.

    ``x`` ``[B, I]``, ``h`` ``[B, H]``, ``w_ih`` ``[3H, I]``, ``w_hh`` ``[3H, H]``, biases ``[3H]`` or None
    (both or neither). Returns ``h'`` ``[B, H]`` in the compute dtype and, when ``store_gates``, the gates
    ``[1, B, NG*H]`` for :func:`backward_sequence` with ``T = 1``. The classic form's two phases run inside the
    launch, so the cell always uses a persistent config.
    """
    B, H, input_size = x.shape[0], w_hh.shape[1], x.shape[1]
    dtype = compute_dtype(w_hh.dtype)
    hs = torch.empty((2, B, H), dtype=dtype, device=x.device)
    hs[0].copy_(h)
    gates = torch.empty((1, B, SAVED_GATES[variant] * H), dtype=dtype, device=x.device) if store_gates else None
    rh = torch.empty((B, H), dtype=dtype, device=x.device) if variant == "classic" else None
    config = _resolve_config(config, "cell", variant, w_hh, B, H, input_size, allow_tf32)
    if not config.persistent:
        raise ValueError("the cell kernel runs as one launch: its config must be persistent")
    _launch_forward(
        gi=None,
        x=x,
        w_ih=w_ih,
        b_ih=b_ih,
        hs=hs,
        w_hh=w_hh,
        b_hh=b_hh,
        gates=gates,
        rh=rh,
        lengths=None,
        variant=variant,
        allow_tf32=allow_tf32,
        config=config,
        input_size=input_size,
    )
    return hs[1], gates


def backward_sequence(
    grad_hs: torch.Tensor,
    hs: torch.Tensor,
    gates: torch.Tensor,
    w_hh: torch.Tensor,
    *,
    variant: str,
    lengths: torch.Tensor | None = None,
    allow_tf32: bool = False,
    config: KernelConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The ``dh`` recurrence (BPTT) of one layer and direction.

    ``grad_hs`` ``[T+1, B, H]`` compute dtype: row ``t+1`` is ``dL/dh_t`` from outside the recurrence (the
    output's gradient, plus ``h_n``'s in row ``T``); row 0 is not read. ``hs`` and ``gates`` as returned by
    :func:`forward_sequence`. Returns ``dgates_x`` ``[T, B, 3H]`` (the gradient of the input projection ``gi``:
    ``[dar, daz, dan]``), ``dgates_hn`` ``[T, B, H]`` (cudnn: the gradient of ``W_hn h + b_hn``; None for
    classic, whose hidden-side gate gradients equal ``dgates_x``) and ``dh0`` ``[B, H]``, all compute dtype.
    """
    T, B, H = gates.shape[0], hs.shape[1], hs.shape[2]
    dtype = hs.dtype
    carry = torch.zeros((2, B, H), dtype=dtype, device=hs.device)
    dgates_x = torch.empty((T, B, 3 * H), dtype=dtype, device=hs.device)
    dgates_hn = torch.empty((T, B, H), dtype=dtype, device=hs.device) if variant == "cudnn" else None
    config = _resolve_config(config, "backward", variant, w_hh, B, H, 0, allow_tf32)
    grid = _grid(config, B, H)
    steps = [(T, 0)] if config.persistent else [(t + 1, t) for t in reversed(range(T))]
    with _on_device(hs.device):
        for t_hi, t_lo in steps:
            for run_phase_1, run_phase_2 in _phases(variant, config.persistent):
                gru_backward_kernel[grid](
                    grad_hs,
                    carry,
                    hs,
                    gates,
                    w_hh,
                    dgates_x,
                    dgates_hn if dgates_hn is not None else dgates_x,
                    lengths if lengths is not None else carry,
                    t_hi,
                    t_lo,
                    B,
                    H,
                    CLASSIC=variant == "classic",
                    RUN_PHASE_1=run_phase_1,
                    RUN_PHASE_2=run_phase_2,
                    HAS_LENGTHS=lengths is not None,
                    ACC_DTYPE=_acc_dtype(dtype),
                    DOT_PRECISION=_dot_precision(w_hh.dtype, allow_tf32),
                    BLOCK_B=config.block_b,
                    BLOCK_H=config.block_h,
                    BLOCK_K=config.block_k,
                    num_warps=config.num_warps,
                    num_stages=config.num_stages,
                )
    # step 0 wrote dL/dh_{-1} = dL/dh0 to slot (0 + 1) % 2
    return dgates_x, dgates_hn, carry[1]
