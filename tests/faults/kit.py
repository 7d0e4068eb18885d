"""The fault suite's kit: real processes, real kills, and the figures they print.

Each scenario runs its own ``cody serve`` (own data dir, own key prefix) and, where it needs an
external Redis, its own ``redis-server`` on a private port with append-only persistence, so a
restart after ``kill -9`` finds the data where it was (never the machine's Redis on 6379). Runs
replay ``openai/rapid_deltas`` (1,008 SSE blocks) at ``CODY_REPLAY_DELAY_S`` = 0.01, so each
one is in flight for ~10 s; probes that must finish quickly use the 14-block
``openai/simple_message``.

Clients stream with :func:`follow`, which resumes a dropped connection after the last entry id
it saw (``Last-Event-ID``), as a real client would; :func:`check_stream` then checks that what it
got over all its connections has no duplicate and no gap.

Every test prints its measured figures as one ``FAULT <scenario> key=value ...`` line
(:func:`figure`), so ``pytest -s tests/faults | grep '^FAULT'`` gives the README's table.
"""

from __future__ import annotations

import email.utils
import signal
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from httpx_sse import aconnect_sse

from actors.providers.fixtures import FixtureLibrary
from runtime.eventlog import entry_key
from runtime.reducer import ResponseReducer
from runtime.schema import TERMINAL_EVENT_TYPES, TERMINAL_STATUSES, StreamEvent
from tests.e2e.client import make_client, submit
from tests.e2e.server import ServerProcess, base_env, free_port
from tests.e2e.test_cody_serve import redis_servers_for

REDIS_SERVER = "/usr/bin/redis-server"
_FIXTURES = FixtureLibrary()
LONG = _FIXTURES.get("openai", "rapid_deltas")
"""1,008 blocks: ~10 s in flight at REPLAY_DELAY_S."""
SHORT = _FIXTURES.get("openai", "simple_message")
"""14 blocks: done in a fraction of a second."""
REPLAY_DELAY_S = "0.01"
KEEPALIVE_S = "1"
REQUEST_TIMEOUT = httpx.Timeout(3.0)
"""A plain request (ready, submit, get) must answer within this, Redis up or down."""
SSE_TIMEOUT = httpx.Timeout(5.0, read=10.0)
"""An SSE connection silent for 10 s (keep-alives come every second) counts as dropped."""
RECONNECT_S = 0.3
BACK_WITHIN_S = 5.0
"""Once Redis is back, /ready is 200 and a new run completes within this."""
SIGTERM_LIMIT_S = 15.0


# ---------------------------------------------------------------- processes


def redis_port() -> int:
    """A free port whose cluster bus port (+10000) is a valid port too."""
    while (port := free_port()) > 55535:
        pass
    return port


async def redis_ping(port: int) -> str | None:
    """The first reply line to PING on 127.0.0.1:port, or None if nothing answers."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return None
    async with stream:
        with trio.move_on_after(1):
            try:
                await stream.send_all(b"PING\r\n")
                reply = b""
                while not reply.endswith(b"\r\n"):
                    chunk = await stream.receive_some(256)
                    if not chunk:
                        return None
                    reply += chunk
                return reply.strip().decode(errors="replace")
            except (OSError, trio.BrokenResourceError):
                return None
    return None


@dataclass
class RedisProcess:
    """A ``redis-server`` of the test's own, restartable with the same arguments."""

    dir: Path
    port: int = field(default_factory=redis_port)
    proc: trio.Process | None = None

    @property
    def args(self) -> list[str]:
        return [REDIS_SERVER, "--save", "", "--appendonly", "yes", "--dir", str(self.dir),
                "--bind", "127.0.0.1", "--port", str(self.port)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    async def start(self, timeout_s: float = 10.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = await trio.lowlevel.open_process(
                self.args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        with trio.fail_after(timeout_s):
            while await redis_ping(self.port) != "+PONG":
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n"
                                       f"{self.log_path.read_text(errors='replace')}")
                await trio.sleep(0.05)

    async def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL
            await self.proc.wait()


@asynccontextmanager
async def running_redis(dir_: Path) -> AsyncIterator[RedisProcess]:
    redis = RedisProcess(dir_)
    try:
        await redis.start()
        yield redis
    finally:
        with trio.CancelScope(shield=True):
            await redis.kill9()


@asynccontextmanager
async def running_cody(data_dir: Path, env: dict[str, str],
                       port: int | None = None) -> AsyncIterator[ServerProcess]:
    """``cody serve``, ready (``/ready`` 200); stopped (SIGTERM, then SIGKILL) at the end.
    ``port``: a given one (a restart on the port its clients know), else a free one."""
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    server = ServerProcess(data_dir, env) if port is None else ServerProcess(data_dir, env, port)
    try:
        await trio.to_thread.run_sync(server.start, 60.0)
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.stop)


def cody_env(redis: RedisProcess | None = None, **extra: str) -> dict[str, str]:
    env = {"CODY_REPLAY": "1", "CODY_REPLAY_DELAY_S": REPLAY_DELAY_S,
           "CODY_KEY_PREFIX": f"stayup-{uuid.uuid4().hex[:12]}", "CODY_KEEPALIVE_S": KEEPALIVE_S,
           "CODY_LOG_LEVEL": "info"}
    if redis is not None:
        env["CODY_REDIS_URL"] = redis.url
    return base_env(**{**env, **extra})


async def eventually(check: Callable[[], Awaitable[bool]], limit_s: float, what: str,
                     interval_s: float = 0.05) -> float:
    """Poll ``check`` until it is true (another process's state: no event to wait on); how
    long it took. Fails naming ``what`` after ``limit_s``."""
    began = trio.current_time()
    with trio.move_on_after(limit_s):
        while not await check():  # noqa: ASYNC110 - polling another process
            await trio.sleep(interval_s)
        return trio.current_time() - began
    raise AssertionError(f"not within {limit_s:g} s: {what}")


def figure(scenario: str, **values: object) -> None:
    """Print the scenario's measured figures as one ``FAULT`` line (floats to 3 digits)."""
    shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())
    print(f"FAULT {scenario} {shown}", flush=True)


def stored_responses(data_dir: Path, run_ids: list[str]) -> dict[str, list[tuple[str, int]]]:
    """What the SQLite store in ``data_dir`` holds of each run: its rows' (status, seq). Read
    directly (read-only), so that nothing but the projector's writes is seen."""
    con = sqlite3.connect(f"file:{data_dir / 'cody.db'}?mode=ro", uri=True, timeout=5)
    try:
        out: dict[str, list[tuple[str, int]]] = {r: [] for r in run_ids}
        for run_id in run_ids:
            out[run_id] = [(str(status), int(seq)) for status, seq in con.execute(
                "SELECT status, seq FROM responses WHERE run_id = ?", (run_id,))]
        return out
    finally:
        con.close()


def log_tail(server: ServerProcess, lines: int = 60) -> str:
    return "server.log ends:\n" + "\n".join(server.log().splitlines()[-lines:])


async def embedded_redis_pids(data_dir: Path) -> list[int]:
    lines = await trio.to_thread.run_sync(redis_servers_for, data_dir)
    return [int(line.split()[0]) for line in lines]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def sigterm_and_wait(server: ServerProcess, limit_s: float) -> tuple[int | None, float]:
    """SIGTERM ``cody serve``; its exit code (None if still running after ``limit_s``) and
    how long it took to exit."""
    proc = server.proc
    assert proc is not None
    began = trio.current_time()
    proc.send_signal(signal.SIGTERM)
    with trio.move_on_after(limit_s):
        while True:
            if proc.poll() is not None:
                break
            await trio.sleep(0.02)
    return proc.poll(), trio.current_time() - began


async def assert_sigterm_exits_0(server: ServerProcess) -> float:
    """SIGTERM: exit code 0 within SIGTERM_LIMIT_S; how long it took."""
    code, took = await sigterm_and_wait(server, SIGTERM_LIMIT_S)
    assert code == 0, f"SIGTERM: exit code {code} after {took:.1f} s\n{log_tail(server)}"
    return took


# ---------------------------------------------------------------- streams


@dataclass
class Followed:
    """What a resuming client got of one run, over all its connections."""

    run_id: str
    ids: list[str] = field(default_factory=list)
    events: list[StreamEvent] = field(default_factory=list)
    outcomes: list[int | str] = field(default_factory=list)
    """Per connection: its HTTP status, or the transport error that ended it."""
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def terminal(self) -> StreamEvent | None:
        if self.events and self.events[-1].type in TERMINAL_EVENT_TYPES:
            return self.events[-1]
        return None

    def status(self) -> str:
        reducer = ResponseReducer()
        for ev in self.events:
            reducer.apply(ev)
        return reducer.snapshot().status


async def follow(client: httpx.AsyncClient, f: Followed) -> None:
    """Read the run's events to its terminal event, resuming after the last id seen whenever
    the connection drops or the server answers 5xx. Stops on a 204 (nothing after the cursor)
    or another 4xx. Bound it from outside."""
    try:
        while f.terminal is None:
            headers = {"Last-Event-ID": f.ids[-1]} if f.ids else {}
            try:
                async with aconnect_sse(client, "GET", f"/api/v2/runs/{f.run_id}/events",
                                        headers=headers, timeout=SSE_TIMEOUT) as source:
                    status = source.response.status_code
                    f.outcomes.append(status)
                    if status == 200:
                        async for sse in source.aiter_sse():
                            if not sse.data:
                                continue
                            ev = StreamEvent.model_validate_json(sse.data)
                            assert sse.event == ev.type, (sse.event, ev.type)
                            f.ids.append(sse.id)
                            f.events.append(ev)
                            if ev.type in TERMINAL_EVENT_TYPES:
                                return
                    elif status < 500:
                        return
            except httpx.TransportError as exc:
                f.outcomes.append(type(exc).__name__)
            await trio.sleep(RECONNECT_S)
    finally:
        f.done.set()


def check_stream(f: Followed) -> None:
    """No duplicate and no gap across reconnects; nothing after a terminal event."""
    seqs = [ev.seq for ev in f.events]
    dupes = sorted(s for s, n in Counter(seqs).items() if n > 1)
    assert not dupes, f"run {f.run_id}: duplicated seq {dupes[:10]} (outcomes {f.outcomes})"
    assert seqs == list(range(1, len(seqs) + 1)), \
        f"run {f.run_id}: seq not gapless 1..n: {seqs[:5]}...{seqs[-5:]} ({f.outcomes})"
    keys = [entry_key(i) for i in f.ids]
    assert keys == sorted(set(keys)), f"run {f.run_id}: entry ids not strictly increasing"
    terminals = [i for i, ev in enumerate(f.events) if ev.type in TERMINAL_EVENT_TYPES]
    assert terminals in ([], [len(f.events) - 1]), f"run {f.run_id}: events after the end"


async def wait_all(followed: list[Followed], deadline: float) -> float:
    """Until every follower is done or the deadline (``trio.current_time()``) passes; the
    time it returned at."""
    with trio.move_on_at(deadline):
        for f in followed:
            await f.done.wait()
    return trio.current_time()


async def reread(client: httpx.AsyncClient, run_id: str) -> Followed:
    """The run's whole stream read again from the start, on one fresh connection."""
    f = Followed(run_id)
    with trio.fail_after(30):
        await follow(client, f)
    return f


async def assert_nothing_lost(client: httpx.AsyncClient, followed: list[Followed]) -> int:
    """What each client was shown (every event is in Redis before it is shown) is still
    there, entry for entry, when the run's stream is read again after the fault: nothing
    acknowledged was lost. Returns how many events were compared."""
    compared = 0
    for f in followed:
        again = await reread(client, f.run_id)
        seen = list(zip(f.ids, (e.event_id for e in f.events), strict=True))
        now = list(zip(again.ids, (e.event_id for e in again.events), strict=True))
        assert now[:len(seen)] == seen, \
            f"run {f.run_id}: what the client was shown is not what Redis has now"
        compared += len(seen)
    return compared


# ---------------------------------------------------------------- requests


def long_body() -> dict[str, Any]:
    return {"prompt": LONG.prompt, "provider_id": LONG.provider, "model": LONG.model}


def short_body() -> dict[str, Any]:
    return {"prompt": SHORT.prompt, "provider_id": SHORT.provider, "model": SHORT.model}


async def start_long_runs(client: httpx.AsyncClient, n: int,
                          nursery: trio.Nursery) -> list[Followed]:
    followed = []
    for _ in range(n):
        accepted = await submit(client, **long_body())
        f = Followed(accepted["run_id"])
        nursery.start_soon(follow, client, f)
        followed.append(f)
    return followed


async def run_status(client: httpx.AsyncClient, run_id: str) -> str:
    try:
        r = await client.get(f"/api/v2/runs/{run_id}", timeout=REQUEST_TIMEOUT)
    except httpx.TransportError as exc:
        return type(exc).__name__
    return str(r.json()["status"]) if r.status_code == 200 else f"HTTP {r.status_code}"


async def wait_terminal_status(client: httpx.AsyncClient, run_id: str, deadline: float) -> str:
    """GET /runs/{id} until its status is terminal or the deadline passes; the last status."""
    status = await run_status(client, run_id)
    with trio.move_on_at(deadline):
        while status not in TERMINAL_STATUSES:
            await trio.sleep(0.25)
            status = await run_status(client, run_id)
    return status


async def assert_runs_ended(client: httpx.AsyncClient, server: ServerProcess,
                            followed: list[Followed], deadline: float) -> None:
    """Every stream is gapless; every run ended: a terminal event on its stream or a terminal
    status from GET; and none is left in_progress (GET shows a terminal status)."""
    for f in followed:
        check_stream(f)
    statuses = {f.run_id: await wait_terminal_status(client, f.run_id,
                                                     max(deadline, trio.current_time() + 2))
                for f in followed}
    stuck = {run_id: s for run_id, s in statuses.items() if s not in TERMINAL_STATUSES}
    endings = {f.run_id: (f.terminal.type if f.terminal else None, f.outcomes[-3:])
               for f in followed}
    assert not stuck, (f"runs not terminal: {stuck}\nstreams (last event, last outcomes): "
                       f"{endings}\n{log_tail(server)}")


async def ready_status(client: httpx.AsyncClient) -> tuple[int | str, Any]:
    try:
        r = await client.get("/api/v2/ready", timeout=REQUEST_TIMEOUT)
    except httpx.TransportError as exc:
        return type(exc).__name__, None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


async def assert_redis_unavailable(client: httpx.AsyncClient, server: ServerProcess) -> None:
    """What a client sees while Redis is down: /ready 503 REDIS_UNAVAILABLE (JSON), POST
    /runs 503 with a Retry-After header, and the listener still answering."""
    status, body = await ready_status(client)
    assert status == 503, f"/ready during the outage: {status} {body}\n{log_tail(server)}"
    assert isinstance(body, dict) and body["error"]["code"] == "REDIS_UNAVAILABLE", body
    r = await client.post("/api/v2/runs", json=short_body(), timeout=REQUEST_TIMEOUT)
    assert r.status_code == 503, f"POST /runs during the outage: {r.status_code} {r.text}"
    assert "error" in r.json(), r.text
    retry_after = r.headers.get("retry-after")
    assert retry_after, f"503 without Retry-After: {dict(r.headers)}"
    assert retry_after.isdigit() or email.utils.parsedate_to_datetime(retry_after), retry_after
    r = await client.get("/api/v2/health", timeout=REQUEST_TIMEOUT)
    assert r.status_code == 200, r.text


async def assert_back(client: httpx.AsyncClient, server: ServerProcess,
                      since: float) -> tuple[float, float]:
    """Within BACK_WITHIN_S of ``since`` (when Redis came back): /ready 200, and a new run
    (submitted again on 503) streams to response_done, status complete. Returns how long
    after ``since`` each happened."""
    ready_at = new_done_at = None
    new = Followed("")
    with trio.move_on_after(BACK_WITHIN_S + 15):  # room to measure how late it is
        while True:
            if (await ready_status(client))[0] == 200:
                break
            await trio.sleep(0.05)
        ready_at = trio.current_time() - since
        while True:
            try:
                r = await client.post("/api/v2/runs", json=short_body(), timeout=REQUEST_TIMEOUT)
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 202:
                break
            assert r is None or r.status_code == 503, f"POST /runs: {r.status_code} {r.text}"
            await trio.sleep(0.1)
        new.run_id = r.json()["run_id"]
        await follow(client, new)
        new_done_at = trio.current_time() - since
    assert ready_at is not None and ready_at <= BACK_WITHIN_S, \
        f"/ready 200 {ready_at} s after Redis came back\n{log_tail(server)}"
    assert new_done_at is not None and new_done_at <= BACK_WITHIN_S, \
        (f"new run done {new_done_at} s after Redis came back (events {len(new.events)}, "
         f"outcomes {new.outcomes})\n{log_tail(server)}")
    check_stream(new)
    assert new.terminal is not None and new.terminal.type == "response_done", new.outcomes
    assert new.status() == "complete", new.status()
    return ready_at, new_done_at


# ---------------------------------------------------------------- the outage scenario


async def external_redis_outage(tmp_path: Path, outage_s: float, *, runs: int = 10,
                                end_within_s: float, **env: str) -> dict[str, object]:
    """``runs`` long runs streaming through resuming clients; ~1 s in, kill -9 Redis; check
    the server while it is down (every second for long outages: /ready 503, RSS); restart
    Redis with the same arguments (same AOF) after ``outage_s``; then it is back within
    BACK_WITHIN_S, every run ends within ``end_within_s`` of the restart, nothing a client was
    shown is missing from Redis, the server still listens, and SIGTERM exits 0. Returns the
    figures."""
    async with running_redis(tmp_path / "redis") as redis, \
            running_cody(tmp_path / "cody", cody_env(redis, **env)) as server, \
            make_client(server.base_url) as client:
        assert server.proc is not None
        with trio.fail_after(outage_s + end_within_s + 60):
            async with trio.open_nursery() as nursery:
                followed = await start_long_runs(client, runs, nursery)
                await trio.sleep(1.0)
                assert all(f.events and f.terminal is None for f in followed), \
                    "the runs are not streaming, or already over, 1 s in"
                rss_before = rss_mb(server.proc.pid)
                await redis.kill9()
                killed = trio.current_time()
                await trio.sleep(0.3)
                await assert_redis_unavailable(client, server)
                rss_peak, ready_seen = rss_before, []
                while trio.current_time() < killed + outage_s - 1:
                    await trio.sleep(1.0)
                    rss_peak = max(rss_peak, rss_mb(server.proc.pid))
                    ready_seen.append((await ready_status(client))[0])
                await trio.sleep_until(killed + outage_s)
                assert server.proc.poll() is None, f"cody exited\n{log_tail(server)}"
                assert set(ready_seen) <= {503}, f"/ready during the outage: {ready_seen}"
                assert rss_peak - rss_before <= 50, \
                    f"RSS grew {rss_before:.0f} -> {rss_peak:.0f} MB during the outage"
                if outage_s >= 10:
                    await assert_redis_unavailable(client, server)
                restarted = trio.current_time()
                await redis.start()
                ready_s, new_run_s = await assert_back(client, server, restarted)
                all_done = await wait_all(followed, restarted + end_within_s)
                nursery.cancel_scope.cancel()
            await assert_runs_ended(client, server, followed, restarted + end_within_s)
            compared = await assert_nothing_lost(client, followed)
            r = await client.get("/api/v2/health", timeout=REQUEST_TIMEOUT)
            assert r.status_code == 200, r.text
            sigterm_s = await assert_sigterm_exits_0(server)
    endings = Counter(f.status() for f in followed)
    return {"runs": runs, "outage_s": outage_s, "ready_503": len(ready_seen) + 1,
            "rss_growth_mb": rss_peak - rss_before, "ready_after_s": ready_s,
            "new_run_done_s": new_run_s, "all_ended_after_s": all_done - restarted,
            "endings": ",".join(f"{k}:{v}" for k, v in sorted(endings.items())),
            "events_kept": compared, "sigterm_exit_s": sigterm_s}
