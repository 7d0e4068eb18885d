"""Admission limits (README, Security): what a node and a tenant may have running at once.

Three limits, each ``0`` for none, each a ``429 OVERLOADED`` with ``Retry-After`` when reached:

- ``CODY_MAX_LIVE_RUNS``: run actors on this node (counted here, exact).
- ``CODY_MAX_SSE_CLIENTS``: open event streams on this node (counted here, exact).
- ``CODY_MAX_TENANT_RUNS``: a tenant's running runs across every node, counted in Redis: a
  sorted set per tenant of run ids scored by when their slot expires (runtime/keys.py
  ``tenant_runs``). A run takes its slot at submit (one Lua script: drop expired slots, count,
  add), frees it when it ends, and this node pushes the expiry of its runs' slots on every
  ``janitor_interval_s`` by ``lease_ttl_s``; a node that dies stops pushing, so its runs'
  slots free themselves within the lease, like the runs themselves are orphaned.
"""

from __future__ import annotations

import logging
import weakref
from collections import defaultdict

import trio

from actors.local_runs import LocalRuns
from runtime import CodyError, EventLog, Overloaded, RuntimeConfig, WallClock

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 5.0
"""A slot that cannot be freed within this is left to expire (within the lease)."""


class SseSlot:
    """One open event stream, counted until :meth:`release` (idempotent; also called when the
    response's generator is collected without having run, so a slot never leaks)."""

    __slots__ = ("__weakref__", "_admission", "_released")

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission.sse_clients -= 1

    def tie_to(self, obj: object) -> None:
        weakref.finalize(obj, self.release)


class Admission:
    def __init__(self, config: RuntimeConfig, *, log_: EventLog, runs: LocalRuns,
                 clock: WallClock) -> None:
        self._config = config
        self._log = log_
        self._runs = runs
        self._clock = clock
        self._held: dict[str, str] = {}
        """run id -> tenant of the slots this node holds."""
        self.sse_clients = 0

    @property
    def _ttl_ms(self) -> int:
        return self._config.lease_ttl_s * 1000

    def check_node(self) -> None:
        """Raises:
            Overloaded: this node has ``max_live_runs`` runs.
        """
        limit = self._config.max_live_runs
        if limit and len(self._runs.actors) >= limit:
            raise Overloaded(f"this node runs {limit} runs, its limit (CODY_MAX_LIVE_RUNS); "
                             "retry later", details={"limit": limit})

    async def acquire(self, tenant: str, run_id: str) -> None:
        """A tenant slot for ``run_id`` (nothing when there is no tenant limit).

        Raises:
            Overloaded: the tenant has ``max_tenant_runs`` runs going.
        """
        limit = self._config.max_tenant_runs
        if not limit:
            return
        if not await self._log.tenant_acquire(tenant, run_id, limit=limit,
                                              now_ms=self._clock.now_ms(), ttl_ms=self._ttl_ms):
            raise Overloaded(f"{limit} runs of this tenant are running, its limit "
                             "(CODY_MAX_TENANT_RUNS); retry later", details={"limit": limit})
        self._held[run_id] = tenant

    async def release(self, run_id: str) -> None:
        """Free ``run_id``'s slot; shielded and bounded (a failure leaves it to expire)."""
        tenant = self._held.pop(run_id, None)
        if tenant is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT_S):
            try:
                await self._log.tenant_release(tenant, run_id)
            except CodyError as exc:
                log.warning("tenant slot of run %s not freed (%s); it expires within the "
                            "lease", run_id, exc.code)

    def open_sse(self) -> SseSlot:
        """Raises:
            Overloaded: ``max_sse_clients`` streams are open on this node.
        """
        limit = self._config.max_sse_clients
        if limit and self.sse_clients >= limit:
            raise Overloaded(f"{limit} event streams are open on this node, its limit "
                             "(CODY_MAX_SSE_CLIENTS); retry later", details={"limit": limit})
        self.sse_clients += 1
        return SseSlot(self)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep this node's tenant slots from expiring while their runs live (a worker)."""
        task_status.started()
        while True:
            await trio.sleep(self._config.janitor_interval_s)
            slots: dict[str, list[str]] = defaultdict(list)
            for run_id, tenant in list(self._held.items()):
                if run_id in self._runs:
                    slots[tenant].append(run_id)
            if slots:
                try:
                    await self._log.tenant_refresh(slots, now_ms=self._clock.now_ms(),
                                                   ttl_ms=self._ttl_ms)
                except CodyError as exc:
                    log.warning("tenant slots not refreshed (%s)", exc.code)
