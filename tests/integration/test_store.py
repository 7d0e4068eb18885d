"""The store contract, run on both engines (``store_url``: SQLite and PostgreSQL): monotonic
upserts, also from several stores at once, thread history in order, thread CRUD and
tombstones, tenant isolation, run listing with keyset pages, migrations when several stores
start at once, failures."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.clock import FixedClock, WallClock
from runtime.config import RuntimeConfig
from runtime.errors import Conflict, NotFound, StoreUnavailable, ValidationFailed
from runtime.schema import MessageItem, Response, Usage
from runtime.store import Store, open_store
from runtime.store.migrations import LATEST


def response(run_id: str | None = None, *, thread_id: str = "t1", created_at: int = 1000,
             status: str = "in_progress", text: str = "", updated_at: int | None = None,
             model_id: str = "gpt-5-mini", provider_id: str = "openai") -> Response:
    run_id = run_id or str(uuid.uuid4())
    items = (MessageItem(id=f"{run_id}-u", origin="agent", content=text),) if text else ()
    return Response.model_validate({
        "id": run_id, "turn_id": f"turn-{run_id}", "thread_id": thread_id,
        "model_id": model_id, "provider_id": provider_id, "created_at": created_at,
        "updated_at": updated_at or created_at, "status": status, "output_items": items,
        "usage": Usage(prompt_tokens=8, completion_tokens=6, total_tokens=14)
        if status == "complete" else None})


@asynccontextmanager
async def opened(store_url: str, data_dir: Path, clock: WallClock | None = None
                 ) -> AsyncIterator[Store]:
    config = RuntimeConfig(data_dir=data_dir, store_url=store_url)
    async with open_store(config, clock=clock) as store:
        yield store


def schema_versions(store_url: str) -> list[int]:
    """What ``schema_version`` holds, read behind the store's back."""
    if store_url.startswith("sqlite:"):
        with sqlite3.connect(urlsplit(store_url).path) as conn:
            return [r[0] for r in conn.execute("SELECT version FROM schema_version "
                                               "ORDER BY version")]
    with psycopg.connect(store_url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version "
                                           "ORDER BY version")]


def drop_responses_table(store_url: str) -> None:
    if store_url.startswith("sqlite:"):
        with sqlite3.connect(urlsplit(store_url).path) as conn:
            conn.execute("DROP TABLE responses")
        return
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute("DROP TABLE responses")


def text_of(resp: Response | None) -> str:
    assert resp is not None and resp.output_items
    item = resp.output_items[0]
    assert isinstance(item, MessageItem)
    return item.content


# ---------------------------------------------------------------------- upserts


async def test_upsert_is_monotonic_on_seq(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            assert await store.get_response("nope") is None
            v5 = response("r1", text="five")
            assert await store.upsert_response(v5, 5)
            assert await store.get_response("r1") == v5
            assert not await store.upsert_response(response("r1", text="three"), 3)
            assert not await store.upsert_response(response("r1", text="five again"), 5)
            assert await store.get_response("r1") == v5
            assert await store.get_response_seq("r1") == 5
            done = response("r1", text="done", status="complete", updated_at=2000)
            assert await store.upsert_response(done, 9)
            assert await store.get_response("r1") == done
            assert await store.upsert_responses([]) == []
            # one batch, one run twice: in order, each against what came before it
            assert await store.upsert_responses([(response("r2", text="a"), 2),
                                                 (response("r2", text="b"), 1),
                                                 (response("r2", text="c"), 4)]) == [
                True, False, True]
            assert text_of(await store.get_response("r2")) == "c"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seqs=st.lists(st.integers(1, 50), min_size=1, max_size=20))
async def test_upsert_keeps_the_highest_seq(store_url: str, data_dir: Path,
                                            seqs: list[int]) -> None:
    run_id = str(uuid.uuid4())  # the database outlives the examples; each has its own run
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            best = 0
            for seq in seqs:
                wrote = await store.upsert_response(response(run_id, text=str(seq)), seq)
                assert wrote == (seq > best)
                best = max(best, seq)
            assert text_of(await store.get_response(run_id)) == str(best)
            assert await store.get_response_seq(run_id) == best


async def test_several_stores_upserting_at_once_never_go_backwards(
        store_url: str, data_dir: Path) -> None:
    """As projectors on several nodes do: each store writes every run's seqs in its own
    shuffled order, in batches (overlapping, in different orders: no deadlock on PostgreSQL),
    while a watcher checks that no stored seq ever decreases."""
    runs = [str(uuid.uuid4()) for _ in range(12)]
    threads = [f"t{i % 3}" for i in range(len(runs))]
    seqs = range(1, 16)
    stop = trio.Event()
    seen: dict[str, int] = {}

    async def projector(store: Store, rng: random.Random) -> None:
        work = [(run, thread, seq) for run, thread in zip(runs, threads, strict=True)
                for seq in seqs]
        rng.shuffle(work)
        for i in range(0, len(work), 7):
            batch = work[i:i + 7]
            await store.upsert_responses(
                [(response(run, thread_id=thread, text=str(seq)), seq)
                 for run, thread, seq in batch])

    async def watcher(store: Store) -> None:
        while not stop.is_set():
            for run in runs:
                seq = await store.get_response_seq(run)
                if seq is not None:
                    assert seq >= seen.get(run, 0), f"{run} went back from {seen[run]} to {seq}"
                    seen[run] = seq
            await trio.lowlevel.checkpoint()

    with trio.fail_after(60):
        async with opened(store_url, data_dir) as a, opened(store_url, data_dir) as b, \
                opened(store_url, data_dir) as c, opened(store_url, data_dir) as w:
            for t in set(threads):
                await a.ensure_thread(t)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watcher, w)
                async with trio.open_nursery() as writers:
                    for i, store in enumerate((a, b, c)):
                        writers.start_soon(projector, store, random.Random(i))
                stop.set()
            for run in runs:
                assert await a.get_response_seq(run) == max(seqs)
                assert text_of(await c.get_response(run)) == str(max(seqs))
            assert len(seen) == len(runs)


async def test_concurrent_calls_on_one_store(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(30):
        async with opened(store_url, data_dir) as store:
            async def write(i: int) -> None:
                await store.upsert_response(response(f"r{i}", created_at=i), i)

            async with trio.open_nursery() as nursery:
                for i in range(1, 101):
                    nursery.start_soon(write, i)
            got = await store.list_thread_responses("t1")
            assert [r.id for r in got] == [f"r{i}" for i in range(1, 101)]


# ---------------------------------------------------------------------- threads


async def test_thread_history_in_order(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            second = response("b", created_at=2000)
            first = response("a", created_at=1000)
            tie_1, tie_2 = response("z", created_at=3000), response("y", created_at=3000)
            for r in (second, first, tie_1, tie_2, response("other", thread_id="t2")):
                assert await store.upsert_response(r, 1)
            # an update does not move a row: ties stay in insertion order
            assert await store.upsert_response(response("z", created_at=3000, text="x"), 2)
            got = await store.list_thread_responses("t1")
            assert [r.id for r in got] == ["a", "b", "z", "y"]
            assert await store.list_thread_responses("nobody") == []


async def test_threads_crud(store_url: str, data_dir: Path) -> None:
    clock = FixedClock(10_000)
    with trio.fail_after(10):
        async with opened(store_url, data_dir, clock) as store:
            t = await store.create_thread("t1", "first", {"model": "gpt-5-mini"})
            assert (t.id, t.title, t.settings, t.created_at, t.updated_at) == (
                "t1", "first", {"model": "gpt-5-mini"}, 10_000, 10_000)
            assert await store.get_thread("t1") == t
            with pytest.raises(Conflict):
                await store.create_thread("t1", "again", {})
            clock.advance(5)
            await store.create_thread("t2", None, {})
            clock.advance(5)
            ensured = await store.ensure_thread("t3")
            assert ensured.title is None and ensured.settings == {}
            assert await store.ensure_thread("t3") == ensured  # idempotent
            assert [x.id for x in await store.list_threads()] == ["t3", "t2", "t1"]
            assert [x.id for x in await store.list_threads(limit=1, offset=1)] == ["t2"]

            clock.advance(5)
            renamed = await store.update_thread("t1", title="renamed")
            assert renamed.title == "renamed" and renamed.settings == {"model": "gpt-5-mini"}
            assert renamed.updated_at == 10_015 and renamed.created_at == 10_000
            resettled = await store.update_thread("t1", settings={"model": "x"})
            assert resettled.title == "renamed" and resettled.settings == {"model": "x"}
            assert await store.get_thread("t1") == resettled
            assert (await store.list_threads())[0].id == "t1"
            with pytest.raises(NotFound):
                await store.update_thread("missing", title="x")
            with pytest.raises(ValidationFailed) as info:
                await store.update_thread("t1", title="nul\x00in the middle")
            assert info.value.details == {"field": "title"}
            with pytest.raises(ValidationFailed):
                await store.create_thread("t9", "nul\x00", {})
            await store.ping()


async def test_persisted_responses_touch_their_thread(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir, FixedClock(1000)) as store:
            await store.ensure_thread("t1")
            await store.upsert_response(response(thread_id="t1", created_at=1500,
                                                 updated_at=5000), 1)
            thread = await store.get_thread("t1")
            assert thread is not None and thread.updated_at == 5000
            await store.upsert_response(response(thread_id="t1", created_at=1600,
                                                 updated_at=4000), 1)
            thread = await store.get_thread("t1")
            assert thread is not None and thread.updated_at == 5000  # never backwards


async def test_delete_thread_and_its_responses(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            await store.create_thread("t1", "doomed", {"a": 1})
            await store.upsert_response(response("r1"), 3)
            await store.upsert_response(response("r2", thread_id="keep"), 3)
            await store.delete_thread("t1")
            assert await store.get_thread("t1") is None
            assert await store.get_response("r1") is None
            assert await store.list_thread_responses("t1") == []
            assert await store.get_response("r2") is not None
            assert "t1" not in [t.id for t in await store.list_threads()]
            assert [r.id for r in (await store.list_runs())[0]] == ["r2"]
            with pytest.raises(NotFound):
                await store.delete_thread("t1")
            with pytest.raises(NotFound):
                await store.update_thread("t1", title="x")
            # a run still in flight when its thread was deleted is not resurrected
            assert not await store.upsert_response(response("r1"), 4)
            assert await store.get_response("r1") is None
            # submitting to that id again starts a fresh, empty thread
            fresh = await store.ensure_thread("t1")
            assert fresh.title is None and fresh.settings == {}
            assert await store.list_thread_responses("t1") == []
            assert await store.upsert_response(response("r3"), 1)


async def test_reopen_keeps_everything(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            await store.create_thread("t1", "kept", {})
            await store.upsert_response(response("r1", text="kept"), 2)
        async with opened(store_url, data_dir) as store:
            thread = await store.get_thread("t1")
            assert thread is not None and thread.title == "kept"
            assert await store.get_response("r1") == response("r1", text="kept")
    assert schema_versions(store_url) == list(range(1, LATEST + 1))


# ---------------------------------------------------------------------- tenants


async def test_a_tenants_rows_are_invisible_to_another(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(15):
        async with opened(store_url, data_dir) as store:
            a, b = "acme", "globex"
            await store.create_thread("ta", "acme's", {}, tenant=a)
            await store.ensure_thread("tb", tenant=b)
            # Responses belong to their thread's tenant: the projector names none
            assert await store.upsert_response(response("ra", thread_id="ta", text="a"), 2)
            assert await store.upsert_response(response("rb", thread_id="tb", text="b"), 2)
            assert await store.response_tenant("ra") == a
            assert await store.response_tenant("nope") is None

            assert await store.get_response("ra", tenant=a) is not None
            for tenant in (b, "default"):
                assert await store.get_response("ra", tenant=tenant) is None
                assert await store.get_response_seq("ra", tenant=tenant) is None
                assert await store.get_thread("ta", tenant=tenant) is None
                assert await store.list_thread_responses("ta", tenant=tenant) == []
                assert (await store.list_runs(tenant, thread_id="ta"))[0] == []
                with pytest.raises(NotFound):
                    await store.update_thread("ta", title="mine now", tenant=tenant)
                with pytest.raises(NotFound):
                    await store.delete_thread("ta", tenant=tenant)
                with pytest.raises(NotFound):
                    await store.ensure_thread("ta", tenant=tenant)
                with pytest.raises(Conflict):
                    await store.create_thread("ta", tenant=tenant)
            assert [t.id for t in await store.list_threads(tenant=a)] == ["ta"]
            assert [t.id for t in await store.list_threads(tenant=b)] == ["tb"]
            assert await store.list_threads() == []
            assert [r.id for r in (await store.list_runs(a))[0]] == ["ra"]
            assert [r.id for r in (await store.list_runs(b))[0]] == ["rb"]

            # another tenant's run id is never overwritten, whatever its seq
            intruder = response("ra", thread_id="tb", text="overwritten")
            assert not await store.upsert_response(intruder, 99)
            assert text_of(await store.get_response("ra", tenant=a)) == "a"
            assert await store.get_response_seq("ra", tenant=a) == 2

            # a tombstone stays its tenant's: only acme may start that id again
            await store.delete_thread("ta", tenant=a)
            with pytest.raises(NotFound):
                await store.ensure_thread("ta", tenant=b)
            again = await store.ensure_thread("ta", tenant=a)
            assert again.title is None
            thread = await store.get_thread("ta", tenant=a)
            assert thread == again


# ---------------------------------------------------------------------- listing


async def seed_runs(store: Store, n: int, *, tenant: str = "default", seed: int = 0
                    ) -> list[Response]:
    """``n`` Responses over three threads, with created_at ties, statuses and models mixed."""
    rng = random.Random(seed)
    for t in range(3):
        await store.ensure_thread(f"{tenant}-t{t}", tenant=tenant)
    made = [response(str(uuid.UUID(int=rng.getrandbits(128))), thread_id=f"{tenant}-t{i % 3}",
                     created_at=1_000 + rng.randrange(n // 2 + 1),
                     status=rng.choice(["in_progress", "complete", "error", "aborted"]),
                     model_id=rng.choice(["gpt-5-mini", "claude-haiku-4.5"]))
            for i in range(n)]
    assert all(await store.upsert_responses([(r, 1) for r in made]))
    return made


def newest_first(rows: list[Response]) -> list[str]:
    return [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]


async def test_list_runs_filters(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(15):
        async with opened(store_url, data_dir) as store:
            mine = await seed_runs(store, 40, tenant="acme")
            await seed_runs(store, 10, tenant="globex", seed=1)
            page, cursor = await store.list_runs("acme", limit=1000)
            assert [r.id for r in page] == newest_first(mine) and cursor is None
            assert page == sorted(mine, key=lambda r: (r.created_at, r.id), reverse=True)

            cases = [
                ({"status": "complete"}, lambda r: r.status == "complete"),
                ({"status": ["error", "aborted"]}, lambda r: r.status in ("error", "aborted")),
                ({"thread_id": "acme-t1"}, lambda r: r.thread_id == "acme-t1"),
                ({"model": "claude-haiku-4.5"}, lambda r: r.model_id == "claude-haiku-4.5"),
                ({"since_ms": 1_010}, lambda r: r.created_at >= 1_010),
                ({"status": ["in_progress", "complete"], "model": "gpt-5-mini",
                  "thread_id": "acme-t0", "since_ms": 1_005},
                 lambda r: (r.status in ("in_progress", "complete")
                            and r.model_id == "gpt-5-mini" and r.thread_id == "acme-t0"
                            and r.created_at >= 1_005)),
            ]
            for filters, keep in cases:
                expected = newest_first([r for r in mine if keep(r)])
                assert expected, filters  # the seed covers every case
                got, _ = await store.list_runs("acme", limit=1000, **filters)  # type: ignore[arg-type]
                assert [r.id for r in got] == expected, filters
            assert (await store.list_runs("acme", model="nobody"))[0] == []


async def test_list_runs_pages_every_row_once(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(15):
        async with opened(store_url, data_dir) as store:
            mine = await seed_runs(store, 37)
            for limit in (1, 5, 36, 37, 50):
                ids: list[str] = []
                cursor: str | None = None
                pages = 0
                while True:
                    page, cursor = await store.list_runs(limit=limit, cursor=cursor)
                    assert len(page) <= limit
                    ids += [r.id for r in page]
                    pages += 1
                    if cursor is None:
                        break
                assert ids == newest_first(mine), limit
                assert pages == -(-37 // limit), limit  # no empty last page
            # filters and cursor together
            done = [r for r in mine if r.status == "complete"]
            first, cursor = await store.list_runs(status="complete", limit=2)
            rest, end = await store.list_runs(status="complete", limit=1000, cursor=cursor)
            assert [r.id for r in first + rest] == newest_first(done) and end is None


async def test_list_runs_pages_while_rows_are_inserted(store_url: str, data_dir: Path) -> None:
    """Keyset pages: every row that existed when paging began is seen exactly once, and no
    row twice, however many are inserted (older and newer) in between."""
    with trio.fail_after(30):
        async with opened(store_url, data_dir) as store, \
                opened(store_url, data_dir) as writer:
            before = await seed_runs(store, 60, seed=7)
            rng = random.Random(3)
            seen: list[str] = []
            cursor: str | None = None
            while True:
                # another node keeps writing between pages: old runs, new runs, updates
                extra = [response(thread_id="default-t0",
                                  created_at=rng.choice([900, 1_000, 1_015, 1_030, 5_000]))
                         for _ in range(3)]
                await writer.upsert_responses([(r, 1) for r in extra])
                await writer.upsert_response(rng.choice(before).model_copy(
                    update={"status": "complete"}), 2)
                page, cursor = await store.list_runs(limit=7, cursor=cursor)
                seen += [r.id for r in page]
                if cursor is None:
                    break
            assert len(seen) == len(set(seen)), "a row was listed twice"
            assert {r.id for r in before} <= set(seen)


async def test_list_runs_rejects_bad_arguments(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            bad: list[tuple[dict[str, object], str]] = [
                ({"cursor": "garbage"}, "cursor"), ({"cursor": "r1.!!!"}, "cursor"),
                ({"cursor": "r1.WzEsMiwzXQ"}, "cursor"),  # [1,2,3]
                ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                ({"status": "running"}, "status"), ({"status": []}, "status"),
            ]
            for kwargs, field in bad:
                with pytest.raises(ValidationFailed) as info:
                    await store.list_runs(**kwargs)  # type: ignore[arg-type]
                assert info.value.details == {"field": field}, kwargs
                assert info.value.status == 400


# ---------------------------------------------------------------------- start-up, failures


async def test_stores_starting_together_migrate_once(store_url: str, data_dir: Path) -> None:
    """Several nodes starting at once on a fresh database: each version applied once, and
    every store works."""
    stores: list[Store] = []

    async def start(i: int, ready: trio.Event, done: trio.Event) -> None:
        async with opened(store_url, data_dir) as store:
            stores.append(store)
            await store.ensure_thread(f"t{i}")
            assert await store.upsert_response(response(f"r{i}", thread_id=f"t{i}"), 1)
            ready.set()
            await done.wait()

    with trio.fail_after(30):
        done = trio.Event()
        readies = [trio.Event() for _ in range(6)]
        async with trio.open_nursery() as nursery:
            for i, ready in enumerate(readies):
                nursery.start_soon(start, i, ready, done)
            for ready in readies:
                await ready.wait()
            assert len(stores) == len(readies)
            for store in stores:
                assert len((await store.list_runs())[0]) == len(readies)
            done.set()
    assert schema_versions(store_url) == list(range(1, LATEST + 1))


async def test_errors_after_open_are_store_unavailable(store_url: str, data_dir: Path) -> None:
    with trio.fail_after(10):
        async with opened(store_url, data_dir) as store:
            drop_responses_table(store_url)
            with pytest.raises(StoreUnavailable) as info:
                await store.get_response("r1")
            assert info.value.status == 503 and info.value.infrastructure
            await store.ping()  # the connection itself is fine
