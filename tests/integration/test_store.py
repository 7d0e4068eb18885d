"""The SQLite store: monotonic upserts, thread history in order, thread CRUD, failures."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.clock import FixedClock
from runtime.errors import Conflict, NotFound, StoreUnavailable
from runtime.schema import MessageItem, Response, Usage
from runtime.store import SQLiteStore


def response(run_id: str | None = None, *, thread_id: str = "t1", created_at: int = 1000,
             status: str = "in_progress", text: str = "", updated_at: int | None = None
             ) -> Response:
    run_id = run_id or str(uuid.uuid4())
    items = (MessageItem(id=f"{run_id}-u", origin="agent", content=text),) if text else ()
    return Response.model_validate({
        "id": run_id, "turn_id": f"turn-{run_id}", "thread_id": thread_id,
        "model_id": "gpt-5-mini", "provider_id": "openai", "created_at": created_at,
        "updated_at": updated_at or created_at, "status": status, "output_items": items,
        "usage": Usage(prompt_tokens=8, completion_tokens=6, total_tokens=14)
        if status == "complete" else None})


async def test_upsert_is_monotonic_on_seq(data_dir: Path) -> None:
    with trio.fail_after(10):
        async with SQLiteStore.open(data_dir / "cody.db") as store:
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


@settings(max_examples=50, deadline=None)
@given(seqs=st.lists(st.integers(1, 50), min_size=1, max_size=20))
async def test_upsert_keeps_the_highest_seq(seqs: list[int]) -> None:
    with trio.fail_after(10):
        async with SQLiteStore.open(Path(":memory:")) as store:
            best = 0
            for seq in seqs:
                wrote = await store.upsert_response(response("r", text=str(seq)), seq)
                assert wrote == (seq > best)
                best = max(best, seq)
            stored = await store.get_response("r")
            assert stored is not None and stored.output_items[0].content == str(best)  # type: ignore[union-attr]


async def test_thread_history_in_order(data_dir: Path) -> None:
    with trio.fail_after(10):
        async with SQLiteStore.open(data_dir / "cody.db") as store:
            second = response("b", created_at=2000)
            first = response("a", created_at=1000)
            tie_1, tie_2 = response("z", created_at=3000), response("y", created_at=3000)
            for r in (second, first, tie_1, tie_2, response("other", thread_id="t2")):
                assert await store.upsert_response(r, 1)
            # an update does not move a row: rowid order is insertion order
            assert await store.upsert_response(response("z", created_at=3000, text="x"), 2)
            got = await store.list_thread_responses("t1")
            assert [r.id for r in got] == ["a", "b", "z", "y"]
            assert await store.list_thread_responses("nobody") == []


async def test_threads_crud(data_dir: Path) -> None:
    clock = FixedClock(10_000)
    with trio.fail_after(10):
        async with SQLiteStore.open(data_dir / "cody.db", clock=clock) as store:
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
            await store.ping()


async def test_persisted_responses_touch_their_thread(data_dir: Path) -> None:
    with trio.fail_after(10):
        async with SQLiteStore.open(data_dir / "cody.db", clock=FixedClock(1000)) as store:
            await store.ensure_thread("t1")
            await store.upsert_response(response(thread_id="t1", created_at=1500,
                                                 updated_at=5000), 1)
            thread = await store.get_thread("t1")
            assert thread is not None and thread.updated_at == 5000


async def test_delete_thread_and_its_responses(data_dir: Path) -> None:
    with trio.fail_after(10):
        async with SQLiteStore.open(data_dir / "cody.db") as store:
            await store.create_thread("t1", "doomed", {"a": 1})
            await store.upsert_response(response("r1"), 3)
            await store.upsert_response(response("r2", thread_id="keep"), 3)
            await store.delete_thread("t1")
            assert await store.get_thread("t1") is None
            assert await store.get_response("r1") is None
            assert await store.list_thread_responses("t1") == []
            assert await store.get_response("r2") is not None
            assert "t1" not in [t.id for t in await store.list_threads()]
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


async def test_reopen_keeps_everything_in_wal_mode(data_dir: Path) -> None:
    path = data_dir / "cody.db"
    with trio.fail_after(10):
        async with SQLiteStore.open(path) as store:
            await store.create_thread("t1", "kept", {})
            await store.upsert_response(response("r1", text="kept"), 2)
        async with SQLiteStore.open(path) as store:
            thread = await store.get_thread("t1")
            assert thread is not None and thread.title == "kept"
            assert await store.get_response("r1") == response("r1", text="kept")
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_concurrent_calls_share_one_connection(data_dir: Path) -> None:
    with trio.fail_after(20):
        async with SQLiteStore.open(data_dir / "cody.db") as store:
            async def write(i: int) -> None:
                await store.upsert_response(response(f"r{i}", created_at=i), i)

            async with trio.open_nursery() as nursery:
                for i in range(1, 101):
                    nursery.start_soon(write, i)
            got = await store.list_thread_responses("t1")
            assert [r.id for r in got] == [f"r{i}" for i in range(1, 101)]


async def test_unusable_file_is_store_unavailable(data_dir: Path) -> None:
    garbage = data_dir / "garbage.db"
    garbage.write_bytes(b"this is not a database, just text. " * 200)
    with trio.fail_after(10), pytest.raises(StoreUnavailable) as info:
        async with SQLiteStore.open(garbage):
            pass
    assert info.value.status == 503


async def test_errors_after_open_are_store_unavailable(data_dir: Path) -> None:
    path = data_dir / "cody.db"
    with trio.fail_after(10):
        async with SQLiteStore.open(path) as store:
            with sqlite3.connect(path) as other:
                other.execute("DROP TABLE responses")
            with pytest.raises(StoreUnavailable):
                await store.get_response("r1")
