"""A local stand-in for the Langfuse server, so tests run the real SDK against real HTTP.

It accepts OTLP/HTTP protobuf at ``/api/public/otel/v1/traces`` (gzip or not), decodes it with
``opentelemetry-proto`` and records every span; ``GET /api/public/projects`` names a project (for trace
URLs) and anything else the SDK calls gets ``200 {}``. ``mode`` switches it to answer 500s or to sleep
before answering, to play a failing or slow Langfuse.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

OTLP_PATH = "/api/public/otel/v1/traces"
PROJECT_ID = "proj-test"
Mode = Literal["ok", "error", "sleep"]


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    scope: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str | None:
        value = self.attributes.get("langfuse.observation.type")
        return str(value) if value is not None else None

    def json(self, key: str) -> Any:
        """An attribute the SDK sent JSON-encoded (usage, cost, model parameters, metadata values)."""
        raw = self.attributes.get(key)
        return json.loads(raw) if isinstance(raw, str) else raw

    def metadata(self, key: str) -> Any:
        return self.json(f"langfuse.observation.metadata.{key}")

    def trace_metadata(self, key: str) -> Any:
        return self.json(f"langfuse.trace.metadata.{key}")


class LangfuseReceiver:
    """Start with ``with LangfuseReceiver() as rx:``; ``rx.url`` is the base URL for the SDK."""

    def __init__(self, mode: Mode = "ok", sleep_s: float = 30.0) -> None:
        self.mode: Mode = mode
        self.sleep_s = sleep_s
        self.spans: list[ReceivedSpan] = []
        self.scores: list[dict[str, Any]] = []
        """Scores the SDK sent to POST /api/public/scores."""
        self.requests: list[tuple[str, str, int]] = []
        """(method, path, status) of every request answered."""
        self._lock = threading.Lock()
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                receiver._handle(self, "POST")

            def do_GET(self) -> None:
                receiver._handle(self, "GET")

            def do_PUT(self) -> None:
                receiver._handle(self, "PUT")

            def do_PATCH(self) -> None:
                receiver._handle(self, "PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="langfuse-receiver", daemon=True,
                                        kwargs={"poll_interval": 0.05})  # shutdown() waits one poll

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> LangfuseReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._release.set()  # wake sleeping handlers
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def _handle(self, http: BaseHTTPRequestHandler, method: str) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        path = http.path.split("?", 1)[0]
        if self.mode == "sleep":
            self._release.wait(self.sleep_s)
        if self.mode == "error":
            self._reply(http, method, path, 500, b'{"message": "boom"}', "application/json")
            return
        if method == "POST" and path == OTLP_PATH:
            if http.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            self._record(body)
            payload = ExportTraceServiceResponse().SerializeToString()
            self._reply(http, method, path, 200, payload, "application/x-protobuf")
        elif method == "POST" and path == "/api/public/scores":
            sent = json.loads(body or b"[]")
            with self._lock:
                self.scores.extend(sent if isinstance(sent, list) else [sent])
            self._reply(http, method, path, 200, b"{}", "application/json")
        elif method == "GET" and path == "/api/public/projects":
            data = {"data": [{"id": PROJECT_ID, "name": "test", "organization": {"id": "org", "name": "org"},
                              "metadata": {}}]}
            self._reply(http, method, path, 200, json.dumps(data).encode(), "application/json")
        else:
            self._reply(http, method, path, 200, b"{}", "application/json")

    def _reply(self, http: BaseHTTPRequestHandler, method: str, path: str, status: int, payload: bytes,
               content_type: str) -> None:
        with self._lock:
            self.requests.append((method, path, status))
        try:
            http.send_response(status)
            http.send_header("Content-Type", content_type)
            http.send_header("Content-Length", str(len(payload)))
            http.end_headers()
            http.wfile.write(payload)
        except OSError:
            pass  # the client gave up (timeout) while we slept

    def _record(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        name=span.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        scope=scope_spans.scope.name,
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    ))
        with self._lock:
            self.spans.extend(spans)
