"""OpenTelemetry sink: events as spans and metrics named by the GenAI semantic conventions.

Events arrive when runs *end*, children before parents, so a span cannot be started when its run
starts. Instead every span is built after the fact with explicit start/end times and a parent context
derived from our ids: the trace id is the root run's UUID and a span id is the low 64 bits of the
run's UUID. A child can therefore name its parent's span id before the parent exists, and each span
is emitted as its event arrives, with nothing buffered. Attribute names come from the
``opentelemetry-semantic-conventions`` constants; cost and attribution travel as ``vital.*``.

Token counts are set as ``gen_ai.usage.*`` on ``chat`` spans only (the graph span carries its
totals as ``vital.usage.*``), so a backend that sums usage over a trace never counts a call twice.

``vital.cost.usd`` is only set where a price is known, never as 0 for a call we could not price: a
``chat`` span says ``vital.cost.unpriced`` (true for a call with tokens and no price), and the graph
span carries ``vital.unpriced_calls`` and ``vital.cost.is_lower_bound`` next to its priced sum.

Inside the application's own span (``tracer.start_as_current_span("POST /chat")``), a trace joins it:
the handler reads the current span at the trace's start (``Event.traceparent``), and every span of
the trace gets the application's trace id, the root span the application's span as its parent (and
its sampling decision).

Providers: the application's global tracer provider when one is set (its processors and exporters
deliver), else the sink's own, exporting over OTLP/HTTP as configured by the standard
``OTEL_EXPORTER_OTLP_*`` variables (``OTEL_TRACES_EXPORTER=none`` turns it off). Metrics go to the
application's global meter provider when it set one; with none, they are off unless asked for
(``OTEL_METRICS_EXPORTER=otlp``, an ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT``, ``VITAL_OTEL_METRICS``):
an application that set up tracing alone gets no metrics pushed at ``localhost:4318``. With its own
tracer provider the sink exports the spans of a batch itself, inside ``export``, so an unreachable
collector reaches the pipeline's retries and drop counts. The sink's own providers are shut down by
the sink alone (not also by the SDK's exit hook); the application's, never.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as gm
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from vital_callbacks.core.events import Event, GraphRun, LLMCall, NodeRun, RetrieverCall, ToolCall
from vital_callbacks.core.turns import taking_turns
from vital_callbacks.providers.names import SEMCONV_PROVIDER_NAMES
from vital_callbacks.sinks.base import ExportResult, Sink

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from vital_callbacks.core.settings import Settings

logger = logging.getLogger("vital_callbacks")

SCOPE = "vital_callbacks"
_MASK64 = (1 << 64) - 1
# Bucket boundaries the GenAI semantic conventions recommend for their client histograms.
TOKEN_BUCKETS = [float(4**i) for i in range(14)]
DURATION_BUCKETS = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
def _as_int(value: str, bits: int) -> int:
    """Our id as an OTel id: the UUID's integer (low bits for a span id), else a stable hash."""
    try:
        number = uuid.UUID(value).int
    except ValueError:
        number = int.from_bytes(hashlib.blake2b(value.encode(), digest_size=16).digest(), "big")
    number &= (1 << bits) - 1
    return number or 1  # zero is the invalid id


def trace_id_of(trace_id: str) -> int:
    """The OTel trace id of one of our traces (the root run's UUID as 128 bits)."""
    return _as_int(trace_id, 128)


def span_id_of(run_id: str) -> int:
    """The OTel span id of one of our runs (the low 64 bits of its UUID)."""
    return _as_int(run_id, 64)


class _RunIds(threading.local, IdGenerator):
    """Hands the SDK tracer the ids we derived, one span at a time, per thread. One shared instance,
    because a provider caches one tracer per scope and every sink on that provider uses it."""

    trace_id = 0
    span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return False


_RUN_IDS = _RunIds()


class _Collect(SpanProcessor):
    """Collects the spans ended on this thread, so ``export`` can ship a batch's spans itself."""

    def __init__(self) -> None:
        self._local = threading.local()

    def start(self) -> None:
        self._local.spans = []

    def take(self) -> list[ReadableSpan]:
        spans: list[ReadableSpan] = getattr(self._local, "spans", [])
        self._local.spans = None
        return spans

    def on_end(self, span: ReadableSpan) -> None:
        spans = getattr(self._local, "spans", None)
        if spans is not None:
            spans.append(span)


def _is_unset(provider: object) -> bool:
    """True for the API's placeholder providers (nothing configured by the application)."""
    return type(provider).__name__ in {"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider",
                                       "NoOpMeterProvider"}


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "vital-callbacks"}))
    return resource


def _signal_off(signal: str) -> bool:
    return os.environ.get(f"OTEL_{signal}_EXPORTER", "").strip().lower() == "none"


def _metrics_configured() -> bool:
    """Whether the environment points OTLP metrics somewhere (with no meter provider of the
    application's): an exporter named, or an endpoint set. The SDK's own default (``otlp`` to
    ``localhost:4318``) is not taken as asked for: an application that set up tracing alone would get
    our metrics pushed at nothing, with "connection refused" on every export."""
    exporters = {e.strip().lower() for e in os.environ.get("OTEL_METRICS_EXPORTER", "").split(",")}
    endpoints = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return "otlp" in exporters or any(os.environ.get(name, "").strip() for name in endpoints)


def _parse_traceparent(value: str) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a W3C ``traceparent`` we wrote; ``None`` if it is not one."""
    parts = value.split("-")
    if len(parts) != 4:
        return None
    try:
        return int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None


class OTelSink(Sink):
    """Spans and GenAI metrics for Tempo, Jaeger, Phoenix, Datadog or any OTLP backend."""

    name = "otel"
    joins_app_trace = True

    def __init__(self, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None, *, use_global: bool = True,
                 own_metrics: bool | None = None) -> None:
        self._own_tracer: SDKTracerProvider | None = None
        self._own_meter: SDKMeterProvider | None = None
        self._span_exporter: SpanExporter | None = None
        self._collect: _Collect | None = None
        self._shut = False
        if tracer_provider is None and use_global and not _is_unset(trace.get_tracer_provider()):
            tracer_provider = trace.get_tracer_provider()
        if tracer_provider is None:
            tracer_provider = self._build_tracer_provider()
        if meter_provider is None and use_global and own_metrics is not False \
                and not _is_unset(metrics.get_meter_provider()):
            meter_provider = metrics.get_meter_provider()
        if meter_provider is None:
            wanted = own_metrics if own_metrics is not None else _metrics_configured()
            if not wanted:
                logger.info("vital-callbacks: no OpenTelemetry metrics (the application set no meter provider "
                            "and no OTLP endpoint is configured; VITAL_OTEL_METRICS=true exports them anyway)")
            meter_provider = self._build_meter_provider() if wanted else metrics.NoOpMeterProvider()
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self._tracer = tracer_provider.get_tracer(SCOPE)
        self._deterministic = hasattr(self._tracer, "id_generator")
        if self._deterministic:
            self._tracer.id_generator = _RUN_IDS  # type: ignore[attr-defined]
        elif not isinstance(self._tracer, trace.NoOpTracer):
            logger.warning("vital-callbacks: tracer provider %s is not the OpenTelemetry SDK's; span ids "
                           "cannot follow run ids, so spans will not nest", type(tracer_provider).__name__)
        meter = meter_provider.get_meter(SCOPE)
        self._token_usage = meter.create_histogram(
            gm.GEN_AI_CLIENT_TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS)
        self._duration = meter.create_histogram(
            gm.GEN_AI_CLIENT_OPERATION_DURATION, unit="s", description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._first_chunk = meter.create_histogram(
            gm.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self._retry: tuple[tuple[str, ...], list[ReadableSpan]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        return cls(use_global=settings.otel_use_global, own_metrics=settings.otel_metrics)

    def _build_tracer_provider(self) -> trace.TracerProvider:
        if _signal_off("TRACES"):
            return trace.NoOpTracerProvider()
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace import TracerProvider

        self._own_tracer = TracerProvider(resource=_resource(), shutdown_on_exit=False)
        self._collect = _Collect()
        self._own_tracer.add_span_processor(self._collect)
        self._span_exporter = OTLPSpanExporter()
        return self._own_tracer

    def _build_meter_provider(self) -> metrics.MeterProvider:
        if _signal_off("METRICS"):
            return metrics.NoOpMeterProvider()
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        self._own_meter = MeterProvider(metric_readers=[reader], resource=_resource(), shutdown_on_exit=False)
        return self._own_meter

    # -- export ------------------------------------------------------------------------------------
    def export(self, batch: Sequence[Event]) -> ExportResult:
        with self._lock:
            key = tuple(e.run_id for e in batch)
            if self._retry is not None and self._retry[0] == key:
                spans = self._retry[1]  # the same batch again: resend its spans, do not re-count metrics
            else:
                self._retry = None
                if self._collect is not None:
                    self._collect.start()
                for event in taking_turns(batch):
                    try:
                        self._emit(event)
                    except Exception:
                        logger.exception("vital-callbacks: could not turn %s %s into a span; skipped",
                                         event.kind, event.run_id)
                spans = self._collect.take() if self._collect is not None else []
            if self._span_exporter is None or not spans:
                return ExportResult.SUCCESS
            from opentelemetry.sdk.trace.export import SpanExportResult

            if self._span_exporter.export(spans) is SpanExportResult.SUCCESS:
                self._retry = None
                return ExportResult.SUCCESS
            self._retry = (key, spans)
            return ExportResult.FAILURE

    def _emit(self, event: Event) -> None:
        spec = _span_spec(event)
        if spec is None:
            return
        name, kind, attributes = spec
        parent_id = event.parent_run_id or (event.trace_id if event.trace_id != event.run_id else None)
        app = _parse_traceparent(event.traceparent) if event.traceparent else None
        trace_id, flags = (app[0], app[2]) if app is not None else (trace_id_of(event.trace_id), TraceFlags.SAMPLED)
        context = Context()
        parent_span = span_id_of(parent_id) if parent_id is not None else app[1] if app is not None else None
        if parent_span is not None:
            parent = SpanContext(trace_id, parent_span, is_remote=False, trace_flags=TraceFlags(flags))
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent), context)
        _RUN_IDS.trace_id = trace_id
        _RUN_IDS.span_id = span_id_of(event.run_id)
        end_ns = int(event.end_time * 1e9)
        span = self._tracer.start_span(name, context=context, kind=kind, attributes=attributes,
                                       start_time=int(event.start_time * 1e9))
        if event.status == "error":
            span.set_status(Status(StatusCode.ERROR, event.error_message))
            span.add_event("exception", {"exception.type": event.error_type or "",
                                         "exception.message": event.error_message or ""}, timestamp=end_ns)
        span.end(end_time=end_ns)
        self._record_metrics(event, attributes)

    def _record_metrics(self, event: Event, span_attributes: dict[str, Any]) -> None:
        operation = span_attributes.get(ga.GEN_AI_OPERATION_NAME)
        if operation is None:
            return
        keys = (ga.GEN_AI_OPERATION_NAME, ga.GEN_AI_PROVIDER_NAME, ga.GEN_AI_REQUEST_MODEL,
                ga.GEN_AI_RESPONSE_MODEL, ga.GEN_AI_TOOL_NAME, ga.GEN_AI_AGENT_NAME, ERROR_TYPE)
        labels = {k: span_attributes[k] for k in keys if k in span_attributes}
        self._duration.record(event.duration_s, labels)
        if not isinstance(event, LLMCall):
            return
        if event.token_source != "none":
            self._token_usage.record(event.usage.input, {**labels, ga.GEN_AI_TOKEN_TYPE: "input"})
            self._token_usage.record(event.usage.output, {**labels, ga.GEN_AI_TOKEN_TYPE: "output"})
        if event.time_to_first_token_s is not None:
            self._first_chunk.record(event.time_to_first_token_s, labels)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Only the providers the sink built; the application flushes its own."""
        ok = True
        if self._own_tracer is not None:
            ok = self._own_tracer.force_flush(int(timeout_s * 1000)) and ok
        if self._own_meter is not None:
            ok = self._own_meter.force_flush(int(timeout_s * 1000)) and ok
        return ok

    def shutdown(self, timeout_s: float = 10.0) -> None:
        if self._shut:
            return
        self._shut = True
        if self._own_tracer is not None:
            self._own_tracer.shutdown()
        if self._own_meter is not None:
            self._own_meter.shutdown()


# -- events -> (span name, kind, attributes) ---------------------------------------------------------
def _common(event: Event) -> dict[str, Any]:
    attributes: dict[str, Any] = {"vital.run_id": event.run_id, "vital.trace_id": event.trace_id,
                                  "vital.kind": event.kind, "vital.status": event.status}
    for key in ("tenant_id", "user_id", "session_id", "graph", "subgraph", "node", "thread_id"):
        value = getattr(event, key)
        if value is not None:
            attributes[f"vital.{key}"] = value
    if event.tags:
        attributes["vital.tags"] = list(event.tags)
    if event.status == "error":
        attributes[ERROR_TYPE] = event.error_type or "_OTHER"
    return attributes


def _span_spec(event: Event) -> tuple[str, SpanKind, dict[str, Any]] | None:
    attributes = _common(event)
    if isinstance(event, LLMCall):
        return _llm(event, attributes)
    if isinstance(event, GraphRun):
        agent = event.graph or event.name
        attributes[ga.GEN_AI_OPERATION_NAME] = "invoke_agent"
        attributes[ga.GEN_AI_AGENT_NAME] = agent
        if event.session_id is not None:
            attributes[ga.GEN_AI_CONVERSATION_ID] = event.session_id
        attributes.update(_usage("vital.usage", event.usage))
        if event.cost_usd is not None:
            attributes["vital.cost.usd"] = float(event.cost_usd)
        attributes.update({"vital.llm_calls": event.llm_calls, "vital.unpriced_calls": event.unpriced_calls,
                           "vital.cost.is_lower_bound": event.unpriced_calls > 0,
                           "vital.interrupts": event.interrupts, "vital.resumed": event.resumed})
        return f"invoke_agent {agent}", SpanKind.INTERNAL, attributes
    if isinstance(event, NodeRun):
        if event.step is not None:
            attributes["vital.step"] = event.step
        if event.checkpoint_ns is not None:
            attributes["vital.checkpoint_ns"] = event.checkpoint_ns
        return event.node or "node", SpanKind.INTERNAL, attributes
    if isinstance(event, ToolCall):
        attributes[ga.GEN_AI_OPERATION_NAME] = "execute_tool"
        attributes[ga.GEN_AI_TOOL_NAME] = event.name
        if event.input is not None:
            attributes[ga.GEN_AI_TOOL_CALL_ARGUMENTS] = event.input
        if event.output is not None:
            attributes[ga.GEN_AI_TOOL_CALL_RESULT] = event.output
        return f"execute_tool {event.name}", SpanKind.INTERNAL, attributes
    if isinstance(event, RetrieverCall):
        attributes[ga.GEN_AI_OPERATION_NAME] = "retrieval"
        attributes["vital.retriever.name"] = event.name
        attributes["vital.retriever.documents"] = event.documents
        if event.query is not None:
            attributes[ga.GEN_AI_RETRIEVAL_QUERY_TEXT] = event.query
        return f"retrieval {event.name}", SpanKind.CLIENT, attributes
    return None


def _usage(prefix: str, usage: Any) -> dict[str, int]:
    return {f"{prefix}.input_tokens": usage.input, f"{prefix}.output_tokens": usage.output,
            f"{prefix}.total_tokens": usage.total, f"{prefix}.cache_read_tokens": usage.cache_read,
            f"{prefix}.cache_write_tokens": usage.cache_write, f"{prefix}.reasoning_tokens": usage.reasoning}


def _llm(event: LLMCall, attributes: dict[str, Any]) -> tuple[str, SpanKind, dict[str, Any]]:
    attributes[ga.GEN_AI_OPERATION_NAME] = "chat"
    if event.provider is not None:
        attributes[ga.GEN_AI_PROVIDER_NAME] = SEMCONV_PROVIDER_NAMES.get(event.provider, event.provider)
        attributes["vital.provider"] = event.provider
    requested = event.requested_model or event.model
    if requested is not None:
        attributes[ga.GEN_AI_REQUEST_MODEL] = requested
    if event.model is not None:
        attributes[ga.GEN_AI_RESPONSE_MODEL] = event.model
    if event.temperature is not None:
        attributes[ga.GEN_AI_REQUEST_TEMPERATURE] = event.temperature
    if event.max_tokens is not None:
        attributes[ga.GEN_AI_REQUEST_MAX_TOKENS] = event.max_tokens
    attributes[ga.GEN_AI_REQUEST_STREAM] = event.streamed
    if event.session_id is not None:
        attributes[ga.GEN_AI_CONVERSATION_ID] = event.session_id
    if event.token_source != "none":
        usage = event.usage
        attributes[ga.GEN_AI_USAGE_INPUT_TOKENS] = usage.input
        attributes[ga.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output
        attributes[ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read
        attributes[ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write
        attributes[ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning
        attributes["vital.usage.total_tokens"] = usage.total
        attributes["vital.usage.cache_write_1h_tokens"] = usage.cache_write_1h
    attributes["vital.token_source"] = event.token_source
    if event.finish_reason is not None:
        attributes[ga.GEN_AI_RESPONSE_FINISH_REASONS] = [event.finish_reason]
    if event.time_to_first_token_s is not None:
        attributes[ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = event.time_to_first_token_s
    if event.cost is not None:
        attributes["vital.cost.usd"] = float(event.cost.total)
        attributes["vital.cost.input_usd"] = float(event.cost.input)
        attributes["vital.cost.output_usd"] = float(event.cost.output)
        attributes["vital.cost.source"] = event.cost.source
        if event.cost.detail:
            attributes["vital.cost.detail"] = event.cost.detail
    if event.service_tier is not None:
        attributes["vital.service_tier"] = event.service_tier
    attributes["vital.cost.unpriced"] = event.cost is None and event.token_source != "none"
    attributes["vital.cache_hit"] = event.cache_hit
    if event.saved_cost is not None:
        attributes["vital.saved_cost.usd"] = float(event.saved_cost)
    if event.prompt is not None:
        attributes["vital.prompt"] = event.prompt
    if event.completion is not None:
        attributes["vital.completion"] = event.completion
    name = f"chat {requested}" if requested else "chat"
    return name, SpanKind.CLIENT, attributes
