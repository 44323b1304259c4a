"""Prometheus sink: every event becomes counter increments and histogram observations.

Runs on the pipeline's worker thread like every sink, so the caller never pays for label lookups.
Label values are bounded: tenants (and users, when ``prometheus_user_label`` is on) past
``prometheus_max_tenants`` distinct values are recorded as ``other``. Metric families are shared by
every sink on the same registry, so two handlers with different settings can both use the default
registry. Delivery health (``events_dropped_total``, ``sink_queue_depth``) is read from the attached
pipeline at scrape time; in multiprocess mode, where scrapes read files instead of this process, it
is written at each export instead.
"""

from __future__ import annotations

import logging
import platform
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vital_callbacks.core.events import Event, GraphRun, LLMCall, NodeRun, RetrieverCall, ToolCall
from vital_callbacks.core.settings import Settings
from vital_callbacks.core.turns import taking_turns
from vital_callbacks.sinks.base import INBOX_STAGE, DropReason, ExportResult, Sink, SinkContext
from vital_callbacks.sinks.prometheus.metrics import (
    DROPPED_HELP,
    TOKEN_KINDS,
    Metrics,
    create_metrics,
    multiprocess_mode,
    split_tokens,
)

logger = logging.getLogger("vital_callbacks")

UNKNOWN = "unknown"
_MAX_BOUND = 10_000
"""Label children kept resolved per sink (past this, resolved again as they come)."""
OTHER = "other"
NO_TENANT = "none"


def package_version() -> str:
    try:
        return version("vital-callbacks")
    except PackageNotFoundError:
        return "0+unknown"


class BoundedLabel:
    """Passes the first ``limit`` distinct values through and maps the rest to ``other``."""

    def __init__(self, limit: int, missing: str = NO_TENANT) -> None:
        self.limit = limit
        self.missing = missing
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return self.missing
        if value in self._seen:  # the common case: no lock (set reads are atomic under the GIL)
            return value
        with self._lock:
            if value in self._seen or len(self._seen) < self.limit:
                self._seen.add(value)
                return value
        return OTHER


StatsSource = Callable[[], Mapping[str, Any]]


class PipelineCollector(Collector):
    """``events_dropped_total`` and ``sink_queue_depth`` read at scrape from the pipelines whose
    sinks were bound to this registry (held weakly: a pipeline that is gone is not reported)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.sources: weakref.WeakSet[SinkContext] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(self.prefix + "events_dropped", DROPPED_HELP, labels=["sink", "reason"])
        depth = GaugeMetricFamily(self.prefix + "sink_queue_depth", "Events waiting per sink queue.",
                                  labels=["sink"])
        totals: dict[tuple[str, str], int] = {}
        depths: dict[str, int] = {}
        for context in list(self.sources):
            stats = context.stats()
            for name, value in stats.get("queue_depth", {}).items():
                depths[name] = depths.get(name, 0) + value
                for reason in DropReason.KNOWN if name != INBOX_STAGE else (DropReason.INBOX,):
                    totals.setdefault((name, reason), 0)  # at 0 from the start: increase() sees a first drop
            for name, reasons in stats.get("dropped_reasons", {}).items():
                for reason, value in reasons.items():
                    totals[(name, reason)] = totals.get((name, reason), 0) + value
        for (name, reason) in sorted(totals):
            dropped.add_metric([name, reason], totals[(name, reason)])
        for name in sorted(depths):
            depth.add_metric([name], depths[name])
        yield dropped
        yield depth


class _Shared:
    """What all sinks on one registry share: the families, the label guards, the pipeline collector."""

    def __init__(self, registry: CollectorRegistry, prefix: str, user_label: bool, max_values: int) -> None:
        self.multiprocess = multiprocess_mode()
        self.metrics: Metrics = create_metrics(registry, prefix, user_label=user_label,
                                               multiprocess=self.multiprocess)
        self.metrics.build_info.labels(package_version(), platform.python_version()).set(1)
        self.tenant = BoundedLabel(max_values)
        self.user = BoundedLabel(max_values)
        self.collector: PipelineCollector | None = None
        if not self.multiprocess:
            self.collector = PipelineCollector(prefix)
            registry.register(self.collector)


_SharedByKey = dict[tuple[str, bool], _Shared]
_shared: weakref.WeakKeyDictionary[CollectorRegistry, _SharedByKey] = weakref.WeakKeyDictionary()
_shared_lock = threading.Lock()


def _shared_for(registry: CollectorRegistry, prefix: str, user_label: bool, max_values: int) -> _Shared:
    with _shared_lock:
        by_key = _shared.setdefault(registry, {})
        state = by_key.get((prefix, user_label))
        if state is None:
            state = by_key[(prefix, user_label)] = _Shared(registry, prefix, user_label, max_values)
        return state


class _LLMSeries:
    """The children one kind of LLM call (provider, model, status, tenant[, user]) increments."""

    __slots__ = ("cost", "duration", "hits", "misses", "requests", "saved", "tokens", "ttft", "unpriced")

    def __init__(self, m: Metrics, provider: str, model: str, status: str, who: tuple[str, ...]) -> None:
        self.requests = m.llm_requests.labels(provider, model, status, *who)
        # Every kind up front, at 0: rate() drops the first increment of a series that appears mid-range.
        self.tokens = tuple(m.llm_tokens.labels(provider, model, *who, type_, kind) for type_, kind in TOKEN_KINDS)
        # Cost series appear with the first priced call, never before: a model nobody has a price for
        # must have no cost series, not one that says $0. Unpriced calls likewise, with the first one.
        self.cost: Counter | None = None
        self.unpriced: Counter | None = None
        self.saved: Counter | None = None
        self.hits = m.llm_cache_requests.labels(model, "hit")
        self.misses = m.llm_cache_requests.labels(model, "miss")
        self.duration = m.llm_duration.labels(provider, model)
        self.ttft = m.llm_ttft.labels(provider, model)


def _usd(amount: Decimal) -> float:
    return float(amount)


def _count(counts: Mapping[Any, float]) -> None:
    """Add each counter child's amount to it (what :meth:`PrometheusSink._record` gathered)."""
    for child, amount in counts.items():
        try:
            child.inc(amount)
        except Exception:  # refused by the client: the other counters still count
            logger.exception("vital-callbacks: prometheus sink could not add %r to a counter", amount)


def _amount(value: float) -> float:
    """An event's amount for a counter, refused as the counter would refuse it: a negative one must not
    be summed into its batch's total, it fails its own event."""
    if value < 0:
        raise ValueError(f"counters only go up, not by {value!r}")
    return value


class PrometheusSink(Sink):
    """Counters and histograms for LLM calls, tools, retrievers, nodes and graph runs."""

    name = "prometheus"

    def __init__(self, *, registry: CollectorRegistry | None = None, prefix: str = "vital_",
                 max_tenants: int = 100, user_label: bool = False, pushgateway_url: str | None = None,
                 push_job: str = "vital_callbacks", quality_threshold: float = 0.8) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self.prefix = prefix
        self.user_label = user_label
        self.pushgateway_url = pushgateway_url
        self.push_job = push_job
        self.quality_threshold = quality_threshold
        self._state = _shared_for(self.registry, prefix, user_label, max_tenants)
        self.metrics = self._state.metrics
        self._llm_series: dict[tuple[str, str, str, tuple[str, ...]], _LLMSeries] = {}
        """Resolved label children per call shape: label lookups are most of a record's cost."""
        self._children: dict[tuple[str, ...], tuple[Any, ...]] = {}
        """The same for nodes, tools, retrievers and graph runs, by kind and labels."""
        self._synced_dropped: dict[tuple[str, str], int] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Sink:
        sink = cls(prefix=settings.prometheus_prefix, max_tenants=settings.prometheus_max_tenants,
                   user_label=settings.prometheus_user_label, pushgateway_url=settings.pushgateway_url)
        if settings.prometheus_port is not None:
            from vital_callbacks.sinks.prometheus.exposition import start_server

            start_server(settings.prometheus_port, settings.prometheus_addr, sink.registry)
        return sink

    def bind(self, context: SinkContext) -> None:
        """The pipeline's delivery counters become ``events_dropped`` / ``sink_queue_depth``."""
        super().bind(context)
        if self._state.collector is not None:
            self._state.collector.sources.add(context)

    # -- export ------------------------------------------------------------------------------------
    def export(self, batch: Sequence[Event]) -> ExportResult:
        counts: defaultdict[Any, float] = defaultdict(float)
        try:
            for event in taking_turns(batch):
                try:
                    self._record(event, counts)
                except Exception:  # one odd event must not cost the rest of the batch
                    logger.exception("vital-callbacks: prometheus sink skipped %s %s", event.kind, event.run_id)
        finally:
            _count(counts)
        if self._state.multiprocess:
            self._sync_pipeline_stats()
        return ExportResult.SUCCESS

    def record(self, event: Event) -> None:
        """Record one event (public so that a benchmark or a custom pipeline can call it directly)."""
        counts: defaultdict[Any, float] = defaultdict(float)
        try:
            self._record(event, counts)
        finally:
            _count(counts)

    def _record(self, event: Event, counts: defaultdict[Any, float]) -> None:
        """Observe an event's histograms; add what its counters count to ``counts`` (counter child ->
        amount), which the caller adds to the counters once per batch: a counter's ``inc`` takes its lock
        and checks its arguments in Python, and a batch's events share a handful of children."""
        key: tuple[str, ...]
        if isinstance(event, LLMCall):
            self._llm(event, counts)
        elif isinstance(event, NodeRun):
            key = ("node", event.graph or UNKNOWN, event.subgraph or "", event.node or UNKNOWN, event.status)
            children = self._children.get(key) or self._bind(key, self.metrics.node_executions.labels(*key[1:]),
                                                              self.metrics.node_duration.labels(*key[1:4]))
            counts[children[0]] += 1
            children[1].observe(event.duration_s)
        elif isinstance(event, ToolCall):
            key = ("tool", event.name or UNKNOWN, event.status)
            children = self._children.get(key) or self._bind(key, self.metrics.tool_calls.labels(*key[1:]),
                                                              self.metrics.tool_duration.labels(key[1]))
            counts[children[0]] += 1
            children[1].observe(event.duration_s)
        elif isinstance(event, RetrieverCall):
            key = ("retriever", event.name or UNKNOWN, event.status)
            children = self._children.get(key) or self._bind(
                key, self.metrics.retriever_calls.labels(*key[1:]), self.metrics.retriever_duration.labels(key[1]),
                self.metrics.retriever_documents.labels(key[1]))
            counts[children[0]] += 1
            children[1].observe(event.duration_s)
            if event.status == "success":
                children[2].observe(event.documents)
        elif isinstance(event, GraphRun):
            key = ("graph", event.name or event.graph or UNKNOWN, event.status)
            children = self._children.get(key) or self._bind(key, self.metrics.graph_runs.labels(*key[1:]),
                                                              self.metrics.graph_duration.labels(key[1]))
            counts[children[0]] += 1
            children[1].observe(event.duration_s)
            if event.cost_usd is not None:
                self.metrics.graph_cost.labels(key[1]).observe(_usd(event.cost_usd))
        elif event.kind == "score":  # quality scores arrive as events of their own
            value = getattr(event, "value", None)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.record_score(str(getattr(event, "name", UNKNOWN)), float(value), event.graph)

    def _bind(self, key: tuple[str, ...], *children: Any) -> tuple[Any, ...]:
        """The label children of one kind of event, resolved once (a ``labels()`` call takes a lock and
        a lookup: most of what recording an event costs)."""
        if len(self._children) >= _MAX_BOUND:
            self._children.clear()  # names are the application's own, so this is rare: start again
        self._children[key] = children
        return children

    def _who(self, event: Event) -> tuple[str, ...]:
        tenant = self._state.tenant(event.tenant_id)
        return (tenant, self._state.user(event.user_id)) if self.user_label else (tenant,)

    def _llm(self, event: LLMCall, counts: defaultdict[Any, float]) -> None:
        provider, model = event.provider or UNKNOWN, event.model or UNKNOWN
        who = self._who(event)
        key = (provider, model, event.status, who)
        series = self._llm_series.get(key)
        if series is None:
            series = self._llm_series[key] = _LLMSeries(self.metrics, provider, model, event.status, who)
        counts[series.requests] += 1
        for child, count in zip(series.tokens, split_tokens(event.usage), strict=True):
            if count:
                counts[child] += _amount(count)
        cost = event.cost
        if cost is not None:
            usd = _amount(_usd(cost.total))
            if series.cost is None:
                series.cost = self.metrics.llm_cost.labels(provider, model, *who)
            counts[series.cost] += usd
            node: tuple[str, ...] = ("node cost", event.graph or UNKNOWN, event.subgraph or "", event.node or UNKNOWN)
            node_cost = (self._children.get(node) or self._bind(node, self.metrics.node_cost.labels(*node[1:])))[0]
            counts[node_cost] += usd
        elif event.token_source != "none":
            if series.unpriced is None:
                series.unpriced = self.metrics.unpriced_calls.labels(provider, model, *who)
            counts[series.unpriced] += 1
        if event.cache_hit:
            counts[series.hits] += 1
            if event.saved_cost is not None:
                if series.saved is None:
                    series.saved = self.metrics.llm_cost_saved.labels(provider, model, *who)
                counts[series.saved] += _amount(_usd(event.saved_cost))
        else:
            counts[series.misses] += 1
            series.duration.observe(event.duration_s)
        if event.time_to_first_token_s is not None:
            series.ttft.observe(event.time_to_first_token_s)

    def record_score(self, name: str, value: float, graph: str | None = None) -> None:
        """Observe a 0..1 quality score; below ``quality_threshold`` it also counts as degraded."""
        graph_label = graph or UNKNOWN
        self.metrics.quality_score.labels(name, graph_label).observe(value)
        degraded = self.metrics.degraded_responses.labels(name, graph_label)
        degraded.inc(1 if value < self.quality_threshold else 0)  # inc(0) keeps the series present

    # -- delivery health, flush, push --------------------------------------------------------------
    def _sync_pipeline_stats(self) -> None:
        """Multiprocess mode: copy the pipeline's counters into file-backed metrics."""
        m = self.metrics
        if m.events_dropped is None or m.queue_depth is None:
            return
        stats = self.context.stats()
        for name, depth in stats.get("queue_depth", {}).items():
            m.queue_depth.labels(name).set(depth)
            for reason in DropReason.KNOWN if name != INBOX_STAGE else (DropReason.INBOX,):
                m.events_dropped.labels(name, reason)  # at 0 from the start, as in one process
        for name, reasons in stats.get("dropped_reasons", {}).items():
            for reason, dropped in reasons.items():
                key = (name, reason)
                m.events_dropped.labels(name, reason).inc(max(0, dropped - self._synced_dropped.get(key, 0)))
                self._synced_dropped[key] = dropped

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        if self._state.multiprocess:
            self._sync_pipeline_stats()
        if not self.pushgateway_url:
            return True
        try:
            from vital_callbacks.sinks.prometheus.exposition import exposition_registry

            push_to_gateway(self.pushgateway_url, job=self.push_job,
                            registry=exposition_registry(self.registry),
                            grouping_key={"instance": platform.node()}, timeout=max(timeout_s, 0.1))
        except Exception:
            logger.exception("vital-callbacks: push to %s failed", self.pushgateway_url)
            return False
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Nothing to release: a stopped pipeline keeps reporting its final drop counts."""
