"""The SQL writer process: the SQL sink's rows built and inserted outside the application's process.

    python -m vital_callbacks.sinks.sql.writer   (started by the SQL sink with ``VITAL_SQL_WRITER=process``)

Building rows and binding them is Python work that holds the GIL, which the application's threads then
wait for; here it holds this process's own. The parent (:mod:`vital_callbacks.sinks.sql.remote`) writes
frames to this process's stdin: first the store's settings, then one batch per frame, encoded as the
journal encodes them; for each batch this process runs an ordinary :class:`SQLSink` export and writes back
one reply frame: the export's result, what it counted as dropped (rows the store rejected), the store's
problem, and its log records, which the parent logs through its own logging. A frame is a 4-byte
big-endian length and that many bytes.

It ends at the end of its stdin: when the parent closes it, or when the parent dies. It ignores SIGINT
and SIGTERM, which a terminal or a process manager sends to the whole group: the parent decides when it
is done, after its own shutdown flush.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import BinaryIO

import msgspec

from vital_callbacks.core.codec import decode
from vital_callbacks.sinks.base import ExportResult, SinkContext
from vital_callbacks.sinks.sql.sink import SQLSink
from vital_callbacks.sinks.sql.wire import Reply, Setup, frame, read_frame


class _Collect(logging.Handler):
    """Keeps the sink's log records for the reply (the parent's logging formats and routes them)."""

    def __init__(self, reply: list[Reply]) -> None:
        super().__init__(logging.INFO)
        self._reply = reply

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self._reply[0].logs.append((record.levelno, text))


def serve(inp: BinaryIO, out: BinaryIO) -> int:
    setup_frame = read_frame(inp)
    if setup_frame is None:
        return 0
    setup = msgspec.json.decode(setup_frame, type=Setup)
    current = [Reply(ok=True)]
    problem: list[str | None] = [None]

    def dropped(count: int, reason: str) -> None:
        current[0].dropped.append((count, reason))

    def report(message: str | None) -> None:
        problem[0] = message

    log = logging.getLogger("vital_callbacks")
    log.addHandler(_Collect(current))
    log.setLevel(logging.INFO)
    log.propagate = False
    sink = SQLSink(setup.url, auto_migrate=setup.auto_migrate)
    sink.bind(SinkContext(dropped=dropped, problem=report))
    sink.prepare()
    encoder = msgspec.json.Encoder()
    while True:
        body = read_frame(inp)
        if body is None:
            break
        current[0] = Reply(ok=True)
        try:
            _, _, line = body.partition(b" ")
            result = sink.export(decode(line))
        except Exception:
            log.exception("vital-callbacks: the SQL writer process failed on a batch")
            result = ExportResult.FAILURE
        reply = current[0]
        reply.ok = result is ExportResult.SUCCESS
        reply.problem = problem[0]
        out.write(frame(encoder.encode(reply)))
        out.flush()
    sink.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
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
