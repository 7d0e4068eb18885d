"""A node's one tail on Redis (SPEC §13): remote runs' events, and what other nodes tell it.

Any node serves any run. A run whose actor lives on another node has no fan-out here, so its
SSE clients are fed from Redis - but not with a blocking connection each: every remote run
that this node's clients watch gets a node-local :class:`~actors.fanout.Fanout`, and one task
(:meth:`NodeTail.run`) keeps them all fed from one read:

- **One Redis**: a single blocking ``XREAD`` over this node's control stream and every watched
  run's stream, each after its cursor. One connection per node, whatever the number of remote
  subscribers. When a client starts watching a run that the read in flight does not cover, a
  ``wake`` entry on this node's own control stream ends that read at once (at most one per
  read), and the next read covers it; a client that stops watching needs no wake-up (its run
  drops out of the next read).
- **Redis Cluster**: keys in different slots cannot share one command (``CROSSSLOT``, even on
  one cluster node), and every run's stream is in its own slot, so a blocking read over them is
  impossible without a connection per run. The tail polls instead: one non-blocking round of
  ``XREAD``\\s, pipelined (coredis sends one batch per cluster node), then, if the round found
  nothing, a pause of ``poll_ms`` (``CODY_TAIL_POLL_MS``, default 10) that a new watch cuts
  short. A remote subscriber on a cluster lags by up to ``poll_ms`` plus a round; one on a
  single Redis by about a round trip. While it watches nothing, the tail blocks on its control
  stream alone (one key: fine on a cluster too), woken like the single-Redis read.

The control stream ``<prefix>:node:{<node_id>}:control`` (runtime/keys.py) carries ``cancel``
entries: ``POST /runs/{id}/cancel`` on a node that does not own the run appends one to the
owner's stream (the owner is the run metadata's ``node``), the owner's tail hands it to the run
actor, and the asking node waits on its own remote fan-out for the terminal event
(:meth:`NodeTail.cancel_remote`).

No gap, no duplicate: :meth:`NodeTail.subscribe` starts a run's watch at the run's last entry
*before* it hands out the subscription, and the reader replays Redis after its own cursor only
*after* subscribing (actors/reader.py), so replay plus the tail covers everything; entries
delivered twice are dropped by the reader's cursor. A watch ends when its run's terminal event
goes by (every subscriber's channel then closes after it) or when its last subscriber leaves.
An outage fails the task, its supervisor waits it out, and it carries on from its cursors:
subscribers see keep-alives meanwhile, then the entries they missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from actors.fanout import Fanout, LogEntry, Subscription, peek_type
from actors.run_actor import RunActor
from runtime import TERMINAL_EVENT_TYPES, TERMINAL_STATUSES, Entry, EventLog, entry_key

log = logging.getLogger(__name__)

CANCEL = "cancel"
WAKE = "wake"


@dataclass(slots=True)
class _Watch:
    fanout: Fanout
    cursor: str


class NodeTail:
    def __init__(self, log_: EventLog, *, node_id: str,
                 local_actor: Callable[[str], RunActor | None], subscriber_buffer: int,
                 page: int = 1000, block_ms: int = 5000, poll_ms: int = 10) -> None:
        self._log = log_
        self.node_id = node_id
        self._local_actor = local_actor
        self._buffer = subscriber_buffer
        self._page = page
        self._block_ms = block_ms
        self._poll_s = poll_ms / 1000
        self._watches: dict[str, _Watch] = {}
        self._control_cursor = "0-0"  # a node id is new at every start: its stream too
        self._reading: frozenset[str] | None = None
        """The runs the blocking read in flight covers (None: no read in flight)."""
        self._woken = False
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.reads = 0
        """Reads done (one XREAD each on one Redis, one pipelined round on a cluster)."""
        self.wakes = 0
        self.cancels = 0
        """Cancel requests from other nodes handed to a run actor here."""

    @property
    def watching(self) -> int:
        """Remote runs watched now."""
        return len(self._watches)

    # ------------------------------------------------------------------ subscribers

    async def subscribe(self, run_id: str) -> Subscription | None:
        """A live subscription to a run whose actor is not here; ``None`` if its stream
        already ends with a terminal event (a replay of Redis has everything)."""
        watch = self._watches.get(run_id)
        if watch is None or watch.fanout.closed:
            last = await self._log.last_raw(run_id)
            if last is not None and peek_type(last[1]) in TERMINAL_EVENT_TYPES:
                return None
            watch = self._watches.get(run_id)  # someone may have started it meanwhile
            if watch is None or watch.fanout.closed:
                watch = _Watch(Fanout(self._buffer), last[0] if last is not None else "0-0")
                self._watches[run_id] = watch
                self._changed.set()
                if self._reading is not None and run_id not in self._reading \
                        and not self._woken:
                    self._woken = True
                    if self._nursery is not None:
                        self._nursery.start_soon(self._wake)
        return watch.fanout.subscribe()

    async def _wake(self) -> None:
        try:
            await self._log.send_control(self.node_id, {"kind": WAKE})
            self.wakes += 1
        except Exception as exc:  # the read in flight fails too, and is retried
            log.debug("node tail: wake-up not sent: %r", exc)

    # ------------------------------------------------------------------ cancel elsewhere

    async def cancel_remote(self, run_id: str, *, reason: str, wait_s: float) -> None:
        """Ask the node that owns ``run_id`` to cancel it, and wait (up to ``wait_s``) for
        its terminal event. Returns at once if the run has ended, has no owner on record, or
        its owner's lease is gone (the janitor ends it ``RUN_ORPHANED``)."""
        meta = await self._log.get_meta(run_id)
        owner = meta.get("node")
        if not owner or meta.get("status") in TERMINAL_STATUSES:
            return
        if owner != self.node_id and not await self._log.lease_alive(owner):
            return
        sub = await self.subscribe(run_id)
        if sub is None:
            return
        try:
            await self._log.send_control(owner, {"kind": CANCEL, "run_id": run_id,
                                                 "reason": reason})
            with trio.move_on_after(wait_s):
                while True:
                    try:
                        batch = await sub.receive.receive()
                    except trio.EndOfChannel:  # cut off (slow), or the watch ended
                        last = await self._log.last_entry(run_id)
                        if last is None or last[1] in TERMINAL_EVENT_TYPES:
                            return
                        sub.close()
                        sub = await self.subscribe(run_id)
                        if sub is None:
                            return
                        continue
                    if any(entry.terminal for entry in batch):
                        return
        finally:
            if sub is not None:
                sub.close()

    # ------------------------------------------------------------------ the one read

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await self.step()
            finally:
                self._nursery = None
                self._reading = None

    async def step(self) -> None:
        """One read, and what it found handed out (a cluster pauses after an empty one)."""
        self._prune()
        cursors = {run_id: w.cursor for run_id, w in self._watches.items()}
        self._changed = trio.Event()
        polling = self._log.cluster and bool(cursors)
        if not polling:  # a blocking read: a new watch must wake it
            self._reading = frozenset(cursors)
            self._woken = False
        try:
            control, found = await self._log.read_node(self.node_id, self._control_cursor,
                                                       cursors, self._page, self._block_ms)
        finally:
            self._reading = None
        self.reads += 1
        if control:
            self._control_cursor = control[-1][0]
            for _, fields in control:
                self._on_control(fields)
        for run_id, entries in found.items():
            self._publish(run_id, entries)
        if polling and not control and not found:
            with trio.move_on_after(self._poll_s):
                await self._changed.wait()

    def _prune(self) -> None:
        """Watches nobody subscribes to any more end (and drop out of the next read)."""
        for run_id in [r for r, w in self._watches.items() if len(w.fanout) == 0]:
            self._watches.pop(run_id).fanout.close()

    def _publish(self, run_id: str, entries: list[Entry]) -> None:
        watch = self._watches.get(run_id)
        if watch is None:
            return
        floor = entry_key(watch.cursor)
        batch = tuple(LogEntry.from_raw(i, d) for i, d in entries if entry_key(i) > floor)
        if not batch:
            return
        watch.cursor = batch[-1].entry_id
        watch.fanout.publish(batch)
        if any(entry.terminal for entry in batch):
            del self._watches[run_id]
            watch.fanout.close()

    def _on_control(self, fields: dict[str, str]) -> None:
        if fields.get("kind") != CANCEL:
            return
        actor = self._local_actor(fields.get("run_id", ""))
        if actor is None:
            return  # ended already, or never here: the asker reads the Response as it is
        self.cancels += 1
        actor.cancel(fields.get("reason") or "cancelled by user")
