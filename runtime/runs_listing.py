"""Listing runs (``GET /api/v2/runs``): what one row shows, and how the store's page and the
runs still in flight make one page. Pure: the service gathers, this decides.

The store pages by keyset, newest first by ``(created_at, run_id)``. Runs in flight (live on
some node, or just finished and not yet persisted) are in the store late or stale, so each page
is the store's page merged with the fresher views whose key falls in the page's key range:
after the client's cursor, and not below the store page's last row when the store has more (a
view below that belongs to a later page, where it is merged then). A fresher view replaces the
store's row unless the store has the run ended. Filters apply to the merged rows, so a run the
store still has ``in_progress`` but has just ended is not listed under ``status=in_progress``.
The next cursor is the last row's key whenever more may follow: pages may come out shorter than
``limit``, never with a row twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from runtime.schema import TERMINAL_STATUSES, Response, ResponseStatus, Usage
from runtime.store.protocol import RunQuery, encode_cursor


class RunSummary(BaseModel):
    """One row of the runs listing."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    thread_id: str
    status: ResponseStatus
    model: str
    provider: str
    created_at: int
    ended_at: int | None
    """When the run ended (its last update): None while it runs."""
    usage: Usage | None
    duration_ms: int | None
    """``ended_at - created_at``; None while it runs (a client counts from ``created_at``)."""


class RunPage(BaseModel):
    model_config = ConfigDict(frozen=True)

    data: list[RunSummary]
    next_cursor: str | None


def summarize(resp: Response) -> RunSummary:
    ended = resp.updated_at if resp.status in TERMINAL_STATUSES else None
    return RunSummary(run_id=resp.id, thread_id=resp.thread_id, status=resp.status,
                      model=resp.model_id, provider=resp.provider_id,
                      created_at=resp.created_at, ended_at=ended, usage=resp.usage,
                      duration_ms=None if ended is None else max(0, ended - resp.created_at))


def listing_key(resp: Response) -> tuple[int, str]:
    return resp.created_at, resp.id


def matches(resp: Response, query: RunQuery) -> bool:
    """The query's filters (not its tenant: the service checks that)."""
    return ((query.statuses is None or resp.status in query.statuses)
            and (query.thread_id is None or resp.thread_id == query.thread_id)
            and (query.model is None or resp.model_id == query.model)
            and (query.since_ms is None or resp.created_at >= query.since_ms))


def in_page_range(resp: Response, query: RunQuery, stored: Sequence[Response],
                  store_next: str | None) -> bool:
    """Whether a fresher view belongs on this page (see the module docstring)."""
    key = listing_key(resp)
    if query.after is not None and not key < query.after:
        return False
    return not (store_next is not None and stored and key < listing_key(stored[-1]))


def merge_page(query: RunQuery, stored: Sequence[Response], store_next: str | None,
               fresher: Iterable[Response]) -> RunPage:
    """One page: the store's rows and the fresher views in range, filtered, newest first."""
    rows = {r.id: r for r in stored}
    for r in fresher:
        if not in_page_range(r, query, stored, store_next):
            continue
        known = rows.get(r.id)
        if known is None or known.status not in TERMINAL_STATUSES:
            rows[r.id] = r
    merged = sorted((r for r in rows.values() if matches(r, query)), key=listing_key,
                    reverse=True)
    more = store_next is not None or len(merged) > query.limit
    merged = merged[:query.limit]
    if not more:
        cursor = None
    elif merged:
        cursor = encode_cursor(*listing_key(merged[-1]))
    else:
        cursor = store_next
    return RunPage(data=[summarize(r) for r in merged], next_cursor=cursor)
