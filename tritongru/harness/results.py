"""Results files: tidy rows plus the full environment they were measured in.

A results file is one JSON document::

    {"schema": "tritongru-results", "schema_version": 1, "kind": "bench" | "tune",
     "meta": {gpu, device_type, driver, cuda, cudnn, torch, triton, tritongru, python, platform,
              git_commit, git_dirty, timestamp, timing, ...},
     "rows": [{...}, ...]}

``kind="bench"`` rows are one contender x config x mode (:data:`BENCH_FIELDS`); ``kind="tune"`` rows are
one tuning candidate each (:data:`TUNE_FIELDS`). Files live under ``<root>/<gpu slug>/``
(``profiling/results/`` in the repository). ``meta["timing"]`` says how times were taken:
``"device-events"`` on a GPU, or ``"interpreter"`` for a functional run through Triton's CPU interpreter,
whose times mean nothing.

Results measured on a commit older than the latest change to ``kernels/`` are stale (:func:`is_stale`).
"""

from __future__ import annotations

import functools
import json
import platform
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

import tritongru
from tritongru.environment import device_name, slug, triton_version, write_atomic

SCHEMA = "tritongru-results"
SCHEMA_VERSION = 1
KINDS = ("bench", "tune")
TIMINGS = ("device-events", "interpreter")

META_FIELDS = (
    "gpu",
    "device_type",
    "driver",
    "cuda",
    "cudnn",
    "torch",
    "triton",
    "tritongru",
    "python",
    "platform",
    "git_commit",
    "git_dirty",
    "timestamp",
    "timing",
)
BENCH_FIELDS = (
    "provider",
    "variant",
    "mode",
    "dtype",
    "batch",
    "hidden",
    "input_size",
    "seq_len",
    "status",
    "note",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "us_per_step",
    "tokens_per_s",
    "flops",
    "bytes",
    "tflops",
    "gbps",
    "tflops_frac_of_peak",
    "gbps_frac_of_peak",
    "speedup_vs_baseline",
    "peak_mem_mb",
    "max_abs_err",
)
TUNE_FIELDS = (
    "kernel",
    "variant",
    "dtype",
    "batch",
    "hidden",
    "input_size",
    "seq_len",
    "block_b",
    "block_h",
    "block_k",
    "num_warps",
    "num_stages",
    "persistent",
    "status",
    "reason",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "max_abs_err",
    "winner",
)
ROW_FIELDS = {"bench": BENCH_FIELDS, "tune": TUNE_FIELDS}

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout this package was installed from (editable install); git metadata is read here."""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess | None:
    if shutil.which("git") is None:
        return None
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def git_state(repo: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """The checked-out commit of ``repo`` and whether its tracked files have uncommitted changes."""
    head = _git(repo, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None, None
    status = _git(repo, "status", "--porcelain", "--untracked-files=no")
    dirty = None if status is None or status.returncode != 0 else bool(status.stdout.strip())
    return head.stdout.strip(), dirty


def kernels_last_commit(repo: Path = REPO_ROOT) -> str | None:
    """The latest commit that changed ``kernels/`` in ``repo`` (``None`` outside a git checkout)."""
    log = _git(repo, "log", "-1", "--format=%H", "--", "kernels")
    if log is None or log.returncode != 0 or not log.stdout.strip():
        return None
    return log.stdout.strip()


def is_stale(document: dict, repo: Path = REPO_ROOT) -> bool | None:
    """True when the results were measured on a commit that lacks the latest change to ``kernels/``.

    ``None`` when that cannot be told: no git, no commit recorded, or a commit this checkout does not have.
    """
    measured = document.get("meta", {}).get("git_commit")
    latest = kernels_last_commit(repo)
    if not measured or latest is None:
        return None
    return _lacks(repo, measured, latest)


@functools.cache
def _lacks(repo: Path, measured: str, latest: str) -> bool | None:
    """Whether commit ``measured`` lacks commit ``latest`` (``None``: ``repo`` does not know ``measured``).
    Memoised: the history between two commits never changes, and every figure's title asks again."""
    known = _git(repo, "cat-file", "-e", f"{measured}^{{commit}}")
    if known is None or known.returncode != 0:
        return None
    ancestor = _git(repo, "merge-base", "--is-ancestor", latest, measured)
    return ancestor is not None and ancestor.returncode != 0


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = subprocess.run(
        ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return query.stdout.strip().splitlines()[0] if query.returncode == 0 and query.stdout.strip() else None


def gpu_label(device: torch.device, *, interpreter: bool) -> str:
    """The name results are filed under: the GPU's name, or ``"cpu-interpreter"`` / ``"cpu"``."""
    if device.type == "cuda":
        return device_name(device)
    return "cpu-interpreter" if interpreter else device.type


def environment(device: torch.device, *, interpreter: bool, repo: Path = REPO_ROOT) -> dict:
    """Everything :data:`META_FIELDS` asks for, measured now."""
    commit, dirty = git_state(repo)
    cuda = device.type == "cuda"
    return {
        "gpu": gpu_label(device, interpreter=interpreter),
        "device_type": device.type,
        "driver": _driver_version() if cuda else None,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "torch": torch.__version__,
        "triton": triton_version(),
        "tritongru": tritongru.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": dirty,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "timing": "interpreter" if interpreter else "device-events",
    }


def new_document(kind: str, meta: dict, rows: list[dict]) -> dict:
    """A results document; raises ``ValueError`` when it does not follow the schema."""
    document = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "kind": kind, "meta": meta, "rows": rows}
    errors = validate(document)
    if errors:
        raise ValueError("invalid results document: " + "; ".join(errors))
    return document


def validate(document: object) -> list[str]:
    """The ways ``document`` breaks the schema (empty when it follows it)."""
    if not isinstance(document, dict):
        return ["not a JSON object"]
    errors = []
    if document.get("schema") != SCHEMA or document.get("schema_version") != SCHEMA_VERSION:
        errors.append(f"schema is not {SCHEMA} v{SCHEMA_VERSION}")
    kind = document.get("kind")
    if kind not in KINDS:
        errors.append(f"kind {kind!r} is not one of {KINDS}")
    meta = document.get("meta")
    if not isinstance(meta, dict):
        errors.append("meta is missing")
    else:
        errors += [f"meta lacks {field!r}" for field in META_FIELDS if field not in meta]
        if meta.get("timing") not in TIMINGS:
            errors.append(f"meta.timing {meta.get('timing')!r} is not one of {TIMINGS}")
    rows = document.get("rows")
    if not isinstance(rows, list):
        errors.append("rows is not a list")
    elif kind in KINDS:
        for index, row in enumerate(rows):
            missing = [field for field in ROW_FIELDS[kind] if field not in row]
            if missing:
                errors.append(f"row {index} lacks {missing}")
    return errors


def write_file(document: dict, path: Path | str) -> Path:
    """Write ``document`` atomically to ``path`` (readers see the old file or the new one, never half of one);
    raises ``ValueError`` when it breaks the schema."""
    errors = validate(document)
    if errors:
        raise ValueError("invalid results document: " + "; ".join(errors))
    write_atomic(Path(path), json.dumps(document, indent=1) + "\n")
    return Path(path)


def write(document: dict, root: Path | str) -> Path:
    """Write ``document`` atomically to ``<root>/<gpu slug>/<kind>-<timestamp>.json`` and return the path."""
    meta = document["meta"]
    stamp = meta["timestamp"].replace(":", "").replace("-", "").replace("+0000", "Z")
    directory = Path(root) / slug(meta["gpu"])
    path = directory / f"{document['kind']}-{stamp}.json"
    counter = 1
    while path.exists():
        counter += 1
        path = directory / f"{document['kind']}-{stamp}-{counter}.json"
    return write_file(document, path)


def load(path: Path | str) -> dict:
    """Read and check one results file; raises ``ValueError`` naming the file when it breaks the schema."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    errors = validate(document)
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return document


def find(root: Path | str, kind: str | None = None) -> list[Path]:
    """Results files under ``root`` (recursively), oldest first by name within each GPU directory."""
    pattern = f"{kind}-*.json" if kind else "*.json"
    return sorted(Path(root).rglob(pattern))


def latest(root: Path | str, kind: str) -> Path | None:
    """The most recently written results file of ``kind`` under ``root``."""
    paths = find(root, kind)
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def describe(document: dict, repo: Path = REPO_ROOT) -> str:
    """One line saying where and how ``document`` was measured, with the staleness and interpreter caveats."""
    meta = document["meta"]
    commit = (meta.get("git_commit") or "unknown")[:10]
    text = f"{meta['gpu']} | torch {meta['torch']} | triton {meta['triton']} | commit {commit}"
    text += f" | {meta['timestamp']}"
    if meta["timing"] == "interpreter":
        text += " | CPU interpreter: functional run, times mean nothing"
    stale = is_stale(document, repo)
    if stale:
        text += " | STALE: kernels/ changed after this commit"
    return text
