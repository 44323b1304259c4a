"""Shared fixtures: a handler with an in-memory sink, and the reference graph."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from vital_callbacks import InMemorySink, Settings, VitalCallbackHandler
from vital_callbacks.runtime import shutdown_default

# Each test process (and the subprocesses it starts) journals into a folder of its own, so a test that
# kills a process never leaves segments for another test's store to replay.
os.environ.setdefault("VITAL_JOURNAL_DIR", tempfile.mkdtemp(prefix="vital-journal-"))


def require_service(available: bool, reason: str) -> None:
    """Skip on a laptop without the service; fail in CI, where it must be there."""
    if available:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fresh_shared_runtimes() -> Iterator[None]:
    """Each test gets the process-wide runtimes anew, built from the environment it sets up."""
    yield
    shutdown_default(5.0)


@pytest.fixture
def memory_sink() -> InMemorySink:
    return InMemorySink()


@pytest.fixture
def handler(memory_sink: InMemorySink) -> Iterator[VitalCallbackHandler]:
    h = VitalCallbackHandler(Settings(flush_interval_s=0.05), sinks=[memory_sink])
    yield h
    h.shutdown()


@pytest.fixture
def graph() -> Any:
    from tests.graphs import build_graph

    return build_graph()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A private PostgreSQL cluster (tests/pg_cluster.py) the module's tests may stop, hang and restart."""
    from tests import pg_cluster

    require_service(pg_cluster.PrivateCluster.available(), f"initdb/pg_ctl not found in {pg_cluster.PG_BIN}")
    private = pg_cluster.PrivateCluster()
    private.start()
    try:
        yield private
    finally:
        private.destroy()
