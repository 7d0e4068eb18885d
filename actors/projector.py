"""The persistence projector (SPEC §5): Redis checkpoints in, store rows out.

The run actors append ``{run_id, seq}`` checkpoints to the persist queue, a run's to the shard
its id hashes to (runtime/keys.py). The projectors of every node share the shards: each reads
all of them through the ``cody-projector`` consumer group (never a connection held per shard,
see runtime/eventlog.py), rebuilds each run's Response by replaying the run's own stream (the
stream is the truth; the checkpoint only says how far to go), upserts it (the store keeps the
highest seq, so a replay or a second projector changes nothing), and only then XACKs. Entries
a dead projector left pending are taken over with XAUTOCLAIM once idle long enough, so a crash
loses nothing. Terminal runs get the retention TTL. At start the projector also moves a
pre-sharding queue into the shards (``EventLog.ensure_group``).
A poison run (an event in its stream that cannot be folded) is logged, counted (``poisoned``)
and acked; the others are persisted as usual. Only an outage (an infrastructure error) stops
the projector, for its supervisor to wait out.

A small cache keeps each live run's reducer and cursor, so a long run is read once, not once
per checkpoint. After a read that found work the projector lingers a moment (``linger_s``) so
that the checkpoints of many runs, and a short run's three, fold into one store write.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import trio

from runtime import Checkpoint, CorruptStream, Response, StreamFold, fold_streams

log = logging.getLogger(__name__)


class ProjectorLog(Protocol):
    async def ensure_group(self) -> None: ...

    async def read_checkpoints(self, consumer: str, count: int,
                               block_ms: int) -> list[Checkpoint]: ...

    async def claim_checkpoints(self, consumer: str, min_idle_ms: int,
                                count: int) -> list[Checkpoint]: ...

    async def ack(self, checkpoints: Sequence[Checkpoint], *, retain: Sequence[str] = (),
                  ttl_s: int = 0) -> None: ...

    async def read_after(self, run_id: str, cursor: str,
                         count: int) -> list[tuple[str, bytes]]: ...

    async def read_after_many(self, reads: Sequence[tuple[str, str, int]]
                              ) -> list[list[tuple[str, bytes]]]: ...

    async def trim_persist(self) -> int: ...


class ProjectorStore(Protocol):
    async def upsert_responses(self, items: Sequence[tuple[Response, int]]
                               ) -> list[bool]: ...


class Projector:
    def __init__(self, log_: ProjectorLog, store: ProjectorStore, *, consumer: str,
                 claim_idle_ms: int, block_ms: int, retention_s: int,
                 batch: int = 256, cache_size: int = 4096,
                 trim_interval_s: float = 30.0, linger_s: float = 0.0) -> None:
        self._log = log_
        self._store = store
        self.consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._block_ms = block_ms
        self._retention_s = retention_s
        self._batch = batch
        self._cache: OrderedDict[str, StreamFold] = OrderedDict()
        self._cache_size = cache_size
        self.persisted = 0
        self.poisoned = 0
        """Runs skipped because their stream cannot be folded (each time one is met)."""
        self._trim_interval_s = trim_interval_s
        self._linger_s = linger_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        await self._log.ensure_group()
        task_status.started()
        next_claim = 0.0
        next_trim = trio.current_time() + self._trim_interval_s
        while True:
            checkpoints: list[Checkpoint] = []
            if trio.current_time() >= next_claim:
                checkpoints += await self._log.claim_checkpoints(
                    self.consumer, self._claim_idle_ms, self._batch)
                next_claim = trio.current_time() + max(self._claim_idle_ms / 2000, 0.05)
            checkpoints += await self._log.read_checkpoints(
                self.consumer, self._batch, 10 if checkpoints else self._block_ms)
            if checkpoints and self._linger_s > 0 and len(checkpoints) < self._batch:
                # Nobody waits on the store while a run is live (its actor serves it), so
                # linger: the checkpoints that come meanwhile, of other runs and of the same
                # one, fold into this one write, and a starting run's first events do not
                # queue behind its own persistence.
                await trio.sleep(self._linger_s)
                checkpoints += await self._log.read_checkpoints(
                    self.consumer, self._batch - len(checkpoints), 0)
            if checkpoints:
                await self.project(checkpoints)
            if trio.current_time() >= next_trim:
                # acked entries are history: drop those every consumer is past
                await self._log.trim_persist()
                next_trim = trio.current_time() + self._trim_interval_s

    async def project(self, checkpoints: Sequence[Checkpoint]) -> None:
        """Persist every run named, up to at least its checkpoint, then ack them all.

        The runs' streams are read together (one pipelined round trip per page round,
        ``fold_streams``), their Responses written in one store call, and the acks and the
        terminal runs' retention TTLs sent in one more round trip: a batch of N runs costs
        about three round trips, not 2N + 1."""
        wanted: dict[str, int] = {}
        for c in checkpoints:
            wanted[c.run_id] = max(wanted.get(c.run_id, 0), c.seq)
        folds = [(self._cache.pop(run_id) if run_id in self._cache else StreamFold(run_id), seq)
                 for run_id, seq in wanted.items()]
        failed = await fold_streams(self._log, folds)  # an outage raises: nothing acked
        for run_id, exc in failed.items():
            # A poison run (its stream cannot be folded) is logged, counted and acked
            # with the rest: retrying it would fail the same way forever, and a crash
            # would leave its checkpoint pending, to be claimed and crash us again.
            self.poisoned += 1
            if isinstance(exc, CorruptStream):
                log.error("projector: skipping poison run %s: %s", run_id, exc.message)
            else:
                log.error("projector: cannot rebuild run %s; skipping it", run_id,
                          exc_info=exc)
        # a run whose stream has expired (an earlier projector persisted it) has no start
        folded = [f for f, _ in folds if f.run_id not in failed and f.reducer.started]
        retain: list[str] = []
        if folded:
            written = await self._store.upsert_responses(
                [(f.reducer.snapshot(), f.reducer.last_seq) for f in folded])
            self.persisted += sum(written)
            for f in folded:
                if f.reducer.is_terminal:
                    retain.append(f.run_id)
                else:
                    self._cache[f.run_id] = f
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        await self._log.ack(checkpoints, retain=retain, ttl_s=self._retention_s)
