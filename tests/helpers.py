"""Shared test helpers: tolerances (from the one table in :mod:`tritongru.precisions`), module pairs with
copied weights, and comparisons of forward and every gradient."""

from __future__ import annotations

import torch

import tritongru
from tritongru.precisions import precision_of

ON_GPU = torch.cuda.is_available()


def tolerance(dtype: torch.dtype) -> dict:
    """``{"atol": ..., "rtol": ...}`` of tritongru in storage ``dtype`` (IEEE products) against a float64
    reference of the same weights and inputs."""
    precision = precision_of(dtype)
    return {"atol": precision.atol, "rtol": precision.rtol}


def gru_pair(variant: str, *args, device, dtype=torch.float32, **kwargs):
    """(tritongru.GRU, oracle) with the same weights. The oracle is torch.nn.GRU for cudnn, the plain-PyTorch
    reference wrapped in a module for classic."""
    ours = tritongru.GRU(*args, variant=variant, device=device, dtype=dtype, **kwargs)
    oracle = torch.nn.GRU(*args, device=device, dtype=dtype, **kwargs)
    oracle.load_state_dict(ours.state_dict())
    return ours, oracle


def flat_weights(module: torch.nn.GRU) -> list[torch.Tensor | None]:
    """``weight_ih, weight_hh, bias_ih, bias_hh`` per layer and direction, None for absent biases."""
    weights = []
    for layer in range(module.num_layers):
        for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                weights.append(
                    getattr(module, f"{name}_l{layer}{suffix}", None) if module.bias or "weight" in name else None
                )
    return weights


def layer_tensors(steps: int, batch: int, input_size: int, hidden: int, device) -> list[torch.Tensor]:
    """``x [T, B, I]``, ``h0 [B, H]`` and a layer's ``weight_ih, weight_hh, bias_ih, bias_hh``, float32, drawn
    as ``torch.nn.GRU`` initialises its weights (uniform in +-1/sqrt(H))."""
    scale = hidden**-0.5
    return [
        torch.randn(steps, batch, input_size, device=device),
        torch.randn(batch, hidden, device=device) * 0.5,
        torch.empty(3 * hidden, input_size, device=device).uniform_(-scale, scale),
        torch.empty(3 * hidden, hidden, device=device).uniform_(-scale, scale),
        torch.empty(3 * hidden, device=device).uniform_(-scale, scale),
        torch.empty(3 * hidden, device=device).uniform_(-scale, scale),
    ]


def grads(outputs: list[torch.Tensor], inputs: list[torch.Tensor], seed: int = 1) -> list[torch.Tensor]:
    """Gradients of ``sum(out * random)`` with respect to ``inputs`` (the same random cotangents every call)."""
    generator = torch.Generator().manual_seed(seed)
    loss = sum((out.float() * torch.randn(out.shape, generator=generator).to(out.device)).sum() for out in outputs)
    return list(torch.autograd.grad(loss, inputs))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    torch.testing.assert_close(actual.double(), expected.double(), **tolerance(dtype), msg=lambda m: f"{what}: {m}")
