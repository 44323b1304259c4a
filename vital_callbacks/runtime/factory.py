"""Building a runtime's parts from settings: sinks by entry-point name, the budget guard, the processor.

Nothing here may raise into the application for a problem of the environment: a sink that cannot be
built (its extra is not installed, its URL is not supported) is replaced by an
:class:`UnavailableSink` that reports the problem in ``stats()`` and counts its events as dropped,
so the account still balances and the workflow runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from vital_callbacks.budgets import Budget, BudgetGuard, load_budgets
from vital_callbacks.core.events import Event
from vital_callbacks.core.redaction import WITHHELD, Redactor, load_hook
from vital_callbacks.core.settings import Settings
from vital_callbacks.enrich import Enricher
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.runtime.registry import describe_build_error, sink_class
from vital_callbacks.runtime.sink_process import ProcessSink
from vital_callbacks.sinks.base import DropReason, ExportResult, Sink, SinkContext

logger = logging.getLogger("vital_callbacks")


class UnavailableSink(Sink):
    """Stands in for a sink that could not be built: says why, and counts what it was given."""

    coalesce = 1

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        self.problem = problem

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        context.problem(self.problem)

    def export(self, batch: Sequence[Event]) -> ExportResult:
        self.context.dropped(len(batch), DropReason.UNAVAILABLE)
        return ExportResult.SUCCESS


def build_sinks(settings: Settings) -> list[Sink]:
    sinks: list[Sink] = []
    elsewhere = set(settings.sink_processes or ())
    for name in settings.resolved_sinks():
        try:
            sink = sink_class(name).from_settings(settings)
        except Exception as exc:
            problem = describe_build_error(name, exc)
            logger.error("vital-callbacks: %s; its events are counted as dropped", problem)
            sinks.append(UnavailableSink(name, problem))
            continue
        if name in elsewhere:
            sink = in_child_process(sink, name, settings)
        sinks.append(sink)
    unknown = elsewhere - set(settings.resolved_sinks())
    if unknown:
        logger.warning("vital-callbacks: VITAL_SINK_PROCESSES names %s, not among the sinks in use", sorted(unknown))
    return sinks


def in_child_process(sink: Sink, name: str, settings: Settings) -> Sink:
    """``sink`` run in a child process of its own where it can be (a sink that says it can, on POSIX);
    else ``sink`` itself, and a log line saying why."""
    why = ("not on this system" if os.name != "posix" else
           "what it writes to is only in this process (a metrics registry, an in-memory store...)"
           if not sink.can_run_in_child_process else
           f"its settings are a {type(settings).__name__}, which the child could not rebuild"
           if type(settings) is not Settings else None)
    if why is not None:
        logger.warning("vital-callbacks: sink %r runs in this process, not in one of its own (VITAL_SINK_PROCESSES): "
                       "%s", name, why)
        return sink
    return ProcessSink(sink, name, settings)


def build_guard(settings: Settings, budgets: Sequence[Budget] = (), *, shared_store: bool = True) -> BudgetGuard:
    """Budgets from ``VITAL_BUDGETS_FILE`` and code; a bad file fails here, at start-up, naming the
    file and line (a spend limit that silently did not load would be worse than a loud start).

    Spend is read back from the SQL store only when this runtime writes to it (``shared_store``);
    otherwise it is this process's own spend."""
    declared = list(budgets)
    if settings.budgets_file is not None:
        declared = load_budgets(settings.budgets_file) + declared
    return BudgetGuard(declared, database_url=settings.database_url if shared_store else None,
                       refresh_s=settings.budget_refresh_s, timeout_s=settings.budget_timeout_s,
                       redis_url=settings.budget_redis_url, auto_migrate=settings.auto_migrate(),
                       max_metric_keys=settings.prometheus_max_tenants)


def build_redactor(settings: Settings) -> Redactor:
    """The built-in patterns plus ``VITAL_REDACTION_HOOK``; a hook that cannot be loaded withholds all
    captured text (fail closed) rather than stopping the application."""
    try:
        return Redactor(load_hook(settings.redaction_hook))
    except Exception as exc:
        logger.error("vital-callbacks: VITAL_REDACTION_HOOK=%s cannot be loaded (%s: %s); captured text is "
                     "withheld", settings.redaction_hook, type(exc).__name__, exc)
        return Redactor(lambda text: WITHHELD)


def build_enricher(settings: Settings, guard: BudgetGuard) -> Enricher:
    prices = PriceBook([settings.pricing_dir] if settings.pricing_dir else [])
    keys = settings.metadata_keys
    return Enricher(prices, capture_content=settings.capture_content, budgets=guard,
                    redactor=build_redactor(settings),
                    metadata_keys=frozenset(keys) if keys and keys != ["-"] else None)
