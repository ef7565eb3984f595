"""docs/tutorial.ipynb executed headless, as a reader runs it top to bottom, so that it never rots."""
from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.paths import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO / "docs" / "tutorial.ipynb"
CELL_TIMEOUT_S = 300
EXPECTED_FIGURES = 2  # decoded images, encoding scatter


@pytest.mark.slow
def test_tutorial_notebook_runs_and_shows_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("LEA_TUTORIAL_DIR", str(tmp_path))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs"
    nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO / "docs")}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [Image.open(io.BytesIO(base64.b64decode(o.data["image/png"])))
               for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(figures) == EXPECTED_FIGURES and all(min(f.size) > 100 for f in figures)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "decoded: (4, 2, 32, 32, 3) uint8" in text
    assert "encoding_pearson_mean" in text and "IProgress" not in text
    assert (tmp_path / "simulated" / "Kamitani" / "npz").is_dir()           # wrote under LEA_TUTORIAL_DIR only
