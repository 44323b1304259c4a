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
        except SQLAlchemyError:
            logger.exception("vital-callbacks API: query failed")
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the metrics store is unavailable") from None
        except ValueError as exc:  # an analytics precondition; parameters are validated before this
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
