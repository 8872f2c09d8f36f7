"""``torch.autograd.Function``s of one GRU layer (one direction, whole sequence) and of one GRU cell step.

Forward saves only what backward needs: the input (for ``dW_ih``), the weights, the hidden states ``hs`` and
the gate activations. Backward runs the ``dh`` recurrence in the backward kernel, then forms every parameter
and input gradient as one large product over all steps (``torch.matmul``: cuBLAS on the GPU, deterministic).
"""

from __future__ import annotations

import torch

from tritongru.launchers import backward_sequence, cell_forward, forward_sequence


def input_projection(input: torch.Tensor, weight_ih: torch.Tensor, bias_ih: torch.Tensor | None) -> torch.Tensor:
    """``x @ W_ih^T + b_ih`` for every step at once: ``[T, B, I]`` → ``[T, B, 3H]`` (storage dtype).

    It has no time dependency, so it leaves the recurrence as one large GEMM. ``torch.matmul`` (cuBLAS) is
    used rather than a Triton GEMM: for a plain dense product it is already at the roofline, and it follows
    torch's own TF32 setting (``torch.backends.cuda.matmul.allow_tf32``).
    """
    T, B, input_size = input.shape
    flat = input.reshape(T * B, input_size)
    gi = torch.addmm(bias_ih, flat, weight_ih.t()) if bias_ih is not None else flat @ weight_ih.t()
    return gi.reshape(T, B, -1)


def sequence_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``[T, B, 1]`` bool, True where step ``t`` is inside sequence ``b`` (``t < lengths[b]``)."""
    return (torch.arange(steps, device=lengths.device)[:, None] < lengths[None, :])[..., None]


def layer_outputs(
    hs: torch.Tensor, h_last: torch.Tensor, lengths: torch.Tensor | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(output [T, B, H], h_n [B, H])`` in ``dtype`` from ``hs`` ``[T+1, B, H]`` and the exact last state
    ``h_last`` (each sequence's last valid state: rows stop updating there); output is zero past a sequence's
    length."""
    output = hs[1:]
    if lengths is not None:
        output = torch.where(sequence_mask(lengths, output.shape[0]), output, 0)
    return output.to(dtype), h_last.to(dtype)


def parameter_grads(
    ctx_needs: tuple[bool, ...],
    input: torch.Tensor,
    weight_ih: torch.Tensor,
    hs_prev: torch.Tensor,
    gates: torch.Tensor,
    dgates_x: torch.Tensor,
    dgates_hn: torch.Tensor | None,
    has_bias: bool,
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of ``(input, weight_ih, weight_hh, bias_ih, bias_hh)`` as products over all ``N = T*B`` rows.

    ``input`` ``[N, I]``, ``hs_prev`` ``[N, H]`` (``h_{t-1}`` of every row), ``gates`` ``[N, NG*H]``,
    ``dgates_x`` ``[N, 3H]``, ``dgates_hn`` ``[N, H]`` or None (classic). ``ctx_needs``: which of the five are
    wanted (the rest come back None). ``W_hn``'s input is ``h`` for cudnn and ``R * h`` for classic. Every
    product runs in the storage dtype (bf16 in, bf16 GEMMs with float32 accumulation), as cuDNN's do.
    """
    need_input, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx_needs
    H = hs_prev.shape[1]
    grad_input = (dgates_x @ weight_ih).to(input.dtype) if need_input else None
    grad_w_ih = (dgates_x.t() @ input.to(dgates_x.dtype)).to(weight_ih.dtype) if need_w_ih else None
    grad_w_hh = grad_b_hh = None
    if need_w_hh or (need_b_hh and has_bias):
        d_gates_rz = dgates_x[:, : 2 * H]
        if dgates_hn is not None:
            d_hn, n_input = dgates_hn, hs_prev
        else:
            d_hn, n_input = dgates_x[:, 2 * H :], gates[:, :H] * hs_prev
        if need_w_hh:
            grad_w_hh = torch.cat([d_gates_rz.t() @ hs_prev, d_hn.t() @ n_input]).to(weight_ih.dtype)
        if need_b_hh and has_bias:
            grad_b_hh = torch.cat([d_gates_rz.sum(0), d_hn.sum(0)]).to(weight_ih.dtype)
    grad_b_ih = dgates_x.sum(0).to(weight_ih.dtype) if need_b_ih and has_bias else None
    return grad_input, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh


class GRULayerFunction(torch.autograd.Function):
    """One layer, one direction, over a whole (time-major, contiguous) sequence.

    ``forward(input [T, B, I], h0 [B, H], weight_ih, weight_hh, bias_ih, bias_hh, lengths, variant,
    allow_tf32) -> (output [T, B, H], h_n [B, H])``; ``lengths`` int64 ``[B]`` on the device, or None.
    """

    @staticmethod
    def forward(ctx, input, h0, weight_ih, weight_hh, bias_ih, bias_hh, lengths, variant, allow_tf32):
        gi = input_projection(input, weight_ih, bias_ih)
        hs, h_last, gates = forward_sequence(
            gi,
            h0,
            weight_hh,
            bias_hh,
            variant=variant,
            lengths=lengths,
            store_gates=True,
            allow_tf32=allow_tf32,
        )
        ctx.save_for_backward(input, weight_ih, weight_hh, hs, gates, lengths)
        ctx.variant, ctx.allow_tf32, ctx.has_bias = variant, allow_tf32, bias_ih is not None
        ctx.h0_dtype = h0.dtype
        return layer_outputs(hs, h_last, lengths, input.dtype)

    @staticmethod
    def backward(ctx, grad_output, grad_h_n):
        input, weight_ih, weight_hh, hs, gates, lengths = ctx.saved_tensors
        T, B, H = gates.shape[0], hs.shape[1], hs.shape[2]
        dgates_x, dgates_hn, dh0 = backward_sequence(
            grad_output.contiguous(),
            grad_h_n,
            hs,
            gates,
            weight_hh,
            variant=ctx.variant,
            lengths=lengths,
            allow_tf32=ctx.allow_tf32,
        )
        n = T * B
        grad_input, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = parameter_grads(
            (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:6]),
            input.reshape(n, -1),
            weight_ih,
            hs[:T].reshape(n, H),
            gates.reshape(n, -1),
            dgates_x.reshape(n, 3 * H),
            dgates_hn.reshape(n, H) if dgates_hn is not None else None,
            ctx.has_bias,
        )
        if grad_input is not None:
            grad_input = grad_input.reshape(input.shape)
        grad_h0 = dh0.to(ctx.h0_dtype) if ctx.needs_input_grad[1] else None
        return grad_input, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None, None, None


class GRUCellFunction(torch.autograd.Function):
    """One step through the fused cell kernel.

    ``forward(input [B, I], hx [B, H], weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32)
    -> h' [B, H]``. Backward is the sequence backward with ``T = 1``.
    """

    @staticmethod
    def forward(ctx, input, hx, weight_ih, weight_hh, bias_ih, bias_hh, variant, allow_tf32):
        h_new, gates = cell_forward(
            input,
            hx,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            variant=variant,
            store_gates=True,
            allow_tf32=allow_tf32,
        )
        ctx.save_for_backward(input, hx, weight_ih, weight_hh, gates)
        ctx.variant, ctx.allow_tf32, ctx.has_bias = variant, allow_tf32, bias_ih is not None
        return h_new.to(input.dtype)

    @staticmethod
    def backward(ctx, grad_h_new):
        input, hx, weight_ih, weight_hh, gates = ctx.saved_tensors
        # a sequence of one step: h_{t-1} is hs[0] = hx, and h' is that step's output
        hs = hx.to(weight_hh.dtype)[None]
        dgates_x, dgates_hn, dh = backward_sequence(
            grad_h_new.contiguous()[None], None, hs, gates, weight_hh, variant=ctx.variant, allow_tf32=ctx.allow_tf32
        )
        grad_input, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh = parameter_grads(
            (ctx.needs_input_grad[0], *ctx.needs_input_grad[2:6]),
            input,
            weight_ih,
            hs[0],
            gates[0],
            dgates_x[0],
            dgates_hn[0] if dgates_hn is not None else None,
            ctx.has_bias,
        )
        grad_hx = dh.to(hx.dtype) if ctx.needs_input_grad[1] else None
        return grad_input, grad_hx, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None, None
