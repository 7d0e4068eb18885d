"""A bare Hypercorn (trio worker) SSE endpoint: the reference for bench/sse.py.

``GET /stream?fixture=<provider>/<name>&delay=<s>`` streams the encoded events of one recorded
run as SSE frames, one provider block's worth at a time with the given pacing, each frame's id
carrying its send time (ns) so the client can measure delivery latency. No Redis, no reducer,
no fan-out: what Hypercorn and the network alone cost.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.fanout import peek_type
from actors.providers.fixtures import FixtureLibrary
from actors.providers.replay import split_blocks
from runtime.envelope import encode_event
from tests.harness import run_fixture_offline

LIB = FixtureLibrary()
_CACHE: dict[str, list[list[bytes]]] = {}


def frames_for(name: str) -> list[list[bytes]]:
    """The run's encoded events, grouped by the provider block that produced them."""
    if name not in _CACHE:
        provider, fx_name = name.split("/")
        fx = LIB.get(provider, fx_name)
        events, _ = run_fixture_offline(fx)
        blocks = max(1, len(split_blocks(fx.exchanges[0].stream)))
        data = [encode_event(e) for e in events]
        per = max(1, len(data) // blocks)
        _CACHE[name] = [data[i:i + per] for i in range(0, len(data), per)]
    return _CACHE[name]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    qs = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    groups = frames_for(qs.get("fixture", "openai/simple_message"))
    delay = float(qs.get("delay", "0"))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"),
                            (b"cache-control", b"no-cache")]})
    n = 0
    for i, group in enumerate(groups):
        if delay and i:
            await trio.sleep(delay)
        out = []
        for data in group:
            out.append(b"id: %d-%d\nevent: %s\ndata: %s\n\n" % (
                time.time_ns(), n, peek_type(data).encode(), data))
            n += 1
        await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = Config()
    config.bind = [f"127.0.0.1:{args.port}"]
    config.accesslog = None
    config.backlog = 2048
    trio.run(serve, app, config)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
