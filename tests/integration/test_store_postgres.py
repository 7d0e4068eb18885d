"""PostgreSQL only: outages (a loopback proxy the test cuts), a server unreachable at
start-up, the configured schema, the URL from the environment."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg
import pytest
import trio

from runtime.config import RuntimeConfig
from runtime.errors import StoreUnavailable, ValidationFailed
from runtime.store import open_store
from runtime.store.migrations import LATEST
from runtime.store.postgres import PostgresStore, conninfo_for
from tests.conftest import POSTGRES_URL, postgres_schema, postgres_url_for
from tests.integration.test_store import response, schema_versions
from tests.tcp_proxy import TcpProxy


@asynccontextmanager
async def proxied_schema() -> AsyncIterator[tuple[TcpProxy, str]]:
    """A fresh schema, reached through a proxy: (proxy, the store URL through it)."""
    with postgres_schema() as schema:
        async with trio.open_nursery() as nursery:
            proxy = TcpProxy("127.0.0.1", 5432)
            port = await nursery.start(proxy.serve)
            yield proxy, postgres_url_for(schema, f"postgresql://postgres@127.0.0.1:{port}/test")
            # (never open a sync connection through the proxy: it runs in this trio loop)
            nursery.cancel_scope.cancel()


async def until_it_works(store: PostgresStore, within_s: float) -> float:
    """Seconds until a call succeeds again."""
    start = trio.current_time()
    with trio.fail_after(within_s):
        while True:
            try:
                await store.ping()
                return trio.current_time() - start
            except StoreUnavailable:
                await trio.sleep(0.05)


async def test_connection_loss_is_store_unavailable_then_heals() -> None:
    timeout_s = 0.5
    with trio.fail_after(60):
        async with proxied_schema() as (proxy, url), \
                PostgresStore.open(url, timeout_s=timeout_s, reconnect_timeout_s=2.0) as store:
            await store.ensure_thread("t1")
            assert await store.upsert_response(response("r1", text="before"), 1)

            # writes in flight when the connection goes: each one either lands or is a 503
            outcomes: list[str] = []
            first_landed = trio.Event()

            async def write(i: int) -> None:
                try:
                    for j in range(20):
                        await store.upsert_response(response(f"w{i}-{j}"), 1)
                        outcomes.append("ok")
                        first_landed.set()
                except StoreUnavailable:
                    outcomes.append("503")

            async with trio.open_nursery() as nursery:
                for i in range(16):
                    nursery.start_soon(write, i)
                await first_landed.wait()
                proxy.cut()
            assert outcomes.count("503") == 16 and "ok" in outcomes

            # while down: one call at a time waits for the pool, the others fail at once
            calls: list[Callable[[int], Awaitable[object]]] = [
                lambda i: store.ping(), lambda i: store.get_response("r1"),
                lambda i: store.list_runs(), lambda i: store.ensure_thread("t2"),
                lambda i: store.upsert_response(response(f"x{i}"), 1)]

            async def one_call(i: int) -> None:
                with pytest.raises(StoreUnavailable) as info:
                    await calls[i % len(calls)](i)
                assert info.value.status == 503 and info.value.retry_after_s

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one_call, i)
            burst = trio.current_time() - start
            assert burst < timeout_s + 1.0, f"50 calls took {burst:.2f} s to fail while down"
            start = trio.current_time()
            with pytest.raises(StoreUnavailable):
                await store.get_response("r1")
            alone = trio.current_time() - start
            assert alone < timeout_s + 1.0

            await proxy.restore()
            healed = await until_it_works(store, within_s=10)
            stored = await store.get_response("r1")
            assert stored is not None and stored.output_items[0].content == "before"  # type: ignore[union-attr]
            assert await store.upsert_response(response("r3"), 1)
            assert proxy.connections > 1  # it reconnected through the proxy
            print(f"\npostgres outage: 50 concurrent calls all 503 in {burst:.2f} s, one call "
                  f"in {alone:.2f} s; working again {healed:.2f} s after the proxy came back; "
                  f"writes in flight at the cut: {outcomes.count('503')} got 503, "
                  f"{outcomes.count('ok')} landed before")


async def test_connections_a_server_restart_kills_are_replaced_unseen() -> None:
    """What a restart does to idle pooled connections (``pg_terminate_backend``, as a fast
    shutdown would): the pool's check finds each dead one as it hands it out, so no call
    fails."""
    name = f"cody_test_{uuid.uuid4().hex[:12]}"
    with postgres_schema() as schema, trio.fail_after(30):
        url = postgres_url_for(schema) + f"&application_name={name}"
        async with PostgresStore.open(url, pool_size=4) as store:
            async with trio.open_nursery() as nursery:  # warm several connections
                for i in range(8):
                    nursery.start_soon(store.upsert_response, response(f"r{i}"), 1)
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = %s", (name,)).fetchone()
                assert killed is not None and killed[0] >= 1
                with trio.fail_after(10):  # the restart is over: every old backend has gone
                    while True:
                        left = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                                             "application_name = %s", (name,)).fetchone()
                        if left == (0,):
                            break
                        await trio.sleep(0.02)
            for i in range(8):
                assert await store.get_response(f"r{i}") is not None
            assert await store.upsert_response(response("after"), 1)


async def test_unreachable_at_start_up_opens_and_migrates_when_back() -> None:
    with trio.fail_after(60):
        async with proxied_schema() as (proxy, url):
            proxy.cut()
            async with PostgresStore.open(url, timeout_s=0.5, reconnect_timeout_s=1.0) as store:
                with pytest.raises(StoreUnavailable):
                    await store.ping()
                with pytest.raises(StoreUnavailable):
                    await store.ensure_thread("t1")
                await proxy.restore()
                await until_it_works(store, within_s=10)
                await store.ensure_thread("t1")
                assert await store.upsert_response(response("r1"), 1)
            direct = url.replace(f":{proxy.port}/", ":5432/")
            assert schema_versions(direct) == list(range(1, LATEST + 1))


async def test_a_schema_that_does_not_exist_fails_the_open() -> None:
    with postgres_schema(create=False) as schema, trio.fail_after(20):
        with pytest.raises(ValidationFailed) as info:
            async with PostgresStore.open(postgres_url_for(schema)):
                pass
        assert info.value.details == {"field": "CODY_STORE_URL"}


async def test_store_url_from_the_environment() -> None:
    with postgres_schema() as schema, trio.fail_after(20):
        for scheme in ("postgresql", "postgres"):
            url = postgres_url_for(schema).replace("postgresql", scheme, 1)
            config = RuntimeConfig.from_env({"CODY_STORE_URL": url,
                                             "CODY_STORE_POOL_SIZE": "2"})
            assert config.store_url == url and config.store_pool_size == 2
            async with open_store(config) as store:
                assert isinstance(store, PostgresStore)
                await store.ensure_thread("t1")
                assert await store.get_thread("t1") is not None


def test_connection_defaults_do_not_override_the_url() -> None:
    info = conninfo_for("postgresql://u@h:5433/db?connect_timeout=9&options=-csearch_path%3Dx")
    assert "connect_timeout=9" in info and "application_name=cody" in info
    assert "keepalives=1" in info and "port=5433" in info
    with pytest.raises(ValidationFailed):
        conninfo_for("postgresql://u@h/db?nonsense_option=1")
