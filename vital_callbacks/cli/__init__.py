"""`vital-callbacks`: run the offline demo, report costs, show prices, manage the database."""

# Only the standard library at module level: `--help` and `--version` must answer without importing
# LangChain, SQLAlchemy or pydantic (over a second on a cold start). Everything else is imported in the commands.
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from vital_callbacks.cli._common import CliError, Parser, VersionAction, count_arg, first_line, instant
from vital_callbacks.cli._costs import cmd_prices, cmd_report, cmd_reprice
from vital_callbacks.cli._ops import cmd_budgets, cmd_db, cmd_demo, cmd_serve


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vital-callbacks", description=__doc__)
    parser.add_argument("--version", action=VersionAction, nargs=0, default=argparse.SUPPRESS,
                        help="print the installed version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an unexpected error (also: VITAL_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run a sample LangGraph agent offline into the configured store")
    demo.add_argument("--runs", type=count_arg(1), default=30)
    demo.set_defaults(func=cmd_demo)

    report = sub.add_parser("report", help="calls, tokens, cost and latency from the SQL store")
    report.add_argument("--by", default="tenant",
                        choices=["tenant", "user", "model", "provider", "node", "graph", "subgraph", "tool", "day"])
    report.add_argument("--since", default=None, help="window, e.g. 24h or 7d (default: everything)")
    report.set_defaults(func=cmd_report)

    prices = sub.add_parser("prices", help="what a call to MODEL would be charged")
    prices.add_argument("model", nargs="?")
    prices.add_argument("--provider", default=None, help="LangChain provider name, e.g. openai, bedrock")
    tokens = count_arg(0)
    prices.add_argument("--input-tokens", type=tokens, default=1_000_000)
    prices.add_argument("--output-tokens", type=tokens, default=1_000_000)
    prices.add_argument("--cache-read", type=tokens, default=0)
    prices.add_argument("--cache-write", type=tokens, default=0)
    prices.add_argument("--reasoning", type=tokens, default=0)
    prices.add_argument("--web-searches", type=tokens, default=0, help="server-side web searches billed per request")
    prices.add_argument("--service-tier", default=None, help="the tier that served the call, e.g. flex, priority")
    prices.add_argument("--at", type=instant, default=None, help="ISO date/time of the call (default: now; UTC "
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
    repricing.add_argument("--since", type=instant, required=True,
                           help="ISO date/time: calls started at or after it (UTC unless it names an offset)")
    repricing.add_argument("--until", type=instant, default=None, help="ISO date/time: calls started before it")
    repricing.add_argument("--model", default=None, help="only calls of this (served) model")
    repricing.add_argument("--tenant", default=None, help="only calls of this tenant")
    repricing.add_argument("--dry-run", action="store_true", help="print the differences, change nothing")
    repricing.add_argument("--batch-size", type=count_arg(1), default=500, help="calls per transaction (default 500)")
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
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr)
        return 1


__all__ = ["CliError", "build_parser", "main"]
