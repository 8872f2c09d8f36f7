"""Benchmark contenders: one provider key -> label, colour and marker, shared by scripts, plots and notebooks.

Providers are matched by exact key (never by prefix). The optional peers are the public GRU implementations
that pip can install; they take part only when their package imports, and are otherwise skipped with a note.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    """How one contender is named and drawn; ``module`` is the import name of an optional peer."""

    key: str
    label: str
    color: str
    marker: str
    module: str | None = None


PROVIDERS: dict[str, Provider] = {
    p.key: p
    for p in (
        Provider("tritongru-cudnn", "tritongru (cudnn form)", "#d62728", "o"),
        Provider("tritongru-classic", "tritongru (classic form)", "#ff7f0e", "s"),
        Provider("cudnn", "cuDNN (torch.nn.GRU)", "#1f77b4", "^"),
        Provider("torch-cpu", "torch.nn.GRU (CPU)", "#17becf", "^"),
        Provider("eager-cell", "eager GRUCell loop", "#7f7f7f", "v"),
        Provider("compiled-ref", "torch.compile(reference)", "#2ca02c", "D"),
        Provider("torchrl", "TorchRL GRU", "#9467bd", "P", module="torchrl"),
        Provider("flag_gems", "FlagGems GRU", "#8c564b", "X", module="flag_gems"),
        Provider("flashrnn", "FlashRNN GRU", "#e377c2", "*", module="flashrnn"),
    )
}

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


def importable_peers() -> dict[str, bool]:
    """For each optional peer, whether its package can be imported here (checked without importing it)."""
    return {key: importlib.util.find_spec(PROVIDERS[key].module) is not None for key in PEERS}
