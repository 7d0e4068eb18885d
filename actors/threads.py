"""The thread service: threads (create, list, get, update, delete) and a thread's runs.

A thread's runs are the store's, each replaced by a fresher view while this process has one:
a live run shows as it is, and one that just ended shows ended before the projector has
written it (:func:`~actors.local_runs.freshest`).
"""

from __future__ import annotations

from typing import Any

from actors.local_runs import LocalRuns, freshest
from runtime.errors import NotFound, ValidationFailed
from runtime.ids import new_uuid
from runtime.schema import Response
from runtime.store import Store, Thread

MAX_PAGE = 500
"""The most threads one listing returns."""
MAX_OFFSET = 2**63 - 1
"""The largest offset the stores take (SQLite's and PostgreSQL's 64-bit integer): a larger
one is a 400, not an overflow in the driver (a 500, found by the schemathesis fuzz)."""


class ThreadService:
    def __init__(self, *, runs: LocalRuns, store: Store) -> None:
        self._runs = runs
        self._store = store

    async def create(self, title: str | None, settings: dict[str, Any]) -> Thread:
        return await self._store.create_thread(new_uuid(), title, settings)

    async def list_threads(self, *, limit: int = 50, offset: int = 0) -> list[Thread]:
        """Raises:
            ValidationFailed: ``limit`` is not 1..:data:`MAX_PAGE`, or ``offset`` is not
                0..:data:`MAX_OFFSET`.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit: must be 1..{MAX_PAGE}", details={"field": "limit"})
        if not 0 <= offset <= MAX_OFFSET:
            raise ValidationFailed(f"offset: must be 0..{MAX_OFFSET}",
                                   details={"field": "offset"})
        return await self._store.list_threads(limit=limit, offset=offset)

    async def with_runs(self, thread_id: str) -> tuple[Thread, list[Response]]:
        """Raises:
            NotFound: no such thread.
        """
        thread = await self._store.get_thread(thread_id)
        if thread is None:
            raise NotFound(f"no thread {thread_id}", details={"thread_id": thread_id})
        stored = await self._store.list_thread_responses(thread_id)
        return thread, freshest(stored, [*self._runs.recent_on(thread_id),
                                         *self._runs.live_on(thread_id)])

    async def update(self, thread_id: str, *, title: str | None,
                     settings: dict[str, Any] | None) -> Thread:
        """Raises:
            NotFound: no such thread.
        """
        return await self._store.update_thread(thread_id, title=title, settings=settings)

    async def delete(self, thread_id: str) -> None:
        """Raises:
            NotFound: no such thread.
        """
        await self._store.delete_thread(thread_id)
