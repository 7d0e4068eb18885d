"""A throwaway 3-master Redis Cluster on loopback, for tests (and ``python -m`` by hand).

Each node is ``redis-server --cluster-enabled yes`` on a free port ``P <= 55535`` (a cluster
node also listens on ``P + 10000`` for its bus, which must be free too), with no persistence,
in a temporary directory; ``redis-cli --cluster create`` joins them, and the cluster is ready
once every node reports ``cluster_state:ok``. A node killed and started again on its port
finds its ``nodes.conf`` and rejoins (its data is gone: there is no persistence). Synchronous
(``subprocess``), because the session fixture that uses it cannot be async under pytest-trio.

The nodes get ``PR_SET_PDEATHSIG`` (as the embedded Redis does), so a test run that is killed
leaves none behind. That signal fires when the *thread* that forked them exits: start and
restart them from the main thread, never through ``trio.to_thread``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from runtime.redis_server import _die_with_parent

MAX_PORT = 55535
BUS_OFFSET = 10000


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(n: int, *, low: int = 20000, high: int = MAX_PORT) -> list[int]:
    """``n`` ports whose bus ports (+10000) are free as well."""
    ports: list[int] = []
    for _ in range(2000):
        port = random.randint(low, high)
        if port in ports or port + BUS_OFFSET in ports or port - BUS_OFFSET in ports:
            continue
        if _port_free(port) and _port_free(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == n:
                return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _cli(*args: str, timeout: float = 30) -> str:
    return subprocess.run([shutil.which("redis-cli") or "redis-cli", *args], check=True,
                          capture_output=True, timeout=timeout, text=True).stdout


def _cluster_ok(port: int) -> bool:
    try:
        return "cluster_state:ok" in _cli("-p", str(port), "cluster", "info", timeout=5)
    except (subprocess.SubprocessError, OSError):
        return False


class RedisClusterNodes:
    """The nodes of one cluster: their ports, processes and directories."""

    def __init__(self, directory: Path, ports: list[int]) -> None:
        self.directory = directory
        self.ports = tuple(ports)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`` (seed nodes)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start_node(self, port: int) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("start Redis Cluster nodes from the main thread (PDEATHSIG)")
        node_dir = self.directory / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server") or "/usr/bin/redis-server"
        with open(node_dir / "redis.log", "ab") as log:
            self.processes[port] = subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", "2000", "--dir", str(node_dir),
                 "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()))

    def wait_pong(self, deadline: float) -> None:
        for port, proc in self.processes.items():
            while True:
                with suppress(subprocess.SubprocessError, OSError):
                    if _cli("-p", str(port), "ping", timeout=2).strip() == "PONG":
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start")
                time.sleep(0.02)

    def wait_ok(self, deadline: float) -> None:
        while not all(_cluster_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL every node (a cluster that is down)."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        for proc in self.processes.values():
            proc.wait()

    def restart(self, timeout_s: float = 30.0) -> None:
        """Start every node again on its port; they rejoin from ``nodes.conf``."""
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            self.start_node(port)
        self.wait_pong(deadline)
        self.wait_ok(deadline)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def redis_cluster(directory: Path, *, masters: int = 3,
                  timeout_s: float = 30.0) -> Iterator[RedisClusterNodes]:
    """Start ``masters`` nodes in ``directory``, create the cluster, stop it all at the end."""
    for attempt in range(3):  # a port taken between choosing and binding: choose again
        nodes = RedisClusterNodes(directory / f"try{attempt}", free_cluster_ports(masters))
        try:
            deadline = time.monotonic() + timeout_s
            for port in nodes.ports:
                nodes.start_node(port)
            nodes.wait_pong(deadline)
            _cli("--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes.ports],
                 "--cluster-replicas", "0", "--cluster-yes", timeout=timeout_s)
            nodes.wait_ok(deadline)
        except BaseException:
            nodes.stop()
            if attempt == 2:
                raise
            continue
        try:
            yield nodes
        finally:
            nodes.stop()
        return


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # a cluster to try things on: python -m tests.redis_cluster
    import tempfile

    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory() as tmp, redis_cluster(Path(tmp)) as cluster:
        print(cluster.url, flush=True)
        with suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
