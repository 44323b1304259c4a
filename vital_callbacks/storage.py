"""Synchronous read access to the SQL store, for analytics, reports and budgets.

Writes to PostgreSQL go through asyncpg on the sink's worker; reads from the CLI, the API and the
budget guard are plain synchronous queries, so PostgreSQL URLs are read with psycopg.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import create_engine

from vital_callbacks.sinks.sql import make_engine


def reader_url(url: str) -> str:
    """The synchronous-driver form of a store URL (``postgresql[+asyncpg]://`` -> ``postgresql+psycopg://``)."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def reader_engine(url: str) -> Engine:
    """An engine for queries against the store named by ``url``."""
    sync = reader_url(url)
    if sync.startswith("sqlite"):
        return make_engine(sync)
    return create_engine(sync, pool_pre_ping=True, pool_size=2, max_overflow=2)
