"""`vital-callbacks reprice`: stored costs recomputed from the stored raw usage with today's prices, at
each call's own time, one transaction per batch, audited, the daily rollup moved by the database's
triggers; on SQLite and on the real PostgreSQL.

The store is filled by the real writers (the SQL sink, the asyncpg sink) with calls read and priced
as the handler reads and prices them: raw usage through ``read_billing``, cost by a ``PriceBook``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests import pg_cluster
from tests.conftest import require_service
from tests.test_rollup import raw_by_day, rollup_by_day
from vital_callbacks.cli import main
from vital_callbacks.core.events import Cost, LLMCall, TokenUsage
from vital_callbacks.core.money import usd
from vital_callbacks.pricing.book import CATALOG_SOURCE, PriceBook
from vital_callbacks.providers.billing import read_billing
from vital_callbacks.sinks.base import ExportResult, Sink
from vital_callbacks.store import migrate
from vital_callbacks.store import reprice as rp
from vital_callbacks.store.engine import mask_url, reader_engine

START = datetime(2026, 6, 1, tzinfo=timezone.utc)
GPT = "gpt-4o-2024-08-06"
"""The served snapshot, as the handler stores it; the discount names the family (``gpt-4o``)."""
HOUSE = """models:
  - provider: ollama
    model: house-llm
    prices:
      - input_mtok: 0.50
        output_mtok: 1.50
"""
"""The record-time override that priced a self-hosted model, gone by the time of the reprice."""
NOW = """models:
  - provider: openai
    model: gpt-4o
    prices:
      - effective_from: 2026-06-03
        discount: 0.15
  - provider: "*"
    model: new-llm
    prices:
      - input_mtok: 0.333333333333
        output_mtok: 4.00
"""
"""Today's overrides: a negotiated discount from June 3rd, and a price for a model nobody priced before
(one whose costs have more decimals than the store keeps, as a third of a dollar has)."""
DISCOUNT_FROM = 2
"""The day index (from START) the discount is in force."""
WINDOW = ["--since", "2026-06-01", "--until", "2026-06-05"]


@dataclass(frozen=True)
class Store:
    url: str
    reader: Engine
    calls: list[LLMCall]

    def call(self, run_id: str) -> LLMCall:
        return next(c for c in self.calls if c.run_id == run_id)


# -- the workload ------------------------------------------------------------------------------------------
def _openai(model: str, prompt: int, completion: int, cached: int = 0) -> AIMessage:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached}}
    return AIMessage("ok", response_metadata={"token_usage": usage, "model_name": model})


def _anthropic(inp: int, out: int, cache_read: int) -> AIMessage:
    usage = {"input_tokens": inp, "output_tokens": out, "cache_read_input_tokens": cache_read,
             "cache_creation_input_tokens": 0}
    return AIMessage("ok", response_metadata={"usage": usage})


def _call(book: PriceBook, run_id: str, day: int, hour: int, tenant: str, provider: str, model: str, *,
          message: AIMessage | None = None, usage: TokenUsage | None = None, cache_hit: bool = False) -> LLMCall:
    """An LLM call as the handler records it: usage (and raw usage) read from the message, priced at its time."""
    start = (START + timedelta(days=day, hours=hour)).timestamp()
    raw = None
    parts: tuple[Any, ...] = ()
    if message is not None:
        billing = read_billing(message, None, provider, model)
        assert billing is not None
        usage, parts, raw = billing.usage, billing.parts, billing.raw
    assert usage is not None
    price = book.price(provider, model, usage, start, parts=parts)
    cost = Cost(Decimal(0), Decimal(0), Decimal(0), "cache") if cache_hit else price
    return LLMCall(run_id=run_id, parent_run_id=None, trace_id=f"t-{run_id}", tenant_id=tenant, graph="agent",
                   node="llm", start_time=start, end_time=start + 1, duration_s=1.0, provider=provider, model=model,
                   usage=usage, cost=cost, raw_usage=raw, cache_hit=cache_hit,
                   saved_cost=price.total if cache_hit and price is not None else None)


def workload(record_dir: Path) -> list[LLMCall]:
    """Four days of calls: the discounted model (with and without raw usage, a cache hit, a call that
    billed nothing), a model the discount leaves alone, one priced then by an override that is gone now,
    and one unpriced then that is priced now."""
    book = PriceBook([record_dir])
    calls: list[LLMCall] = []
    for day in range(4):
        for i, tenant in enumerate(("acme", "acme", "globex")):
            calls.append(_call(book, f"gpt-{day}-{i}", day, i + 1, tenant, "openai", GPT,
                               message=_openai(GPT, 1000 + 100 * i + 10 * day, 200 + 20 * i, cached=100 * i)))
        calls.append(_call(book, f"claude-{day}", day, 4, "acme", "anthropic", "claude-haiku-4-5",
                           message=_anthropic(700 + day, 90, 100)))
    last = 3
    calls.append(_call(book, "gpt-old", last, 5, "acme", "openai", GPT,  # stored before raw usage was kept
                       usage=TokenUsage(input=2000, output=400, total=2400, cache_read=500)))
    calls.append(_call(book, "gpt-hit", last, 6, "globex", "openai", GPT, cache_hit=True,
                       message=_openai(GPT, 1500, 300)))
    calls.append(LLMCall(run_id="gpt-none", parent_run_id=None, trace_id="t-none", tenant_id="acme", graph="agent",
                         start_time=(START + timedelta(days=last, hours=7)).timestamp(), provider="openai", model=GPT,
                         token_source="none", status="error"))
    for i in range(2):
        calls.append(_call(book, f"house-{i}", 1, 8 + i, "acme", "ollama", "house-llm",
                           usage=TokenUsage(input=5000, output=800, total=5800)))
    calls.append(_call(book, "new-0", 2, 8, "globex", "openai", "new-llm", message=_openai("new-llm", 3001, 500)))
    assert all(c.cost is not None for c in calls if c.run_id.startswith(("gpt-", "claude-", "house-"))
               and c.token_source != "none")
    assert book.price("openai", "new-llm", TokenUsage(1, 1, 2), START) is None  # unpriced when recorded
    return calls


def expected_total(call: LLMCall) -> Decimal | None:
    """The cost today's prices give: what reprice must store (``None``: unpriced)."""
    day = int((call.started_at - START).total_seconds() // 86400)
    if call.token_source == "none":
        return None
    if call.model == "house-llm":
        return None
    if call.model == "new-llm":
        return Decimal(call.usage.input) * Decimal("0.333333333333") / 10**6 + Decimal(call.usage.output) * 4 / 10**6
    assert call.cost is not None
    if call.cache_hit:
        return Decimal(0)
    if call.model == GPT and day >= DISCOUNT_FROM:
        return call.cost.total * Decimal("0.85")
    return call.cost.total


# -- the stores ----------------------------------------------------------------------------------------------
def _export(sink: Sink, calls: list[LLMCall]) -> None:
    assert sink.export(calls) is ExportResult.SUCCESS


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    record_dir, now_dir = tmp_path / "pricing-then", tmp_path / "pricing"
    record_dir.mkdir()
    now_dir.mkdir()
    (record_dir / "house.yml").write_text(HOUSE)
    (now_dir / "discount.yml").write_text(NOW)
    calls = workload(record_dir)
    for name in ("VITAL_DATABASE_URL", "VITAL_PRICING_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VITAL_PRICING_DIR", str(now_dir))
    if request.param == "sqlite":
        from vital_callbacks.sinks.sql import SQLSink

        url = f"sqlite:///{tmp_path / 'reprice.db'}"
        sink: Sink = SQLSink(url)
        _export(sink, calls)
        sink.shutdown()
        monkeypatch.setenv("VITAL_DATABASE_URL", url)
        engine = reader_engine(url)
        yield Store(url, engine, calls)
        engine.dispose()
        return
    from vital_callbacks.sinks.sql.postgres import PostgresSink

    require_service(pg_cluster.reachable(), f"no PostgreSQL at {mask_url(pg_cluster.SHARED_URL)}")
    with pg_cluster.fresh_database() as url:
        migrate.upgrade(url)
        sink = PostgresSink(url, spill_dir=tmp_path / "spill")
        _export(sink, calls)
        sink.shutdown()
        monkeypatch.setenv("VITAL_DATABASE_URL", url)
        engine = reader_engine(url)
        try:
            yield Store(url, engine, calls)
        finally:
            engine.dispose()


# -- reading the store back ----------------------------------------------------------------------------------
def _money(value: Any) -> Decimal | None:
    """USD to 1e-9: SQLite keeps NUMERIC as a float."""
    return None if value is None else round(Decimal(value), 9)


def costs(engine: Engine) -> dict[str, tuple[Any, ...]]:
    sql = ("SELECT run_id, input_cost, output_cost, total_cost, price_source, price_detail, saved_cost "
           "FROM llm_calls")
    with engine.connect() as conn:
        return {r[0]: (_money(r[1]), _money(r[2]), _money(r[3]), r[4], r[5], _money(r[6]))
                for r in conn.execute(text(sql))}


def audit(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM llm_cost_audit ORDER BY audit_id")).mappings().all()
    return [{k: (_money(v) if k.endswith("_cost") else v) for k, v in row.items()} for row in rows]


def snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything a reprice may touch: the calls' costs, the rollup and the audit."""
    return costs(engine), rollup_by_day(engine), audit(engine)


def reprice(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["reprice", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


def table(out: str) -> dict[tuple[str, str, str], list[str]]:
    """The printed per-day/tenant/model rows, by key (columns are separated by two spaces or more)."""
    import re

    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("day "))
    rows: dict[tuple[str, str, str], list[str]] = {}
    for line in lines[header + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[(cells[0], cells[1], cells[2])] = cells[3:]
    return rows


def changed_gpt(store: Store, day: int, tenant: str) -> list[LLMCall]:
    return [c for c in store.calls if c.model == GPT and c.tenant_id == tenant and c.token_source != "none"
            and c.started_at.date() == (START + timedelta(days=day)).date()]


# -- the tests -----------------------------------------------------------------------------------------------
def test_a_dry_run_prints_the_differences_and_changes_nothing(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(store.reader)
    status, out, _ = reprice(capsys, *WINDOW, "--dry-run")
    assert status == 0, out
    rows = table(out)
    # Only what today's prices change: the discounted model from the day the discount starts, the model
    # whose override is gone, the model priced now. Not the days before the discount, not claude.
    assert set(rows) == {
        ("2026-06-03", "acme", GPT), ("2026-06-03", "globex", GPT), ("2026-06-04", "acme", GPT),
        ("2026-06-04", "globex", GPT), ("2026-06-02", "acme", "house-llm"), ("2026-06-03", "globex", "new-llm")}
    calls, changed, old, new, difference, now_priced, now_unpriced = rows[("2026-06-03", "acme", GPT)]
    group = changed_gpt(store, 2, "acme")
    old_total = sum((c.cost.total for c in group if c.cost is not None), Decimal(0))
    assert (calls, changed) == ("2", "2")
    assert (old, new) == (usd(old_total), usd(old_total * Decimal("0.85")))
    assert difference == usd(old_total * Decimal("0.85") - old_total) and difference.startswith("-$")
    assert (now_priced, now_unpriced) == ("0", "0")
    # The call without raw usage is repriced from its token columns; the call that billed nothing is not counted.
    assert rows[("2026-06-04", "acme", GPT)][:2] == ["3", "3"]
    house = sum((c.cost.total for c in store.calls if c.model == "house-llm" and c.cost is not None), Decimal(0))
    # No difference is shown where calls became (un)priced: the sums cover different calls.
    assert rows[("2026-06-02", "acme", "house-llm")] == ["2", "2", usd(house), "unpriced (2 calls)", "n/a", "0", "2"]
    fresh = expected_total(store.call("new-0"))
    assert fresh is not None
    assert rows[("2026-06-03", "globex", "new-llm")] == ["1", "1", "unpriced (1 call)", usd(fresh), "n/a", "1", "0"]
    scanned = sum(1 for c in store.calls if c.token_source != "none")
    assert f"total: 11 of {scanned} calls change" in out
    assert "1 become priced, 2 become unpriced" in out
    assert "no price now for: house-llm (cost null)" in out
    assert "dry run: nothing was changed" in out
    assert snapshot(store.reader) == before


def test_reprice_updates_audits_and_moves_the_rollup(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    rollup_before = rollup_by_day(store.reader)
    before = costs(store.reader)
    status, out, err = reprice(capsys, *WINDOW)
    assert status == 0, err
    assert "total: 11 of" in out and "dry run" not in out  # the same table, then applied
    assert "applied: 11 calls repriced in 1 batch(es), reprice id " in out
    reprice_id = out.split("reprice id ")[1].split(";")[0]
    after = costs(store.reader)
    for call in store.calls:
        expected = expected_total(call)
        assert after[call.run_id][2] == _money(expected), call.run_id  # None stays None: never 0
    assert after["gpt-2-0"][3] == "override:discount.yml" and "15" in (after["gpt-2-0"][4] or "")
    assert after["gpt-1-0"] == before["gpt-1-0"]  # the day before the discount: the price then is unchanged
    assert after["gpt-none"] == before["gpt-none"] == (None, None, None, None, None, None)
    hit = store.call("gpt-hit")
    assert after["gpt-hit"][:4] == (0, 0, 0, "cache")
    assert hit.saved_cost is not None and after["gpt-hit"][5] == _money(hit.saved_cost * Decimal("0.85"))

    rows = {r["run_id"]: r for r in audit(store.reader)}
    assert len(rows) == 11 and len(audit(store.reader)) == 11  # one per changed call
    assert set(rows) == {r for r in before if after[r] != before[r]}
    assert {r["reprice_id"] for r in rows.values()} == {reprice_id}
    gpt = rows["gpt-3-2"]
    assert (gpt["old_total_cost"], gpt["new_total_cost"]) == (before["gpt-3-2"][2], after["gpt-3-2"][2])
    assert (gpt["old_price_source"], gpt["new_price_source"]) == (CATALOG_SOURCE, "override:discount.yml")
    house = rows["house-0"]
    assert house["old_price_source"] == "override:house.yml" and house["old_total_cost"] is not None
    assert (house["new_total_cost"], house["new_price_source"]) == (None, None)
    assert rows["new-0"]["old_total_cost"] is None and rows["new-0"]["new_price_source"] == "override:discount.yml"
    cached = rows["gpt-hit"]
    assert (cached["old_total_cost"], cached["new_total_cost"], cached["new_price_source"]) == (0, 0, "cache")
    assert "saved_cost=" in cached["old_price_detail"] and "override:discount.yml" in cached["new_price_detail"]

    # The rollup moved with the rows (the database's triggers): equal to the raw sums, and by the change.
    rollup = rollup_by_day(store.reader)
    assert rollup == raw_by_day(store.reader)
    cost, unpriced = 7, 8
    key = ("2026-06-03", "acme", "agent", "openai", GPT)
    old_total = sum((c.cost.total for c in changed_gpt(store, 2, "acme") if c.cost is not None), Decimal(0))
    assert rollup[key][cost] == _money(rollup_before[key][cost] - old_total * Decimal("0.15"))
    house_key = ("2026-06-02", "acme", "agent", "ollama", "house-llm")
    assert rollup_before[house_key][unpriced] == 0 and rollup_before[house_key][cost] > 0
    assert (rollup[house_key][unpriced], rollup[house_key][cost]) == (2, 0)  # counted as unpriced, not as $0
    new_key = ("2026-06-03", "globex", "agent", "openai", "new-llm")
    assert (rollup_before[new_key][unpriced], rollup[new_key][unpriced]) == (1, 0)


def test_model_and_tenant_limit_the_reprice(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    before = costs(store.reader)
    status, out, err = reprice(capsys, *WINDOW, "--model", GPT, "--tenant", "globex")
    assert status == 0, err
    assert set(k[1:] for k in table(out)) == {("globex", GPT)}
    changed = {r["run_id"] for r in audit(store.reader)}
    assert changed == {"gpt-2-2", "gpt-3-2", "gpt-hit"}
    status, out, err = reprice(capsys, *WINDOW, "--model", GPT)
    assert status == 0, err
    assert {r["run_id"] for r in audit(store.reader)} - changed == {"gpt-2-0", "gpt-2-1", "gpt-3-0", "gpt-3-1",
                                                                  "gpt-old"}
    after = costs(store.reader)
    assert after["house-0"] == before["house-0"] and after["new-0"] == before["new-0"]  # other models untouched
    assert rollup_by_day(store.reader) == raw_by_day(store.reader)


def test_a_model_that_becomes_unknown_is_null_and_counted_unpriced(store: Store,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = reprice(capsys, *WINDOW, "--model", "house-llm")
    assert status == 0, err
    assert "0 become priced, 2 become unpriced" in out
    with store.reader.connect() as conn:
        stored = conn.execute(text("SELECT total_cost, input_cost, price_source FROM llm_calls "
                                   "WHERE model = 'house-llm'")).all()
        day = conn.execute(text("SELECT cost_usd, unpriced_calls, calls FROM llm_cost_daily "
                                "WHERE model = 'house-llm'")).one()
    assert [tuple(r) for r in stored] == [(None, None, None)] * 2
    assert (_money(day[0]), day[1], day[2]) == (Decimal(0), 2, 2)
    status, out, err = reprice(capsys, *WINDOW, "--dry-run")
    assert status == 0, err
    assert ("2026-06-02", "acme", "house-llm") not in table(out)  # nothing left to change for them
    assert "no price now for: house-llm (cost null)" in out  # but still said, with what to do
    assert rollup_by_day(store.reader) == raw_by_day(store.reader)


def test_a_second_reprice_changes_nothing(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert reprice(capsys, *WINDOW)[0] == 0
    applied = snapshot(store.reader)
    assert len(applied[2]) == 11
    status, out, err = reprice(capsys, *WINDOW)
    assert status == 0, err
    scanned = sum(1 for c in store.calls if c.token_source != "none")
    assert f"total: 0 of {scanned} calls change" in out and "nothing to change" in out and "applied" not in out
    assert snapshot(store.reader) == applied  # no row rewritten, no audit row added


def _fail_audit_of(url: str, run_id: str) -> None:
    """A database error in the middle of a batch: the audit insert for ``run_id`` fails, after the batch's
    UPDATE of ``llm_calls`` ran in the same transaction."""
    engine = rp.open_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(text("CREATE TRIGGER vital_test_fail BEFORE INSERT ON llm_cost_audit "
                              f"WHEN NEW.run_id = '{run_id}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END"))
        else:
            conn.execute(text("CREATE FUNCTION vital_test_fail() RETURNS trigger LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'injected failure'; END $$"))
            conn.execute(text("CREATE TRIGGER vital_test_fail BEFORE INSERT ON llm_cost_audit FOR EACH ROW "
                              f"WHEN (NEW.run_id = '{run_id}') EXECUTE FUNCTION vital_test_fail()"))
    engine.dispose()


def _heal(url: str) -> None:
    engine = rp.open_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER vital_test_fail" + (" ON llm_cost_audit" if engine.dialect.name !=
                                                            "sqlite" else "")))
    engine.dispose()


def test_an_interrupted_reprice_keeps_whole_batches(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    order = sorted((c for c in store.calls if c.model == GPT and c.token_source != "none"
                    and c.started_at >= START + timedelta(days=DISCOUNT_FROM)), key=lambda c: (c.start_time, c.run_id))
    ids = [c.run_id for c in order]
    assert len(ids) == 8  # every one of them changes, so every batch writes
    before = costs(store.reader)
    _fail_audit_of(store.url, ids[3])  # the second call of the second batch
    args = ["--since", "2026-06-03", "--until", "2026-06-05", "--model", GPT, "--batch-size", "2"]
    status, out, err = reprice(capsys, *args)
    assert status == 1
    assert len(err.strip().splitlines()) == 1 and "batch 2 failed" in err and "injected failure" in err, err
    assert "the 1 batch(es) before it stay applied (2 call(s) repriced" in err
    after = costs(store.reader)
    assert [after[i] != before[i] for i in ids] == [True, True] + [False] * 6  # batch 1 applied, batch 2 not
    assert [r["run_id"] for r in audit(store.reader)] == ids[:2]
    assert rollup_by_day(store.reader) == raw_by_day(store.reader)

    _heal(store.url)
    status, out, err = reprice(capsys, *args)
    assert status == 0, err
    assert "total: 6 of 8 calls change" in out and "applied: 6 calls repriced in 4 batch(es)" in out
    rows = audit(store.reader)
    assert sorted(r["run_id"] for r in rows) == sorted(ids)  # each call audited once: batch 1 not redone
    assert all(costs(store.reader)[c.run_id][2] == _money(expected_total(c)) for c in order)
    assert rollup_by_day(store.reader) == raw_by_day(store.reader)


# -- the parts -----------------------------------------------------------------------------------------------
def test_usage_comes_from_the_raw_usage_or_else_the_token_columns() -> None:
    """A re-read keeps the web searches only the content blocks showed (kept in their column); a row
    without raw usage, or with one that cannot be read, is billed from its token columns."""
    message = _openai("gpt-4o", 1000, 200, cached=300)
    billing = read_billing(message, None, "openai", "gpt-4o")
    assert billing is not None and billing.raw is not None
    columns = {"input_tokens": 9, "output_tokens": 8, "total_tokens": 17, "cache_read_tokens": 1, "web_searches": 2}
    usage, parts = rp.usage_of({"raw_usage": billing.raw, "model": "gpt-4o", **columns})
    assert (usage.input, usage.output, usage.cache_read, usage.web_searches) == (1000, 200, 300, 2)
    assert parts[0].usage.web_searches == 2  # priced on the call's own model
    for raw in (None, "{not json"):
        usage, parts = rp.usage_of({"raw_usage": raw, "model": "gpt-4o", **columns})
        assert (usage.input, usage.output, usage.total, usage.cache_read, usage.web_searches) == (9, 8, 17, 1, 2)
        assert parts == ()


def test_bad_windows_and_old_stores_fail_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("VITAL_PRICING_DIR", raising=False)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    monkeypatch.setenv("VITAL_DATABASE_URL", url)
    status, _, err = reprice(capsys, "--since", "2026-06-05", "--until", "2026-06-01")
    assert status == 2 and "the window is empty" in err and len(err.strip().splitlines()) == 1
    migrate.upgrade(url, "0004")
    status, _, err = reprice(capsys, "--since", "2026-06-01")
    assert status == 2 and "db upgrade" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exit_:
        main(["reprice", "--since", "June"])
    assert exit_.value.code == 2 and "cannot read 'June' as an ISO date" in capsys.readouterr().err
