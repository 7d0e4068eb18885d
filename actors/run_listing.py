"""The run listing service: ``GET /api/v2/runs``, the store's page merged with the runs in
flight (``runtime/runs_listing.py`` decides how).

Runs in flight, freshest view first: this node's actors (their snapshot), this node's
just-finished runs, and every other run in the live-run registry in Redis (a run on another
node). A run on another node is first seen through its stream's first entry only (its
``response_start``: ids, model, ``created_at``: one ``XRANGE … COUNT 1``), which is enough to
place it; only the few that can be on the page (in its key range, matching the filters, the
newest ``limit`` of them) are replayed from their stream for their status and usage. A run in
flight is shown only to the tenant owning its thread (submit creates the thread first), checked
for those same few only. So a poll costs the store page, one registry read, one small read per
remote live run, and at most ``limit`` replays and thread lookups.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from actors.local_runs import LocalRuns
from actors.reading import ReadingService
from runtime import (
    DEFAULT_TENANT,
    EventLog,
    NotFound,
    Response,
    ResponseStart,
    RunPage,
    RunQuery,
    Store,
    WallClock,
    decode_event,
    in_page_range,
    listing_key,
    matches,
    merge_page,
)


@dataclass(frozen=True, slots=True)
class _View:
    resp: Response
    full: bool
    """False: a placeholder from the run's ``response_start`` (status and usage unknown)."""


class RunListingService:
    def __init__(self, *, runs: LocalRuns, log_: EventLog, store: Store,
                 reading: ReadingService, clock: WallClock) -> None:
        self._runs = runs
        self._clock = clock
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
        views = sorted((v for v in await self._in_flight()
                        if in_page_range(v.resp, query, stored, store_next)
                        and (v.resp.id in stored_ids or matches(v.resp, query))),
                       key=lambda v: listing_key(v.resp), reverse=True)
        owners: dict[str, bool] = {}
        chosen: list[Response] = []
        extra = 0
        for v in views:
            if v.resp.id not in stored_ids:
                if extra >= query.limit:  # older than a full page of newer ones: not shown
                    continue
                tid = v.resp.thread_id
                if tid not in owners:
                    owners[tid] = await self._store.get_thread(tid, tenant=tenant) is not None
                if not owners[tid]:
                    continue
                extra += 1
            resp = v.resp if v.full else await self._replayed(v.resp.id, tenant)
            if resp is not None:
                chosen.append(resp)
        return merge_page(query, stored, store_next, chosen)

    async def _in_flight(self) -> list[_View]:
        views = {r.id: _View(r, True) for r in self._runs.recent.responses.values()}
        local: set[str] = set()
        now = self._clock.now_ms()
        for actor in self._runs:
            local.add(actor.run_id)
            snap = actor.snapshot()
            if snap is None:  # accepted, its actor not yet past response_start
                spec = actor.spec
                snap = Response(id=spec.run_id, turn_id=spec.turn_id, thread_id=spec.thread_id,
                                agent_id=spec.agent_id, model_id=spec.model_id,
                                provider_id=spec.provider_id, created_at=now, updated_at=now,
                                status="queued")
            views[actor.run_id] = _View(snap, True)
        for run_id in await self._log.live_runs():
            if run_id in local or run_id in views:
                continue
            placeholder = await self._placeholder(run_id)
            if placeholder is not None:
                views[run_id] = _View(placeholder, False)
        return list(views.values())

    async def _placeholder(self, run_id: str) -> Response | None:
        """The run as its ``response_start`` has it (None before it is written)."""
        first = await self._log.read_after(run_id, "0-0", 1)
        if not first:
            return None
        try:
            payload = decode_event(first[0][1]).payload
        except ValueError:  # a poison stream: the replay will say so, if it is ever shown
            return None
        if not isinstance(payload, ResponseStart):
            return None
        return Response(id=run_id, turn_id=payload.turn_id, thread_id=payload.thread_id,
                        agent_id=payload.agent_id, model_id=payload.model_id,
                        provider_id=payload.provider_id, created_at=payload.created_at,
                        updated_at=payload.created_at, status="in_progress")

    async def _replayed(self, run_id: str, tenant: str) -> Response | None:
        try:
            return await self._reading.get_response(run_id, tenant=tenant)
        except NotFound:  # ended and expired meanwhile (or, with keys, not the tenant's)
            return None
