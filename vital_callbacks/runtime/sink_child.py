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
import time
from typing import BinaryIO

import msgspec

from vital_callbacks.core.codec import decode
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime.factory import sink_class
from vital_callbacks.runtime.sink_wire import EXPORT, FLUSH, Reply, Setup, frame, parse_request, read_frame
from vital_callbacks.sinks.base import ExportResult, SinkContext

logger = logging.getLogger("vital_callbacks")


class _Collect(logging.Handler):
    """Keeps the library's log records for the reply (the parent's logging formats and routes them)."""

    def __init__(self, replies: list[Reply]) -> None:
        super().__init__(logging.INFO)
        self._replies = replies

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self._replies[0].logs.append((record.levelno, text))


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    setup_frame = read_frame(inp)
    if setup_frame is None:
        return 0
    setup = msgspec.json.decode(setup_frame, type=Setup)
    current = [Reply()]
    problem: list[str | None] = [None]
    deadline: list[float | None] = [None]

    def report(message: str | None) -> None:
        problem[0] = message

    logger.addHandler(_Collect(current))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    sink = sink_class(setup.sink).from_settings(Settings.model_validate(setup.settings))
    sink.bind(SinkContext(dropped=lambda n, why: current[0].dropped.append((n, why)), problem=report,
                          recovered=lambda n, bad, why: current[0].recovered.append((n, bad, why)),
                          deadline=lambda: deadline[0]))
    try:
        sink.prepare()
    except Exception:
        logger.exception("vital-callbacks: sink %r failed to prepare; its first export tries again", setup.sink)
    encoder = msgspec.json.Encoder()
    while True:
        data = read_frame(inp)
        if data is None:
            break
        op, seconds, payload = parse_request(data)
        reply = current[0]  # carries what was logged since the last reply (at the start: while preparing)
        deadline[0] = None if seconds is None else time.monotonic() + seconds
        try:
            if op == EXPORT:
                _, _, line = payload.partition(b" ")
                reply.ok = sink.export(decode(line)) is ExportResult.SUCCESS
            elif op == FLUSH:
                reply.ok = bool(sink.force_flush(10.0 if seconds is None else seconds))
            else:
                reply.ok = False
        except Exception:
            logger.exception("vital-callbacks: sink %r raised in its child process", setup.sink)
            reply.ok = False
        reply.problem = problem[0]
        out.write(frame(encoder.encode(reply)))
        out.flush()
        current[0] = Reply()
    sink.shutdown()
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
