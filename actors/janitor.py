"""The janitor: ends runs whose actor is gone with ``response_error`` RUN_ORPHANED.

A run actor lives in one process. If that process dies (kill -9, power loss) its runs stay
``in_progress`` in Redis forever - the embedded Redis keeps its data across restarts. Each node
holds a lease key refreshed by this worker; every live run is registered with its node. A run
whose node's lease has expired is orphaned: the janitor appends the terminal event (continuing
the run's seq), a persistence checkpoint, and unregisters it, so no Response is left
``in_progress`` and the projector persists the ending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import Protocol

import trio

from runtime.clock import WallClock
from runtime.envelope import EventFactory, decode_event, encode_event
from runtime.errors import RUN_ORPHANED
from runtime.ids import new_traceparent
from runtime.schema import TERMINAL_EVENT_TYPES, ErrorInfo, ResponseErrorPayload

log = logging.getLogger(__name__)


class JanitorLog(Protocol):
    async def refresh_lease(self, node_id: str, ttl_s: int) -> None: ...

    async def lease_alive(self, node_id: str) -> bool: ...

    async def live_runs(self) -> dict[str, str]: ...

    async def unregister_live(self, run_id: str) -> None: ...

    async def last_raw(self, run_id: str) -> tuple[str, bytes] | None: ...

    async def append(self, run_id: str, events: list[bytes],
                     checkpoint_seq: int | None = None) -> list[str]: ...

    async def set_status(self, run_id: str, status: str) -> None: ...


class Janitor:
    def __init__(self, log_: JanitorLog, *, node_id: str, local_runs: Container[str],
                 clock: WallClock, lease_ttl_s: int = 15, interval_s: float = 5.0,
                 on_orphan: Callable[[str], None] | None = None) -> None:
        self._log = log_
        self.node_id = node_id
        self._local = local_runs
        self._clock = clock
        self._ttl = lease_ttl_s
        self._interval = interval_s
        self._on_orphan = on_orphan
        self.ended = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        await self._log.refresh_lease(self.node_id, self._ttl)
        task_status.started()
        while True:
            await self._log.refresh_lease(self.node_id, self._ttl)
            await self.sweep()
            await trio.sleep(self._interval)

    async def sweep(self) -> int:
        ended = 0
        alive: dict[str, bool] = {}
        for run_id, node in (await self._log.live_runs()).items():
            if node == self.node_id:
                if run_id not in self._local and await self._end(run_id, "its actor is gone"):
                    ended += 1
                continue
            if node not in alive:
                alive[node] = await self._log.lease_alive(node)
            if not alive[node] and await self._end(run_id, f"node {node} is gone"):
                ended += 1
        self.ended += ended
        return ended

    async def _end(self, run_id: str, why: str) -> bool:
        """Append RUN_ORPHANED unless the run already ended; True if it did append."""
        last = await self._log.last_raw(run_id)
        if last is None:
            await self._log.unregister_live(run_id)
            return False
        event = decode_event(last[1])
        if event.type in TERMINAL_EVENT_TYPES:
            await self._log.unregister_live(run_id)
            return False
        factory = EventFactory(run_id, event.trace_context.traceparent or new_traceparent(),
                               self._clock.now_ms, first_seq=event.seq + 1)
        ending = factory.make(ResponseErrorPayload(
            response_id=run_id,
            error=ErrorInfo(code=RUN_ORPHANED, message=f"run orphaned: {why}")))
        await self._log.append(run_id, [encode_event(ending)], ending.seq)
        await self._log.set_status(run_id, "error")
        await self._log.unregister_live(run_id)
        log.warning("janitor: ended orphaned run %s (%s)", run_id, why)
        if self._on_orphan is not None:
            self._on_orphan(run_id)
        return True
