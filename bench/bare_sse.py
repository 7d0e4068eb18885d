"""A bare Hypercorn (trio worker) SSE endpoint: the reference "what the machine allows".

``GET /stream?tokens=N&pace_ms=P`` streams what a Cody run of bench/token_provider.py's stream
would look like on the wire - a ``response_start`` frame, N ``item_delta`` frames (each token's
text its send time in microseconds and a space, as the token provider writes it), a
``response_done`` frame - with the same pacing: P ms apart, or with P = 0 as fast as Hypercorn
takes them, 16 KiB per send. Frames carry ``id:``/``event:``/``data:`` like Cody's, and the data
is a real encoded StreamEvent with its ``seq``. No Redis, no normaliser, no reducer, no fan-out:
what Hypercorn, the event encoding and the loopback network alone cost.

    python -m bench.bare_sse --port 8798
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

from runtime.envelope import EventFactory, encode_event
from runtime.ids import new_traceparent
from runtime.schema import ItemDelta, ResponseDone, ResponseStart

RUN = "00000000-0000-4000-8000-000000000000"
MARK = "@@TOKEN@@"
WRITE_BYTES = 16_384


def _frame_parts() -> tuple[bytes, list[bytes], bytes]:
    factory = EventFactory(RUN, new_traceparent(), lambda: int(time.time() * 1000))
    start = encode_event(factory.make(ResponseStart(
        response_id=RUN, turn_id=RUN, thread_id=RUN, model_id="gpt-5-mini",
        provider_id="openai", created_at=0)))
    delta = encode_event(factory.make(ItemDelta(item_id="msg_1", delta_content=MARK)))
    seq_text = b'"seq":2,'
    assert seq_text in delta
    before_seq, after_seq = delta.split(seq_text)
    parts = [before_seq + b'"seq":', b"," + after_seq.replace(MARK.encode(), b"%d ")]
    done = encode_event(factory.make(ResponseDone(response_id=RUN, status="complete",
                                                  finish_reason="stop")))
    return (b"id: 0-1\nevent: response_start\ndata: " + start + b"\n\n", parts,
            b"id: 0-9\nevent: response_done\ndata: " + done + b"\n\n")


START, DELTA_PARTS, DONE = _frame_parts()


def delta_frame(n: int) -> bytes:
    now_us = time.time_ns() // 1000
    return b"id: %d-%d\nevent: item_delta\ndata: %s%d%s\n\n" % (
        now_us // 1000, n, DELTA_PARTS[0], n + 2, DELTA_PARTS[1] % now_us)


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
    tokens = int(qs.get("tokens", "100"))
    pace_s = float(qs.get("pace_ms", "0")) / 1000
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream"),
                            (b"cache-control", b"no-cache")]})
    await send({"type": "http.response.body", "body": START, "more_body": True})
    pending: list[bytes] = []
    size = 0
    for n in range(tokens):
        if pace_s:
            if n:
                await trio.sleep(pace_s)
            await send({"type": "http.response.body", "body": delta_frame(n),
                        "more_body": True})
            continue
        frame = delta_frame(n)
        pending.append(frame)
        size += len(frame)
        if size >= WRITE_BYTES:
            await send({"type": "http.response.body", "body": b"".join(pending),
                        "more_body": True})
            pending.clear()
            size = 0
    pending.append(DONE)
    await send({"type": "http.response.body", "body": b"".join(pending), "more_body": False})


async def serve_bare(port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.backlog = 4096
    await serve(app, config)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    trio.run(serve_bare, args.port)


if __name__ == "__main__":
    main()
