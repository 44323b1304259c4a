"""The metrics HTTP API: a FastAPI router to mount in your app, or a standalone app (`vital-callbacks serve`).

    from vital_callbacks.server import metrics_router
    app.include_router(metrics_router(), prefix="/vital")

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` with a token from
``VITAL_API_TOKENS``; a tenant's token only ever sees that tenant.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from vital_callbacks.server._auth import Principal, TokenTable
from vital_callbacks.server._routes import api_router, metrics_router, token_table, utcnow
from vital_callbacks.server._store import Store


def create_app(engine: Engine | None = None, *, database_url: str | None = None,
               tokens: TokenTable | str | None = None, clock: Callable[[], datetime] | None = None,
               ui: bool | None = None, budgets_file: Path | None = None,
               budget_redis_url: str | None = None) -> FastAPI:
    """A FastAPI app serving :func:`metrics_router` at the root, with OpenAPI docs at ``/docs``, and the
    web UI at ``/`` (``ui``: default on when the ``ui`` extra, Jinja2, is installed)."""
    app = FastAPI(title="vital-callbacks metrics", version="1", docs_url="/docs", redoc_url=None,
                  description="Cost, token, latency and quality metrics of LangChain / LangGraph runs, per tenant.")
    store, table, now = Store(engine, database_url), token_table(tokens), clock or utcnow
    app.include_router(api_router(store, table, now))
    if ui is None:
        ui = importlib.util.find_spec("jinja2") is not None
    if ui:
        from vital_callbacks.server.ui import ui_router

        app.include_router(ui_router(store, table, now, budgets_file, budget_redis_url))

    @app.exception_handler(Exception)
    async def _internal(_: Request, __: Exception) -> JSONResponse:  # never a stack trace to the client
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


__all__ = ["Principal", "TokenTable", "create_app", "metrics_router"]
