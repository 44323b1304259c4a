"""The SQL writer process, seen from the application (``VITAL_SQL_WRITER=process``).

The SQL sink's worker thread hands each batch to a child process (:mod:`vital_callbacks.sinks.sql.writer`)
and waits for its reply with the GIL let go, so building and inserting rows no longer takes turns with
the application's threads. Everything else stays where it was: the worker's retries, journal and
counters see an ordinary export that succeeds, fails (retried) or reports dropped rows.

The child is started on the sink's worker (never on the caller's thread), with this interpreter and
its ``sys.path``. When it cannot be started, or ends before its first reply (an embedding server whose
``sys.executable`` is not Python), the sink writes in this process from then on and says so once. When
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

import msgspec

from vital_callbacks.sinks.sql.wire import Reply, Setup, frame

logger = logging.getLogger("vital_callbacks")

FIRST_REPLY_S = 600.0
"""How long the first batch may wait for its reply: the child imports, opens and migrates the store."""
REPLY_S = 120.0
"""How long a later batch may wait (outside a shutdown, which has its own deadline) before the child
is taken for hung, stopped, and the batch retried."""

_inherited: list[subprocess.Popen[bytes]] = []
"""A forked child's references to its parent's writer: kept, never waited for (not its child)."""
_reply_decoder = msgspec.json.Decoder(Reply)


class WriterProcess:
    """One child process that writes the batches of one SQL sink."""

    def __init__(self, url: str, *, auto_migrate: bool) -> None:
        self._setup = msgspec.json.encode(Setup(url=url, auto_migrate=auto_migrate))
        self._proc: subprocess.Popen[bytes] | None = None
        self._answered = False
        """Whether the current process has replied at least once."""
        self.usable = True
        """False once a process could not be started or died before any reply: write in this process."""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the child if none runs (on the sink's worker); never raises."""
        if self._proc is not None or not self.usable:
            return
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        try:
            proc = subprocess.Popen([sys.executable, "-m", "vital_callbacks.sinks.sql.writer"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=env, close_fds=True, bufsize=0)
        except (OSError, ValueError) as exc:
            self._give_up(f"it could not be started ({exc})")
            return
        assert proc.stdin is not None and proc.stdout is not None
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)
        self._proc, self._answered = proc, False
        if not self._send(frame(self._setup), time.monotonic() + FIRST_REPLY_S):
            self._ended()

    def export(self, body: bytes, deadline: float | None) -> Reply | None:
        """The child's reply to one batch (``body``: the journal's encoding of it); ``None`` when it gave
        none (it could not start, died, or did not answer in time, and was stopped)."""
        self.start()
        if self._proc is None:
            return None
        bound = time.monotonic() + (REPLY_S if self._answered else FIRST_REPLY_S)
        until = bound if deadline is None else min(deadline, bound)
        answer = self._receive(until) if self._send(frame(body), until) else None
        if answer is None:
            self._ended()
            return None
        self._answered = True
        try:
            return _reply_decoder.decode(answer)
        except msgspec.DecodeError:
            logger.error("vital-callbacks: the SQL writer process replied with a damaged frame; it is restarted")
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
                    written = os.write(fd, view)
                except BlockingIOError:
                    written = 0
                except OSError:  # the child is gone (a broken pipe)
                    return False
                view = view[written:]
                if view and not selector.select(max(0.0, until - time.monotonic())):
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
        """The child gave no reply: stop it; if it never gave one, write in this process from now on."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        _stop(proc, 1.0)
        if not self._answered:
            self._give_up(f"it ended before its first reply (exit status {proc.returncode})")
        else:
            logger.error("vital-callbacks: the SQL writer process (pid %d) stopped answering (exit status %s); "
                         "its batch is retried through a new one", proc.pid, proc.returncode)

    def _give_up(self, why: str) -> None:
        self.usable = False
        logger.warning("vital-callbacks: the SQL writer process is not used: %s; the SQL sink writes in this "
                       "process", why)

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
