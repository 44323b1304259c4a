"""The Langfuse sink: each root run becomes a Langfuse trace, sent by the installed ``langfuse`` SDK.

Events reach a sink when runs *end* (children first, the graph run last), already priced. Each event
becomes one observation the moment it arrives: its span id is derived from its ``run_id`` and its
parent's from ``parent_run_id``, so the tree assembles in Langfuse without buffering it here (see
:mod:`vital_callbacks.sinks.langfuse._sdk`). Observations carry our own timestamps, token counts and
cost, so Langfuse shows the same numbers as the SQL store and Prometheus.

Delivery is the SDK's batch exporter, in the background; the workflow never waits on Langfuse. What
the exporter cannot deliver is counted as dropped in the pipeline's stats (and so in
``vital_events_dropped_total{sink="langfuse"}``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from langfuse import propagate_attributes
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from vital_callbacks.core.events import Event, Score
from vital_callbacks.core.redaction import Redact, Redactor
from vital_callbacks.core.turns import taking_turns
from vital_callbacks.sinks.base import ExportResult, Sink, SinkContext
from vital_callbacks.sinks.langfuse import _observations as observations
from vital_callbacks.sinks.langfuse._sdk import (
    Client,
    flush_scores,
    open_client,
    run_bounded,
    span_id_for,
    trace_id_for,
)
from vital_callbacks.sinks.langfuse._sdk import release as release_client

if TYPE_CHECKING:
    from vital_callbacks.core.settings import Settings

logger = logging.getLogger("vital_callbacks")

_SDK_QUEUE_SIZE = 2048
"""OpenTelemetry's batch queue default; we refuse batches that would overflow it (it drops silently)."""
_IS_APP_ROOT = "langfuse.internal.is_app_root"
_SHUTDOWN_SHARE = 0.8

__all__ = ["LangfuseSink", "langfuse_trace_id", "sampled", "trace_id_for"]


def langfuse_trace_id(trace_id: str) -> str:
    """The Langfuse trace id for ``handler.last_trace_id`` (or any event's ``trace_id``)."""
    return trace_id_for(trace_id)


def sampled(trace_id: str, rate: float) -> bool:
    """Whether a trace is sent: OpenTelemetry's ``TraceIdRatioBased`` rule on the Langfuse trace id,
    so the decision is the same for every event of a trace, in any process."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    return int(trace_id_for(trace_id), 16) & 0xFFFF_FFFF_FFFF_FFFF < round(rate * 2**64)


class LangfuseSink(Sink):
    """Send runs to Langfuse as traces of spans, generations, tools and retrievers."""

    name = "langfuse"
    can_run_in_child_process = True

    def __init__(self, *, public_key: str | None = None, secret_key: str | None = None,
                 base_url: str | None = None, sample_rate: float = 1.0, capture_content: bool = False,
                 redact: Redact | None = None, timeout_s: float = 5.0, flush_interval_s: float = 1.0,
                 shutdown_timeout_s: float = 5.0, environment: str | None = None,
                 release: str | None = None) -> None:
        public_key = public_key or os.environ.get("LANGFUSE_PUBLIC_KEY")
        secret_key = secret_key or os.environ.get("LANGFUSE_SECRET_KEY")
        self.base_url = (base_url or os.environ.get("LANGFUSE_BASE_URL") or os.environ.get("LANGFUSE_HOST")
                         or "https://cloud.langfuse.com").rstrip("/")
        self.sample_rate = sample_rate
        self.capture_content = capture_content
        # Captured text arrives redacted by the pipeline (built-in patterns and VITAL_REDACTION_HOOK), as
        # every sink sees it; ``redact`` is only an extra step for this sink.
        self.redactor = Redactor(redact, builtin=False)
        self.shutdown_timeout_s = shutdown_timeout_s
        self.sent = 0
        self.sampled_out = 0
        self.delivered = 0
        self.undelivered = 0
        self._lock = threading.Lock()
        self._lost_at_flush = 0
        self._closed = False
        self._client: Client | None = None
        self._opened = False
        self._open_args: dict[str, Any] | None = None
        """What the SDK client is opened with, when a pipeline binds the sink (see :meth:`_open`): building
        it starts no SDK thread, so a sink built only to run in a process of its own costs this one nothing."""
        if not (public_key and secret_key):
            logger.error("vital-callbacks: Langfuse sink enabled without LANGFUSE_PUBLIC_KEY / "
                         "LANGFUSE_SECRET_KEY; its events are counted as dropped")
            return
        self._open_args = {"public_key": public_key, "secret_key": secret_key, "base_url": self.base_url,
                           "timeout_s": timeout_s, "flush_interval_s": flush_interval_s,
                           "on_result": self._on_export_result, "environment": environment, "release": release}

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        self._open()  # when the pipeline takes the sink, as the handler is built (before the app's own client)

    def _open(self) -> Client | None:
        """The SDK client, opened once: when a pipeline binds the sink (a sink built only to run in a process
        of its own is never bound here, so this process starts no SDK thread for it), else on first use."""
        with self._lock:
            if not self._opened and not self._closed and self._open_args is not None:
                self._client = open_client(**self._open_args)  # raises: tried again on the next use
                self._opened = True
                if self._client is None:
                    logger.warning("vital-callbacks: the Langfuse SDK disabled tracing; the sink drops its events")
            return self._client

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        return cls(sample_rate=settings.langfuse_sample_rate, capture_content=settings.capture_content,
                   flush_interval_s=settings.flush_interval_s,
                   shutdown_timeout_s=settings.shutdown_timeout_s)

    # -- reading back ------------------------------------------------------------------------------
    def trace_id(self, trace_id: str) -> str:
        """The Langfuse trace id of one of our trace ids (``handler.last_trace_id``)."""
        return trace_id_for(trace_id)

    def trace_url(self, trace_id: str) -> str | None:
        """The Langfuse UI link of a trace; asks the server for the project id once (a blocking call)."""
        client = self._open()
        if client is None:
            return None
        return client.langfuse.get_trace_url(trace_id=trace_id_for(trace_id))

    @property
    def in_flight(self) -> int:
        """Observations handed to the SDK whose export has not finished yet.

        Only known for a client this sink built: a client shared with another sink or with the app
        (same public key) reports its exports to its owner, so for a shared client this is 0.
        """
        client = self._client
        if client is not None and not client.owned:
            return 0
        with self._lock:
            return self.sent - self.delivered - self.undelivered

    # -- Sink --------------------------------------------------------------------------------------
    def prepare(self) -> None:
        self._open()  # a sink used without a pipeline's bind

    def export(self, batch: Sequence[Event]) -> ExportResult:
        client = self._open()
        if client is None:
            self._record_dropped(len(batch), "Langfuse client unavailable")
            return ExportResult.SUCCESS
        if self.in_flight + len(batch) > _SDK_QUEUE_SIZE:
            self.force_flush(self.shutdown_timeout_s)
            if self.in_flight + len(batch) > _SDK_QUEUE_SIZE:
                return ExportResult.FAILURE  # the pipeline retries with backoff, then counts the loss
        for event in taking_turns(batch):
            if not sampled(event.trace_id, self.sample_rate):
                self.sampled_out += 1
                continue
            if isinstance(event, Score):
                self._score(client, event)
                continue
            try:
                self._emit(client, event)
            except Exception:
                logger.exception("vital-callbacks: could not send %s %s to Langfuse", event.kind,
                                 event.run_id)
                self._record_dropped(1)
                continue
            with self._lock:
                self.sent += 1
        return ExportResult.SUCCESS

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        client = self._client
        if client is None or self._closed:
            return True
        def flush() -> None:
            if client.owned:
                client.provider.force_flush()
                flush_scores(client.langfuse)  # scores have their own queue, apart from the spans
            else:
                client.langfuse.flush()

        flushed = run_bounded(flush, timeout_s, "flush")
        with self._lock:
            lost, self._lost_at_flush = self.undelivered - self._lost_at_flush, self.undelivered
        return flushed and lost == 0 and self.in_flight == 0

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Flush and stop the SDK within the time the pipeline has left (``shutdown_timeout_s`` at most),
        even when Langfuse is down or slow."""
        with self._lock:
            client, already = self._client, self._closed
            self._closed = True  # a sink never opened stays closed: no client is opened after its shutdown
        if client is None or already:
            return
        # The pipeline's shutdown shares the same budget and must still read our count afterwards.
        budget = min(self.shutdown_timeout_s, timeout_s) * _SHUTDOWN_SHARE
        deadline = time.monotonic() + budget
        run_bounded(lambda: release_client(client), budget, "shutdown")
        # Whatever the SDK still holds now will not be delivered: count it as lost.
        lost = self.in_flight
        if lost > 0:
            with self._lock:
                self.undelivered += lost
            self._record_dropped(lost)
        logger.debug("vital-callbacks: Langfuse sink shut down, %.2f s to spare", deadline - time.monotonic())

    # -- internals ---------------------------------------------------------------------------------
    def _emit(self, client: Client, event: Event) -> None:
        obs = observations.describe(event, self.redactor if self.capture_content else None, self.redactor)
        trace_id = int(trace_id_for(event.trace_id), 16)
        with propagate_attributes(**obs.trace_attributes):
            ctx = otel_context.get_current()
        if event.parent_run_id is None:
            ctx = otel_trace.set_span_in_context(otel_trace.INVALID_SPAN, ctx)
        else:
            parent = SpanContext(trace_id=trace_id, span_id=span_id_for(event.parent_run_id), is_remote=False,
                                 trace_flags=TraceFlags(TraceFlags.SAMPLED))
            ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent), ctx)
        client.ids.next(span_id=span_id_for(event.run_id), trace_id=trace_id)
        try:
            span = client.tracer.start_span(obs.name, context=ctx, start_time=_ns(event.start_time))
        finally:
            client.ids.clear()
        if event.parent_run_id is not None:
            # Our parents arrive after their children, so the SDK takes every child for an app root.
            span.set_attribute(_IS_APP_ROOT, False)
        wrapper: Any = obs.cls(otel_span=span, langfuse_client=client.langfuse, **obs.fields)
        wrapper.end(end_time=_ns(event.end_time))

    def _score(self, client: Client, event: Score) -> None:
        """A score through the SDK's score API, on the trace (and observation) it judges."""
        observation = None
        if event.parent_run_id is not None and event.parent_run_id != event.trace_id:
            observation = format(span_id_for(event.parent_run_id), "016x")
        common: dict[str, Any] = {
            "name": event.name, "trace_id": trace_id_for(event.trace_id), "observation_id": observation,
            "score_id": event.run_id, "comment": event.comment,
            "metadata": {"matched": event.matched, "tenant_id": event.tenant_id},
        }
        try:
            if event.data_type == "categorical":
                client.langfuse.create_score(value=event.string_value or "", data_type="CATEGORICAL", **common)
            else:
                numeric_type: Literal["NUMERIC", "BOOLEAN"] = "BOOLEAN" if event.data_type == "boolean" else "NUMERIC"
                client.langfuse.create_score(value=event.value or 0.0, data_type=numeric_type, **common)
        except Exception:
            logger.exception("vital-callbacks: could not send score %s to Langfuse", event.run_id)
            self._record_dropped(1)

    def _on_export_result(self, delivered: int, lost: int) -> None:
        with self._lock:
            self.delivered += delivered
            self.undelivered += lost
        if lost:
            self._record_dropped(lost)  # first: counted before anything else is said about it
            logger.warning("vital-callbacks: Langfuse did not accept %d observations", lost)

    def _record_dropped(self, count: int, reason: str = "rejected by Langfuse") -> None:
        """Count undeliverable events where ``handler.stats()`` and Prometheus read them."""
        self.context.dropped(count, reason)


def _ns(ts: float) -> int:
    return int(ts * 1_000_000_000)
