"""Log lines about losses, at most one per cause per interval, with the counts summed in between.

A store that rejects every row, or a queue that overflows under a burst, would otherwise write a line
(or a traceback) per event into the application's log, which is its own outage. The first line for a
cause is written at once; what follows within the interval is summed into the next line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable

INTERVAL_S = 10.0


class LogThrottle:
    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def take(self, key: Hashable, count: int = 1) -> int:
        """The count to report now for ``key`` (``count`` plus what was held back), or 0: stay quiet."""
        with self._lock:
            now = self._clock()
            total = self._held.pop(key, 0) + count
            if now >= self._next.get(key, 0.0):
                self._next[key] = now + self._interval_s
                return total
            self._held[key] = total
            return 0

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen (e.g. to log one traceback per kind of failure)."""
        with self._lock:
            if key in self._next:
                return False
            self._next[key] = float("inf")
            return True
