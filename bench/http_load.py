"""HTTP workloads for bench/run.py: token runs through ``cody serve`` and the bare endpoint.

Both are driven by bench/rawhttp.py (trio sockets, HTTP/1.0) and read the same way: every
``item_delta`` frame's text holds the send times (µs) of the tokens in it, stamped by
bench/token_provider.py (for Cody) or by bench/bare_sse.py itself, so

- tokens are counted by text, not by frame (Cody merges deltas that queue up while a run's
  append is in flight: one frame can carry many tokens), and
- each token's latency is receipt minus the moment the provider sent it: provider chunk in
  -> SSE byte out, the whole pipeline, for Cody and the reference alike.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench.rawhttp import get_stream, post_json
from bench.token_provider import prompt

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
TERMINAL = (b"response_done", b"response_error")
DELTA_TEXT = re.compile(rb'"delta_content":"([^"]*)"')
SEQ = re.compile(rb'"seq":(\d+)')


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q / 100 * len(s)))]


@dataclass
class Stream:
    tokens: int = 0
    frames: int = 0
    first_token_s: float | None = None
    lags_ms: list[float] | None = None
    sent_us: list[int] | None = None
    """With ``lags_ms``: each token's send time, same order."""
    started_us: int = 0
    """Wall time the stream was requested (the submit, for Cody)."""
    first_token_us: int = 0
    """Wall time the first token arrived."""
    seqs: list[int] | None = None
    terminal: bytes | None = None
    last_id: str | None = None
    run_id: str = ""


async def read(chunks: AsyncIterator[bytes], t0: float, res: Stream,
               stop_after_frames: int | None = None) -> Stream:
    """Read SSE frames until the terminal event (or ``stop_after_frames`` frames)."""
    buf = b""
    async for chunk in chunks:
        now_us = time.time_ns() // 1000
        buf += chunk
        while (end := buf.find(b"\n\n")) != -1:
            raw, buf = buf[:end], buf[end + 2:]
            if raw.startswith(b":"):
                continue
            event = fid = data = b""
            for line in raw.split(b"\n"):
                if line.startswith(b"event: "):
                    event = line[7:]
                elif line.startswith(b"id: "):
                    fid = line[4:]
                elif line.startswith(b"data: "):
                    data = line[6:]
            res.frames += 1
            res.last_id = fid.decode()
            if res.seqs is not None and (m := SEQ.search(data)):
                res.seqs.append(int(m[1]))
            if event == b"item_delta":
                m = DELTA_TEXT.search(data)
                stamps = m[1].split() if m else []
                if res.first_token_s is None:
                    res.first_token_s = time.perf_counter() - t0
                    res.first_token_us = now_us
                res.tokens += len(stamps)
                if res.lags_ms is not None:
                    sent = [int(s) for s in stamps]
                    res.lags_ms += [(now_us - t) / 1000 for t in sent]
                    if res.sent_us is not None:
                        res.sent_us += sent
            elif event in TERMINAL:
                res.terminal = event
                return res
            if stop_after_frames is not None and res.frames >= stop_after_frames:
                return res
    return res


# ---------------------------------------------------------------------- one stream


async def cody_stream(port: int, tokens: int, pace_ms: float, *, lag: bool = False) -> Stream:
    """Submit a turn to ``cody serve`` and read its run to the end; t0 is the submit."""
    res = Stream(lags_ms=[] if lag else None, sent_us=[] if lag else None,
                 started_us=time.time_ns() // 1000)
    t0 = time.perf_counter()
    status, accepted = await post_json(HOST, port, "/api/v2/runs", {
        "prompt": prompt(tokens, pace_ms), "provider_id": "openai", "model": "gpt-5-mini",
        "tools": []})
    if status != 202:
        raise ConnectionError(f"submit: HTTP {status} {accepted}")
    res.run_id = str(accepted["run_id"])
    return await read(get_stream(HOST, port, f"/api/v2/runs/{res.run_id}/events"), t0, res)


async def bare_stream(port: int, tokens: int, pace_ms: float, *, lag: bool = False) -> Stream:
    res = Stream(lags_ms=[] if lag else None, sent_us=[] if lag else None,
                 started_us=time.time_ns() // 1000)
    t0 = time.perf_counter()
    return await read(get_stream(HOST, port, f"/stream?tokens={tokens}&pace_ms={pace_ms:g}"),
                      t0, res)


Runner = Callable[..., Awaitable[Stream]]


# ---------------------------------------------------------------------- workloads


@dataclass
class Load:
    runs: int
    tokens: int
    wall_s: float
    cpu_s: float
    streams: list[Stream] = field(default_factory=list)

    @property
    def tok_s(self) -> float:
        return self.runs * self.tokens / self.wall_s

    @property
    def cpu_us_tok(self) -> float:
        return self.cpu_s / (self.runs * self.tokens) * 1e6

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams)

    def first_token_ms(self) -> list[float]:
        return [s.first_token_s * 1e3 for s in self.streams if s.first_token_s is not None]

    def lags_ms(self, *, steady: bool = False) -> list[float]:
        """Every token's latency; ``steady``: only tokens sent once every run was streaming
        (all runs concurrent, no submit or connection set-up competing with them)."""
        if not steady:
            return [x for s in self.streams for x in (s.lags_ms or [])]
        all_in = max(s.first_token_us for s in self.streams)
        return [lag for s in self.streams
                for lag, sent in zip(s.lags_ms or [], s.sent_us or [], strict=True)
                if sent > all_in]


async def load(runner: Runner, port: int, pid: int, runs: int, tokens: int,
               pace_ms: float = 0.0, *, lag: bool = False, spread_s: float = 0.0) -> Load:
    """``runs`` concurrent streams of ``tokens`` tokens; every one must arrive whole.
    ``spread_s`` spreads the starts evenly over that time, as independent users arrive."""
    streams: list[Stream] = []

    async def one(i: int) -> None:
        if spread_s:
            await trio.sleep(spread_s * i / runs)
        res = await runner(port, tokens, pace_ms, lag=lag)
        if res.tokens != tokens or res.terminal != b"response_done":
            raise RuntimeError(f"a run got {res.tokens} of {tokens} tokens, ended "
                               f"{res.terminal!r}")
        streams.append(res)

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(runs):
            nursery.start_soon(one, i)
    return Load(runs, tokens, time.perf_counter() - t0, cpu_seconds(pid) - cpu0, streams)


async def resume_churn(port: int, target: int, clients: int = 10, tokens: int = 200,
                       pace_ms: float = 5.0, seed: int = 7) -> tuple[int, int, int]:
    """Clients that each submit a run, then drop after 1-8 frames and reconnect with
    ``Last-Event-ID`` while it is live, over and over, until ``target`` reconnects in all;
    returns (resumes, lost, duplicated) counted by ``seq`` and by token."""
    rng = random.Random(seed)
    resumes = lost = dup = 0

    async def client() -> None:
        nonlocal resumes, lost, dup
        status, accepted = await post_json(HOST, port, "/api/v2/runs", {
            "prompt": prompt(tokens, pace_ms), "provider_id": "openai",
            "model": "gpt-5-mini", "tools": []})
        if status != 202:
            raise ConnectionError(f"submit: HTTP {status} {accepted}")
        path = f"/api/v2/runs/{accepted['run_id']}/events"
        seqs: list[int] = []
        got_tokens = 0
        cursor: str | None = None
        while True:
            res = Stream(seqs=[])
            headers = {"Last-Event-ID": cursor} if cursor else None
            await read(get_stream(HOST, port, path, headers), time.perf_counter(), res,
                       stop_after_frames=rng.randint(1, 8))
            seqs += res.seqs or []
            got_tokens += res.tokens
            if res.terminal is not None or res.last_id is None:
                break
            cursor = res.last_id
            resumes += 1
        lost += len(set(range(1, max(seqs) + 1)) - set(seqs)) + abs(tokens - got_tokens)
        dup += len(seqs) - len(set(seqs))

    while resumes < target:
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client)
    return resumes, lost, dup


def summary(values: list[float]) -> str:
    return f"{pct(values, 50):.2f} / {pct(values, 99):.2f} / {max(values):.1f}"


def as_row(load_: Load) -> dict[str, Any]:
    ftt = load_.first_token_ms()
    return {"tok_s": load_.tok_s, "cpu_us_tok": load_.cpu_us_tok,
            "ftt_p50_ms": pct(ftt, 50), "frames": load_.frames}


# ---------------------------------------------------------------------- CPU per token / run


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


async def _until(ready: Callable[[], bool], timeout_s: float) -> None:
    with trio.fail_after(timeout_s):
        while True:
            if ready():
                return
            await trio.sleep(0.01)


@dataclass
class Isolated:
    """CPU per token while every run streams (``runs`` at once, one reader each), measured
    over a window that starts once every run has its first token and ends before the first
    run ends: no submit, connection set-up or tear-down in it."""

    runs: int
    window_s: float
    tokens: int
    cpu_s: float
    gc_pauses_ms: list[float] = field(default_factory=list)
    """The CPU time of each collection in the window (bench/serve_gc.py)."""
    gc_full: int = 0
    gc_collected: int = 0
    """Objects the cyclic collector freed in the window: the runs' reference cycles."""
    steady: bool = True
    """False when the machine was too busy for every run to stream at once before the first
    ended: then ``cpu_s`` is 0 and the caller estimates from ``load_cpu_s`` (the whole load)
    less the runs' set-up and tear-down (``per_run``), and the GC figures cover the load."""
    load_cpu_s: float = 0.0

    @property
    def cpu_us_tok(self) -> float:
        return self.cpu_s / max(1, self.tokens) * 1e6


async def isolated_tokens(port: int, pid: int, runs: int, tokens: int = 100,
                          pace_ms: float = 100.0, spread_s: float = 2.0,
                          gc_file: Path | None = None) -> Isolated:
    """``runs`` runs of ``tokens`` tokens ``pace_ms`` apart (little to merge: nearly every
    token makes the whole trip alone), starts spread over ``spread_s``. With ``gc_file``
    the server is bench/serve_gc.py, asked (SIGUSR1) for its GC pauses in the window."""
    # (see Isolated.steady for a machine too busy for the window)
    import signal

    streams = [Stream() for _ in range(runs)]

    async def one(i: int) -> None:
        await trio.sleep(spread_s * i / runs)
        res = streams[i]
        t0 = time.perf_counter()
        status, accepted = await post_json(HOST, port, "/api/v2/runs", {
            "prompt": prompt(tokens, pace_ms), "provider_id": "openai",
            "model": "gpt-5-mini", "tools": []})
        if status != 202:
            raise ConnectionError(f"submit: HTTP {status} {accepted}")
        await read(get_stream(HOST, port, f"/api/v2/runs/{accepted['run_id']}/events"), t0,
                   res)
        if res.tokens != tokens or res.terminal != b"response_done":
            raise RuntimeError(f"a run got {res.tokens} of {tokens} tokens")

    async def gc_window() -> list[tuple[int, float, int, float]]:
        assert gc_file is not None
        before = _mtime(gc_file)
        os.kill(pid, signal.SIGUSR1)
        await _until(lambda: _mtime(gc_file) != before, 10)
        return [tuple(p) for p in _read_json(gc_file)]

    started = time.perf_counter()
    load_cpu0 = cpu_seconds(pid)
    window: tuple[float, int, float] | None = None
    pauses: list[tuple[int, float, int, float]] = []
    if gc_file is not None:
        await gc_window()
    async with trio.open_nursery() as nursery:
        for i in range(runs):
            nursery.start_soon(one, i)
        await _until(lambda: all(s.first_token_s is not None for s in streams),
                     spread_s + 120)
        # ends a second before the first run's last token is due
        first_end_s = min(s.first_token_us for s in streams) / 1e6 + (tokens - 1) * pace_ms / 1e3
        window_s = first_end_s - time.time() - 1.0
        if window_s >= 1.0:
            if gc_file is not None:
                await gc_window()
            cpu0, tok0, w0 = cpu_seconds(pid), sum(s.tokens for s in streams), time.perf_counter()
            await trio.sleep(window_s)
            cpu1, tok1 = cpu_seconds(pid), sum(s.tokens for s in streams)
            if not any(s.terminal is not None for s in streams):
                window = (time.perf_counter() - w0, tok1 - tok0, cpu1 - cpu0)
                if gc_file is not None:
                    pauses = await gc_window()
    if gc_file is not None and window is None:
        pauses = await gc_window()
    return Isolated(runs, *(window or (time.perf_counter() - started, runs * tokens, 0.0)),
                    [p[1] for p in pauses], sum(1 for p in pauses if p[0] == 2),
                    sum(p[2] for p in pauses), steady=window is not None,
                    load_cpu_s=cpu_seconds(pid) - load_cpu0)


async def per_run(port: int, pid: int, runs: int, concurrency: int = 10) -> float:
    """Server CPU per run (µs) for short runs (one token): submit, SSE stream, the run's
    few events, its ending and everything the server does afterwards (projector, retention),
    ``concurrency`` at a time."""
    left = runs

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            res = await cody_stream(port, 1, 0.0)
            if res.terminal != b"response_done":
                raise RuntimeError(f"a short run ended {res.terminal!r}")

    cpu0 = cpu_seconds(pid)
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    await trio.sleep(1.0)  # what the server does after the runs ended (projector, ...)
    return (cpu_seconds(pid) - cpu0) / runs * 1e6
