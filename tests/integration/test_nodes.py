"""Several nodes on one Redis (or Redis Cluster) and one store, in one process (SPEC §13).

Two runtimes side by side with the same key prefix and store are two nodes: a run submitted on
node A is streamed, resumed, read and cancelled from node B, whose clients are fed through B's
one multiplexed tail (actors/node_tail.py). Each test runs on {single Redis, cluster} x
{SQLite, PostgreSQL}.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from actors.fanout import LogEntry
from actors.system import CodyRuntime, open_runtime
from runtime.errors import RUN_ORPHANED, NotFound, StreamExpired
from runtime.eventlog import open_redis
from runtime.reducer import rebuild
from runtime.schema import TERMINAL_EVENT_TYPES
from tests.conftest import TCP_REDIS_URL, postgres_schema, postgres_url_for
from tests.harness import response_view
from tests.integration.test_runtime import (
    LIBRARY,
    config_for,
    events_of,
    read_all,
    turn,
    wait_stored,
)

DEPLOYMENTS = [("single", "sqlite"), ("single", "postgres"), ("cluster", "sqlite"),
               ("cluster", "postgres")]


@pytest.fixture(params=DEPLOYMENTS, ids=["-".join(d) for d in DEPLOYMENTS])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(Redis URL, store URL) shared by every node of a test."""
    redis_kind, store_kind = request.param
    redis_url = TCP_REDIS_URL if redis_kind == "single" else \
        str(request.getfixturevalue("cluster_redis_url"))
    if store_kind == "sqlite":
        yield redis_url, f"sqlite://{tmp_path / 'shared.db'}"
        return
    with postgres_schema() as schema:
        yield redis_url, postgres_url_for(schema)


@pytest.fixture
async def prefix(deployment: tuple[str, str]) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    with trio.fail_after(15):
        async with open_redis(deployment[0], 2) as client:
            keys = [key async for key in client.scan_iter(match=f"{name}:*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(keys[start:start + 500])


@asynccontextmanager
async def nodes(deployment: tuple[str, str], prefix: str, tmp_path: Path, count: int = 2,
                **settings: object) -> AsyncIterator[list[CodyRuntime]]:
    redis_url, store_url = deployment
    async with AsyncExitStack() as stack:
        out = []
        for i in range(count):
            data_dir = tmp_path / f"node-{i}"
            data_dir.mkdir(exist_ok=True)
            cfg = config_for(redis_url, prefix, data_dir, store_url=store_url, **settings)
            out.append(await stack.enter_async_context(open_runtime(cfg)))
        yield out


async def test_submit_on_a_stream_resume_and_read_on_b(deployment: tuple[str, str],
                                                       prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with nodes(deployment, prefix, tmp_path, replay_delay_s=0.002) as (a, b):
            accepted = await a.submission.submit(turn("openai", "rapid_deltas"))
            run_id = accepted.run_id
            assert run_id in a.runs and run_id not in b.runs
            await trio.sleep(0.2)  # the run is going
            live = await b.reading.get_response(run_id)  # replayed from Redis on B
            assert live.status == "in_progress"
            from_b = await read_all(b, run_id)
            assert b.node_tail is not None and b.node_tail.reads >= 1
            from_a = await read_all(a, run_id)
            ids = [e.entry_id for e in from_a]
            assert [e.entry_id for e in from_b] == ids
            assert [e.seq for e in events_of(from_b)] == list(range(1, len(ids) + 1))
            want = LIBRARY.get("openai", "rapid_deltas").expected
            assert response_view(rebuild(events_of(from_b))) == want
            for cut in (0, len(ids) // 2, len(ids) - 2):  # resume on B from anywhere
                resumed = await read_all(b, run_id, ids[cut])
                assert [e.entry_id for e in resumed] == ids[cut + 1:]
            for rt in (a, b):  # 204 after the end, on every node
                assert await rt.reading.open_reader(run_id, ids[-1]) is None
            stored = await wait_stored(b, run_id)
            assert await b.reading.get_response(run_id) == stored == \
                await a.reading.get_response(run_id)


async def test_resume_on_b_while_live_no_gap_no_duplicate(deployment: tuple[str, str],
                                                          prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with nodes(deployment, prefix, tmp_path, replay_delay_s=0.002) as (a, b):
            accepted = await a.submission.submit(turn("anthropic", "rapid_deltas"))
            collected: list[LogEntry] = []
            cursor = "0-0"
            hops = 0
            while True:  # take a few from one node, drop, resume on the other: repeatedly
                node = (a, b)[hops % 2]
                hops += 1
                reader = await node.reading.open_reader(accepted.run_id, cursor)
                if reader is None:
                    break
                batch = await reader.next_batch(5.0)
                reader.close()
                assert batch is not None
                collected += batch[:5]
                cursor = collected[-1].entry_id
                if collected[-1].terminal:
                    break
            events = events_of(collected)
            assert hops > 4
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert response_view(rebuild(events)) == \
                LIBRARY.get("anthropic", "rapid_deltas").expected


async def test_many_remote_subscribers_share_one_tail(deployment: tuple[str, str],
                                                      prefix: str, tmp_path: Path) -> None:
    """30 live runs on A, each watched by two clients on B: B's reader pool has 2
    connections, so one blocking read per client could not keep up; one per node does."""
    with trio.fail_after(90):
        async with nodes(deployment, prefix, tmp_path, replay_delay_s=0.04,
                         reader_pool_size=2) as (a, b):
            assert b.node_tail is not None
            runs = [(await a.submission.submit(turn("openai", "simple_message"))).run_id
                    for _ in range(30)]
            got: dict[tuple[str, int], list[LogEntry]] = {}
            most = 0

            async def client(run_id: str, n: int) -> None:
                got[run_id, n] = await read_all(b, run_id)

            async def watch_count() -> None:
                nonlocal most
                while True:
                    assert b.node_tail is not None
                    most = max(most, b.node_tail.watching)
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_count)
                async with trio.open_nursery() as clients:
                    for run_id in runs:
                        for n in range(2):
                            clients.start_soon(client, run_id, n)
                nursery.cancel_scope.cancel()
            want = LIBRARY.get("openai", "simple_message").expected
            for run_id in runs:
                first, second = got[run_id, 0], got[run_id, 1]
                assert [e.entry_id for e in first] == [e.entry_id for e in second]
                assert response_view(rebuild(events_of(first))) == want
            assert most >= 2  # several remote runs fed by one read at once
            assert b.node_tail.watching == 0  # every watch ended with its run


async def test_cancel_from_b_reaches_the_owner(deployment: tuple[str, str], prefix: str,
                                               tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with nodes(deployment, prefix, tmp_path, replay_delay_s=0.02) as (a, b):
            accepted = await a.submission.submit(turn("openai", "rapid_deltas"))
            reader = await b.reading.open_reader(accepted.run_id, None)
            assert reader is not None
            assert await reader.next_batch(5.0)  # the run is going, B's client is on it
            resp = await b.submission.cancel(accepted.run_id)
            assert resp.status == "aborted"
            assert a.node_tail is not None and a.node_tail.cancels == 1
            assert accepted.run_id not in a.runs  # the owner's actor has ended
            rest: list[LogEntry] = []
            while not reader.done:
                batch = await reader.next_batch(5.0)
                assert batch is not None
                rest += batch
            assert [e.type for e in rest][-2:] == ["turn_aborted_by_user", "response_done"]
            again = await b.submission.cancel(accepted.run_id)  # idempotent
            assert again.status == "aborted"
            assert (await wait_stored(b, accepted.run_id)).status == "aborted"


async def test_a_run_accepted_elsewhere_reads_queued_and_unknown_is_404(
        deployment: tuple[str, str], prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with nodes(deployment, prefix, tmp_path, count=1) as (b,):
            run_id, thread_id = str(uuid.uuid4()), str(uuid.uuid4())
            # what another (live) node writes before its 202, its actor not started yet
            await b.log.refresh_lease("elsewhere", 60)
            await b.log.put_meta(run_id, {"thread_id": thread_id, "turn_id": str(uuid.uuid4()),
                                          "status": "in_progress", "node": "elsewhere",
                                          "provider_id": "openai", "model_id": "gpt-5-mini",
                                          "created_at": 1_700_000_000_000})
            resp = await b.reading.get_response(run_id)
            assert (resp.status, resp.thread_id, resp.created_at) == \
                ("queued", thread_id, 1_700_000_000_000)
            reader = await b.reading.open_reader(run_id, None)
            assert reader is not None and await reader.next_batch(0.05) is None
            reader.close()
            with pytest.raises(NotFound):
                await b.reading.get_response(str(uuid.uuid4()))
            with pytest.raises(NotFound):
                await b.reading.open_reader(str(uuid.uuid4()), None)


async def test_expired_stream_is_410_on_every_node(deployment: tuple[str, str], prefix: str,
                                                   tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with nodes(deployment, prefix, tmp_path, retention_s=1) as (a, b):
            accepted = await a.submission.submit(turn("openai", "simple_message"))
            await read_all(b, accepted.run_id)
            stored = await wait_stored(a, accepted.run_id)
            for _ in range(100):  # the retention TTL runs out
                if not await a.log.run_exists(accepted.run_id):
                    break
                await trio.sleep(0.1)
            for rt in (a, b):
                with pytest.raises(StreamExpired):
                    await rt.reading.open_reader(accepted.run_id, None)
                assert await rt.reading.get_response(accepted.run_id) == stored


# -- node loss (issue 12): a node that stalled past its lease is fenced, and serves on


async def test_a_stalled_nodes_late_appends_are_refused_and_it_serves_on(
        deployment: tuple[str, str], prefix: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Node A's lease lapses while its run streams (A's janitor takes a 1 s lease and does not
    refresh it: a node stalled past its lease, seen from Redis) and B's janitor ends the run
    RUN_ORPHANED. A really goes on streaming: its next append is refused, its actor stops
    without an ending of its own. The stream has one terminal event, B's, and nothing after
    it; the store has it once. With its lease back, A serves a new run to the end."""
    redis_url, store_url = deployment
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            made = []
            for name, settings in (("a", dict(lease_ttl_s=1, janitor_interval_s=1000.0)),
                                   ("b", dict(janitor_interval_s=0.2))):
                data_dir = tmp_path / f"node-{name}"
                data_dir.mkdir()
                made.append(await stack.enter_async_context(open_runtime(config_for(
                    redis_url, prefix, data_dir, store_url=store_url, replay_delay_s=0.01,
                    **settings))))
            a, b = made
            with caplog.at_level("WARNING"):
                accepted = await a.submission.submit(turn("openai", "rapid_deltas"))
                run_id = accepted.run_id
                actor = a.runs.get(run_id)
                assert actor is not None
                from_b = await read_all(b, run_id)  # a client on B, to the end
                with trio.fail_after(10):
                    await actor.finished.wait()
            events = events_of(from_b)
            assert events[-1].type == "response_error"
            assert events[-1].payload.error.code == RUN_ORPHANED  # type: ignore[union-attr]
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(events) > 10  # it was streaming, and it was ended mid-stream
            assert actor.fenced and run_id not in a.runs
            await trio.sleep(0.5)  # anything A would still write would land by now
            stream = events_of([LogEntry.from_raw(i, d) for i, d in await a.log.read_all(run_id)])
            assert [e.event_id for e in stream] == [e.event_id for e in events]
            assert [e.type in TERMINAL_EVENT_TYPES for e in stream].count(True) == 1
            meta = await a.log.get_meta(run_id)
            assert (meta["status"], meta["ended_by"]) == ("error", b.node_id)
            stored = await wait_stored(b, run_id)
            assert stored == rebuild(stream)
            assert stored.error is not None and stored.error.code == RUN_ORPHANED
            assert await b.store.get_response_seq(run_id) == stream[-1].seq
            assert [r.id for r in await b.store.list_thread_responses(stored.thread_id)] == [
                run_id]
            assert await a.reading.get_response(run_id) == stored  # A shows B's ending too
            fenced = [r.getMessage() for r in caplog.records if r.name == "actors.run_actor"]
            assert len(fenced) == 1 and run_id in fenced[0] and "fenced" in fenced[0]
            # the stall is over: A's lease is back (as its janitor takes it again)
            await a.log.refresh_lease(a.node_id, 60)
            again = await a.submission.submit(turn("openai", "simple_message"))
            second = events_of(await read_all(a, again.run_id))
            assert second[-1].type == "response_done"
            assert (await wait_stored(a, again.run_id)).status == "complete"
            assert response_view(rebuild(second)) == \
                LIBRARY.get("openai", "simple_message").expected
