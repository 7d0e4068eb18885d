"""The janitor: ends runs whose actor is gone with ``response_error`` RUN_ORPHANED.

A run actor lives in one process. If that process dies (kill -9, power loss) its runs stay
``in_progress`` in Redis forever - the embedded Redis keeps its data across restarts. Each node
holds a lease key refreshed by this worker (every ``interval_s``, for ``lease_ttl_s``); every
live run is registered with its node. A run whose node's lease has expired is orphaned, and
so is a run registered to this very node that has no actor here any more.

Every node runs a janitor and they all sweep the same registry, so several may find one
orphan at once. The ending is written exactly once all the same: the check ("its last entry
is still the one I read, it has not ended, it is still registered to the dead node") and the
append are one Lua script on the run's hash-tagged keys (``EventLog.end_orphan``); a janitor
that loses the race does nothing. Only then, in other slots, come the persistence checkpoint
and the unregistration. A janitor that dies in between leaves a run that has ended but is
still registered; whoever sweeps next sees exactly that and writes the checkpoint and the
unregistration again (both idempotent), so the projector always persists the ending.

A run that never wrote an event (queued behind another turn on its thread, or its node died
right after accepting it) but has its metadata gets ``response_start`` and ``response_error``
RUN_ORPHANED together, atomically (``EventLog.end_unstarted``), so its clients, waiting on its
events, get an ending too. Settling a run also releases it on its thread
(``on_settle``, ``actors/thread_policies.py``) before unregistering it: that is what keeps a
thread's queue from waiting for ever on a run whose node died.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Container, Sequence
from typing import Protocol

import trio

from runtime import (
    RUN_ORPHANED,
    TERMINAL_EVENT_TYPES,
    TERMINAL_STATUSES,
    ErrorInfo,
    EventFactory,
    OrphanEnding,
    ResponseErrorPayload,
    ResponseStart,
    WallClock,
    decode_event,
    encode_event,
    new_traceparent,
)

log = logging.getLogger(__name__)

SWEEP_CONCURRENCY = 4
"""Orphans one sweep ends at once."""


class JanitorLog(Protocol):
    async def refresh_lease(self, node_id: str, ttl_s: int) -> bool: ...

    async def lease_alive(self, node_id: str) -> bool: ...

    async def live_runs(self) -> dict[str, str]: ...

    async def migrate_legacy_live(self) -> int: ...

    async def unregister_live(self, run_id: str) -> None: ...

    async def last_raw(self, run_id: str) -> tuple[str, bytes] | None: ...

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]: ...

    async def end_orphan(self, run_id: str, *, last_id: str, event: bytes, owner: str,
                         by: str) -> OrphanEnding: ...

    async def get_meta(self, run_id: str) -> dict[str, str]: ...

    async def end_unstarted(self, run_id: str, *, start: bytes, event: bytes, owner: str,
                            by: str) -> OrphanEnding: ...


class Janitor:
    def __init__(self, log_: JanitorLog, *, node_id: str, local_runs: Container[str],
                 clock: WallClock, lease_ttl_s: int = 15, interval_s: float = 5.0,
                 on_orphan: Callable[[str], None] | None = None,
                 on_settle: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._log = log_
        self.node_id = node_id
        self._local = local_runs
        self._clock = clock
        self._ttl = lease_ttl_s
        self._interval = interval_s
        self._on_orphan = on_orphan
        self._on_settle = on_settle
        """Before an ended run is unregistered: release it on its thread."""
        self.ended = 0
        """Orphans this janitor ended (wrote RUN_ORPHANED for)."""
        self.settled = 0
        """Runs found ended but still registered, checkpointed and unregistered again."""
        self.lapses = 0
        """Times this node found its own lease lapsed when it refreshed it."""
        self.lost = 0
        """Orphans this janitor found but did not end (another janitor was first, or the run
        moved on): the atomic check at work."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """The lease is refreshed on its own beat, never behind a sweep: a sweep that ends
        many orphans on a busy Redis can take longer than the lease, and a live node whose
        lease lapsed would have its own runs ended by the others (measured with a 2 s lease
        under load: a survivor's run ended ``RUN_ORPHANED``)."""
        await self._log.refresh_lease(self.node_id, self._ttl)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_lease)
            task_status.started()
            while True:
                await self.sweep()
                await trio.sleep(self._interval)

    async def _keep_lease(self) -> None:
        """Refresh the lease every ``interval_s``. A refresh that finds it gone means this
        node was stalled (or cut off from Redis) past ``lease_ttl_s``: the other nodes may
        have ended its runs ``RUN_ORPHANED`` meanwhile, and the appends of those runs are
        now refused (their actors stop, ``actors/run_actor.py``). That is said once per
        lapse, and the lease is taken again: the node serves on."""
        while True:
            await trio.sleep(self._interval)
            if not await self._log.refresh_lease(self.node_id, self._ttl):
                self.lapses += 1
                log.warning("janitor: node %s's lease had lapsed (stalled or cut off from "
                            "Redis for more than %d s): other nodes may have ended its runs; "
                            "lease taken again", self.node_id, self._ttl)

    async def sweep(self) -> int:
        """One pass over the registry; returns how many orphans this pass ended.

        The orphans found are ended concurrently (up to :data:`SWEEP_CONCURRENCY` at once):
        a node that died with many runs takes each of them four round trips to end, and one
        after the other they spread over seconds under load (measured: 1.3 s for 8 runs)."""
        await self._log.migrate_legacy_live()  # one HGETALL once there is nothing left
        ended = 0
        alive: dict[str, bool] = {}
        orphans: list[tuple[str, str, str]] = []
        for run_id, node in (await self._log.live_runs()).items():
            if node == self.node_id:
                if run_id not in self._local:
                    orphans.append((run_id, node, "its actor is gone"))
                continue
            if node not in alive:
                alive[node] = await self._log.lease_alive(node)
            if not alive[node]:
                orphans.append((run_id, node, f"node {node} is gone"))
        limit = trio.CapacityLimiter(SWEEP_CONCURRENCY)

        async def end(run_id: str, node: str, why: str) -> None:
            nonlocal ended
            async with limit:
                if await self._end(run_id, node, why):
                    ended += 1

        async with trio.open_nursery() as nursery:
            for orphan in orphans:
                nursery.start_soon(end, *orphan)
        self.ended += ended
        return ended

    async def _end(self, run_id: str, node: str, why: str) -> bool:
        """Append RUN_ORPHANED unless the run already ended; True if this call appended it."""
        last = await self._log.last_raw(run_id)
        if last is None:  # nothing written yet (queued, or died at once), or expired
            return await self._end_unstarted(run_id, node, why)
        event = decode_event(last[1])
        if event.type in TERMINAL_EVENT_TYPES:
            await self._settle(run_id, event.seq)
            self.settled += 1
            return False
        factory = EventFactory(run_id, event.trace_context.traceparent or new_traceparent(),
                               self._clock.now_ms, first_seq=event.seq + 1)
        ending = factory.make(ResponseErrorPayload(
            response_id=run_id,
            error=ErrorInfo(code=RUN_ORPHANED, message=f"run orphaned: {why}")))
        result = await self._log.end_orphan(run_id, last_id=last[0],
                                            event=encode_event(ending), owner=node,
                                            by=self.node_id)
        if result.outcome != "appended":
            # "moved": someone wrote after what we read (another janitor's ending, or an actor
            # after all); "ended"/"gone"/"owner": not ours to end. The next sweep decides again.
            log.info("janitor: run %s not ended here (%s)", run_id, result.outcome)
            self.lost += 1
            return False
        await self._settle(run_id, ending.seq)
        log.warning("janitor: ended orphaned run %s (%s)", run_id, why)
        if self._on_orphan is not None:
            self._on_orphan(run_id)
        return True

    async def _end_unstarted(self, run_id: str, node: str, why: str) -> bool:
        """A registered run with no stream: if its metadata says it was accepted and has not
        ended, write its start and RUN_ORPHANED; else (expired, or no metadata) just drop
        it from the registry."""
        meta = await self._log.get_meta(run_id)
        needed = ("thread_id", "turn_id", "model_id", "provider_id")
        if meta.get("status") in TERMINAL_STATUSES or not all(meta.get(k) for k in needed):
            if self._on_settle is not None:
                await self._on_settle(run_id)
            await self._log.unregister_live(run_id)
            return False
        now = self._clock.now_ms()
        factory = EventFactory(run_id, new_traceparent(), self._clock.now_ms)
        created = meta.get("created_at", "")
        start = factory.make(ResponseStart(
            response_id=run_id, turn_id=meta["turn_id"], thread_id=meta["thread_id"],
            model_id=meta["model_id"], provider_id=meta["provider_id"],
            created_at=int(created) if created.isdigit() else now))
        ending = factory.make(ResponseErrorPayload(
            response_id=run_id,
            error=ErrorInfo(code=RUN_ORPHANED, message=f"run orphaned: {why}")))
        result = await self._log.end_unstarted(run_id, start=encode_event(start),
                                               event=encode_event(ending), owner=node,
                                               by=self.node_id)
        if result.outcome != "appended":
            log.info("janitor: unstarted run %s not ended here (%s)", run_id, result.outcome)
            self.lost += 1
            return False
        await self._settle(run_id, ending.seq)
        log.warning("janitor: ended orphaned run %s before its start (%s)", run_id, why)
        if self._on_orphan is not None:
            self._on_orphan(run_id)
        return True

    async def _settle(self, run_id: str, seq: int) -> None:
        """An ended run: checkpoint its last seq (the projector persists the ending; twice is
        harmless), release it on its thread, and take it off the registry."""
        await self._log.append(run_id, [], seq)
        if self._on_settle is not None:
            await self._on_settle(run_id)
        await self._log.unregister_live(run_id)
