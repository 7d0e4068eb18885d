"""Every Cody benchmark in one command and one table: our figure, the reference measured in
the same run, their ratio, and the issue's target where it sets one.

One process tree, all on this machine (client, servers and Redis share its cores):
  - this process: the load client (bench/rawhttp.py, trio sockets) and, for the in-process
    workloads, runtimes opened with ``open_runtime`` on the same Redis;
  - ``cody serve`` (fresh data dir and key prefix) in live mode, its OpenAI base URL pointed at
  - bench/token_provider.py, which streams the recorded rapid_deltas framing with generated,
    timestamped tokens (provider chunk in -> SSE byte out is measured per token);
  - bench/bare_sse.py, a bare Hypercorn SSE endpoint streaming the same frames: the reference
    for what Hypercorn and loopback allow;
  - ``langgraph dev`` (the peer) when the ``bench`` extra is installed, with bench/peer/graph.py.

Workloads, in order (memory first, so RSS is not measured in arenas freed by earlier work):
  memory     RSS growth per live run (1,000 runs) and per idle subscriber (1,000 on one run)
  fan-out    one paced run read by 1 / 100 / 1,000 in-process subscribers; lag from XADD
  resume     reconnect with a cursor at start / middle / end of a 10,000-event stream to the
             first event (the reader, in-process); reference: one XRANGE of the same page
  CPU/event  process CPU per event, 100 unpaced runs in-process; reference: pipelined
             XADD + XREAD of the same events with the same client library
  pipeline   tokens/s provider -> cody serve -> SSE client at 1 / 100 / 1,000 concurrent runs;
             references: plain Redis (pipelined XADD + XREAD of one event per token) and the
             bare SSE endpoint; server CPU per token
  latency    per token, provider send -> SSE receipt, p50/p99/max at 10 and 500 concurrent runs
             paced 100 ms per token; reference: the bare endpoint at the same load
  first tok  20 sequential runs: submit -> first token
  resume     1,000 reconnects with Last-Event-ID on live runs over HTTP: lost / duplicated
  peer       1 / 10 / 100 runs of 1,000 tokens, first token, lag (200 tokens 10 ms apart) and
             resume on ``langgraph dev`` next to Cody on the same workloads
  scale-out  cross-node SSE lag (a remote subscriber vs a local one, two in-process nodes);
             ``cody serve --workers 2`` vs ``--workers 1``: tokens/s at 1,000 runs and the
             500-run latency rows, as ratios (bench/scale_out.py; ``--only scale --quick``)

  cpu        server CPU per isolated token (500 runs x 10 tokens/s, one reader each, over a
             window where every run streams), the server's GC pauses in that window
             (bench/serve_gc.py), and server CPU per short run (set-up and tear-down)

    python bench/run.py [--redis redis://127.0.0.1:6379/0] [--no-peer] [--lg-bin PATH]
    python bench/run.py --only cpu [--runs 100 --short-runs 100]   (quick: ~1 min)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.providers.replay import split_blocks
from actors.system import open_runtime
from api.gc_policy import YoungOnlyGC
from bench import http_load as h
from bench import reducer as hot
from bench import scale_out
from bench import workloads_cody as w
from bench.peer import peer_bench as peer
from bench.pipeline import cody_run, plain_redis
from bench.processes import process, wait_port
from runtime.config import RuntimeConfig
from runtime.envelope import EventFactory, encode_event
from runtime.schema import ItemDelta
from tests.e2e.server import ServerProcess, base_env, free_port

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]


class Table:
    """Rows are printed as they complete, and again together at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.started = time.perf_counter()

    @staticmethod
    def line(row: tuple[str, ...]) -> str:
        return f"{row[0]:<50} {row[1]:>22} {row[2]:>22} {row[3]:>7}  {row[4]}"

    def add(self, name: str, ours: str, ref: str = "", ratio: float | None = None,
            target: str = "") -> None:
        row = (name, ours, ref, f"{ratio:.2f}" if ratio is not None else "", target)
        self.rows.append(row)
        print(self.line(row), flush=True)

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", "", "", "", ""))
        print(f"-- {title}", flush=True)

    def header(self) -> str:
        head = self.line(("workload", "ours", "reference", "ratio", "target"))
        return f"{head}\n{'-' * len(head)}"

    def dump(self) -> None:
        print(f"\n{self.header()}")
        for row in self.rows:
            print(row[0] if row[0].startswith("--") else self.line(row))
        print(f"(total {time.perf_counter() - self.started:.0f} s)", flush=True)


def verdict(ok: bool, target: str) -> str:
    return f"{'met' if ok else 'MISSED'}: {target}"


def ms3(values: list[float]) -> str:
    return h.summary(values)


def ms2(values: list[float]) -> str:
    return f"{h.pct(values, 50):.2f} / {h.pct(values, 99):.2f}"


# ------------------------------------------------------------------------- processes


class Servers:
    """token provider, bare endpoint, cody serve (and the peer, on demand)."""

    def __init__(self, stack: ExitStack, redis_url: str, prefix: str, tmp: Path) -> None:
        self.provider_port = free_port()
        provider = stack.enter_context(process(
            [sys.executable, "-m", "bench.token_provider", "--port", str(self.provider_port)],
            tmp / "token_provider.log", cwd=ROOT))
        wait_port(HOST, self.provider_port, provider)
        self.bare_port = free_port()
        self.bare = stack.enter_context(process(
            [sys.executable, "-m", "bench.bare_sse", "--port", str(self.bare_port)],
            tmp / "bare_sse.log", cwd=ROOT))
        wait_port(HOST, self.bare_port, self.bare)
        data_dir = tmp / "cody"
        data_dir.mkdir()
        env = base_env(CODY_REDIS_URL=redis_url, CODY_KEY_PREFIX=prefix, CODY_REPLAY="0",
                       CODY_LOG_LEVEL=os.environ.get("CODY_LOG_LEVEL", "error"),
                       CODY_RETENTION_S="600",
                       CODY_SLOW_STEP_MS=os.environ.get("CODY_SLOW_STEP_MS", "0"),
                       OPENAI_API_KEY="sk-bench",
                       OPENAI_BASE_URL=f"http://{HOST}:{self.provider_port}/v1")
        self.gc_file = tmp / "gc.json"
        env["CODY_BENCH_GC_FILE"] = str(self.gc_file)
        self.cody = ServerProcess(data_dir, env, argv=[sys.executable, "-m", "bench.serve_gc"],
                                  cwd=ROOT).start()
        stack.callback(self.cody.stop)
        assert self.cody.proc is not None
        self.cody_port = self.cody.port
        self.cody_pid = self.cody.proc.pid


# ------------------------------------------------------------------------- in-process


class InProcess:
    def __init__(self, redis_url: str, prefix: str, tmp: Path) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.tmp = tmp

    @asynccontextmanager
    async def runtime(self, delay_s: float) -> Any:
        cfg = RuntimeConfig(redis_url=self.redis_url, key_prefix=self.prefix,
                            data_dir=self.tmp / "inproc", replay_record_requests=False,
                            retention_s=120, replay_delay_s=delay_s)
        async with open_runtime(cfg) as rt:
            yield rt


async def in_process(table: Table, ip: InProcess) -> None:
    YoungOnlyGC().install()  # as cody serve does (its full collections need the server)
    table.section("hot path, one core, no I/O: provider bytes -> normaliser -> envelope -> "
                  "reducer")
    for provider in ("openai", "anthropic"):
        fx = hot.FixtureLibrary().get(provider, "rapid_deltas")
        make = hot.normaliser(fx)
        n = hot.pipeline(fx, make, 16_384)
        rate = n / hot.best(lambda fx=fx, make=make: hot.pipeline(fx, make, 16_384), 5)
        table.add(f"{provider} rapid_deltas: events/s", f"{rate:,.0f}", "200,000",
                  rate / 200_000, "issue 2 target: 200,000")
    table.section("in-process runtime on Redis (no HTTP)")
    async with ip.runtime(delay_s=30.0) as rt:
        mem = await w.memory(rt, w.small_request())
        table.add(f"memory: RSS per live run ({mem.runs} runs)", f"{mem.per_run_kib:.1f} KiB")
        table.add(f"memory: RSS per idle subscriber ({mem.subscribers})",
                  f"{mem.per_subscriber_kib:.2f} KiB",
                  target=verdict(mem.per_subscriber_kib <= 64, "<= 64 KiB"))
    async with ip.runtime(delay_s=0.002) as rt:
        events = [data for _, data in await rt.log.read_all((await w.fanout(rt, 1)).run_id)]
        for n in (1, 100, 1000):
            res = await w.fanout(rt, n)
            ref = await w.plain_fanout(ip.redis_url, ip.prefix, n, events, 0.002)
            p99 = h.pct(res.lags_ms, 99)
            complete = res.dropped == 0
            table.add(f"fan-out {n:>4} subs: lag p50/p99 ms ({res.events} ev each)",
                      ms2(res.lags_ms), ms2(ref.lags_ms), p99 / h.pct(ref.lags_ms, 99),
                      verdict(p99 <= 50 and complete, "all events, p99 <= 50 ms")
                      if n == 1000 else "")
    async with ip.runtime(delay_s=0.0) as rt:
        await cody_run(rt, 1)  # warm up
        res_r = await w.resume(rt, ip.redis_url)
        for name in res_r.ours_ms:
            ours, plain = res_r.ours_ms[name], res_r.plain_ms[name]
            p99 = h.pct(ours, 99)
            table.add(f"resume {res_r.events} ev, cursor {name}: p50/p99 ms", ms2(ours),
                      ms2(plain), p99 / h.pct(plain, 99),
                      verdict(p99 <= 20, "p99 <= 20 ms"))
        delivered, cpu_us_event, _wall = await w.cpu_per_event(rt, 100)
        provider_events = 100 * len(split_blocks(w.FX.exchanges[0].stream))
        cpu_us = cpu_us_event * delivered / provider_events
        c0 = time.process_time()
        p_events, _ = await plain_redis(ip.redis_url, ip.prefix, 100, token_events(1000), 64)
        ref_us = (time.process_time() - c0) / p_events * 1e6
        table.add(f"CPU per provider event, 100 runs in-process ({delivered:,} written)",
                  f"{cpu_us:.1f} us", f"{ref_us:.1f} us", cpu_us / ref_us)


# ------------------------------------------------------------------------- over HTTP


def token_events(tokens: int) -> list[bytes]:
    """One encoded item_delta per token, as Cody writes them when nothing merges."""
    factory = EventFactory(str(uuid.uuid4()), "00-0af7651916cd43dd8448eb211c80319c-"
                           "b7ad6b7169203331-01", lambda: int(time.time() * 1000))
    return [encode_event(factory.make(ItemDelta(item_id="msg_1",
                                                delta_content=f"{time.time_ns() // 1000} ")))
            for _ in range(tokens)]


async def over_http(table: Table, s: Servers, redis_url: str, prefix: str) -> dict[str, Any]:
    """Returns Cody's token figures for the side-by-side with the peer."""
    out: dict[str, Any] = {}
    await h.load(h.cody_stream, s.cody_port, s.cody_pid, 4, 200)  # warm up
    await h.load(h.bare_stream, s.bare_port, s.bare.pid, 4, 200)
    table.section("pipeline over HTTP: token provider -> cody serve -> SSE client")
    for runs, tokens in ((1, 1000), (10, 1000), (100, 1000), (1000, 200)):
        ours = await h.load(h.cody_stream, s.cody_port, s.cody_pid, runs, tokens)
        out[str(runs)] = h.as_row(ours)
        if runs == 10:
            continue  # for the peer's table only
        bare = await h.load(h.bare_stream, s.bare_port, s.bare.pid, runs, tokens)
        p_events, p_secs = await plain_redis(redis_url, prefix, runs, token_events(tokens), 64)
        plain_rate = p_events / p_secs
        name = f"pipeline {runs:>4} runs x {tokens} tok: tokens/s"
        table.add(f"{name} vs plain Redis", f"{ours.tok_s:,.0f}", f"{plain_rate:,.0f}",
                  ours.tok_s / plain_rate,
                  verdict(ours.tok_s >= 0.5 * plain_rate, ">= 0.5") if runs == 100 else "")
        table.add(f"{name} vs bare SSE", f"{ours.tok_s:,.0f}", f"{bare.tok_s:,.0f}",
                  ours.tok_s / bare.tok_s)
        table.add("  server CPU per token / SSE frames sent", f"{ours.cpu_us_tok:.1f} us "
                  f"/ {ours.frames:,}", f"{bare.cpu_us_tok:.1f} us / {bare.frames:,}",
                  ours.cpu_us_tok / bare.cpu_us_tok if bare.cpu_us_tok else None)

    table.section("latency per token, provider send -> SSE receipt; starts spread over 2 s, "
                  "'steady' counts tokens sent once every run streams")
    for runs, tokens, pace_ms in ((10, 50, 100.0), (500, 100, 100.0), (500, 12, 1000.0)):
        ours = await h.load(h.cody_stream, s.cody_port, s.cody_pid, runs, tokens, pace_ms,
                            lag=True, spread_s=2.0)
        bare = await h.load(h.bare_stream, s.bare_port, s.bare.pid, runs, tokens, pace_ms,
                            lag=True, spread_s=2.0)
        for steady in (False, True):
            lo, lb = ours.lags_ms(steady=steady), bare.lags_ms(steady=steady)
            added = h.pct(lo, 99) - h.pct(lb, 99)
            judged = runs == 500 and pace_ms == 100.0 and steady
            table.add(f"latency {runs:>3} runs, {pace_ms / 1000:g} s apart"
                      f"{', steady' if steady else ''}: p50/p99/max ms", ms3(lo), ms3(lb),
                      h.pct(lo, 99) / h.pct(lb, 99),
                      verdict(added <= 5, f"p99 added {added:.1f} <= 5 ms") if judged
                      else f"p99 added {added:.1f} ms")

    table.section("first token and resume over HTTP")
    ftt: list[float] = []
    for _ in range(20):
        one = await h.cody_stream(s.cody_port, 10, 0.0)
        assert one.first_token_s is not None
        ftt.append(one.first_token_s * 1e3)
    out["ftt"] = {"p50": h.pct(ftt, 50)}
    table.add("first token, 20 sequential runs: p50/p99 ms", ms2(ftt),
              target=verdict(h.pct(ftt, 99) <= 20, "within 20 ms of submit (p99)"))
    lag = await h.load(h.cody_stream, s.cody_port, s.cody_pid, 1, 200, 10.0, lag=True)
    out["lag"] = {"p50_ms": h.pct(lag.lags_ms(), 50), "p99_ms": h.pct(lag.lags_ms(), 99)}
    resumes, lost, dup = await h.resume_churn(s.cody_port, 1000)
    out["resume"] = {"resumes": resumes, "lost": lost, "dup": dup}
    table.add(f"resume: {resumes} reconnects on live runs, lost/dup", f"{lost} / {dup}",
              target=verdict(lost == dup == 0, "0 / 0"))
    return out


async def cpu_rows(table: Table, s: Servers, runs: int, short_runs: int) -> None:
    """CPU per isolated token, CPU per run, GC pauses (issue 16)."""
    await h.load(h.cody_stream, s.cody_port, s.cody_pid, 4, 200)  # warm up
    table.section(f"CPU per isolated token and per run (server process, {runs} runs x "
                  "10 tokens/s; short runs: 1 token, 10 at a time)")
    us = await h.per_run(s.cody_port, s.cody_pid, short_runs)
    iso = await h.isolated_tokens(s.cody_port, s.cody_pid, runs, tokens=120, gc_file=s.gc_file)
    if iso.steady:
        per_tok, how = iso.cpu_us_tok, f"{iso.tokens:,} tokens in {iso.window_s:.1f} s"
    else:  # the machine was too busy for a window where every run streams
        per_tok = (iso.load_cpu_s * 1e6 - runs * us) / iso.tokens
        how = "whole load less set-up/tear-down: the machine was too busy for a window"
    table.add(f"CPU per isolated token ({runs} runs x 10 tok/s, 1 reader each)",
              f"{per_tok:.1f} us", "", None, verdict(per_tok <= 150, "<= 150 us") + f" ({how})")
    pauses = iso.gc_pauses_ms
    table.add(f"GC pauses at {runs} runs, CPU: p99/max ms (count, full)",
              f"{h.pct(pauses, 99):.2f} / {max(pauses, default=0):.1f}", "", None,
              verdict(h.pct(pauses, 99) <= 5 if pauses else True, "p99 <= 5 ms")
              + f" ({len(pauses)}, {iso.gc_full} full; {iso.gc_collected:,} objects freed)")
    table.add(f"CPU per run set-up+tear-down ({short_runs} short runs)", f"{us / 1000:.2f} ms",
              "", None, verdict(us <= 2000, "<= 2 ms"))


# ------------------------------------------------------------------------- the peer


def side_by_side(table: Table, cody: dict[str, Any], lg: dict[str, Any]) -> None:
    table.section("the peer: langgraph dev (in-memory runtime), same token workloads")
    for conc in ("1", "10", "100"):
        c, p = cody[conc], lg[conc]
        ratio = c["tok_s"] / p["tok_s"]
        table.add(f"peer c={conc:>3} x 1000 tok: tokens/s", f"{c['tok_s']:,.0f}",
                  f"{p['tok_s']:,.0f}", ratio,
                  verdict(ratio >= 4, ">= 4x") if conc == "100" else "")
        cpu = c["cpu_us_tok"] / p["cpu_us_tok"]
        table.add(f"peer c={conc:>3}: server CPU per token", f"{c['cpu_us_tok']:.1f} us",
                  f"{p['cpu_us_tok']:.1f} us", cpu,
                  verdict(cpu <= 0.25, "<= 0.25") if conc == "100" else "")
        table.add(f"peer c={conc:>3}: first token p50 ms", f"{c['ftt_p50_ms']:.1f}",
                  f"{p['ftt_p50_ms']:.1f}", c["ftt_p50_ms"] / p["ftt_p50_ms"])
    table.add("peer: first token, sequential runs, p50 ms", f"{cody['ftt']['p50']:.1f}",
              f"{lg['ftt']['p50']:.1f}", cody["ftt"]["p50"] / lg["ftt"]["p50"])
    table.add("peer: lag, 200 tokens 10 ms apart, p50/p99 ms",
              f"{cody['lag']['p50_ms']:.2f} / {cody['lag']['p99_ms']:.2f}",
              f"{lg['lag']['p50_ms']:.2f} / {lg['lag']['p99_ms']:.2f}",
              cody["lag"]["p99_ms"] / lg["lag"]["p99_ms"])
    cr, pr = cody["resume"], lg["resume"]
    table.add("peer: resume mid-run, lost/dup (resumes)",
              f"{cr['lost']} / {cr['dup']} ({cr['resumes']})",
              f"{pr['lost']} / {pr['dup']} ({pr['resumes']})")


# ------------------------------------------------------------------------- main


async def cleanup(redis_url: str, prefix: str) -> int:
    async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await client.delete(keys[i:i + 1000])
    return len(keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-peer", action="store_true", help="skip langgraph dev")
    parser.add_argument("--lg-bin", default=None, help="the langgraph command (default: found)")
    parser.add_argument("--only", choices=("inprocess", "http", "cpu", "scale"), default=None)
    parser.add_argument("--runs", type=int, default=500,
                        help="runs of the CPU-per-isolated-token row (fewer: a quick look)")
    parser.add_argument("--short-runs", type=int, default=500,
                        help="runs of the CPU-per-run row")
    parser.add_argument("--quick", action="store_true",
                        help="scale-out rows at 100/50 runs instead of 1,000/500 (a smoke)")
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="cody-bench-"))
    table = Table()
    print(table.header(), flush=True)
    lg_bin = None if args.no_peer else peer.find_langgraph(args.lg_bin)
    try:
        if args.only in (None, "inprocess"):
            trio.run(in_process, table, InProcess(args.redis, prefix, tmp))
        if args.only == "cpu":
            with ExitStack() as stack:
                servers = Servers(stack, args.redis, prefix, tmp)
                trio.run(cpu_rows, table, servers, args.runs, args.short_runs)
        if args.only in (None, "http"):
            with ExitStack() as stack:
                servers = Servers(stack, args.redis, prefix, tmp)
                cody = trio.run(over_http, table, servers, args.redis, prefix)
                trio.run(cpu_rows, table, servers, args.runs, args.short_runs)
            if lg_bin is None:
                table.section("the peer: skipped (pip install -e '.[bench]' for langgraph)")
            else:
                with peer.peer_server(lg_bin, log_path=tmp / "langgraph.log") as (port, proc):
                    lg = trio.run(peer.figures, port, proc)
                side_by_side(table, cody, lg)
        if args.only in (None, "scale"):
            scale_out.rows(table, args.redis, prefix, tmp, quick=args.quick)
    finally:
        deleted = trio.run(cleanup, args.redis, prefix)
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"(deleted {deleted} Redis keys under {prefix}:)", flush=True)
    table.dump()


if __name__ == "__main__":
    main()
