"""The ground floor: facts about the machine and the toolchain that every other module shares.

Whether Triton runs through its CPU interpreter, the installed Triton version, the name a device is filed
under (and its file-name-safe slug), and atomic file writes. Nothing here imports Triton or any other part
of tritongru, so every module may import it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path

import torch


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (``TRITON_INTERPRET`` set and not ``0``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def triton_version() -> str:
    """Triton's installed version, read from the package metadata (no ``import triton``)."""
    try:
        return metadata.version("triton")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _cuda_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def device_name(device: torch.device) -> str:
    """The name results and tuned configs are filed under: the GPU's name, or the device type (``"cpu"``)."""
    if device.type == "cuda":
        return _cuda_name(device.index if device.index is not None else torch.cuda.current_device())
    return device.type


def slug(text: str) -> str:
    """A file-name-safe lower-case form of ``text`` (``"NVIDIA H100 80GB"`` -> ``"nvidia-h100-80gb"``)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and ``os.replace``: readers
    see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
