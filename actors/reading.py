"""The reading service: a run's Response and its event stream, from wherever they are.

A run's Response is, freshest first: the snapshot of its actor when it runs here; the store's
row once that is terminal; a replay of its stream from Redis (a run live on another node, or
ended but not yet persisted); a non-terminal store row (the stream has expired); and for a run
accepted (here, or on another node: its metadata) whose actor has not written
``response_start`` yet, a ``queued`` Response. A run found nowhere is ``404 NOT_FOUND``. Every
node answers the same: all but the first come from Redis and the store, which they share.

Its events come through a :class:`~actors.reader.RunReader` after the client's cursor. A cursor
already at or past the terminal event gets no reader (the route answers ``204``); a run whose
stream has expired while its Response is stored is ``410 STREAM_EXPIRED``; a run with neither
is ``404``. A run whose actor is on another node is read live through this node's multiplexed
tail (actors/node_tail.py), not a blocking read per client.
"""

from __future__ import annotations

import re

from actors.fanout import Fanout
from actors.local_runs import LocalRuns
from actors.node_tail import NodeTail
from actors.reader import RunReader
from runtime.clock import WallClock
from runtime.errors import NotFound, StreamExpired, ValidationFailed
from runtime.eventlog import EventLog, entry_key
from runtime.schema import TERMINAL_EVENT_TYPES, TERMINAL_STATUSES, Response
from runtime.store import Store
from runtime.stream_fold import replay_response

_CURSOR = re.compile(r"^\d+-\d+$")


class ReadingService:
    def __init__(self, *, runs: LocalRuns, log_: EventLog, store: Store,
                 clock: WallClock, node_tail: NodeTail | None = None) -> None:
        self._runs = runs
        self._log = log_
        self._store = store
        self._clock = clock
        self._node_tail = node_tail

    async def get_response(self, run_id: str) -> Response:
        """Raises:
            NotFound: no such run anywhere.
            CorruptStream: it is only in Redis, and its stream cannot be folded.
        """
        actor = self._runs.get(run_id)
        if actor is not None and (snap := actor.snapshot()) is not None:
            return snap
        stored = await self._store.get_response(run_id)
        if stored is not None and stored.status in TERMINAL_STATUSES:
            return stored
        rebuilt = await self.rebuild(run_id)
        if rebuilt is not None:
            return rebuilt
        if stored is not None:
            return stored
        if actor is not None:  # accepted, its actor not yet past response_start
            spec, now = actor.spec, self._clock.now_ms()
            return Response(id=run_id, turn_id=spec.turn_id, thread_id=spec.thread_id,
                            agent_id=spec.agent_id, model_id=spec.model_id,
                            provider_id=spec.provider_id, created_at=now, updated_at=now,
                            status="queued")
        queued = await self._queued_elsewhere(run_id)
        if queued is not None:
            return queued
        raise NotFound(f"no run {run_id}", details={"run_id": run_id})

    async def _queued_elsewhere(self, run_id: str) -> Response | None:
        """A run accepted by another node whose actor has not written ``response_start``
        yet: ``queued``, from the metadata that node wrote before answering its 202."""
        meta = await self._log.get_meta(run_id)
        if not all(meta.get(f) for f in ("thread_id", "turn_id", "model_id", "provider_id")):
            return None
        now = self._clock.now_ms()
        created = int(meta["created_at"]) if meta.get("created_at", "").isdigit() else now
        return Response(id=run_id, turn_id=meta["turn_id"], thread_id=meta["thread_id"],
                        agent_id=meta.get("agent_id") or None, model_id=meta["model_id"],
                        provider_id=meta["provider_id"], created_at=created, updated_at=now,
                        status="queued")

    async def rebuild(self, run_id: str) -> Response | None:
        """The Response replayed from the run's stream (it can always be rebuilt)."""
        return await replay_response(self._log, run_id)

    async def open_reader(self, run_id: str, cursor: str | None) -> RunReader | None:
        """A reader after ``cursor``; ``None`` when the cursor is already past the end.

        Raises:
            ValidationFailed: the cursor is not a stream entry id (field ``Last-Event-ID``).
            StreamExpired: the stream is gone but the Response is stored.
            NotFound: no such run.
        """
        cursor = cursor or "0-0"
        if not _CURSOR.match(cursor):
            raise ValidationFailed("Last-Event-ID: must be a stream entry id like 1700000000000-0",
                                   details={"field": "Last-Event-ID"})
        actor = self._runs.get(run_id)

        def find_fanout() -> Fanout | None:
            a = self._runs.get(run_id)
            return a.fanout if a is not None else None

        tail = self._node_tail
        remote = None if tail is None else lambda: tail.subscribe(run_id)
        if actor is None or actor.fanout.closed:
            last = await self._log.last_entry(run_id)
            if last is None:
                # started here or on another node (its metadata comes before the 202),
                # nothing written yet
                if actor is not None or await self._log.run_exists(run_id):
                    return RunReader(self._log, run_id, cursor, find_fanout,
                                     subscribe_remote=remote)
                if await self._store.get_response(run_id) is not None:
                    raise StreamExpired(f"the event stream of run {run_id} has expired; "
                                        f"its Response is at /api/v2/runs/{run_id}",
                                        details={"run_id": run_id})
                raise NotFound(f"no run {run_id}", details={"run_id": run_id})
            last_id, last_type = last
            if last_type in TERMINAL_EVENT_TYPES and entry_key(cursor) >= entry_key(last_id):
                return None
        return RunReader(self._log, run_id, cursor, find_fanout, subscribe_remote=remote)
