"""Scale-out rows (issue 12): ``cody serve --workers 1`` next to ``--workers 2``, and the lag
of a remote SSE subscriber (fed by its node's multiplexed tail) next to a local one.

- tokens/s at ``runs`` concurrent runs (1,000 in the full run) through each server, the same
  token provider behind both; the ratio workers 2 / workers 1 (target >= 1.5 on 2 cores);
- latency per token at ``lat_runs`` runs (500) paced 100 ms per token, steady state: p99
  added over the bare SSE endpoint at the same load, workers 2 / workers 1 (target <= 0.5);
- cross-node lag: two runtimes in this process on one Redis (two nodes), one paced run on A
  read by a local reader on A and a remote one on B; lag = receipt minus the XADD millisecond
  of the entry id; the remote p99 minus the local p99 (target <= 5 ms).

    python bench/run.py --only scale [--quick]     # --quick: 100 runs / 50 runs, a smoke
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import trio

from actors.reader import RunReader
from actors.system import CodyRuntime, open_runtime
from bench import http_load as h
from bench import workloads_cody as w
from bench.processes import process, wait_port
from runtime.config import RuntimeConfig
from tests.e2e.server import ServerProcess, base_env, free_port

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]


def cody_server(workers: int, redis_url: str, prefix: str, tmp: Path,
                provider_port: int) -> ServerProcess:
    data_dir = tmp / f"cody-w{workers}"
    data_dir.mkdir()
    env = base_env(CODY_REDIS_URL=redis_url, CODY_KEY_PREFIX=f"{prefix}:w{workers}",
                   CODY_REPLAY="0", CODY_LOG_LEVEL=os.environ.get("CODY_LOG_LEVEL", "error"),
                   CODY_RETENTION_S="600", OPENAI_API_KEY="sk-bench",
                   OPENAI_BASE_URL=f"http://{HOST}:{provider_port}/v1")
    return ServerProcess(data_dir, env, argv=[sys.executable, "-m", "api.cli", "serve",
                                              "--workers", str(workers)])


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every core since boot, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


async def _workers_figures(port: int, pid: int, bare_port: int, bare_pid: int, runs: int,
                           tokens: int, lat_runs: int) -> dict[str, Any]:
    await h.load(h.cody_stream, port, pid, 4, 200)  # warm up (every worker, likely)
    thr = await h.load(h.cody_stream, port, pid, runs, tokens)
    busy0, total0 = machine_ticks()
    lat = await h.load(h.cody_stream, port, pid, lat_runs, 100, 100.0, lag=True, spread_s=2.0)
    busy1, total1 = machine_ticks()
    bare = await h.load(h.bare_stream, bare_port, bare_pid, lat_runs, 100, 100.0, lag=True,
                        spread_s=2.0)
    added = h.pct(lat.lags_ms(steady=True), 99) - h.pct(bare.lags_ms(steady=True), 99)
    return {"tok_s": thr.tok_s, "p99_added_ms": added,
            "p99_ms": h.pct(lat.lags_ms(steady=True), 99),
            "busy": (busy1 - busy0) / max(1, total1 - total0)}


def workers_rows(table: Any, redis_url: str, prefix: str, tmp: Path, *, quick: bool) -> None:
    runs, tokens, lat_runs = (100, 200, 50) if quick else (1000, 200, 500)
    figures: dict[int, dict[str, Any]] = {}
    with ExitStack() as stack:
        provider_port = free_port()
        provider = stack.enter_context(process(
            [sys.executable, "-m", "bench.token_provider", "--port", str(provider_port)],
            tmp / "token_provider.log", cwd=ROOT))
        wait_port(HOST, provider_port, provider)
        bare_port = free_port()
        bare = stack.enter_context(process(
            [sys.executable, "-m", "bench.bare_sse", "--port", str(bare_port)],
            tmp / "bare_sse.log", cwd=ROOT))
        wait_port(HOST, bare_port, bare)
        for workers in (1, 2):
            server = cody_server(workers, redis_url, prefix, tmp, provider_port).start(60)
            try:
                assert server.proc is not None
                figures[workers] = trio.run(_workers_figures, server.port, server.proc.pid,
                                            bare_port, bare.pid, runs, tokens, lat_runs)
            finally:
                server.stop()
    one, two = figures[1], figures[2]
    table.section(f"scale-out: cody serve --workers 2 (ours) vs --workers 1 (reference)"
                  f"{', quick' if quick else ''}")
    ratio = two["tok_s"] / one["tok_s"]
    table.add(f"workers 2 vs 1: tokens/s, {runs:,} runs x {tokens} tok", f"{two['tok_s']:,.0f}",
              f"{one['tok_s']:,.0f}", ratio, f"{'met' if ratio >= 1.5 else 'MISSED'}: >= 1.5")
    a1, a2 = max(one["p99_added_ms"], 0.01), two["p99_added_ms"]
    table.add(f"workers 2 vs 1: {lat_runs} runs steady, p99 added ms", f"{a2:.1f}",
              f"{a1:.1f}", a2 / a1, f"{'met' if a2 <= 0.5 * a1 else 'MISSED'}: <= 0.5")
    table.add(f"workers 2 vs 1: {lat_runs} runs steady, p99 ms", f"{two['p99_ms']:.1f}",
              f"{one['p99_ms']:.1f}", two["p99_ms"] / one["p99_ms"])
    # every process of the load shares the cores: when they are all busy, the p99 is the
    # wait for a core, whatever the number of workers
    table.add(f"workers 2 vs 1: machine CPU busy, {lat_runs}-run load (all cores)",
              f"{two['busy']:.0%}", f"{one['busy']:.0%}", None)


# ---------------------------------------------------------------------- cross-node lag


async def _read_lags(reader: RunReader, lags: list[float]) -> None:
    while not reader.done:
        batch = await reader.next_batch(30.0)
        if batch is None:
            raise AssertionError("a reader got nothing for 30 s")
        now_ms = time.time_ns() / 1e6
        lags.extend(now_ms - int(e.entry_id.partition("-")[0]) for e in batch)


async def cross_node_lag(redis_url: str, prefix: str, tmp: Path, *, runs: int = 20
                         ) -> tuple[list[float], list[float]]:
    """``runs`` paced runs on node A, each read by a reader on A and one on B."""
    local: list[float] = []
    remote: list[float] = []
    async with AsyncExitStack() as stack:
        nodes: list[CodyRuntime] = []
        for name in ("a", "b"):
            cfg = RuntimeConfig(redis_url=redis_url, key_prefix=f"{prefix}:lag",
                                data_dir=tmp / f"lag-{name}", store_path=tmp / "lag.db",
                                retention_s=120, replay_delay_s=0.01)
            nodes.append(await stack.enter_async_context(open_runtime(cfg)))
        a, b = nodes
        async with trio.open_nursery() as nursery:
            for _ in range(runs):
                accepted = await a.submission.submit(w.rapid_request())
                here = await a.reading.open_reader(accepted.run_id, None)
                there = await b.reading.open_reader(accepted.run_id, None)
                assert here is not None and there is not None
                nursery.start_soon(_read_lags, here, local)
                nursery.start_soon(_read_lags, there, remote)
    return local, remote


def lag_rows(table: Any, redis_url: str, prefix: str, tmp: Path, *, quick: bool) -> None:
    local, remote = trio.run(cross_node_lag, redis_url, prefix, tmp)
    added = h.pct(remote, 99) - h.pct(local, 99)
    table.section("scale-out: cross-node SSE, 20 paced runs on node A, a reader on A and on B")
    table.add("cross-node lag: remote (B) vs local (A) p50/p99/max ms", h.summary(remote),
              h.summary(local), h.pct(remote, 99) / max(h.pct(local, 99), 0.01),
              f"{'met' if added <= 5 else 'MISSED'}: p99 within 5 ms ({added:+.1f})")


def rows(table: Any, redis_url: str, prefix: str, tmp: Path, *, quick: bool) -> None:
    lag_rows(table, redis_url, prefix, tmp, quick=quick)
    workers_rows(table, redis_url, prefix, tmp, quick=quick)
