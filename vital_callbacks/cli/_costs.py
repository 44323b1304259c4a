"""The cost commands: `report`, `prices`, `reprice`."""

# Only the standard library at module level (see vital_callbacks/cli/__init__.py).
from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from decimal import Decimal

from vital_callbacks.cli._common import (
    CliError,
    exact_usd,
    first_line,
    load_settings,
    open_store,
    secs,
    table,
)


def cmd_report(args: argparse.Namespace) -> int:
    from vital_callbacks.analytics import cost_report, format_usd, parse_since, report_total
    from vital_callbacks.core.money import calls as n_calls

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    engine = open_store(load_settings())
    try:
        rows = cost_report(engine, by=args.by, since=since)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    finally:
        engine.dispose()
    if not rows:
        print("no LLM calls recorded in this window (run `vital-callbacks demo` for sample data)")
        return 0
    # The cost cell carries its own unpriced count ("≥ $1.20 (3 unpriced)"), so no sum is read without it.
    headers = [args.by, "calls", "input tok", "output tok", "cache-read tok", "cost (USD)", "errors", "p50", "p95"]
    body = [[r.key, str(r.calls), f"{r.input_tokens:,}", f"{r.output_tokens:,}", f"{r.cache_read_tokens:,}",
             format_usd(r.cost_usd, r.unpriced_calls), str(r.errors), secs(r.p50_latency_s),
             secs(r.p95_latency_s)] for r in rows]
    calls, cost, unpriced = report_total(rows)
    print(table(headers, body))
    print(f"\ntotal: {calls} calls, {format_usd(cost, unpriced)}")
    if unpriced:
        print(f"{n_calls(unpriced)} had no known price and are not in the costs above; "
              "add a pricing/ override for their models (see `vital-callbacks prices MODEL`)")
    return 0


def cmd_prices(args: argparse.Namespace) -> int:
    from vital_callbacks.core.events import TokenUsage
    from vital_callbacks.pricing.book import PriceBook
    from vital_callbacks.pricing.overrides import json_schema

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    if not args.model:
        raise CliError("give a MODEL (or --schema)")
    settings = load_settings()
    book = PriceBook([settings.pricing_dir] if settings.pricing_dir else [])
    usage = TokenUsage(input=args.input_tokens, output=args.output_tokens,
                       total=args.input_tokens + args.output_tokens, cache_read=args.cache_read,
                       cache_write=args.cache_write, reasoning=args.reasoning, web_searches=args.web_searches)
    when: datetime = args.at or datetime.now(timezone.utc)
    quote = book.quote(args.provider, args.model, usage, when, service_tier=args.service_tier)
    if quote is None:
        print(f"{args.model}: no price known (cost would be recorded as null); add a pricing/ override")
        return 1
    print(f"model:    {quote.provider}/{quote.model}")
    print(f"prices:   {quote.description}")
    print(f"usage:    {usage.input:,} input ({usage.cache_read:,} cache-read, {usage.cache_write:,} cache-write), "
          f"{usage.output:,} output ({usage.reasoning:,} reasoning)"
          + (f", {usage.web_searches:,} web searches" if usage.web_searches else ""))
    print(f"cost:     input {exact_usd(quote.cost.input)}, output {exact_usd(quote.cost.output)}, "
          f"total {exact_usd(quote.cost.total)}  [{quote.cost.source}, at {when.isoformat()}]")
    if quote.cost.detail:
        print(f"applied:  {quote.cost.detail}")
    return 0


def _signed_usd(amount: Decimal | None) -> str:
    """A difference of two priced sums; ``n/a`` where calls became priced or unpriced (the sums then
    cover different calls)."""
    from vital_callbacks.core.money import usd

    if amount is None:
        return "n/a"
    return ("+" if amount > 0 else "") + usd(amount)


def cmd_reprice(args: argparse.Namespace) -> int:
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from vital_callbacks.core.money import format_usd, usd
    from vital_callbacks.pricing.book import PriceBook
    from vital_callbacks.pricing.overrides import PricingFileError
    from vital_callbacks.store import reprice
    from vital_callbacks.store.engine import mask_url
    from vital_callbacks.store.migrate import describe_problem

    try:
        window = reprice.Window(args.since, args.until, args.model, args.tenant)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    settings = load_settings()
    try:  # the book the handler prices with: the catalog, then VITAL_PRICING_DIR over the shipped overrides
        book = PriceBook([settings.pricing_dir] if settings.pricing_dir else [])
    except PricingFileError as exc:
        raise CliError(first_line(exc)) from None
    url = settings.database_url
    engine = open_store(settings)  # read-only on PostgreSQL: the preview cannot write, whatever happens
    try:
        if not inspect(engine).has_table("llm_cost_audit"):
            raise CliError(f"the store at VITAL_DATABASE_URL={mask_url(url)} predates repricing (no llm_cost_audit "
                           "table); run `vital-callbacks db upgrade` first")
        plan = reprice.preview(engine, book, window, batch_size=args.batch_size)
    except SQLAlchemyError as exc:
        raise CliError(describe_problem(exc, mask_url(url))) from None
    finally:
        engine.dispose()
    total = plan.total
    if not total.calls:
        print("no LLM calls with usage in this window; nothing to reprice")
        return 0
    headers = ["day", "tenant", "model", "calls", "changed", "old cost", "new cost", "difference", "now priced",
               "now unpriced"]
    body = [[g.day.isoformat(), g.tenant_id or "-", g.model or "-", str(g.calls), str(g.changed),
             format_usd(g.old_total if g.old_priced else None, g.old_unpriced),
             format_usd(g.new_total if g.new_priced else None, g.new_unpriced), _signed_usd(g.difference),
             str(g.became_priced), str(g.became_unpriced)] for g in plan.changed_groups()]
    if body:
        print(table(headers, body))
        print()
    print(f"total: {total.changed} of {total.calls} calls change; "
          f"{format_usd(total.old_total if total.old_priced else None, total.old_unpriced)} -> "
          f"{format_usd(total.new_total if total.new_priced else None, total.new_unpriced)} "
          f"({_signed_usd(total.difference)}); {total.became_priced} become priced, "
          f"{total.became_unpriced} become unpriced (null cost)")
    if total.old_saved != total.new_saved:
        print(f"cache hits: saved {usd(total.old_saved)} -> {usd(total.new_saved)}")
    unknown = sorted({g.model or "-" for g in plan.groups.values() if g.new_unpriced})
    if unknown:
        print(f"no price now for: {', '.join(unknown)} (cost null); add a pricing/ override for them "
              "(see `vital-callbacks prices MODEL`)")
    if args.dry_run or not total.changed:
        print("dry run: nothing was changed" if args.dry_run else "nothing to change")
        return 0
    engine = reprice.open_engine(url)
    try:
        done = reprice.apply(engine, book, window, batch_size=args.batch_size)
    finally:
        engine.dispose()
    print(f"applied: {done.total.changed} calls repriced in {done.batches} batch(es), reprice id {done.reprice_id}; "
          "the previous costs are in llm_cost_audit")
    return 0
