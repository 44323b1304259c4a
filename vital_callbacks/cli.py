"""`vital-callbacks`: run the offline demo, report costs, show prices, manage the database."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal

from vital_callbacks.settings import Settings


def _money(value: Decimal | None) -> str:
    return "null" if value is None else f"${value:,.6f}"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f} ms"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        cells = enumerate(zip(r, widths, strict=True))
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in cells))
    return "\n".join(out)


def cmd_demo(args: argparse.Namespace) -> int:
    from vital_callbacks.demo import run_demo
    from vital_callbacks.handler import VitalCallbackHandler

    settings = Settings()
    with VitalCallbackHandler(settings) as handler:
        run_demo(handler, runs=args.runs)
        delivered = handler.flush(30)
        stats = handler.stats()
    print(f"demo: {args.runs} graph runs across 3 tenants -> {settings.database_url}")
    print(f"events exported: {stats['exported']}, dropped: {stats['dropped'] or 'none'}")
    return 0 if delivered else 1


def cmd_report(args: argparse.Namespace) -> int:
    from vital_callbacks.analytics import cost_report, parse_since, reader_engine

    engine = reader_engine(Settings().database_url)
    try:
        rows = cost_report(engine, by=args.by, since=parse_since(args.since))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    headers = [args.by, "calls", "input tok", "output tok", "cache-read tok", "cost (USD)", "unpriced",
               "errors", "p50", "p95"]
    body = [[r.key, str(r.calls), f"{r.input_tokens:,}", f"{r.output_tokens:,}", f"{r.cache_read_tokens:,}",
             _money(r.cost_usd), str(r.unpriced_calls), str(r.errors), _secs(r.p50_latency_s),
             _secs(r.p95_latency_s)] for r in rows]
    if not rows:
        print("no LLM calls recorded in this window (run `vital-callbacks demo` for sample data)")
        return 0
    total = sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))
    print(_table(headers, body))
    print(f"\ntotal: {sum(r.calls for r in rows)} calls, {_money(total)}")
    return 0


def cmd_prices(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from vital_callbacks.events import TokenUsage
    from vital_callbacks.price_overrides import json_schema
    from vital_callbacks.pricing import PriceBook

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return 0
    if not args.model:
        print("error: give a MODEL (or --schema)", file=sys.stderr)
        return 2
    settings = Settings()
    book = PriceBook([settings.pricing_dir] if settings.pricing_dir else [])
    usage = TokenUsage(input=args.input_tokens, output=args.output_tokens,
                       total=args.input_tokens + args.output_tokens, cache_read=args.cache_read,
                       cache_write=args.cache_write, reasoning=args.reasoning)
    when = datetime.fromisoformat(args.at) if args.at else datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    quote = book.quote(args.provider, args.model, usage, when)
    if quote is None:
        print(f"{args.model}: no price known (cost would be recorded as null); add a pricing/ override")
        return 1
    print(f"model:    {quote.provider}/{quote.model}")
    print(f"prices:   {quote.description}")
    print(f"usage:    {usage.input:,} input ({usage.cache_read:,} cache-read, {usage.cache_write:,} cache-write), "
          f"{usage.output:,} output ({usage.reasoning:,} reasoning)")
    print(f"cost:     input {_money(quote.cost.input)}, output {_money(quote.cost.output)}, "
          f"total {_money(quote.cost.total)}  [{quote.cost.source}, at {when.isoformat()}]")
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    from vital_callbacks._factory import build_guard
    from vital_callbacks.budgets import BudgetFileError

    settings = Settings()
    if settings.budgets_file is None:
        print("no budgets: set VITAL_BUDGETS_FILE to a YAML file of budgets")
        return 1
    try:
        guard = build_guard(settings.model_copy(update={"budget_refresh_s": 0}))
    except BudgetFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert guard is not None
    headers = ["budget", "scope", "action", "period from", "spend", "limit", "used", "projected"]
    body = [[s.budget.label, s.key, s.budget.action, s.period_start.strftime("%Y-%m-%d %H:%M"), _money(s.spend),
             _money(s.limit), f"{(s.spend / s.limit):.0%}", _money(s.projected)] for s in guard.status()]
    print(_table(headers, body))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from vital_callbacks import db

    settings = Settings()
    if args.action == "upgrade":
        db.upgrade(settings.database_url, args.revision)
        print(f"schema at {db.current(settings.database_url)}")
    else:
        print(db.current(settings.database_url) or "empty (no schema yet)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vital_callbacks.api import TokenTable, create_app
    except ImportError:
        print("error: `serve` needs the api extra: pip install 'vital-callbacks[api]'", file=sys.stderr)
        return 2
    settings = Settings()
    try:
        tokens = TokenTable.parse(settings.api_tokens.get_secret_value() if settings.api_tokens else None)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not tokens:
        print("error: set VITAL_API_TOKENS (e.g. 'acme:<token>,*:<admin token>'); the API never runs open",
              file=sys.stderr)
        return 2
    uvicorn.run(create_app(database_url=settings.database_url, tokens=tokens), host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vital-callbacks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a sample LangGraph agent offline into the configured store")
    demo.add_argument("--runs", type=int, default=30)
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="calls, tokens, cost and latency from the SQL store")
    report.add_argument("--by", default="tenant", choices=["tenant", "user", "model", "provider", "node", "graph",
                                                           "day"])
    report.add_argument("--since", default=None, help="window, e.g. 24h or 7d (default: everything)")
    report.set_defaults(func=cmd_report)

    prices = sub.add_parser("prices", help="what a call to MODEL would be charged")
    prices.add_argument("model", nargs="?")
    prices.add_argument("--provider", default=None, help="LangChain provider name, e.g. openai, bedrock")
    prices.add_argument("--input-tokens", type=int, default=1_000_000)
    prices.add_argument("--output-tokens", type=int, default=1_000_000)
    prices.add_argument("--cache-read", type=int, default=0)
    prices.add_argument("--cache-write", type=int, default=0)
    prices.add_argument("--reasoning", type=int, default=0)
    prices.add_argument("--at", default=None, help="ISO date/time of the call (default: now)")
    prices.add_argument("--schema", action="store_true", help="print the JSON Schema of pricing/ files")
    prices.set_defaults(func=cmd_prices)

    budgets = sub.add_parser("budgets", help="each budget's spend, limit and projected end-of-period spend")
    budgets.set_defaults(func=cmd_budgets)

    database = sub.add_parser("db", help="schema migrations of the SQL store")
    database.add_argument("action", choices=["upgrade", "current"])
    database.add_argument("--revision", default="head")
    database.set_defaults(func=cmd_db)

    serve = sub.add_parser("serve", help="the metrics HTTP API (needs the `api` extra and VITAL_API_TOKENS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
