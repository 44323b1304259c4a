"""Serving ``/metrics``: a standalone server, or ASGI / WSGI apps to mount in FastAPI or Flask.

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, e.g. under gunicorn or uvicorn workers) each
worker writes its values to files and an exposition must read all of them, so every entry point here
serves a fresh registry with a ``MultiProcessCollector`` instead of the in-process one.

    app.mount("/metrics", make_asgi_app())                         # FastAPI / Starlette
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})  # Flask
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client import make_asgi_app as _make_asgi_app
from prometheus_client import make_wsgi_app as _make_wsgi_app
from prometheus_client.multiprocess import MultiProcessCollector

from vital_callbacks.sinks.prometheus.metrics import multiprocess_mode

_servers: dict[int, tuple[str, Any]] = {}
_servers_lock = threading.Lock()


def exposition_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: ``registry`` in one process, every worker's files in multiprocess mode."""
    if multiprocess_mode():
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # type: ignore[no-untyped-call]
        return merged
    return registry if registry is not None else REGISTRY


def start_server(port: int, addr: str = "0.0.0.0", registry: CollectorRegistry | None = None) -> int:
    """Start the exposition server once per process and port (later calls are no-ops).

    Returns the bound port (useful with ``port=0``, which picks a free one).
    """
    with _servers_lock:
        if port in _servers and port != 0:
            return port
        server, _thread = start_http_server(port, addr, registry=exposition_registry(registry))
        bound = int(server.server_port)
        _servers[bound] = (addr, server)
        if port != 0:
            _servers[port] = (addr, server)
        return bound


def make_asgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """An ASGI app serving the exposition (mount it at ``/metrics``)."""
    return _make_asgi_app(registry=exposition_registry(registry))


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Callable[..., Any]:
    """A WSGI app serving the exposition (mount it at ``/metrics``)."""
    return _make_wsgi_app(registry=exposition_registry(registry))


__all__ = ["exposition_registry", "make_asgi_app", "make_wsgi_app", "start_server"]
