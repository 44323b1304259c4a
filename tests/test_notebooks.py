"""The notebooks run top to bottom, on an empty store (loading demo data first) and on a month of
realistic traffic with an unpriced model, and every figure they draw is kept as a PNG.

Figures go to ``$VITAL_NOTEBOOK_FIGURES`` when set (to look at them), else to the test's temp dir. The
amounts the notebooks print are checked against the analytics (and the workload's own events): each
carries its unpriced calls, and nothing unpriced is shown as $0.
"""

from __future__ import annotations

import base64
import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.spend_workload import UNKNOWN_MODEL, generate
from vital_callbacks.core.money import format_usd, usd
from vital_callbacks.sinks.sql import SQLSink

if TYPE_CHECKING:
    from nbformat import NotebookNode

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("matplotlib")
pytest.importorskip("pandas")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
FIGURES = {"cost_exploration.ipynb": 6, "latency_and_errors.ipynb": 3}


def as_of() -> datetime:
    """The 20th, noon UTC, of last month: a month well under way whatever day the tests run."""
    first = datetime.now(timezone.utc).replace(day=1, hour=12, minute=0, second=0, microsecond=0)
    return (first - timedelta(days=1)).replace(day=20)


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, label: str,
            at: datetime | None = None) -> NotebookNode:
    """Run notebook ``name`` against ``url`` (with ``AS_OF = at`` after its parameters cell, as papermill
    would), keep its figures as PNGs, and return it executed."""
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.delenv("VITAL_SINKS", raising=False)
    path = tmp_path / name
    shutil.copy(NOTEBOOKS / name, path)
    nb: NotebookNode = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "commit notebooks clean"
    (parameters,) = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if at is not None:
        pinned = nbformat.v4.new_code_cell(f"AS_OF = datetime.fromisoformat({at.isoformat()!r})")
        nb.cells.insert(parameters + 1, pinned)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    keep = Path(os.environ.get("VITAL_NOTEBOOK_FIGURES") or tmp_path / "figures")
    keep.mkdir(parents=True, exist_ok=True)
    for number, png in enumerate(figures(nb), 1):
        (keep / f"{Path(name).stem}-{label}-{number}.png").write_bytes(base64.b64decode(png))
    return nb


def figures(nb: NotebookNode) -> list[str]:
    return [out["data"]["image/png"] for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]


def text(nb: NotebookNode) -> str:
    """Everything the notebook printed or displayed as text, for the checks on amounts."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            assert out.get("output_type") != "error", out.get("evalue")
            if out.get("name") == "stderr":
                assert "Warning" not in out["text"], out["text"]  # a plot that warns is a plot gone wrong
            parts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_runs_on_an_empty_store(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Executed in a temp dir against a fresh SQLite store, every cell succeeds, the demo data is
    loaded into that store, and each plot cell leaves a PNG figure in the outputs."""
    from vital_callbacks import analytics

    url = f"sqlite:///{tmp_path / 'store.db'}"
    nb = execute(name, tmp_path, monkeypatch, url, "demo")
    assert len(figures(nb)) == FIGURES[name]
    assert analytics.total_row(analytics.reader_engine(url)).calls == 150  # 30 demo runs x 5 LLM calls
    assert not (tmp_path / "vital_callbacks.db").exists()  # the notebook used the store it was given
    shown = text(nb)
    assert "the store was empty: loaded 30 demo runs" in shown and "$0.000000" not in shown


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, datetime]:
    """A store holding the four weeks of traffic up to :func:`as_of`, and that instant."""
    end = as_of()
    url = f"sqlite:///{tmp_path_factory.mktemp('traffic') / 'store.db'}"
    sink = SQLSink(url)
    generate(end=end).store(sink)
    sink.shutdown()
    return url, end


def test_cost_notebook_tells_priced_from_unpriced(traffic: tuple[str, datetime], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """On traffic with a model nobody has a price for: the headline, the tenant table, the month's
    projection and the node table show the priced sums with their unpriced counts, the all-unpriced
    tenant as "unpriced (N calls)", and no unpriced group as $0."""
    from vital_callbacks import analytics

    url, end = traffic
    nb = execute("cost_exploration.ipynb", tmp_path, monkeypatch, url, "traffic", at=end)
    assert len(figures(nb)) == FIGURES["cost_exploration.ipynb"]
    shown = text(nb)
    engine = analytics.reader_engine(url)
    since = end - timedelta(days=30)
    total = analytics.total_row(engine, since=since, until=end)
    assert total.cost_usd is not None and total.unpriced_calls > 0
    assert f"{total.calls:,} LLM calls, ≥ {usd(total.cost_usd)} ({total.unpriced_calls} unpriced)" in shown
    tenants = {g.key: g for g in analytics.cost_by_rows(engine, "tenant", since=since, until=end)}
    assert tenants["globex"].cost_usd is None
    assert f"unpriced ({tenants['globex'].unpriced_calls} calls)" in shown
    for group in tenants.values():
        assert format_usd(group.cost_usd, group.unpriced_calls) in shown
    month = analytics.month_projection(engine, now=end)
    assert month.is_lower_bound and month.projected_usd is not None and month.month_to_date_usd is not None
    assert (f"in the first {float(month.days_elapsed):.1f} days; at that rate the month ends at "
            f"≥ {usd(month.projected_usd)} ({month.unpriced_calls} unpriced)") in shown
    assert month.days[-1].cumulative_usd == month.projected_usd  # the figure's line ends where its title says
    assert UNKNOWN_MODEL in shown  # the section on calls without a price names the model
    assert "$0.000000" not in shown and "$0.00 " not in shown


def test_latency_notebook_on_traffic(traffic: tuple[str, datetime], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The latency notebook reads the same traffic; its summary counts the window's calls and failures,
    and the last hour's cost is shown with its unpriced calls."""
    from vital_callbacks import analytics

    url, end = traffic
    nb = execute("latency_and_errors.ipynb", tmp_path, monkeypatch, url, "traffic", at=end)
    assert len(figures(nb)) == FIGURES["latency_and_errors.ipynb"]
    shown = text(nb)
    engine = analytics.reader_engine(url)
    calls = analytics.latency_rows(engine, (), source="llm", since=end - timedelta(days=30), until=end)[0]
    assert f"{calls.runs:,} LLM calls, {calls.errors:,} failed" in shown
    live = analytics.realtime(engine, 60, now=end)
    assert f"cost {format_usd(live.cost_usd, live.unpriced_calls)}" in shown
