"""Building pipelines from settings: sinks by entry-point name, the enricher, and sharing.

Handlers with equal settings share one pipeline so that a handler per request does not mean a set
of threads per request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from importlib.metadata import entry_points
from typing import Any

from vital_callbacks import tokens
from vital_callbacks.budgets import Budget, BudgetGuard, load_budgets
from vital_callbacks.enrich import Enricher
from vital_callbacks.pipeline import Pipeline, set_exit_timeout
from vital_callbacks.pricing import PriceBook
from vital_callbacks.settings import Settings
from vital_callbacks.sinks.base import Sink

logger = logging.getLogger("vital_callbacks")

GROUP = "vital_callbacks.sinks"
"""The one registry of sinks, ours included (declared in pyproject.toml)."""

_lock = threading.Lock()
_shared: dict[str, Pipeline] = {}


class UnknownSinkError(ValueError):
    pass


def sink_class(name: str) -> type[Sink]:
    """The sink class registered under ``name`` in the ``vital_callbacks.sinks`` group."""
    points = entry_points(group=GROUP)
    for ep in points:
        if ep.name == name:
            return ep.load()  # type: ignore[no-any-return]
    known = ", ".join(sorted(ep.name for ep in points)) or "none (is vital-callbacks installed?)"
    raise UnknownSinkError(f"unknown sink {name!r} in VITAL_SINKS; known: {known}")


def build_sinks(settings: Settings) -> list[Sink]:
    return [sink_class(name).from_settings(settings) for name in settings.resolved_sinks()]


def build_guard(settings: Settings, budgets: Sequence[Budget] = (), *, shared_store: bool = True) -> BudgetGuard | None:
    """Budgets from ``VITAL_BUDGETS_FILE`` and code; a bad file fails here, at start-up.

    Spend is read back from the SQL store only when this pipeline writes to it (``shared_store``);
    otherwise it is this process's own spend.
    """
    declared = list(budgets)
    if settings.budgets_file is not None:
        declared = load_budgets(settings.budgets_file) + declared
    if not declared:
        return None
    return BudgetGuard(declared, database_url=settings.database_url if shared_store else None,
                       refresh_s=settings.budget_refresh_s)


def build_pipeline(settings: Settings, sinks: Sequence[Sink] | None = None, budgets: Sequence[Budget] = ()) -> Pipeline:
    tokens.configure(settings.tiktoken_encodings_dir)
    set_exit_timeout(settings.shutdown_timeout_s)
    prices = PriceBook([settings.pricing_dir] if settings.pricing_dir else [])
    chosen = list(sinks) if sinks is not None else build_sinks(settings)
    writes_store = any(getattr(s, "name", "") in ("sql", "postgres") for s in chosen)
    guard = build_guard(settings, budgets, shared_store=writes_store)
    enricher = Enricher(prices, capture_content=settings.capture_content, budgets=guard)
    pipeline = Pipeline(
        chosen,
        [enricher],
        queue_size=settings.queue_size,
        batch_size=settings.batch_size,
        flush_interval_s=settings.flush_interval_s,
        max_retries=settings.max_retries,
        retry_backoff_s=settings.retry_backoff_s,
    )
    return pipeline


def get_pipeline(settings: Settings, sinks: Sequence[Any] | None = None, budgets: Sequence[Budget] = ()) -> Pipeline:
    if sinks is not None or budgets:
        return build_pipeline(settings, sinks, budgets)
    key = settings.model_dump_json()
    with _lock:
        pipeline = _shared.get(key)
        if pipeline is None:
            pipeline = _shared[key] = build_pipeline(settings)
        return pipeline


def release_pipeline(pipeline: Pipeline) -> None:
    with _lock:
        for key, shared in list(_shared.items()):
            if shared is pipeline:
                del _shared[key]


def enricher_of(pipeline: Pipeline) -> Enricher | None:
    return next((p for p in pipeline.processors if isinstance(p, Enricher)), None)


def pipeline_stats(pipeline: Pipeline) -> dict[str, Any]:
    """Delivery counters of a pipeline and what its enricher counted (unpriced models, estimates)."""
    stats = pipeline.stats()
    enricher = enricher_of(pipeline)
    return {
        "submitted": stats.submitted,
        "exported": stats.exported,
        "dropped": stats.dropped,
        "failed_exports": stats.failed_exports,
        "queue_depth": stats.queue_depth,
        "processor_errors": stats.processor_errors,
        "unpriced_calls": dict(enricher.prices.unpriced) if enricher else {},
        "estimated_calls": enricher.estimated_calls if enricher else 0,
    }
