"""End-to-end fixtures: a real ``cody serve`` process per test, on a free TCP port, against the
real Redis on 127.0.0.1:6379 with its own key prefix and its own data dir."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.server import WORKSPACE, ServerProcess, base_env

StartServer = Callable[..., ServerProcess]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    servers: list[ServerProcess] = []

    def start(**env: str) -> ServerProcess:
        data_dir = tmp_path / f"server-{len(servers)}"
        data_dir.mkdir()
        defaults = {
            "CODY_REDIS_URL": "redis://127.0.0.1:6379/0",
            "CODY_KEY_PREFIX": f"e2e-{uuid.uuid4().hex[:12]}",
            "CODY_REPLAY": "1",
            "CODY_EXEC": "1",
            "CODY_WORKSPACE": str(WORKSPACE),
            "CODY_TOOL_TIMEOUT_S": "1",
            "CODY_LOG_LEVEL": "info",
        }
        server = ServerProcess(data_dir, base_env(**{**defaults, **env}))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server()
