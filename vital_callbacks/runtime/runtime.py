"""The one long-lived owner of everything behind the handlers (cf. OpenTelemetry's ``TracerProvider``).

A :class:`Runtime` builds, once, from typed settings: the sinks, the price book, the budget guard,
the processors and the pipeline (dispatcher and sink threads). Handlers are cheap views on a runtime
with no lifecycle of their own, so a handler per request costs no thread, engine or query, and a
handler leaving its ``with`` block never stops what other handlers use.

``VitalCallbackHandler()`` uses the process-wide default runtime, built from the environment on first
use; handlers given equal settings share one runtime. Lifecycle:

* the exit hook is registered when the first runtime is built (not at import), so it runs *before*
  the exit hooks of providers the application set up earlier (an OpenTelemetry ``TracerProvider``);
* after ``fork()`` each runtime re-creates its threads, loops and connections in the child and
  delivers what the child records; the parent delivers what it had queued;
* ``shutdown()`` delivers, spills or counts everything within ``VITAL_SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vital_callbacks.budgets import Budget, BudgetGuard
from vital_callbacks.core.paths import default_journal_root
from vital_callbacks.core.settings import Settings
from vital_callbacks.enrich import Enricher
from vital_callbacks.pricing.book import PriceBook
from vital_callbacks.providers import tokens
from vital_callbacks.runtime.factory import build_enricher, build_guard, build_sinks
from vital_callbacks.runtime.pipeline import Pipeline, PipelineStats
from vital_callbacks.sinks.base import Sink

logger = logging.getLogger("vital_callbacks")

STORE_SINKS = ("sql",)


class Runtime:
    """Owns the pipeline, sinks, price book, budget guard and processors built from one ``Settings``.

        runtime = Runtime(Settings(database_url="postgresql://..."))   # once, e.g. in a FastAPI lifespan
        handler = VitalCallbackHandler(runtime=runtime, tenant_id=tenant)   # per request: a cheap view
        ...
        runtime.shutdown()                                               # at the end (or leave it to exit)
    """

    def __init__(self, settings: Settings | None = None, *, sinks: Sequence[Sink] | None = None,
                 budgets: Sequence[Budget] = ()) -> None:
        self.settings = settings if settings is not None else Settings()
        settings = self.settings
        tokens.configure(settings.tiktoken_encodings_dir)
        self.sinks: list[Sink] = list(sinks) if sinks is not None else build_sinks(settings)
        writes_store = any(s.name in STORE_SINKS for s in self.sinks)
        self.joins_app_trace = any(s.joins_app_trace for s in self.sinks)
        """Whether a trace's start reads the application's current OpenTelemetry span (an OTel sink)."""
        self.budgets: BudgetGuard = build_guard(settings, budgets, shared_store=writes_store)
        """Spend limits in force (``VITAL_BUDGETS_FILE``, ``budgets=`` here and on handlers)."""
        self.enricher: Enricher = build_enricher(settings, self.budgets)
        self.pipeline = Pipeline(
            self.sinks, self.enricher,
            queue_size=settings.queue_size, batch_size=settings.batch_size,
            flush_interval_s=settings.flush_interval_s, max_retries=settings.max_retries,
            retry_backoff_s=settings.retry_backoff_s,
            journal_root=(settings.journal_dir or default_journal_root()) if settings.journal else None,
        )
        self.submit = self.pipeline.submit
        """Hand an event or a draft to the pipeline: O(1), never blocks, never raises."""
        self._closed = False
        _register(self)

    @property
    def prices(self) -> PriceBook:
        return self.enricher.prices

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is delivered (or spilled); False on timeout or loss."""
        return self.pipeline.flush(timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Deliver, then stop the threads and the sinks; bounded by ``timeout`` (default
        ``VITAL_SHUTDOWN_TIMEOUT_S``). True when nothing was lost."""
        self._closed = True
        timeout = self.settings.shutdown_timeout_s if timeout is None else timeout
        started = time.monotonic()
        self.budgets.close(min(2.0, timeout / 2))  # settles in hand: what was spent reaches the counter
        ok = self.pipeline.shutdown(max(0.0, timeout - (time.monotonic() - started)))
        _forget(self)
        return ok

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, Any]:
        """Delivery counters, problems, unpriced models and estimates: the account of this runtime."""
        stats: PipelineStats = self.pipeline.stats()
        return {
            "submitted": stats.submitted,
            "exported": stats.exported,
            "spilled": stats.spilled,
            "dropped": stats.dropped,
            "dropped_reasons": stats.dropped_reasons,
            "failed_exports": stats.failed_exports,
            "queue_depth": stats.queue_depth,
            "processor_errors": stats.processor_errors,
            "problems": stats.problems,
            "recovered": stats.recovered,
            "kept_in_journal": stats.kept,
            "held_for_late_calls": stats.held,
            "unpriced_calls": dict(self.enricher.prices.unpriced),
            "estimated_calls": self.enricher.estimated_calls,
            "failed_estimates": self.enricher.failed_estimates,
            "unreadable_usage": self.enricher.unreadable_usage,
        }

    def _quiesce(self, deadline: float) -> list[threading.Lock]:
        return [*self.pipeline.quiesce(deadline), *self.budgets.quiesce(deadline)]

    def _after_fork(self) -> None:
        self.pipeline.after_fork()
        self.budgets.after_fork()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


# -- the process-wide registry ------------------------------------------------------------------------
_lock = threading.RLock()
_live: set[Runtime] = set()
"""Every runtime not shut down yet, held strongly: its threads run on whether or not a handler still
refers to it, so the exit hook must still find it to deliver what it queued."""
_shared: dict[str, Runtime] = {}
_default: list[Runtime] = []
_env_settings: dict[frozenset[tuple[str, Any]], Settings] = {}
_ENV_SETTINGS_KEPT = 256
_hooks_installed = False


def _register(runtime: Runtime) -> None:
    global _hooks_installed
    with _lock:
        _live.add(runtime)
        if not _hooks_installed:
            _hooks_installed = True
            atexit.register(_shutdown_all)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                                    after_in_child=_after_fork_in_child)


def _forget(runtime: Runtime) -> None:
    with _lock:
        _live.discard(runtime)
        for key, shared in list(_shared.items()):
            if shared is runtime:
                del _shared[key]
        if _default and _default[0] is runtime:
            _default.clear()


_FORK_WAIT_S = 5.0
"""Longest a ``fork()`` waits for the runtime's threads to finish the piece of work in hand."""
_held_at_fork: list[threading.Lock] = []


def _before_fork() -> None:
    deadline = time.monotonic() + _FORK_WAIT_S
    for runtime in list(_live):
        _held_at_fork.extend(runtime._quiesce(deadline))


def _after_fork_in_parent() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _after_fork_in_child() -> None:
    _held_at_fork.clear()  # the child's runtimes make new locks
    for runtime in list(_live):
        try:
            runtime._after_fork()
            _watch_multiprocessing(runtime)  # here: multiprocessing.util is imported by now if it forked us
        except Exception:
            logger.exception("vital-callbacks: re-initialising after fork failed")


def _watch_multiprocessing(runtime: Runtime) -> None:
    """A ``multiprocessing`` (or billiard, Celery's) child ends with ``os._exit`` after its finalizers,
    never running ``atexit``: register a finalizer in each such child, so it delivers before exit."""
    for name in ("multiprocessing.util", "billiard.util"):
        util = sys.modules.get(name)
        if util is not None:
            util.register_after_fork(runtime, _finalize_in_child(util))  # run by its child's bootstrap


def _finalize_in_child(util: Any) -> Any:
    def register(runtime: Runtime) -> None:
        util.Finalize(runtime, _shutdown_all, exitpriority=100)

    return register


def _shutdown_all() -> None:
    """At interpreter exit: deliver, spill or count what is queued, bounded in total so exit never
    hangs (``VITAL_SHUTDOWN_TIMEOUT_S`` of the longest runtime)."""
    with _lock:
        runtimes = [r for r in _live if not r.closed]
    if not runtimes:
        return
    deadline = time.monotonic() + max(r.settings.shutdown_timeout_s for r in runtimes)
    for runtime in runtimes:
        try:
            runtime.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:
            logger.exception("vital-callbacks: shutdown at exit failed")


def _settings_key(settings: Settings) -> str:
    return settings.model_dump_json()


def environment_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """``Settings(**overrides)`` from the environment, read once per distinct set of overrides (reading
    every ``VITAL_*`` variable costs milliseconds: too much for a handler per request)."""
    try:
        key = frozenset((overrides or {}).items())
    except TypeError:  # an unhashable value: not cached
        return Settings(**(overrides or {}))
    with _lock:
        found = _env_settings.get(key)
        if found is None:
            found = Settings(**(overrides or {}))
            if len(_env_settings) < _ENV_SETTINGS_KEPT:
                _env_settings[key] = found
        return found


def default_runtime() -> Runtime:
    """The process-wide runtime built from the environment (``VITAL_*``) on first use."""
    with _lock:
        if not _default:
            runtime = Runtime(environment_settings())
            _default.append(runtime)
            _shared.setdefault(_settings_key(runtime.settings), runtime)
        return _default[0]


def runtime_for(settings: Settings) -> Runtime:
    """The shared runtime for ``settings`` (built on first use): equal settings, one runtime."""
    key = _settings_key(settings)
    with _lock:
        runtime = _shared.get(key)
        if runtime is None or runtime.closed:
            runtime = _shared[key] = Runtime(settings)
        return runtime


def shutdown_default(timeout: float | None = None) -> bool:
    """Shut down every shared runtime (the default one too); the next handler builds them anew, from the
    environment as it is then. For tests, and for an application that reconfigures itself."""
    with _lock:
        runtimes = list({id(r): r for r in [*_shared.values(), *_default]}.values())
        _shared.clear()
        _default.clear()
        _env_settings.clear()
    return all([r.shutdown(timeout) for r in runtimes])


__all__ = ["Runtime", "default_runtime", "environment_settings", "runtime_for", "shutdown_default"]
