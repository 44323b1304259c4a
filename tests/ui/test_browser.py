"""The web UI in a real browser: Playwright drives Debian's Chromium against ``vital-callbacks serve`` (a
real uvicorn process) over demo data in SQLite. Overview totals equal ``vital-callbacks report``'s; a
trace page shows every node and call in order with its cost; a tenant's token reaches nothing of
another tenant's; the live tail shows a call recorded after the page opened; no console errors.
Screenshots of every page land in ``$VITAL_UI_SCREENSHOTS`` (default: a temp dir, printed)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_service
from vital_callbacks import LLMCall, Settings, TokenUsage, VitalCallbackHandler
from vital_callbacks.analytics import cost_report, reader_engine, report_total, trace_list_rows, trace_rows
from vital_callbacks.core.money import format_usd
from vital_callbacks.testing.demo import run_demo

CHROMIUM = os.environ.get("VITAL_CHROMIUM", "/usr/bin/chromium")
TOKENS = "acme:tok-acme,globex:tok-globex,*:tok-admin"
SHOTS = Path(os.environ.get("VITAL_UI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "vital-ui-screenshots")

playwright_api = pytest.importorskip("playwright.sync_api")


@dataclass
class Served:
    url: str
    database_url: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("ui")
    database_url = f"sqlite:///{folder / 'store.db'}"
    handler = VitalCallbackHandler(Settings(database_url=database_url, sinks=["sql"], flush_interval_s=0.05))
    run_demo(handler, runs=12)
    at = time.time() - 60
    handler.runtime.submit(LLMCall(run_id=str(uuid.uuid4()), parent_run_id=None, trace_id=str(uuid.uuid4()),
                                   tenant_id="acme", provider="ollama", model="our-own-llama", start_time=at,
                                   end_time=at + 1, duration_s=1, usage=TokenUsage(800, 80, 880)))  # no price
    handler.score(handler.last_trace_id or "", "helpfulness", 0.75, comment="browser test")
    trace = handler.last_trace_id
    assert handler.flush(30) and trace
    handler.shutdown()
    budgets = folder / "budgets.yaml"
    budgets.write_text("budgets:\n"
                       "  - {name: acme daily, scope: tenant, match: acme, period: day, amount_usd: 5}\n"
                       "  - {name: globex daily, scope: tenant, match: globex, period: day, amount_usd: 5}\n"
                       "  - {name: everyone monthly, scope: global, period: month, amount_usd: 100}\n")
    port = _free_port()
    env = {**os.environ, "VITAL_DATABASE_URL": database_url, "VITAL_API_TOKENS": TOKENS, "VITAL_JOURNAL": "false",
           "VITAL_BUDGETS_FILE": str(budgets)}
    command = [sys.executable, "-c", "import sys; from vital_callbacks.cli import main; sys.exit(main(sys.argv[1:]))",
               "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        server.kill()
        pytest.fail(f"vital-callbacks serve did not start: {server.communicate()[0]}")
    yield Served(url, database_url)
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_service(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).is_file(),
                    f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield instance
        instance.close()


class Page:
    """A browser tab signed in with one token, that fails the test on any console error."""

    def __init__(self, browser: Any, served: Served, token: str, width: int = 1280) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id="Europe/Berlin")
        self.tab = self.context.new_page()
        self.errors: list[str] = []
        self.tab.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.tab.on("pageerror", lambda e: self.errors.append(str(e)))
        self.base = served.url
        self.tab.goto(f"{self.base}/login")
        self.tab.fill("#token", token)
        self.tab.click("button[type=submit]")
        self.tab.wait_for_url(f"{self.base}/")

    def open(self, path: str) -> Any:
        response = self.tab.goto(f"{self.base}{path}")
        return response

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


def test_sign_in_is_required_and_a_wrong_token_is_refused(browser: Any, served: Served) -> None:
    context = browser.new_context()
    tab = context.new_page()
    tab.goto(f"{served.url}/traces?window=30d")
    assert tab.url.startswith(f"{served.url}/login")
    tab.fill("#token", "not-a-token")
    tab.click("button[type=submit]")
    assert tab.get_by_role("alert").inner_text() == "That token is not valid here."
    tab.fill("#token", "tok-admin")
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{served.url}/traces?window=30d")  # back where the visitor wanted to go
    context.close()


def test_overview_totals_equal_the_report(browser: Any, served: Served) -> None:
    """The 30-day overview's total and its per-tenant table read exactly what ``report`` prints."""
    page = Page(browser, served, "tok-admin")
    page.open("/?window=30d")
    engine = reader_engine(served.database_url)
    since = datetime.now(timezone.utc) - timedelta(days=30)
    rows = cost_report(engine, by="tenant", since=since)
    engine.dispose()
    calls, cost, unpriced = report_total(rows)
    tab = page.tab
    assert tab.inner_text("[data-total=window]") == format_usd(cost, unpriced)
    assert tab.inner_text("[data-total=calls]") == f"{calls:,}"
    table = tab.locator("section[aria-labelledby=by-tenant] tbody tr")
    shown = {table.nth(i).locator("th").inner_text(): table.nth(i).locator("[data-cost]").inner_text()
             for i in range(table.count())}
    assert shown == {r.key: format_usd(r.cost_usd, r.unpriced_calls) for r in rows}
    assert shown["acme"].startswith("≥ $") and "(1 unpriced)" in shown["acme"]  # never folded in as $0
    assert "1 calls had no known price" in tab.inner_text("main")
    assert tab.locator("svg.chart rect").count() >= 14  # a column per day of the trend
    page.shot("overview-admin")
    page.close()


def test_a_trace_page_shows_every_node_and_call_in_order(browser: Any, served: Served) -> None:
    engine = reader_engine(served.database_url)
    [summary] = trace_list_rows(engine, limit=1)
    trace = trace_rows(engine, summary.trace_id)
    engine.dispose()
    assert trace is not None
    page = Page(browser, served, "tok-admin")
    page.open(f"/traces/{summary.trace_id}")
    rows = page.tab.locator("table.waterfall tbody tr")
    shown = [(rows.nth(i).get_attribute("data-kind"), rows.nth(i).get_attribute("data-run"),
              rows.nth(i).locator("[data-cost]").inner_text()) for i in range(rows.count())]
    expected = [(s.kind, s.run_id, format_usd(s.cost_usd, s.unpriced_calls) if s.kind in ("llm", "graph", "tool")
                 else "-") for s in trace.spans]
    assert shown == expected
    kinds = [k for k, _, _ in shown]
    assert kinds[0] == "graph" and kinds.count("node") >= 5 and kinds.count("llm") == 5 and "tool" in kinds
    # Children come right after their parent, in start order: a node's call is the next row.
    by_run = {s.run_id: s for s in trace.spans}
    for (kind, run, _), (next_kind, next_run, _) in itertools.pairwise(shown):
        if next_kind == "llm":
            assert by_run[next_run].parent_run_id == run and kind == "node"
    assert page.tab.locator("text=helpfulness").count() == 1  # its score
    page.shot("trace")
    page.tab.set_viewport_size({"width": 390, "height": 844})
    page.shot("trace-phone")
    page.close()


def test_a_tenant_token_reaches_nothing_of_another_tenant(browser: Any, served: Served) -> None:
    engine = reader_engine(served.database_url)
    [theirs] = trace_list_rows(engine, tenant_id="globex", limit=1)
    engine.dispose()
    page = Page(browser, served, "tok-acme")
    tab = page.tab
    for path in ("/", "/traces?window=30d", "/tail", "/budgets"):
        page.open(path)
        text = tab.inner_text("main")
        assert "globex" not in text and "initech" not in text, path
    page.open("/traces?window=30d")
    tenants = set(tab.locator("table.traces tbody tr td:nth-child(3)").all_inner_texts())
    assert tenants == {"acme"}
    started = tab.locator("table.traces time").first  # the viewer's zone (Berlin here), UTC on hover
    assert started.get_attribute("title").endswith(" UTC") and not started.inner_text().endswith("UTC")
    page.shot("traces-tenant")
    assert page.open(f"/traces/{theirs.trace_id}").status == 404  # not even its existence
    assert "no such trace" in tab.inner_text("main")
    assert page.open("/?tenant=globex").status == 403
    page.shot("forbidden")
    # The API behind the pages, with the same browser cookie.
    api = tab.request.get(f"{served.url}/analytics/recent-logs?tenant_id=globex")
    assert api.status == 403
    mine = tab.request.get(f"{served.url}/analytics/recent-logs?limit=500").json()
    assert mine["calls"] and {c["tenant_id"] for c in mine["calls"]} == {"acme"}
    page.open("/budgets")
    budgets = page.tab.inner_text("main")
    assert "acme daily" in budgets and "globex daily" not in budgets and "everyone monthly" not in budgets
    page.errors = [e for e in page.errors if "403" not in e and "404" not in e]  # the refusals themselves
    page.close()


def test_an_admin_switches_tenants_and_shares_filtered_links(browser: Any, served: Served) -> None:
    page = Page(browser, served, "tok-admin")
    page.open("/traces?window=30d")
    page.tab.select_option("#tenant-select", "globex")
    page.tab.wait_for_url("**tenant=globex**")
    assert set(page.tab.locator("table.traces tbody tr td:nth-child(3)").all_inner_texts()) == {"globex"}
    page.tab.fill("input[name=user]", "globex-user-1")
    page.tab.click("form.filters button[type=submit]")
    page.tab.wait_for_url("**user=globex-user-1**")
    link = page.tab.url
    users = set(page.tab.locator("table.traces tbody tr td:nth-child(4)").all_inner_texts())
    assert users == {"globex-user-1"}
    other = Page(browser, served, "tok-admin")  # the shared link, opened by someone else
    other.open(link.removeprefix(served.url))
    assert set(other.tab.locator("table.traces tbody tr td:nth-child(4)").all_inner_texts()) == users
    other.close()
    page.close()


def test_the_live_tail_shows_a_call_recorded_after_the_page_opened(browser: Any, served: Served) -> None:
    page = Page(browser, served, "tok-admin")
    page.open("/tail")
    before = page.tab.locator("#tail tbody tr").count()
    run_id = str(uuid.uuid4())
    handler = VitalCallbackHandler(Settings(database_url=served.database_url, sinks=["sql"], flush_interval_s=0.05))
    now = time.time()
    handler.runtime.submit(LLMCall(run_id=run_id, parent_run_id=None, trace_id=run_id, tenant_id="acme",
                                   provider="openai", model="gpt-4o-mini", start_time=now, end_time=now + 0.4,
                                   duration_s=0.4, usage=TokenUsage(1234, 56, 1290)))
    assert handler.flush()
    handler.shutdown()
    row = page.tab.locator(f"#tail tbody tr[data-run='{run_id}']")
    row.wait_for(timeout=10_000)
    assert page.tab.locator("#tail tbody tr").first.get_attribute("data-run") == run_id
    assert "1,234 / 56 tok" in row.inner_text() and "gpt-4o-mini" in row.inner_text()
    assert page.tab.locator("#tail tbody tr").count() == min(before + 1, 200)
    page.shot("tail")
    page.close()


def test_budgets_quality_and_keyboard(browser: Any, served: Served) -> None:
    """The budgets page lists the scores; every page is reachable from the keyboard (skip link, nav)."""
    page = Page(browser, served, "tok-admin")
    page.open("/budgets")
    text = page.tab.inner_text("main")
    assert "helpfulness" in text and all(name in text for name in ("acme daily", "globex daily", "everyone monthly"))
    page.shot("budgets")
    page.open("/")
    page.tab.keyboard.press("Tab")
    assert page.tab.evaluate("document.activeElement.textContent") == "Skip to content"
    focused = []
    for _ in range(6):
        page.tab.keyboard.press("Tab")
        focused.append(page.tab.evaluate("document.activeElement.textContent"))
    assert {"Overview", "Traces", "Live tail", "Budgets & quality"} <= set(focused)
    page.tab.set_viewport_size({"width": 390, "height": 844})
    page.open("/")
    page.shot("overview-phone")
    overflow = page.tab.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")
    assert not overflow  # wide tables scroll inside their box, the page itself does not
    print(f"\nscreenshots: {SHOTS}")
    page.close()
