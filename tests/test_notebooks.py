"""The analysis notebooks execute end to end, by the command the README documents, on results that a real
(tiny) run on the test device wrote."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tritongru.harness import bench, results, tuning
from tritongru.harness.grids import Grid
from tritongru.variants import VARIANTS

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def results_root(tmp_path_factory, device):
    root = tmp_path_factory.mktemp("results")
    grid = Grid(batch=(1, 2), hidden=(16,), seq_len=(2,), precisions=("fp32",), modes=("forward",))
    results.write(bench.run_bench(grid, device=device, progress=False), root)
    sweep = tuning.sweep(
        kernels=["cell"],
        variants=list(VARIANTS),
        precisions=["fp32"],
        batches=[2],
        hiddens=[16],
        input_size=None,
        seq_len=1,
        device=device,
        tiny=True,
        progress=False,
        write_cache=False,
    )
    results.write(sweep, root)
    return root


@pytest.mark.parametrize(("name", "kind"), [("benchmarks.ipynb", "bench"), ("tuning.ipynb", "tune")])
def test_notebook_executes(name, kind, results_root, tmp_path):
    """``jupyter execute notebooks/<name>`` (nbclient's command, in the dev extras), outputs saved aside."""
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "execute", str(NOTEBOOKS / name), f"--output={tmp_path}/{{notebook_name}}"],
        env={**os.environ, "TRITONGRU_RESULTS": str(results_root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    notebook = nbformat.read(tmp_path / name, as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    [document] = [results.load(path) for path in results.find(results_root, kind)]
    assert results.describe(document) in text, "the notebook says where its numbers come from"
    if document["meta"]["timing"] == "interpreter":
        assert "CPU interpreter" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures are drawn"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name
