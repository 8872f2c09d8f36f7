"""One suite, two places: a CUDA GPU when there is one, else the CPU through Triton's interpreter.

``TRITON_INTERPRET`` must be set before triton is first imported, which is why it happens here, at conftest
import, before any test module imports tritongru.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: CUDA when present, else the CPU (interpreter). Session-wide, so that module-scoped
    fixtures (a results file written once for several tests) follow it too."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0x6A0)


@pytest.fixture
def poison_empty(monkeypatch):
    """Make ``torch.empty``/``empty_like`` return NaN-filled tensors, so an element a kernel forgets to write
    shows up as NaN in the result."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def nan_empty(*args, **kwargs):
        out = real_empty(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    def nan_empty_like(*args, **kwargs):
        out = real_empty_like(*args, **kwargs)
        return out.fill_(float("nan")) if out.is_floating_point() else out

    monkeypatch.setattr(torch, "empty", nan_empty)
    monkeypatch.setattr(torch, "empty_like", nan_empty_like)
