"""``CODY_WORKERS`` / ``--workers`` and ``CODY_TAIL_POLL_MS``, and what a worker is given."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from actors.workers import hold_port, worker_env
from runtime.config import RuntimeConfig
from runtime.keys import Keys


def test_workers_and_tail_poll_are_configurable() -> None:
    default = RuntimeConfig()
    assert (default.workers, default.tail_poll_ms) == (1, 10)
    cfg = RuntimeConfig.from_env({"CODY_WORKERS": "4", "CODY_TAIL_POLL_MS": "25"})
    assert (cfg.workers, cfg.tail_poll_ms) == (4, 25)
    with pytest.raises(ValidationError):
        RuntimeConfig(workers=0)


def test_a_worker_gets_every_resolved_setting(tmp_path: Path) -> None:
    cfg = RuntimeConfig(data_dir=tmp_path, host="127.0.0.1", port=0, replay=False,
                        exec_enabled=True, workspace_root=tmp_path, workers=3)
    env = worker_env(cfg, redis_url="unix:///x/redis.sock", port=8123,
                     base={"PATH": "/bin", "CODY_REDIS_URL": "ignored"}, log_level="info")
    again = RuntimeConfig.from_env(env)
    assert env["PATH"] == "/bin"
    assert (again.redis_url, again.port, again.data_dir, again.replay, again.exec_enabled,
            again.workers) == ("unix:///x/redis.sock", 8123, tmp_path, False, True, 3)


def test_the_held_port_lets_workers_bind_it() -> None:
    held = hold_port("127.0.0.1", 0)
    try:
        port = held.getsockname()[1]
        worker = socket.socket()
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))  # what Hypercorn does with workers > 1
        worker.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            conn, _ = worker.accept()  # the listening worker takes it, not the holder
            conn.close()
        worker.close()
    finally:
        held.close()


def test_a_node_control_stream_sits_with_its_lease() -> None:
    keys = Keys("cody")
    assert keys.node_control("n1") == "cody:node:{n1}:control"
    assert keys.node_lease("n1") == "cody:node:{n1}:lease"
