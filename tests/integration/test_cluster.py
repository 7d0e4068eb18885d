"""Redis Cluster outages, with a cluster of the test's own (the shared one must stay up): a
cluster that cannot be reached or goes down is RedisUnavailable (503), quickly, and the same
clients work again once it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from runtime.errors import RedisUnavailable
from runtime.eventlog import EventLog, open_redis
from runtime.keys import Keys
from tests.redis_cluster import free_cluster_ports, redis_cluster


async def test_no_reachable_seed_node_is_unavailable() -> None:
    ports = free_cluster_ports(2)
    t0 = time.monotonic()
    with trio.fail_after(10), pytest.raises(RedisUnavailable):
        async with open_redis(f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", 2):
            pass
    assert time.monotonic() - t0 < 5


async def test_a_cluster_that_goes_down_is_unavailable_then_serves_again(
        tmp_path: Path) -> None:
    with redis_cluster(tmp_path) as nodes:
        with trio.fail_after(60):
            async with open_redis(nodes.url, 4, stream_timeout_s=3) as writer, \
                    open_redis(nodes.url, 4, stream_timeout_s=3) as reader:
                log = EventLog(writer, reader, Keys("outage"))
                await log.ensure_group()
                await log.append("r1", [b'{"seq":1}'], 1)
                await trio.to_thread.run_sync(nodes.kill)
                t0 = time.monotonic()
                for call in (log.append("r1", [b'{"seq":2}'], 2), log.read_after("r1", "0-0", 9),
                             log.read_checkpoints("c", 10, 500), log.live_runs(),
                             log.tail("r1", "0-0", 500, 10), log.ping()):
                    with pytest.raises(RedisUnavailable):
                        await call
                assert time.monotonic() - t0 < 10
                nodes.restart()  # from the main thread (PDEATHSIG); the loop waits a second
                with trio.fail_after(20):  # the clients find the cluster again
                    while True:
                        try:
                            await log.ping()
                            break
                        except RedisUnavailable:
                            await trio.sleep(0.2)
                await log.ensure_group()  # no persistence here: the cluster came back empty
                ids = await log.append("r2", [b'{"seq":1}'], 1)
                assert [i for i, _ in await log.read_all("r2")] == ids
                assert [(c.run_id, c.seq) for c in await log.read_checkpoints("c", 10, 500)] \
                    == [("r2", 1)]
