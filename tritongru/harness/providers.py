"""The benchmark's contenders, each in one entry: its key, label, colour and marker (shared by scripts, plots
and notebooks) and the adapter that runs it on a ``torch.nn.GRU``'s weights.

Providers are matched by exact key (never by prefix). The optional peers are the public GRU implementations
that pip can install; they take part only when their package imports, and are otherwise skipped with a note.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import torch

import tritongru
from tritongru import launchers
from tritongru.reference import diagonal_blocks_weight_hh, gru_layer_ref, layernorm_gru_layer_ref

Adapter = Callable[[torch.nn.GRU, bool], tuple[torch.nn.Module, str]]
"""``adapter(base, allow_tf32) -> (module, formulation)``: a module computing ``(output, h_n) = module(x, h0)``
on ``base``'s weights, for ``x [T, B, I]`` and ``h0 [1, B, H]``. Raises ``LookupError`` (with the reason) when
it cannot run these weights."""


class _EagerCellLoop(torch.nn.Module):
    """``torch.nn.GRUCell`` stepped in a Python loop: what a model that owns its loop pays."""

    def __init__(self, gru: torch.nn.GRU) -> None:
        super().__init__()
        self.cell = torch.nn.GRUCell(
            gru.input_size,
            gru.hidden_size,
            device=gru.weight_ih_l0.device,
            dtype=gru.weight_ih_l0.dtype,
        )
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(self.cell, name).copy_(getattr(gru, f"{name}_l0"))

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, outputs = h0[0], []
        for step in x:
            h = self.cell(step, h)
            outputs.append(h)
        return torch.stack(outputs), h[None]


class _TorchRLGRU(torch.nn.Module):
    """TorchRL's Triton GRU (what its ``GRUModule`` runs with ``recurrent_backend="triton"``), called through
    ``torchrl.modules.tensordict_module._rnn_triton.gru_triton`` on the GRU's own weights. It takes
    batch-major float32 inputs and a per-step reset state; here only step 0 resets, to ``h0``."""

    def __init__(self, gru: torch.nn.GRU, *, allow_tf32: bool) -> None:
        super().__init__()
        if gru.weight_ih_l0.dtype != torch.float32:
            raise LookupError("torchrl's Triton GRU takes float32 inputs and weights only")
        from torchrl.modules.tensordict_module._rnn_triton import gru_triton

        self.gru, self.kernel, self.precision = gru, gru_triton, "tf32" if allow_tf32 else "ieee"

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        steps, batch, hidden = x.shape[0], x.shape[1], g.hidden_size
        states = torch.zeros(batch, steps, hidden, device=x.device, dtype=x.dtype)
        states[:, 0] = h0[0]
        is_init = torch.zeros(batch, steps, device=x.device, dtype=torch.bool)
        is_init[:, 0] = True
        output, h_n = self.kernel(
            x.transpose(0, 1).contiguous(),
            states,
            g.weight_ih_l0,
            g.weight_hh_l0,
            g.bias_ih_l0,
            g.bias_hh_l0,
            is_init,
            torch.float32,
            input_precision=self.precision,
        )
        return output.transpose(0, 1), h_n[None]


class _FlashRNNGRU(torch.nn.Module):
    """FlashRNN's fused CUDA GRU on the GRU's own weights, mapped to FlashRNN's layout (one head):
    ``Wx = x W_ih^T`` as ``[B, T, 3 (r, z, n), 1, H]``; ``R = [W_hn; W_hr; W_hz]`` as ``[3, 1, H, H]``;
    ``b = [b_hn, b_ir + b_hr, b_iz + b_hz, b_in]`` as ``[4, 1, H]``. The mapping was checked against
    ``torch.nn.GRU`` with FlashRNN's pure-PyTorch ``vanilla`` backend."""

    def __init__(self, gru: torch.nn.GRU, *, backend: str = "cuda_fused") -> None:
        super().__init__()
        from flashrnn import flashrnn

        self.gru, self.kernel, self.backend = gru, flashrnn, backend
        self.dtype = str(gru.weight_ih_l0.dtype).removeprefix("torch.")

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        steps, batch, hidden = x.shape[0], x.shape[1], g.hidden_size
        w_hr, w_hz, w_hn = g.weight_hh_l0.chunk(3)
        b_ir, b_iz, b_in = g.bias_ih_l0.chunk(3)
        b_hr, b_hz, b_hn = g.bias_hh_l0.chunk(3)
        wx = torch.nn.functional.linear(x, g.weight_ih_l0).view(steps, batch, 3, 1, hidden).transpose(0, 1)
        recurrent = torch.stack([w_hn, w_hr, w_hz])[:, None]
        bias = torch.stack([b_hn, b_ir + b_hr, b_iz + b_hz, b_in])[:, None]
        states = h0[0][None, :, None, None, :]
        output, last = self.kernel(
            wx,
            recurrent,
            bias,
            states=states,
            function="gru",
            backend=self.backend,
            dtype=self.dtype,
        )
        return output[0, :, :, 0].transpose(0, 1), last[0, :, -1, 0][None]


class _CompiledReference(torch.nn.Module):
    """``torch.compile`` of the plain-PyTorch reference (cudnn form), on the GRU's own parameters."""

    def __init__(self, gru: torch.nn.GRU) -> None:
        super().__init__()
        self.gru = gru
        self.layer = torch.compile(gru_layer_ref)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.gru
        output, h_n = self.layer(x, h0[0], g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        return output, h_n[None]


class _WithExchange(torch.nn.Module):
    """``model`` whose forward launches with the grid exchange ``exchange``
    (:func:`tritongru.launchers.using_exchange`); the backward, which autograd runs after it, keeps the
    environment's."""

    def __init__(self, model: torch.nn.Module, exchange: str) -> None:
        super().__init__()
        self.model, self.exchange = model, exchange

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with launchers.using_exchange(self.exchange):
            return self.model(x, h0)


@dataclass(frozen=True)
class Variant:
    """A research variant of one GRU layer, as ``tritongru.gru_layer`` and ``tritongru.reference.gru_layer_ref``
    take it: ``heads`` of a block-diagonal recurrent weight (its diagonal blocks taken from the base GRU's dense
    one), ``zoneout`` in training with a fixed seed (so every call, and the reference, draw the same masks);
    ``layernorm``: the LayerNorm-GRU's layer instead (``tritongru.layernorm_gru_layer``)."""

    heads: int = 1
    zoneout: float = 0.0
    zoneout_seed: int = 20261201
    layernorm: bool = False

    def weights(self, base: torch.nn.GRU) -> list[torch.Tensor]:
        """``weight_ih, weight_hh, bias_ih, bias_hh`` of ``base``'s first layer, ``weight_hh`` as the variant's;
        for the LayerNorm-GRU ``weight_ih, weight_hh``, gains of 1 and ``base``'s biases as the normalisations'
        (``ln_ih_weight, ln_ih_bias, ln_hh_weight, ln_hh_bias``)."""
        weight_hh = base.weight_hh_l0
        if self.heads > 1:
            if base.hidden_size % self.heads:
                raise LookupError(f"hidden size {base.hidden_size} does not split into {self.heads} heads")
            weight_hh = diagonal_blocks_weight_hh(weight_hh.detach(), self.heads)
        if self.layernorm:
            ones = torch.ones_like(base.bias_ih_l0)
            return [base.weight_ih_l0, weight_hh, ones, base.bias_ih_l0, ones, base.bias_hh_l0]
        return [base.weight_ih_l0, weight_hh, base.bias_ih_l0, base.bias_hh_l0]

    @property
    def reference(self) -> Callable:
        """The plain-PyTorch layer of this variant's cell."""
        return layernorm_gru_layer_ref if self.layernorm else gru_layer_ref

    def options(self) -> dict:
        """The keyword arguments of both layer functions."""
        zoneout = dict(zoneout=self.zoneout, zoneout_seed=self.zoneout_seed, training=True) if self.zoneout else {}
        return dict(num_heads=self.heads, **zoneout)


HEADS = Variant(heads=8)
"""The multi-head contenders' variant: 8 heads (``d = H / 8`` units each)."""

ZONEOUT = Variant(zoneout=0.1)
"""The zoneout contenders' variant: ``p = 0.1``, masks drawn in training."""

LAYERNORM = Variant(layernorm=True)
"""The LayerNorm-GRU contenders' variant."""


class _VariantLayer(torch.nn.Module):
    """One layer of a :class:`Variant`, cudnn form, on ``base``'s weights (its own copies, so that training
    reaches them): ``layer`` is ``tritongru.gru_layer`` or ``tritongru.layernorm_gru_layer`` (the kernels), or
    the same cell's reference (a plain-PyTorch loop)."""

    def __init__(self, base: torch.nn.GRU, variant: Variant, layer: Callable) -> None:
        super().__init__()
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(w.detach().clone()) for w in variant.weights(base))
        self.layer, self.variant = layer, variant

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output, h_n = self.layer(x, h0[0], *self.weights, variant="cudnn", **self.variant.options())
        return output, h_n[None]


def _variant(variant: Variant, layer: Callable) -> Adapter:
    def adapt(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
        return _VariantLayer(base, variant, layer), "cudnn"

    return adapt


def _tritongru(variant: str) -> Adapter:
    def adapt(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
        weight = base.weight_ih_l0
        model = tritongru.GRU(
            base.input_size,
            base.hidden_size,
            device=weight.device,
            dtype=weight.dtype,
            variant=variant,
            allow_tf32=allow_tf32,
        )
        model.load_state_dict(base.state_dict())
        return model, variant

    return adapt


def _torch_itself(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    return base, "cudnn"


def _eager_cell(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    return _EagerCellLoop(base), "cudnn"


def _compiled_reference(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    return _CompiledReference(base), "cudnn"


def _torchrl(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    return _TorchRLGRU(base, allow_tf32=allow_tf32), "cudnn"


def _flag_gems(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    raise LookupError("flag_gems ships no GRU operator (none in FlagGems 5.0.2, the latest checked)")


def _flashrnn(base: torch.nn.GRU, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    return _FlashRNNGRU(base), "cudnn"


@dataclass(frozen=True)
class Provider:
    """One contender: how it is named and drawn, and how it runs.

    ``runs_on`` is the only device type it runs on (``None``: any); ``module`` is the import name of an optional
    peer, which takes part only when that module can be imported. ``variant``: the research variant it computes
    (the plain GRU by default), which its output is checked against. ``exchange``: the grid exchange its forward
    launches with (one of :data:`tritongru.launchers.EXCHANGES`; ``None``: what the environment asks for)."""

    key: str
    label: str
    color: str
    marker: str
    adapter: Adapter
    runs_on: str | None = None
    module: str | None = None
    variant: Variant = Variant()
    exchange: str | None = None


PROVIDERS: dict[str, Provider] = {
    p.key: p
    for p in (
        Provider("tritongru-cudnn", "tritongru (cudnn form)", "#d62728", "o", _tritongru("cudnn")),
        Provider("tritongru-classic", "tritongru (classic form)", "#ff7f0e", "s", _tritongru("classic")),
        Provider(
            "tritongru-cudnn-tagged",
            "tritongru (cudnn form), tagged exchange",
            "#ff9896",
            "<",
            _tritongru("cudnn"),
            exchange="tagged",
        ),
        Provider("cudnn", "cuDNN (torch.nn.GRU)", "#1f77b4", "^", _torch_itself, runs_on="cuda"),
        Provider("torch-cpu", "torch.nn.GRU (CPU)", "#17becf", "^", _torch_itself, runs_on="cpu"),
        Provider("eager-cell", "eager GRUCell loop", "#7f7f7f", "v", _eager_cell),
        Provider("compiled-ref", "torch.compile(reference)", "#2ca02c", "D", _compiled_reference),
        Provider("torchrl", "TorchRL GRU", "#9467bd", "P", _torchrl, runs_on="cuda", module="torchrl"),
        Provider("flag_gems", "FlagGems GRU", "#8c564b", "X", _flag_gems, runs_on="cuda", module="flag_gems"),
        Provider("flashrnn", "FlashRNN GRU", "#e377c2", "*", _flashrnn, runs_on="cuda", module="flashrnn"),
        Provider(
            "tritongru-heads", "tritongru, 8 heads", "#bcbd22", "h", _variant(HEADS, tritongru.gru_layer), variant=HEADS
        ),
        Provider(
            "reference-heads", "PyTorch loop, 8 heads", "#dbdb8d", "H", _variant(HEADS, gru_layer_ref), variant=HEADS
        ),
        Provider(
            "tritongru-zoneout",
            "tritongru, zoneout 0.1",
            "#393b79",
            "p",
            _variant(ZONEOUT, tritongru.gru_layer),
            variant=ZONEOUT,
        ),
        Provider(
            "reference-zoneout",
            "PyTorch loop, zoneout 0.1",
            "#9c9ede",
            "8",
            _variant(ZONEOUT, gru_layer_ref),
            variant=ZONEOUT,
        ),
        Provider(
            "tritongru-layernorm",
            "tritongru, LayerNorm-GRU",
            "#843c39",
            "d",
            _variant(LAYERNORM, tritongru.layernorm_gru_layer),
            variant=LAYERNORM,
        ),
        Provider(
            "reference-layernorm",
            "PyTorch loop, LayerNorm-GRU",
            "#e7969c",
            "1",
            _variant(LAYERNORM, layernorm_gru_layer_ref),
            variant=LAYERNORM,
        ),
    )
}

VARIANT_PROVIDERS = (
    "tritongru-heads",
    "reference-heads",
    "tritongru-zoneout",
    "reference-zoneout",
    "tritongru-layernorm",
    "reference-layernorm",
)
"""The research variants cuDNN lacks, each in the kernels and as a plain-PyTorch loop of the same cell (opt-in:
``--providers``); the plain kernel (``tritongru-cudnn``) beside them shows what the variant costs."""

PEERS = tuple(key for key, p in PROVIDERS.items() if p.module is not None)
"""The optional contenders, present only when their package is installed."""


def provider(key: str) -> Provider:
    """The provider registered under exactly ``key``."""
    try:
        return PROVIDERS[key]
    except KeyError:
        raise KeyError(f"unknown provider {key!r}; known: {sorted(PROVIDERS)}") from None


def label(key: str) -> str:
    return provider(key).label


def color(key: str) -> str:
    return provider(key).color


@functools.cache
def importable_peers() -> dict[str, bool]:
    """For each optional peer, whether its package can be imported here (checked once, without importing it)."""
    return {key: importlib.util.find_spec(PROVIDERS[key].module) is not None for key in PEERS}


def baseline_provider(device: torch.device) -> str:
    """The contender speed-ups are measured against: cuDNN on CUDA, torch's own GRU on the CPU."""
    return "cudnn" if device.type == "cuda" else "torch-cpu"


def default_providers(device: torch.device) -> tuple[str, ...]:
    """tritongru in both forms, the baseline and the eager cell loop (``compiled-ref`` and the peers are
    opt-in: compiling an unrolled loop takes minutes per shape)."""
    return ("tritongru-cudnn", "tritongru-classic", baseline_provider(device), "eager-cell")


def build(key: str, base: torch.nn.GRU, *, allow_tf32: bool) -> tuple[torch.nn.Module, str]:
    """The contender ``key`` holding ``base``'s weights, and the formulation it computes.

    Raises ``LookupError`` (with the reason) for a contender that cannot run here."""
    if key not in PROVIDERS:
        raise LookupError(f"unknown provider {key!r}")
    entry = PROVIDERS[key]
    if entry.module is not None and not importable_peers()[key]:
        raise LookupError(f"{key} is not installed")
    if entry.runs_on is not None and base.weight_ih_l0.device.type != entry.runs_on:
        raise LookupError(f"{key} runs on {'CUDA' if entry.runs_on == 'cuda' else 'the CPU'} only")
    model, formulation = entry.adapter(base, allow_tf32)
    return (model, formulation) if entry.exchange is None else (_WithExchange(model, entry.exchange), formulation)
