"""The ``store`` fixture: one migrated SQL store per test, on SQLite and on PostgreSQL.

Tests that take ``store`` run once per database with the same assertions; rows are read back as
plain dicts with timezone-aware datetimes, whatever the driver returns.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

from tests import pg_cluster
from tests.conftest import require_service
from vital_callbacks import Settings
from vital_callbacks.sinks.logs import LOGGER_NAME
from vital_callbacks.store import migrate as db
from vital_callbacks.store.schema import metadata


@dataclass
class Store:
    kind: str
    """``sqlite`` or ``postgresql``."""
    url: str
    spill_dir: Path

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {"database_url": self.url, "sinks": ["sql"], "spill_dir": self.spill_dir,
                                  "flush_interval_s": 0.05, "database_auto_migrate": False}
        values.update(overrides)
        return Settings(**values)

    def rows(self, table: str, order_by: str = "run_id") -> list[dict[str, Any]]:
        if self.kind == "postgresql":
            raw = pg_cluster.query(self.url, f"SELECT * FROM {table} ORDER BY {order_by}")
        else:  # through the table object, so SQLAlchemy turns SQLite's text and numbers back into types
            sa_table = metadata.tables[table]
            engine = create_engine(self.url)
            try:
                with engine.connect() as conn:
                    result = conn.execute(select(sa_table).order_by(sa_table.c[order_by]))
                    raw = [dict(r._mapping) for r in result]
            finally:
                engine.dispose()
        return [{k: _aware(v) for k, v in row.items()} for row in raw]

    def count(self, table: str, what: str = "*") -> int:
        """``COUNT(what)``: pass ``"DISTINCT run_id"`` to count distinct ids."""
        return self._scalar(f"SELECT COUNT({what}) FROM {table}")

    def _scalar(self, sql: str) -> int:
        if self.kind == "postgresql":
            return int(next(iter(pg_cluster.query(self.url, sql)[0].values())))
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # SQLite stores UTC without an offset
    return value


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        db.upgrade(url)
        yield Store("sqlite", url, tmp_path / "spill")
        return
    require_service(pg_cluster.reachable(), f"no PostgreSQL at {db.mask_url(pg_cluster.SHARED_URL)}")
    with pg_cluster.fresh_database() as url:
        db.upgrade(url)
        yield Store("postgresql", url, tmp_path / "spill")


class Lines(logging.Handler):
    """Keeps each record's formatted line, like a shipper reading the process's output."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(self.format(r)) for r in self.records]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
