"""Create or upgrade the SQL store's schema with the Alembic migrations shipped in the package.

``vital-callbacks db upgrade`` and the sinks' auto-migrate both land in :func:`upgrade`, so there is
one way the schema comes to exist. The Alembic config is built in code (no ``alembic.ini``, no URL
in any file) and the version is kept in ``vital_callbacks_version``, so the store can live in a
database whose application runs Alembic too. On PostgreSQL an advisory lock serialises replicas
that auto-migrate at the same moment. A database created by ``create_all`` before migrations
existed is adopted: stamped with the revision its tables match, then upgraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from vital_callbacks.store.engine import is_memory, make_engine, mask_url, normalize_url
from vital_callbacks.store.migrations import VERSION_TABLE

__all__ = ["VERSION_TABLE", "NewerSchemaError", "check_not_newer", "current", "describe_problem", "first_start_lock",
           "head",
           "mask_url", "upgrade", "upgrade_async"]

_LOCK_KEY = 0x5649_5441_4C  # "VITAL": the advisory-lock key that serialises concurrent upgrades
_T = TypeVar("_T")


class NewerSchemaError(RuntimeError):
    """The store was migrated by a newer version of the package than this one."""


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", "vital_callbacks.store:migrations")
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision shipped with this version of the package."""
    newest = _scripts().get_current_head()
    assert newest is not None
    return newest


def _adopt_unversioned(connection: Connection, config: Config) -> None:
    """Stamp a pre-migration database (tables made by ``create_all``) with the revision it matches.

    A ``llm_cost_daily`` made by ``create_all`` has no triggers, so such a database is stamped before
    0004, which installs them and refills the table."""
    names = set(inspect(connection).get_table_names())
    if VERSION_TABLE in names or "llm_calls" not in names:
        return
    if "scores" not in names:
        revision = "0001"
    else:
        indexes = {ix["name"] for ix in inspect(connection).get_indexes("llm_calls")}
        revision = "0003" if "ix_llm_calls_started_cov" in indexes else "0002"
    command.stamp(config, revision)


def _known(revision: str | None) -> bool:
    if revision is None:
        return True
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _check_not_newer_on(connection: Connection) -> None:
    if VERSION_TABLE not in inspect(connection).get_table_names():
        return
    revision = _current_on(connection)
    if not _known(revision):
        raise NewerSchemaError(f"the store's schema is at revision {revision}, newer than this vital-callbacks "
                               f"knows (up to {head()}); upgrade the package")


def _upgrade_on(connection: Connection, revision: str) -> None:
    _check_not_newer_on(connection)
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    config = _config()
    config.attributes["connection"] = connection
    _adopt_unversioned(connection, config)
    command.upgrade(config, revision)


def _current_on(connection: Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _is_async(url: str) -> bool:
    return url.startswith("postgresql+asyncpg")


async def _on_async(url: str, fn: Callable[[Connection], _T], connect_timeout_s: float = 60.0) -> _T:
    from sqlalchemy.ext.asyncio import create_async_engine  # needs greenlet: the `postgres` extra

    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": connect_timeout_s})
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _run_in_private_loop(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a fresh loop in a fresh thread: safe even when the caller
    is itself inside a running event loop (where ``asyncio.run`` would refuse)."""
    out: list[_T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(factory()))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name="vital-db-migrate", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return out[0]


def _on(url: str | Engine, fn: Callable[[Connection], _T]) -> _T:
    if isinstance(url, Engine):
        with url.begin() as conn:
            return fn(conn)
    url = normalize_url(url)
    if _is_async(url):
        return _run_in_private_loop(lambda: _on_async(url, fn))
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            return fn(conn)
    finally:
        engine.dispose()


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Create the schema or bring it to ``revision`` (default: the newest); safe to call every start."""
    _on(url, lambda conn: _upgrade_on(conn, revision))


async def upgrade_async(url: str, revision: str = "head", *, connect_timeout_s: float = 60.0) -> None:
    """:func:`upgrade` for code already on an event loop (the PostgreSQL sink's own loop). Connecting
    is bounded by ``connect_timeout_s``; the upgrade itself is not (a large table takes its time)."""
    url = normalize_url(url)
    if not _is_async(url):
        raise ValueError(f"upgrade_async needs a postgresql+asyncpg URL, got {mask_url(url)}")
    await _on_async(url, lambda conn: _upgrade_on(conn, revision), connect_timeout_s)


def check_not_newer(url: str | Engine) -> None:
    """Raise :class:`NewerSchemaError` when a newer package has migrated the store past what we know."""
    _on(url, _check_not_newer_on)


def describe_problem(exc: BaseException, masked_url: str) -> str:
    """One line for the log and ``stats()``: what is wrong with the store, naming the URL (masked)."""
    where = f"VITAL_DATABASE_URL={masked_url}"
    if isinstance(exc, NewerSchemaError):
        return f"{where}: {exc}"
    if isinstance(exc, OperationalError):
        detail = str(exc.orig) if exc.orig is not None else str(exc)
        hint = ""
        if "unable to open database file" in detail:
            hint = " (does its folder exist, and may this process write there?)"
        elif "readonly" in detail or "read-only" in detail:
            hint = " (the file or its folder is read-only)"
        return f"{where}: the store cannot be opened: {detail}{hint}"
    return f"{where}: {type(exc).__name__}: {exc}".splitlines()[0]


def current(url: str | Engine) -> str | None:
    """The schema's revision, or ``None`` for a database the migrations have never touched."""
    return _on(url, _current_on)


try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent first starts are retried instead
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def first_start_lock(url: str, timeout_s: float | None = None) -> Iterator[None]:
    """Serialise first starts on one SQLite file across processes, so 20 replicas starting at once on a
    fresh file never race to ``CREATE TABLE``: a ``flock`` on the file's folder (not on the database file,
    whose descriptors SQLite's own POSIX locks must not share, and not on a lock file left beside it).
    Where the folder cannot be opened (it does not exist), go on: the migration reports the problem."""
    database = make_url(url).database
    if fcntl is None or not database or is_memory(url):
        yield
        return
    try:
        fd = os.open(os.path.dirname(os.path.abspath(database)), os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if timeout_s is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:  # bounded (a caller's thread): poll, then give up with TimeoutError
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise TimeoutError(f"another process is migrating the store at {mask_url(url)}") from None
                    time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock
