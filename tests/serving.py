"""An in-process ``cody serve``: a runtime and its Hypercorn server on a loopback port, in the
test's own trio run (real HTTP, real Redis on 127.0.0.1:6379 under the test's key prefix),
without the cost of a subprocess."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from actors.system import CodyRuntime, open_runtime
from api.server import http_worker
from runtime.config import RuntimeConfig
from runtime.eventlog import open_redis
from tests.e2e.server import WORKSPACE, free_port

TCP_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Served:
    runtime: CodyRuntime
    base_url: str

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=httpx.Timeout(20.0),
                                 **kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def serving(data_dir: Path, *, redis_url: str | None = TCP_REDIS_URL,
                  prefix: str | None = None, **overrides: object) -> AsyncIterator[Served]:
    """Serve a runtime built from ``overrides``; its Redis keys are deleted afterwards."""
    prefix = prefix or f"test-{uuid.uuid4().hex}"
    port = free_port()
    values: dict[str, object] = {"data_dir": data_dir, "redis_url": redis_url,
                                 "key_prefix": prefix, "port": port, "replay": True,
                                 "workspace_root": WORKSPACE, "retention_s": 300,
                                 "janitor_interval_s": 0.5}
    values.update(overrides)
    config = RuntimeConfig.model_validate(values)
    stop = trio.Event()
    try:
        async with open_runtime(config, workers=lambda rt: [http_worker(rt, stop)]) as rt:
            base_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base_url, timeout=2) as probe:
                with trio.fail_after(15):
                    while True:
                        try:
                            if (await probe.get("/health")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await trio.sleep(0.02)
            yield Served(rt, base_url)
    finally:
        if redis_url == TCP_REDIS_URL:
            with trio.move_on_after(10):
                async with open_redis(TCP_REDIS_URL, 2) as client:
                    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
                    if keys:
                        await client.delete(keys)


async def eventually(predicate: Callable[[], Awaitable[bool] | bool], limit_s: float,
                     poll_s: float = 0.02) -> None:
    """Wait until ``predicate()`` holds (polled), failing after ``limit_s``."""
    with trio.fail_after(limit_s):
        while True:
            result = predicate()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await trio.sleep(poll_s)
