"""The analysis notebook runs top to bottom on the smoke pipeline's outputs (a cell error fails)."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"


def test_analysis_notebook_executes_on_smoke_outputs(smoke_repo, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("REDRAW_ROOT", str(smoke_repo.path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(smoke_repo.path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "MLflow runs" in text and os.fspath(smoke_repo.path) in text
