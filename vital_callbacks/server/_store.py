"""The store the HTTP API and the UI read: an engine made on first use, and the one error policy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException, status
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from vital_callbacks import analytics

logger = logging.getLogger("vital_callbacks")
_T = TypeVar("_T")


class Store:
    """The engine, made on first use so that mounting the router never opens a connection."""

    def __init__(self, engine: Engine | None, url: str | None) -> None:
        self._engine, self._url = engine, url

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = analytics.reader_engine(self._url)
        return self._engine

    def run(self, query: Callable[[Engine], _T]) -> _T:
        try:
            return query(self.engine())
        except SQLAlchemyError as exc:
            behind = self._schema_behind() if _missing_schema(exc) else None
            if behind is not None:  # a store not yet upgraded: say so, once per query, no traceback
                logger.warning("vital-callbacks API: %s", behind)
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, behind) from None
            logger.exception("vital-callbacks API: query failed")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the metrics store is unavailable") from None
        except ValueError as exc:  # an analytics precondition; parameters are validated before this
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None

    def _schema_behind(self) -> str | None:
        """Why a query failed when the store's schema is older than this version's (else ``None``)."""
        from vital_callbacks.store import migrate

        try:
            url = self.engine().url.render_as_string(hide_password=False)
            current, head = migrate.current(url), migrate.head()
        except Exception:
            return None
        if current == head:
            return None
        return (f"the store's schema is at revision {current or 'none'}, older than this version's ({head}); "
                "run `vital-callbacks db upgrade`")


def _missing_schema(exc: SQLAlchemyError) -> bool:
    """A table or column the query needs is not there (SQLite's "no such", PostgreSQL's "does not
    exist"): only then is the schema version worth a look (a store that hangs gets no second query)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return "no such table" in text or "no such column" in text or "does not exist" in text
