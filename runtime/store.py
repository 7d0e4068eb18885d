"""The durable store (SPEC §10): threads and their Responses in one SQLite file.

stdlib ``sqlite3`` in WAL mode, one connection per store. Every call runs in a worker thread
(``trio.to_thread.run_sync``) under a ``trio.Lock``, so the connection is only ever used by one
thread at a time and the event loop never blocks on disk. Timestamps are milliseconds.

Responses are upserted by run id and monotonic on ``seq``: a row is only replaced by a
Response folded from more of its stream, so a replayed checkpoint or a second projector
changes nothing. A deleted thread keeps a tombstone row (``deleted = 1``) so that a Response of
a run still in flight when its thread was deleted is dropped when it is persisted, rather than
resurrecting rows nobody can see; submitting to that id again starts it afresh.

sqlite3 errors come out as :class:`~runtime.errors.StoreUnavailable`.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from pydantic import BaseModel, ConfigDict, Field

from runtime.clock import SystemClock, WallClock
from runtime.errors import Conflict, NotFound, StoreUnavailable
from runtime.schema import Response

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id         TEXT PRIMARY KEY,
    title      TEXT,
    settings   TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS responses (
    run_id     TEXT PRIMARY KEY,
    thread_id  TEXT    NOT NULL,
    turn_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_thread ON responses (thread_id, created_at);
CREATE INDEX IF NOT EXISTS responses_by_turn ON responses (turn_id);
CREATE INDEX IF NOT EXISTS threads_by_update ON threads (deleted, updated_at);
"""


class Thread(BaseModel):
    """A conversation: its turns are the Responses that name it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    """Model settings for the thread (free-form: model, provider_id, reasoning_effort, ...)."""
    created_at: int
    updated_at: int
    """Last change of the thread itself or, later, of any of its persisted Responses."""


def _thread(row: sqlite3.Row) -> Thread:
    return Thread(id=row["id"], title=row["title"], settings=json.loads(row["settings"]),
                  created_at=row["created_at"], updated_at=row["updated_at"])


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


class SQLiteStore:
    """Open with ``async with SQLiteStore.open(path) as store``."""

    def __init__(self, conn: sqlite3.Connection, *, clock: WallClock) -> None:
        self._conn = conn
        self._clock = clock
        self._lock = trio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path, *, clock: WallClock | None = None
                   ) -> AsyncIterator[SQLiteStore]:
        try:
            conn = await trio.to_thread.run_sync(_connect, path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the store at {path}: {exc}",
                                   details={"path": str(path)}) from exc
        store = cls(conn, clock=clock or SystemClock())
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

    async def ping(self) -> None:
        await self._run(lambda c: c.execute("SELECT 1").fetchone())

    # ------------------------------------------------------------------ responses

    @staticmethod
    def _upsert(conn: sqlite3.Connection, response: Response, body: str, seq: int) -> bool:
        row = conn.execute("SELECT deleted FROM threads WHERE id = ?",
                           (response.thread_id,)).fetchone()
        if row is not None and row["deleted"]:
            return False
        cur = conn.execute(
            "INSERT INTO responses (run_id, thread_id, turn_id, seq, status, "
            "created_at, updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET thread_id = excluded.thread_id, "
            "turn_id = excluded.turn_id, seq = excluded.seq, status = excluded.status, "
            "created_at = excluded.created_at, updated_at = excluded.updated_at, "
            "body = excluded.body WHERE responses.seq < excluded.seq",
            (response.id, response.thread_id, response.turn_id, seq, response.status,
             response.created_at, response.updated_at, body))
        if cur.rowcount and row is not None:
            conn.execute("UPDATE threads SET updated_at = max(updated_at, ?) "
                         "WHERE id = ?", (response.updated_at, response.thread_id))
        return cur.rowcount > 0

    async def upsert_response(self, response: Response, seq: int) -> bool:
        """Store ``response`` as folded up to ``seq``, unless the stored one is at ``seq`` or
        later (or its thread was deleted). Returns whether it wrote."""
        return (await self.upsert_responses([(response, seq)]))[0]

    async def upsert_responses(self, items: Sequence[tuple[Response, int]]) -> list[bool]:
        """Many upserts (each as :meth:`upsert_response`) in one transaction and one thread
        hop: what the projector does with a batch of checkpoints."""
        bodies = [(resp, resp.model_dump_json(), seq) for resp, seq in items]

        def write(conn: sqlite3.Connection) -> list[bool]:
            with _transaction(conn):
                return [self._upsert(conn, resp, body, seq) for resp, body, seq in bodies]

        return await self._run(write)

    async def get_response(self, run_id: str) -> Response | None:
        row = await self._run(lambda c: c.execute(
            "SELECT body FROM responses WHERE run_id = ?", (run_id,)).fetchone())
        return None if row is None else Response.model_validate_json(row["body"])

    async def get_response_seq(self, run_id: str) -> int | None:
        """The seq the stored Response was folded up to."""
        row = await self._run(lambda c: c.execute(
            "SELECT seq FROM responses WHERE run_id = ?", (run_id,)).fetchone())
        return None if row is None else int(row["seq"])

    async def list_thread_responses(self, thread_id: str) -> list[Response]:
        """The thread's Responses in turn order (created_at, then insertion)."""
        rows = await self._run(lambda c: c.execute(
            "SELECT body FROM responses WHERE thread_id = ? ORDER BY created_at, rowid",
            (thread_id,)).fetchall())
        return [Response.model_validate_json(r["body"]) for r in rows]

    # ------------------------------------------------------------------ threads

    def _insert_thread(self, conn: sqlite3.Connection, thread_id: str, title: str | None,
                       settings: dict[str, Any], *, exist_ok: bool) -> Thread:
        """Create (or restart a deleted) thread; ``exist_ok`` returns a live one as is."""
        with _transaction(conn):
            row = conn.execute("SELECT * FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is not None and not row["deleted"]:
                if exist_ok:
                    return _thread(row)
                raise Conflict(f"thread {thread_id} already exists",
                               details={"thread_id": thread_id})
            now = self._clock.now_ms()
            conn.execute(
                "INSERT INTO threads (id, title, settings, created_at, updated_at, deleted) "
                "VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET "
                "title = excluded.title, settings = excluded.settings, "
                "created_at = excluded.created_at, updated_at = excluded.updated_at, "
                "deleted = 0",
                (thread_id, title, json.dumps(settings), now, now))
            return Thread(id=thread_id, title=title, settings=settings, created_at=now,
                          updated_at=now)

    async def create_thread(self, thread_id: str, title: str | None = None,
                            settings: dict[str, Any] | None = None) -> Thread:
        """Raises Conflict if a thread with this id exists."""
        return await self._run(lambda c: self._insert_thread(c, thread_id, title,
                                                             settings or {}, exist_ok=False))

    async def ensure_thread(self, thread_id: str) -> Thread:
        """The thread, created (untitled) if it does not exist: what submit uses."""
        return await self._run(lambda c: self._insert_thread(c, thread_id, None, {},
                                                             exist_ok=True))

    async def get_thread(self, thread_id: str) -> Thread | None:
        row = await self._run(lambda c: c.execute(
            "SELECT * FROM threads WHERE id = ? AND deleted = 0", (thread_id,)).fetchone())
        return None if row is None else _thread(row)

    async def list_threads(self, limit: int = 50, offset: int = 0) -> list[Thread]:
        """Most recently updated first."""
        rows = await self._run(lambda c: c.execute(
            "SELECT * FROM threads WHERE deleted = 0 ORDER BY updated_at DESC, id "
            "LIMIT ? OFFSET ?", (limit, offset)).fetchall())
        return [_thread(r) for r in rows]

    async def update_thread(self, thread_id: str, *, title: str | None = None,
                            settings: dict[str, Any] | None = None) -> Thread:
        """Change what is given (``None``: unchanged). Raises NotFound."""

        def update(conn: sqlite3.Connection) -> Thread:
            with _transaction(conn):
                row = conn.execute("SELECT * FROM threads WHERE id = ? AND deleted = 0",
                                   (thread_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no thread {thread_id}", details={"thread_id": thread_id})
                old = _thread(row)
                new = old.model_copy(update={
                    "title": old.title if title is None else title,
                    "settings": old.settings if settings is None else settings,
                    "updated_at": max(old.updated_at, self._clock.now_ms())})
                conn.execute("UPDATE threads SET title = ?, settings = ?, updated_at = ? "
                             "WHERE id = ?", (new.title, json.dumps(new.settings),
                                              new.updated_at, thread_id))
                return new

        return await self._run(update)

    async def delete_thread(self, thread_id: str) -> None:
        """Delete the thread and its Responses. Raises NotFound."""

        def delete(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                cur = conn.execute("UPDATE threads SET deleted = 1, updated_at = ? "
                                   "WHERE id = ? AND deleted = 0",
                                   (self._clock.now_ms(), thread_id))
                if cur.rowcount == 0:
                    raise NotFound(f"no thread {thread_id}", details={"thread_id": thread_id})
                conn.execute("DELETE FROM responses WHERE thread_id = ?", (thread_id,))

        await self._run(delete)
