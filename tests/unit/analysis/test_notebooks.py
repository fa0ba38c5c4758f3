"""Execute the notebooks with nbclient (kernel python3) against a generated example run."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from chaosinject import analysis

ROOT = Path(__file__).resolve().parents[3]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_two_notebooks_without_committed_outputs():
    assert {p.name for p in NOTEBOOKS} >= {"post_experiment_analysis.ipynb", "statistics_behaviour.ipynb"}
    for p in NOTEBOOKS:
        nb = nbformat.read(p, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{p.name} has outputs committed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path, monkeypatch):
    analysis.example_run(tmp_path / "example-run", rng=2026)
    monkeypatch.delenv("CHAOS_RUN_DIR", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    assert any(c.outputs for c in nb.cells if c.cell_type == "code")
