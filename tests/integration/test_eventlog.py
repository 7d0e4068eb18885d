"""The Redis event log against real Redis: TCP on 127.0.0.1:6379, the embedded server and a
3-master Redis Cluster (the ``redis_url`` fixture)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from runtime.errors import RedisUnavailable, RunFenced
from runtime.eventlog import Checkpoint, EventLog, OrphanEnding, open_redis
from runtime.keys import Keys
from runtime.redis_server import embedded_redis


@asynccontextmanager
async def open_log(redis_url: str, key_prefix: str, *, reader_pool: int = 8,
                   max_block_ms: int = 5000) -> AsyncIterator[EventLog]:
    async with open_redis(redis_url, 8) as writer, open_redis(redis_url, reader_pool) as reader:
        yield EventLog(writer, reader, Keys(key_prefix), max_block_ms=max_block_ms)


def events(n: int, start: int = 1) -> list[bytes]:
    return [b'{"seq":%d,"type":"item_delta"}' % i for i in range(start, start + n)]


def run_id() -> str:
    return str(uuid.uuid4())


def test_keys_layout() -> None:
    keys = Keys("cody")
    assert keys.run_events("r1") == "cody:run:{r1}:events"
    assert keys.run_meta("r1") == "cody:run:{r1}:meta"
    assert keys.projector_group == "cody-projector"
    assert Keys("x").run_keys("r") == ("x:run:{r}:events", "x:run:{r}:meta")
    assert keys.persist_streams == tuple(f"cody:persist:{{{i}}}" for i in range(16))
    assert Keys("x", 4).live_shards == ("x:live:{0}", "x:live:{1}", "x:live:{2}", "x:live:{3}")
    assert keys.node_lease("n1") == "cody:node:{n1}:lease"
    assert (keys.legacy_persist_stream, keys.legacy_live_runs) == ("cody:persist", "cody:live")
    # a run's shard is stable (CRC-32, not Python's salted hash) and spreads runs over all
    assert keys.shard_of("run-1") == keys.shard_of("run-1") == 3
    assert keys.persist_stream_for("run-1") == "cody:persist:{3}"
    assert keys.live_runs_for("run-1") == "cody:live:{3}"
    assert {keys.shard_of(str(uuid.uuid4())) for _ in range(500)} == set(range(16))
    with pytest.raises(ValueError):
        Keys("x", 0)


async def test_append_then_read_after(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            run = run_id()
            assert not await log.run_exists(run)
            ids = await log.append(run, events(5))
            ids += await log.append(run, events(3, start=6))
            assert len(ids) == len(set(ids)) == 8
            assert await log.run_exists(run)
            got = await log.read_after(run, "0-0", 100)
            assert [i for i, _ in got] == ids
            assert [d for _, d in got] == events(8)
            assert await log.read_all(run, page=3) == got


async def test_cursor_is_exclusive_and_count_bounds(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            run = run_id()
            ids = await log.append(run, events(10))
            assert [i for i, _ in await log.read_after(run, ids[3], 100)] == ids[4:]
            assert [i for i, _ in await log.read_after(run, ids[3], 2)] == ids[4:6]
            assert await log.read_after(run, ids[-1], 100) == []
            assert [i for i, _ in await log.read_after(run, "", 3)] == ids[:3]
            assert await log.read_after(run_id(), "0-0", 10) == []  # no such stream
            assert await log.last_raw(run) == (ids[-1], events(10)[-1])
            assert await log.last_entry(run) == (ids[-1], "item_delta")
            assert await log.last_entry(run_id()) is None


async def test_tail_blocks_until_new_entries(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            run = run_id()
            first = await log.append(run, events(2))
            got: list[tuple[str, bytes]] = []

            async def tail() -> None:
                got.extend(await log.tail(run, first[-1], 3000, 100))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(tail)
                await trio.sleep(0.2)
                assert got == []  # still blocked
                later = await log.append(run, events(2, start=3))
            # a blocked XREAD wakes at the first new entry: the rest come with the next call
            assert [i for i, _ in got] == later[:len(got)] and got
            got += await log.tail(run, got[-1][0], 1000, 100)
            assert [i for i, _ in got] == later
            # nothing new: returns empty after the block time, not before
            t0 = trio.current_time()
            assert await log.tail(run, later[-1], 150, 10) == []
            assert trio.current_time() - t0 >= 0.1
            # block_ms=0 never blocks (Redis's BLOCK 0 would block forever)
            assert [i for i, _ in await log.tail(run, first[0], 0, 10)] == first[1:] + later


async def test_tail_block_is_clamped(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix, max_block_ms=200) as log:
            t0 = trio.current_time()
            assert await log.tail(run_id(), "0-0", 60_000, 10) == []
            assert trio.current_time() - t0 < 2


async def test_more_blocking_readers_than_pool_connections(redis_url: str,
                                                           key_prefix: str) -> None:
    """Blocking reads hold a connection each: extra readers queue for the pool, none fail.
    (One run for all, so that on a cluster they all go to one node: the pool is per node.)"""
    with trio.fail_after(15):
        async with open_log(redis_url, key_prefix, reader_pool=2) as log:
            results: list[list[tuple[str, bytes]]] = []
            run = run_id()

            async def tail() -> None:
                results.append(await log.tail(run, "0-0", 200, 10))

            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(tail)
            assert results == [[]] * 6
            assert trio.current_time() - t0 >= 0.35  # three rounds of two


async def test_group_create_twice_read_ack(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            await log.ensure_group()
            await log.ensure_group()  # BUSYGROUP ignored
            run = run_id()
            await log.append(run, events(3), checkpoint_seq=3)
            await log.append(run, [], checkpoint_seq=4)  # a checkpoint alone is fine too
            taken = await log.read_checkpoints("c1", 10, 0)
            assert [(c.run_id, c.seq) for c in taken] == [(run, 3), (run, 4)]
            assert await log.pending_count() == 2
            # nothing new for another consumer: the group hands each entry out once
            assert await log.read_checkpoints("c2", 10, 50) == []


async def test_checkpoints_follow_their_events(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            await log.ensure_group()
            run = run_id()
            ids = await log.append(run, events(3), checkpoint_seq=3)
            more = await log.append(run, events(1, start=4), checkpoint_seq=4)
            taken = await log.read_checkpoints("c1", 10, 100)
            assert [(c.run_id, c.seq) for c in taken] == [(run, 3), (run, 4)]
            assert len(ids) == 3 and len(more) == 1
            assert await log.pending_count() == 2
            await log.ack([taken[0]])
            assert await log.pending_count() == 1
            await log.ack(taken)
            await log.ack([])
            assert await log.pending_count() == 0


async def test_read_group_blocks_for_new_checkpoints(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            await log.ensure_group()
            got: list[Checkpoint] = []

            async def read() -> None:
                got.extend(await log.read_checkpoints("c1", 10, 3000))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await trio.sleep(0.2)
                assert got == []
                run = run_id()
                await log.append(run, events(1), checkpoint_seq=1)
            assert [(c.run_id, c.seq) for c in got] == [(run, 1)]


async def test_autoclaim_takes_over_from_a_dead_consumer(redis_url: str,
                                                         key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            await log.ensure_group()
            runs = [run_id() for _ in range(5)]
            for i, run in enumerate(runs, start=1):
                await log.append(run, events(i), checkpoint_seq=i)
            taken = await log.read_checkpoints("dead", 100, 0)  # ... and it never acks
            assert len(taken) == 5
            assert await log.claim_checkpoints("rescuer", 300, 100) == []  # not idle yet
            await trio.sleep(0.4)
            claimed = await log.claim_checkpoints("rescuer", 300, 3)
            assert len(claimed) == 3 and set(claimed) <= set(taken)  # count bounds the claim
            rest = await log.claim_checkpoints("rescuer", 300, 100)  # the others, once each
            assert sorted((c.run_id, c.seq) for c in claimed + rest) == sorted(
                (r, i) for i, r in enumerate(runs, start=1))
            await log.ack(claimed + rest)
            assert await log.pending_count() == 0
            assert await log.claim_checkpoints("rescuer", 0, 100) == []


async def test_malformed_checkpoints_are_dropped_and_acked(redis_url: str,
                                                           key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log, \
                open_redis(redis_url, 2) as raw:
            await log.ensure_group()
            run = run_id()
            shard = log.keys.persist_stream_for(run)
            await raw.xadd(shard, {"run_id": "r", "seq": "nope"})
            await raw.xadd(log.keys.persist_shard(0), {"something": "else"})
            await log.append(run, events(1), checkpoint_seq=1)
            taken = await log.read_checkpoints("c1", 10, 0)
            assert [(c.run_id, c.seq) for c in taken] == [(run, 1)]
            assert await log.pending_count() == 1


async def test_trim_persist_keeps_unacked(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log, \
                open_redis(redis_url, 2) as raw:
            await log.ensure_group()
            run = run_id()
            for seq in range(1, 4):
                await log.append(run, events(1, start=seq), checkpoint_seq=seq)
                await trio.sleep(0.005)  # distinct milliseconds: trimming is by ms
            first = await log.read_checkpoints("c1", 2, 0)
            await log.ack([first[0]])
            await trio.sleep(0.005)
            await log.trim_persist()
            remaining = await raw.xrange(log.keys.persist_stream_for(run), "-", "+")
            # the acked first entry may go; the pending second and the unread third stay
            ids = [str(e.identifier, "ascii") if isinstance(e.identifier, bytes)
                   else e.identifier for e in remaining]
            assert first[1].entry_id in ids and len(ids) >= 2
            assert first[0].entry_id not in ids
            rest = await log.read_checkpoints("c1", 10, 0)
            assert [c.seq for c in rest] == [3]


async def test_retention_ttl_on_every_run_key(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log, \
                open_redis(redis_url, 2) as raw:
            run = run_id()
            await log.append(run, events(2))
            await log.put_meta(run, {"thread_id": "t", "status": "in_progress"})
            assert await log.ttl(run) == -1  # live runs never expire
            await log.set_retention(run, 120)
            assert 0 < await log.ttl(run) <= 120
            assert 0 < await raw.ttl(log.keys.run_meta(run)) <= 120
            assert await log.ttl(run_id()) == -2


async def test_meta_status_and_live_registry(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            run, other = run_id(), run_id()
            await log.put_meta(run, {"thread_id": "t1", "status": "in_progress",
                                     "node": "n1", "n": 3})
            await log.put_meta(other, {"status": "queued"})  # no node: not registered
            assert await log.run_exists(run)  # metadata alone counts
            assert await log.get_meta(run) == {"thread_id": "t1", "status": "in_progress",
                                               "node": "n1", "n": "3"}
            assert await log.live_runs() == {run: "n1"}
            await log.set_status(run, "in_progress")
            assert await log.live_runs() == {run: "n1"}
            await log.set_status(run, "complete")
            assert (await log.get_meta(run))["status"] == "complete"
            assert await log.live_runs() == {}
            await log.register_live(other, "n2")
            assert await log.live_runs() == {other: "n2"}
            await log.unregister_live(other)
            assert await log.live_runs() == {}
            assert await log.get_meta(run_id()) == {}


async def test_node_leases_expire(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            assert not await log.lease_alive("n1")
            await log.refresh_lease("n1", 1)
            assert await log.lease_alive("n1")
            await trio.sleep(1.2)
            assert not await log.lease_alive("n1")


async def test_refresh_lease_says_whether_the_lease_had_lapsed(redis_url: str,
                                                               key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            assert await log.refresh_lease("n1", 1) is False  # its first write
            assert await log.refresh_lease("n1", 1) is True
            await trio.sleep(1.2)
            assert await log.refresh_lease("n1", 5) is False  # lapsed meanwhile
            assert await log.lease_alive("n1")


# -- node loss (issue 12): appends fenced once a janitor ended the run


async def fenced_run(log: EventLog, by: str = "node-b") -> str:
    """A run of a stalled node that a janitor (on ``by``) has ended RUN_ORPHANED."""
    run = run_id()
    await log.put_meta(run, {"status": "in_progress", "node": "node-a"})
    ids = await log.append(run, events(2))
    ended = await log.end_orphan(run, last_id=ids[-1], event=b'{"seq":3,"type":"response_error"}',
                                 owner="node-a", by=by)
    assert ended.outcome == "appended"
    return run


async def test_a_fenced_append_is_refused_whole_and_spares_the_others_in_its_round_trip(
        redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            await log.ensure_group()
            fenced, live, settled = await fenced_run(log), run_id(), run_id()
            await log.put_meta(live, {"status": "in_progress", "node": "node-a"})
            before = await log.read_all(fenced)
            results = await log.append_many([(fenced, events(3, start=3), 5),
                                             (live, events(2), 2),
                                             (fenced, [], 3),  # the janitor settling it
                                             (settled, [], 1)])
            refused = results[0]
            assert isinstance(refused, RunFenced) and refused.ended_by == "node-b"
            assert refused.run_id == fenced and refused.code == "RUN_FENCED"
            assert await log.read_all(fenced) == before  # nothing of the batch, the ending last
            assert results[1] == [i for i, _ in await log.read_all(live)]
            assert results[2] == results[3] == []
            taken = await log.read_checkpoints("c1", 100, 100)
            # the refused batch's checkpoint (seq 5) was never written; the janitor's was
            assert sorted((c.run_id, c.seq) for c in taken) == sorted(
                [(live, 2), (fenced, 3), (settled, 1)])
            with pytest.raises(RunFenced):
                await log.append(fenced, events(1, start=6))
            assert await log.read_all(fenced) == before
            assert (await log.get_meta(fenced))["status"] == "error"


async def test_set_status_keeps_a_janitors_ending(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            fenced = await fenced_run(log)
            assert await log.live_runs() == {fenced: "node-a"}  # the janitor settles it later
            assert await log.set_status(fenced, "complete") is False
            meta = await log.get_meta(fenced)
            assert (meta["status"], meta["ended_by"]) == ("error", "node-b")
            assert await log.live_runs() == {fenced: "node-a"}  # still the janitor's to settle
            other = run_id()
            await log.put_meta(other, {"status": "in_progress", "node": "node-a"})
            assert await log.set_status(other, "complete") is True
            assert (await log.get_meta(other))["status"] == "complete"
            assert await log.live_runs() == {fenced: "node-a"}


async def test_appends_survive_a_redis_restart_that_forgot_the_script(tmp_path: Path) -> None:
    """Scripts live in the server's memory only: after a restart (its data back from the
    append-only file) the append's EVALSHA gets NOSCRIPT, and the append goes again with the
    script's body, once: nothing doubled, nothing lost, and the next one is by SHA again."""
    with trio.fail_after(60):
        run, other = run_id(), run_id()
        async with embedded_redis(tmp_path) as url, open_log(url, "restart") as log:
            first = await log.append(run, events(2))
        async with embedded_redis(tmp_path) as url, open_log(url, "restart") as log, \
                open_redis(url, 1) as raw:
            assert await raw.script_exists([log._append_sha]) == (False,)
            results = await log.append_many([(run, events(1, start=3), 3),
                                             (other, events(1), None)])
            assert await raw.script_exists([log._append_sha]) == (True,)
            assert len(results[0]) == len(results[1]) == 1
            assert [i for i, _ in await log.read_all(run)] == [*first, *results[0]]
            assert [d for _, d in await log.read_all(run)] == events(3)
            assert [i for i, _ in await log.read_all(other)] == results[1]
            assert len(await log.append(run, events(1, start=4))) == 1


async def test_ping(redis_url: str, key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            await log.ping()


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "unix:///nonexistent/redis.sock"])
async def test_unreachable_redis_is_unavailable_quickly(url: str) -> None:
    with trio.fail_after(10):
        async with open_log(url, "never") as log:
            t0 = time.monotonic()
            for call in (log.ping(), log.append("r", events(1), 1), log.read_after("r", "0-0", 1),
                         log.tail("r", "0-0", 1000, 1), log.ensure_group()):
                with pytest.raises(RedisUnavailable) as info:
                    await call
                assert info.value.status == 503
            assert time.monotonic() - t0 < 5


async def test_error_escaping_the_client_is_not_wrapped(redis_url: str) -> None:
    """coredis's task group would wrap it in an exception group; open_redis unwraps it."""
    with trio.fail_after(10), pytest.raises(KeyError):
        async with open_redis(redis_url, 2) as client:
            await client.ping()
            raise KeyError("mine")


def test_unsupported_url() -> None:
    async def main() -> None:
        async with open_redis("http://localhost", 1):
            pass

    with pytest.raises(ValueError, match="unsupported Redis URL"):
        trio.run(main)


async def test_tail_many_wakes_on_any_run(redis_url: str, key_prefix: str) -> None:
    """Many runs' streams (different slots on a cluster) in one blocking read: it returns as
    soon as one has entries, each run with its own entries after its own cursor."""
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix, max_block_ms=3000) as log:
            runs = [run_id() for _ in range(8)]
            first = {run: (await log.append(run, events(2)))[0] for run in runs}
            got = await log.tail_many(first, 0, 10)  # non-blocking: one entry after each
            assert {run: [i for i, _ in e] for run, e in got.items()} == {
                run: [i for i, _ in await log.read_after(run, first[run], 10)] for run in runs}
            cursors = {run: entries[-1][0] for run, entries in got.items()}
            assert await log.tail_many(cursors, 0, 10) == {}
            woke: dict[str, list[tuple[str, bytes]]] = {}

            async def tail() -> None:
                woke.update(await log.tail_many(cursors, 3000, 10))

            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tail)
                await trio.sleep(0.2)
                assert woke == {}
                ids = await log.append(runs[5], events(1, start=3))
            assert woke == {runs[5]: [(ids[0], events(1, start=3)[0])]}
            assert trio.current_time() - t0 < 1.5  # woken, not timed out
            t0 = trio.current_time()
            assert await log.tail_many({runs[0]: cursors[runs[0]]}, 200, 10) == {}
            assert trio.current_time() - t0 >= 0.15


async def test_a_checkpoint_never_overtakes_its_events(redis_url: str, key_prefix: str) -> None:
    """Batches of many runs, each with a checkpoint (another slot on a cluster): whenever a
    reader sees a checkpoint, the events it names are already in the run's stream. (Within
    one process the window a cross-node pipeline would leave is too short to hit; the rule
    that closes it is in ``EventLog.append_many``.)"""
    with trio.fail_after(20):
        async with open_log(redis_url, key_prefix) as log:
            await log.ensure_group()
            runs = [run_id() for _ in range(40)]
            seen: list[Checkpoint] = []

            async def projector() -> None:
                while len(seen) < len(runs) * 5:
                    for c in await log.read_checkpoints("p", 100, 50):
                        have = await log.read_after(c.run_id, "0-0", 1000)
                        assert len(have) >= c.seq, (c, len(have))
                        seen.append(c)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(projector)
                for seq in range(1, 6):
                    await log.append_many([(run, events(3, start=3 * seq - 2), 3 * seq)
                                           for run in runs])
            assert sorted((c.run_id, c.seq) for c in seen) == sorted(
                (run, 3 * seq) for run in runs for seq in range(1, 6))
            assert {c.shard for c in seen} == {log.keys.shard_of(r) for r in runs}


async def test_legacy_single_keys_move_into_the_shards(redis_url: str, key_prefix: str) -> None:
    """A Redis written by the pre-sharding version (one cody:persist stream with its group,
    one cody:live hash) loses no checkpoint and no live run on upgrade."""
    with trio.fail_after(15):
        async with open_log(redis_url, key_prefix) as log, open_redis(redis_url, 2) as raw:
            keys = log.keys
            runs = [run_id() for _ in range(30)]
            await raw.xgroup_create(keys.legacy_persist_stream, keys.projector_group, "0",
                                    mkstream=True)
            for i, run in enumerate(runs, start=1):
                await raw.xadd(keys.legacy_persist_stream, {"run_id": run, "seq": str(i)})
            await raw.xadd(keys.legacy_persist_stream, {"run_id": "broken"})  # dropped
            # an old projector had read (not acked) the first ten
            await raw.xreadgroup(keys.projector_group, "old", {keys.legacy_persist_stream: ">"},
                                 count=10)
            await raw.hset(keys.legacy_live_runs, {runs[0]: "n1", runs[1]: "n2"})

            await log.ensure_group()  # what a projector does at start
            assert await raw.exists([keys.legacy_persist_stream]) == 0
            got: list[Checkpoint] = []
            while batch := await log.read_checkpoints("new", 100, 0):
                got += batch
            assert sorted((c.run_id, c.seq) for c in got) == sorted(
                (run, i) for i, run in enumerate(runs, start=1))
            assert all(c.shard == keys.shard_of(c.run_id) for c in got)
            await log.ensure_group()  # a second start (or a second node): nothing to move
            assert await log.read_checkpoints("new", 100, 0) == []

            assert await log.migrate_legacy_live() == 2  # what a janitor does each sweep
            assert await log.live_runs() == {runs[0]: "n1", runs[1]: "n2"}
            assert await raw.exists([keys.legacy_live_runs]) == 0
            assert await log.migrate_legacy_live() == 0


async def test_end_orphan_appends_only_on_what_was_decided(redis_url: str,
                                                          key_prefix: str) -> None:
    with trio.fail_after(10):
        async with open_log(redis_url, key_prefix) as log:
            run = run_id()
            await log.put_meta(run, {"status": "in_progress", "node": "dead"})
            ids = await log.append(run, events(2))
            ending = b'{"seq":3,"type":"response_error"}'
            # decided on a stale entry: someone wrote since
            moved = await log.end_orphan(run, last_id=ids[0], event=ending, owner="dead",
                                         by="j1")
            assert (moved.outcome, moved.entry_id) == ("moved", ids[1])
            other = await log.end_orphan(run, last_id=ids[1], event=ending, owner="n2", by="j1")
            assert (other.outcome, other.entry_id) == ("owner", "dead")
            done = await log.end_orphan(run, last_id=ids[1], event=ending, owner="dead",
                                        by="j1")
            assert done.outcome == "appended" and done.entry_id is not None
            assert await log.last_raw(run) == (done.entry_id, ending)
            meta = await log.get_meta(run)
            assert (meta["status"], meta["ended_by"]) == ("error", "j1")
            again = await log.end_orphan(run, last_id=done.entry_id, event=ending,
                                         owner="dead", by="j2")
            assert again.outcome == "ended"
            assert len(await log.read_all(run)) == 3
            gone = await log.end_orphan(run_id(), last_id="1-0", event=ending, owner="dead",
                                        by="j1")
            assert gone == OrphanEnding("gone")
