"""The janitor ends runs whose node is gone, continuing their seq, and the projector then
persists the ending; runs of live nodes and finished runs are left alone. However many
janitors race, each orphan is ended once; a janitor dying midway loses nothing."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from pydantic import ValidationError

from actors.janitor import Janitor
from actors.projector import Projector
from runtime.clock import FixedClock
from runtime.config import RuntimeConfig
from runtime.envelope import EventFactory, decode_event, encode_event
from runtime.errors import RUN_ORPHANED, ValidationFailed
from runtime.eventlog import EventLog, open_redis
from runtime.ids import new_traceparent, new_uuid
from runtime.keys import Keys
from runtime.reducer import rebuild
from runtime.schema import (
    ErrorInfo,
    ItemDelta,
    ItemStart,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
)
from runtime.store import SQLiteStore


async def write_run(log: EventLog, node: str, *, finished: bool) -> str:
    run_id = new_uuid()
    factory = EventFactory(run_id, new_traceparent(), FixedClock().now_ms)
    payloads = [ResponseStart(response_id=run_id, turn_id=new_uuid(), thread_id=new_uuid(),
                              model_id="gpt-5-mini", provider_id="openai", created_at=1),
                ItemStart(item_id="m", item_type="message"),
                ItemDelta(item_id="m", delta_content="half an ans")]
    if finished:
        payloads.append(ResponseDone(response_id=run_id, status="complete", finish_reason="stop"))
    events = [factory.make(p) for p in payloads]
    await log.put_meta(run_id, {"status": "in_progress", "node": node})
    await log.append(run_id, [encode_event(e) for e in events], events[0].seq)
    return run_id


async def projected_error(log: EventLog, store: SQLiteStore, run_id: str) -> Response:
    """Runs a projector until it has stored the run's error ending; returns what it stored."""
    projector = Projector(log, store, consumer="p", claim_idle_ms=100, block_ms=50,
                          retention_s=60)
    async with trio.open_nursery() as nursery:
        await nursery.start(projector.run)
        while True:
            stored = await store.get_response(run_id)
            if stored is not None and stored.status == "error":
                break
            await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    return stored


async def test_orphaned_runs_are_ended(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_redis(redis_url, 8) as writer, open_redis(redis_url, 8) as reader, \
                SQLiteStore.open(tmp_path / "cody.db") as store:
            log = EventLog(writer, reader, Keys(key_prefix))
            await log.ensure_group()
            dead, alive = f"dead-{new_uuid()}", f"alive-{new_uuid()}"
            await log.refresh_lease(alive, 30)
            orphan = await write_run(log, dead, finished=False)
            done = await write_run(log, dead, finished=True)
            kept = await write_run(log, alive, finished=False)
            me = f"me-{new_uuid()}"
            janitor = Janitor(log, node_id=me, local_runs=set(), clock=FixedClock())
            assert await janitor.sweep() == 1
            assert await janitor.sweep() == 0  # idempotent
            events = [decode_event(raw) for _, raw in await log.read_all(orphan)]
            assert [e.seq for e in events] == [1, 2, 3, 4]
            resp = rebuild(events)
            assert resp.status == "error" and resp.error is not None
            assert resp.error.code == RUN_ORPHANED
            assert rebuild([decode_event(r) for _, r in await log.read_all(done)]).status == \
                "complete"
            assert set(await log.live_runs()) == {kept}
            stored = await projected_error(log, store, orphan)
            assert stored == resp


async def test_racing_janitors_end_each_orphan_exactly_once(redis_url: str, key_prefix: str,
                                                            tmp_path: Path) -> None:
    """Eight janitors, each with its own Redis clients (as on eight nodes), sweep the same
    orphans at the same moment: every run gets exactly one RUN_ORPHANED, at the next seq."""
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            logs: list[EventLog] = []
            for _ in range(8):
                writer = await stack.enter_async_context(open_redis(redis_url, 4))
                reader = await stack.enter_async_context(open_redis(redis_url, 2))
                logs.append(EventLog(writer, reader, Keys(key_prefix)))
            log = logs[0]
            await log.ensure_group()
            dead = f"dead-{new_uuid()}"
            orphans = [await write_run(log, dead, finished=False) for _ in range(12)]
            janitors = [Janitor(each, node_id=f"j{i}-{new_uuid()}", local_runs=set(),
                                clock=FixedClock()) for i, each in enumerate(logs)]
            gate = trio.Event()

            async def sweep(janitor: Janitor) -> None:
                await gate.wait()
                for _ in range(3):
                    await janitor.sweep()

            async with trio.open_nursery() as nursery:
                for janitor in janitors:
                    nursery.start_soon(sweep, janitor)
                await trio.sleep(0.05)
                gate.set()
            assert sum(j.ended for j in janitors) == len(orphans)
            assert sum(j.lost for j in janitors) > 0  # they did race
            for run in orphans:
                events = [decode_event(raw) for _, raw in await log.read_all(run)]
                assert [e.seq for e in events] == [1, 2, 3, 4]
                endings = [e for e in events if e.type == "response_error"]
                assert len(endings) == 1
                assert rebuild(events).error.code == RUN_ORPHANED  # type: ignore[union-attr]
                assert (await log.get_meta(run))["status"] == "error"
            assert await log.live_runs() == {}
            # every ending was checkpointed (some twice: harmless)
            checkpoints = await log.read_checkpoints("p", 1000, 0)
            assert {(c.run_id, c.seq) for c in checkpoints if c.seq == 4} == \
                {(run, 4) for run in orphans}


async def test_a_janitor_dying_after_the_ending_loses_nothing(redis_url: str, key_prefix: str,
                                                              tmp_path: Path) -> None:
    """The ending is written (the Lua step) but its checkpoint and unregistration never are:
    the next sweep, by any janitor, finds the run ended but registered and settles it, and
    the projector persists the ending."""
    with trio.fail_after(30):
        async with open_redis(redis_url, 8) as writer, open_redis(redis_url, 8) as reader, \
                SQLiteStore.open(tmp_path / "cody.db") as store:
            log = EventLog(writer, reader, Keys(key_prefix))
            await log.ensure_group()
            dead = f"dead-{new_uuid()}"
            run = await write_run(log, dead, finished=False)
            last = await log.last_raw(run)
            assert last is not None
            first = decode_event(last[1])
            ending = EventFactory(run, first.trace_context.traceparent or new_traceparent(),
                                  FixedClock().now_ms, first_seq=first.seq + 1).make(
                ResponseErrorPayload(response_id=run, error=ErrorInfo(
                    code=RUN_ORPHANED, message="run orphaned: test")))
            result = await log.end_orphan(run, last_id=last[0], event=encode_event(ending),
                                          owner=dead, by="crashed-janitor")
            assert result.outcome == "appended"
            # ... and that janitor died here
            assert set(await log.live_runs()) == {run}
            janitor = Janitor(log, node_id=f"me-{new_uuid()}", local_runs=set(),
                              clock=FixedClock())
            assert await janitor.sweep() == 0  # nothing left to end ...
            assert janitor.settled == 1  # ... but it was settled
            assert await log.live_runs() == {}
            assert [decode_event(r).type for _, r in await log.read_all(run)].count(
                "response_error") == 1
            stored = await projected_error(log, store, run)
            assert stored.error is not None and stored.error.code == RUN_ORPHANED


def test_lease_and_interval_are_configurable() -> None:
    default = RuntimeConfig()
    assert (default.lease_ttl_s, default.janitor_interval_s, default.persist_shards) == \
        (15, 5.0, 16)
    cfg = RuntimeConfig.from_env({"CODY_LEASE_TTL_S": "4", "CODY_JANITOR_INTERVAL_S": "0.5",
                                  "CODY_PERSIST_SHARDS": "8"})
    assert (cfg.lease_ttl_s, cfg.janitor_interval_s, cfg.persist_shards) == (4, 0.5, 8)
    with pytest.raises(ValidationError):
        RuntimeConfig(persist_shards=0)
    with pytest.raises(ValidationFailed):
        RuntimeConfig.from_env({"CODY_LEASE_TTL_S": "soon"})


async def test_a_lapsed_lease_is_warned_about_once_and_taken_again(
        redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    """The node was stalled past its lease (here: the key is gone, as a lapse leaves it): the
    next refresh says so once, takes the lease again, and the refreshes after it are quiet."""
    with trio.fail_after(30):
        async with open_redis(redis_url, 4) as writer, open_redis(redis_url, 2) as reader:
            log = EventLog(writer, reader, Keys(key_prefix))
            me = f"me-{new_uuid()}"
            janitor = Janitor(log, node_id=me, local_runs=set(), clock=FixedClock(),
                              lease_ttl_s=30, interval_s=0.1)
            with caplog.at_level("WARNING", logger="actors.janitor"):
                async with trio.open_nursery() as nursery:
                    await nursery.start(janitor.run)
                    await trio.sleep(0.35)
                    assert janitor.lapses == 0
                    await writer.delete([Keys(key_prefix).node_lease(me)])
                    await trio.sleep(0.5)  # several refreshes
                    nursery.cancel_scope.cancel()
            assert janitor.lapses == 1 and await log.lease_alive(me)
            lapsed = [r.getMessage() for r in caplog.records if "lapsed" in r.getMessage()]
            assert len(lapsed) == 1 and me in lapsed[0]
