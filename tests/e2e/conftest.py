"""End-to-end fixtures: a real ``cody serve`` process per test (or per module), on a free TCP
port, against the real Redis on 127.0.0.1:6379 with its own key prefix and its own data dir.

``server`` runs each test twice: in replay mode, and in live mode with the real provider
clients pointed at the fake provider server (tests/fake_provider.py), which streams the same
recordings over HTTP.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.server import WORKSPACE, ServerProcess, base_env
from tests.fake_provider import FakeProvider

StartServer = Callable[..., ServerProcess]


def _drop_keys(prefix: str) -> None:
    """Delete the test's keys (SCAN MATCH: fine in tests, never in the runtime)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        keys = subprocess.run(["redis-cli", "-h", "127.0.0.1", "--scan", "--pattern",
                               f"{prefix}:*"], capture_output=True, text=True,
                              timeout=20).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "-h", "127.0.0.1", "del", *keys[i:i + 500]],
                           capture_output=True, timeout=20)


@contextlib.contextmanager
def _servers(tmp_path: Path) -> Iterator[StartServer]:
    """Starts servers on demand; stops them, drops their keys and closes their fakes after."""
    servers: list[ServerProcess] = []
    fakes: list[FakeProvider] = []

    def start(mode: str = "replay", fake: FakeProvider | None = None,
              **env: str) -> ServerProcess:
        data_dir = tmp_path / f"server-{len(servers)}"
        data_dir.mkdir()
        defaults = {
            "CODY_REDIS_URL": "redis://127.0.0.1:6379/0",
            "CODY_KEY_PREFIX": f"e2e-{uuid.uuid4().hex[:12]}",
            "CODY_REPLAY": "1",
            "CODY_REPLAY_RECORD_REQUESTS": "1",  # tests/e2e/client.py's sent_requests reads it
            "CODY_EXEC": "1",
            "CODY_WORKSPACE": str(WORKSPACE),
            "CODY_TOOL_TIMEOUT_S": "1",
            "CODY_RETENTION_S": "300",
            "CODY_LOG_LEVEL": "info",
        }
        if mode == "live":
            if fake is None:
                fake = FakeProvider().__enter__()
                fakes.append(fake)
            defaults.update({
                "CODY_REPLAY": "0",
                "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.openai_base_url,
                "ANTHROPIC_API_KEY": fake.api_key,
                "ANTHROPIC_BASE_URL": fake.anthropic_base_url,
            })
        server = ServerProcess(data_dir, base_env(**{**defaults, **env}))
        server.fake = fake  # type: ignore[attr-defined]
        server.mode = mode  # type: ignore[attr-defined]
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
        _drop_keys(server.env["CODY_KEY_PREFIX"])
    for fake in fakes:
        fake.__exit__(None, None, None)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    with _servers(tmp_path) as start:
        yield start


@pytest.fixture(params=["replay", "live"])
def server(request: pytest.FixtureRequest, start_server: StartServer) -> ServerProcess:
    return start_server(request.param)


@pytest.fixture(scope="module", params=["replay", "live"])
def module_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per module and mode, for tests that only submit and read their own runs:
    starting ``cody serve`` costs seconds, a run milliseconds. A test that stops, kills or
    reconfigures its server takes ``start_server`` instead."""
    with _servers(tmp_path_factory.mktemp("module-server")) as start:
        yield start(request.param)
