"""`vital-callbacks`: run the offline demo, report costs, show prices, manage the database."""

# Only the standard library at module level: `--help` and `--version` must answer without importing
# LangChain, SQLAlchemy or pydantic (over a second on a cold start). Everything else is imported in the commands.
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from vital_callbacks.core.settings import Settings

_SECRET_SETTINGS = frozenset({"api_tokens", "database_url", "pushgateway_url"})
"""Settings whose value may hold a password or token, so an error about them never echoes the value."""

_SAMPLE_DATA_HINT = "run `vital-callbacks demo` for sample data, or set VITAL_DATABASE_URL to your application's store"


class CliError(Exception):
    """A problem with the user's input or environment: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's default prints the whole usage first; a user needs the one line that says what is wrong.
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Version(argparse.Action):
    """``--version``, looked up only when asked: importing importlib.metadata would slow every other command."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            installed = version("vital-callbacks")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            installed = "unknown (not installed)"
        print(f"{parser.prog} {installed}")
        parser.exit()


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text) if text.strip().isdigit() else None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def _instant(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as an ISO date or date-time, e.g. 2025-03-01 or 2025-03-01T12:00:00+00:00"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _setting_problem(error: Any) -> str:
    loc = error.get("loc") or ()
    field = str(loc[0]) if loc else ""
    name = f"VITAL_{field.upper()}" if field else "VITAL_* settings"
    value = error.get("input")
    shown = f"={value!r}" if isinstance(value, str) and field not in _SECRET_SETTINGS else ""
    return f"{name}{shown}: {error.get('msg', 'invalid')}"


def _settings() -> Settings:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from vital_callbacks.core.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        raise CliError("; ".join(_setting_problem(e) for e in exc.errors())) from None
    except SettingsError as exc:
        raise CliError(_first_line(exc)) from None


def _check_url(url: str) -> None:
    from vital_callbacks.store.engine import UnsupportedDatabaseError, check_url

    try:
        check_url(url)
    except UnsupportedDatabaseError as exc:
        raise CliError(str(exc)) from None


def _sqlite_file(url: str) -> Path | None:
    """The file of a file-backed SQLite URL, which connecting to would create if it is missing."""
    from sqlalchemy.engine import make_url

    from vital_callbacks.store.engine import is_memory

    if not url.startswith("sqlite") or is_memory(url):
        return None
    database = make_url(url).database
    if not database or database.startswith("file:"):  # a URI filename: SQLite's own rules decide
        return None
    return Path(database)


def _missing_store(settings: Settings) -> Path | None:
    path = _sqlite_file(settings.database_url)
    return path if path is not None and not path.exists() else None


def _open_store(settings: Settings) -> Engine:
    """A reader engine on a store that exists and has its tables, else a :class:`CliError` saying why."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from vital_callbacks.core.settings import Settings
    from vital_callbacks.store.engine import mask_url, reader_engine
    from vital_callbacks.store.migrate import describe_problem

    url = settings.database_url
    _check_url(url)
    missing = _missing_store(settings)
    if missing is not None:
        default = url == Settings.model_fields["database_url"].default
        why = " (the default store, in the current folder)" if default else ""
        raise CliError(f"no store at {missing.absolute()}{why}; {_SAMPLE_DATA_HINT}")
    engine = reader_engine(url)
    try:
        has_tables = inspect(engine).has_table("llm_calls")
    except SQLAlchemyError as exc:
        engine.dispose()
        raise CliError(describe_problem(exc, mask_url(url))) from None
    if not has_tables:
        engine.dispose()
        raise CliError(f"the store at VITAL_DATABASE_URL={mask_url(url)} has no data yet (no tables); "
                       f"{_SAMPLE_DATA_HINT}")
    return engine


def _check_sinks(settings: Settings) -> list[str]:
    """Fail before the run, not after it, for sinks that cannot be loaded (the runtime would only count drops)."""
    from importlib.metadata import entry_points

    from vital_callbacks.runtime.factory import GROUP, UnknownSinkError, describe_build_error, sink_class

    names = settings.resolved_sinks()
    if not names:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=GROUP)))
        raise CliError(f"VITAL_SINKS is empty, so nothing would be recorded; set it to one or more of: {known} "
                       "(comma-separated), or unset it for the default (sql)")
    for name in names:
        try:
            sink_class(name)
        except UnknownSinkError as exc:
            raise CliError(str(exc)) from None
        except Exception as exc:
            raise CliError(describe_build_error(name, exc)) from None
    if "sql" in names:
        _check_url(settings.database_url)
    return names


def cmd_demo(args: argparse.Namespace) -> int:
    from vital_callbacks.capture.handler import VitalCallbackHandler
    from vital_callbacks.store.engine import mask_url
    from vital_callbacks.testing.demo import run_demo

    settings = _settings()
    names = _check_sinks(settings)
    with VitalCallbackHandler(settings) as handler:
        run_demo(handler, runs=args.runs)
        delivered = handler.flush(30)
        stats = handler.stats()
    store = f" ({mask_url(settings.database_url)})" if "sql" in names else ""
    print(f"demo: {args.runs} graph runs across 3 tenants -> {', '.join(names)}{store}")
    print(f"events exported: {stats['exported']}, dropped: {stats['dropped'] or 'none'}")
    return 0 if delivered else 1


def cmd_report(args: argparse.Namespace) -> int:
    from vital_callbacks.analytics import cost_report, format_usd, parse_since, report_total
    from vital_callbacks.core.money import calls as n_calls

    try:
        since = parse_since(args.since)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    engine = _open_store(_settings())
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
             format_usd(r.cost_usd, r.unpriced_calls), str(r.errors), _secs(r.p50_latency_s),
             _secs(r.p95_latency_s)] for r in rows]
    calls, cost, unpriced = report_total(rows)
    print(_table(headers, body))
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
    settings = _settings()
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
    print(f"cost:     input {_money(quote.cost.input)}, output {_money(quote.cost.output)}, "
          f"total {_money(quote.cost.total)}  [{quote.cost.source}, at {when.isoformat()}]")
    if quote.cost.detail:
        print(f"applied:  {quote.cost.detail}")
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    from vital_callbacks.budgets import BudgetFileError, BudgetGuard, load_budgets

    settings = _settings()
    path = settings.budgets_file
    if path is None:
        print("no budgets: set VITAL_BUDGETS_FILE to a YAML file of budgets")
        return 1
    if not path.is_file():
        raise CliError(f"VITAL_BUDGETS_FILE={path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
    try:
        budgets = load_budgets(path)
    except BudgetFileError as exc:
        raise CliError(str(exc)) from None
    _open_store(settings).dispose()
    guard = BudgetGuard(budgets, database_url=settings.database_url, refresh_s=0)
    try:
        guard.refresh()  # here, not only on the guard's thread: the table must not race the first read
        statuses = guard.status()
    finally:
        guard.close()
    headers = ["budget", "scope", "action", "period from", "spend", "limit", "used", "projected"]
    body = [[s.budget.label, s.key, s.budget.action, s.period_start.strftime("%Y-%m-%d %H:%M"), _money(s.spend),
             _money(s.limit), f"{(s.spend / s.limit):.0%}", _money(s.projected)] for s in statuses]
    print(_table(headers, body))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from vital_callbacks.store import migrate
    from vital_callbacks.store.engine import mask_url

    settings = _settings()
    url = settings.database_url
    _check_url(url)
    missing = _missing_store(settings)
    if args.action == "current" and missing is not None:
        print(f"empty (no store at {missing.absolute()} yet)")
        return 0
    try:
        if args.action == "upgrade":
            migrate.upgrade(url, args.revision)
            print(f"schema at {migrate.current(url)}")
        else:
            print(migrate.current(url) or "empty (no schema yet)")
    except (SQLAlchemyError, CommandError, migrate.NewerSchemaError, OSError) as exc:
        raise CliError(migrate.describe_problem(exc, mask_url(url))) from None
    return 0


def _signed_usd(amount: Decimal) -> str:
    from vital_callbacks.core.money import usd

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
    settings = _settings()
    try:  # the book the handler prices with: the catalog, then VITAL_PRICING_DIR over the shipped overrides
        book = PriceBook([settings.pricing_dir] if settings.pricing_dir else [])
    except PricingFileError as exc:
        raise CliError(_first_line(exc)) from None
    url = settings.database_url
    engine = _open_store(settings)  # read-only on PostgreSQL: the preview cannot write, whatever happens
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
        print(_table(headers, body))
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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vital_callbacks.server import TokenTable, create_app
    except ImportError:
        raise CliError("`serve` needs the api extra: pip install 'vital-callbacks[api]'") from None
    settings = _settings()
    _check_url(settings.database_url)
    try:
        tokens = TokenTable.parse(settings.api_tokens.get_secret_value() if settings.api_tokens else None)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not tokens:
        raise CliError("set VITAL_API_TOKENS (e.g. 'acme:<token>,*:<admin token>'); the API never runs open")
    uvicorn.run(create_app(database_url=settings.database_url, tokens=tokens), host=args.host, port=args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vital-callbacks", description=__doc__)
    parser.add_argument("--version", action=_Version, nargs=0, default=argparse.SUPPRESS,
                        help="print the installed version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (also: VITAL_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a sample LangGraph agent offline into the configured store")
    demo.add_argument("--runs", type=_count(1), default=30)
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="calls, tokens, cost and latency from the SQL store")
    report.add_argument("--by", default="tenant", choices=["tenant", "user", "model", "provider", "node", "graph",
                                                           "day"])
    report.add_argument("--since", default=None, help="window, e.g. 24h or 7d (default: everything)")
    report.set_defaults(func=cmd_report)

    prices = sub.add_parser("prices", help="what a call to MODEL would be charged")
    prices.add_argument("model", nargs="?")
    prices.add_argument("--provider", default=None, help="LangChain provider name, e.g. openai, bedrock")
    tokens = _count(0)
    prices.add_argument("--input-tokens", type=tokens, default=1_000_000)
    prices.add_argument("--output-tokens", type=tokens, default=1_000_000)
    prices.add_argument("--cache-read", type=tokens, default=0)
    prices.add_argument("--cache-write", type=tokens, default=0)
    prices.add_argument("--reasoning", type=tokens, default=0)
    prices.add_argument("--web-searches", type=tokens, default=0, help="server-side web searches billed per request")
    prices.add_argument("--service-tier", default=None, help="the tier that served the call, e.g. flex, priority")
    prices.add_argument("--at", type=_instant, default=None, help="ISO date/time of the call (default: now; UTC "
                        "unless it names an offset)")
    prices.add_argument("--schema", action="store_true", help="print the JSON Schema of pricing/ files")
    prices.set_defaults(func=cmd_prices)

    budgets = sub.add_parser("budgets", help="each budget's spend, limit and projected end-of-period spend")
    budgets.set_defaults(func=cmd_budgets)

    database = sub.add_parser("db", help="schema migrations of the SQL store")
    database.add_argument("action", choices=["upgrade", "current"])
    database.add_argument("--revision", default="head")
    database.set_defaults(func=cmd_db)

    repricing = sub.add_parser("reprice", help="recompute stored LLM-call costs with the current prices (audited)")
    repricing.add_argument("--since", type=_instant, required=True,
                           help="ISO date/time: calls started at or after it (UTC unless it names an offset)")
    repricing.add_argument("--until", type=_instant, default=None, help="ISO date/time: calls started before it")
    repricing.add_argument("--model", default=None, help="only calls of this (served) model")
    repricing.add_argument("--tenant", default=None, help="only calls of this tenant")
    repricing.add_argument("--dry-run", action="store_true", help="print the differences, change nothing")
    repricing.add_argument("--batch-size", type=_count(1), default=500, help="calls per transaction (default 500)")
    repricing.set_defaults(func=cmd_reprice)

    serve = sub.add_parser("serve", help="the metrics HTTP API (needs the `api` extra and VITAL_API_TOKENS)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("VITAL_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of a pipe (`| head`) left: stop Python from reporting the failed flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
