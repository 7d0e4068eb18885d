"""This process's run actors, and the Responses of the runs that just finished here.

The services share one :class:`LocalRuns`: the submission service starts actors through it,
the reading and thread services find live ones (their snapshot is the freshest Response there
is), the lifecycle drains them, and the janitor asks it which runs are still alive here. A run
that just ended stays in :class:`RecentlyFinished` until the projector has surely caught up, so
the next turn of its thread sees it as history, and ``GET /threads/{id}`` shows it ended,
before it reaches the store.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

import trio

from actors.run_actor import RunActor
from runtime import TERMINAL_STATUSES, Metrics, Response, ShuttingDown


@dataclass(slots=True)
class RuntimeStats:
    runs_started: int = 0
    runs_finished: int = 0


@dataclass(slots=True)
class RecentlyFinished:
    """Recently finished runs, kept until the projector has surely caught up."""

    responses: OrderedDict[str, Response] = field(default_factory=OrderedDict)
    limit: int = 2048

    def add(self, resp: Response) -> None:
        self.responses[resp.id] = resp
        while len(self.responses) > self.limit:
            self.responses.popitem(last=False)


def freshest(stored: Iterable[Response], fresher: Iterable[Response]) -> list[Response]:
    """Runs as the store has them, each replaced by a fresher view (a live or just finished
    run) unless the store already has it ended (the store only moves forward, so an ended
    run never shows older); in order of creation."""
    runs = {r.id: r for r in stored}
    for r in fresher:
        known = runs.get(r.id)
        if known is None or known.status not in TERMINAL_STATUSES:
            runs[r.id] = r
    return sorted(runs.values(), key=lambda r: r.created_at)


class LocalRuns:
    """The run actors of this process, each in the runs nursery, never restarted."""

    def __init__(self, nursery: trio.Nursery, metrics: Metrics | None = None) -> None:
        self._nursery = nursery
        self.metrics = metrics or Metrics()
        self.actors: dict[str, RunActor] = {}
        """By run id; the janitor reads it to leave this node's runs alone."""
        self.recent = RecentlyFinished()
        self.stats = RuntimeStats()
        self.slow_dropped_ended = 0
        """Subscribers cut off for being slow by runs no longer here (for the metric)."""
        self.accepting = True
        """False once the drain began: no new run would survive it."""

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.actors

    def __iter__(self) -> Iterator[RunActor]:
        return iter(list(self.actors.values()))

    def get(self, run_id: str) -> RunActor | None:
        return self.actors.get(run_id)

    def check_accepting(self) -> None:
        """Raises:
            ShuttingDown: the server is draining.
        """
        if not self.accepting:
            raise ShuttingDown("the server is shutting down")

    def reserve(self, actor: RunActor) -> None:
        """Known here before the run is registered live anywhere: the janitor checks here."""
        self.actors[actor.run_id] = actor

    def release(self, run_id: str) -> None:
        self.actors.pop(run_id, None)

    def start(self, actor: RunActor,
              on_end: Callable[[], Awaitable[None]] | None = None,
              before: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run ``actor``; ``before`` first (a queued run's wait for its turn,
        ``actors/thread_policies.py``; it must not raise), ``on_end`` (shielded: it must
        bound itself) once it is gone."""
        self.stats.runs_started += 1
        spec = actor.spec
        self.metrics.run_started(spec.run_id, spec.provider_id, spec.model_id,
                                 trio.current_time())
        self._nursery.start_soon(self._run, actor, on_end, before)

    async def _run(self, actor: RunActor,
                   on_end: Callable[[], Awaitable[None]] | None = None,
                   before: Callable[[], Awaitable[None]] | None = None) -> None:
        try:
            if before is not None:
                await before()
            await actor.run()
        finally:
            # fenced: another node's janitor ended the run; what the actor folded lacks that
            # ending, so it is not shown as the run's (the store and Redis have the ending)
            snap = None if actor.fenced else actor.snapshot()
            if snap is not None:
                self.recent.add(snap)
            self.release(actor.run_id)
            self.stats.runs_finished += 1
            self.slow_dropped_ended += actor.fanout.dropped_count
            spec = actor.spec
            self.metrics.run_finished(spec.run_id, snap.status if snap else "error",
                                      spec.provider_id, spec.model_id,
                                      snap.usage if snap else None)
            if on_end is not None:
                with trio.CancelScope(shield=True):
                    await on_end()

    def slow_dropped(self) -> int:
        """Every subscriber cut off for being slow, by runs here now or before (monotonic:
        a run's count moves from the live sum to the ended one in one step)."""
        return self.slow_dropped_ended + sum(a.fanout.dropped_count
                                             for a in self.actors.values())

    def recent_on(self, thread_id: str) -> list[Response]:
        return [r for r in self.recent.responses.values() if r.thread_id == thread_id]

    def live_on(self, thread_id: str) -> list[Response]:
        """This process's runs on the thread as they are now (``queued`` before they start)."""
        return [actor.snapshot() or actor.queued() for actor in self
                if actor.spec.thread_id == thread_id]
