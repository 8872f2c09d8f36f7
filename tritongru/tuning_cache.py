"""The tuning cache: JSON files of tuned launch configs, looked up on every launch.

One file per (device name, Triton version), so that a file tuned on one GPU or with one compiler is never
read for another. Inside a file, entries are keyed by kernel, formulation, storage dtype, hidden size, input
size and a coarse batch bucket; never the sequence length (a config that is fast for T=64 is fast for T=1024:
the time loop only repeats the same step).

Two places are searched, the user cache first:

- the user cache, ``$TRITONGRU_CACHE_DIR`` or ``$XDG_CACHE_HOME/tritongru`` or ``~/.cache/tritongru``, where
  :mod:`tritongru.tuning` writes its winners;
- the files shipped with the package in ``tritongru/tuned/``, tuned on known GPUs.

A file that is corrupt, truncated, written for another device or Triton version, or of an unknown format
gives a warning and is ignored (the launcher falls back to its heuristic). Writes take a lock, merge with what
is on disk and replace the file atomically, so two processes tuning at once lose nothing and never leave half
a file. Parsed files are kept in memory and reread only when they are replaced or their time or size changes.

This module must not import :mod:`tritongru.configs` or anything that imports kernels: ``configs`` imports it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import torch

FORMAT = "tritongru-tuning-cache"
FORMAT_VERSION = 1

CONFIG_KEYS = ("block_b", "block_h", "block_k", "num_warps", "num_stages", "persistent")
"""The keys of a config dict as :func:`lookup` returns it (the fields of ``configs.KernelConfig``)."""

BATCH_BUCKETS = (1, 8, 32, 128, 512)
"""Upper bounds of the batch buckets; a batch above the last falls in the open bucket ``"b>512"``."""

SHIPPED_DIR = Path(__file__).resolve().parent / "tuned"


def user_cache_dir() -> Path:
    """Where tuning winners are written: ``$TRITONGRU_CACHE_DIR``, else ``$XDG_CACHE_HOME/tritongru``, else
    ``~/.cache/tritongru``."""
    explicit = os.environ.get("TRITONGRU_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "tritongru"


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
    """The name tuned configs are filed under: the GPU's marketing name, or the device type (``"cpu"``)."""
    if device.type == "cuda":
        return _cuda_name(device.index if device.index is not None else torch.cuda.current_device())
    return device.type


def slug(text: str) -> str:
    """A file-name-safe lower-case form of ``text`` (``"NVIDIA H100 80GB"`` -> ``"nvidia-h100-80gb"``)."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


@functools.cache
def cache_file_name(device: str, triton: str | None = None) -> str:
    """The file holding the configs tuned on ``device`` with Triton ``triton`` (default: installed)."""
    return f"{slug(device)}__triton-{slug(triton or triton_version())}.json"


def batch_bucket(batch: int) -> str:
    """The coarse batch bucket a batch size is filed under (``"b<=8"``, ..., ``"b>512"``)."""
    for bound in BATCH_BUCKETS:
        if batch <= bound:
            return f"b<={bound}"
    return f"b>{BATCH_BUCKETS[-1]}"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def entry_key(
    kernel: str,
    *,
    variant: str,
    dtype: torch.dtype,
    batch: int,
    hidden: int,
    input_size: int,
    allow_tf32: bool = False,
) -> str:
    """The key of one entry inside a device's cache file; float32 with TF32 products is its own precision."""
    precision = "tf32" if allow_tf32 and dtype == torch.float32 else dtype_name(dtype)
    return f"{kernel}|{variant}|{precision}|H={hidden}|I={input_size}|{batch_bucket(batch)}"


def search_paths(device: str) -> list[Path]:
    """The files :func:`lookup` reads for ``device``, in priority order (user cache, then shipped)."""
    name = cache_file_name(device)
    return [user_cache_dir() / name, SHIPPED_DIR / name]


# path -> ((inode, mtime_ns, size), entries or None when the file was rejected). Writers replace the file,
# so a rewrite gets a new inode even where the clock is too coarse to change the modification time.
_parsed: dict[Path, tuple[tuple[int, int, int], dict[str, dict] | None]] = {}


def _valid_config(value: object) -> bool:
    return isinstance(value, dict) and all(key in value for key in CONFIG_KEYS)


def read_file(path: Path, *, device: str | None = None) -> dict[str, dict] | None:
    """Parse one cache file and return its entries, or warn and return ``None`` when it is unusable.

    ``device`` (when given) must match the device the file was written for; so must the Triton version.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        warnings.warn(f"ignoring unreadable tuning cache {path}: {error}", stacklevel=3)
        return None
    problem = None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        problem = "not a tritongru tuning cache"
    elif document.get("format_version") != FORMAT_VERSION:
        problem = f"format version {document.get('format_version')!r}, expected {FORMAT_VERSION}"
    elif device is not None and document.get("device") != device:
        problem = f"written for device {document.get('device')!r}, not {device!r}"
    elif document.get("triton") != triton_version():
        problem = f"written for Triton {document.get('triton')!r}, not {triton_version()!r}"
    elif not isinstance(document.get("entries"), dict):
        problem = "no entries table"
    if problem is not None:
        warnings.warn(f"ignoring tuning cache {path}: {problem}", stacklevel=3)
        return None
    return {key: value for key, value in document["entries"].items() if isinstance(value, dict)}


def _entries(path: Path, device: str) -> dict[str, dict] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    cached = _parsed.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    entries = read_file(path, device=device)
    _parsed[path] = (stamp, entries)
    return entries


def lookup(
    kernel: str,
    *,
    variant: str,
    dtype: torch.dtype,
    batch: int,
    hidden: int,
    input_size: int,
    device: torch.device,
    allow_tf32: bool = False,
) -> dict | None:
    """The cached config for this key as a plain dict with :data:`CONFIG_KEYS`, or ``None`` if none is.

    An entry that lacks any config key is skipped with a warning; the caller validates the values.
    """
    name = device_name(device)
    key = entry_key(
        kernel, variant=variant, dtype=dtype, batch=batch, hidden=hidden, input_size=input_size, allow_tf32=allow_tf32
    )
    for path in search_paths(name):
        entries = _entries(path, name)
        if entries is None or key not in entries:
            continue
        config = entries[key].get("config")
        if _valid_config(config):
            return {field: config[field] for field in CONFIG_KEYS}
        warnings.warn(f"ignoring malformed tuning cache entry {key!r} in {path}", stacklevel=2)
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path.lock`` (POSIX ``flock``; a no-op where it is missing)."""
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; the atomic replace still keeps the file whole
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
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


def store(
    entries: dict[str, dict],
    *,
    device: str,
    directory: Path | None = None,
) -> Path:
    """Merge ``entries`` (key -> ``{"config": {...}, ...}``) into ``device``'s cache file; return its path.

    The file is read, merged and replaced under a lock, so concurrent writers keep each other's entries. A
    file on disk that is unusable is replaced (with a warning from the read).
    """
    for key, value in entries.items():
        if not _valid_config(value.get("config")):
            raise ValueError(f"entry {key!r} needs a 'config' with keys {CONFIG_KEYS}")
    path = (directory if directory is not None else user_cache_dir()) / cache_file_name(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        current = read_file(path, device=device) if path.exists() else None
        merged = {**(current or {}), **entries}
        document = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "device": device,
            "triton": triton_version(),
            "entries": dict(sorted(merged.items())),
        }
        write_atomic(path, json.dumps(document, indent=1, sort_keys=False) + "\n")
    return path
