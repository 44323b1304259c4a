"""The notebooks run top to bottom on an empty store (loading demo data first) and draw their figures."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nbformat import NotebookNode

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _figures(nb: NotebookNode) -> int:
    return sum(1 for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
               if "image/png" in out.get("data", {}))


@pytest.mark.parametrize(("name", "figures"), [("cost_exploration.ipynb", 5), ("latency_and_errors.ipynb", 3)])
def test_notebook_runs_on_an_empty_store(name: str, figures: int, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Executed in a temp dir against a fresh SQLite store, every cell succeeds, the demo data is
    loaded into that store, and each plot cell leaves a PNG figure in the outputs."""
    from vital_callbacks import analytics

    url = f"sqlite:///{tmp_path / 'store.db'}"
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("VITAL_SINKS", raising=False)
    path = tmp_path / name
    shutil.copy(NOTEBOOKS / name, path)
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit notebooks clean"
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert _figures(nb) == figures
    assert analytics.total_row(analytics.reader_engine(url)).calls == 150  # 30 demo runs x 5 LLM calls
    assert not (tmp_path / "vital_callbacks.db").exists()  # the notebook used the store it was given
