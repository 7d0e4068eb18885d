"""SSE delivery: N concurrent clients, each on its own replayed run, against a bare endpoint.

Starts ``cody serve`` (replay mode, Redis at --redis, paced replay) and ``bench/bare_sse.py``
as processes, then for N in (100, 1000) runs N clients against each and prints, side by side:
events/s delivered, time to first event p50/p99 (from submit for Cody; from connect for the
bare endpoint, which has nothing to submit), and added latency per event p50/p99 (Cody: from
XADD - the entry id's millisecond - to the client's receipt; bare: from the frame's send time,
floored to the millisecond the same way, to receipt).

    python bench/sse.py [--clients 100,1000] [--fixture openai/simple_message] [--delay 0.005]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.providers.fixtures import FixtureLibrary  # noqa: E402
from bench.rawhttp import get_stream, post_json  # noqa: E402
from runtime.sse import SSEDecoder  # noqa: E402
from tests.e2e.server import ServerProcess, base_env, free_port  # noqa: E402

LIB = FixtureLibrary()


@dataclass
class Stats:
    events: int = 0
    ttfe: list[float] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    errors: int = 0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def read_sse(chunks: AsyncIterator[bytes], t0: float, stats: Stats) -> None:
    decoder = SSEDecoder()
    first = True
    async for chunk in chunks:
        now_ms = time.time_ns() / 1e6
        for msg in decoder.feed(chunk):
            if not msg.data or msg.id is None:
                continue
            if first:
                stats.ttfe.append((time.perf_counter() - t0) * 1000)
                first = False
            stamp = int(msg.id.split("-")[0])
            sent_ms = stamp // 1_000_000 if stamp > 10**15 else stamp  # bare: ns; cody: ms
            stats.lat.append(now_ms - sent_ms)
            stats.events += 1
            if msg.event in ("response_done", "response_error"):
                return  # the run is over (HTTP/1.0: don't wait for the server's close)


async def cody_client(port: int, fixture: str, stats: Stats) -> None:
    provider, name = fixture.split("/")
    fx = LIB.get(provider, name)
    t0 = time.perf_counter()
    try:
        status, run = await post_json("127.0.0.1", port, "/api/v2/runs", {
            "prompt": fx.prompt, "provider_id": provider, "model": fx.model, "tools": []})
        if status != 202:
            stats.errors += 1
            return
        await read_sse(get_stream("127.0.0.1", port, run["events_url"]), t0, stats)
    except (OSError, ConnectionError, KeyError, ValueError):
        stats.errors += 1


async def bare_client(port: int, fixture: str, delay: float, stats: Stats) -> None:
    t0 = time.perf_counter()
    try:
        await read_sse(get_stream("127.0.0.1", port,
                                  f"/stream?fixture={fixture}&delay={delay}"), t0, stats)
    except (OSError, ConnectionError):
        stats.errors += 1


async def load(n: int, make: Callable[[Stats], Awaitable[None]]) -> tuple[Stats, float]:
    stats = Stats()
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(make, stats)
    return stats, time.perf_counter() - start


def row(label: str, stats: Stats, secs: float) -> str:
    return (f"{label:<14} {stats.events / secs:>10,.0f} {pct(stats.ttfe, 50):>9.1f} "
            f"{pct(stats.ttfe, 99):>9.1f} {pct(stats.lat, 50):>8.1f} {pct(stats.lat, 99):>8.1f}"
            f" {stats.errors:>6}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="100,1000")
    parser.add_argument("--fixture", default="openai/simple_message")
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cody-bench-sse-"))
    server = ServerProcess(data_dir, base_env(
        CODY_REDIS_URL=args.redis, CODY_KEY_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
        CODY_REPLAY="1", CODY_REPLAY_DELAY_S=str(args.delay), CODY_RETENTION_S="120",
        CODY_LOG_LEVEL="error"))
    server.start()
    bare_port = free_port()
    bare = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bare_sse.py"), "--port",
                             str(bare_port)], cwd=ROOT, env={**os.environ})
    try:
        for _ in range(100):
            try:
                httpx.get(f"http://127.0.0.1:{bare_port}/stream?delay=0", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"fixture {args.fixture}, replay pacing {args.delay * 1000:g} ms per block; "
              f"latency resolution 1 ms")
        print(f"{'':<14} {'events/s':>10} {'ttfe p50':>9} {'ttfe p99':>9} {'lat p50':>8} "
              f"{'lat p99':>8} {'errors':>6}   (ms)")
        trio.run(measure, args, server, bare_port)
    finally:
        bare.terminate()
        bare.wait()
        server.stop()


async def measure(args: argparse.Namespace, server: ServerProcess, bare_port: int) -> None:
    if True:
        for n in [int(x) for x in args.clients.split(",")]:
            c_stats, c_secs = await load(
                n, lambda st: cody_client(server.port, args.fixture, st))
            b_stats, b_secs = await load(
                n, lambda st: bare_client(bare_port, args.fixture, args.delay, st))
            print(row(f"cody  n={n}", c_stats, c_secs))
            print(row(f"bare  n={n}", b_stats, b_secs))
            ratio = (c_stats.events / c_secs) / (b_stats.events / b_secs)
            print(f"{'ratio':<14} {ratio:>10.2f}   added latency p50 "
                  f"{pct(c_stats.lat, 50) - pct(b_stats.lat, 50):+.1f} ms, p99 "
                  f"{pct(c_stats.lat, 99) - pct(b_stats.lat, 99):+.1f} ms", flush=True)


if __name__ == "__main__":
    main()
