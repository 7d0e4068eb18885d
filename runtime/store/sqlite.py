"""The default store: one SQLite file in the data dir (embedded, zero set-up).

stdlib ``sqlite3`` in WAL mode, one connection per store. Every call runs in a worker thread
(``trio.to_thread.run_sync``) under a ``trio.Lock``, so the connection is only ever used by one
thread at a time and the event loop never blocks on disk. Several worker processes on one
machine (``cody serve --workers N``) share the file safely: WAL lets readers run beside the one
writer, every write is a ``BEGIN IMMEDIATE`` transaction (it takes the write lock before it
reads, so a read-then-write never fails half-way with ``SQLITE_BUSY``), and a writer that finds
the lock taken waits up to the busy timeout before the call fails with StoreUnavailable.

Schema changes are the numbered migrations of :mod:`runtime.store.migrations`, applied when the
store opens, in one immediate transaction. sqlite3 errors come out as
:class:`~runtime.errors.StoreUnavailable`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TypeVar

import trio

from runtime.clock import SystemClock, WallClock
from runtime.errors import StoreUnavailable
from runtime.store import migrations, sql
from runtime.store.base import SQLStoreBase
from runtime.store.migrations import Tx

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000
"""How long a write waits for another process's write to finish before failing (503)."""


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql_: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        return self._conn.execute(sql_, params).fetchall()

    def run(self, sql_: str, params: tuple[object, ...] = ()) -> int:
        return self._conn.execute(sql_, params).rowcount


@contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[_Tx]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield _Tx(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect(path: Path, now_ms: int) -> sqlite3.Connection:
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        with _immediate(conn) as tx:
            migrations.apply(tx, "sqlite", now_ms)
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteStore(SQLStoreBase):
    """Open with ``async with SQLiteStore.open(path) as store``."""

    dialect = sql.SQLITE

    def __init__(self, conn: sqlite3.Connection, *, clock: WallClock) -> None:
        super().__init__(clock=clock)
        self._conn = conn
        self._lock = trio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, *, clock: WallClock | None = None
                   ) -> AsyncIterator[SQLiteStore]:
        clock = clock or SystemClock()
        try:
            conn = await trio.to_thread.run_sync(_connect, path, clock.now_ms())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the store at {path}: {exc}",
                                   details={"path": str(path)}) from exc
        store = cls(conn, clock=clock)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                async with store._lock:
                    await trio.to_thread.run_sync(conn.close)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            try:
                return await trio.to_thread.run_sync(fn, self._conn)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"store error: {type(exc).__name__}: {exc}",
                                       details={"cause": type(exc).__name__}) from exc

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        return await self._run(lambda conn: fn(_Tx(conn)))

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        def in_tx(conn: sqlite3.Connection) -> T:
            with _immediate(conn) as tx:
                return fn(tx)

        return await self._run(in_tx)
