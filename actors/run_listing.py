"""The run listing service: ``GET /api/v2/runs``, the store's page merged with the runs in
flight (``runtime/runs_listing.py`` decides how).

Runs in flight, freshest view first: this node's actors (their snapshot), this node's
just-finished runs, and every other run in the live-run registry in Redis (a run on another
node, replayed from its stream: one read of its stream per such run in the page's range, which
is why the registry is read once and the filters that need no Response are applied first). A
run in flight is shown only to the tenant owning its thread (submit creates the thread first).
"""

from __future__ import annotations

from collections.abc import Collection

from actors.local_runs import LocalRuns
from actors.reading import ReadingService
from runtime.errors import NotFound
from runtime.eventlog import EventLog
from runtime.runs_listing import RunPage, in_page_range, matches, merge_page
from runtime.schema import Response
from runtime.store import Store
from runtime.store.protocol import DEFAULT_TENANT, RunQuery


class RunListingService:
    def __init__(self, *, runs: LocalRuns, log_: EventLog, store: Store,
                 reading: ReadingService) -> None:
        self._runs = runs
        self._log = log_
        self._store = store
        self._reading = reading

    async def list_runs(self, *, tenant: str = DEFAULT_TENANT,
                        status: str | Collection[str] | None = None,
                        thread_id: str | None = None, model: str | None = None,
                        since_ms: int | None = None, limit: int = 50,
                        cursor: str | None = None) -> RunPage:
        """Raises:
            ValidationFailed: a bad filter, limit or cursor (naming the field).
            RedisUnavailable, StoreUnavailable: an outage (503).
        """
        query = RunQuery.build(tenant, status=status, thread_id=thread_id, model=model,
                               since_ms=since_ms, limit=limit, cursor=cursor)
        stored, store_next = await self._store.list_runs(
            tenant, status=status, thread_id=thread_id, model=model, since_ms=since_ms,
            limit=limit, cursor=cursor)
        stored_ids = {r.id for r in stored}
        # a view of a stored row replaces it (the store's rows are the tenant's already);
        # any other view is listed only if it matches and its thread is the tenant's
        views = [r for r in await self._in_flight()
                 if in_page_range(r, query, stored, store_next)
                 and (r.id in stored_ids or matches(r, query))]
        owned = [r for r in views if r.id in stored_ids] + await self._owned(
            [r for r in views if r.id not in stored_ids], tenant)
        return merge_page(query, stored, store_next, owned)

    async def _in_flight(self) -> list[Response]:
        views: dict[str, Response] = {r.id: r for r in self._runs.recent.responses.values()}
        local: set[str] = set()
        for actor in self._runs:
            local.add(actor.run_id)
            views[actor.run_id] = await self._reading.get_response(actor.run_id)
        for run_id in await self._log.live_runs():
            if run_id in local:
                continue
            try:
                views[run_id] = await self._reading.get_response(run_id)
            except NotFound:  # ended and expired since the registry was read
                continue
        return list(views.values())

    async def _owned(self, views: list[Response], tenant: str) -> list[Response]:
        owners: dict[str, bool] = {}
        out = []
        for r in views:
            if r.thread_id not in owners:
                owners[r.thread_id] = await self._store.get_thread(
                    r.thread_id, tenant=tenant) is not None
            if owners[r.thread_id]:
                out.append(r)
        return out
