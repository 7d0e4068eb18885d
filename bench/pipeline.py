"""Pipeline throughput: events/s from run actor → Redis → subscriber, against plain Redis.

For 1, 10 and 100 concurrent runs of the 1,000-delta fixture (replayed with no pacing), one
subscriber per run reads every event through the runtime's reader (live fan-out after a Redis
replay). The reference, in the same process and run: the same encoded events, XADDed with
the same client library in pipelined batches of the same size, and read back by one XREAD
reader per stream. The ratio is ours / reference.

    python bench/pipeline.py [--redis redis://127.0.0.1:6379/0] [--runs 1,10,100]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import coredis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.providers.fixtures import FixtureLibrary
from actors.system import CodyRuntime, open_runtime
from runtime.config import RuntimeConfig
from runtime.turns import TurnRequest

FX = FixtureLibrary().get("openai", "rapid_deltas")


async def cody_run(rt: CodyRuntime, n: int) -> tuple[int, float, list[bytes]]:
    """Submit n runs, read each to its end; returns events, seconds and one run's events."""
    counts: list[int] = []
    sample: list[bytes] = []

    async def one() -> None:
        accepted = await rt.submission.submit(TurnRequest(
            prompt=FX.prompt, provider_id="openai", model=FX.model, tools=[]))
        reader = await rt.reading.open_reader(accepted.run_id, None)
        assert reader is not None
        got = 0
        datas: list[bytes] = []
        while not reader.done:
            batch = await reader.next_batch(10.0)
            assert batch is not None
            got += len(batch)
            if not sample:
                datas += [e.data for e in batch]
        counts.append(got)
        if not sample:
            sample.extend(datas)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(one)
    return sum(counts), time.perf_counter() - start, sample


async def plain_redis(url: str, prefix: str, n: int, events: list[bytes],
                      batch: int) -> tuple[int, float]:
    async with coredis.Redis.from_url(url, max_connections=n * 2 + 8) as client:
        keys = [f"{prefix}:plain:{{{uuid.uuid4()}}}" for _ in range(n)]
        total = 0

        async def writer(key: str) -> None:
            for i in range(0, len(events), batch):
                async with client.pipeline(transaction=False) as pipe:
                    for data in events[i:i + batch]:
                        pipe.xadd(key, {"event": data})

        async def reader(key: str) -> None:
            nonlocal total
            cursor = "0-0"
            got = 0
            while got < len(events):
                res = await client.xread({key: cursor}, count=1000, block=1000)
                if not res:
                    continue
                for entries in res.values():
                    for entry in entries:
                        cursor = entry.identifier
                        got += 1
            total += got

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for key in keys:
                nursery.start_soon(reader, key)
                nursery.start_soon(writer, key)
        elapsed = time.perf_counter() - start
        await client.delete(keys)
        return total, elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--runs", default="1,10,100")
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(f"/tmp/cody-bench-{prefix}")
    cfg = RuntimeConfig(redis_url=args.redis, key_prefix=prefix, data_dir=tmp,
                        replay_record_requests=False, retention_s=60,
                        subscriber_buffer=4096)
    print(f"{'runs':>5} {'cody ev/s':>12} {'plain ev/s':>12} {'ratio':>6}")
    async with open_runtime(cfg) as rt:
        await cody_run(rt, 1)  # warm up
        for n in [int(x) for x in args.runs.split(",")]:
            events, secs, sample = await cody_run(rt, n)
            # the actor appends one pipelined batch per provider chunk: match its batch size
            batch = max(1, len(sample) // max(1, len(FX.exchanges[0].stream) // 16_384 + 1))
            p_events, p_secs = await plain_redis(args.redis, prefix, n, sample, batch)
            ours, ref = events / secs, p_events / p_secs
            print(f"{n:>5} {ours:>12,.0f} {ref:>12,.0f} {ours / ref:>6.2f}", flush=True)


if __name__ == "__main__":
    trio.run(main)
