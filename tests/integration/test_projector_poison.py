"""A poison run (an event in its stream that cannot be folded) is logged, counted and acked by
the projector, which carries on persisting every other run: never a crash loop."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from actors.projector import Projector
from runtime.clock import FixedClock
from runtime.envelope import EventFactory, encode_event
from runtime.eventlog import EventLog, open_redis
from runtime.ids import new_traceparent, new_uuid
from runtime.keys import Keys
from runtime.schema import ItemDelta, ItemDone, ItemStart, MessageItem, ResponseDone, ResponseStart
from runtime.store import SQLiteStore


def run_events(run_id: str) -> list[bytes]:
    """A short complete run, encoded as the run actor writes it."""
    factory = EventFactory(run_id, new_traceparent(), FixedClock().now_ms)
    item = MessageItem(id="m", origin="agent", role="assistant", content="hello")
    payloads = [ResponseStart(response_id=run_id, turn_id=new_uuid(), thread_id=new_uuid(),
                              model_id="gpt-5-mini", provider_id="openai", created_at=1),
                ItemStart(item_id="m", item_type="message"),
                ItemDelta(item_id="m", delta_content="hello"),
                ItemDone(item_id="m", final_item=item),
                ResponseDone(response_id=run_id, status="complete", finish_reason="stop")]
    return [encode_event(factory.make(p)) for p in payloads]


async def wait_stored(store: SQLiteStore, run_ids: list[str], limit_s: float = 10) -> None:
    with trio.fail_after(limit_s):
        for run_id in run_ids:
            while True:
                stored = await store.get_response(run_id)
                if stored is not None and stored.status == "complete":
                    break
                await trio.sleep(0.02)


async def test_poison_runs_are_skipped_and_the_others_persisted(
        redis_url: str, key_prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(30):
        async with open_redis(redis_url, 8) as writer, open_redis(redis_url, 8) as reader, \
                SQLiteStore.open(tmp_path / "cody.db") as store:
            log = EventLog(writer, reader, Keys(key_prefix))
            await log.ensure_group()
            before = [new_uuid() for _ in range(3)]
            for run_id in before:
                await log.append(run_id, run_events(run_id), 5)
            # poison 1: an entry that is not an event at all, after a good start
            undecodable = new_uuid()
            good = run_events(undecodable)
            await log.append(undecodable, [good[0], b'{"not": "an event"', *good[1:]], 6)
            # poison 2: events out of order (a delta before the run's response_start)
            out_of_order = new_uuid()
            good = run_events(out_of_order)
            await log.append(out_of_order, [good[2], good[0], good[1], *good[3:]], 5)
            projector = Projector(log, store, consumer=f"p-{new_uuid()}", claim_idle_ms=100,
                                  block_ms=50, retention_s=60)
            caplog.set_level(logging.ERROR, logger="actors.projector")
            async with trio.open_nursery() as nursery:
                await nursery.start(projector.run)
                await wait_stored(store, before)
                # the projector is still running after meeting both: later runs persist too
                after = [new_uuid() for _ in range(3)]
                for run_id in after:
                    await log.append(run_id, run_events(run_id), 5)
                await wait_stored(store, after)
                # and a poison run's checkpoint claimed again later changes nothing
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
            assert projector.poisoned == 2
            assert projector.persisted == len(before) + len(after)
            assert await store.get_response(undecodable) is None
            assert await store.get_response(out_of_order) is None
            assert await log.pending_count() == 0  # acked: nobody claims them again
            poison_lines = [r.getMessage() for r in caplog.records
                            if "poison run" in r.getMessage()]
            assert len(poison_lines) == 2
            assert any(undecodable in line and "ValidationError" in line
                       for line in poison_lines)
            assert any(out_of_order in line and "EventOrderError" in line
                       for line in poison_lines)
