"""The metrics HTTP API: a FastAPI router to mount in your app, or a standalone app (`vital-callbacks serve`).

    from vital_callbacks.server import metrics_router
    app.include_router(metrics_router(), prefix="/vital")

Every endpoint but ``/healthz`` needs ``Authorization: Bearer <token>`` with a token from
``VITAL_API_TOKENS``; a tenant's token only ever sees that tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine

from vital_callbacks.server._auth import Principal, TokenTable
from vital_callbacks.server._routes import metrics_router


def create_app(engine: Engine | None = None, *, database_url: str | None = None,
               tokens: TokenTable | str | None = None, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """A FastAPI app serving :func:`metrics_router` at the root, with OpenAPI docs at ``/docs``."""
    app = FastAPI(title="vital-callbacks metrics", version="1", docs_url="/docs", redoc_url=None,
                  description="Cost, token, latency and quality metrics of LangChain / LangGraph runs, per tenant.")
    app.include_router(metrics_router(engine, database_url=database_url, tokens=tokens, clock=clock))

    @app.exception_handler(Exception)
    async def _internal(_: Request, __: Exception) -> JSONResponse:  # never a stack trace to the client
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


__all__ = ["Principal", "TokenTable", "create_app", "metrics_router"]
