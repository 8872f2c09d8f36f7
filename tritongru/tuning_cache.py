"""The tuning cache: JSON files of tuned launch configs, looked up on every launch.

It lives in the library, not in the harness, because the library reads it: ``configs.select_config`` asks it
for every launch, and a model that imports tritongru must not import the measuring harness. The harness only
writes to it (:mod:`tritongru.harness.tuning`).

One file per (device name, Triton version), so that a file tuned on one GPU or with one compiler is never
read for another. Inside a file, entries are keyed by kernel, formulation, precision (``tf32`` apart from
``fp32``), hidden size, input size, a coarse batch bucket and whether the forward kernel saves its gates;
never the sequence length (a config that is fast for T=64 is fast for T=1024: the time loop only repeats the
same step).

Two places are searched, the user cache first:

- the user cache, ``$TRITONGRU_CACHE_DIR`` or ``$XDG_CACHE_HOME/tritongru`` or ``~/.cache/tritongru``, where
  :mod:`tritongru.harness.tuning` writes its winners;
- the files shipped with the package in ``tritongru/tuned/``, tuned on known GPUs.

A file that cannot be read, is corrupt or truncated, was written for another device or Triton version, or is
of an unknown format gives a warning and is ignored (the launcher falls back to its heuristic); so does an
entry whose config is not a valid launch config, with the file and key named. Writes take a lock, merge with
what is on disk and replace the file atomically, so two processes tuning at once lose nothing and never leave
half a file. Parsed files are kept in memory and reread only when they are replaced or their time or size
changes.

This module must not import :mod:`tritongru.configs` or anything that imports kernels: ``configs`` imports it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from tritongru.environment import device_name, slug, triton_version, write_atomic
from tritongru.precisions import precision_of

FORMAT = "tritongru-tuning-cache"
FORMAT_VERSION = 3
"""Version 3 configs say how the warps split a product (``split_k``) and how many batch blocks a program steps
(``batch_blocks``); version 2 named precisions as :data:`tritongru.precisions.PRECISIONS` does and keyed on
``store_gates``. A file of another version is ignored with a warning (its configs were tuned for other kernels)."""

CONFIG_KEYS = ("block_b", "block_h", "block_k", "num_warps", "num_stages", "persistent", "split_k", "batch_blocks")
"""The keys every config dict has (the fields of ``configs.KernelConfig`` but the optional ones)."""

OPTIONAL_CONFIG_KEYS = ("streamed_chunks", "max_wave_chunks")
"""Fields a config dict may leave out (files written before them hold their defaults); :func:`lookup` returns
the ones it has."""

NUM_WARPS = (1, 2, 4, 8, 16)
"""The warp counts a launch config may ask for."""

MAX_BATCH_BLOCKS = 32
"""The most batch blocks one program may step in turn (a loop in the kernel: one round trip each)."""

MIN_BLOCK = 16
"""The smallest block size: ``tl.dot`` needs every tile dimension to be at least 16 on the GPU."""

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
def cache_file_name(device: str, triton: str | None = None) -> str:
    """The file holding the configs tuned on ``device`` with Triton ``triton`` (default: installed)."""
    return f"{slug(device)}__triton-{slug(triton or triton_version())}.json"


def batch_bucket(batch: int) -> str:
    """The coarse batch bucket a batch size is filed under (``"b<=8"``, ..., ``"b>512"``)."""
    for bound in BATCH_BUCKETS:
        if batch <= bound:
            return f"b<={bound}"
    return f"b>{BATCH_BUCKETS[-1]}"


def entry_key(
    kernel: str,
    *,
    variant: str,
    dtype: torch.dtype,
    batch: int,
    hidden: int,
    input_size: int,
    allow_tf32: bool = False,
    store_gates: bool = False,
) -> str:
    """The key of one entry inside a device's cache file, e.g. ``forward|cudnn|bf16|H=768|I=0|b<=32|gates=0``.

    The precision is named by :func:`tritongru.precisions.precision_of` (float32 with TF32 products is ``tf32``);
    ``store_gates`` (the forward kernels saving their gates for backward) compiles a different kernel."""
    precision = precision_of(dtype, allow_tf32).name
    return f"{kernel}|{variant}|{precision}|H={hidden}|I={input_size}|{batch_bucket(batch)}|gates={int(store_gates)}"


def search_paths(device: str) -> list[Path]:
    """The files :func:`lookup` reads for ``device``, in priority order (user cache, then shipped)."""
    name = cache_file_name(device)
    return [user_cache_dir() / name, SHIPPED_DIR / name]


def config_problem(config: object) -> str | None:
    """What makes ``config`` unusable as a launch config, or ``None`` when it is one: a dict with every key of
    :data:`CONFIG_KEYS`, block sizes powers of two >= 16, ``num_warps`` in :data:`NUM_WARPS`, ``num_stages``
    a positive int, ``persistent`` and ``split_k`` bools, ``batch_blocks`` in ``1 .. MAX_BATCH_BLOCKS``,
    optional ``streamed_chunks`` and ``max_wave_chunks`` (ints >= 0, above 0 only where ``persistent``), and warps
    that share the tile without computing the same products: with ``split_k`` a K chunk of at least 16 columns per warp
    (``block_k >= 16 * num_warps``), without it a row block of 16 per warp (``block_b >= 16 * num_warps``;
    ``tl.dot``'s row tile is 16)."""
    if not isinstance(config, dict):
        return "no 'config' table"
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        return f"config lacks {missing}"
    is_int = lambda value: isinstance(value, int) and not isinstance(value, bool)
    for key in ("block_b", "block_h", "block_k"):
        value = config[key]
        if not is_int(value) or value < MIN_BLOCK or value & (value - 1):
            return f"{key} {value!r} is not a power of two >= {MIN_BLOCK}"
    if not is_int(config["num_warps"]) or config["num_warps"] not in NUM_WARPS:
        return f"num_warps {config['num_warps']!r} is not one of {NUM_WARPS}"
    if not is_int(config["num_stages"]) or config["num_stages"] < 1:
        return f"num_stages {config['num_stages']!r} is not a positive int"
    for key in ("persistent", "split_k"):
        if not isinstance(config[key], bool):
            return f"{key} {config[key]!r} is not a bool"
    if not is_int(config["batch_blocks"]) or not 1 <= config["batch_blocks"] <= MAX_BATCH_BLOCKS:
        return f"batch_blocks {config['batch_blocks']!r} is not an int in 1..{MAX_BATCH_BLOCKS}"
    for key in OPTIONAL_CONFIG_KEYS:
        value = config.get(key, 0)
        if not is_int(value) or value < 0 or (value and not config["persistent"]):
            return f"{key} {value!r} is not an int >= 0 (> 0 only for a persistent config)"
    warps = config["num_warps"]
    if config["split_k"] and config["block_k"] < MIN_BLOCK * warps:
        return f"split_k over {warps} warps needs block_k >= {MIN_BLOCK * warps}, got {config['block_k']}"
    if not config["split_k"] and config["block_b"] < MIN_BLOCK * warps:
        return (
            f"{warps} warps splitting the rows need block_b >= {MIN_BLOCK * warps}, got {config['block_b']} "
            "(else several warps compute the same rows: use split_k)"
        )
    return None


# path -> (stamp, entries or None when the file was rejected). The stamp is (inode, mtime_ns, size) of a file
# that could be stat'ed (writers replace the file, so a rewrite gets a new inode even where the clock is too
# coarse to change the modification time), or the error that stat raised.
_parsed: dict[Path, tuple[tuple, dict[str, dict] | None]] = {}


def read_file(path: Path, *, device: str | None = None) -> dict[str, dict] | None:
    """Parse one cache file and return its valid entries, or warn and return ``None`` when it is unusable.

    ``device`` (when given) must match the device the file was written for; so must the Triton version. An
    entry whose config fails :func:`config_problem` is left out with a warning naming the file and the key.
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
    entries = {}
    for key, entry in document["entries"].items():
        reason = config_problem(entry.get("config") if isinstance(entry, dict) else None)
        if reason is None:
            entries[key] = entry
        else:
            warnings.warn(f"ignoring malformed tuning cache entry {key!r} in {path}: {reason}", stacklevel=3)
    return entries


def _entries(path: Path, device: str) -> dict[str, dict] | None:
    """The entries of ``path``, parsed once per version of the file; ``None`` when it is absent or unusable
    (a file that exists but cannot be reached warns once)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    except OSError as error:
        stamp: tuple = ("unreachable", str(error))
        if _parsed.get(path, (None,))[0] != stamp:
            warnings.warn(f"ignoring unreadable tuning cache {path}: {error}", stacklevel=3)
            _parsed[path] = (stamp, None)
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
    store_gates: bool = False,
) -> dict | None:
    """The cached config for this key as a plain dict with :data:`CONFIG_KEYS` and the
    :data:`OPTIONAL_CONFIG_KEYS` it has (already validated), or ``None`` if no file holds one."""
    name = device_name(device)
    key = entry_key(
        kernel,
        variant=variant,
        dtype=dtype,
        batch=batch,
        hidden=hidden,
        input_size=input_size,
        allow_tf32=allow_tf32,
        store_gates=store_gates,
    )
    for path in search_paths(name):
        entries = _entries(path, name)
        if entries is not None and key in entries:
            config = entries[key]["config"]
            return {field: config[field] for field in (*CONFIG_KEYS, *OPTIONAL_CONFIG_KEYS) if field in config}
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


def store(
    entries: dict[str, dict],
    *,
    device: str,
    directory: Path | None = None,
) -> Path:
    """Merge ``entries`` (key -> ``{"config": {...}, ...}``) into ``device``'s cache file; return its path.

    The file is read, merged and replaced under a lock, so concurrent writers keep each other's entries. A
    file on disk that is unusable is replaced (with a warning from the read). Raises ``ValueError`` for an
    entry whose config is not valid, ``OSError`` when the directory or file cannot be written.
    """
    for key, value in entries.items():
        reason = config_problem(value.get("config"))
        if reason is not None:
            raise ValueError(f"entry {key!r} needs a valid 'config' with keys {CONFIG_KEYS}: {reason}")
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
