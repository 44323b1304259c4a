"""What the commands share: errors, argument types, tables, settings and opening the store."""

# Only the standard library at module level (see vital_callbacks/cli/__init__.py).
from __future__ import annotations

import argparse
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


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse's default prints the whole usage first; a user needs the one line that says what is wrong.
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class VersionAction(argparse.Action):
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


def exact_usd(value: Decimal) -> str:
    """To the micro-dollar, as ``prices`` quotes one call (``core.money.usd`` rounds for reading)."""
    return f"${value:,.6f}"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f} ms"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        cells = enumerate(zip(r, widths, strict=True))
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in cells))
    return "\n".join(out)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def count_arg(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text) if text.strip().isdigit() else None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    return parse


def instant(text: str) -> datetime:
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


def load_settings() -> Settings:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from vital_callbacks.core.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        raise CliError("; ".join(_setting_problem(e) for e in exc.errors())) from None
    except SettingsError as exc:
        raise CliError(first_line(exc)) from None


def check_database_url(url: str) -> None:
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


def missing_store(settings: Settings) -> Path | None:
    path = _sqlite_file(settings.database_url)
    return path if path is not None and not path.exists() else None


def open_store(settings: Settings) -> Engine:
    """A reader engine on a store that exists and has its tables, else a :class:`CliError` saying why."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from vital_callbacks.core.settings import Settings
    from vital_callbacks.store.engine import mask_url, reader_engine
    from vital_callbacks.store.migrate import describe_problem

    url = settings.database_url
    check_database_url(url)
    missing = missing_store(settings)
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


def check_sinks(settings: Settings) -> list[str]:
    """Fail before the run, not after it, for sinks that cannot be loaded (the runtime would only count drops)."""
    from importlib.metadata import entry_points

    from vital_callbacks.runtime.registry import GROUP, UnknownSinkError, describe_build_error, sink_class

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
        check_database_url(settings.database_url)
    return names
