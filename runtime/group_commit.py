"""Group commit for run streams: many actors' appends, one pipelined round trip.

Each run actor appends its events before it publishes them, one chunk at a time. With
hundreds of runs live, a pipeline per chunk per run spends most of the CPU in the Redis
client's per-round-trip machinery. The committer queues every actor's append and writes all
that are waiting in one pipeline; while that round trip is in flight the next batch gathers.
An idle system pays no added latency (a lone append goes out at once); a busy one amortises
the round trip over every run. Order within a run is kept: an actor has at most one append
in flight, and a pipeline's commands run in order. A run whose append is refused (fenced: a
janitor ended it, :class:`~runtime.errors.RunFenced`) gets that error; the others in the same
round trip are stored as usual.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from runtime.errors import CodyError, RedisUnavailable, RunFenced

log = logging.getLogger(__name__)


class BatchLog(Protocol):
    async def append_many(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]]
                          ) -> list[list[str] | RunFenced]: ...


@dataclass(slots=True, eq=False)
class _Request:
    run_id: str
    events: Sequence[bytes]
    checkpoint_seq: int | None
    done: trio.Event = field(default_factory=trio.Event)
    ids: list[str] | None = None
    error: BaseException | None = None
    taken: bool = False
    """Taken from the queue into a round trip: no longer withdrawn if its caller gives up."""


class GroupCommitter:
    def __init__(self, log_: BatchLog, *, max_events: int = 2000,
                 commit_timeout_s: float = 10.0) -> None:
        self._log = log_
        self._max_events = max_events
        self._commit_timeout_s = commit_timeout_s
        self._queue: deque[_Request] = deque()
        self._wake = trio.Event()
        self.round_trips = 0
        self.appends = 0
        self._closed = False

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        """Same contract as ``EventLog.append``; returns once the events are in Redis."""
        if self._closed:  # nobody would write it: fail now rather than wait forever
            raise RedisUnavailable("the event log writer has stopped")
        request = _Request(run_id, events, checkpoint_seq)
        self._queue.append(request)
        self._wake.set()
        try:
            await request.done.wait()
        except trio.Cancelled:
            # still queued: withdrawn, so it is never written behind the caller's back (an
            # ending past its deadline must not land after the janitor's). Already in a
            # round trip: that one is bounded (``commit_timeout_s``) and may still land.
            if not request.taken:
                self._queue.remove(request)
            raise
        if request.error is not None:
            raise request.error
        assert request.ids is not None
        return request.ids

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    await self._commit(self._take())
        finally:
            self._closed = True
            for request in self._queue:  # shutting down: nobody is left to write
                request.error = RedisUnavailable("the event log writer has stopped")
                request.done.set()

    def _take(self) -> list[_Request]:
        batch: list[_Request] = []
        events = 0
        while self._queue and (not batch or events + len(self._queue[0].events)
                               <= self._max_events):
            request = self._queue.popleft()
            request.taken = True
            batch.append(request)
            events += len(request.events)
        return batch

    async def _commit(self, batch: list[_Request]) -> None:
        try:
            # shielded: a half-sent batch would leave seq gaps; bounded: never hangs shutdown
            with trio.CancelScope(shield=True), trio.fail_after(self._commit_timeout_s):
                results = await self._log.append_many(
                    [(r.run_id, r.events, r.checkpoint_seq) for r in batch])
        except (CodyError, OSError, trio.TooSlowError) as exc:
            log.warning("group commit of %d appends failed: %s", len(batch), exc)
            for request in batch:
                request.error = exc if isinstance(exc, CodyError) else RedisUnavailable(
                    f"event log append failed: {exc}")
                request.done.set()
            return
        except Exception as exc:  # never leave an actor waiting forever
            log.exception("group commit failed")
            for request in batch:
                request.error = exc
                request.done.set()
            return
        self.round_trips += 1
        self.appends += len(batch)
        for request, result in zip(batch, results, strict=True):
            if isinstance(result, RunFenced):
                request.error = result
            else:
                request.ids = result
            request.done.set()
