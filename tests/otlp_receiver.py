"""A minimal OTLP/HTTP (protobuf) receiver on 127.0.0.1, for tests of what really goes over the wire.

It decodes ``/v1/traces`` and ``/v1/metrics`` requests with ``opentelemetry-proto`` (the collector's
own message types) and keeps them; ``fail_next`` makes it refuse that many requests with
``fail_status`` (400 by default: not retried by the exporter itself, so the pipeline's retry shows).
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span, in the shape tests compare against the SDK's ``ReadableSpan``."""

    name: str
    trace_id: int
    span_id: int
    parent_span_id: int | None
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, Any]
    status_code: int
    scope: str
    resource: dict[str, Any]


def any_value(value: AnyValue) -> Any:
    """A protobuf ``AnyValue`` as the Python value the SDK was given (arrays as tuples)."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(any_value(v) for v in value.array_value.values)
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


class OTLPReceiver:
    """``with OTLPReceiver() as r:`` then point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at ``r.endpoint``."""

    def __init__(self) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.fail_next = 0
        self.fail_status = 400
        self.failed = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True,
                                        kwargs={"poll_interval": 0.05})  # shutdown() waits one poll

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.traces)
        return list(_spans(requests))

    def metric_names(self) -> set[str]:
        with self._lock:
            requests = list(self.metrics)
        return {m.name for r in requests for rm in r.resource_metrics for sm in rm.scope_metrics
                for m in sm.metrics}

    def histogram(self, name: str) -> list[tuple[dict[str, Any], int, float]]:
        """(attributes, count, sum) of each point of histogram ``name`` in the latest request carrying it
        (points are cumulative, so the latest request holds the totals)."""
        with self._lock:
            requests = list(self.metrics)
        for request in reversed(requests):
            points = [(_attributes(p.attributes), p.count, p.sum)
                      for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                      if m.name == name for p in m.histogram.data_points]
            if points:
                return points
        return []

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                with receiver._lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        receiver.failed += 1
                        self.send_response(receiver.fail_status)
                        self.end_headers()
                        return
                    if self.path == "/v1/traces":
                        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                        receiver.traces.append(request)
                        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                    elif self.path == "/v1/metrics":
                        metrics_request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                        receiver.metrics.append(metrics_request)
                        reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                    else:
                        self.send_response(404)
                        self.end_headers()
                        return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _spans(requests: list[trace_service_pb2.ExportTraceServiceRequest]) -> Iterator[ReceivedSpan]:
    for request in requests:
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    yield ReceivedSpan(
                        name=span.name,
                        trace_id=int.from_bytes(span.trace_id, "big"),
                        span_id=int.from_bytes(span.span_id, "big"),
                        parent_span_id=int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else None,
                        kind=span.kind,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        attributes=_attributes(span.attributes),
                        status_code=span.status.code,
                        scope=scope_spans.scope.name,
                        resource=resource,
                    )
