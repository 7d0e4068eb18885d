"""The reading service: a run's Response and its event stream, from wherever they are.

A run's Response is, freshest first: the snapshot of its actor when it runs here; the store's
row once that is terminal; a replay of its stream from Redis (a run live on another node, or
ended but not yet persisted); a non-terminal store row (the stream has expired); and for a run
accepted here whose actor has not written ``response_start`` yet, a ``queued`` Response (for a
run accepted on another node, from its metadata in Redis: a turn queued behind another on its
thread, or not started yet). A run found nowhere is ``404 NOT_FOUND``. Every node answers the
same: all but the first come from Redis and the store, which they share.

Its events come through a :class:`~actors.reader.RunReader` after the client's cursor. A cursor
already at or past the terminal event gets no reader (the route answers ``204``); a run whose
stream has expired while its Response is stored is ``410 STREAM_EXPIRED``; a run with neither
is ``404``, unless its metadata says it was accepted and has not ended (a queued run on any
node): its reader then waits for the first event.
A run whose actor is on another node is read live through this node's multiplexed tail
(actors/node_tail.py), not a blocking read per client.
"""

from __future__ import annotations

import re

from actors.fanout import Fanout
from actors.local_runs import LocalRuns
from actors.node_tail import NodeTail
from actors.reader import RunReader
from runtime import (
    DEFAULT_TENANT,
    TERMINAL_EVENT_TYPES,
    TERMINAL_STATUSES,
    EventLog,
    NotFound,
    Response,
    Store,
    StreamExpired,
    ValidationFailed,
    WallClock,
    entry_key,
    replay_response,
)

_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")
_U64 = 2**64
"""Both halves of a Redis stream id are unsigned 64-bit: a larger one matched the pattern,
was answered 200, then Redis refused it ("Invalid stream ID") mid-stream."""


def check_cursor(cursor: str, field: str = "Last-Event-ID") -> str:
    """``cursor`` if it is a stream entry id Redis accepts, else 400 naming ``field``.

    Raises:
        ValidationFailed: not ``<ms>-<seq>``, or either half is over 2**64 - 1.
    """
    if _CURSOR.match(cursor):
        ms, seq = cursor.split("-")
        if int(ms) < _U64 and int(seq) < _U64:
            return cursor
    raise ValidationFailed(f"{field}: must be a stream entry id like 1700000000000-0",
                           details={"field": field})


class ReadingService:
    def __init__(self, *, runs: LocalRuns, log_: EventLog, store: Store,
                 clock: WallClock, tenants: bool = False,
                 node_tail: NodeTail | None = None) -> None:
        self._runs = runs
        self._log = log_
        self._store = store
        self._clock = clock
        self._node_tail = node_tail
        self._tenants = tenants
        """Whether API keys are on: without them every run is ``DEFAULT_TENANT``'s and the
        ownership check (a store or Redis round trip) is skipped."""

    async def check_owner(self, run_id: str, tenant: str) -> None:
        """Another tenant's run does not exist for ``tenant`` (404, never 403). A run is its
        thread's tenant's: known from the local actor's thread, the run's Redis metadata
        (``tenant``, written at submit) or the store. A run found nowhere passes: the caller
        answers 404 for it anyway.

        Raises:
            NotFound: the run is another tenant's.
        """
        if not self._tenants:
            return
        actor = self._runs.get(run_id)
        if actor is not None:
            owned = await self._store.get_thread(actor.spec.thread_id, tenant=tenant)
            if owned is not None:
                return
        else:
            meta = await self._log.get_meta(run_id)
            if meta.get("tenant") == tenant:
                return
            if not meta.get("tenant"):
                owner = await self._store.response_tenant(run_id)
                if owner is None and not meta.get("thread_id"):
                    return
                if owner == tenant or (owner is None and await self._store.get_thread(
                        meta["thread_id"], tenant=tenant) is not None):
                    return
        raise NotFound(f"no run {run_id}", details={"run_id": run_id})

    async def get_response(self, run_id: str, *, tenant: str = DEFAULT_TENANT) -> Response:
        """Raises:
            NotFound: no such run anywhere (or another tenant's).
            CorruptStream: it is only in Redis, and its stream cannot be folded.
        """
        await self.check_owner(run_id, tenant)
        actor = self._runs.get(run_id)
        if actor is not None and (snap := actor.snapshot()) is not None:
            return snap
        stored = await self._store.get_response(run_id, tenant=tenant)
        if stored is not None and stored.status in TERMINAL_STATUSES:
            return stored
        rebuilt = await self.rebuild(run_id)
        if rebuilt is not None:
            return rebuilt
        if stored is not None:
            return stored
        if actor is not None:  # accepted, its actor not yet past response_start
            return actor.queued()
        meta = await self._accepted_meta(run_id)  # -- policies: a run queued on any node
        if meta is not None and meta.get("status") in TERMINAL_STATUSES:
            # it ended between the reads above (the janitor ends an unstarted run with its
            # start): its stream has it now
            rebuilt = await self.rebuild(run_id)
            if rebuilt is not None:
                return rebuilt
        elif meta is not None:
            created = int(meta["created_at"]) if meta.get("created_at", "").isdigit() \
                else self._clock.now_ms()
            return Response(id=run_id, turn_id=meta["turn_id"], thread_id=meta["thread_id"],
                            model_id=meta["model_id"], provider_id=meta["provider_id"],
                            created_at=created, updated_at=created, status="queued")
        raise NotFound(f"no run {run_id}", details={"run_id": run_id})

    async def _accepted_meta(self, run_id: str) -> dict[str, str] | None:
        """The metadata of a run accepted by a submit (on any node), or ``None``."""
        meta = await self._log.get_meta(run_id)
        if not all(meta.get(k) for k in ("thread_id", "turn_id", "model_id", "provider_id")):
            return None
        return meta

    async def rebuild(self, run_id: str) -> Response | None:
        """The Response replayed from the run's stream (it can always be rebuilt)."""
        return await replay_response(self._log, run_id)

    async def open_reader(self, run_id: str, cursor: str | None, *,
                          tenant: str = DEFAULT_TENANT,
                          cursor_field: str = "Last-Event-ID") -> RunReader | None:
        """A reader after ``cursor``; ``None`` when the cursor is already past the end.

        Raises:
            ValidationFailed: the cursor is not a stream entry id Redis takes (checked before
                anything is read; the field is ``cursor_field``).
            StreamExpired: the stream is gone but the Response is stored.
            NotFound: no such run (or another tenant's).
        """
        cursor = check_cursor(cursor or "0-0", cursor_field)
        await self.check_owner(run_id, tenant)
        actor = self._runs.get(run_id)

        def find_fanout() -> Fanout | None:
            a = self._runs.get(run_id)
            return a.fanout if a is not None else None

        tail = self._node_tail
        remote = None if tail is None else lambda: tail.subscribe(run_id)
        if actor is None or actor.fanout.closed:
            last = await self._log.last_entry(run_id)
            if last is None:
                if actor is not None or await self._accepted_meta(run_id) is not None:
                    # started or queued (here or on another node), nothing written yet (or
                    # its ending just was: the reader replays it)
                    return RunReader(self._log, run_id, cursor, find_fanout,
                                     subscribe_remote=remote)
                if await self._store.get_response(run_id, tenant=tenant) is not None:
                    raise StreamExpired(f"the event stream of run {run_id} has expired; "
                                        f"its Response is at /api/v2/runs/{run_id}",
                                        details={"run_id": run_id})
                raise NotFound(f"no run {run_id}", details={"run_id": run_id})
            last_id, last_type = last
            if last_type in TERMINAL_EVENT_TYPES and entry_key(cursor) >= entry_key(last_id):
                return None
        return RunReader(self._log, run_id, cursor, find_fanout, subscribe_remote=remote)
