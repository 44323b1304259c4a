"""The child process that runs one sink for an application (``VITAL_SINK_PROCESSES``).

    python -m vital_callbacks.runtime.sink_child   (started by ``runtime.sink_process.ProcessSink``)

Turning events into rows or requests is Python work that holds the GIL, which the application's threads
then wait for; here it holds this process's own. The sink is built here from the parent's settings, by
its entry-point name, and runs as it would on its worker: each request (see
:mod:`vital_callbacks.runtime.sink_wire`) is one ``export`` or ``force_flush``, and its reply carries
the result and whatever the sink told its context (dropped, recovered, its problem) and logged, which
the parent counts and logs as its own.

It ends at the end of its stdin: when the parent closes it, or dies. It ignores SIGINT and SIGTERM,
which a terminal or a process manager sends to the whole group: the parent decides when it is done,
after its own shutdown flush.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import BinaryIO

import msgspec

from vital_callbacks.core.codec import decode
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime.factory import sink_class
from vital_callbacks.runtime.sink_wire import EXPORT, FLUSH, SHUTDOWN, Reply, Setup, frame, parse_request, read_frame
from vital_callbacks.sinks.base import ExportResult, SinkContext

logger = logging.getLogger("vital_callbacks")


class _Told(logging.Handler):
    """What the sink tells its context and logs, from any thread, until the next reply takes it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lock = threading.Lock()
        self._reply = Reply()
        self.problem: str | None = None

    def dropped(self, count: int, reason: str) -> None:
        with self._lock:
            self._reply.dropped.append((count, reason))

    def recovered(self, delivered: int, damaged: int, reason: str) -> None:
        with self._lock:
            self._reply.recovered.append((delivered, damaged, reason))

    def report(self, problem: str | None) -> None:
        self.problem = problem

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        with self._lock:
            self._reply.logs.append((record.levelno, text))

    def take(self, ok: bool) -> Reply:
        """The reply to send now: ``ok``, and everything told since the last one."""
        with self._lock:
            reply, self._reply = self._reply, Reply()
        reply.ok = ok
        reply.problem = self.problem
        return reply


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    setup_frame = read_frame(inp)
    if setup_frame is None:
        return 0
    setup = msgspec.json.decode(setup_frame, type=Setup)
    told = _Told()
    deadline: list[float | None] = [None]
    logger.addHandler(told)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    sink = sink_class(setup.sink).from_settings(Settings.model_validate(setup.settings))
    sink.bind(SinkContext(dropped=told.dropped, problem=told.report, recovered=told.recovered,
                          deadline=lambda: deadline[0]))
    try:
        sink.prepare()
    except Exception:
        logger.exception("vital-callbacks: sink %r failed to prepare; its first export tries again", setup.sink)
    encoder = msgspec.json.Encoder()
    while True:
        data = read_frame(inp)
        if data is None:  # the parent is gone, or closed our stdin without asking us to shut down
            sink.shutdown(1.0)
            return 0
        op, seconds, payload = parse_request(data)
        deadline[0] = None if seconds is None else time.monotonic() + seconds
        ok = False
        try:
            if op == EXPORT:
                _, _, line = payload.partition(b" ")
                ok = sink.export(decode(line)) is ExportResult.SUCCESS
            elif op == FLUSH:
                ok = bool(sink.force_flush(10.0 if seconds is None else seconds))
            elif op == SHUTDOWN:
                sink.shutdown(10.0 if seconds is None else seconds)
                ok = True
        except Exception:
            logger.exception("vital-callbacks: sink %r raised in its child process", setup.sink)
        out.write(frame(encoder.encode(told.take(ok))))
        out.flush()
        if op == SHUTDOWN:
            return 0


def main() -> int:
    for name in ("SIGINT", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    # The replies get a descriptor of their own; what anything else prints goes to stderr, not into them.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        return serve(sys.stdin.buffer, out)
    except BrokenPipeError:  # the parent is gone: nobody is waiting for the reply
        return 0


if __name__ == "__main__":
    sys.exit(main())
