"""notebooks/analysis.ipynb executes top to bottom and is committed without outputs."""
from __future__ import annotations

import pytest

from workflow.helpers import REPO

NB = REPO / "notebooks" / "analysis.ipynb"


def test_notebook_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NB, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None


def test_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("LLMOS_NOTEBOOK_OUT", str(tmp_path))
    nb = nbformat.read(NB, as_version=4)
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "comparison.parquet").exists() and (tmp_path / "plots" / "bars.png").exists()
    assert (tmp_path / "my_bars.png").exists()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 5
