"""Database URLs and engines: one place that knows how we connect, and how a URL may be logged.

``postgresql://`` means asyncpg (the PostgreSQL sink drives it itself); anything else is a
synchronous SQLAlchemy engine, SQLite in WAL mode so readers never block the writer. A URL is only
ever logged through :func:`mask_url`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

SUPPORTED = ("sqlite", "postgresql")
"""URL schemes the store is tested on."""


class UnsupportedDatabaseError(ValueError):
    """A ``VITAL_DATABASE_URL`` the store cannot write to (an unknown scheme, or no driver for it)."""


def mask_url(url: str | Engine) -> str:
    """The URL with its password replaced by ``***``: the only form of a URL we ever log."""
    try:
        parsed = url.url if isinstance(url, Engine) else make_url(url)
    except ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def normalize_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) mean asyncpg, the driver we support for PostgreSQL."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+asyncpg://" + url[len("postgresql://"):]
    return url


def is_postgres(url: str) -> bool:
    return normalize_url(url).startswith("postgresql")


def check_url(url: str) -> None:
    """Raise :class:`UnsupportedDatabaseError` for a URL the store does not support (``mysql://``)."""
    try:
        backend = make_url(normalize_url(url)).get_backend_name()
    except ArgumentError as exc:
        raise UnsupportedDatabaseError(f"VITAL_DATABASE_URL is not a database URL: {mask_url(url)}") from exc
    if backend not in SUPPORTED:
        raise UnsupportedDatabaseError(
            f"VITAL_DATABASE_URL={mask_url(url)}: {backend} is not supported; use sqlite:///path.db or "
            "postgresql://user@host/db")


def is_memory(url: str) -> bool:
    """``sqlite://`` or ``sqlite:///:memory:``: one database per connection unless it is shared."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


_NOTHING: dict[object, None] = {}


def bind_none_directly() -> None:
    """Let sqlite3 bind ``None`` without looking for a way to adapt it.

    sqlite3 binds ``int``, ``float``, ``str`` and ``bytearray`` of their exact type as they are; any other
    value, ``None`` included, first goes through its adapter lookup, which for ``None`` fails by way of
    attribute lookups, one of which formats an error only to throw it away: most of the binding of a
    row with empty columns (see ``benchmarks/RESULTS.md``). Registered for ``None``, the lookup finds
    an adapter, a C method that gives ``None`` back, and NULL is bound as before. The registry is
    process-wide: only ``None`` is added, it binds as it always did (``sqlite3.adapt(None)`` now gives
    ``None`` back instead of raising), and an adapter for ``None`` that the application registered
    itself is left in place."""
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _NOTHING.get)


def make_engine(url: str) -> Engine:
    """A synchronous engine; SQLite in WAL mode so readers never block the writer.

    An in-memory SQLite URL gets one connection shared by every thread (``StaticPool``), so the
    writer's worker thread and a reader see the same database."""
    if url.startswith("sqlite"):
        bind_none_directly()
        if is_memory(url):
            return create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def sync_url(url: str) -> str:
    """The URL for a synchronous engine on a plain thread: every PostgreSQL spelling as psycopg 3 (the
    writer's asyncpg needs an event loop)."""
    for prefix in ("postgres://", "postgresql://", "postgresql+asyncpg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def reader_engine(url: str | None = None) -> Engine:
    """A synchronous, read-only engine for the store at ``url`` (default: ``VITAL_DATABASE_URL``).

    The writer speaks asyncpg; analytics run on plain threads (CLI, notebooks, FastAPI's pool), so
    every PostgreSQL spelling is mapped to psycopg 3 here, in one place. PostgreSQL sessions are
    read-only with a statement timeout, so the API cannot be used to write or to hog the server.
    """
    if url is None:
        from vital_callbacks.core.settings import Settings

        url = Settings().database_url
    url = sync_url(url)
    if url.startswith("postgresql+psycopg://"):
        options = "-c default_transaction_read_only=on -c statement_timeout=30000"
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=10,
                             connect_args={"options": options, "application_name": "vital-callbacks-analytics",
                                           "connect_timeout": 10})
    return make_engine(url)


__all__ = [
    "UnsupportedDatabaseError",
    "check_url",
    "is_memory",
    "is_postgres",
    "make_engine",
    "mask_url",
    "normalize_url",
    "reader_engine",
    "sync_url",
]
