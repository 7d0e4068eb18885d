"""``cody serve --workers N``: N nodes on one port, one Redis, one store, one parent.

One Python process is one core; a machine has more. The parent process runs no runtime of
its own. It:

1. starts the embedded redis-server once (unless ``CODY_REDIS_URL`` names one), and passes its
   URL on to every worker, which therefore starts none;
2. opens the store once, so that the SQLite file exists, is migrated and is in WAL mode
   before N processes open it (WAL: readers beside the one writer, each write a
   ``BEGIN IMMEDIATE``, a busy timeout; runtime/store/sqlite.py), and a bad store URL fails
   here, once;
3. binds the port with ``SO_REUSEPORT`` (never listening on it: it only holds the port, and
   picks one for ``--port 0``); each worker binds its own listening socket to it with
   ``SO_REUSEPORT`` too (Hypercorn does when its ``workers`` setting is above 1,
   api/server.py), so the kernel spreads incoming connections over the workers by a hash of
   the connection's addresses - no accept lock, no thundering herd, no hand-off;
4. starts the N workers (``cody serve --worker-fd FD``), each a full node with its own node
   id, lease, node tail, projector consumer and janitor, in its own session, with
   ``PR_SET_PDEATHSIG`` (runtime/redis_server.py ``spawn_tied``, as for the embedded Redis):
   a kill -9 of the parent leaves no worker behind, the workers get SIGTERM and drain;
5. supervises them: a worker that dies is started again (capped, jittered backoff), with a
   new node id; its runs end ``RUN_ORPHANED`` through the other workers' janitors once its
   lease expires. A slot whose worker fails five starts in a row (exits before it is ready)
   gives up, and so does the parent (one ``cody: fatal`` line, exit 1);
6. on SIGTERM/SIGINT, sends SIGTERM to every worker, waits for their drains (each ends its runs
   ``aborted`` within ``CODY_DRAIN_TIMEOUT_S``), kills what is left after that plus a grace,
   then stops Redis.

A worker tells the parent it serves by writing one byte to the pipe ``--worker-fd`` names.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import trio

from runtime import (
    RuntimeConfig,
    SupervisorGaveUp,
    embedded_redis,
    open_store,
    spawn_tied,
    wait_exit,
)

log = logging.getLogger(__name__)

READY = b"r"
START_TIMEOUT_S = 60.0
"""A worker that has not said it serves within this is killed and counted as a failed start."""
STOP_GRACE_S = 5.0
"""After a worker's drain deadline, how long before it is killed."""


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening: the port is ours
    while the workers come and go (only listening sockets take connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def worker_env(config: RuntimeConfig, *, redis_url: str, port: int,
               base: Mapping[str, str], log_level: str) -> dict[str, str]:
    """The environment of a worker: the parent's, plus every setting the parent resolved
    (command-line flags included) as ``CODY_*`` variables, so each worker builds the same
    config from its environment."""
    env = dict(base)
    env.update({
        "CODY_REDIS_URL": redis_url, "CODY_HOST": config.host, "CODY_PORT": str(port),
        "CODY_DATA_DIR": str(config.data_dir), "CODY_REPLAY": "1" if config.replay else "0",
        "CODY_EXEC": "1" if config.exec_enabled else "0",
        "CODY_WORKSPACE": str(config.workspace_root), "CODY_WORKERS": str(config.workers),
        "CODY_LOG_LEVEL": log_level, "CODY_INSECURE": "1" if config.insecure else "0",
    })
    return env


@dataclass
class WorkerSlot:
    """One of the N workers, kept up."""

    index: int
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    starts: int = 0
    pids: list[int] = field(default_factory=list)


class WorkerPool:
    def __init__(self, slots: list[WorkerSlot], *, max_failed_starts: int = 5,
                 backoff_max_s: float = 5.0) -> None:
        self.slots = slots
        self.stopping = False
        self._max_failed = max_failed_starts
        self._backoff_max_s = backoff_max_s

    async def _start(self, slot: WorkerSlot) -> bool:
        """Start the slot's worker; True once it says it serves, False if it died first."""
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            proc = slot.proc = spawn_tied([*slot.argv, "--worker-fd", str(write_fd)],
                                          stdout=None, stderr=None, env=slot.env,
                                          pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        slot.starts += 1
        slot.pids.append(proc.pid)
        log.info("worker %d: pid %d", slot.index, proc.pid)
        try:
            with trio.move_on_after(START_TIMEOUT_S):
                while True:
                    await trio.lowlevel.wait_readable(read_fd)
                    try:
                        got = os.read(read_fd, 16)
                    except BlockingIOError:
                        continue
                    return READY in got  # b"": it exited (or closed the pipe) first
            log.error("worker %d (pid %d) did not start within %g s", slot.index, proc.pid,
                      START_TIMEOUT_S)
            proc.kill()
            return False
        finally:
            os.close(read_fd)

    async def keep(self, slot: WorkerSlot) -> None:
        failed = 0
        while not self.stopping:
            if await self._start(slot):
                failed = 0
                slot.ready.set()
            else:
                failed += 1
            assert slot.proc is not None
            code = await wait_exit(slot.proc)
            if self.stopping:
                return
            if failed >= self._max_failed:
                raise SupervisorGaveUp(f"worker {slot.index} failed to start {failed} times "
                                       f"in a row (last exit code {code})")
            delay = min(self._backoff_max_s, 0.05 * 2 ** min(failed, 10))
            log.error("worker %d (pid %d) exited with code %s; starting it again in %.2f s",
                      slot.index, slot.proc.pid, code, delay)
            await trio.sleep(delay * (1 + random.uniform(-0.2, 0.2)))

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM to every worker (each drains), SIGKILL to any left after ``timeout_s``."""
        self.stopping = True
        live = [s.proc for s in self.slots if s.proc is not None and s.proc.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout_s):
            for proc in live:
                await wait_exit(proc)
        for proc in live:
            if proc.poll() is None:
                log.warning("worker pid %d did not stop in time; killing it", proc.pid)
                proc.kill()
                await wait_exit(proc)


async def _first_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %s: stopping the workers", signum)
            return


async def serve_workers(config: RuntimeConfig, *, log_level: str = "warning",
                        argv: list[str] | None = None) -> None:
    """Run ``config.workers`` worker nodes until SIGTERM/SIGINT (see the module docstring).

    Raises:
        SupervisorGaveUp: a worker kept failing to start.
        RedisUnavailable, StoreUnavailable: the embedded Redis or the store cannot start.
        OSError: the port cannot be bound.
    """
    argv = argv or [sys.executable, "-m", "api.cli", "serve"]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    held = hold_port(config.host, config.port)
    port = held.getsockname()[1]
    try:
        async with AsyncExitStack() as stack:
            url = config.redis_url
            if url is None:
                url = await stack.enter_async_context(embedded_redis(config.data_dir))
            async with open_store(config):
                pass  # created, migrated (and WAL) once, before N processes open it
            env = worker_env(config, redis_url=url, port=port, base=os.environ,
                             log_level=log_level)
            pool = WorkerPool([WorkerSlot(i, argv, env) for i in range(config.workers)])
            async with trio.open_nursery() as nursery:
                try:
                    for slot in pool.slots:
                        nursery.start_soon(pool.keep, slot)
                    nursery.start_soon(_announce, pool, config, port)
                    await _first_signal()
                finally:  # a signal, or a slot that gave up: every worker drains and exits
                    with trio.CancelScope(shield=True):
                        await pool.stop(config.drain_timeout_s + STOP_GRACE_S)
                    nursery.cancel_scope.cancel()
    finally:
        held.close()
    print("cody: stopped", flush=True)


async def _announce(pool: WorkerPool, config: RuntimeConfig, port: int) -> None:
    for slot in pool.slots:
        await slot.ready.wait()
    mode = "replay" if config.replay else "live"
    print(f"cody: serving on http://{config.host}:{port} ({config.workers} workers, "
          f"{mode} mode)", flush=True)
