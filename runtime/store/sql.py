"""The store's queries, written once for both engines.

Each function takes an open transaction (:class:`~runtime.store.migrations.Tx`, ``?``
placeholders) and a :class:`Dialect`, and does one store operation synchronously; the engines
(:mod:`.sqlite`, :mod:`.postgres`) only decide how a transaction is opened and which thread
runs it. Everything here is portable SQL (``ON CONFLICT … DO UPDATE … WHERE``, row values);
the two differences are in :class:`Dialect`.

Concurrency: SQLite runs one writer at a time (``BEGIN IMMEDIATE``). On PostgreSQL an upsert
locks its thread row (``FOR UPDATE``) so that it cannot interleave with ``delete_thread``
(which would resurrect a deleted thread's Response), and a batch takes its locks in one order
(by thread, then run) so that two projectors writing overlapping batches cannot deadlock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runtime.errors import Conflict, NotFound
from runtime.schema import Response
from runtime.store.migrations import Tx
from runtime.store.protocol import DEFAULT_TENANT, RunQuery, Thread, check_title, encode_cursor


@dataclass(frozen=True, slots=True)
class Dialect:
    lock_row: str
    """Appended to a SELECT that must lock the row it reads until commit."""
    insertion_order: str
    """The column that orders a thread's Responses created in the same millisecond."""


SQLITE = Dialect(lock_row="", insertion_order="rowid")
POSTGRES = Dialect(lock_row=" FOR UPDATE", insertion_order="row_order")

_THREAD_COLS = "id, title, settings, created_at, updated_at, deleted, tenant"


def _thread(row: tuple[Any, ...]) -> Thread:
    return Thread(id=row[0], title=row[1], settings=json.loads(row[2]),
                  created_at=int(row[3]), updated_at=int(row[4]))


def _thread_row(tx: Tx, thread_id: str) -> tuple[Any, ...] | None:
    rows = tx.rows(f"SELECT {_THREAD_COLS} FROM threads WHERE id = ?", (thread_id,))
    return rows[0] if rows else None


def _not_found(thread_id: str) -> NotFound:
    return NotFound(f"no thread {thread_id}", details={"thread_id": thread_id})


# ---------------------------------------------------------------------- responses

_UPSERT = (
    "INSERT INTO responses (run_id, tenant, thread_id, turn_id, seq, status, model_id, "
    "provider_id, created_at, updated_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id) DO UPDATE SET seq = excluded.seq, status = excluded.status, "
    "model_id = excluded.model_id, provider_id = excluded.provider_id, "
    "updated_at = excluded.updated_at, body = excluded.body "
    "WHERE responses.seq < excluded.seq AND responses.tenant = excluded.tenant")
"""A row's identity (tenant, thread, turn, created_at) is fixed when it is first written:
``created_at`` is the listing key, so a row never moves between pages."""


def upsert_responses(tx: Tx, d: Dialect, items: Sequence[tuple[Response, str, int]]
                     ) -> list[bool]:
    """``items`` are (Response, its JSON, seq); whether each was written, in input order."""
    written = [False] * len(items)
    order = sorted(range(len(items)), key=lambda i: (items[i][0].thread_id, items[i][0].id))
    for i in order:
        resp, body, seq = items[i]
        rows = tx.rows(f"SELECT deleted, tenant FROM threads WHERE id = ?{d.lock_row}",
                       (resp.thread_id,))
        if rows and rows[0][0]:
            continue  # the thread was deleted while the run was in flight
        tenant = str(rows[0][1]) if rows else DEFAULT_TENANT
        changed = tx.run(_UPSERT, (resp.id, tenant, resp.thread_id, resp.turn_id, seq,
                                   resp.status, resp.model_id, resp.provider_id,
                                   resp.created_at, resp.updated_at, body))
        if changed and rows:
            tx.run("UPDATE threads SET updated_at = ? WHERE id = ? AND updated_at < ?",
                   (resp.updated_at, resp.thread_id, resp.updated_at))
        written[i] = changed > 0
    return written


def get_response(tx: Tx, run_id: str, tenant: str) -> Response | None:
    rows = tx.rows("SELECT body FROM responses WHERE run_id = ? AND tenant = ?",
                   (run_id, tenant))
    return Response.model_validate_json(str(rows[0][0])) if rows else None


def get_response_seq(tx: Tx, run_id: str, tenant: str) -> int | None:
    rows = tx.rows("SELECT seq FROM responses WHERE run_id = ? AND tenant = ?",
                   (run_id, tenant))
    return int(str(rows[0][0])) if rows else None


def response_tenant(tx: Tx, run_id: str) -> str | None:
    rows = tx.rows("SELECT tenant FROM responses WHERE run_id = ?", (run_id,))
    return str(rows[0][0]) if rows else None


def list_thread_responses(tx: Tx, d: Dialect, thread_id: str, tenant: str) -> list[Response]:
    rows = tx.rows("SELECT body FROM responses WHERE thread_id = ? AND tenant = ? "
                   f"ORDER BY created_at, {d.insertion_order}", (thread_id, tenant))
    return [Response.model_validate_json(str(r[0])) for r in rows]


def list_runs(tx: Tx, q: RunQuery) -> tuple[list[Response], str | None]:
    where: list[str] = ["tenant = ?"]
    params: list[object] = [q.tenant]
    if q.statuses is not None:
        where.append(f"status IN ({', '.join('?' * len(q.statuses))})")
        params.extend(q.statuses)
    if q.thread_id is not None:
        where.append("thread_id = ?")
        params.append(q.thread_id)
    if q.model is not None:
        where.append("model_id = ?")
        params.append(q.model)
    if q.since_ms is not None:
        where.append("created_at >= ?")
        params.append(q.since_ms)
    if q.after is not None:
        where.append("(created_at, run_id) < (?, ?)")
        params.extend(q.after)
    rows = tx.rows(f"SELECT created_at, run_id, body FROM responses WHERE {' AND '.join(where)} "
                   "ORDER BY created_at DESC, run_id DESC LIMIT ?", (*params, q.limit + 1))
    page = rows[:q.limit]
    more = len(rows) > q.limit
    cursor = encode_cursor(int(str(page[-1][0])), str(page[-1][1])) if more else None
    return [Response.model_validate_json(str(r[2])) for r in page], cursor


# ---------------------------------------------------------------------- threads


def insert_thread(tx: Tx, thread_id: str, tenant: str, title: str | None,
                  settings: dict[str, Any], now_ms: int, *, exist_ok: bool) -> Thread:
    """Create the thread, or restart the tenant's own deleted one. A live one of the tenant:
    returned if ``exist_ok``, else Conflict. Another tenant's: NotFound if ``exist_ok`` (to
    that tenant it does not exist), else Conflict (the id is taken)."""
    check_title(title)
    changed = tx.run(
        f"INSERT INTO threads ({_THREAD_COLS}) VALUES (?, ?, ?, ?, ?, 0, ?) "
        "ON CONFLICT (id) DO UPDATE SET title = excluded.title, settings = excluded.settings, "
        "created_at = excluded.created_at, updated_at = excluded.updated_at, deleted = 0 "
        "WHERE threads.deleted = 1 AND threads.tenant = excluded.tenant",
        (thread_id, title, json.dumps(settings), now_ms, now_ms, tenant))
    if changed:
        return Thread(id=thread_id, title=title, settings=settings, created_at=now_ms,
                      updated_at=now_ms)
    row = _thread_row(tx, thread_id)
    if row is not None and row[6] == tenant and not row[5] and exist_ok:
        return _thread(row)
    if exist_ok:
        raise _not_found(thread_id)
    raise Conflict(f"thread {thread_id} already exists", details={"thread_id": thread_id})


def get_thread(tx: Tx, thread_id: str, tenant: str) -> Thread | None:
    row = _thread_row(tx, thread_id)
    return _thread(row) if row is not None and row[6] == tenant and not row[5] else None


def list_threads(tx: Tx, tenant: str, limit: int, offset: int) -> list[Thread]:
    rows = tx.rows(f"SELECT {_THREAD_COLS} FROM threads WHERE tenant = ? AND deleted = 0 "
                   "ORDER BY updated_at DESC, id LIMIT ? OFFSET ?", (tenant, limit, offset))
    return [_thread(r) for r in rows]


def update_thread(tx: Tx, thread_id: str, tenant: str, title: str | None,
                  settings: dict[str, Any] | None, now_ms: int) -> Thread:
    check_title(title)
    changed = tx.run(
        "UPDATE threads SET title = COALESCE(?, title), settings = COALESCE(?, settings), "
        "updated_at = CASE WHEN updated_at > ? THEN updated_at ELSE ? END "
        "WHERE id = ? AND tenant = ? AND deleted = 0",
        (title, None if settings is None else json.dumps(settings), now_ms, now_ms,
         thread_id, tenant))
    row = _thread_row(tx, thread_id) if changed else None
    if row is None:
        raise _not_found(thread_id)
    return _thread(row)


def delete_thread(tx: Tx, thread_id: str, tenant: str, now_ms: int) -> None:
    changed = tx.run("UPDATE threads SET deleted = 1, updated_at = ? "
                     "WHERE id = ? AND tenant = ? AND deleted = 0",
                     (now_ms, thread_id, tenant))
    if not changed:
        raise _not_found(thread_id)
    tx.run("DELETE FROM responses WHERE thread_id = ?", (thread_id,))
