"""The cost of an append, client and Redis side, on a private redis-server.

Two workloads, each on its own fresh ``redis-server`` (no persistence), so that its CPU
(``INFO cpu``) is ours alone:

  unpaced   ``runs`` rapid_deltas runs in-process, one reader each (as bench/run.py's "CPU per
            provider event" row): big batches, the append's fixed cost shared by many events
  paced     ``EventLog.append_many`` of ``runs`` runs x 1 event, ``rounds`` times: one event
            per run per round trip, the worst case for a per-batch cost (a script call)

Prints process CPU and Redis CPU per event. For instruction counts (stable on a shared
machine) run it under ``valgrind --tool=callgrind`` at two sizes and subtract: the
difference divided by the extra events is the cost per event, start-up cancelled out.

    python bench/append_cost.py [--mode unpaced|paced] [--runs 100] [--rounds 50]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import coredis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.providers.replay import split_blocks
from actors.system import open_runtime
from bench import workloads_cody as w
from runtime.config import RuntimeConfig
from runtime.envelope import EventFactory, encode_event
from runtime.eventlog import EventLog, open_redis
from runtime.keys import Keys
from runtime.schema import ItemDelta


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def redis_cpu_s(url: str) -> float:
    async with coredis.Redis.from_url(url) as client:
        info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def unpaced(url: str, tmp: Path, runs: int) -> tuple[int, float, float]:
    cfg = RuntimeConfig(redis_url=url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
                        data_dir=tmp / "inproc", replay_record_requests=False,
                        retention_s=120, replay_delay_s=0.0)
    async with open_runtime(cfg) as rt:
        await w.cpu_per_event(rt, 2)  # warm up
        r0, c0 = await redis_cpu_s(url), time.process_time()
        await w.cpu_per_event(rt, runs)
        cpu, rcpu = time.process_time() - c0, await redis_cpu_s(url) - r0
    events = runs * len(split_blocks(w.FX.exchanges[0].stream))
    return events, cpu, rcpu


async def paced(url: str, runs: int, rounds: int) -> tuple[int, float, float]:
    keys = Keys(f"bench-{uuid.uuid4().hex[:8]}")
    async with open_redis(url, 16) as writer, open_redis(url, 4) as reader:
        log = EventLog(writer, reader, keys)
        run_ids = [str(uuid.uuid4()) for _ in range(runs)]
        factories = {r: EventFactory(r, "00-0af7651916cd43dd8448eb211c80319c-"
                                     "b7ad6b7169203331-01", lambda: 1_700_000_000_000)
                     for r in run_ids}

        def batch() -> list[tuple[str, list[bytes], int | None]]:
            return [(r, [encode_event(f.make(ItemDelta(item_id="msg_1", delta_content="tok ")))],
                     None) for r, f in factories.items()]

        for _ in range(3):  # warm up
            await log.append_many(batch())
        batches = [batch() for _ in range(rounds)]
        r0, c0 = await redis_cpu_s(url), time.process_time()
        for b in batches:
            await log.append_many(b)
        cpu, rcpu = time.process_time() - c0, await redis_cpu_s(url) - r0
    return runs * rounds, cpu, rcpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("unpaced", "paced"), default="unpaced")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cody-append-cost-"))
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        if args.mode == "unpaced":
            events, cpu, rcpu = trio.run(unpaced, url, tmp, args.runs)
        else:
            events, cpu, rcpu = trio.run(paced, url, args.runs, args.rounds)
        print(f"{args.mode}: {events:,} events; process CPU {cpu / events * 1e6:.2f} us/event; "
              f"redis CPU {rcpu / events * 1e6:.2f} us/event", flush=True)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
