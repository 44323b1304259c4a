"""A sink run in a child process of its own (``VITAL_SINK_PROCESSES=sql``), seen from the application.

The sink's worker thread hands each batch to the child (:mod:`vital_callbacks.runtime.sink_child`) and
waits for its reply with the GIL let go, so turning events into rows no longer takes turns with the
application's threads for it. Everything else stays where it was: the worker's batching, retries,
journal and counters see an ordinary sink whose export succeeds, fails (and is retried) or reports
dropped rows; the sink's ``spill`` runs here, on the same files the child replays.

The child is started on the sink's worker (never on the caller's thread), with this interpreter and
its ``sys.path``. When it cannot be started, or ends before its first reply (an embedding server whose
``sys.executable`` is not Python), the sink runs in this process from then on, and says so once. When
it dies later, the batch in hand fails (and is retried) and the next export starts another. It ends
at the end of its stdin: at the sink's shutdown, or when this process dies. A forked child of the
application starts its own, and leaves its parent's alone.
"""

from __future__ import annotations

import logging
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Sequence

import msgspec

from vital_callbacks.core.codec import encode
from vital_callbacks.core.events import Event
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime.sink_wire import EXPORT, FLUSH, SHUTDOWN, Reply, Setup, frame, request
from vital_callbacks.sinks.base import ExportResult, Sink, SinkContext

logger = logging.getLogger("vital_callbacks")

FIRST_REPLY_S = 600.0
"""How long the first request may wait for its reply: the child imports, opens and migrates the store."""
REPLY_S = 120.0
"""How long a later request may wait (outside a shutdown, which has its own deadline) before the child
is taken for hung, stopped, and the batch retried."""
SECRET_SETTINGS = frozenset({"api_tokens"})
"""Settings no sink reads (the HTTP API's tokens): not sent to the child."""

_inherited: list[subprocess.Popen[bytes]] = []
"""A forked child's references to its parent's sink processes: kept, never waited for (not its children)."""
_reply_decoder = msgspec.json.Decoder(Reply)


class ChildProcess:
    """One child process running one sink; requests and replies over its stdin and stdout."""

    def __init__(self, setup: Setup) -> None:
        self._setup = msgspec.json.encode(setup)
        self._label = setup.sink
        self._proc: subprocess.Popen[bytes] | None = None
        self._answered = False
        """Whether the current process has replied at least once."""
        self.usable = True
        """False once a process could not be started or died before any reply: run the sink here."""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child if none runs; never raises."""
        if self._proc is not None or not self.usable:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "vital_callbacks.runtime.sink_child"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True, bufsize=0)
        except (OSError, ValueError) as exc:
            self._give_up(f"it could not be started ({exc})")
            return
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc, self._answered = proc, False
        if not self._send(frame(self._setup), time.monotonic() + FIRST_REPLY_S):
            self._ended()

    def ask(self, op: bytes, body: bytes, deadline: float | None) -> Reply | None:
        """The child's reply to one request; ``None`` when it gave none (it could not start, died, or did
        not answer in time, and was stopped)."""
        self.start()
        if self._proc is None:
            return None
        now = time.monotonic()
        until = now + (REPLY_S if self._answered else FIRST_REPLY_S)
        if deadline is not None:
            until = min(until, deadline)
        data = request(op, None if deadline is None else max(0.0, deadline - now), body)
        answer = self._receive(until) if self._send(data, until) else None
        if answer is None:
            self._ended()
            return None
        self._answered = True
        try:
            return _reply_decoder.decode(answer)
        except msgspec.DecodeError:
            logger.error("vital-callbacks: the %s sink's process replied with a damaged frame; it is restarted",
                         self._label)
            self._ended()
            return None

    def _send(self, data: bytes, until: float) -> bool:
        assert self._proc is not None and self._proc.stdin is not None
        fd = self._proc.stdin.fileno()
        view = memoryview(data)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_WRITE)
            while view:
                try:
                    view = view[os.write(fd, view):]
                except BlockingIOError:
                    if not selector.select(max(0.0, until - time.monotonic())):
                        return False
                except OSError:  # the child is gone (a broken pipe)
                    return False
        return True

    def _receive(self, until: float) -> bytes | None:
        header = self._read(4, until)
        return None if header is None else self._read(int.from_bytes(header, "big"), until)

    def _read(self, size: int, until: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        chunks: list[bytes] = []
        left = size
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while left:
                try:
                    chunk = os.read(fd, left)
                except BlockingIOError:
                    if not selector.select(max(0.0, until - time.monotonic())):
                        return None  # no answer in time
                    continue
                if not chunk:
                    return None  # the child ended
                chunks.append(chunk)
                left -= len(chunk)
        return b"".join(chunks)

    def _ended(self) -> None:
        """The child gave no reply: stop it; if it never gave one, run the sink here from now on."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _stop(proc, 1.0)
        if not self._answered:
            self._give_up(f"it ended before its first reply (exit status {proc.returncode})")
        else:
            logger.error("vital-callbacks: the %s sink's process (pid %d) stopped answering (exit status %s); "
                         "its batch is retried through a new one", self._label, proc.pid, proc.returncode)

    def _give_up(self, why: str) -> None:
        self.usable = False
        logger.warning("vital-callbacks: the %s sink does not run in a process of its own: %s; it runs in this "
                       "process", self._label, why)

    def close(self, timeout: float) -> None:
        """End the child: the end of its stdin, then a kill if it has not ended within ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc, timeout)

    def forget(self) -> None:
        """In a forked child of the application: drop this process's copies of the parent's pipes."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            _inherited.append(proc)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class ProcessSink(Sink):
    """``inner`` (built from ``settings`` under the entry-point name ``entry_point``) run in a child
    process; ``inner`` itself serves here for what must happen here (``spill``) and as the fallback."""

    def __init__(self, inner: Sink, entry_point: str, settings: Settings) -> None:
        self.inner = inner
        self.name = inner.name
        self.coalesce = inner.coalesce
        self.journal_key = inner.journal_key
        values = settings.model_dump(mode="json", exclude=set(SECRET_SETTINGS))
        self.child = ChildProcess(Setup(sink=entry_point, settings=values))

    def bind(self, context: SinkContext) -> None:
        super().bind(context)
        self.inner.bind(context)

    def prepare(self) -> None:
        self.child.start()
        if not self.child.usable:
            self.inner.prepare()

    def export(self, batch: Sequence[Event]) -> ExportResult:
        if not self.child.usable:
            return self.inner.export(batch)
        reply = self.child.ask(EXPORT, encode(batch), self.context.deadline())
        if reply is None:
            return self.inner.export(batch) if not self.child.usable else ExportResult.FAILURE
        self._apply(reply)
        return ExportResult.SUCCESS if reply.ok else ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        if not self.child.usable:
            return self.inner.force_flush(timeout_s)
        if self.child.pid is None:
            return True  # no process yet: nothing was given to one
        reply = self.child.ask(FLUSH, b"", time.monotonic() + timeout_s)
        if reply is None:
            return False
        self._apply(reply)
        return reply.ok

    def _apply(self, reply: Reply) -> None:
        """What the sink told its context in the child, told to this process's."""
        for level, text in reply.logs:
            logger.log(level, "%s", text)
        for count, reason in reply.dropped:
            self.context.dropped(count, reason)
        for delivered, damaged, reason in reply.recovered:
            self.context.recovered(delivered, damaged, reason)
        self.context.problem(reply.problem)

    def spill(self, batch: Sequence[Event]) -> int:
        return self.inner.spill(batch)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        if self.child.pid is not None:
            reply = self.child.ask(SHUTDOWN, b"", deadline)  # the sink's last counts (an SDK's queue left)
            if reply is not None:
                self._apply(reply)
        self.child.close(max(0.0, deadline - time.monotonic()))
        self.inner.shutdown(max(0.0, deadline - time.monotonic()))

    def after_fork(self) -> None:
        self.child.forget()  # the parent's process stays the parent's; this child starts its own
        self.inner.after_fork()
