"""A real ``RunActor`` on an in-memory ``RunLog`` and a scripted provider, under
``MockClock(autojump_threshold=0)``: no sockets, so Redis outages of minutes take milliseconds.

What a subscriber is sent is checked against what the log stored, batch by batch: nothing is
published (or shown by ``snapshot``) that the log did not take, whatever fails; the stored
stream is gapless with one terminal event, or none when the run is left for the janitor; and
every ending lands within its deadlines.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from actors.fanout import LogEntry
from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.provider import ProviderCall
from actors.providers.replay import split_blocks
from actors.run_actor import RunActor, RunLimits, RunSpec
from actors.tools import BUILTIN_TOOLS, ToolResult
from runtime.clock import FixedClock
from runtime.config import RuntimeConfig
from runtime.envelope import decode_event
from runtime.errors import (
    REDIS_ERROR,
    RUN_FAILED,
    CodyError,
    ProviderError,
    RedisUnavailable,
    RunFenced,
    ValidationFailed,
)
from runtime.ids import new_uuid
from runtime.reducer import ResponseReducer, rebuild
from runtime.schema import TERMINAL_EVENT_TYPES, StreamEvent
from tests.harness import request_settings, response_view

LIBRARY = FixtureLibrary()
LIMITS = RunLimits(append_deadline_s=30.0, ending_deadline_s=10.0)


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


# --------------------------------------------------------------------------- the fakes


@dataclass
class MemoryLog:
    """A ``RunLog`` in memory. Stores a batch whole or not at all; can be down for a while
    from a given attempt on (an outage), refuse one attempt as a bug would, or hang."""

    entries: list[tuple[str, bytes]] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)
    """The size of each stored batch."""
    checkpoints: list[int] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    attempts: int = 0
    refused: int = 0
    outage_from: int | None = None
    """The attempt (1-based) at which Redis goes down."""
    outage_s: float = 0.0
    broken_attempt: int | None = None
    fenced_from: int | None = None
    """The attempt (1-based) from which every append is refused: a janitor ended the run."""
    hang: Callable[[Sequence[bytes]], bool] = lambda data: False
    up_at: float = -1.0
    outage_at: float | None = None
    """When Redis went down (trio time)."""

    def down(self) -> bool:
        return trio.current_time() < self.up_at

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        await trio.lowlevel.checkpoint()
        self.attempts += 1
        if self.attempts == self.outage_from:
            self.outage_at = trio.current_time()
            self.up_at = self.outage_at + self.outage_s
        if self.hang(events):
            await trio.sleep_forever()
        if self.attempts == self.broken_attempt:
            raise CodyError("Redis error: WRONGTYPE", code=REDIS_ERROR)
        if self.fenced_from is not None and self.attempts >= self.fenced_from:
            raise RunFenced(run_id, "node-b")
        if self.down():
            self.refused += 1
            raise RedisUnavailable("Redis is unavailable: ConnectionError: test")
        ids = []
        for data in events:
            ids.append(f"{len(self.entries) + 1}-0")
            self.entries.append((ids[-1], data))
        self.batches.append(len(events))
        if checkpoint_seq is not None:
            self.checkpoints.append(checkpoint_seq)
        return ids

    async def set_status(self, run_id: str, status: str) -> None:
        await trio.lowlevel.checkpoint()
        if self.down():
            raise RedisUnavailable("Redis is unavailable: test")
        self.statuses.append(status)

    def events(self) -> list[StreamEvent]:
        return [decode_event(data) for _, data in self.entries]


@dataclass
class ScriptedProvider:
    """Plays each request's recorded body one SSE block at a time, ``pace_s`` apart; can
    fail to open, or stall (forever) after some blocks."""

    fx: Fixture
    pace_s: float = 0.01
    fail_open: Exception | None = None
    stall_after: int | None = None
    calls: list[ProviderCall] = field(default_factory=list)
    stalled: trio.Event = field(default_factory=trio.Event)

    @asynccontextmanager
    async def stream(self, call: ProviderCall) -> AsyncIterator[AsyncIterator[bytes]]:
        self.calls.append(call)
        if self.fail_open is not None:
            raise self.fail_open
        blocks = split_blocks(self.fx.exchanges[call.exchange].stream)

        async def body() -> AsyncIterator[bytes]:
            for i, block in enumerate(blocks):
                if i == self.stall_after:
                    self.stalled.set()
                    await trio.sleep_forever()
                await trio.sleep(self.pace_s)
                yield block

        yield body()


@dataclass
class RecordedTools:
    """The fixture's recorded tool outputs, in call order; or a crash."""

    fx: Fixture
    crash: Exception | None = None
    ran: list[str] = field(default_factory=list)

    @property
    def specs(self) -> list[Any]:
        return [BUILTIN_TOOLS[t] for t in self.fx.tools]

    async def run(self, name: str, arguments: str) -> ToolResult:
        await trio.sleep(0.1)
        if self.crash is not None:
            raise self.crash
        items = self.fx.expected["output_items"]
        (call_id,) = [i["call_id"] for i in items if i["type"] == "function_call"
                      and (i["name"], i["arguments"]) == (name, arguments)]
        (out,) = [t for ex in self.fx.exchanges for t in ex.tool_outputs
                  if t.call_id == call_id]
        self.ran.append(name)
        return ToolResult(out.output, out.success)


def actor_for(fx: Fixture, log: MemoryLog, provider: ScriptedProvider | None = None, *,
              tools: RecordedTools | None = None, limits: RunLimits = LIMITS) -> RunActor:
    spec = RunSpec(run_id=new_uuid(), thread_id=new_uuid(), turn_id=new_uuid(), agent_id=None,
                   provider_id=fx.provider, protocol=fx.protocol, model_id=fx.model,
                   prompt=fx.prompt, settings=request_settings(fx), history=())
    return RunActor(spec, log_=log, provider=provider or ScriptedProvider(fx),  # type: ignore[arg-type]
                    tools=tools or RecordedTools(fx),  # type: ignore[arg-type]
                    clock=FixedClock(), limits=limits, subscriber_buffer=100_000,
                    rng=random.Random(7))


@dataclass
class Played:
    published: list[LogEntry]
    finished_at: float
    """When the actor finished (trio time)."""
    snapshots_ok: bool

    def since(self, t: float | None) -> float:
        assert t is not None
        return self.finished_at - t


async def play(actor: RunActor, log: MemoryLog,
               during: Callable[[], Any] | None = None) -> Played:
    """Run the actor to its end with one subscriber, checking every 50 ms (mock time) that
    its snapshot is the fold of what the log stored."""
    sub = actor.fanout.subscribe()
    published: list[LogEntry] = []
    ok = True

    async def watch() -> None:
        nonlocal ok
        reducer, seen = ResponseReducer(), 0
        while not actor.finished.is_set():
            for _, data in log.entries[seen:]:
                reducer.apply(decode_event(data))
            seen = len(log.entries)
            ok = ok and actor.snapshot() == (reducer.snapshot() if seen else None)
            await trio.sleep(0.05)

    finished_at: list[float] = []

    async def stamp() -> None:
        await actor.finished.wait()
        finished_at.append(trio.current_time())

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(actor.run)
            nursery.start_soon(watch)
            nursery.start_soon(stamp)
            if during is not None:
                nursery.start_soon(during)
            async for batch in sub.receive:
                published += batch
    return Played(published, finished_at[0], ok)


def check(played: Played, log: MemoryLog, *, ended: bool = True) -> list[StreamEvent]:
    """Published exactly what was stored, in order; gapless; one terminal event iff ``ended``."""
    assert [(e.entry_id, e.data) for e in played.published] == log.entries
    assert played.snapshots_ok, "the actor showed what Redis had not taken"
    events = log.events()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    terminals = [i for i, e in enumerate(events) if e.type in TERMINAL_EVENT_TYPES]
    assert terminals == ([len(events) - 1] if ended else [])
    return events


# --------------------------------------------------------------------------- the happy paths


async def test_a_fixture_streams_through_the_actor(mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "simple_message")
    log, provider = MemoryLog(), ScriptedProvider(LIBRARY.get("openai", "simple_message"))
    actor = actor_for(fx, log, provider)
    played = await play(actor, log)
    events = check(played, log)
    assert response_view(rebuild(events)) == fx.expected
    assert actor.snapshot() == rebuild(events)
    assert log.statuses == ["complete"]
    assert log.checkpoints[0] == 3 and log.checkpoints[-1] == len(events)
    assert [c.body for c in provider.calls] == [fx.exchanges[0].request]
    assert actor.fanout.closed and actor.finished.is_set()
    assert events[1].payload.initial_content == fx.prompt  # type: ignore[union-attr]


async def test_the_tool_loop_runs_through_the_actor(mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "parallel_tools")
    log, provider, tools = MemoryLog(), ScriptedProvider(fx), RecordedTools(fx)
    played = await play(actor_for(fx, log, provider, tools=tools), log)
    events = check(played, log)
    assert response_view(rebuild(events)) == fx.expected
    assert sorted(tools.ran) == ["list_dir", "read_file"]
    assert [c.body for c in provider.calls] == [ex.request for ex in fx.exchanges]


# --------------------------------------------------------------------------- Redis outages


async def test_a_short_outage_mid_turn_is_ridden_out(mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("anthropic", "rapid_deltas")
    log = MemoryLog(outage_from=5, outage_s=6.0)
    played = await play(actor_for(fx, log), log)
    events = check(played, log)
    assert response_view(rebuild(events)) == fx.expected
    assert log.statuses == ["complete"]
    assert 4 <= log.refused <= 15, log.refused  # capped backoff: neither a spin nor a sleep


async def test_an_append_past_its_deadline_is_never_shown_and_the_ending_has_no_gap(
        mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "rapid_deltas")
    log = MemoryLog(outage_from=5, outage_s=LIMITS.append_deadline_s + 4)
    actor = actor_for(fx, log)
    played = await play(actor, log)
    events = check(played, log)
    final = events[-1].payload
    assert final.type == "response_error"
    assert final.error.code == RUN_FAILED  # type: ignore[union-attr]
    assert final.error.details == {"exception": "RedisUnavailable"}  # type: ignore[union-attr]
    assert log.statuses == ["error"]
    # retried for the append deadline, then the ending waited for Redis (inside its own)
    assert LIMITS.append_deadline_s + 4 <= played.since(log.outage_at) < (
        LIMITS.append_deadline_s + LIMITS.ending_deadline_s)
    assert actor.snapshot() == rebuild(events)


async def test_redis_gone_for_good_leaves_the_run_to_the_janitor_in_bounded_time(
        mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "rapid_deltas")
    log = MemoryLog(outage_from=5, outage_s=float("inf"))
    actor = actor_for(fx, log)
    played = await play(actor, log)
    events = check(played, log, ended=False)
    assert LIMITS.append_deadline_s <= played.since(log.outage_at) <= (
        LIMITS.append_deadline_s + LIMITS.ending_deadline_s + 0.01)
    assert log.statuses == []
    snap = actor.snapshot()
    assert snap is not None and snap.status == "in_progress" and snap == rebuild(events)


async def test_a_hung_ending_is_cut_at_the_ending_deadline(
        mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "simple_message")
    log = MemoryLog(hang=lambda data: any(b'"type":"response_done"' in d for d in data))
    actor = actor_for(fx, log)
    began = trio.current_time()
    played = await play(actor, log)
    check(played, log, ended=False)
    assert LIMITS.ending_deadline_s <= played.since(began) <= LIMITS.ending_deadline_s + 1
    assert log.statuses == []


async def test_an_append_error_that_is_a_bug_is_not_retried(
        mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "simple_message")
    log = MemoryLog(broken_attempt=4)
    began = trio.current_time()
    played = await play(actor_for(fx, log), log)
    events = check(played, log)
    assert log.attempts == 5  # the broken one, then the ending
    assert events[-1].payload.error.details == {"exception": "CodyError"}  # type: ignore[union-attr]
    assert played.since(began) < 1


# --------------------------------------------------------------------------- fenced


@pytest.mark.parametrize("at", [1, 3, 6])
async def test_a_fenced_append_stops_the_actor_at_once_writing_nothing_more(
        mock_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, at: int) -> None:
    """Node loss: another node's janitor ended the run; the actor's next append is refused
    (RunFenced). It is not retried, no ending and no status are written, the provider call is
    dropped, the subscriber's stream closes, and one warning names the run."""
    fx = LIBRARY.get("openai", "rapid_deltas")
    log = MemoryLog(fenced_from=at)
    provider = ScriptedProvider(fx)
    actor = actor_for(fx, log, provider)
    began = trio.current_time()
    with caplog.at_level("WARNING", logger="actors.run_actor"):
        played = await play(actor, log)
    check(played, log, ended=False)
    assert log.attempts == at and len(log.batches) == at - 1  # refused once, then nothing
    assert log.statuses == []
    assert actor.fenced and actor.fanout.closed and actor.finished.is_set()
    assert played.since(began) < 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and actor.run_id in warnings[0] and "fenced" in warnings[0]


async def test_a_fenced_ending_writes_no_status(mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "simple_message")
    probe = MemoryLog()
    played = await play(actor_for(fx, probe), probe)  # how many appends the turn makes
    check(played, probe)
    log = MemoryLog(fenced_from=probe.attempts)  # the ending is the one refused
    actor = actor_for(fx, log)
    played = await play(actor, log)
    check(played, log, ended=False)
    assert actor.fenced and log.statuses == [] and log.attempts == probe.attempts


# --------------------------------------------------------------------------- cancel


async def test_cancel_mid_stream_cancels_the_open_item(mock_clock: trio.testing.MockClock
                                                       ) -> None:
    fx = LIBRARY.get("anthropic", "rapid_deltas")
    log, provider = MemoryLog(), ScriptedProvider(fx, stall_after=40)
    actor = actor_for(fx, log, provider)

    async def cancel_when_stalled() -> None:
        await provider.stalled.wait()
        actor.cancel()
        actor.cancel("again")  # idempotent

    played = await play(actor, log, cancel_when_stalled)
    events = check(played, log)
    assert [e.type for e in events[-3:]] == ["item_cancelled", "turn_aborted_by_user",
                                             "response_done"]
    assert log.statuses == ["aborted"]
    snap = actor.snapshot()
    assert snap is not None and snap.status == "aborted"
    assert snap.finish_reason == "cancelled by user"


async def test_cancel_during_an_outage_stops_retrying_and_aborts_once_redis_is_back(
        mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("openai", "rapid_deltas")
    log = MemoryLog(outage_from=5, outage_s=8.0)
    actor = actor_for(fx, log)
    cancelled_at: list[float] = []

    async def cancel_later() -> None:
        await trio.sleep(2.0)
        cancelled_at.append(trio.current_time())
        actor.cancel()

    played = await play(actor, log, cancel_later)
    events = check(played, log)
    assert [e.type for e in events[-2:]] == ["turn_aborted_by_user", "response_done"]
    assert log.statuses == ["aborted"]
    assert cancelled_at and log.outage_at is not None
    # the retries stopped at the cancel; the ending was written once Redis was back
    assert 8.0 <= played.since(log.outage_at) < 8.0 + LIMITS.append_backoff_max_s + 0.1


async def test_the_ending_is_shielded_from_the_runtime_shutting_down(
        mock_clock: trio.testing.MockClock) -> None:
    """Drain cancels every actor, then the runtime's nursery is cancelled: an ending already
    under way (here: waiting out an outage) is still written, within its deadline."""
    fx = LIBRARY.get("openai", "rapid_deltas")
    log = MemoryLog(outage_from=5, outage_s=4.0)
    actor = actor_for(fx, log)
    sub = actor.fanout.subscribe()
    with trio.fail_after(60):
        async with trio.open_nursery() as runs:
            runs.start_soon(actor.run)
            await trio.sleep(1.0)
            actor.cancel("server shutting down")
            await trio.sleep(0.5)
            runs.cancel_scope.cancel()
        published = [e async for batch in sub.receive for e in batch]
    check(Played(published, 0.0, True), log)
    assert log.events()[-1].payload.type == "response_done"
    assert log.statuses == ["aborted"]


# --------------------------------------------------------------------------- failures


async def test_a_provider_error_before_the_first_byte_keeps_its_code(
        mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("anthropic", "simple_message")
    provider = ScriptedProvider(fx, fail_open=ProviderError(
        "bad key", code="PROVIDER_AUTH", details={"provider": "anthropic", "status": 401}))
    log = MemoryLog()
    events = check(await play(actor_for(fx, log, provider), log), log)
    error = events[-1].payload
    assert error.error.code == "PROVIDER_AUTH"  # type: ignore[union-attr]
    assert error.error.details == {"provider": "anthropic", "status": 401}  # type: ignore[union-attr]
    assert log.statuses == ["error"]


async def test_a_crashing_tool_runner_is_run_failed(mock_clock: trio.testing.MockClock) -> None:
    fx = LIBRARY.get("anthropic", "tool_read_file")
    log = MemoryLog()
    actor = actor_for(fx, log, tools=RecordedTools(fx, crash=ValueError("tool runner broke")))
    events = check(await play(actor, log), log)
    error = events[-1].payload
    assert error.error.code == RUN_FAILED  # type: ignore[union-attr]
    assert error.error.details == {"exception": "ValueError"}  # type: ignore[union-attr]
    assert error.error.message == "run failed: tool runner broke"  # type: ignore[union-attr]


# --------------------------------------------------------------------------- settings


def test_the_deadlines_come_from_the_environment() -> None:
    config = RuntimeConfig.from_env({"CODY_APPEND_DEADLINE_S": "12.5",
                                     "CODY_ENDING_DEADLINE_S": "3", "CODY_MAX_ITERATIONS": "7"})
    limits = RunLimits.from_config(config)
    assert (limits.append_deadline_s, limits.ending_deadline_s) == (12.5, 3.0)
    assert limits.max_iterations == 7
    defaults = RunLimits.from_config(RuntimeConfig.from_env({}))
    assert (defaults.append_deadline_s, defaults.ending_deadline_s) == (30.0, 10.0)
    with pytest.raises(ValidationFailed) as info:
        RuntimeConfig.from_env({"CODY_ENDING_DEADLINE_S": "soon"})
    assert info.value.details == {"field": "CODY_ENDING_DEADLINE_S"}
