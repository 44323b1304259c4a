"""Unpriced is never $0, anywhere: analytics rows and frames, the CLI report and the HTTP API over a
realistic month of traffic where one model (``my-private-model-x``) has no price.

The workload (:mod:`tests.spend_workload`) has a tenant on priced models only, one partly on the
unknown model, and one entirely on it, plus failed calls without usage. Every expectation is summed
here in Python from the events themselves; the store's aggregates must agree, carry the unpriced count
next to each priced sum, and show no amount at all (never 0) where nothing was priced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from tests.conftest import require_service
from tests.spend_workload import TENANTS, UNKNOWN_MODEL, Spend, Workload, generate, spend_of
from vital_callbacks import analytics
from vital_callbacks.cli import main
from vital_callbacks.core.events import LLMCall
from vital_callbacks.core.money import format_usd, usd
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.store import migrate as db


@pytest.fixture(scope="module")
def workload() -> Workload:
    # Ends at the start of this hour, so windows measured in whole hours from it hold every trace.
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    return generate(end=now)


@pytest.fixture(scope="module")
def sqlite_url(workload: Workload, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('unpriced') / 'store.db'}"
    sink = SQLSink(url)
    workload.store(sink)
    sink.shutdown()
    return url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, workload: Workload, sqlite_url: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A reader over the workload, on SQLite and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        engine = analytics.reader_engine(sqlite_url)
        yield engine
        engine.dispose()
        return
    from tests.pg_cluster import fresh_database, reachable
    from vital_callbacks.sinks.sql.postgres import PostgresSink

    require_service(reachable(), "no PostgreSQL at 127.0.0.1:5432")
    with fresh_database() as url:
        db.upgrade(url)
        sink = PostgresSink(url, spill_dir=tmp_path_factory.mktemp("spill"))
        workload.store(sink)
        sink.shutdown()
        engine = analytics.reader_engine(url)
        yield engine
        engine.dispose()


def tenant(name: str) -> Callable[[LLMCall], bool]:
    return lambda c: c.tenant_id == name


def of_model(name: str) -> Callable[[LLMCall], bool]:
    return lambda c: c.model == name


def on_day(day: str) -> Callable[[LLMCall], bool]:
    return lambda c: c.started_at.date().isoformat() == day


def same_cost(got: Decimal | None, want: Spend) -> bool:
    """The store's sum equals Python's (to 1e-9: SQLite keeps NUMERIC as a float), both None when nothing
    was priced."""
    if got is None or want.priced_usd is None:
        return got is None and want.priced_usd is None
    return round(got, 9) == round(want.priced_usd, 9)


def test_the_workload_has_what_the_tests_need(workload: Workload) -> None:
    """A tenant with nothing priced, one partly priced, one fully priced, and failed calls without usage."""
    globex, acme, initech = (workload.expected(tenant(t)) for t in ("globex", "acme", "initech"))
    assert globex.priced_calls == 0 and globex.unpriced_calls > 10 and globex.failed_without_usage > 0
    assert acme.priced_calls > 10 and acme.unpriced_calls > 3
    assert initech.priced_calls > 10 and initech.unpriced_calls == 0
    assert any(c.cache_hit for c in workload.llm_calls())


def test_cost_by_tenant_carries_the_unpriced_count(store: Engine, workload: Workload) -> None:
    """Whole days from the rollup and raw edges alike: the priced sum and the unpriced count per tenant;
    cost None for the tenant whose calls are all unpriced; failed calls without usage in neither."""
    windows: list[tuple[datetime | None, datetime | None]] = [
        (None, None),  # all whole days: the rollup alone
        (workload.end - timedelta(days=20, hours=5), workload.end - timedelta(hours=7)),  # and raw edges
    ]
    for since, until in windows:
        rows = {r.key: r for r in analytics.cost_by_rows(store, "tenant", since=since, until=until)}
        for name in TENANTS:
            def where(c: LLMCall, name: str = name, since: datetime | None = since,
                      until: datetime | None = until) -> bool:
                return c.tenant_id == name and (since is None or c.started_at >= since) and (
                    until is None or c.started_at < until)
            want = workload.expected(where)
            got = rows[name]
            assert (got.calls, got.unpriced_calls) == (want.calls, want.unpriced_calls), (name, since, until)
            assert same_cost(got.cost_usd, want), (name, since, until, got.cost_usd, want.priced_usd)
            assert got.cost_is_lower_bound == (want.unpriced_calls > 0)
        assert rows["globex"].cost_usd is None and rows["globex"].calls > rows["globex"].unpriced_calls
        assert list(rows)[-1] == "globex"  # an unknown cost is not ranked above known ones


def test_every_cost_query_leaves_no_unpriced_group_at_zero(store: Engine, workload: Workload) -> None:
    """By model, by day, by (graph, node), totals, the month projection and realtime: each carries the
    unpriced count, and where nothing was priced the cost is None."""
    model = {r.key: r for r in analytics.cost_by_rows(store, "model")}
    unknown = workload.expected(of_model(UNKNOWN_MODEL))
    assert (model[UNKNOWN_MODEL].cost_usd, model[UNKNOWN_MODEL].unpriced_calls) == (None, unknown.unpriced_calls)
    assert all(r.unpriced_calls == 0 and r.cost_usd for k, r in model.items() if k != UNKNOWN_MODEL)

    for day in analytics.daily_cost_rows(store):
        want = workload.expected(on_day(day.day))
        assert (day.calls, day.unpriced_calls) == (want.calls, want.unpriced_calls)
        assert same_cost(day.cost_usd, want), day

    for group in analytics.cost_by_rows(store, ("graph", "node"), tenant_id="globex"):
        assert group.cost_usd is None and group.unpriced_calls > 0, group

    total = analytics.total_row(store)
    everything = workload.expected()
    assert (total.unpriced_calls, total.cost_is_lower_bound) == (everything.unpriced_calls, True)
    assert same_cost(total.cost_usd, everything)
    assert analytics.total_row(store, tenant_id="globex").cost_usd is None

    last = max((c for c in workload.llm_calls(tenant("globex")) if c.token_source != "none"),
               key=lambda c: c.start_time)
    just_after = last.started_at + timedelta(seconds=1)  # a month (and a minute) that holds globex calls
    month = analytics.month_projection(store, now=just_after, tenant_id="globex")
    in_month = workload.expected(lambda c: c.tenant_id == "globex" and month_start(just_after) <= c.started_at
                                 < just_after)
    assert (month.month_to_date_usd, month.projected_usd, month.daily_average_usd) == (None, None, None)
    assert (month.unpriced_calls, month.is_lower_bound) == (in_month.unpriced_calls, True)
    assert all(d.cost_usd is None for d in month.days if d.unpriced_calls)

    live = analytics.realtime(store, 1, now=just_after, tenant_id="globex")
    assert live.llm_calls >= 1 and live.cost_usd is None and live.unpriced_calls >= 1


def month_start(when: datetime) -> datetime:
    return when.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def test_expensive_runs_say_what_they_leave_out(store: Engine, workload: Workload) -> None:
    """Each listed run carries its unpriced calls; runs with nothing priced have no cost to rank by."""
    runs = analytics.expensive_runs_rows(store, 200)
    by_id = {r.run_id: r for r in workload.graph_runs()}
    assert runs and all(r.unpriced_calls == by_id[r.run_id].unpriced_calls for r in runs)
    assert {r.run_id for r in runs} == {r.run_id for r in by_id.values() if r.cost_usd is not None}
    assert any(r.cost_is_lower_bound for r in runs)  # acme's runs answered by the unknown model


def test_frames_show_unpriced_as_missing_with_its_count(store: Engine, workload: Workload) -> None:
    """In a DataFrame an unpriced group's cost is NaN (left out of sums and plots, not drawn as 0) and
    ``analytics.spend`` labels every group with what its sum leaves out."""
    import pandas as pd

    frame = analytics.cost_by(store, "tenant")
    assert isinstance(frame, pd.DataFrame)
    frame = frame.set_index("tenant")
    assert frame["cost_usd"].isna().to_dict() == {"acme": False, "initech": False, "globex": True}
    labels = analytics.spend(frame)
    globex, acme = workload.expected(tenant("globex")), workload.expected(tenant("acme"))
    assert labels["globex"] == f"unpriced ({globex.unpriced_calls} calls)"
    assert acme.priced_usd is not None
    assert labels["acme"] == f"≥ {usd(acme.priced_usd)} ({acme.unpriced_calls} unpriced)"
    assert labels["initech"].startswith("$")


# -- the CLI ------------------------------------------------------------------------------------------


def report(args: list[str], url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    assert main(["report", *args]) == 0
    return capsys.readouterr().out


def row(out: str, key: str) -> str:
    (line,) = [line for line in out.splitlines() if line.split(" ", 1)[0] == key]
    return line


def test_cli_report_marks_lower_bounds_and_unpriced_groups(sqlite_url: str, workload: Workload,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`report --by tenant`: the all-unpriced tenant says "unpriced (N calls)", the partly priced one
    "≥ $X (N unpriced)", the priced one "$X"; the total is a lower bound with the count; no $0 anywhere."""
    out = report(["--by", "tenant"], sqlite_url, monkeypatch, capsys)
    globex, acme, initech = (workload.expected(tenant(t)) for t in ("globex", "acme", "initech"))
    assert acme.priced_usd is not None and initech.priced_usd is not None
    assert f"unpriced ({globex.unpriced_calls} calls)" in row(out, "globex")
    assert "$" not in row(out, "globex")
    assert f"≥ {usd(acme.priced_usd)} ({acme.unpriced_calls} unpriced)" in row(out, "acme")
    assert f" {usd(initech.priced_usd)} " in row(out, "initech") and "unpriced" not in row(out, "initech")
    everything = workload.expected()
    assert everything.priced_usd is not None
    assert f"total: {everything.calls} calls, ≥ {usd(everything.priced_usd)} ({everything.unpriced_calls} unpriced)" \
        in out
    assert f"{everything.unpriced_calls} calls had no known price" in out
    assert "$0.00" not in out and "null" not in out


def test_cli_report_by_model(sqlite_url: str, workload: Workload, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """`report --by model`: the unknown model's row has no amount, the priced models no unpriced mark."""
    out = report(["--by", "model"], sqlite_url, monkeypatch, capsys)
    unknown = workload.expected(of_model(UNKNOWN_MODEL))
    assert f"unpriced ({unknown.unpriced_calls} calls)" in row(out, UNKNOWN_MODEL)
    for model in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"):
        want = workload.expected(of_model(model))
        assert want.priced_usd is not None
        assert f" {format_usd(want.priced_usd)} " in row(out, model)


# -- the HTTP API -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(sqlite_url: str, workload: Workload) -> Iterator[Any]:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from vital_callbacks.server import create_app

    app = create_app(analytics.reader_engine(sqlite_url), tokens="globex:tok-globex,acme:tok-acme,*:tok-admin",
                     clock=lambda: workload.end)
    with TestClient(app) as c:
        yield c


def get(client: Any, path: str, token: str = "tok-admin", **params: Any) -> Any:
    response = client.get(path, headers={"Authorization": f"Bearer {token}"}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_api_tenant_totals(client: Any, workload: Workload) -> None:
    """/metrics/tenant/{id}: null cost (not 0) with the count for the all-unpriced tenant, a lower bound for
    the partly priced one; each tenant's token reads its own numbers."""
    hours = 24 * 29
    globex = get(client, "/metrics/tenant/globex", "tok-globex", hours=hours)
    want = workload.expected(tenant("globex"))
    assert (globex["totals"]["calls"], globex["totals"]["cost_usd"]) == (want.calls, None)
    assert (globex["totals"]["unpriced_calls"], globex["totals"]["cost_is_lower_bound"]) == (want.unpriced_calls,
                                                                                              True)
    assert [(g["key"], g["cost_usd"]) for g in globex["by_model"]] == [(UNKNOWN_MODEL, None)]
    acme = get(client, "/metrics/tenant/acme", "tok-acme", hours=hours)["totals"]
    want = workload.expected(tenant("acme"))
    assert want.priced_usd is not None
    assert acme["cost_usd"] == pytest.approx(float(want.priced_usd), rel=1e-9)
    assert (acme["unpriced_calls"], acme["cost_is_lower_bound"]) == (want.unpriced_calls, True)


def test_api_costs_and_daily(client: Any, workload: Workload) -> None:
    """/analytics/costs by model and /metrics/cost/daily carry the count and the lower-bound flag; a tenant
    with nothing priced gets a null total and null days, never 0."""
    groups = {g["key"]: g for g in get(client, "/analytics/costs", hours=24 * 29, by="model")["groups"]}
    unknown = workload.expected(of_model(UNKNOWN_MODEL))
    assert (groups[UNKNOWN_MODEL]["cost_usd"], groups[UNKNOWN_MODEL]["unpriced_calls"]) == (None,
                                                                                           unknown.unpriced_calls)
    assert all(g["cost_usd"] > 0 and not g["cost_is_lower_bound"] for k, g in groups.items() if k != UNKNOWN_MODEL)

    daily = get(client, "/metrics/cost/daily", days=30)
    everything = workload.expected()
    assert everything.priced_usd is not None
    assert daily["total_usd"] == pytest.approx(float(everything.priced_usd), rel=1e-9)
    assert (daily["unpriced_calls"], daily["cost_is_lower_bound"]) == (everything.unpriced_calls, True)
    mine = get(client, "/metrics/cost/daily", "tok-globex", days=30)
    assert mine["tenant_id"] == "globex" and mine["total_usd"] is None
    assert mine["unpriced_calls"] == workload.expected(tenant("globex")).unpriced_calls
    assert mine["days"] and all(d["cost_usd"] is None and d["cost_is_lower_bound"] for d in mine["days"])


def test_api_tenant_scoping_is_kept(client: Any) -> None:
    """The new fields change nothing about who reads what: a tenant token still cannot read another tenant."""
    refused = client.get("/metrics/tenant/acme", headers={"Authorization": "Bearer tok-globex"})
    assert refused.status_code == 403
    assert get(client, "/analytics/costs", "tok-globex", hours=24 * 29, by="tenant")["groups"][0]["key"] == "globex"


def test_spend_of_counts_like_the_store() -> None:
    """The Python side of these tests: a failed call without usage is neither priced nor unpriced."""
    from vital_callbacks.core.events import Cost

    priced = LLMCall(run_id="a", parent_run_id=None, trace_id="a", cost=Cost(Decimal("0.5"), Decimal(0),
                                                                             Decimal("0.5")))
    unpriced = LLMCall(run_id="b", parent_run_id=None, trace_id="b")
    failed = LLMCall(run_id="c", parent_run_id=None, trace_id="c", token_source="none", status="error")
    assert spend_of([priced, unpriced, failed]) == Spend(3, Decimal("0.5"), 1, 1, 1)
    assert spend_of([unpriced, failed]).priced_usd is None

