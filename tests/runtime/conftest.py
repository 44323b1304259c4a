"""A hung database for the runtime's tests: accepts connections, never answers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vital_callbacks.testing.servers import HungServer


@pytest.fixture
def hung_server() -> Iterator[int]:
    """The port of a TCP server that accepts connections and never answers (a hung database)."""
    with HungServer() as hung:
        yield hung.port
