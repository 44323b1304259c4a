"""PostgreSQL helpers for tests: the shared server, throwaway databases, and a private cluster.

The private cluster is a real ``postgres`` started with Debian's ``initdb`` / ``pg_ctl`` in a temp dir
on a free loopback port, so a test may stop and restart it without disturbing anyone else. As root
(containers) the binaries run as the ``postgres`` user, since ``initdb`` refuses to run as root.
Also here: the LLM-call events the fault tests submit, shared with their subprocesses.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vital_callbacks.core.events import LLMCall, TokenUsage

SHARED_URL = os.environ.get("VITAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PG_BIN = Path(os.environ.get("VITAL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement on a fresh asyncpg connection; rows as dicts."""
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(_dsn(url), timeout=10)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def reachable(url: str = SHARED_URL) -> bool:
    try:
        query(url, "SELECT 1")
    except Exception:
        return False
    return True


def _with_database(url: str, database: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{database}"


@contextmanager
def fresh_database(url: str = SHARED_URL) -> Iterator[str]:
    """A new, empty database on the server of ``url`` (dropped afterwards); yields its URL."""
    name = f"vital_t_{uuid.uuid4().hex[:12]}"
    query(url, f"CREATE DATABASE {name}")
    try:
        yield _with_database(url, name)
    finally:
        query(url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateCluster:
    """A throwaway PostgreSQL cluster owned by one test module."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vital-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
                 "--locale=C")

    @staticmethod
    def available() -> bool:
        if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
            return False
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return False
            return shutil.which("runuser") is not None
        return True

    def _pg(self, tool: str, *args: str) -> None:
        command = [str(PG_BIN / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Fast shutdown: open transactions are rolled back and clients disconnected, as in a failover."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def destroy(self) -> None:
        if self.running():
            self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# -- load for the fault tests -----------------------------------------------------------------------
def llm_call(n: int) -> LLMCall:
    """A priced-looking LLM call with a fresh run id (each event is one row)."""
    now = time.time()
    return LLMCall(run_id=str(uuid.uuid4()), parent_run_id=None, trace_id=f"trace-{n % 97}", tenant_id="acme",
                   graph="load", node="call", start_time=now, end_time=now + 0.01, duration_s=0.01,
                   provider="openai", model="gpt-4o-mini", usage=TokenUsage(input=100, output=20, total=120))


def produce(submit: Callable[[LLMCall], None], per_thread: int, threads: int = 8, pause_s: float = 0.0) -> None:
    """Submit ``per_thread`` events from each of ``threads`` threads; returns when all are submitted."""

    def run(offset: int) -> None:
        for i in range(per_thread):
            submit(llm_call(offset + i))
            if pause_s:
                time.sleep(pause_s)

    workers = [threading.Thread(target=run, args=(t * per_thread,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
