"""``cody serve``: the runtime and the HTTP server in one process, under one supervisor.

Hypercorn's trio worker serves the app as a supervised TRANSIENT worker (restarted if it
crashes, not when it was asked to stop). SIGINT/SIGTERM drain: every open run is ended
``aborted`` (its SSE clients get the terminal event and the stream closes), then the HTTP
server stops, then the runtime closes and the embedded redis-server is shut down.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import warnings
from collections.abc import AsyncIterator, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio import run as hypercorn_run
from hypercorn.trio import serve as hypercorn_serve
from hypercorn.trio.tcp_server import TCPServer

from actors import Services, open_runtime
from api.app import create_app
from api.gc_policy import YoungOnlyGC
from runtime import ChildSpec, RestartPolicy, RuntimeConfig, SlowSteps, check_bind

log = logging.getLogger(__name__)


class _Config(HypercornConfig):
    """Hypercorn's config, whose listening sockets carry ``TCP_USER_TIMEOUT``.

    Why at the socket: a client that reads nothing fills its receive window, and Hypercorn's
    ``send_all`` then waits, shielded from cancellation, for ever (the app cannot time it
    out: its generator is only suspended at ``yield``). With ``TCP_USER_TIMEOUT`` the kernel
    gives up on data that stays unsent (zero window) or unacknowledged that long, the send
    fails, Hypercorn closes the connection and the SSE generator's cleanup runs; the client
    may resume with ``Last-Event-ID``. Accepted sockets inherit it from the listening one.
    It only applies while data is waiting, so idle keep-alive connections are not affected.
    """

    send_timeout_s: float = 0.0

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        if self.send_timeout_s > 0 and hasattr(socket, "TCP_USER_TIMEOUT"):
            for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                                    int(self.send_timeout_s * 1000))
        return sockets


class _ConnectionServer(TCPServer):
    """Hypercorn's per-connection server, letting go of its parts once the connection is over.

    Hypercorn's ``TCPServer`` holds its protocol, which holds the server's bound
    ``protocol_send``: a reference cycle (with the h11 connection, the locks, the task
    group, the socket: 36 objects) per connection, which reference counting cannot free.
    Such a connection lives as long as its run, so the cycle outlives every young
    collection and only a full one could reclaim it (api/gc_policy.py freezes survivors,
    so it would wait for the next idle moment). Once ``run`` returns nothing uses the
    server again; clearing its attributes breaks the cycle and the connection is freed at
    once (tests/integration/test_no_cycles.py counts what an HTTP run leaves).
    """

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            self.__dict__.clear()


def use_connection_server() -> None:
    """Make Hypercorn's trio worker build :class:`_ConnectionServer` for each connection.

    Hypercorn has no hook for its connection class; its worker looks the name up in its
    module when it accepts, so the name is replaced there, once per process (idempotent).
    Raises AssertionError when Hypercorn no longer has it where 0.18 keeps it, so an
    upgrade that moves it fails the tests instead of silently bringing the cycles back."""
    current = getattr(hypercorn_run, "TCPServer", None)
    if current is _ConnectionServer:
        return
    if current is not TCPServer:
        raise AssertionError("hypercorn.trio.run.TCPServer is not hypercorn's TCPServer")
    setattr(hypercorn_run, "TCPServer", _ConnectionServer)  # noqa: B010 - not exported


def hypercorn_config(config: RuntimeConfig) -> HypercornConfig:
    hc = _Config()
    hc.send_timeout_s = config.sse_send_timeout_s
    hc.bind = [f"{config.host}:{config.port}"]
    hc.accesslog = None
    hc.graceful_timeout = 5.0
    hc.keep_alive_timeout = 75.0
    hc.backlog = 1024
    # one of N nodes on one port (`cody serve --workers N`, actors/workers.py): Hypercorn
    # sets SO_REUSEPORT on the sockets it binds when its `workers` is above 1 (its trio
    # `serve` starts no processes of its own); the kernel then spreads connections over us
    hc.workers = config.workers
    warnings.filterwarnings("ignore", message="The config `workers` has no affect")
    return hc


def http_worker(services: Services, stop: trio.Event) -> ChildSpec:
    use_connection_server()
    app = create_app(services)
    hc = hypercorn_config(services.config)

    async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await hypercorn_serve(app, hc, shutdown_trigger=stop.wait,
                              task_status=task_status)  # type: ignore[arg-type]

    return ChildSpec("http", run, RestartPolicy.TRANSIENT)


async def _watch_signals(signals: AsyncIterator[int], first: trio.Event) -> None:
    """The first SIGINT/SIGTERM starts the drain; later ones are swallowed so that a second
    signal during the drain does not kill the process half-way through its cleanup."""
    async for signum in signals:
        if not first.is_set():
            log.info("signal %s: draining", signum)
            first.set()


def _exit_by_deadline(deadline_s: float) -> threading.Timer:
    """The drain deadline, enforced whatever the event loop is stuck on: a Redis outage can
    hold run actors' shielded endings past it. Runs not ended by then are left for the
    janitor (their node lease expires; the next node ends them RUN_ORPHANED); the embedded
    redis-server follows through its parent-death signal."""

    def give_up() -> None:
        log.warning("drain deadline of %g s passed; exiting now, unfinished runs are left "
                    "for the janitor", deadline_s)
        print("cody: stopped (drain deadline passed)", file=sys.stderr, flush=True)
        os._exit(0)

    timer = threading.Timer(deadline_s, give_up)
    timer.daemon = True
    timer.start()
    return timer


async def serve(config: RuntimeConfig, *, ready: Callable[[], None] | None = None,
                announce: bool = True) -> None:
    """Raises:
        ValidationFailed: a non-loopback host without API keys or ``--insecure``.
    """
    check_bind(config.host, has_keys=bool(config.api_keys), insecure=config.insecure)
    stop = trio.Event()
    draining = trio.Event()
    if config.slow_step_ms > 0:
        slow = SlowSteps(config.slow_step_ms)
        slow.watch_gc()
        trio.lowlevel.add_instrument(slow)
    collector = YoungOnlyGC()
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, signals, draining)
                async with open_runtime(config,
                                        workers=lambda rt: [http_worker(rt, stop)]) as runtime:
                    mode = "replay" if runtime.config.replay else "live"  # a key may decide
                    log.info("cody serving on http://%s:%d (%s mode, redis %s, catalogue %s)",
                             config.host, config.port, mode, config.redis_url or "embedded",
                             runtime.models.catalogue.source or "built-in")
                    if announce:
                        print(f"cody: serving on http://{config.host}:{config.port} "
                              f"({mode} mode)", flush=True)
                    if ready is not None:
                        ready()
                    collector.install()  # after start-up: what it made is frozen
                    nursery.start_soon(collector.run, lambda: bool(runtime.runs.actors))
                    await draining.wait()
                    _exit_by_deadline(config.drain_timeout_s)
                    await runtime.lifecycle.drain("server shutting down",
                                                  timeout_s=max(0.5, config.drain_timeout_s - 2.0))
                    # let SSE generators flush their terminal frames, then stop accepting
                    await trio.sleep(0.2)
                    stop.set()
                    await trio.sleep(0.1)
                nursery.cancel_scope.cancel()
    finally:
        collector.uninstall()
    print("cody: stopped", flush=True)
