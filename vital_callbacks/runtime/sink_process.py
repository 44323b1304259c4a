"""A sink run in a child process of its own (``VITAL_SINK_PROCESSES=sql``), seen from the application.

The sink's worker thread hands each batch to the child (:mod:`vital_callbacks.runtime.sink_child`) and
waits for its reply with the GIL let go, so turning events into rows no longer takes turns with the
application's threads for it. Everything else stays where it was: the worker's batching, retries,
journal and counters see an ordinary sink whose export succeeds, fails (and is retried) or reports
dropped rows; the sink's ``spill`` runs here, on the same files the child replays.

The child is started on the sink's worker (never on the caller's thread), with this interpreter and
its ``sys.path``, in a session of its own. When no Python can be started (a frozen application, an
embedding server whose ``sys.executable`` is not Python), the sink runs in this process from then on,
and says so once. A child that dies, or says nothing for :data:`HUNG_S` while it works, is stopped: the
batch in hand fails (and is retried), ``stats()`` says why, and another starts after a backoff. A wait
that a shutdown deadline or a flush's timeout cuts short leaves the child running: its late answer is
recognised by its sequence number and set aside. It ends at the end of its socket: at the sink's
shutdown, or when this process dies. A forked child of the application starts its own, and leaves
its parent's alone.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from vital_callbacks.core.codec import encode
from vital_callbacks.core.events import Event
from vital_callbacks.core.settings import Settings
from vital_callbacks.runtime.sink_wire import (
    ALIVE,
    EXPORT,
    FLUSH,
    MAX_FRAME,
    QUIT,
    RESULT,
    SETUP,
    TOLD,
    Result,
    Setup,
    Told,
    frame,
    request,
)
from vital_callbacks.sinks.base import ExportResult, Sink, SinkContext

logger = logging.getLogger("vital_callbacks")

HUNG_S = 30.0
"""A child that works on a request and says nothing (not even its heartbeat) for this long is hung."""
MARGIN_S = 0.25
"""How much sooner than the parent's deadline the child is told to give up, so its answer comes in time."""
BACKOFF_S = (1.0, 30.0)
"""The wait before a new child after one ended: the first, then doubled up to the second."""
SECRET_SETTINGS = frozenset({"api_tokens"})
"""Settings no sink reads (the HTTP API's tokens): not sent to the child."""

_inherited: list[subprocess.Popen[bytes]] = []
"""A forked child's references to its parent's sink processes: kept, never waited for (not its children)."""
_told = msgspec.json.Decoder(Told)
_result = msgspec.json.Decoder(Result)
_TIMEOUT = (b"", b"")


def child_settings(settings: Settings) -> dict[str, object]:
    """The settings as the child must read them: without secrets no sink needs, and with every path
    absolute (the child may start after the application changed its working directory)."""
    from sqlalchemy.engine import make_url  # here: importing the runtime must not import SQLAlchemy

    values = settings.model_dump(mode="json", exclude=set(SECRET_SETTINGS))
    for name, value in values.items():
        if isinstance(getattr(settings, name), Path):
            values[name] = os.path.abspath(value)
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:" \
            and not url.database.startswith("file:") and not os.path.isabs(url.database):
        values["database_url"] = url.set(database=os.path.abspath(url.database)).render_as_string(hide_password=False)
    return values


class ChildProcess:
    """One child process running one sink; requests and answers over a socket pair."""

    def __init__(self, setup: Setup, told: Callable[[Told], None], problem: Callable[[str | None], None]) -> None:
        self._setup = msgspec.json.encode(setup)
        self._label = setup.sink
        self._on_told = told
        self._on_problem = problem
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._seq = 0
        self._heard = False
        """Whether the current child has said anything: if not, its end means no Python runs here."""
        self._not_before = 0.0
        self._backoff = BACKOFF_S[0]
        self._restarting = False
        self.usable = True
        """False once no child can be started here: run the sink in this process."""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child if none runs (and the backoff after the last one is over); never raises."""
        if self._proc is not None or not self.usable or time.monotonic() < self._not_before:
            return
        if not sys.executable or getattr(sys, "frozen", False):
            self._give_up("this process has no Python interpreter to start (a frozen or embedded application)")
            return
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        env["VITAL_SINK_PROCESSES"] = ""  # the child runs its sink itself, never in yet another process
        try:
            proc = subprocess.Popen([sys.executable, "-m", "vital_callbacks.runtime.sink_child", str(theirs.fileno())],
                                    stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env,
                                    start_new_session=True)
        except Exception as exc:
            ours.close()
            self._give_up(f"it could not be started ({type(exc).__name__}: {exc})")
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._proc, self._sock, self._heard = proc, ours, False
        self._buffer.clear()
        if not self._send(frame(SETUP, self._setup), time.monotonic() + HUNG_S):
            self._ended("it could not be given its settings")

    def ask(self, kind: bytes, body: bytes, deadline: Callable[[], float | None], until: float | None = None
            ) -> bool | None:
        """Send one request and wait for its result: the sink's ``ok``, or ``None`` when there is none (no
        child now, or it died or hung, or ``deadline()`` or ``until`` came first)."""
        self.start()
        if self._proc is None:
            return None
        self._seq += 1
        seq = self._seq
        cut = _earliest(deadline(), until)
        seconds = None if cut is None else max(0.0, cut - time.monotonic() - MARGIN_S)
        try:
            if not self._send(request(kind, seq, seconds, body), _earliest(cut, time.monotonic() + HUNG_S)):
                self._ended("it stopped reading its requests")
                return None
            return self._wait(seq, deadline, until)
        except BaseException:
            self._kill()
            raise

    def _wait(self, seq: int, deadline: Callable[[], float | None], until: float | None) -> bool | None:
        heard = time.monotonic()
        while True:
            now = time.monotonic()
            cut = _earliest(deadline(), until)
            if cut is not None and now >= cut:
                return None  # the caller stops waiting; the child goes on, its late answer set aside
            if now - heard >= HUNG_S:
                self._ended(f"it said nothing for {HUNG_S:.0f} s")
                return None
            got = self._frame(min(0.1, heard + HUNG_S - now, (cut - now) if cut is not None else 0.1))
            if got is None:
                self._ended("it ended")
                return None
            if got is _TIMEOUT:
                continue
            heard = time.monotonic()
            self._heard = True
            kind, payload = got
            if kind == TOLD:
                self._on_told(_told.decode(payload))
            elif kind == RESULT:
                result = _result.decode(payload)
                if result.seq == seq:
                    if self._restarting:
                        self._restarting = False
                        self._backoff = BACKOFF_S[0]
                        self._on_problem(None)
                    return result.ok
            elif kind != ALIVE:
                self._ended("it sent a frame this version does not know")
                return None

    def _frame(self, wait: float) -> tuple[bytes, bytes] | None:
        """The next frame; ``_TIMEOUT`` when none came within ``wait``; ``None`` when the child ended."""
        sock = self._sock
        assert sock is not None
        while True:
            if len(self._buffer) >= 4:
                size = int.from_bytes(self._buffer[:4], "big")
                if not 0 < size <= MAX_FRAME:
                    return None  # not a frame: the stream is damaged
                if len(self._buffer) >= 4 + size:
                    data = bytes(self._buffer[4:4 + size])
                    del self._buffer[:4 + size]
                    return data[:1], data[1:]
            if not select.select([sock], [], [], max(0.0, wait))[0]:
                return _TIMEOUT
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk

    def _send(self, data: bytes, until: float | None) -> bool:
        sock = self._sock
        assert sock is not None
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view):]
            except BlockingIOError:  # the child reads less than we write: wait for room, up to ``until``
                if until is not None and time.monotonic() >= until:
                    return False
                select.select([], [sock], [], 0.1)
            except OSError:  # the child is gone
                return False
        return True

    def _ended(self, why: str) -> None:
        """The child died, hung or cannot be talked to: stop it; start another later, or, if it never said
        anything, run the sink in this process from now on."""
        proc = self._proc
        heard = self._heard
        self._kill()
        if proc is None:
            return
        if not heard:
            self._give_up(f"{why} before saying anything (exit status {proc.returncode})")
            return
        self._not_before = time.monotonic() + self._backoff
        message = (f"the {self._label} sink's process (pid {proc.pid}) stopped: {why} (exit status "
                   f"{proc.returncode}); its batch is retried through a new one in {self._backoff:.0f} s")
        self._backoff = min(self._backoff * 2, BACKOFF_S[1])
        self._restarting = True
        logger.error("vital-callbacks: %s", message)
        self._on_problem(message)

    def _kill(self) -> None:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            sock.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _give_up(self, why: str) -> None:
        self.usable = False
        logger.warning("vital-callbacks: the %s sink does not run in a process of its own: %s; it runs in this "
                       "process", self._label, why)

    def close(self, timeout: float) -> None:
        """Ask the child to shut its sink down and end, within ``timeout``; then stop it if it has not."""
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        self.ask(QUIT, b"", lambda: deadline)
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def forget(self) -> None:
        """In a forked child of the application: drop this process's copy of the parent's socket."""
        proc, sock = self._proc, self._sock
        self._proc = self._sock = None
        if sock is not None:
            sock.close()
        if proc is not None:
            _inherited.append(proc)


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


class ProcessSink(Sink):
    """``inner`` (built from ``settings`` under the entry-point name ``entry_point``) run in a child
    process; ``inner`` itself serves here for what must happen here (``spill``) and as the fallback."""

    def __init__(self, inner: Sink, entry_point: str, settings: Settings) -> None:
        self.inner = inner
        self.name = inner.name
        self.coalesce = inner.coalesce
        self.journal_key = inner.journal_key
        level = logger.getEffectiveLevel()
        self.child = ChildProcess(Setup(sink=entry_point, settings=child_settings(settings), log_level=level),
                                  told=self._apply, problem=self._problem)

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
        ok = self.child.ask(EXPORT, encode(batch), self.context.deadline)
        if ok is None:
            return self.inner.export(batch) if not self.child.usable else ExportResult.FAILURE
        return ExportResult.SUCCESS if ok else ExportResult.FAILURE

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        if not self.child.usable:
            return self.inner.force_flush(timeout_s)
        return bool(self.child.ask(FLUSH, b"", self.context.deadline, time.monotonic() + timeout_s))

    def _apply(self, told: Told) -> None:
        """What the sink told its context in the child, told to this process's."""
        for level, text in told.logs:
            logger.log(level, "%s", text)
        for count, reason in told.dropped:
            self.context.dropped(count, reason)
        for delivered, damaged, reason in told.recovered:
            self.context.recovered(delivered, damaged, reason)
        for problem in told.problem:
            self._problem(problem)

    def _problem(self, problem: str | None) -> None:
        self.context.problem(problem)

    def spill(self, batch: Sequence[Event]) -> int:
        return self.inner.spill(batch)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        self.child.close(timeout_s)
        self.inner.shutdown(max(0.0, deadline - time.monotonic()))

    def after_fork(self) -> None:
        self.child.forget()  # the parent's process stays the parent's; this child starts its own
        self.inner.after_fork()
