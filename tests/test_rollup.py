"""The daily rollup (migration 0004) equals ``llm_calls`` summed per day and key, whoever writes, replays,
reprices or deletes; and cost queries through it equal the same queries over the raw rows alone."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import require_service
from vital_callbacks import analytics
from vital_callbacks.analytics import _rollup, costs
from vital_callbacks.analytics._common import dimensions
from vital_callbacks.core.events import Cost, LLMCall, TokenUsage
from vital_callbacks.sinks.base import Sink
from vital_callbacks.sinks.sql import SQLSink
from vital_callbacks.store import migrate as db

START = datetime(2026, 10, 1, tzinfo=timezone.utc)
SUMS = ", ".join(f"sum({c})" for c in ("calls", "input_tokens", "output_tokens", "total_tokens", "cache_read_tokens",
                                        "cache_write_tokens", "reasoning_tokens", "cost_usd", "unpriced_calls",
                                        "errors", "cache_hits", "saved_usd"))


def workload(n: int, seed: int = 3) -> list[LLMCall]:
    """Calls over 20 days with missing keys, errors, unpriced and cached calls, at all hours."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = (START + timedelta(seconds=rng.random() * 20 * 86400)).timestamp()
        inp, outp = rng.randint(0, 5000), rng.randint(0, 900)
        priced = rng.random() > 0.1
        hit = rng.random() < 0.05
        cost = Cost(Decimal(inp) / 10**7, Decimal(outp) / 10**6, Decimal(inp) / 10**7 + Decimal(outp) / 10**6)
        out.append(LLMCall(
            run_id=f"r{seed}-{i}", parent_run_id=None, trace_id=f"t{i // 4}",
            tenant_id=rng.choice(["acme", "globex", None]), graph=rng.choice(["agent", "helper", None]),
            node=rng.choice(["plan", "act", None]), subgraph=rng.choice(["research", None, None]),
            tool=rng.choice(["search", None, None]),
            provider=rng.choice(["openai", "anthropic"]), model=rng.choice(["gpt-4o-mini", "claude-haiku-4-5", None]),
            start_time=start, end_time=start + 1, duration_s=1.0,
            status="error" if rng.random() < 0.07 else "success",
            usage=TokenUsage(inp, outp, inp + outp, cache_read=inp // 3, cache_write=inp // 7,
                             reasoning=outp // 2),
            token_source="none" if rng.random() < 0.03 else "provider",
            cost=cost if priced and not hit else (Cost(Decimal(0), Decimal(0), Decimal(0), "cache") if hit else None),
            cache_hit=hit, saved_cost=cost.total if hit else None))
    return out


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-row-triggers"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Sink, Engine]]:
    """The real writer of each database (the SQL sink on SQLite, the asyncpg sink on PostgreSQL) and a reader;
    ``postgresql-row-triggers`` keeps the rollup with the row-level triggers 0004 installs on a TimescaleDB
    hypertable (see :func:`postgres_store`)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rollup.db'}"
        sink: Sink = SQLSink(url)
        engine = analytics.reader_engine(url)
        yield sink, engine
        sink.shutdown()
        engine.dispose()
        return
    with postgres_store(tmp_path, row_triggers=request.param.endswith("row-triggers")) as pair:
        yield pair


def use_row_triggers(url: str) -> None:
    """Swap the statement-level triggers for the row-level ones that migration 0004 installs when
    ``llm_calls`` is a TimescaleDB hypertable (which refuses transition tables), running 0004's own DDL.
    TimescaleDB itself is not on this machine (nor in Debian's archive); its triggers are plain
    PostgreSQL, so they are tested here on a plain table."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import create_engine

    from vital_callbacks.store.migrations.versions import r0004_daily_rollup as r0004
    from vital_callbacks.store.migrations.versions.r0010_node_rollup import NODE_ROLLUP

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        for prefix in ("vital_llm_cost_daily", NODE_ROLLUP.prefix):
            for trigger in ("insert", "delete", "update", "truncate"):
                conn.execute(text(f"DROP TRIGGER {prefix}_{trigger} ON llm_calls"))
        with Operations.context(MigrationContext.configure(conn)):
            r0004._postgres_row_triggers()
            NODE_ROLLUP.postgres_row_triggers()
        names = {r[0] for r in conn.execute(text(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'llm_calls'::regclass AND NOT tgisinternal"))}
    engine.dispose()
    assert names == {"vital_llm_cost_daily_row", "vital_llm_cost_daily_truncate", f"{NODE_ROLLUP.prefix}_row",
                     f"{NODE_ROLLUP.prefix}_truncate"}


@contextmanager
def postgres_store(tmp_path: Path, *, row_triggers: bool = False) -> Iterator[tuple[Sink, Engine]]:
    from tests.pg_cluster import fresh_database, reachable
    from vital_callbacks.sinks.sql.postgres import PostgresSink

    require_service(reachable(), "no PostgreSQL at 127.0.0.1:5432")
    with fresh_database() as url:
        db.upgrade(url)
        if row_triggers:
            use_row_triggers(url)
        sink = PostgresSink(url, spill_dir=tmp_path / "spill")
        engine = analytics.reader_engine(url)
        try:
            yield sink, engine
        finally:
            sink.shutdown()
            engine.dispose()


def _day(column: str, engine: Engine) -> str:
    return f"date({column})" if engine.dialect.name == "sqlite" else f"date(timezone('UTC', {column}))"


def rollup_by_day(engine: Engine) -> dict[Any, tuple[Any, ...]]:
    sql = f"SELECT day, tenant_id, graph, provider, model, {SUMS} FROM llm_cost_daily GROUP BY 1, 2, 3, 4, 5"
    with engine.connect() as conn:
        return {tuple(str(k) for k in r[:5]): _normal(r[5:]) for r in conn.execute(text(sql))}


def raw_by_day(engine: Engine) -> dict[Any, tuple[Any, ...]]:
    sql = (f"SELECT {_day('started_at', engine)}, coalesce(tenant_id, ''), coalesce(graph, ''), "
           "coalesce(provider, ''), coalesce(model, ''), count(*), sum(input_tokens), sum(output_tokens), "
           "sum(total_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(reasoning_tokens), "
           "coalesce(sum(total_cost), 0), "
           "sum(CASE WHEN total_cost IS NULL AND token_source <> 'none' THEN 1 ELSE 0 END), "
           "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), sum(CASE WHEN cache_hit THEN 1 ELSE 0 END), "
           "coalesce(sum(saved_cost), 0) FROM llm_calls GROUP BY 1, 2, 3, 4, 5")
    with engine.connect() as conn:
        return {tuple(str(k) for k in r[:5]): _normal(r[5:]) for r in conn.execute(text(sql))}


NODE_KEYS = "day, tenant_id, graph, subgraph, node, tool"


def node_rollup_by_day(engine: Engine) -> dict[Any, tuple[Any, ...]]:
    sql = f"SELECT {NODE_KEYS}, {SUMS} FROM llm_cost_daily_node GROUP BY 1, 2, 3, 4, 5, 6"
    with engine.connect() as conn:
        return {tuple(str(k) for k in r[:6]): _normal(r[6:]) for r in conn.execute(text(sql))}


def raw_by_node(engine: Engine) -> dict[Any, tuple[Any, ...]]:
    sql = (f"SELECT {_day('started_at', engine)}, coalesce(tenant_id, ''), coalesce(graph, ''), "
           "coalesce(subgraph, ''), coalesce(node, ''), coalesce(tool, ''), count(*), sum(input_tokens), "
           "sum(output_tokens), sum(total_tokens), sum(cache_read_tokens), sum(cache_write_tokens), "
           "sum(reasoning_tokens), coalesce(sum(total_cost), 0), "
           "sum(CASE WHEN total_cost IS NULL AND token_source <> 'none' THEN 1 ELSE 0 END), "
           "sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), sum(CASE WHEN cache_hit THEN 1 ELSE 0 END), "
           "coalesce(sum(saved_cost), 0) FROM llm_calls GROUP BY 1, 2, 3, 4, 5, 6")
    with engine.connect() as conn:
        return {tuple(str(k) for k in r[:6]): _normal(r[6:]) for r in conn.execute(text(sql))}


def _normal(values: Any) -> tuple[Any, ...]:
    """Integers as they are; USD rounded to 1e-9 (SQLite stores NUMERIC as a float, summed in any order)."""
    return tuple(round(Decimal(v), 9) if isinstance(v, (float, Decimal)) else int(v) for v in values)


def test_rollup_equals_the_raw_rows_through_writes_replays_repricing_and_deletes(
        store: tuple[Sink, Engine]) -> None:
    sink, engine = store
    calls = workload(1500)
    sink.export(calls[:1000])
    sink.export(calls[500:])  # a retry overlapping what is stored: the rollup must not count 500 calls twice
    raw = raw_by_day(engine)
    assert sum(v[0] for v in raw.values()) == 1500
    assert rollup_by_day(engine) == raw
    assert node_rollup_by_day(engine) == raw_by_node(engine)  # migration 0010's, by node and tool

    writer = _writer(engine)  # the reader is read-only on PostgreSQL; write as an operator would
    with writer.begin() as conn:
        conn.execute(text("UPDATE llm_calls SET total_cost = 0.5 WHERE total_cost IS NULL AND token_source <> 'none'"))
        conn.execute(text("DELETE FROM llm_calls WHERE tenant_id = 'globex' AND status = 'error'"))
    writer.dispose()
    raw = raw_by_day(engine)
    assert sum(v[8] for v in raw.values()) == 0  # no unpriced calls left after repricing
    assert rollup_by_day(engine) == raw
    assert node_rollup_by_day(engine) == raw_by_node(engine)


def _writer(engine: Engine) -> Engine:
    from sqlalchemy import create_engine

    return create_engine(engine.url) if engine.dialect.name == "postgresql" else engine


def test_cost_queries_through_the_rollup_equal_the_raw_queries(store: tuple[Sink, Engine]) -> None:
    """Random windows (midnight-aligned or not, open-ended or not) and every grouping the rollup keeps."""
    sink, engine = store
    sink.export(workload(2000, seed=5))
    rng = random.Random(9)
    dims_choices = [()] + [c for n in (1, 2) for c in combinations(("day", "tenant", "graph", "provider", "model"), n)]
    dims_choices += [("node",), ("tool",), ("graph", "subgraph", "node"), ("day", "tool"), ("tenant", "node")]
    used_rollup = 0
    for trial in range(90):
        start = START + timedelta(hours=rng.randint(-30, 21 * 24))
        since: datetime | None = start
        until: datetime | None = start + timedelta(hours=rng.randint(1, 15 * 24))
        if trial % 10 == 0:
            since = None
        if trial % 10 == 5:
            until = None
        if trial % 3 == 0 and since is not None:
            since = since.replace(hour=0)
        dims = rng.choice(dims_choices)
        tenant = rng.choice([None, "acme"])
        graph = rng.choice([None, None, "agent"])
        used_rollup += _rollup.plan(engine, dims, since, until) is not None
        fast = costs.cost_by_rows(engine, dims, since=since, until=until, tenant_id=tenant, graph=graph)
        slow = costs._raw_cost_by(engine, tuple(dims), since=since, until=until, tenant_id=tenant, graph=graph)
        assert _as_dict(fast) == _as_dict(slow), (dims, since, until, tenant, graph)
        assert [g.keys for g in fast if g.calls] == [g.keys for g in slow if g.calls]  # the same order
        if dims and dims[0] not in ("day",):
            top = costs.top_spenders_rows(engine, dims[0], 2, since=since, until=until, tenant_id=tenant)
            assert [(g.keys, _sums(g)) for g in top] == [(g.keys, _sums(g)) for g in costs._raw_cost_by(
                engine, dimensions(dims[0]), since=since, until=until, tenant_id=tenant, graph=None, limit=2)]
    assert used_rollup >= 60  # most windows hold whole days


def _as_dict(groups: list[costs.CostGroup]) -> dict[Any, tuple[Any, ...]]:
    return {g.keys: _sums(g) for g in groups if g.calls}


def _sums(g: costs.CostGroup) -> tuple[Any, ...]:
    return (g.calls, g.input_tokens, g.output_tokens, g.total_tokens, g.cache_read_tokens, g.cache_write_tokens,
            g.reasoning_tokens, g.cost_usd and round(g.cost_usd, 9), g.unpriced_calls, g.errors, g.cache_hits,
            round(g.saved_usd, 9))


def test_the_daily_api_query_reads_whole_days_from_the_rollup(store: tuple[Sink, Engine]) -> None:
    """With the raw rows of whole days gone from the plan, only the partial days are read from llm_calls:
    shown by deleting the rollup's rows, which leaves exactly the edges."""
    sink, engine = store
    sink.export(workload(400, seed=7))
    since, until = START + timedelta(days=2), START + timedelta(days=6, hours=12)
    plan = _rollup.plan(engine, ("day",), since, until)
    assert plan == _rollup.Plan(date(2026, 10, 3), date(2026, 10, 7),
                                ((datetime(2026, 10, 7, tzinfo=timezone.utc), until),))
    days = [d.day for d in costs.daily_cost_rows(engine, since=since, until=until)]
    assert days == ["2026-10-03", "2026-10-04", "2026-10-05", "2026-10-06", "2026-10-07"]
    writer = _writer(engine)
    with writer.begin() as conn:
        conn.execute(text("DELETE FROM llm_cost_daily"))
    writer.dispose()
    assert [d.day for d in costs.daily_cost_rows(engine, since=since, until=until)] == ["2026-10-07"]


def test_a_store_without_the_rollup_is_answered_from_the_raw_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    db.upgrade(url, "0003")
    engine = analytics.reader_engine(url)
    assert _rollup.plan(engine, ("day",), START, START + timedelta(days=3)) is None
    assert costs.daily_cost_rows(engine, since=START, until=START + timedelta(days=3)) == []


def test_rollup_days_are_utc_days_of_the_calls(store: tuple[Sink, Engine]) -> None:
    """Per-day sums computed in Python from the events themselves (UTC days), independent of the
    database's own date functions, equal the rollup's."""
    sink, engine = store
    calls = workload(800, seed=11)
    sink.export(calls)
    expected: dict[str, list[int]] = {}
    for call in calls:
        day = datetime.fromtimestamp(call.start_time, tz=timezone.utc).date().isoformat()
        sums = expected.setdefault(day, [0, 0])
        sums[0] += 1
        sums[1] += call.usage.input
    with engine.connect() as conn:
        got = {str(r[0]): [int(r[1]), int(r[2])] for r in conn.execute(
            text("SELECT day, sum(calls), sum(input_tokens) FROM llm_cost_daily GROUP BY day"))}
    assert got == expected


def test_deleting_every_call_of_a_key_removes_its_rollup_row(store: tuple[Sink, Engine]) -> None:
    sink, engine = store
    sink.export(workload(300, seed=13))
    writer = _writer(engine)
    with writer.begin() as conn:
        conn.execute(text("DELETE FROM llm_calls WHERE tenant_id = 'acme'"))
    writer.dispose()
    with engine.connect() as conn:
        tenants = {r[0] for r in conn.execute(text("SELECT DISTINCT tenant_id FROM llm_cost_daily"))}
    assert tenants == {"globex", ""}
    assert rollup_by_day(engine) == raw_by_day(engine)


@pytest.mark.parametrize("row_triggers", [False, True], ids=["statement-triggers", "row-triggers"])
def test_truncate_empties_the_rollup_on_postgresql(tmp_path: Path, row_triggers: bool) -> None:
    """SQLite has no TRUNCATE (a DELETE there runs the delete trigger, tested above)."""
    with postgres_store(tmp_path, row_triggers=row_triggers) as (sink, engine):
        sink.export(workload(100, seed=17))
        writer = _writer(engine)
        with writer.begin() as conn:
            conn.execute(text("TRUNCATE llm_calls"))
        writer.dispose()
        assert rollup_by_day(engine) == {} == raw_by_day(engine)


def test_a_store_made_by_create_all_gets_the_triggers_on_upgrade(tmp_path: Path) -> None:
    """A ``create_all`` of the store's tables also makes ``llm_cost_daily``, without triggers; the
    upgrade must still install them (and refill the table), or whole days would read as empty."""
    from vital_callbacks.store.engine import make_engine
    from vital_callbacks.store.schema import metadata

    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    engine.dispose()
    sink = SQLSink(url)  # auto-migrates
    sink.export(workload(200, seed=19))
    reader = analytics.reader_engine(url)
    assert sum(v[0] for v in rollup_by_day(reader).values()) == 200
    assert rollup_by_day(reader) == raw_by_day(reader)
    sink.shutdown()
    reader.dispose()
