"""The application's end of a sink's child process: starting it, and requests and answers over a socket.

The child is started on the sink's worker (never on the caller's thread), with this interpreter, its
options and its ``sys.path``, in a session of its own. When no Python can be started (a frozen
application, an embedding server whose ``sys.executable`` is not Python), or the child ends before its
sink is built, the sink runs in this process from then on, and says so once. A child that dies, or says nothing for
:data:`HUNG_S` while it works, is stopped: the request in hand fails (and is retried), ``stats()`` says
why, and another starts after a backoff. A wait that a shutdown deadline or a flush's timeout cuts
short leaves the child running: its late answer is recognised by its sequence number and set aside.
It ends at the end of its socket: at the sink's shutdown, or when this process dies. A forked child of
the application starts its own, and leaves its parent's alone. Between requests, what the child said
meanwhile is read on the worker's quiet intervals (:meth:`ChildProcess.hear`). The frames are
:mod:`vital_callbacks.runtime.sink_wire`'s.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import msgspec

from vital_callbacks.runtime.sink_wire import (
    ALIVE,
    EXPORT,
    QUIT,
    RESULT,
    SETUP,
    TOLD,
    Result,
    Setup,
    Told,
    frame,
    frame_size,
    request,
)
from vital_callbacks.sinks.base import DropReason

logger = logging.getLogger("vital_callbacks")

HUNG_S = 30.0
"""A child that works on a request and says nothing (not even its heartbeat) for this long is hung."""
MARGIN_S = 0.25
"""How much sooner than the parent's deadline the child is told to give up, so its answer comes in time."""
BACKOFF_S = (1.0, 30.0)
"""The wait before a new child after one ended: the first, then doubled up to the second."""

_inherited: list[subprocess.Popen[bytes]] = []
"""A forked child's references to its parent's sink processes: kept, never waited for (not its children)."""
_told = msgspec.json.Decoder(Told)
_result = msgspec.json.Decoder(Result)
_TIMEOUT = (b"", b"")


class ChildProcess:
    """One child process running one sink; requests and answers over a socket pair, from one thread
    (the sink's worker)."""

    def __init__(self, setup: Setup, told: Callable[[Told], None], problem: Callable[[str], None],
                 over: Callable[[str], None]) -> None:
        self._setup = msgspec.json.encode(setup)
        self._label = setup.sink
        self._on_told = told
        self._on_problem = problem
        self._on_over = over
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._poll: select.poll | None = None
        self._buffer = bytearray()
        self._seq = 0
        self._results: dict[int, bool] = {}
        """Results read but not yet asked for (only the one in hand is kept; late ones are dropped)."""
        self._drops: dict[int, list[tuple[int, str]]] = {}
        """Rows the sink dropped while working on an export: counted only if that export succeeds (a
        failed or abandoned export is retried, and its rows rejected again)."""
        self._exports: set[int] = set()
        """The sequence numbers of the exports in the child (other requests' drops count at once)."""
        self._heard_at = 0.0
        self._alive = False
        """Whether the current child said it is alive (its sink built): if it ends before, no child can run."""
        self._pending: int | None = None
        """The last request the child is still working on after we stopped waiting for it."""
        self._waiting: int | None = None
        """The request being waited for now; any other's result is a late one, set aside."""
        self._not_before = 0.0
        self._backoff = BACKOFF_S[0]
        self._held = 0
        """What the sink in the child last said it holds undelivered (``Sink.in_flight``)."""
        self.restart_message: str | None = None
        """Set while ``stats()`` shows that the child stopped and another is due."""
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
            proc = subprocess.Popen([sys.executable, *interpreter_flags(), "-m", "vital_callbacks.runtime.sink_child",
                                     str(theirs.fileno())],
                                    stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env,
                                    start_new_session=True)
        except Exception as exc:
            ours.close()
            self._give_up(f"it could not be started ({type(exc).__name__}: {exc})")
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        poll = select.poll()  # not select(): it fails on descriptors past 1024, common in a long-lived server
        poll.register(ours, select.POLLIN)
        self._proc, self._sock, self._poll = proc, ours, poll
        self._alive, self._pending, self._heard_at = False, None, time.monotonic()
        self._buffer.clear()
        self._results.clear()
        self._drops.clear()
        self._exports.clear()
        if not self._send(frame(SETUP, self._setup), None):
            self._ended("it could not be given its settings")

    def ask(self, kind: bytes, body: bytes, deadline: Callable[[], float | None], until: float | None = None
            ) -> bool | None:
        """Send one request and wait for its result: the sink's ``ok``, or ``None`` when there is none (no
        child now, or it died or hung, or ``deadline()`` or ``until`` came first)."""
        self.start()
        if self._proc is None:
            return None
        try:
            self._read_ready()
            if self._proc is None:
                return None
            self._heard_at = time.monotonic()  # an idle child says nothing: its silence counts from now
            self._seq += 1
            seq = self._seq
            self._waiting = seq
            if kind == EXPORT:
                self._exports.add(seq)
            cut = _earliest(deadline(), until)
            seconds = None if cut is None else max(0.0, cut - time.monotonic() - MARGIN_S)
            if not self._send(request(kind, seq, seconds, body), lambda: _earliest(deadline(), until)):
                return None
            return self._wait(seq, lambda: _earliest(deadline(), until))
        except BaseException:
            self._kill()
            raise
        finally:
            self._waiting = None

    def hear(self) -> None:
        """Between requests: handle what the child said meanwhile, and notice that it ended; never waits."""
        if self._sock is None:
            return
        try:
            self._read_ready()
        except BaseException:
            self._kill()
            raise

    def _wait(self, seq: int, cut: Callable[[], float | None]) -> bool | None:
        while True:
            if seq in self._results:
                ok = self._results.pop(seq)
                self._exports.discard(seq)
                drops = self._drops.pop(seq, [])
                if ok:
                    for count, reason in drops:
                        self._on_told(Told(dropped=[(count, reason)]))
                if self.restart_message is not None:
                    self._recovered()
                return ok
            now = time.monotonic()
            limit = cut()
            if limit is not None and now >= limit:
                self._pending = seq  # the child goes on; its late result and drops are set aside
                return None
            if not self._io(min(0.1, max(0.0, (limit - now) if limit is not None else 0.1)), want_write=False):
                return None

    def _io(self, wait: float, *, want_write: bool) -> bool:
        """Wait up to ``wait`` for the socket; read and handle what came. False when the child ended or is
        hung (then it is stopped); True otherwise (and, with ``want_write``, when it may be written)."""
        assert self._poll is not None and self._sock is not None
        if want_write:
            self._poll.modify(self._sock, select.POLLIN | select.POLLOUT)
        try:
            events = self._poll.poll(wait * 1000)
        finally:
            if want_write and self._poll is not None and self._sock is not None:
                self._poll.modify(self._sock, select.POLLIN)
        if any(e & (select.POLLIN | select.POLLHUP | select.POLLERR) for _, e in events):
            if not self._read_ready():
                return False
        elif time.monotonic() - self._heard_at >= HUNG_S:
            self._ended(f"it said nothing for {HUNG_S:.0f} s")
            return False
        return True

    def _read_ready(self) -> bool:
        """Read what the socket holds now and handle every whole frame; False when the child ended."""
        sock = self._sock
        assert sock is not None
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._ended("it ended")
                return False
            self._buffer += chunk
        while len(self._buffer) >= 4:
            size = frame_size(bytes(self._buffer[:4]))
            if size is None:
                self._ended("its answers are not frames")
                return False
            if len(self._buffer) < 4 + size:
                break
            kind, payload = bytes(self._buffer[4:5]), bytes(self._buffer[5:4 + size])
            del self._buffer[:4 + size]
            self._heard_at = time.monotonic()
            if not self._handle(kind, payload):
                return False
        return True

    def _handle(self, kind: bytes, payload: bytes) -> bool:
        if kind == ALIVE:
            self._alive = True
        elif kind == TOLD:
            told = _told.decode(payload)
            if told.in_flight is not None:
                self._held = told.in_flight
            elif told.seq == 0 and told.dropped:  # the sink's own threads, during a request: what it held, less
                self._held = max(0, self._held - sum(count for count, _ in told.dropped))
            if told.dropped and told.seq in self._exports:
                self._drops.setdefault(told.seq, []).extend(told.dropped)
                told.dropped = []
            if told.dropped or told.recovered or told.problem or told.logs:
                self._on_told(told)
        elif kind == RESULT:
            result = _result.decode(payload)
            self._held = result.in_flight
            if result.seq == self._waiting:
                self._results[result.seq] = result.ok
            else:  # a late answer: its request was resolved without it (retried or kept)
                if result.seq == self._pending:
                    self._pending = None
                self._exports.discard(result.seq)
                self._drops.pop(result.seq, None)  # its batch is retried or kept: its drops come again
        else:
            self._ended("it sent a frame this version does not know")
            return False
        return True

    def _send(self, data: bytes, cut: Callable[[], float | None] | None) -> bool:
        """Write one whole frame, reading what the child says meanwhile. False when the child ended or
        hung, or ``cut()`` came mid-frame (then the child is stopped: a frame is never left half-written)."""
        sock = self._sock
        assert sock is not None
        view = memoryview(data)
        while view:
            try:
                view = view[sock.send(view):]
                continue
            except BlockingIOError:
                pass
            except OSError:  # the child is gone
                self._ended("it stopped reading")
                return False
            limit = cut() if cut is not None else None
            if limit is not None and time.monotonic() >= limit:
                self._kill()  # not a crash: the next request starts another at once
                return False
            if not self._io(0.1, want_write=True) or self._sock is None:
                return False
        return True

    def _ended(self, why: str) -> None:
        """The child died or hung: stop it, and start another after a backoff; if it ended before it said
        it was alive (its sink could not be built there), run the sink in this process from now on."""
        proc, alive = self._proc, self._alive
        self._kill()
        if proc is None:
            return
        if not alive and proc.returncode is not None and proc.returncode > 0:
            self._give_up(f"{why} before its sink was built (exit status {proc.returncode})")
            return
        self._not_before = time.monotonic() + self._backoff
        self.restart_message = (f"the {self._label} sink's process (pid {proc.pid}) stopped: {why} (exit status "
                                f"{proc.returncode}); a new one starts in {self._backoff:.0f} s")
        self._backoff = min(self._backoff * 2, BACKOFF_S[1])
        logger.error("vital-callbacks: %s", self.restart_message)
        self._on_problem(self.restart_message)

    def _recovered(self) -> None:
        self._backoff = BACKOFF_S[0]
        message, self.restart_message = self.restart_message, None
        if message is not None:
            self._on_over(message)

    def _kill(self) -> None:
        proc, sock = self._proc, self._sock
        self._proc = self._sock = self._poll = None
        self._pending = None
        if sock is not None:
            sock.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._lost_held()

    def _lost_held(self) -> None:
        """The child is gone with what its sink held undelivered: counted, not silently lost."""
        held, self._held = self._held, 0
        if held > 0:
            self._on_told(Told(dropped=[(held, DropReason.PROCESS_ENDED)]))

    def _give_up(self, why: str) -> None:
        self.usable = False
        logger.warning("vital-callbacks: the %s sink does not run in a process of its own: %s; it runs in this "
                       "process", self._label, why)

    def close(self, timeout: float) -> None:
        """Ask the child to shut its sink down and end, within ``timeout``; stop it at once if it is still
        working on a request we stopped waiting for, or if it has not ended by then."""
        if self._proc is None:
            return
        deadline = time.monotonic() + timeout
        if self._pending is None and self.ask(QUIT, b"", lambda: deadline - MARGIN_S):
            self._held = 0  # shut down: the sink counted what it could not deliver itself
        proc, sock = self._proc, self._sock
        self._proc = self._sock = self._poll = None
        if sock is not None:
            sock.close()
        if proc is not None:
            try:
                proc.wait(max(0.0, deadline - MARGIN_S - time.monotonic()) if self._pending is None else 0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._pending = None
        self._lost_held()

    def forget(self) -> None:
        """In a forked child of the application: drop this process's copy of the parent's socket."""
        proc, sock = self._proc, self._sock
        self._proc = self._sock = self._poll = None
        if sock is not None:
            sock.close()
        if proc is not None:
            _inherited.append(proc)


def interpreter_flags() -> list[str]:
    """This interpreter's command-line options (``-O``, ``-W``, ``-X utf8``...), as ``multiprocessing``
    passes them to its children, so the child runs as the application does; but not ``-E`` or ``-I``,
    which would make it ignore the ``PYTHONPATH`` it finds this package by (``-I`` leaves ``-s`` and ``-P``)."""
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
    isolated = ["-s", "-P"] if getattr(sys.flags, "safe_path", False) else ["-s"]  # -P: Python 3.11 on
    return [kept for flag in flags if flag != "-E" for kept in (isolated if flag == "-I" else [flag])]


def _earliest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
