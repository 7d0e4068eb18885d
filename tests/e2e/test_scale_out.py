"""Scale-out end to end, with real processes (SPEC §13, issue 12).

- Two ``cody serve`` nodes on a 3-master Redis Cluster and PostgreSQL: the acceptance
  conditions through node A (TC-HP-01/02/05/09, TC-ER-01/06 where the engines matter), and a
  run submitted on A streamed, resumed, read and cancelled from B over HTTP.
- Three nodes on one Redis and PostgreSQL under load, one SIGKILLed: every run terminal within
  lease + janitor interval + 1 s, every client resumed on a survivor with no gap and no
  duplicate, every Response stored once.
- ``cody serve --workers 2``: runs stream through one port and both workers take connections,
  SQLite in WAL mode, a killed worker is replaced, SIGTERM drains them all, and a kill -9 of
  the parent leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import trio
from httpx_sse import aconnect_sse

from actors.providers.fixtures import FixtureLibrary
from runtime.eventlog import EventLog, open_redis
from runtime.keys import Keys
from runtime.redis_server import socket_path_for
from runtime.reducer import rebuild
from runtime.schema import StreamEvent
from tests.conftest import TCP_REDIS_URL, postgres_schema, postgres_url_for
from tests.e2e.client import make_client, stream, submit, wait_persisted
from tests.e2e.conftest import _drop_keys
from tests.e2e.server import WORKSPACE, ServerProcess, base_env
from tests.e2e.test_conditions import _resume_checks, run_fixture
from tests.faults.kit import figure
from tests.harness import response_view

LIBRARY = FixtureLibrary()
LEASE_TTL_S = 3
JANITOR_INTERVAL_S = 0.5


def node_env(prefix: str, redis_url: str, store_url: str | None, **more: str) -> dict[str, str]:
    env = {"CODY_REDIS_URL": redis_url, "CODY_KEY_PREFIX": prefix, "CODY_REPLAY": "1",
           "CODY_EXEC": "1", "CODY_WORKSPACE": str(WORKSPACE), "CODY_TOOL_TIMEOUT_S": "1",
           "CODY_RETENTION_S": "300", "CODY_LOG_LEVEL": "info",
           "CODY_LEASE_TTL_S": str(LEASE_TTL_S),
           "CODY_JANITOR_INTERVAL_S": str(JANITOR_INTERVAL_S), **more}
    if store_url is not None:
        env["CODY_STORE_URL"] = store_url
    return base_env(**env)


def start_all(servers: list[ServerProcess]) -> list[ServerProcess]:
    """Start them side by side (a start takes seconds on a loaded machine)."""
    for s in servers:
        s.log_path = s.data_dir / "server.log"
        env = {**s.env, "CODY_PORT": str(s.port), "CODY_DATA_DIR": str(s.data_dir)}
        s.proc = subprocess.Popen(s.argv, cwd=s.cwd, env=env, stdout=s.log_path.open("wb"),
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    for s in servers:
        while True:
            assert s.proc is not None
            if s.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cody serve did not start:\n{s.log()}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{s.base_url}/api/v2/ready", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
    return servers


def children_of(pid: int) -> set[int]:
    out: set[int] = set()
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out |= {int(c) for c in f.read().split()}
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except OSError:
        return False


def worker_pids(parent: int) -> set[int]:
    found = set()
    for pid in children_of(parent):
        with suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"--worker-fd" in f.read():
                found.add(pid)
    return found


def fresh_client(base_url: str) -> httpx.AsyncClient:
    """No keep-alive: each request a new connection, so the kernel picks a worker each time."""
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0, read=None),
                             limits=httpx.Limits(max_keepalive_connections=0))


# ---------------------------------------------------------------------- two nodes, cluster + PG


@pytest.fixture(scope="module")
def cluster_nodes(cluster_redis_url: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[list[ServerProcess]]:
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    root = tmp_path_factory.mktemp("cluster-nodes")
    with postgres_schema() as schema:
        servers = []
        for name in ("a", "b"):
            (root / name).mkdir()
            servers.append(ServerProcess(root / name, node_env(
                prefix, cluster_redis_url, postgres_url_for(schema),
                CODY_REPLAY_DELAY_S="0.002", CODY_REPLAY_RECORD_REQUESTS="1")))
        try:
            yield start_all(servers)
        finally:
            for s in servers:
                s.stop()


@pytest.mark.parametrize("name", ["openai/simple_message", "anthropic/simple_message",
                                  "openai/tool_read_file", "openai/provider_error"])
async def test_conditions_on_cluster_and_postgres(cluster_nodes: list[ServerProcess],
                                                  name: str) -> None:
    """TC-HP-01, 02, 05 and TC-ER-01 on a Redis Cluster with the PostgreSQL store."""
    provider, fixture = name.split("/")
    fx = LIBRARY.get(provider, fixture)
    with trio.fail_after(60):
        live, persisted, _ = await run_fixture(cluster_nodes[0], fx)
    assert live == persisted == fx.expected


async def test_hp09_resume_on_cluster_and_postgres(cluster_nodes: list[ServerProcess]) -> None:
    await _resume_checks(cluster_nodes[1])


async def test_submit_on_a_stream_resume_read_and_cancel_on_b(
        cluster_nodes: list[ServerProcess]) -> None:
    a, b = cluster_nodes
    fx = LIBRARY.get("openai", "rapid_deltas")
    with trio.fail_after(90):
        async with make_client(a.base_url) as on_a, make_client(b.base_url) as on_b:
            accepted = await submit(on_a, prompt=fx.prompt, provider_id="openai",
                                    model=fx.model)
            run_id = accepted["run_id"]
            first = await stream(on_b, run_id, stop_after=5)
            rest = await stream(on_b, run_id, last_event_id=first.ids[-1])
            events = first.events + rest.events
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert response_view(rebuild(events)) == fx.expected
            assert (await stream(on_b, run_id, last_event_id=rest.ids[-1])).status_code == 204
            persisted = await wait_persisted(on_b, accepted["thread_id"], run_id)
            got = (await on_b.get(f"/api/v2/runs/{run_id}")).json()
            assert got == (await on_a.get(f"/api/v2/runs/{run_id}")).json()
            assert response_view(persisted) == fx.expected

            # cancel from B: the owner (A) ends it, B answers with the aborted Response
            slow = await submit(on_a, prompt=fx.prompt, provider_id="openai", model=fx.model)
            seen = await stream(on_b, slow["run_id"], stop_after=3)
            r = await on_b.post(f"/api/v2/runs/{slow['run_id']}/cancel")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "aborted"
            after = await stream(on_b, slow["run_id"], last_event_id=seen.ids[-1])
            assert [e.type for e in after.events][-2:] == ["turn_aborted_by_user",
                                                          "response_done"]
            assert (await on_a.get(f"/api/v2/runs/{slow['run_id']}")).json()["status"] == \
                "aborted"
            unknown = str(uuid.uuid4())
            assert (await on_b.get(f"/api/v2/runs/{unknown}")).status_code == 404
            assert (await on_b.get(f"/api/v2/runs/{unknown}/events")).status_code == 404


# ---------------------------------------------------------------------- three nodes, one killed


class Client:
    """One run's SSE client that resumes on the next live node when its connection drops."""

    def __init__(self, run_id: str, nodes: list[ServerProcess], first: int) -> None:
        self.run_id = run_id
        self.nodes = nodes
        self.at = first
        self.ids: list[str] = []
        self.events: list[StreamEvent] = []
        self.resumes = 0
        self.ended_at: float | None = None

    async def run(self, dead: set[int]) -> None:
        while self.ended_at is None:
            while self.at in dead:
                self.at = (self.at + 1) % len(self.nodes)
                self.resumes += 1
            headers = {"Last-Event-ID": self.ids[-1]} if self.ids else {}
            try:
                async with make_client(self.nodes[self.at].base_url) as client, \
                        aconnect_sse(client, "GET", f"/api/v2/runs/{self.run_id}/events",
                                     headers=headers) as source:
                    assert source.response.status_code == 200
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        ev = StreamEvent.model_validate_json(sse.data)
                        self.ids.append(sse.id)
                        self.events.append(ev)
                        if ev.type in ("response_done", "response_error"):
                            self.ended_at = trio.current_time()
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                await trio.sleep(0.05)
                if self.at not in dead:
                    self.at = (self.at + 1) % len(self.nodes)
                    self.resumes += 1


@pytest.fixture
def three_nodes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    with postgres_schema() as schema:
        servers = []
        for i in range(3):
            (tmp_path / f"n{i}").mkdir()
            servers.append(ServerProcess(tmp_path / f"n{i}", node_env(
                prefix, TCP_REDIS_URL, postgres_url_for(schema), CODY_REPLAY_DELAY_S="0.008")))
        try:
            yield start_all(servers)
        finally:
            for s in servers:
                s.stop()
            _drop_keys(prefix)


async def test_three_nodes_one_sigkilled_under_load(three_nodes: list[ServerProcess]) -> None:
    fx = LIBRARY.get("openai", "rapid_deltas")
    nodes = three_nodes
    dead: set[int] = set()
    runs: list[tuple[str, str, int]] = []  # run id, thread id, owner node
    with trio.fail_after(120):
        for i in range(24):
            async with make_client(nodes[i % 3].base_url) as client:
                accepted = await submit(client, prompt=fx.prompt, provider_id="openai",
                                        model=fx.model)
            runs.append((accepted["run_id"], accepted["thread_id"], i % 3))
        clients = [Client(run_id, nodes, (owner + 1 + k % 2) % 3)
                   for k, (run_id, _, owner) in enumerate(runs)]
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(c.run, dead)
            for _ in range(600):  # every client is streaming
                if all(len(c.events) >= 5 for c in clients):
                    break
                await trio.sleep(0.05)
            assert not any(c.ended_at for c in clients), "runs too short to kill one mid-way"
            assert nodes[0].proc is not None
            nodes[0].proc.kill()
            killed_at, killed_wall_ms = trio.current_time(), time.time() * 1000
            dead.add(0)
        bound = LEASE_TTL_S + JANITOR_INTERVAL_S + 1
        orphaned = 0
        endings: list[tuple[float, float]] = []
        async with make_client(nodes[1].base_url) as survivor:
            for c, (run_id, thread_id, owner) in zip(clients, runs, strict=True):
                seqs = [e.seq for e in c.events]
                assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate in {run_id}"
                assert len(set(c.ids)) == len(c.ids)
                terminal = [e for e in c.events if e.type in ("response_done",
                                                              "response_error")]
                assert len(terminal) == 1 and terminal[0] is c.events[-1]
                resp = rebuild(c.events)
                if owner == 0 and resp.status != "complete":  # not ended before the kill
                    orphaned += 1
                    assert resp.status == "error"
                    assert resp.error is not None and resp.error.code == "RUN_ORPHANED"
                    # written (the ending's own timestamp) within the bound, and seen soon
                    written_s = (terminal[0].timestamp - killed_wall_ms) / 1000
                    assert c.ended_at is not None
                    endings.append((written_s, c.ended_at - killed_at))
                    assert written_s <= bound, f"{run_id} ended {written_s:.2f} s after the kill"
                else:
                    assert response_view(resp) == fx.expected, (owner, resp.status, resp.error)
                stored = await wait_persisted(survivor, thread_id, run_id)
                assert response_view(stored) == response_view(resp)
                thread = (await survivor.get(f"/api/v2/threads/{thread_id}")).json()
                assert [r["id"] for r in thread["runs"]] == [run_id]  # stored once
        print("orphan endings after the kill (written s, seen by the client s):",
              sorted(endings))
        assert orphaned >= 6  # of node 0's 8 runs (one may have just ended as it died)
        assert sum(c.resumes for c in clients) >= 1
        assert all(c.at != 0 for c in clients)


# ---------------------------------------------------------------------- --workers 2


def workers_server(root: Path, **env: str) -> ServerProcess:
    return ServerProcess(root, base_env(
        CODY_REPLAY="1", CODY_WORKSPACE=str(WORKSPACE), CODY_LOG_LEVEL="info",
        CODY_LEASE_TTL_S=str(LEASE_TTL_S), CODY_JANITOR_INTERVAL_S=str(JANITOR_INTERVAL_S),
        **env), argv=[sys.executable, "-m", "api.cli", "serve", "--workers", "2"])


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = workers_server(tmp_path_factory.mktemp("workers"))
    start_all([server])
    assert server.proc is not None
    try:
        yield server
    finally:
        everyone = children_of(server.proc.pid)
        assert server.stop() == 0  # SIGTERM: every worker drained, Redis stopped
        deadline = time.monotonic() + 10
        while any(alive(p) for p in everyone) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(alive(p) for p in everyone)


def node_of(server: ServerProcess, run_id: str) -> str:
    sock = socket_path_for(server.data_dir)
    out = subprocess.run(["redis-cli", "-s", str(sock), "hget", f"cody:run:{{{run_id}}}:meta",
                          "node"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip()


async def test_workers_share_one_port(two_workers: ServerProcess) -> None:
    server = two_workers
    assert server.proc is not None and len(worker_pids(server.proc.pid)) == 2
    fixtures = [LIBRARY.get("openai", "simple_message"), LIBRARY.get("anthropic",
                                                                      "tool_read_file")]
    with trio.fail_after(60):
        async with fresh_client(server.base_url) as client:
            accepted = [await submit(client, prompt=fx.prompt, provider_id=fx.provider,
                                     model=fx.model, tools=list(fx.tools))
                        for fx in fixtures * 8]
            for fx, acc in zip(fixtures * 8, accepted, strict=True):
                got = await stream(client, acc["run_id"])
                assert response_view(got.reduce()) == fx.expected
                persisted = await wait_persisted(client, acc["thread_id"], acc["run_id"])
                assert response_view(persisted) == fx.expected
    assert len({node_of(server, a["run_id"]) for a in accepted}) == 2  # both took submits
    import sqlite3

    with sqlite3.connect(server.data_dir / "cody.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_killed_worker_is_replaced(two_workers: ServerProcess) -> None:
    server = two_workers
    assert server.proc is not None
    before = worker_pids(server.proc.pid)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    with trio.fail_after(60):
        while True:
            now = worker_pids(server.proc.pid)
            if len(now) == 2 and victim not in now:
                break
            await trio.sleep(0.1)
        fx = LIBRARY.get("openai", "simple_message")
        async with fresh_client(server.base_url) as client:
            for _ in range(6):  # served through the port, by either worker
                acc = await submit(client, prompt=fx.prompt, provider_id="openai",
                                   model=fx.model)
                got = await stream(client, acc["run_id"])
                assert response_view(got.reduce()) == fx.expected


def test_kill_9_of_the_parent_leaves_nothing(tmp_path: Path) -> None:
    server = workers_server(tmp_path)
    start_all([server])
    assert server.proc is not None
    everyone = children_of(server.proc.pid)
    assert len(everyone) == 3  # redis-server and two workers
    server.proc.kill()
    server.proc.wait()
    deadline = time.monotonic() + 20  # the workers drain (their Redis is gone) and exit
    while any(alive(p) for p in everyone) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in everyone)


# ---------------------------------------------------------------------- a node stalls (SIGSTOP)


STALL_READ_TIMEOUT_S = 2.5
"""A client's SSE read silent this long counts as a stalled node (keep-alives come every
second): it resumes on another node, as a real client with a read timeout would."""


class StallClient(Client):
    """``Client``, with a read timeout: a SIGSTOPped node does not drop its connections, it
    goes silent."""

    async def run(self, dead: set[int]) -> None:
        timeout = httpx.Timeout(30.0, read=STALL_READ_TIMEOUT_S)
        while self.ended_at is None:
            while self.at in dead:
                self.at = (self.at + 1) % len(self.nodes)
                self.resumes += 1
            headers = {"Last-Event-ID": self.ids[-1]} if self.ids else {}
            at = self.at
            try:
                async with httpx.AsyncClient(base_url=self.nodes[at].base_url,
                                             timeout=timeout) as client, \
                        aconnect_sse(client, "GET", f"/api/v2/runs/{self.run_id}/events",
                                     headers=headers) as source:
                    assert source.response.status_code == 200
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        ev = StreamEvent.model_validate_json(sse.data)
                        self.ids.append(sse.id)
                        self.events.append(ev)
                        if ev.type in ("response_done", "response_error"):
                            self.ended_at = trio.current_time()
                            return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                await trio.sleep(0.05)
                if self.at == at:
                    self.at = (self.at + 1) % len(self.nodes)
                    self.resumes += 1


@pytest.fixture
def three_stall_nodes(tmp_path: Path) -> Iterator[tuple[list[ServerProcess], str]]:
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    with postgres_schema() as schema:
        servers = []
        for i in range(3):
            (tmp_path / f"n{i}").mkdir()
            servers.append(ServerProcess(tmp_path / f"n{i}", node_env(
                prefix, TCP_REDIS_URL, postgres_url_for(schema), CODY_REPLAY_DELAY_S="0.008",
                CODY_KEEPALIVE_S="1")))
        try:
            yield start_all(servers), prefix
        finally:
            for s in servers:
                if s.proc is not None and s.proc.poll() is None:
                    s.proc.send_signal(signal.SIGCONT)  # never leave it stopped
                s.stop()
            _drop_keys(prefix)


async def test_three_nodes_one_sigstopped_past_its_lease_is_fenced(
        three_stall_nodes: tuple[list[ServerProcess], str]) -> None:
    """Node loss without death (issue 12): node 0 is SIGSTOPped for longer than its lease +
    the janitor interval + 1 s while its paced runs stream, then SIGCONTed. The others'
    janitors end its runs RUN_ORPHANED; when it wakes its actors' appends are refused and they
    stop. Per run: one terminal event and nothing after it in Redis, no gap and no duplicate
    for clients that resumed on a survivor, the Response stored once; node 0 still answers
    /health and completes a new run."""
    nodes, prefix = three_stall_nodes
    fx = LIBRARY.get("openai", "rapid_deltas")
    short = LIBRARY.get("openai", "simple_message")
    dead: set[int] = set()
    runs: list[tuple[str, str, int]] = []  # run id, thread id, owner node
    bound = LEASE_TTL_S + JANITOR_INTERVAL_S + 1
    stall_s = bound + 1.0
    victim = nodes[0].proc
    assert victim is not None
    with trio.fail_after(150):
        for i in range(24):
            async with make_client(nodes[i % 3].base_url) as client:
                accepted = await submit(client, prompt=fx.prompt, provider_id="openai",
                                        model=fx.model)
            runs.append((accepted["run_id"], accepted["thread_id"], i % 3))
        # every run has a client on a node other than its owner: node 0's runs are watched
        # from the survivors, and some clients of the others' runs are on node 0
        clients = [StallClient(run_id, nodes, (owner + 1 + k % 2) % 3)
                   for k, (run_id, _, owner) in enumerate(runs)]
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(c.run, dead)
            for _ in range(600):  # every client is streaming
                if all(len(c.events) >= 5 for c in clients):
                    break
                await trio.sleep(0.05)
            assert not any(c.ended_at for c in clients), "runs too short to stall one mid-way"
            victim.send_signal(signal.SIGSTOP)
            stopped_at, stopped_wall_ms = trio.current_time(), time.time() * 1000
            dead.add(0)
            await trio.sleep(stall_s)
            victim.send_signal(signal.SIGCONT)
            resumed_at = trio.current_time()
        # every client has its terminal event (the nursery waited for them)
        await trio.sleep(3.0)  # node 0 is awake: its actors tried their next appends by now
        orphaned = 0
        endings: list[float] = []
        async with open_redis(TCP_REDIS_URL, 4) as writer, open_redis(TCP_REDIS_URL, 2) as reader, \
                make_client(nodes[1].base_url) as survivor:
            log = EventLog(writer, reader, Keys(prefix))
            for c, (run_id, thread_id, owner) in zip(clients, runs, strict=True):
                seqs = [e.seq for e in c.events]
                assert seqs == list(range(1, len(seqs) + 1)), f"gap or duplicate in {run_id}"
                assert len(set(c.ids)) == len(c.ids)
                terminal = [e for e in c.events if e.type in ("response_done",
                                                              "response_error")]
                assert len(terminal) == 1 and terminal[0] is c.events[-1]
                # Redis: the same entries, the terminal one last, nothing after it
                entries = await log.read_all(run_id)
                assert [i for i, _ in entries] == c.ids, f"{run_id}: Redis has more"
                resp = rebuild(c.events)
                if owner == 0 and resp.status != "complete":  # not ended before the stall
                    orphaned += 1
                    assert resp.status == "error"
                    assert resp.error is not None and resp.error.code == "RUN_ORPHANED"
                    written_s = (terminal[0].timestamp - stopped_wall_ms) / 1000
                    endings.append(written_s)
                    assert written_s <= bound, f"{run_id} ended {written_s:.2f} s after the stop"
                    meta = await log.get_meta(run_id)
                    assert meta["status"] == "error" and meta["ended_by"] != meta["node"]
                else:
                    assert response_view(resp) == fx.expected, (owner, resp.status, resp.error)
                stored = await wait_persisted(survivor, thread_id, run_id)
                assert response_view(stored) == response_view(resp)
                thread = (await survivor.get(f"/api/v2/threads/{thread_id}")).json()
                assert [r["id"] for r in thread["runs"]] == [run_id]  # stored once
        assert orphaned >= 6  # of node 0's 8 runs
        assert sum(c.resumes for c in clients) >= 1
        # node 0 serves on: /health, and a new run to its end
        async with make_client(nodes[0].base_url) as client:
            assert (await client.get("/api/v2/health")).status_code == 200
            began = trio.current_time()
            accepted = await submit(client, prompt=short.prompt, provider_id="openai",
                                    model=short.model)
            got = await stream(client, accepted["run_id"])
            new_run_s = trio.current_time() - began
            assert response_view(rebuild(got.events)) == short.expected
            stored = await wait_persisted(client, accepted["thread_id"], accepted["run_id"])
            assert stored.status == "complete"
        server_log = nodes[0].log()
        fenced = server_log.count("fenced: another node ended it")
        assert fenced >= 1, log_tail_of(nodes[0])
        assert server_log.count("lease had lapsed") == 1, log_tail_of(nodes[0])
        figure("node_stall", stopped_s=resumed_at - stopped_at, lease_s=LEASE_TTL_S,
               janitor_s=JANITOR_INTERVAL_S, runs=len(runs), orphaned=orphaned, fenced=fenced,
               ending_max_s=max(endings), ending_min_s=min(endings),
               resumes=sum(c.resumes for c in clients), new_run_s=new_run_s)


def log_tail_of(server: ServerProcess, lines: int = 40) -> str:
    return "server.log ends:\n" + "\n".join(server.log().splitlines()[-lines:])
