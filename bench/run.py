"""All Cody benchmarks in one process, one table: workload, our figure, reference, ratio.

Workloads (bench/workloads_cody.py, plus bench/pipeline.py's functions):
  memory    RSS growth per live run (1,000 slow runs) and per idle subscriber (1,000 on one run)
  fan-out   one paced rapid_deltas run read by 1 / 100 / 1,000 in-process subscribers;
            every subscriber must get every event; lag = receipt - the entry id's XADD ms
  resume    open_reader(cursor) → first batch on a 10,000-event stream, cursor at start,
            middle, end-1; reference: one bare XRANGE of the same page
  CPU       process CPU / event for 100 unpaced runs, one reader each; reference: the same
            events through pipelined XADD + XREAD with the same client library
  pipeline  events/s actor → Redis → subscriber vs plain Redis, 1 and 100 runs

Memory goes first, so that RSS is not measured in arenas freed by earlier workloads.

    python bench/run.py [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import coredis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.system import CodyRuntime, open_runtime
from bench import workloads_cody as w
from bench.pipeline import FX, cody_run, plain_redis
from runtime.config import RuntimeConfig

Row = tuple[str, str, str, str]


class Table:
    """Rows are printed as they complete, and again together at the end."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.started = time.perf_counter()

    @staticmethod
    def line(row: Row) -> str:
        return f"{row[0]:<44} {row[1]:>18} {row[2]:>18} {row[3]:>7}"

    def add(self, name: str, ours: str, ref: str = "", ratio: float | None = None) -> None:
        row = (name, ours, ref, f"{ratio:.2f}" if ratio is not None else "")
        self.rows.append(row)
        print(self.line(row), flush=True)

    def header(self) -> str:
        head = self.line(("workload", "ours", "reference", "ratio"))
        return f"{head}\n{'-' * len(head)}"

    def dump(self) -> None:
        print(f"\n{self.header()}")
        for row in self.rows:
            print(self.line(row))
        print(f"(total {time.perf_counter() - self.started:.0f} s)", flush=True)


class Bench:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.prefix = f"bench-run-{uuid.uuid4().hex[:8]}"
        self.tmp = Path(f"/tmp/cody-{self.prefix}")

    @asynccontextmanager
    async def runtime(self, delay_s: float) -> AsyncIterator[CodyRuntime]:
        cfg = RuntimeConfig(redis_url=self.redis_url, key_prefix=self.prefix,
                            data_dir=self.tmp, replay_record_requests=False, retention_s=60,
                            replay_delay_s=delay_s)
        async with open_runtime(cfg) as rt:
            yield rt

    async def cleanup(self) -> int:
        async with coredis.Redis.from_url(self.redis_url, decode_responses=False) as client:
            keys = [k async for k in client.scan_iter(match=f"{self.prefix}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await client.delete(keys[i:i + 1000])
        shutil.rmtree(self.tmp, ignore_errors=True)
        return len(keys)


def ms(values: list[float]) -> str:
    return f"{w.pct(values, 50):.2f} / {w.pct(values, 99):.2f}"


async def resume_churn(rt: CodyRuntime, target: int) -> tuple[int, int, int]:
    """Clients that drop after every few events and resume from their last id while their
    run is live, until ``target`` resumes in all; returns (resumes, lost, duplicated)."""
    import random

    from runtime.envelope import decode_event

    rng = random.Random(11)
    resumes = lost = duplicated = 0

    async def client() -> None:
        nonlocal resumes, lost, duplicated
        accepted = await rt.submit(w.rapid_request())
        cursor = "0-0"
        seqs: list[int] = []
        while True:
            reader = await rt.open_reader(accepted.run_id, cursor)
            if reader is None:
                break
            batch = await reader.next_batch(10.0)
            reader.close()
            assert batch is not None
            take = batch[:rng.randint(1, 8)]
            seqs += [decode_event(e.data).seq for e in take]
            cursor = take[-1].entry_id
            resumes += 1
            if take[-1].terminal:
                break
        expected = set(range(1, max(seqs) + 1))
        lost += len(expected - set(seqs))
        duplicated += len(seqs) - len(set(seqs))

    while resumes < target:
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(client)
    return resumes, lost, duplicated


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    bench = Bench(args.redis)
    table = Table()
    print(table.header(), flush=True)
    try:
        # -------------------------------------------------------------- memory
        async with bench.runtime(delay_s=30.0) as rt:
            mem = await w.memory(rt, w.small_request())
            table.add(f"memory: RSS per live run ({mem.runs}, simple_message)",
                      f"{mem.per_run_kib:.1f} KiB")
            table.add(f"memory: RSS per idle subscriber ({mem.subscribers})",
                      f"{mem.per_subscriber_kib:.2f} KiB")
        async with bench.runtime(delay_s=30.0) as rt:
            mem = await w.memory(rt, w.rapid_request(), subscribers=0)
            table.add(f"memory: RSS per live run ({mem.runs}, rapid_deltas)",
                      f"{mem.per_run_kib:.1f} KiB")
        # -------------------------------------------------------------- fan-out
        async with bench.runtime(delay_s=0.002) as rt:
            events = [data for _, data in await rt.log.read_all(
                (await w.fanout(rt, 1)).run_id)]
            for n in (1, 100, 1000):
                res = await w.fanout(rt, n)
                ref = await w.plain_fanout(bench.redis_url, bench.prefix, n, events, 0.002)
                table.add(f"fan-out {n:>4} subs: lag p50/p99 ms ({res.events} ev)",
                          ms(res.lags_ms), ms(ref.lags_ms),
                          w.pct(res.lags_ms, 99) / w.pct(ref.lags_ms, 99))
                table.add(f"fan-out {n:>4} subs: run wall s (dropped {res.dropped})",
                          f"{res.seconds:.2f}", f"{ref.seconds:.2f}", res.seconds / ref.seconds)
            # ---------------------------------------------------------- resume churn
            churn = await resume_churn(rt, target=1000)
            table.add(f"resume churn: {churn[0]} resumes on live runs, lost/duplicated",
                      f"{churn[1]} / {churn[2]}", "0 / 0")
        # -------------------------------------------------------------- unpaced
        async with bench.runtime(delay_s=0.0) as rt:
            await cody_run(rt, 1)  # warm up
            res_r = await w.resume(rt, bench.redis_url)
            for name in res_r.ours_ms:
                ours, plain = res_r.ours_ms[name], res_r.plain_ms[name]
                table.add(f"resume {res_r.events} ev, cursor {name}: p50/p99 ms", ms(ours),
                          ms(plain), w.pct(ours, 50) / w.pct(plain, 50))

            n_events, cpu_us, _wall = await w.cpu_per_event(rt, 100)
            sample: list[bytes] = []
            _, _, sample, _ = await cody_run(rt, 1)
            batch = max(1, len(sample) // max(1, len(FX.exchanges[0].stream) // 16_384 + 1))
            c0 = time.process_time()
            p_events, _ = await plain_redis(bench.redis_url, bench.prefix, 100, sample, batch)
            ref_us = (time.process_time() - c0) / p_events * 1e6
            table.add(f"CPU per event, 100 runs unpaced ({n_events:,} ev)", f"{cpu_us:.1f} us",
                      f"{ref_us:.1f} us", cpu_us / ref_us)

            for n in (1, 100):
                ev, secs, sample, _ = await cody_run(rt, n)
                p_events, p_secs = await plain_redis(bench.redis_url, bench.prefix, n, sample,
                                                     batch)
                ours_r, ref_r = ev / secs, p_events / p_secs
                table.add(f"pipeline {n:>3} runs: events/s", f"{ours_r:,.0f}", f"{ref_r:,.0f}",
                          ours_r / ref_r)
    finally:
        deleted = await bench.cleanup()
        print(f"(deleted {deleted} Redis keys under {bench.prefix}:)", flush=True)
    table.dump()


if __name__ == "__main__":
    trio.run(main)
