"""The janitor ends runs whose node is gone, continuing their seq, and the projector then
persists the ending; runs of live nodes and finished runs are left alone."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.janitor import Janitor
from actors.projector import Projector
from runtime.clock import FixedClock
from runtime.envelope import EventFactory, decode_event, encode_event
from runtime.errors import RUN_ORPHANED
from runtime.eventlog import EventLog, open_redis
from runtime.ids import new_traceparent, new_uuid
from runtime.keys import Keys
from runtime.reducer import rebuild
from runtime.schema import ItemDelta, ItemStart, ResponseDone, ResponseStart
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
            projector = Projector(log, store, consumer="p", claim_idle_ms=100, block_ms=50,
                                  retention_s=60)
            async with trio.open_nursery() as nursery:
                await nursery.start(projector.run)
                while True:
                    stored = await store.get_response(orphan)
                    if stored is not None and stored.status == "error":
                        break
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
            assert stored == resp
