"""Every analytics query against hand-computed answers on a small fixed data set, on SQLite and PostgreSQL.

The data set (``load_fixed_data``) is nine LLM calls, five node runs, five graph runs and four scores
around ``NOW`` = 2025-03-10 12:00 UTC; ``MARCH`` is the window [2025-03-01, NOW), which leaves out the
one February call. The expected numbers in each test are worked out by hand from the table below.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypedDict

import pytest
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import Engine

from tests.conftest import require_service
from vital_callbacks import analytics
from vital_callbacks.analytics import _common
from vital_callbacks.store.migrate import upgrade as create_schema
from vital_callbacks.store.schema import scores as scores_table

NOW = datetime(2025, 3, 10, 12, 0, tzinfo=timezone.utc)


class Window(TypedDict):
    since: datetime
    until: datetime


MARCH: Window = {"since": datetime(2025, 3, 1, tzinfo=timezone.utc), "until": NOW}
H = timedelta(hours=1)

# id, tenant, user, graph, node, provider, model, started, duration, status, in, out, cache_read, cost,
# token_source, cache_hit, saved
LLM_ROWS: list[tuple[Any, ...]] = [
    ("c1", "acme", "u1", "agent", "think", "openai", "gpt-4o-mini", NOW - H, 1.0, "success", 1000, 100, 0,
     "0.010", "provider", False, None),
    ("c2", "acme", "u1", "agent", "answer", "openai", "gpt-4o-mini", NOW - 2 * H, 2.0, "success", 2000, 200, 1000,
     "0.020", "provider", False, None),
    ("c3", "acme", "u2", "agent", "think", "anthropic", "claude-haiku-4-5", NOW - 3 * H, 3.0, "error", 500, 0, 0,
     "0.005", "provider", False, None),
    ("c4", "globex", "u3", "agent", "think", "openai", "gpt-4o-mini", NOW - 25 * H, 4.0, "success", 3000, 300, 0,
     "0.030", "provider", False, None),
    ("c5", "globex", "u3", "helper", "answer", "anthropic", "claude-haiku-4-5", NOW - 48 * H, 5.0, "success", 4000,
     400, 2000, "0.040", "provider", False, None),
    ("c6", "globex", "u4", "helper", "think", "ollama", "local-llama", NOW - H / 2, 6.0, "success", 100, 10, 0,
     None, "provider", False, None),
    ("c7", "acme", "u1", "agent", "think", "openai", "gpt-4o-mini", NOW - H / 6, 0.0, "success", 1000, 100, 0,
     "0", "provider", True, "0.010"),
    ("c8", "acme", "u1", "agent", "think", "openai", "gpt-4o-mini", datetime(2025, 2, 20, 10, tzinfo=timezone.utc),
     1.0, "success", 10000, 1000, 0, "1.000", "provider", False, None),
    ("c9", "globex", "u4", "helper", "think", "anthropic", "claude-haiku-4-5", NOW - H / 3, 0.5, "error", 0, 0, 0,
     None, "none", False, None),
]
# id, tenant, graph, node, started, duration, status
NODE_ROWS = [("n1", "acme", "agent", "think", NOW - H, 1.5, "success"),
             ("n2", "acme", "agent", "think", NOW - 3 * H, 3.5, "error"),
             ("n3", "acme", "agent", "answer", NOW - 2 * H, 2.5, "success"),
             ("n4", "globex", "helper", "answer", NOW - 48 * H, 5.5, "success"),
             ("n5", "acme", "agent", "think", NOW - 4 * H, 0.5, "interrupted")]
# id, parent, tenant, graph, started, duration, status, cost
GRAPH_ROWS = [("g1", None, "acme", "agent", NOW - H, 3.0, "success", "0.030"),
              ("g2", None, "acme", "agent", NOW - 3 * H, 3.0, "error", "0.005"),
              ("g3", None, "globex", "helper", NOW - 48 * H, 5.0, "success", "0.040"),
              ("g4", None, "globex", "agent", NOW - 25 * H, 4.0, "success", "0.030"),
              ("g5", "g1", "acme", "agent", NOW - H, 1.0, "success", "0.030")]
# id, name, data_type, value, string_value, tenant, created, matched
SCORE_ROWS = [("s1", "helpfulness", "numeric", 0.8, None, "acme", NOW - H, True),
              ("s2", "helpfulness", "numeric", 0.6, None, "acme", NOW - 2 * H, False),
              ("s3", "helpfulness", "numeric", 1.0, None, "globex", NOW - 24 * H, False),
              ("s4", "correctness", "categorical", None, "correct", "acme", NOW - H, False)]


def load_fixed_data(engine: Engine) -> None:
    """Create the store's tables on ``engine`` and insert the fixed data set with Core inserts."""
    create_schema(engine)
    scores_table.create(engine, checkfirst=True)
    llm = [dict(run_id=r[0], trace_id="t-" + r[0], tenant_id=r[1], user_id=r[2], graph=r[3], node=r[4],
                provider=r[5], model=r[6], started_at=r[7], ended_at=r[7] + timedelta(seconds=r[8]), duration_s=r[8],
                status=r[9], input_tokens=r[10], output_tokens=r[11], total_tokens=r[10] + r[11],
                cache_read_tokens=r[12], total_cost=None if r[13] is None else Decimal(r[13]), token_source=r[14],
                cache_hit=r[15], saved_cost=None if r[16] is None else Decimal(r[16])) for r in LLM_ROWS]
    nodes = [dict(run_id=r[0], trace_id="t-" + r[0], tenant_id=r[1], graph=r[2], node=r[3], started_at=r[4],
                  ended_at=r[4], duration_s=r[5], status=r[6]) for r in NODE_ROWS]
    graphs = [dict(run_id=r[0], parent_run_id=r[1], trace_id="t-" + r[0], tenant_id=r[2], graph=r[3], name=r[3],
                   started_at=r[4], ended_at=r[4], duration_s=r[5], status=r[6], cost_usd=Decimal(r[7]), llm_calls=2,
                   total_tokens=1000) for r in GRAPH_ROWS]
    scores = [dict(score_id=r[0], target_id="t", name=r[1], data_type=r[2], value=r[3], string_value=r[4],
                   tenant_id=r[5], created_at=r[6], matched=r[7]) for r in SCORE_ROWS]
    with engine.begin() as conn:
        for table, rows in ((_common.LLM_CALLS, llm), (_common.NODE_RUNS, nodes), (_common.GRAPH_RUNS, graphs),
                            (_common.SCORES, scores)):
            conn.execute(insert(table), rows)


def sqlite_store(path: str) -> Engine:
    url = f"sqlite:///{path}"
    load_fixed_data(analytics.reader_engine(url))
    return analytics.reader_engine(url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """A reader engine over the fixed data set, in SQLite and in a fresh PostgreSQL database."""
    if request.param == "sqlite":
        engine = sqlite_store(str(tmp_path_factory.mktemp("analytics") / "store.db"))
        yield engine
        engine.dispose()
        return
    from tests.pg_cluster import fresh_database, reachable

    require_service(reachable(), "no PostgreSQL at 127.0.0.1:5432")
    with fresh_database() as url:
        writer = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        load_fixed_data(writer)
        writer.dispose()
        engine = analytics.reader_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
        yield engine
        engine.dispose()


def by_key(rows: list[Any]) -> dict[Any, Any]:
    return {r.keys if len(r.keys) > 1 else r.key: r for r in rows}


def test_cost_by_tenant(store: Engine) -> None:
    """Cost, tokens, errors, unpriced calls and cache hits sum per tenant, most expensive tenant first."""
    rows = analytics.cost_by_rows(store, "tenant", **MARCH)
    assert [r.key for r in rows] == ["globex", "acme"]
    globex, acme = rows
    assert (globex.calls, globex.input_tokens, globex.output_tokens, globex.cost_usd) == (4, 7100, 710,
                                                                                          Decimal("0.070"))
    assert (globex.errors, globex.unpriced_calls, globex.cache_read_tokens) == (1, 1, 2000)
    assert (acme.calls, acme.input_tokens, acme.cost_usd, acme.errors, acme.unpriced_calls) == (
        4, 4500, Decimal("0.035"), 1, 0)
    assert (acme.cache_hits, acme.saved_usd, acme.total_tokens) == (1, Decimal("0.010"), 4900)


def test_cost_by_model_provider_graph_node(store: Engine) -> None:
    """Grouping by model, provider, graph and node each partitions the same March calls."""
    model = by_key(analytics.cost_by_rows(store, "model", **MARCH))
    assert {k: (r.calls, r.cost_usd, r.unpriced_calls) for k, r in model.items()} == {
        "gpt-4o-mini": (4, Decimal("0.060"), 0), "claude-haiku-4-5": (3, Decimal("0.045"), 0),
        "local-llama": (1, None, 1)}
    provider = by_key(analytics.cost_by_rows(store, "provider", **MARCH))
    assert provider["anthropic"].cost_usd == Decimal("0.045") and provider["ollama"].unpriced_calls == 1
    graph = by_key(analytics.cost_by_rows(store, "graph", **MARCH))
    assert (graph["agent"].calls, graph["agent"].cost_usd, graph["helper"].cost_usd) == (5, Decimal("0.065"),
                                                                                         Decimal("0.040"))
    node = by_key(analytics.cost_by_rows(store, ("graph", "node"), **MARCH))
    assert node[("agent", "think")].cost_usd == Decimal("0.045")
    assert node[("helper", "answer")].calls == 1


def test_cost_by_day_and_hour(store: Engine) -> None:
    """Day and hour buckets are UTC, come out in time order, and can be combined with a tenant; the lean
    daily query agrees with the general one."""
    days = analytics.cost_by_rows(store, "day", **MARCH)
    assert [(r.key, r.calls, r.cost_usd) for r in days] == [
        ("2025-03-08", 1, Decimal("0.040")), ("2025-03-09", 1, Decimal("0.030")), ("2025-03-10", 6, Decimal("0.035"))]
    hours = analytics.cost_by_rows(store, "hour", since=NOW - 3 * H, until=NOW)
    assert [(r.key, r.calls) for r in hours] == [("2025-03-10T09:00", 1), ("2025-03-10T10:00", 1),
                                                 ("2025-03-10T11:00", 4)]
    assert analytics.daily_cost_rows(store, **MARCH) == [
        analytics.DayCost(r.key or "", r.calls, r.total_tokens, r.cost_usd, r.unpriced_calls) for r in days]
    daily_tenant = by_key(analytics.cost_by_rows(store, ("day", "tenant"), **MARCH))
    assert daily_tenant[("2025-03-10", "globex")].calls == 2


def test_unpriced_groups_have_no_cost_and_a_count(store: Engine) -> None:
    """A group whose calls with tokens are all unpriced has cost None (not 0) and their count; a group
    mixing both is a lower bound; a failed call without usage (c9) is neither priced nor unpriced."""
    node = by_key(analytics.cost_by_rows(store, ("graph", "node"), **MARCH))
    helper_think = node[("helper", "think")]  # c6 (unpriced) and c9 (failed, no usage)
    assert (helper_think.calls, helper_think.cost_usd, helper_think.unpriced_calls) == (2, None, 1)
    assert helper_think.cost_is_lower_bound
    claude = by_key(analytics.cost_by_rows(store, "model", **MARCH))["claude-haiku-4-5"]  # c3, c5 and c9
    assert (claude.calls, claude.cost_usd, claude.unpriced_calls, claude.cost_is_lower_bound) == (
        3, Decimal("0.045"), 0, False)
    globex = by_key(analytics.cost_by_rows(store, "tenant", **MARCH))["globex"]
    assert (globex.cost_usd, globex.unpriced_calls, globex.cost_is_lower_bound) == (Decimal("0.070"), 1, True)
    only_failed = analytics.total_row(store, since=NOW - H / 3, until=NOW - H / 3 + timedelta(seconds=1))  # c9
    assert (only_failed.calls, only_failed.cost_usd, only_failed.unpriced_calls) == (1, Decimal(0), 0)
    days = {d.day: d for d in analytics.daily_cost_rows(store, **MARCH)}
    assert (days["2025-03-10"].unpriced_calls, days["2025-03-10"].cost_is_lower_bound) == (1, True)


def test_a_window_with_only_unpriced_calls(store: Engine) -> None:
    """The half hour around c6 holds one unpriced call: every aggregate says unpriced, none says $0."""
    around_c6: Window = {"since": NOW - H / 2, "until": NOW - H / 2 + timedelta(seconds=1)}
    total = analytics.total_row(store, **around_c6)
    assert (total.calls, total.cost_usd, total.unpriced_calls) == (1, None, 1)
    assert [(r.key, r.cost_usd, r.unpriced_calls) for r in analytics.cost_report(store, "tenant", **around_c6)] == [
        ("globex", None, 1)]
    live = analytics.realtime(store, 1, now=around_c6["until"])
    assert (live.llm_calls, live.cost_usd, live.unpriced_calls, live.cost_is_lower_bound) == (1, None, 1, True)
    assert analytics.report_total(analytics.cost_report(store, "model", **around_c6)) == (1, None, 1)


def test_filters_and_grand_total(store: Engine) -> None:
    """``()`` gives one grand total; tenant and graph filters narrow it; an empty window totals zero."""
    assert analytics.total_row(store).cost_usd == Decimal("1.105")
    assert analytics.total_row(store, **MARCH, tenant_id="acme").calls == 4
    assert analytics.total_row(store, **MARCH, graph="helper").cost_usd == Decimal("0.040")
    empty = analytics.total_row(store, since=NOW, until=NOW + H)
    assert (empty.calls, empty.cost_usd, empty.input_tokens) == (0, Decimal(0), 0)


def test_top_spenders(store: Engine) -> None:
    """Top N ranks by cost and stops at N."""
    rows = analytics.top_spenders_rows(store, "user", 2, **MARCH)
    assert [(r.key, r.cost_usd) for r in rows] == [("u3", Decimal("0.070")), ("u1", Decimal("0.030"))]
    with pytest.raises(ValueError, match="ranked by cost"):
        analytics.top_spenders_rows(store, "day")


def test_unknown_dimension_is_a_clear_error(store: Engine) -> None:
    """A grouping the table does not have is refused with the list of usable ones, before any SQL."""
    with pytest.raises(ValueError, match="cannot group llm_calls by 'color'"):
        analytics.cost_by_rows(store, "color")
    with pytest.raises(ValueError, match="cannot group node_runs by 'model'"):
        analytics.latency_rows(store, "model", source="node")


def test_latency_by_model(store: Engine) -> None:
    """Percentiles interpolate like percentile_cont; success rate ignores nothing but interrupts."""
    rows = analytics.latency_by_model_rows(store, **MARCH)
    assert [r.key for r in rows] == ["local-llama", "claude-haiku-4-5", "gpt-4o-mini"]  # slowest p95 first
    gpt = by_key(rows)["gpt-4o-mini"]
    assert (gpt.runs, gpt.successes, gpt.errors, gpt.success_rate) == (4, 4, 0, 1.0)
    assert (gpt.mean_s, gpt.p50_s) == (1.75, 1.5)
    assert gpt.p95_s == pytest.approx(3.7) and gpt.p99_s == pytest.approx(3.94)
    claude = by_key(rows)["claude-haiku-4-5"]
    assert claude.success_rate == pytest.approx(1 / 3)
    assert (claude.p50_s, claude.p95_s) == (3.0, pytest.approx(4.8))
    assert by_key(rows)["local-llama"].p99_s == 6.0


def test_latency_by_node(store: Engine) -> None:
    """Node runs group per (graph, node); an interrupted run is neither success nor error."""
    rows = by_key(analytics.latency_by_node_rows(store, **MARCH))
    think = rows[("agent", "think")]
    assert (think.runs, think.successes, think.errors, think.interrupted, think.success_rate) == (3, 1, 1, 1, 0.5)
    assert think.p50_s == 1.5 and think.p95_s == pytest.approx(3.3)
    assert rows[("helper", "answer")].p50_s == 5.5


def test_agent_success_rate(store: Engine) -> None:
    """Graph runs give each agent's success rate; nested subgraph runs are not counted twice."""
    rows = by_key(analytics.agent_success_rows(store, **MARCH))
    assert (rows["agent"].runs, rows["agent"].success_rate) == (3, pytest.approx(2 / 3))
    assert rows["helper"].success_rate == 1.0


def test_cache_savings(store: Engine) -> None:
    """Prompt caching saves list input price minus cache-read price; response-cache hits save saved_cost."""
    rows = analytics.cache_savings_rows(store, **MARCH)
    found = {(r.kind, r.model): (r.calls, r.cached_tokens, r.saved_usd) for r in rows}
    # gpt-4o-mini: 1000 tokens x ($0.15 - $0.075)/M; claude-haiku-4-5: 2000 x ($1.00 - $0.10)/M
    assert found == {("prompt_cache", "gpt-4o-mini"): (1, 1000, Decimal("0.000075")),
                     ("prompt_cache", "claude-haiku-4-5"): (1, 2000, Decimal("0.0018")),
                     ("response_cache", "gpt-4o-mini"): (1, 1000, Decimal("0.010"))}
    assert analytics.total_saved(rows, "prompt_cache") == Decimal("0.001875")


def test_unpriced_calls(store: Engine) -> None:
    """Calls with tokens but no price are listed per model; calls without any usage are not."""
    rows = analytics.unpriced_calls_rows(store, **MARCH)
    assert [(r.provider, r.model, r.calls, r.input_tokens) for r in rows] == [("ollama", "local-llama", 1, 100)]
    assert rows[0].first_seen == NOW - H / 2


def test_expensive_runs(store: Engine) -> None:
    """The most expensive top-level graph runs, ties broken by run id."""
    rows = analytics.expensive_runs_rows(store, 2, **MARCH)
    assert [(r.run_id, r.cost_usd) for r in rows] == [("g3", Decimal("0.040")), ("g1", Decimal("0.030"))]
    assert rows[0].started_at == NOW - 48 * H


def test_month_projection(store: Engine) -> None:
    """Month-to-date over 9.5 elapsed days, extrapolated over March's 31 days."""
    p = analytics.month_projection(store, now=NOW)
    assert (p.month, p.month_to_date_usd, p.days_elapsed, p.days_in_month) == ("2025-03", Decimal("0.105"),
                                                                                Decimal("9.5"), 31)
    assert p.projected_usd == pytest.approx(Decimal("0.105") / Decimal("9.5") * 31)
    assert len(p.days) == 31 and p.days[9] == analytics.ProjectionDay("2025-03-10", Decimal("0.035"),
                                                                         Decimal("0.105"), False, 1, NOW)
    assert p.days[8].at == datetime(2025, 3, 10, tzinfo=timezone.utc)  # a past day's total is at its end
    assert p.days[10].projected and p.days[10].cost_usd is None
    assert p.daily_average_usd is not None
    # Ahead, the line continues from now (12:00 on the 10th): 1.5 days to the end of the 11th.
    assert p.days[10].cumulative_usd == pytest.approx(Decimal("0.105") + Decimal("1.5") * p.daily_average_usd)
    assert p.days[30].cumulative_usd == p.projected_usd  # the line ends at the projection
    assert (p.unpriced_calls, p.is_lower_bound) == (1, True)  # c6: every amount of March is a lower bound
    acme = analytics.month_projection(store, now=NOW, tenant_id="acme")
    assert (acme.month_to_date_usd, acme.unpriced_calls, acme.is_lower_bound) == (Decimal("0.035"), 0, False)


def test_realtime(store: Engine) -> None:
    """The last hour holds four calls from two tenants, one an error; the last minute holds none."""
    r = analytics.realtime(store, 60, now=NOW)
    assert (r.llm_calls, r.errors, r.total_tokens, r.cost_usd, r.active_tenants) == (4, 1, 2310, Decimal("0.010"), 2)
    assert r.p95_latency_s == pytest.approx(5.25) and r.calls_per_minute == pytest.approx(4 / 60)
    quiet = analytics.realtime(store, 1, now=NOW)
    assert (quiet.llm_calls, quiet.error_rate, quiet.p95_latency_s) == (0, None, None)


def test_quality_summary(store: Engine) -> None:
    """Scores summarise per name: numeric ones by mean/min/max, others by count; tenants filter."""
    rows = {r.name: r for r in analytics.quality_summary_rows(store, **MARCH)}
    assert (rows["helpfulness"].count, rows["helpfulness"].mean, rows["helpfulness"].min,  # type: ignore[comparison-overlap]
            rows["helpfulness"].max, rows["helpfulness"].matched) == (3, pytest.approx(0.8), 0.6, 1.0, 1)
    assert (rows["correctness"].count, rows["correctness"].mean) == (1, None)
    acme = {r.name: r for r in analytics.quality_summary_rows(store, **MARCH, tenant_id="acme")}
    assert acme["helpfulness"].mean == pytest.approx(0.7)


def test_frames_when_pandas_is_installed(store: Engine) -> None:
    """The plain names return DataFrames with one column per dimension and USD as floats."""
    pytest.importorskip("pandas")
    import pandas as pd

    frame = analytics.cost_by(store, ("day", "tenant"), **MARCH)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns[:3]) == ["day", "tenant", "calls"]
    assert frame["cost_usd"].sum() == pytest.approx(0.105)
    models = analytics.cost_by(store, "model", **MARCH)
    assert isinstance(models, pd.DataFrame)
    models = models.set_index("model")
    assert models["cost_usd"].isna().to_dict() == {"gpt-4o-mini": False, "claude-haiku-4-5": False,
                                                   "local-llama": True}  # missing, not 0
    assert models.loc["local-llama", "unpriced_calls"] == 1
    assert analytics.spend(models).to_dict() == {"gpt-4o-mini": "$0.0600", "claude-haiku-4-5": "$0.0450",
                                                 "local-llama": "unpriced (1 call)"}
    tenants = analytics.cost_by(store, "tenant", **MARCH)
    assert isinstance(tenants, pd.DataFrame)
    assert analytics.spend(tenants.set_index("tenant")).to_dict() == {"globex": "≥ $0.0700 (1 unpriced)",
                                                                      "acme": "$0.0350"}


def test_reader_engine_maps_postgres_urls_to_psycopg() -> None:
    """Every PostgreSQL spelling the writer accepts reads through the sync psycopg driver."""
    for url in ("postgres://u@h/db", "postgresql://u@h/db", "postgresql+asyncpg://u@h/db"):
        assert analytics.reader_engine(url).url.drivername == "postgresql+psycopg"
    assert analytics.reader_engine("sqlite://").url.drivername == "sqlite"
