"""One ``cody serve`` for a test module of the console or the CLI: replay mode playing
``tests/console_fixture.py`` slowly (a run lasts a few seconds), on the real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.console_fixture import MODEL, write_console_fixtures
from tests.e2e.conftest import _drop_keys
from tests.e2e.server import WORKSPACE, ServerProcess, base_env


@contextmanager
def console_server(root: Path, *, delay_s: float = 0.05,
                   **env: str) -> Iterator[ServerProcess]:
    fixtures = write_console_fixtures(root / "fixtures")
    data = root / "data"
    data.mkdir()
    prefix = f"e2e-console-{uuid.uuid4().hex[:12]}"
    proc = ServerProcess(data, base_env(
        CODY_REDIS_URL="redis://127.0.0.1:6379/0", CODY_KEY_PREFIX=prefix, CODY_REPLAY="1",
        CODY_FIXTURES_DIR=str(fixtures), CODY_REPLAY_DELAY_S=str(delay_s),
        CODY_WORKSPACE=str(WORKSPACE), CODY_DEFAULT_PROVIDER="anthropic",
        CODY_DEFAULT_MODEL=MODEL, CODY_RETENTION_S="300", CODY_LOG_LEVEL="info", **env))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        _drop_keys(prefix)
