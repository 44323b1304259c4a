"""The UI's pages without a browser (FastAPI's TestClient): odd data, odd stores and odd requests get a
page that says what is wrong, never a hang, a 500 or a number that hides unpriced spend."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from vital_callbacks import LLMCall, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.analytics import reader_engine
from vital_callbacks.analytics.traces import Span, _tree
from vital_callbacks.server import create_app
from vital_callbacks.store import migrate

TOKENS = "acme:tok-acme,*:tok-admin"


def signed_in(client: TestClient, token: str = "tok-admin") -> TestClient:
    client.cookies.set("vital_token", token)
    return client


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    handler = VitalCallbackHandler(Settings(database_url=url, sinks=["sql"], flush_interval_s=0.05))
    at = time.time() - 30
    handler.runtime.submit(LLMCall(run_id="u1", parent_run_id=None, trace_id="u1", tenant_id="acme",
                                   provider="ollama", model="our-own-llama", start_time=at, end_time=at + 1,
                                   duration_s=1, usage=TokenUsage(500, 50, 550)))
    assert handler.flush()
    handler.shutdown()
    yield url


def app_for(url: str, **kwargs: object) -> TestClient:
    return TestClient(create_app(reader_engine(url), tokens=TOKENS, **kwargs))  # type: ignore[arg-type]


def span(kind: str, run_id: str, parent: str | None, at: int) -> Span:
    started = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=at)
    return Span(kind, run_id, parent, run_id, started, 1.0, "success", None, None, None, None, None, None)


@pytest.mark.parametrize(("spans", "placed"), [
    ([span("graph", "dup", None, 0), span("node", "dup", "dup", 1), span("llm", "c", "dup", 2)],
     [("dup", 0), ("c", 1)]),
    ([span("graph", "r", None, 0), span("node", "a", "b", 1), span("node", "b", "a", 2)],
     [("r", 0), ("a", 1), ("b", 2)]),
    ([span("graph", "r", None, 0), span("node", "a", "a", 1)], [("r", 0), ("a", 1)]),
    ([span("node", "a", "b", 1), span("node", "b", "a", 2)], [("a", 0), ("b", 1)]),
    ([span("graph", "r", None, 0), span("llm", "x", "not stored", 1)], [("r", 0), ("x", 1)]),
], ids=["repeated run id", "loop of parents", "its own parent", "only a loop", "orphan"])
def test_every_span_is_placed_once_whatever_the_rows_say(spans: list[Span], placed: list[tuple[str, int]]) -> None:
    assert [(s.run_id, s.depth) for s in _tree(spans)] == placed


def test_a_trace_with_a_repeated_run_id_is_shown(store: str) -> None:
    engine = create_engine(store)
    with engine.begin() as conn:  # a row loaded by hand under an id the trace already has
        conn.execute(text("INSERT INTO node_runs (run_id, parent_run_id, trace_id, tenant_id, node, started_at, "
                          "ended_at, duration_s, status) VALUES ('u1', 'u1', 'u1', 'acme', 'x', "
                          "'2026-01-01 00:00:00', '2026-01-01 00:00:01', 1, 'success')"))
    engine.dispose()
    with app_for(store) as client:
        response = signed_in(client).get("/traces/u1")
    assert response.status_code == 200 and response.text.count('data-run="u1"') == 1


def test_unpriced_spend_is_never_shown_as_exact(store: str, tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets:\n  - {name: acme daily, scope: tenant, match: acme, period: day, amount_usd: 5}\n")
    with app_for(store, budgets_file=budgets) as client:
        page = signed_in(client, "tok-acme").get("/budgets").text
        overview = client.get("/").text
    assert "≥ $0.00 (1 unpriced)" in page  # the budget's spend leaves that call out, and says so
    assert "unpriced (1 call)" in overview
    assert "≥ $0.00 (1 unpriced)" in overview.split('id="budgets-h"')[1].split("</section>")[0]


def test_a_budgets_file_that_cannot_be_read_is_said_on_the_page(store: str, tmp_path: Path) -> None:
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text("budgets: [{scope: nowhere}]\n")
    with app_for(store, budgets_file=budgets) as client:
        for path in ("/", "/budgets"):
            response = signed_in(client).get(path)
            assert response.status_code == 200, path
            assert "VITAL_BUDGETS_FILE cannot be read" in response.text
        budgets.write_text("budgets:\n  - {name: fixed, scope: global, period: day, amount_usd: 5}\n")
        time.sleep(0.01)
        assert "fixed" in client.get("/budgets").text  # an edit is picked up


def test_a_store_on_an_older_schema_says_to_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate.upgrade(url, "0008")
    with app_for(url) as client:
        response = signed_in(client).get("/")
    assert response.status_code == 503 and "vital-callbacks db upgrade" in response.text
    assert "revision 0008" in response.text


def test_bad_parameters_and_foreign_sign_ins_are_refused(store: str) -> None:
    with app_for(store) as client:
        signed_in(client)
        for value in ("NaN", "Infinity", "sNaN", "lots"):
            assert client.get("/traces", params={"min_cost": value}).status_code == 422, value
        assert "Last 24h" in client.get("/", params={"window": "bogus"}).text
        page = client.get("/")
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        client.cookies.clear()
        foreign = client.post("/login", content="token=tok-admin", follow_redirects=False,
                              headers={"Origin": "https://elsewhere.example", "Content-Type":
                                       "application/x-www-form-urlencoded"})
        assert foreign.status_code == 403 and "vital_token" not in foreign.headers.get("set-cookie", "")
        huge = client.post("/login", content="token=" + "x" * 10_000, follow_redirects=False,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert huge.status_code == 413
        own = client.post("/login", content=f"token=tok-admin&next=/tail&_={uuid.uuid4()}", follow_redirects=False,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert own.status_code == 303 and own.headers["location"] == "/tail"
        assert "HttpOnly" in own.headers["set-cookie"] and "SameSite=strict" in own.headers["set-cookie"]
