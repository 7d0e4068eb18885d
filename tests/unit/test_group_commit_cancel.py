"""The group committer when a caller gives up (its ending deadline passed): a queued append is
withdrawn and never written behind its back; one already in a round trip may still land.
MockClock, no sockets."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from runtime.errors import RunFenced
from runtime.group_commit import GroupCommitter


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class SlowLog:
    """Each round trip takes ``round_trip_s``; records what it wrote."""

    def __init__(self, round_trip_s: float) -> None:
        self.round_trip_s = round_trip_s
        self.written: list[str] = []

    async def append_many(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]]
                          ) -> list[list[str]]:
        await trio.sleep(self.round_trip_s)
        out = []
        for run_id, events, _ in batches:
            self.written.append(run_id)
            out.append([f"{len(self.written)}-{i}" for i in range(len(events))])
        return out


async def test_a_queued_append_whose_caller_gives_up_is_withdrawn(
        mock_clock: trio.testing.MockClock) -> None:
    log = SlowLog(round_trip_s=1.0)
    committer = GroupCommitter(log)
    got: dict[str, list[str] | None] = {}

    async def append(run_id: str, give_up_after: float) -> None:
        got[run_id] = None
        with trio.move_on_after(give_up_after):
            got[run_id] = await committer.append(run_id, [b"{}"], 1)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(committer.run)
            nursery.start_soon(append, "in-flight", 0.5)  # taken at once, then gives up
            await trio.sleep(0.1)
            nursery.start_soon(append, "queued", 0.5)  # waits behind it, gives up queued
            nursery.start_soon(append, "patient", 5.0)
            await trio.sleep(4.0)
            nursery.cancel_scope.cancel()
    assert log.written == ["in-flight", "patient"]  # the round trip it was in still landed
    assert got == {"in-flight": None, "queued": None, "patient": ["2-0"]}
    assert committer.round_trips == 2


class FencingLog(SlowLog):
    """Refuses the appends of ``fenced`` runs (a janitor ended them), stores the others."""

    def __init__(self, fenced: set[str]) -> None:
        super().__init__(round_trip_s=0.01)
        self.fenced = fenced

    async def append_many(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]]
                          ) -> list[list[str] | RunFenced]:
        stored = await super().append_many([b for b in batches if b[0] not in self.fenced])
        ids = iter(stored)
        return [RunFenced(run_id, "node-b") if run_id in self.fenced else next(ids)
                for run_id, _, _ in batches]


async def test_a_fenced_run_in_a_round_trip_fails_alone(mock_clock: trio.testing.MockClock
                                                        ) -> None:
    log = FencingLog({"fenced"})
    committer = GroupCommitter(log)
    got: dict[str, object] = {}

    async def append(run_id: str) -> None:
        try:
            got[run_id] = await committer.append(run_id, [b"{}"], 1)
        except RunFenced as exc:
            got[run_id] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as callers:
                for run_id in ("a", "fenced", "b"):  # queued together: one round trip
                    callers.start_soon(append, run_id)
                await trio.lowlevel.checkpoint()
                await nursery.start(committer.run)
            nursery.cancel_scope.cancel()
    assert committer.round_trips == 1 and sorted(log.written) == ["a", "b"]
    assert isinstance(got["fenced"], RunFenced) and got["fenced"].ended_by == "node-b"
    assert sorted([got["a"], got["b"]]) == [["1-0"], ["2-0"]]  # trio picks the order
