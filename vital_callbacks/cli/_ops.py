"""The operations commands: `demo`, `budgets`, `db`, `serve`."""

# Only the standard library at module level (see vital_callbacks/cli/__init__.py).
from __future__ import annotations

import argparse

from vital_callbacks.cli._common import (
    CliError,
    check_database_url,
    check_sinks,
    load_settings,
    missing_store,
    open_store,
    table,
)


def cmd_demo(args: argparse.Namespace) -> int:
    from vital_callbacks.capture.handler import VitalCallbackHandler
    from vital_callbacks.store.engine import mask_url
    from vital_callbacks.testing.demo import run_demo

    settings = load_settings()
    names = check_sinks(settings)
    with VitalCallbackHandler(settings) as handler:
        run_demo(handler, runs=args.runs)
        delivered = handler.flush(30)
        stats = handler.stats()
    store = f" ({mask_url(settings.database_url)})" if "sql" in names else ""
    print(f"demo: {args.runs} graph runs across 3 tenants -> {', '.join(names)}{store}")
    print(f"events exported: {stats['exported']}, dropped: {stats['dropped'] or 'none'}")
    return 0 if delivered else 1


def cmd_budgets(args: argparse.Namespace) -> int:
    from vital_callbacks.budgets import BudgetFileError, BudgetGuard, load_budgets
    from vital_callbacks.core.money import usd

    settings = load_settings()
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
    open_store(settings).dispose()
    guard = BudgetGuard(budgets, database_url=settings.database_url, refresh_s=0,
                        timeout_s=settings.budget_timeout_s, redis_url=settings.budget_redis_url)
    try:
        guard.refresh()  # here, not only on the guard's thread: the table must not race the first read
        statuses = guard.status()
    finally:
        guard.close()
    headers = ["budget", "scope", "action", "period from", "spend", "reserved", "limit", "used", "projected"]
    body = [[s.budget.label, s.key, s.budget.action, s.period_start.strftime("%Y-%m-%d %H:%M"), usd(s.spend),
             "-" if s.reserved is None else usd(s.reserved), usd(s.limit), f"{(s.spend / s.limit):.0%}",
             usd(s.projected)] for s in statuses]
    print(table(headers, body))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from alembic.util.exc import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from vital_callbacks.store import migrate
    from vital_callbacks.store.engine import mask_url

    settings = load_settings()
    url = settings.database_url
    check_database_url(url)
    missing = missing_store(settings)
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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from vital_callbacks.server import TokenTable, create_app
    except ImportError:
        raise CliError("`serve` needs the api extra: pip install 'vital-callbacks[api]'") from None
    settings = load_settings()
    check_database_url(settings.database_url)
    try:
        tokens = TokenTable.parse(settings.api_tokens.get_secret_value() if settings.api_tokens else None)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not tokens:
        raise CliError("set VITAL_API_TOKENS (e.g. 'acme:<token>,*:<admin token>'); the API never runs open")
    app = create_app(database_url=settings.database_url, tokens=tokens, budgets_file=settings.budgets_file,
                     budget_redis_url=settings.budget_redis_url)
    print(f"vital-callbacks: the UI and the API at http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
