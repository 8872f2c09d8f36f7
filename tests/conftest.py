"""One suite, two places: a CUDA GPU when there is one, else the CPU through Triton's interpreter.

``TRITON_INTERPRET`` must be set before triton is first imported, which is why it happens here, at conftest
import, before any test module imports tritongru.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from tritongru.environment import interpreting


def _patch_the_language_once_per_launch() -> None:
    """Triton's interpreter patches ``triton.language`` for a launch, and again at every call of a jit helper
    inside it (``inspect.getmembers`` over the language's modules, which finds nothing left to patch): a
    quarter of a layer test's time (cProfile, ``tests/test_heads_gru.py``). ``_patch_lang`` now patches only
    where the function's module sees a language module not yet patched, and otherwise returns an empty scope.
    Relies on the interpreter's internals (``_patch_lang``, ``_LangPatchScope``), checked with Triton 3.6 and
    3.9, as ``concurrent_interpreter`` does; test support, not library code."""
    from triton import language as tl
    from triton.runtime import interpreter

    real_patch_lang = interpreter._patch_lang

    def patch_lang(fn):
        langs = [value for value in fn.__globals__.values() if value is tl or value is tl.core]
        if langs and not any(tl.core.is_builtin(lang.load) for lang in langs):
            return interpreter._LangPatchScope()
        return real_patch_lang(fn)

    interpreter._patch_lang = patch_lang


if interpreting():
    _patch_the_language_once_per_launch()


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
