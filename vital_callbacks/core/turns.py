"""Background loops that let the application's thread run between pieces of their work.

A thread that wants the GIL waits until the holder lets go, and a busy Python loop only lets go when
the interpreter forces it, after a switch interval (5 ms by default). So the application's request
that arrives while a sink builds rows for a batch waits up to 5 ms, whatever the batch costs in
all. Letting go every few events (``time.sleep(0)``, a few microseconds) bounds that wait to the
time of those few events; the work done is the same.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

EVERY = 32
"""Events handled between two turns (a few tens of microseconds of work)."""


def let_others_run() -> None:
    time.sleep(0)


def taking_turns(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, letting the GIL go after every ``every`` of them."""
    for n, item in enumerate(items, 1):
        yield item
        if not n % every:
            time.sleep(0)
