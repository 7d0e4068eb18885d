"""The lifecycle service: whether this server can serve (``/ready``), and its drain.

Readiness checks Redis and the store, each bounded: a hung dependency makes ``/ready`` false,
never slow. The drain stops accepting runs (a submit then gets ``503 SHUTTING_DOWN``), ends
every open run ``aborted`` (each SSE stream gets its terminal event) and waits for the endings,
up to a deadline.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from actors.local_runs import LocalRuns
from runtime import EventLog, RedisUnavailable, Store, StoreUnavailable

CHECK_TIMEOUT_S = 2.0
"""Each readiness check gives up after this."""


@dataclass(frozen=True, slots=True)
class Readiness:
    redis: bool
    store: bool

    def as_dict(self) -> dict[str, bool]:
        return {"redis": self.redis, "store": self.store}

    def raise_unless_ready(self) -> None:
        """Raises:
            RedisUnavailable: Redis did not answer (checked first: nothing works without it).
            StoreUnavailable: the store did not answer.
        """
        if not self.redis:
            raise RedisUnavailable("not ready", details=self.as_dict())
        if not self.store:
            raise StoreUnavailable("not ready", details=self.as_dict())


class Lifecycle:
    def __init__(self, *, runs: LocalRuns, log_: EventLog, store: Store) -> None:
        self._runs = runs
        self._log = log_
        self._store = store

    @property
    def closing(self) -> bool:
        return not self._runs.accepting

    async def ready(self) -> Readiness:
        redis_ok = store_ok = False
        with trio.move_on_after(CHECK_TIMEOUT_S):
            try:
                await self._log.ping()
                redis_ok = True
            except Exception:
                pass
        with trio.move_on_after(CHECK_TIMEOUT_S):
            try:
                await self._store.ping()
                store_ok = True
            except Exception:
                pass
        return Readiness(redis=redis_ok, store=store_ok)

    async def drain(self, reason: str = "server shutting down", timeout_s: float = 15.0) -> None:
        """Ends every open run ``aborted`` (each SSE stream gets its terminal event)."""
        self._runs.accepting = False
        actors = list(self._runs)
        for actor in actors:
            actor.cancel(reason)
        with trio.move_on_after(timeout_s):
            for actor in actors:
                await actor.finished.wait()
