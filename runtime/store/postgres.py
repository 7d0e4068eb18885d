"""The PostgreSQL store, for several nodes on several machines (SPEC §13):
``CODY_STORE_URL=postgresql://user@host:5432/db``. Same contract as SQLite, same queries
(:mod:`runtime.store.sql`), same numbered migrations.

Why sync psycopg in worker threads: psycopg 3's async API runs on asyncio only, and Cody runs on
trio. So the store uses psycopg's sync API and a ``psycopg_pool.ConnectionPool``, and runs each
call in a worker thread (``trio.to_thread.run_sync``) under a ``trio.CapacityLimiter`` sized to
the pool: never more threads than pooled connections, so a thread never queues in the pool
behind another (its only wait there is for a connection being made), and the event loop never
blocks on the network. A call is abandoned when its caller is cancelled: the thread finishes its
transaction and hands its connection back (holding its limiter token until then), so
``/ready``'s bound and shutdown never wait on a slow server. The store's writes are idempotent
(upserts are monotonic on seq), so an abandoned write that commits changes nothing a retry would
not. A dialect-neutral driver (SQLAlchemy) would add a layer for six statements.

Outages are weather, not crashes. A lost connection, a server that is down or restarting, or no
connection within ``timeout_s`` (``PoolTimeout``) is :class:`~runtime.errors.StoreUnavailable`
(503 with ``Retry-After``); while the server is down one call at a time probes it and the rest
fail at once, so no call waits longer than ``timeout_s``. Each connection is checked as it is
taken from the pool (without a round trip), so the dead ones a server restart leaves behind are
replaced without failing a call, and the pool reconnects in the background, backing off up to
``reconnect_timeout_s``, after which the next call starts a fresh attempt: the store works
again within seconds of the server's return. A deadlock or serialisation failure, and a
connection that breaks before anything was committed, are retried in place (``ATTEMPTS`` times
in all).

Migrations run at open, in one transaction under ``pg_advisory_xact_lock`` keyed on the schema,
so several nodes starting at once apply each version once. If the server cannot be reached at
start-up the store opens anyway (the node starts and ``/ready`` says the store is down) and
migrates before its first call goes through; any other migration error fails the open.

The schema is the connection's ``search_path`` (default ``public``), set in the URL if need be:
``postgresql://…/db?options=-csearch_path%3Dcody``. It must exist. Connections get
``connect_timeout=3``, TCP keep-alives and ``application_name=cody`` unless the URL sets them.
"""

from __future__ import annotations

import functools
import itertools
import logging
import select
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg.errors
import trio
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from runtime.clock import SystemClock, WallClock
from runtime.errors import StoreUnavailable, ValidationFailed
from runtime.store import migrations, sql
from runtime.store.base import SQLStoreBase
from runtime.store.migrations import Tx

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 3
_RETRYABLE = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
_UNREACHABLE = (psycopg.OperationalError, psycopg.InterfaceError)
_CONNECTION_DEFAULTS = {"connect_timeout": "3", "application_name": "cody", "keepalives": "1",
                        "keepalives_idle": "10", "keepalives_interval": "3",
                        "keepalives_count": "3"}
_MIGRATION_LOCK = ("SELECT pg_advisory_xact_lock("
                   "hashtextextended('cody-store-migrations:' || current_schema(), 0))")


def conninfo_for(url: str) -> str:
    """The URL as libpq conninfo, with our connection defaults where it sets none."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValidationFailed(f"CODY_STORE_URL: {exc}",
                               details={"field": "CODY_STORE_URL"}) from exc
    for key, value in _CONNECTION_DEFAULTS.items():
        params.setdefault(key, value)
    return make_conninfo("", **params)


@functools.lru_cache(maxsize=256)
def _pg(sql_: str) -> str:
    """``?`` placeholders (shared with SQLite) as psycopg's ``%s``."""
    return sql_.replace("?", "%s")


class _Tx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def rows(self, sql_: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return self._conn.execute(_pg(sql_), params or None).fetchall()

    def run(self, sql_: str, params: tuple[object, ...] = ()) -> int:
        return self._conn.execute(_pg(sql_), params or None).rowcount


def _unavailable(exc: psycopg.Error) -> StoreUnavailable:
    details: dict[str, Any] = {"cause": type(exc).__name__}
    if exc.sqlstate:
        details["sqlstate"] = exc.sqlstate
    return StoreUnavailable(f"store unavailable: {type(exc).__name__}: {exc}", details=details)


def _closed_by_server(conn: psycopg.Connection[Any]) -> bool:
    """An idle connection has nothing to read: if its socket is readable, the server has sent
    its goodbye (a restart's "terminating connection") and closed it."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


def _migrate(tx: Tx, now_ms: int) -> list[int]:
    if tx.rows("SELECT current_schema()")[0][0] is None:
        raise ValidationFailed("CODY_STORE_URL: the connection's search_path names no schema "
                               "that exists (create it first)",
                               details={"field": "CODY_STORE_URL"})
    tx.rows(_MIGRATION_LOCK)
    return migrations.apply(tx, "postgres", now_ms)


class PostgresStore(SQLStoreBase):
    """Open with ``async with PostgresStore.open(url) as store``."""

    dialect = sql.POSTGRES

    def __init__(self, pool: ConnectionPool[Any], *, clock: WallClock, pool_size: int,
                 timeout_s: float) -> None:
        super().__init__(clock=clock)
        self._pool = pool
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._limiter = trio.CapacityLimiter(pool_size)
        self._schema_ready = False
        self._schema_lock = trio.Lock()
        self._down: str | None = None
        """Why the last call found the server unreachable (None: it answered)."""
        self._probing = False

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, clock: WallClock | None = None, pool_size: int = 8,
                   timeout_s: float = 3.0, reconnect_timeout_s: float = 5.0
                   ) -> AsyncIterator[PostgresStore]:
        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo_for(url), min_size=1, max_size=pool_size, open=False, name="cody-store",
            kwargs={"autocommit": True}, timeout=timeout_s,
            reconnect_timeout=reconnect_timeout_s)
        pool.open(wait=False)  # starts the pool's threads; connecting happens in them
        store = cls(pool, clock=clock or SystemClock(), pool_size=pool_size,
                    timeout_s=timeout_s)
        try:
            try:
                await store._ensure_schema()
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, _UNREACHABLE):
                    raise
                log.warning("PostgreSQL store unreachable at start-up (%s); migrations run "
                            "when it is back", exc.message)
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(functools.partial(pool.close, timeout=5.0))

    # ------------------------------------------------------------------ calls

    async def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._schema_lock:
            if not self._schema_ready:
                now = self._clock.now_ms()
                await self._call(lambda tx: _migrate(tx, now), transaction=True)
                self._schema_ready = True

    async def _call(self, fn: Callable[[Tx], T], *, transaction: bool) -> T:
        """While the server is known to be down, one call at a time probes it and the others
        fail at once: during an outage no call waits longer than ``timeout_s``, however many
        queue up, and no more than one thread is spent finding out."""
        probe = self._down is not None
        if probe and self._probing:
            raise StoreUnavailable(f"store unavailable: {self._down}",
                                   details={"cause": "StoreDown"})
        self._probing = self._probing or probe
        try:
            result = await trio.to_thread.run_sync(self._in_thread, fn, transaction,
                                                   limiter=self._limiter,
                                                   abandon_on_cancel=True)
        except psycopg.Error as exc:
            if isinstance(exc, _UNREACHABLE) and not isinstance(exc, _RETRYABLE):
                self._down = f"{type(exc).__name__}: {exc}"
            raise _unavailable(exc) from exc
        finally:
            if probe:
                self._probing = False
        self._down = None
        return result

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that the server has not closed. Those a restart left behind
        are dropped here without a round trip (and without the pool's back-off between failed
        checks, which would turn a few dead connections into a timeout)."""
        deadline = time.monotonic() + self._timeout_s
        for attempt in itertools.count():
            conn = self._pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
            if attempt > self._pool_size or not _closed_by_server(conn):
                break
            conn.close()
            self._pool.putconn(conn)  # the pool sees it closed and makes a new one
        try:
            yield conn
        finally:
            self._pool.putconn(conn)  # rolls back what an error left open

    def _in_thread(self, fn: Callable[[Tx], T], transaction: bool) -> T:
        """Retried in place: a deadlock or serialisation failure, and a connection that broke
        before anything was committed (the server closing it as the call began, as a restart
        does): neither can have changed anything. A break during COMMIT is not retried."""
        for attempt in range(1, ATTEMPTS + 1):
            committing = False
            conn: psycopg.Connection[Any] | None = None
            try:
                with self._connection() as conn:
                    if not transaction:
                        return fn(_Tx(conn))
                    with conn.transaction():
                        result = fn(_Tx(conn))
                        committing = True
                    return result
            except _RETRYABLE:
                if attempt == ATTEMPTS:
                    raise
                log.info("store transaction retried after a deadlock or serialisation failure")
            except psycopg.OperationalError:
                if committing or conn is None or not conn.broken or attempt == ATTEMPTS:
                    raise
                log.info("store call retried on a fresh connection: the last one broke")
        raise AssertionError("unreachable")

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        """One statement on an autocommit connection: one round trip, no BEGIN/COMMIT."""
        await self._ensure_schema()
        return await self._call(fn, transaction=False)

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        await self._ensure_schema()
        return await self._call(fn, transaction=True)
