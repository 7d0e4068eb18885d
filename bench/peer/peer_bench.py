"""Peer benchmark: LangGraph's API server (``langgraph dev``, in-memory runtime) streaming tokens.

Starts ``langgraph dev`` (the optional ``bench`` extra installs it) on a free port,
serving bench/peer/graph.py, then drives it with a cheap trio + raw HTTP/1.0 client (httpx
would measure itself) and prints tokens/s at 1/10/100 concurrent runs, first-token time, server
CPU per token, delivery lag, and whether a Last-Event-ID rejoin loses or duplicates events.

    python bench/peer/peer_bench.py [--lg-bin PATH] [--n-jobs 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.http_load import cpu_seconds, pct
from bench.processes import process
from bench.rawhttp import get_stream, post_json
from tests.e2e.server import free_port

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent


@dataclass
class Frame:
    event: str
    id: str | None
    data: Any


@dataclass
class RunResult:
    run_id: str | None = None
    first_token_s: float | None = None
    ids: list[int] = field(default_factory=list)
    lags_ms: list[float] = field(default_factory=list)
    last_event_id: str | None = None


def parse_frame(raw: bytes) -> Frame | None:
    event, fid, data = "message", None, []
    for line in raw.split(b"\n"):
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"event":
            event = value.decode()
        elif name == b"id":
            fid = value.decode()
        elif name == b"data":
            data.append(value)
    if not data and fid is None:
        return None
    return Frame(event, fid, json.loads(b"\n".join(data)) if data else None)


async def sse(method: str, port: int, path: str, body: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None) -> AsyncIterator[Frame]:
    """Stream one request's SSE frames over HTTP/1.0 (the server closes to end the body)."""
    buf = b""
    async for chunk in get_stream(HOST, port, path, headers, method=method, body=body,
                                  strict=True):
        buf = (buf + chunk).replace(b"\r\n", b"\n")
        while b"\n\n" in buf:
            raw, _, buf = buf.partition(b"\n\n")
            if (frame := parse_frame(raw)) is not None:
                yield frame


async def new_thread(port: int) -> str:
    status, body = await post_json(HOST, port, "/threads", {})
    if status != 200:
        raise ConnectionError(f"create thread: HTTP {status} {body}")
    return str(body["thread_id"])


def run_body(n: int, delay: float, resumable: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"assistant_id": "tokens", "input": {"n": n, "delay": delay},
                            "stream_mode": ["custom"]}
    if resumable:
        body |= {"stream_resumable": True, "on_disconnect": "continue"}
    return body


async def consume(frames: AsyncIterator[Frame], res: RunResult, t_submit: float,
                  stop_after: int | None = None) -> None:
    async with contextlib.aclosing(frames):  # type: ignore[type-var]
        async for f in frames:
            if f.event == "metadata" and isinstance(f.data, dict):
                res.run_id = f.data.get("run_id", res.run_id)
            elif f.event == "custom":
                now = time.time_ns()
                if res.first_token_s is None:
                    res.first_token_s = time.perf_counter() - t_submit
                res.ids.append(int(f.data["i"]))
                res.lags_ms.append((now - int(f.data["t"])) / 1e6)
            elif f.event == "error":
                raise RuntimeError(f"run error: {f.data}")
            if f.id is not None:
                res.last_event_id = f.id
            if stop_after is not None and len(res.ids) >= stop_after:
                return


async def one_run(port: int, thread: str, n: int, delay: float) -> RunResult:
    res = RunResult()
    t = time.perf_counter()
    await consume(sse("POST", port, f"/threads/{thread}/runs/stream", run_body(n, delay)), res, t)
    if len(res.ids) != n:
        raise RuntimeError(f"run got {len(res.ids)} of {n} tokens")
    return res


async def throughput(port: int, pid: int, conc: int, n: int) -> dict[str, float]:
    threads: list[str] = []
    for _ in range(conc):
        threads.append(await new_thread(port))
    results: list[RunResult] = []

    async def go(th: str) -> None:
        results.append(await one_run(port, th, n, 0.0))

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for th in threads:
            nursery.start_soon(go, th)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    tokens = conc * n
    ftt = [r.first_token_s for r in results if r.first_token_s is not None]
    return {"tok_s": tokens / wall, "wall_s": wall, "cpu_us_tok": cpu / tokens * 1e6,
            "ftt_p50_ms": pct(ftt, 50) * 1e3, "ftt_max_ms": max(ftt) * 1e3}


async def lag(port: int, n: int = 200, delay: float = 0.01) -> dict[str, float]:
    res = await one_run(port, await new_thread(port), n, delay)
    return {"p50_ms": pct(res.lags_ms, 50), "p99_ms": pct(res.lags_ms, 99),
            "ftt_ms": (res.first_token_s or 0.0) * 1e3}


async def resume(port: int, wait_s: float, n: int = 200, delay: float = 0.01,
                 cut: int = 50) -> dict[str, Any]:
    """Read ``cut`` tokens, drop the connection, wait, rejoin with Last-Event-ID."""
    thread = await new_thread(port)
    first = RunResult()
    await consume(sse("POST", port, f"/threads/{thread}/runs/stream",
                      run_body(n, delay, resumable=True)), first, time.perf_counter(), cut)
    await trio.sleep(wait_s)
    second = RunResult()
    hdr = {"Last-Event-ID": first.last_event_id or "-1"}
    with trio.move_on_after(n * delay + 10):
        await consume(sse("GET", port, f"/threads/{thread}/runs/{first.run_id}/stream",
                          headers=hdr), second, time.perf_counter())
    got = first.ids + second.ids
    return {"before": len(first.ids), "after": len(second.ids),
            "lost": len(set(range(n)) - set(got)), "dup": len(got) - len(set(got)),
            "last_id": first.last_event_id}


async def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(60):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"langgraph dev exited with {proc.returncode}")
            try:
                await new_thread(port)
                return
            except OSError:
                await trio.sleep(0.25)


async def figures(port: int, proc: subprocess.Popen[bytes], n: int = 1000,
                  resumes: int = 5) -> dict[str, Any]:
    """The peer's figures on the token workloads, as bench/run.py tabulates them."""
    await wait_ready(port, proc)
    await one_run(port, await new_thread(port), 50, 0.0)  # warm-up: graph load, first run
    out: dict[str, Any] = {str(conc): await throughput(port, proc.pid, conc, n)
                           for conc in (1, 10, 100)}
    ftts = [(await one_run(port, await new_thread(port), 1, 0.0)).first_token_s or 0.0
            for _ in range(10)]
    out["ftt"] = {"p50": pct(ftts, 50) * 1e3}
    out["lag"] = await lag(port)
    rejoins = [await resume(port, 0.0) for _ in range(resumes)]
    out["resume"] = {"resumes": resumes, "lost": sum(r["lost"] for r in rejoins),
                     "dup": sum(r["dup"] for r in rejoins)}
    return out


async def bench(port: int, proc: subprocess.Popen[bytes], n: int) -> None:
    f = await figures(port, proc, n)
    print(f"langgraph dev (in-memory runtime), {n} tokens per run, delay 0")
    print(f"{'conc':>5} {'tok/s':>9} {'wall s':>7} {'CPU us/tok':>10} "
          f"{'1st tok p50 ms':>14} {'1st tok max ms':>14}")
    for conc in (1, 10, 100):
        r = f[str(conc)]
        print(f"{conc:>5} {r['tok_s']:>9.0f} {r['wall_s']:>7.2f} {r['cpu_us_tok']:>10.1f} "
              f"{r['ftt_p50_ms']:>14.1f} {r['ftt_max_ms']:>14.1f}")
    print(f"first token, 10 sequential 1-token runs: p50 {f['ftt']['p50']:.0f} ms")
    print(f"lag, 200 tokens 10 ms apart: p50 {f['lag']['p50_ms']:.2f} ms  "
          f"p99 {f['lag']['p99_ms']:.2f} ms")
    rs = f["resume"]
    print(f"resume (cut at 50 of 200, rejoin at once), {rs['resumes']} times: "
          f"lost {rs['lost']} dup {rs['dup']}")


def find_langgraph(given: str | None = None) -> str | None:
    """The ``langgraph`` command: as given, beside this Python (the ``bench`` extra installs
    it into the project's venv), or on PATH."""
    for candidate in (given, str(Path(sys.executable).parent / "langgraph"),
                      shutil.which("langgraph")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@contextlib.contextmanager
def peer_server(lg_bin: str, n_jobs: int = 10, allow_blocking: bool = False,
                log_path: Path = Path("/tmp/peer-langgraph.log")
                ) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``langgraph dev`` serving graph.py on a free port, offline, until the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGGRAPH_CLOUD_LICENSE_KEY")}
    env |= {"LANGSMITH_TRACING": "false", "LANGGRAPH_CLI_NO_ANALYTICS": "1"}
    with process([lg_bin, "dev", "--no-browser", "--no-reload", "--host", HOST, "--port",
                  str(port), "--n-jobs-per-worker", str(n_jobs), "--server-log-level", "WARNING",
                  *(["--allow-blocking"] if allow_blocking else [])],
                 log_path, cwd=HERE, env=env) as proc:
        yield port, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lg-bin", default=None, help="the langgraph command (default: found)")
    ap.add_argument("--n-jobs", type=int, default=10, help="--n-jobs-per-worker (stock: 10)")
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--allow-blocking", action="store_true",
                    help="pass --allow-blocking (turns off dev mode's BlockBuster checks)")
    args = ap.parse_args()
    lg_bin = find_langgraph(args.lg_bin)
    if lg_bin is None:
        sys.exit("langgraph not found: pip install -e '.[bench]'")
    with peer_server(lg_bin, args.n_jobs, args.allow_blocking) as (port, proc):
        print(f"server pid {proc.pid}, port {port}, n-jobs-per-worker {args.n_jobs}, "
              f"allow-blocking {args.allow_blocking}")
        trio.run(bench, port, proc, args.tokens)


if __name__ == "__main__":
    main()
