"""Tuning problems: fresh inputs for one kernel, the launch the sweep times, and the float64 reference that
gates it.

:func:`make_problem` hands a :class:`~tritongru.harness.search_space.ProblemSpec` to one small builder per
kernel (:data:`BUILDERS`). The harness's only calls into :mod:`tritongru.launchers` are the three ``_launch_*``
functions below: when the launchers' signatures change, they are what changes.

The correctness gate (:func:`gate_error`) holds a config to the tolerance the test suite holds the kernels to,
the one table in :mod:`tritongru.precisions`: every output, scaled by ``max(1, max|reference|)`` as the tests
scale gradients, within ``atol + rtol * |reference|`` of the reference.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tritongru import launchers
from tritongru.configs import KERNELS, KernelConfig, heuristic_config
from tritongru.harness.search_space import ProblemSpec
from tritongru.precisions import Precision
from tritongru.reference import gru_cell_ref, gru_layer_ref
from tritongru.variants import check_variant


@dataclass
class Problem:
    """One tuning problem. ``run(config)`` launches the kernel under ``config`` (``None``: the launcher picks)
    and returns what the launcher returned: this is what is timed. ``compare(outputs)`` turns that into the
    tensors checked against ``expected``, the float64 reference."""

    spec: ProblemSpec
    seq_len: int
    device: torch.device
    run: Callable[[KernelConfig | None], tuple]
    compare: Callable[[tuple], tuple[torch.Tensor, ...]]
    expected: tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class _Layer:
    """One layer's weights ``w_ih [3H, I]``, ``w_hh [3H, H]``, ``b_ih``, ``b_hh [3H]`` and state ``h0 [B, H]``, in
    the storage dtype."""

    w_ih: torch.Tensor
    w_hh: torch.Tensor
    b_ih: torch.Tensor
    b_hh: torch.Tensor
    h0: torch.Tensor


class _Draws:
    """Seeded float64 draws on the CPU, handed over on ``device`` in ``dtype``: the same numbers on any device."""

    def __init__(self, seed: int, device: torch.device, dtype: torch.dtype) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.device, self.dtype = device, dtype

    def uniform(self, bound: float, *shape: int) -> torch.Tensor:
        values = (torch.rand(*shape, generator=self.generator, dtype=torch.float64) * 2 - 1) * bound
        return values.to(device=self.device, dtype=self.dtype)

    def normal(self, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        values = torch.randn(*shape, generator=self.generator, dtype=torch.float64)
        return values.to(device=self.device, dtype=dtype or self.dtype)

    def layer(self, spec: ProblemSpec) -> _Layer:
        """Weights as ``torch.nn.GRU`` initialises them (uniform in ``±1/sqrt(H)``) and ``h0`` of scale 0.5."""
        hidden, bound = spec.hidden, spec.hidden**-0.5
        return _Layer(
            w_ih=self.uniform(bound, 3 * hidden, spec.input_size),
            w_hh=self.uniform(bound, 3 * hidden, hidden),
            b_ih=self.uniform(bound, 3 * hidden),
            b_hh=self.uniform(bound, 3 * hidden),
            h0=self.normal(spec.batch, hidden) * 0.5,
        )


def _f64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float64)


def _launch_forward(
    spec: ProblemSpec, layer: _Layer, gi: torch.Tensor, config: KernelConfig | None, *, store_gates: bool
) -> tuple:
    return launchers.forward_sequence(
        gi,
        layer.h0,
        layer.w_hh,
        layer.b_hh,
        variant=spec.variant,
        store_gates=store_gates,
        allow_tf32=spec.precision.allow_tf32,
        config=config,
    )


def _launch_backward(
    spec: ProblemSpec,
    layer: _Layer,
    saved: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: KernelConfig | None,
) -> tuple:
    grad_output, hs, gates = saved
    return launchers.backward_sequence(
        grad_output,
        None,
        hs,
        gates,
        layer.w_hh,
        variant=spec.variant,
        allow_tf32=spec.precision.allow_tf32,
        config=config,
    )


def _launch_cell(spec: ProblemSpec, layer: _Layer, x: torch.Tensor, config: KernelConfig | None) -> tuple:
    return launchers.cell_forward(
        x,
        layer.h0,
        layer.w_ih,
        layer.w_hh,
        layer.b_ih,
        layer.b_hh,
        variant=spec.variant,
        store_gates=spec.store_gates,
        allow_tf32=spec.precision.allow_tf32,
        config=config,
    )


def _projected_input(draws: _Draws, layer: _Layer, spec: ProblemSpec, seq_len: int) -> torch.Tensor:
    """``gi = x W_ih^T + b_ih`` ``[T, B, 3H]`` in the storage dtype, for a random ``x``: the sequence kernels'
    input (the projection itself is one GEMM outside them)."""
    x = draws.normal(seq_len, spec.batch, spec.input_size)
    return (_f64(x) @ _f64(layer.w_ih).T + _f64(layer.b_ih)).to(spec.precision.dtype)


def _layer_reference(
    spec: ProblemSpec, gi: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor
) -> tuple:
    """The float64 reference over ``gi`` (the identity stands in for ``W_ih``): ``(output, h_n)``."""
    eye = torch.eye(3 * spec.hidden, dtype=torch.float64, device=gi.device)
    return gru_layer_ref(gi, h0, eye, w_hh, None, b_hh, variant=spec.variant)


def forward_problem(spec: ProblemSpec, *, seq_len: int, device: torch.device, seed: int = 0) -> Problem:
    """The sequence forward on ``gi [seq_len, batch, 3H]``; compares every ``h_t``."""
    draws = _Draws(seed, device, spec.precision.dtype)
    layer = draws.layer(spec)
    gi = _projected_input(draws, layer, spec, seq_len)
    expected, _ = _layer_reference(spec, _f64(gi), _f64(layer.h0), _f64(layer.w_hh), _f64(layer.b_hh))
    return Problem(
        spec=spec,
        seq_len=seq_len,
        device=device,
        run=lambda config: _launch_forward(spec, layer, gi, config, store_gates=spec.store_gates),
        compare=lambda outputs: (outputs[0][1:],),
        expected=(expected,),
    )


def backward_problem(spec: ProblemSpec, *, seq_len: int, device: torch.device, seed: int = 0) -> Problem:
    """BPTT of a random output gradient through a forward run under the heuristic config; compares ``dgi``,
    ``dh0`` and, for the cudnn form, ``dW_hh = sum_t [dar, daz, dhn]^T h_{t-1}``."""
    draws = _Draws(seed, device, spec.precision.dtype)
    layer = draws.layer(spec)
    gi = _projected_input(draws, layer, spec, seq_len)
    forward_config = heuristic_config(
        "forward", spec.batch, spec.hidden, dtype=spec.precision.dtype, allow_tf32=spec.precision.allow_tf32
    )
    hs, _, gates = _launch_forward(spec, layer, gi, forward_config, store_gates=True)
    grad_out = draws.normal(seq_len, spec.batch, spec.hidden, dtype=torch.float64)
    grad_output = grad_out.to(hs.dtype)

    def compare(outputs: tuple) -> tuple[torch.Tensor, ...]:
        dgates_x, dgates_hn, dh0 = outputs
        if dgates_hn is None:
            return dgates_x, dh0
        dgates_h = torch.cat([dgates_x[..., : 2 * spec.hidden], dgates_hn], dim=-1)
        return dgates_x, dh0, torch.einsum("tbg,tbh->gh", _f64(dgates_h), _f64(hs[:-1]))

    gi_ref, h0_ref, w_hh_ref = (_f64(t).requires_grad_() for t in (gi, layer.h0, layer.w_hh))
    output, _ = _layer_reference(spec, gi_ref, h0_ref, w_hh_ref, _f64(layer.b_hh))
    output.backward(grad_out)
    expected = (gi_ref.grad, h0_ref.grad) + ((w_hh_ref.grad,) if spec.variant == "cudnn" else ())
    return Problem(
        spec=spec,
        seq_len=seq_len,
        device=device,
        run=lambda config: _launch_backward(spec, layer, (grad_output, hs, gates), config),
        compare=compare,
        expected=expected,
    )


def cell_problem(spec: ProblemSpec, *, seq_len: int, device: torch.device, seed: int = 0) -> Problem:
    """One fused step on ``x [batch, input_size]``; compares ``h'``. ``seq_len`` is recorded only (one step)."""
    draws = _Draws(seed, device, spec.precision.dtype)
    layer = draws.layer(spec)
    x = draws.normal(spec.batch, spec.input_size)
    weights = (_f64(t) for t in (x, layer.h0, layer.w_ih, layer.w_hh, layer.b_ih, layer.b_hh))
    expected = gru_cell_ref(*weights, variant=spec.variant)
    return Problem(
        spec=spec,
        seq_len=seq_len,
        device=device,
        run=lambda config: _launch_cell(spec, layer, x, config),
        compare=lambda outputs: (outputs[0],),
        expected=(expected,),
    )


BUILDERS: dict[str, Callable[..., Problem]] = {
    "forward": forward_problem,
    "backward": backward_problem,
    "cell": cell_problem,
}
"""One problem builder per kernel of ``configs.KERNELS``."""


def make_problem(spec: ProblemSpec, *, seq_len: int, device: torch.device, seed: int = 0) -> Problem:
    """Fresh random inputs and weights (seeded by ``seed``) in ``spec``'s storage dtype on ``device``, with the
    float64 reference of ``spec.kernel``."""
    check_variant(spec.variant)
    if spec.kernel not in BUILDERS:
        raise ValueError(f"kernel must be one of {KERNELS}; got {spec.kernel!r}")
    return BUILDERS[spec.kernel](spec, seq_len=seq_len, device=device, seed=seed)


def max_abs_error(outputs: Sequence[torch.Tensor], expected: Sequence[torch.Tensor]) -> float:
    """The largest ``|out - ref|`` over all outputs (inf for a NaN or a shape mismatch)."""
    worst = 0.0
    for out, ref in zip(outputs, expected, strict=True):
        if out.shape != ref.shape:
            return math.inf
        error = (_f64(out) - ref).abs().max().item()
        if not math.isfinite(error):
            return math.inf
        worst = max(worst, error)
    return worst


def gate_error(outputs: Sequence[torch.Tensor], expected: Sequence[torch.Tensor], precision: Precision) -> float:
    """How far the outputs are from the reference in units of ``precision``'s tolerance: the largest
    ``|out - ref| / (atol + rtol |ref|)`` after scaling each pair by ``max(1, max|ref|)``. At most 1 passes the
    gate; inf for a NaN or a shape mismatch."""
    worst = 0.0
    for out, ref in zip(outputs, expected, strict=True):
        if out.shape != ref.shape:
            return math.inf
        scale = max(1.0, ref.abs().max().item())
        allowed = precision.atol + precision.rtol * ref.abs() / scale
        error = ((_f64(out) - ref).abs() / scale / allowed).max().item()
        if not math.isfinite(error):
            return math.inf
        worst = max(worst, error)
    return worst
