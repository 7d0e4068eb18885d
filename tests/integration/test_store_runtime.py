"""The runtime on each store engine: runs persisted by the projector, a thread's turns as
history, run listing; on PostgreSQL, the runtime staying up through a store outage."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from actors.system import open_runtime
from runtime.errors import StoreUnavailable
from runtime.eventlog import open_redis
from runtime.store.postgres import PostgresStore
from tests.conftest import TCP_REDIS_URL, postgres_schema, postgres_url_for
from tests.integration.test_runtime import config_for, read_all, turn, wait_stored
from tests.tcp_proxy import TcpProxy


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A key prefix on the TCP Redis (the store is what varies here), cleaned up after."""
    name = f"test-{uuid.uuid4().hex}"
    yield name
    with trio.fail_after(15):
        async with open_redis(TCP_REDIS_URL, 2) as client:
            cursor: int | None = 0
            while True:
                cursor, keys = await client.scan(cursor, match=f"{name}:*", count=1000)
                if keys:
                    await client.delete(keys)
                if not cursor:
                    break


async def test_runs_persist_and_list_on_each_engine(store_url: str, prefix: str,
                                                    data_dir: Path) -> None:
    config = config_for(TCP_REDIS_URL, prefix, data_dir, store_url=store_url)
    with trio.fail_after(60):
        async with open_runtime(config) as rt:
            first = await rt.submission.submit(turn("openai", "simple_message"))
            await read_all(rt, first.run_id)
            stored_first = await wait_stored(rt, first.run_id)
            second = await rt.submission.submit(turn("anthropic", "simple_message",
                                                     thread_id=first.thread_id))
            await read_all(rt, second.run_id)
            stored_second = await wait_stored(rt, second.run_id)
            assert stored_first.status == stored_second.status == "complete"

            thread, runs = await rt.threads.with_runs(first.thread_id)
            assert thread.id == first.thread_id
            assert [r.id for r in runs] == [first.run_id, second.run_id]
            assert runs == [stored_first, stored_second]
            page, cursor = await rt.store.list_runs()
            assert {r.id for r in page} == {first.run_id, second.run_id} and cursor is None
            only, _ = await rt.store.list_runs(model=stored_second.model_id)
            assert [r.id for r in only] == [second.run_id]
            assert (await rt.lifecycle.ready()).as_dict() == {"redis": True, "store": True}


async def test_runtime_stays_up_through_a_postgres_outage(prefix: str, data_dir: Path) -> None:
    with postgres_schema() as schema, trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            proxy = TcpProxy("127.0.0.1", 5432)
            port = await nursery.start(proxy.serve)
            url = postgres_url_for(schema, f"postgresql://postgres@127.0.0.1:{port}/test")
            config = config_for(TCP_REDIS_URL, prefix, data_dir, store_url=url,
                                store_timeout_s=1.0)
            async with open_runtime(config) as rt:
                assert isinstance(rt.store, PostgresStore)
                before = await rt.submission.submit(turn("openai", "simple_message"))
                await read_all(rt, before.run_id)
                await wait_stored(rt, before.run_id)

                proxy.cut()
                start = trio.current_time()
                assert (await rt.lifecycle.ready()).as_dict() == {"redis": True, "store": False}
                assert trio.current_time() - start < 3
                with pytest.raises(StoreUnavailable) as info:
                    await rt.submission.submit(turn("openai", "simple_message"))
                assert info.value.status == 503

                await proxy.restore()
                with trio.fail_after(15):
                    while True:
                        if (await rt.lifecycle.ready()).store:
                            break
                        await trio.sleep(0.1)
                after = await rt.submission.submit(turn("anthropic", "simple_message"))
                await read_all(rt, after.run_id)
                assert (await wait_stored(rt, after.run_id)).status == "complete"
                assert (await rt.store.get_response(before.run_id)) is not None
            nursery.cancel_scope.cancel()
