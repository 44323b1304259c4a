"""The SQL store's writers: SQLAlchemy (SQLite by default) and PostgreSQL through asyncpg."""

from vital_callbacks.sinks.sql.sink import SQLSink

__all__ = ["SQLSink"]
