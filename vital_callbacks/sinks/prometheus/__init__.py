"""Prometheus: the sink, its metric families, and the ``/metrics`` exposition (server, ASGI, WSGI)."""

from vital_callbacks.sinks.prometheus.exposition import make_asgi_app, make_wsgi_app, start_server
from vital_callbacks.sinks.prometheus.sink import PrometheusSink

__all__ = ["PrometheusSink", "make_asgi_app", "make_wsgi_app", "start_server"]
