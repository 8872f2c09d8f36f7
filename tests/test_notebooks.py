"""The analysis notebooks execute end to end on results that a real (tiny) CPU run wrote."""

from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from tritongru import bench, results, tuning

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def results_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    grid = bench.Grid(batch=(1, 2), hidden=(16,), seq_len=(2,), precisions=("fp32",), modes=("forward",))
    results.write(bench.run_bench(grid, device=CPU, progress=False), root)
    sweep = tuning.sweep(
        kernels=["cell"], variants=["cudnn", "classic"], precisions=["fp32"], batches=[2], hiddens=[16],
        input_size=None, seq_len=1, device=CPU, tiny=True, progress=False,
    )
    results.write(sweep, root)
    return root


@pytest.mark.parametrize("name", ["benchmarks.ipynb", "tuning.ipynb"])
def test_notebook_executes(name, results_root, monkeypatch):
    monkeypatch.setenv("TRITONGRU_RESULTS", str(results_root))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "CPU interpreter" in text, "the notebook says where its numbers come from"
    assert any("image/png" in o.get("data", {}) for o in outputs), "figures are drawn"


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS.glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name
