"""Cody Core on peer_bench.py's token workloads, measured the same way, for a side-by-side.

Starts tests/fake_provider.py's FakeProvider (loopback, streams recorded fixtures) and a real
``cody serve`` process in live mode pointed at it, then drives it with bench/rawhttp.py (a
cheap trio + HTTP/1.0 client) exactly as peer_bench.py drives ``langgraph dev``: tokens/s at
1/10/100 concurrent runs of 1,000 tokens (openai/rapid_deltas: 1,000 one-character deltas),
first-token time from submit, server CPU per token from /proc/<pid>/stat, and delivery lag for
200 tokens 10 ms apart. Tokens are the characters of ``item_delta`` events' text (each
rapid_deltas delta is one character; the actor merges deltas that queue up while it is behind,
runtime/coalesce.py, so one event may carry many tokens).

Lag is receipt wall time minus the ms of the Redis entry id (the SSE ``id:``), i.e. from the
XADD that published the token; that id has 1 ms resolution (floored), so lags read 0-1 ms high.

    python bench/peer/cody_tokens.py [--peer] [--lg-bin /tmp/lg-venv/bin/langgraph]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from actors.providers.fixtures import FixtureLibrary
from bench.rawhttp import get_stream, post_json
from tests.e2e.server import WORKSPACE, ServerProcess, base_env
from tests.fake_provider import FakeProvider

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIB = FixtureLibrary()
RAPID = LIB.get("openai", "rapid_deltas")
SMALL = LIB.get("openai", "simple_message")
TERMINAL = ("response_done", "response_error")


@dataclass
class RunResult:
    run_id: str = ""
    tokens: int = 0
    first_token_s: float | None = None
    terminal: str | None = None
    lags_ms: list[float] | None = None


def cpu_seconds(pid: int) -> float:
    """utime+stime of the server process (all its threads), from /proc: no psutil needed."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def body_for(prompt: str) -> dict[str, Any]:
    return {"prompt": prompt, "provider_id": "openai", "model": "gpt-5-mini", "tools": []}


async def one_run(port: int, prompt: str, *, stop_after: int | None = None,
                  lag: bool = False) -> RunResult:
    """Submit, then read the run's SSE until its terminal event (or ``stop_after`` tokens)."""
    res = RunResult(lags_ms=[] if lag else None)
    t = time.perf_counter()
    status, accepted = await post_json(HOST, port, "/api/v2/runs", body_for(prompt))
    if status != 202:
        raise ConnectionError(f"submit: HTTP {status} {accepted}")
    res.run_id = str(accepted["run_id"])
    buf = b""
    async for chunk in get_stream(HOST, port, f"/api/v2/runs/{res.run_id}/events"):
        buf += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
        while b"\n\n" in buf:
            raw, _, buf = buf.partition(b"\n\n")
            event, fid, data = None, None, b""
            for line in raw.split(b"\n"):
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                elif line.startswith(b"id:"):
                    fid = line[3:].strip().decode()
                elif line.startswith(b"data:"):
                    data = line[5:]
            if event == "item_delta":
                now_ms = time.time_ns() / 1e6
                if res.first_token_s is None:
                    res.first_token_s = time.perf_counter() - t
                res.tokens += len(json.loads(data)["payload"]["delta_content"])
                if res.lags_ms is not None and fid is not None:
                    res.lags_ms.append(now_ms - int(fid.partition("-")[0]))
                if stop_after is not None and res.tokens >= stop_after:
                    return res
            elif event in TERMINAL:
                res.terminal = event
                if event == "response_error":
                    raise RuntimeError(f"run error: {raw[:300]!r}")
                return res
    return res


async def throughput(port: int, pid: int, conc: int) -> dict[str, float]:
    results: list[RunResult] = []

    async def go() -> None:
        r = await one_run(port, RAPID.prompt)
        if r.tokens != 1000:
            raise RuntimeError(f"run got {r.tokens} of 1000 tokens ({r.terminal})")
        results.append(r)

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(conc):
            nursery.start_soon(go)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    tokens = sum(r.tokens for r in results)
    ftt = [r.first_token_s for r in results if r.first_token_s is not None]
    return {"tok_s": tokens / wall, "wall_s": wall, "cpu_us_tok": cpu / tokens * 1e6,
            "ftt_p50_ms": pct(ftt, 0.5) * 1e3, "ftt_max_ms": max(ftt) * 1e3}


async def lag(port: int, fake: FakeProvider, n: int = 200, delay: float = 0.01
              ) -> dict[str, float]:
    """rapid_deltas paced by the fake provider (every block ``delay`` apart), first ``n``
    tokens, then the run is cancelled so it does not load what comes after."""
    fake.block_delay_s = delay
    try:
        res = await one_run(port, RAPID.prompt, stop_after=n, lag=True)
        await post_json(HOST, port, f"/api/v2/runs/{res.run_id}/cancel", {})
    finally:
        fake.block_delay_s = 0.0
    lags = res.lags_ms or [float("nan")]
    return {"p50_ms": pct(lags, 0.5), "p99_ms": pct(lags, 0.99),
            "ftt_ms": (res.first_token_s or 0.0) * 1e3, "n": float(len(lags))}


def fmt_row(conc: int, r: dict[str, float]) -> str:
    return (f"{conc:>5} {r['tok_s']:>9.0f} {r['wall_s']:>7.2f} {r['cpu_us_tok']:>10.1f} "
            f"{r['ftt_p50_ms']:>14.1f} {r['ftt_max_ms']:>14.1f}")


async def bench(port: int, pid: int, fake: FakeProvider) -> dict[str, Any]:
    await one_run(port, SMALL.prompt)  # warm-up: first run, provider client, Redis scripts
    out: dict[str, Any] = {}
    print("cody serve (live, FakeProvider, real Redis), 1000 tokens per run (rapid_deltas)")
    print(f"{'conc':>5} {'tok/s':>9} {'wall s':>7} {'CPU us/tok':>10} "
          f"{'1st tok p50 ms':>14} {'1st tok max ms':>14}")
    for conc in (1, 10, 100):
        out[str(conc)] = r = await throughput(port, pid, conc)
        print(fmt_row(conc, r))
    ftts = [(await one_run(port, SMALL.prompt)).first_token_s or 0.0 for _ in range(10)]
    out["ftt"] = {"p50": pct(ftts, 0.5) * 1e3, "min": min(ftts) * 1e3, "max": max(ftts) * 1e3}
    print(f"first token, 10 sequential simple_message runs: p50 {out['ftt']['p50']:.0f} ms"
          f"  min {out['ftt']['min']:.0f} ms  max {out['ftt']['max']:.0f} ms")
    out["lag"] = lg = await lag(port, fake)
    print(f"lag, 200 tokens 10 ms apart (receipt - XADD ms): p50 {lg['p50_ms']:.2f} ms"
          f"  p99 {lg['p99_ms']:.2f} ms  first token {lg['ftt_ms']:.1f} ms")
    return out


PEER_ROW = re.compile(r"^\s*(1|10|100)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")


def run_peer(lg_bin: str) -> dict[str, Any]:
    """Run peer_bench.py as it is and parse its table, so the peer's numbers are its own."""
    proc = subprocess.run([sys.executable, str(HERE / "peer_bench.py"), "--lg-bin", lg_bin],
                          capture_output=True, text=True, timeout=900)
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
    out: dict[str, Any] = {}
    for line in proc.stdout.splitlines():
        if m := PEER_ROW.match(line):
            out[m[1]] = dict(zip(("tok_s", "wall_s", "cpu_us_tok", "ftt_p50_ms", "ftt_max_ms"),
                                 map(float, m.groups()[1:]), strict=True))
        elif m := re.search(r"first token, 10 sequential.*p50 ([\d.]+) ms", line):
            out["ftt"] = {"p50": float(m[1])}
        elif m := re.search(r"lag, 200 tokens.*p50 ([\d.]+) ms\s+p99 ([\d.]+) ms", line):
            out["lag"] = {"p50_ms": float(m[1]), "p99_ms": float(m[2])}
    return out


def side_by_side(cody: dict[str, Any], peer: dict[str, Any]) -> None:
    print("\nside by side (Cody / peer; tok/s higher is better, the rest lower)")
    print(f"{'metric':<24} {'Cody':>10} {'peer':>10} {'ratio':>8}")

    def row(name: str, a: float | None, b: float | None) -> None:
        ratio = f"{a / b:>8.2f}" if a is not None and b else f"{'-':>8}"
        print(f"{name:<24} {a if a is not None else float('nan'):>10.1f} "
              f"{b if b is not None else float('nan'):>10.1f} {ratio}")

    for conc in ("1", "10", "100"):
        c, p = cody.get(conc, {}), peer.get(conc, {})
        for key, label in (("tok_s", "tok/s"), ("cpu_us_tok", "CPU us/tok"),
                           ("ftt_p50_ms", "1st tok p50 ms")):
            row(f"c={conc} {label}", c.get(key), p.get(key))
    row("1st tok seq p50 ms", cody.get("ftt", {}).get("p50"), peer.get("ftt", {}).get("p50"))
    for key in ("p50_ms", "p99_ms"):
        row(f"lag {key.replace('_', ' ')}", cody.get("lag", {}).get(key),
            peer.get("lag", {}).get(key))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", action="store_true", help="also run peer_bench.py and compare")
    ap.add_argument("--lg-bin", default="/tmp/lg-venv/bin/langgraph")
    args = ap.parse_args()
    prefix = f"bench-tok-{uuid.uuid4().hex[:12]}"
    with FakeProvider() as fake, tempfile.TemporaryDirectory() as data_dir:
        env = base_env(
            CODY_REDIS_URL="redis://127.0.0.1:6379/0", CODY_KEY_PREFIX=prefix,
            CODY_REPLAY="0", CODY_LOG_LEVEL="error", CODY_WORKSPACE=str(WORKSPACE),
            OPENAI_API_KEY=fake.api_key, OPENAI_BASE_URL=fake.openai_base_url)
        server = ServerProcess(Path(data_dir), env).start()
        assert server.proc is not None
        try:
            print(f"server pid {server.proc.pid}, port {server.port}, key prefix {prefix}")
            cody = trio.run(bench, server.port, server.proc.pid, fake)
        finally:
            server.stop()
            drop_keys(prefix)
    if args.peer and Path(args.lg_bin).exists():
        print()
        side_by_side(cody, run_peer(args.lg_bin))


def drop_keys(prefix: str) -> None:
    """Delete the run's keys (SCAN MATCH via redis-cli: fine for a benchmark's cleanup)."""
    keys = subprocess.run(["redis-cli", "-h", HOST, "--scan", "--pattern", f"{prefix}:*"],
                          capture_output=True, text=True, timeout=60).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "-h", HOST, "del", *keys[i:i + 500]],
                       capture_output=True, timeout=60)


if __name__ == "__main__":
    main()
