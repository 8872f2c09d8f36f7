"""The README's quickstarts run as written: pasted into a fresh Python, nothing else set."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block_under(heading: str) -> str:
    """The first ```python block after the line ``heading`` in the README."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index("```python", lines.index(heading))
    end = lines.index("```", start + 1)
    return "\n".join(lines[start + 1 : end]) + "\n"


def run_pasted(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run ``code`` as a user pasting it would: a fresh interpreter, ``TRITON_INTERPRET`` not set."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def test_cpu_quickstart_runs_as_pasted(tmp_path):
    code = python_block_under("### On a CPU, at small sizes (runs as pasted)")
    assert 'os.environ["TRITON_INTERPRET"] = "1"' in code.split("import tritongru")[0], "set before the import"
    done = run_pasted(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "output (3, 5, 16) h_n (2, 3, 16) dx (3, 5, 8) h (3, 16)" in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU quickstart needs a CUDA device")
def test_gpu_quickstart_runs_as_pasted(tmp_path):
    code = python_block_under("### On a GPU")
    done = run_pasted(code + "print(tuple(output.shape), tuple(h.shape), tuple(out.shape))\n", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(8, 100, 256) (8, 256) (100, 8, 256)" in done.stdout
