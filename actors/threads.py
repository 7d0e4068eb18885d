"""The thread service: threads (create, list, get, update, delete) and a thread's runs.

A thread's runs are the store's, each replaced by a fresher view while this process has one:
a live run shows as it is, and one that just ended shows ended before the projector has
written it (:func:`~actors.local_runs.freshest`).
"""

from __future__ import annotations

from typing import Any

from actors.local_runs import LocalRuns, freshest
from runtime import DEFAULT_TENANT, NotFound, Response, Store, Thread, ValidationFailed, new_uuid

MAX_PAGE = 500
"""The most threads one listing returns."""
MAX_OFFSET = 1_000_000_000
"""-- security: past this an offset would overflow the engines' integers (a 500)."""


class ThreadService:
    def __init__(self, *, runs: LocalRuns, store: Store) -> None:
        self._runs = runs
        self._store = store

    async def create(self, title: str | None, settings: dict[str, Any], *,
                     tenant: str = DEFAULT_TENANT) -> Thread:
        return await self._store.create_thread(new_uuid(), title, settings, tenant=tenant)

    async def list_threads(self, *, limit: int = 50, offset: int = 0,
                           tenant: str = DEFAULT_TENANT) -> list[Thread]:
        """Raises:
            ValidationFailed: ``limit`` is not 1..:data:`MAX_PAGE`, or ``offset`` is negative.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit: must be 1..{MAX_PAGE}", details={"field": "limit"})
        if not 0 <= offset <= MAX_OFFSET:
            raise ValidationFailed(f"offset: must be 0..{MAX_OFFSET}",
                                   details={"field": "offset"})
        return await self._store.list_threads(limit=limit, offset=offset, tenant=tenant)

    async def with_runs(self, thread_id: str, *, tenant: str = DEFAULT_TENANT
                        ) -> tuple[Thread, list[Response]]:
        """Raises:
            NotFound: no such thread (or another tenant's).
        """
        thread = await self._store.get_thread(thread_id, tenant=tenant)
        if thread is None:
            raise NotFound(f"no thread {thread_id}", details={"thread_id": thread_id})
        stored = await self._store.list_thread_responses(thread_id, tenant=tenant)
        return thread, freshest(stored, [*self._runs.recent_on(thread_id),
                                         *self._runs.live_on(thread_id)])

    async def update(self, thread_id: str, *, title: str | None,
                     settings: dict[str, Any] | None, tenant: str = DEFAULT_TENANT) -> Thread:
        """Raises:
            NotFound: no such thread (or another tenant's).
        """
        return await self._store.update_thread(thread_id, title=title, settings=settings,
                                               tenant=tenant)

    async def delete(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> None:
        """Raises:
            NotFound: no such thread (or another tenant's).
        """
        await self._store.delete_thread(thread_id, tenant=tenant)
