"""Everything the Langfuse sink needs from the ``langfuse`` SDK (v3+, OpenTelemetry based) that its
public client API does not offer directly, kept in one place so an SDK upgrade touches one file.

Why each piece exists:

* :class:`SeededIds` - our events arrive when runs *end*, children before parents, so a child's parent
  span does not exist yet when the child is sent. Span ids derived from our run ids (and the trace id
  from our trace id) let every observation name its parent up front; nothing is buffered.
* :class:`CountingExporter` - the SDK exports on its own thread and swallows failures; wrapping the
  OTLP exporter (the documented ``span_exporter=`` hook) is the only place that sees the outcome, so
  undeliverable observations can be counted in ``vital_events_dropped_total{sink="langfuse"}``.
* :func:`open_client` - an isolated ``TracerProvider`` (no global OTel side effects, no exit hook of
  its own) and no SDK exit hook either, so interpreter exit goes through our bounded shutdown; the
  SDK's own exit flush waits on retries for many seconds when the host is down.
* :func:`run_bounded` - OpenTelemetry's ``force_flush`` ignores its timeout and exports on the calling
  thread; running it on a helper thread keeps our flush and shutdown within their deadlines.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langfuse import Langfuse
from langfuse import __version__ as langfuse_version
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

logger = logging.getLogger("vital_callbacks")

OTLP_PATH = "/api/public/otel/v1/traces"
RUN_ID_ATTRIBUTE = "langfuse.observation.metadata.run_id"
"""Set on every span we create; lets the exporter count only our observations."""


def trace_id_for(trace_id: str) -> str:
    """The Langfuse trace id (32 hex) of one of our trace ids; same as ``Langfuse.create_trace_id(seed=)``."""
    return Langfuse.create_trace_id(seed=trace_id)


def span_id_for(run_id: str) -> int:
    """The OTel span id of one of our run ids (the SDK's ``seed`` formula: sha256, first 8 bytes)."""
    return int.from_bytes(hashlib.sha256(run_id.encode("utf-8")).digest()[:8], "big") or 1


class SeededIds(IdGenerator):
    """Hands out the ids queued with :meth:`next` on this thread, else the wrapped generator's."""

    def __init__(self, fallback: IdGenerator | None = None) -> None:
        self.fallback = fallback or RandomIdGenerator()
        self._local = threading.local()

    def next(self, *, span_id: int, trace_id: int) -> None:
        self._local.span_id = span_id
        self._local.trace_id = trace_id

    def clear(self) -> None:
        self._local.span_id = None
        self._local.trace_id = None

    def generate_span_id(self) -> int:
        value: int | None = getattr(self._local, "span_id", None)
        if value is None:
            return self.fallback.generate_span_id()
        self._local.span_id = None
        return value

    def generate_trace_id(self) -> int:
        value: int | None = getattr(self._local, "trace_id", None)
        if value is None:
            return self.fallback.generate_trace_id()
        self._local.trace_id = None
        return value


class CountingExporter(SpanExporter):
    """Passes spans on and reports how many of ours were delivered or lost."""

    def __init__(self, inner: SpanExporter, on_result: Callable[[int, int], None]) -> None:
        self.inner = inner
        self._on_result = on_result  # (delivered, lost)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ours = sum(1 for s in spans if s.attributes and RUN_ID_ATTRIBUTE in s.attributes)
        try:
            result = self.inner.export(spans)
        except Exception:
            logger.exception("vital-callbacks: Langfuse export raised")
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self._on_result(ours, 0)
        else:
            self._on_result(0, ours)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def build_exporter(public_key: str, secret_key: str, base_url: str, timeout_s: float) -> OTLPSpanExporter:
    """The exporter the SDK would build itself (same endpoint, auth and headers, gzip)."""
    auth = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")
    headers = {
        "Authorization": f"Basic {auth}",
        "x-langfuse-sdk-name": "python",
        "x-langfuse-sdk-version": langfuse_version,
        "x-langfuse-public-key": public_key,
        "x-langfuse-ingestion-version": "4",
    }
    return OTLPSpanExporter(endpoint=base_url.rstrip("/") + OTLP_PATH, headers=headers, timeout=timeout_s,
                            compression=Compression.Gzip)


@dataclass
class Client:
    """An SDK client plus what we need to drive it."""

    langfuse: Langfuse
    tracer: otel_trace.Tracer
    ids: SeededIds
    provider: TracerProvider
    owned: bool
    """We created the SDK's per-public-key singleton, so we may shut it down; otherwise the app owns it."""


def open_client(*, public_key: str, secret_key: str, base_url: str, timeout_s: float, flush_interval_s: float,
                on_result: Callable[[int, int], None], environment: str | None = None,
                release: str | None = None) -> Client | None:
    """A Langfuse client whose spans carry our ids; ``None`` when the SDK disabled itself."""
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    exporter = CountingExporter(build_exporter(public_key, secret_key, base_url, timeout_s), on_result)
    client = Langfuse(public_key=public_key, secret_key=secret_key, base_url=base_url,
                      timeout=max(1, round(timeout_s)), flush_interval=flush_interval_s,
                      tracer_provider=provider, span_exporter=exporter, environment=environment, release=release)
    # The SDK's own tracer (what its create_event uses): its scope and public key pass the export filter.
    tracer = client._otel_tracer
    if not isinstance(tracer, SdkTracer):
        return None  # tracing disabled (LANGFUSE_TRACING_ENABLED=false, OTEL_SDK_DISABLED, missing keys)
    resources = client._resources
    owned = resources is not None and resources.tracer_provider is provider
    if resources is not None and owned:
        atexit.unregister(resources.shutdown)  # exit goes through our bounded shutdown instead
    else:
        provider.shutdown()
        logger.warning("vital-callbacks: a Langfuse client for this public key already exists in this "
                       "process; the sink shares it, and failed exports are not counted")
    ids = tracer.id_generator
    if not isinstance(ids, SeededIds):
        ids = tracer.id_generator = SeededIds(tracer.id_generator)
    return Client(client, tracer, ids, provider, owned)


def release(client: Client) -> None:
    """Shut the SDK down (if ours) and forget its singleton, so a later sink with this key starts fresh."""
    if not client.owned:
        client.langfuse.flush()
        return
    client.langfuse.shutdown()
    client.provider.shutdown()
    from langfuse._client.resource_manager import LangfuseResourceManager

    with LangfuseResourceManager._lock:
        key = client.langfuse._resources.public_key if client.langfuse._resources else None
        if key is not None and LangfuseResourceManager._instances.get(key) is client.langfuse._resources:
            del LangfuseResourceManager._instances[key]


def run_bounded(fn: Callable[[], object], timeout_s: float, what: str) -> bool:
    """Run ``fn`` on a daemon thread; True if it returned (truthy or None) within ``timeout_s``."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(fn())
        except Exception:
            logger.exception("vital-callbacks: Langfuse %s failed", what)
            outcome.append(False)

    thread = threading.Thread(target=target, name=f"vital-langfuse-{what}", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout_s))
    if thread.is_alive():
        logger.warning("vital-callbacks: Langfuse %s did not finish in %.1f s; continuing", what, timeout_s)
        return False
    return bool(outcome) and outcome[0] is not False


def flush_scores(langfuse: Any) -> None:
    """Deliver the scores the SDK queued: its score queue is separate from the span exporter we own.

    Uses the resource manager's ``_score_consumers`` / ``_score_queue`` (what ``Langfuse.flush`` does,
    minus the tracer-provider flush, which the sink does on its own provider).
    """
    resources = getattr(langfuse, "_resources", None)
    queue = getattr(resources, "_score_queue", None)
    if resources is None or queue is None:
        return
    for consumer in getattr(resources, "_score_consumers", []):
        if consumer.is_alive():
            consumer.wake()
    queue.join()
