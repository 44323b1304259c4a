"""Background loops that let the application's thread run between pieces of their work.

A thread that wants the GIL waits until the holder lets go, and a busy Python loop only lets go when
the interpreter forces it, after a switch interval (5 ms by default). So the application's request
that arrives while a sink builds rows for a batch waits up to 5 ms, whatever the batch costs in
all. Letting go every few events gives a waiting thread its turn soon after, most of the time
(the yielding thread may win the GIL back before the waiting one wakes; then the next turn comes
a few events later); the work done is the same. ``os.sched_yield`` returns at once when no other
thread wants the GIL, where ``time.sleep(0)`` sleeps out the kernel's timer slack (50 µs and more
on Linux) every time: a flush, with nobody else waiting, paid that in full.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

EVERY = 32
"""Events handled between two turns (a few tens of microseconds of work)."""

let_others_run: Callable[[], None] = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))
"""Let go of the GIL for any thread waiting for it (``time.sleep(0)`` where there is no
``sched_yield``: Windows, whose zero sleep is a plain yield)."""


def taking_turns(items: Iterable[T], every: int = EVERY) -> Iterator[T]:
    """``items``, letting the GIL go after every ``every`` of them."""
    for n, item in enumerate(items, 1):
        yield item
        if not n % every:
            let_others_run()
