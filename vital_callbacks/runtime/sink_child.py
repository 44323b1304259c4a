"""The child process that runs one sink for an application (``VITAL_SINK_PROCESSES``).

    python -m vital_callbacks.runtime.sink_child FD   (started by ``runtime.sink_process.ProcessSink``)

Turning events into rows or requests is Python work that holds the GIL, which the application's threads
then wait for; here it holds this process's own. The sink is built here from the parent's settings, by
its entry-point name, and runs as it would on its worker: each request (see
:mod:`vital_callbacks.runtime.sink_wire`) is one ``export``, ``force_flush`` or ``shutdown``. What the
sink tells its context (dropped, recovered, its problem) and logs goes to the parent the moment it
happens, which counts and logs it as its own.

It ends at the end of its socket (the parent closed it, or died), after a shutdown request, or within
a second of finding itself an orphan (its parent gone while it works). It runs in a session of its own,
so a terminal's Ctrl-C or a signal to the application's group does not reach it: the parent decides when
it is done, after its own shutdown flush.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time

import msgspec

from vital_callbacks.core.codec import unpack_each
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime.registry import sink_class
from vital_callbacks.runtime.sink_wire import (
    ALIVE,
    EXPORT,
    FLUSH,
    QUIT,
    RESULT,
    SETUP,
    TOLD,
    Result,
    Setup,
    Told,
    frame,
    frame_size,
    parse_request,
)
from vital_callbacks.sinks.base import DropReason, ExportResult, Sink, SinkContext

logger = logging.getLogger("vital_callbacks")
_encode = msgspec.json.Encoder().encode


def holding(sink: Sink | None) -> int:
    """``sink.in_flight``, 0 if it cannot say."""
    try:
        return int(sink.in_flight) if sink is not None else 0
    except Exception:
        return 0


class _Channel:
    """This end of the socket: whole frames out, from any thread; frames in, on the main thread.

    What the sink holds undelivered (``in_flight``) is read under the lock that orders the frames, and
    only between requests, so every count the parent reads is newer than the reports before it, and
    never counts a batch the sink is being handed (the parent retries that one if the child dies)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()
        self.sink: Sink | None = None
        self._busy = False
        """Set while a request (or the sink's preparation) runs: the heartbeat says so every second."""

    @property
    def busy(self) -> bool:
        return self._busy

    def send(self, kind: bytes, body: bytes = b"") -> None:
        with self._lock:
            self._sock.sendall(frame(kind, body))

    def begin(self) -> None:
        with self._lock:
            self._busy = True

    def end(self, seq: int | None = None, ok: bool = False) -> None:
        """The request ``seq`` is done (``None``: the sink's preparation): its answer, with what the sink
        holds after it, and no longer busy, in one step."""
        with self._lock:
            if seq is not None:
                self._sock.sendall(frame(RESULT, _encode(Result(seq, ok, holding(self.sink)))))
            self._busy = False

    def tell(self, told: Told, *, wait: bool = True) -> None:
        """Send a report, with what the sink holds when no request runs. With ``wait`` False (the
        heartbeat), skipped when a frame is being sent or the parent is not reading."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            if not self._busy and self.sink is not None:
                told.in_flight = holding(self.sink)
            self._write(frame(TOLD, _encode(told)), wait)
        finally:
            self._lock.release()

    def beat(self) -> None:
        """A heartbeat that never waits: skipped when the parent is not reading (its buffer full)."""
        if not self._lock.acquire(blocking=False):
            return  # a frame is being sent: that says it is alive
        try:
            self._write(frame(ALIVE), False)
        finally:
            self._lock.release()

    def _write(self, data: bytes, wait: bool) -> None:
        if wait:
            self._sock.sendall(data)
            return
        try:
            sent = self._sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if sent < len(data):
            self._sock.sendall(data[sent:])  # a frame is never left half-sent

    def receive(self) -> tuple[bytes, bytes] | None:
        header = self._reader.read(4)
        if len(header) < 4:
            return None
        size = frame_size(header)
        if size is None:
            return None
        data = self._reader.read(size)
        return (data[:1], data[1:]) if len(data) == size else None


class _Told(logging.Handler):
    """Sends what the sink tells its context, and the library's log records, as they happen."""

    def __init__(self, channel: _Channel, level: int) -> None:
        super().__init__(level)
        self._channel = channel
        self._sending = threading.local()
        self.seq = 0
        """The request being worked on (0 between requests)."""

    def _send(self, told: Told, *, wait: bool = True) -> None:
        if getattr(self._sending, "now", False):
            return  # a failure to send, logged: not sent again
        # A report made on the main thread belongs to the request it runs; one from the sink's own threads
        # (an SDK's exporter counting its losses) to none: it is counted whatever the request's outcome.
        told.seq = self.seq if threading.current_thread() is threading.main_thread() else 0
        self._sending.now = True
        try:
            self._channel.tell(told, wait=wait)
        except OSError:
            pass  # the parent is gone: nobody to tell
        finally:
            self._sending.now = False

    def holding(self) -> None:
        """Only what the sink holds (the heartbeat's report; never waits)."""
        self._send(Told(), wait=False)

    def dropped(self, count: int, reason: str) -> None:
        self._send(Told(dropped=[(count, reason)]))

    def recovered(self, delivered: int, damaged: int, reason: str) -> None:
        self._send(Told(recovered=[(delivered, damaged, reason)]))

    def problem(self, message: str | None) -> None:
        self._send(Told(problem=[message]))

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self._send(Told(logs=[(record.levelno, text)]))


def _heartbeat(channel: _Channel, parent: int, told: _Told) -> None:
    """Every second: end the process when it is an orphan; say it is alive while it works; and, between
    requests, say what the sink holds undelivered while it holds any, and once more when that is back
    to none (an SDK delivering on its own thread after the export that handed it over was answered),
    so the parent counts as lost with the child only what it still held."""
    said = False
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)  # what it was writing is rolled back by the store; the journal replays it
        try:
            if channel.busy:
                channel.beat()
                continue
            holds = holding(channel.sink) > 0
            if holds or said:
                told.holding()
            said = holds
        except OSError:
            os._exit(0)


def _export(sink: Sink, told: _Told, body: bytes) -> bool:
    events, bad = unpack_each(body)
    if bad:
        logger.error("vital-callbacks: %d events could not be carried to the %s sink's process (a value the "
                     "encoder does not know, where the event needs one); counted as rejected", bad, sink.name)
        told.dropped(bad, DropReason.REJECTED)
    return not events or sink.export(events) is ExportResult.SUCCESS


def serve(sock: socket.socket, parent: int) -> int:
    channel = _Channel(sock)
    first = channel.receive()
    if first is None or first[0] != SETUP:
        return 0
    setup = msgspec.json.decode(first[1], type=Setup)
    told = _Told(channel, setup.log_level)
    logger.addHandler(told)
    logger.setLevel(setup.log_level)
    logger.propagate = False
    sink = sink_class(setup.sink).from_settings(Settings.model_validate(setup.settings))
    deadline: list[float | None] = [None]
    sink.bind(SinkContext(dropped=told.dropped, problem=told.problem, recovered=told.recovered,
                          deadline=lambda: deadline[0]))
    channel.sink = sink
    channel.send(ALIVE)  # its sink is built: from here on, an end is a crash to restart, not a setup that fails
    threading.Thread(target=_heartbeat, args=(channel, parent, told), name="vital-sink-heartbeat",
                     daemon=True).start()
    channel.begin()
    try:
        sink.prepare()
    except Exception:
        logger.exception("vital-callbacks: sink %r failed to prepare; its first export tries again", setup.sink)
    channel.end()
    while True:
        received = channel.receive()
        if received is None:  # the parent closed the socket without a shutdown request, or died
            sink.shutdown(1.0)
            return 0
        kind, payload = received
        seq, seconds, body = parse_request(payload)
        deadline[0] = None if seconds is None else time.monotonic() + seconds
        told.seq = seq
        channel.begin()
        ok = False
        try:
            if kind == EXPORT:
                ok = _export(sink, told, body)
            elif kind == FLUSH:
                ok = bool(sink.force_flush(10.0 if seconds is None else seconds))
            elif kind == QUIT:
                sink.shutdown(10.0 if seconds is None else seconds)
                ok = True
        except Exception:
            logger.exception("vital-callbacks: sink %r raised in its process", setup.sink)
        told.seq = 0
        channel.end(seq, ok)
        if kind == QUIT:
            return 0


def main() -> int:
    parent = os.getppid()
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        return serve(sock, parent)
    except OSError:  # the parent is gone: nobody is waiting for the reply
        return 0


if __name__ == "__main__":
    sys.exit(main())
