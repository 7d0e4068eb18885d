"""A token-streaming OpenAI Responses endpoint for the benchmarks, in its own process.

``POST /v1/responses`` answers any request whose body contains ``tokens=N pace_ms=P`` (the
turn's prompt) with the recorded ``openai/rapid_deltas`` stream, its deltas replaced by N
generated ones, P ms apart (0: all at once, written 16 KiB at a time as a busy server's
socket would carry them). Each token's text is its send time in microseconds and a space, so a
client of Cody can measure provider chunk in -> SSE byte out for every token, whatever Cody
merged on the way. The framing around the deltas (created, item added, text done, item done
with the full text, completed with usage) is the recording's, so Cody's real normaliser and
live client run unchanged.

HTTP/1.1 with chunked bodies and keep-alive on raw trio sockets: it must stay cheap at 500
concurrent streams, where a thread per stream (tests/fake_provider.py) would eat the CPU the
benchmark measures.

    python -m bench.token_provider --port 8799
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.providers.fixtures import FixtureLibrary
from actors.providers.replay import split_blocks

PROMPT = re.compile(rb"tokens=(\d+) pace_ms=(\d+(?:\.\d+)?)")
DELTA_EVENT = b"event: response.output_text.delta\n"
WRITE_BYTES = 16_384


def prompt(tokens: int, pace_ms: float) -> str:
    """The turn prompt that asks this server for ``tokens`` tokens ``pace_ms`` apart."""
    return f"tokens={tokens} pace_ms={pace_ms:g}"


class Template:
    """The recording cut around its deltas; the trailer's text slots filled per stream."""

    def __init__(self) -> None:
        fx = FixtureLibrary().get("openai", "rapid_deltas")
        blocks = split_blocks(fx.exchanges[0].stream)
        deltas = [i for i, b in enumerate(blocks) if b.startswith(DELTA_EVENT)]
        self.head = b"".join(blocks[:deltas[0]])
        text = "".join(json.loads(blocks[i].split(b"data: ", 1)[1])["delta"] for i in deltas)
        trailer = b"".join(blocks[deltas[-1] + 1:])
        self.trailer_parts = trailer.split(json.dumps(text).encode()[1:-1])
        first = json.loads(blocks[deltas[0]].split(b"data: ", 1)[1])
        self.delta = (b'event: response.output_text.delta\ndata: {"type":'
                      b'"response.output_text.delta","sequence_number":%d,"item_id":"'
                      + first["item_id"].encode()
                      + b'","output_index":0,"content_index":0,"delta":"%d ","logprobs":[]}\n\n')

    def trailer(self, text: bytes) -> bytes:
        return text.join(self.trailer_parts)


TEMPLATE = Template()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def stream(conn: trio.SocketStream, tokens: int, pace_ms: float) -> None:
    await conn.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                        b"transfer-encoding: chunked\r\n\r\n" + chunk(TEMPLATE.head))
    sent: list[bytes] = []
    pending: list[bytes] = []
    size = 0
    for i in range(tokens):
        if pace_ms and i:
            await trio.sleep(pace_ms / 1000)
        now_us = time.time_ns() // 1000
        sent.append(b"%d " % now_us)
        block = TEMPLATE.delta % (4 + i, now_us)
        if pace_ms:
            await conn.send_all(chunk(block))
            continue
        pending.append(block)
        size += len(block)
        if size >= WRITE_BYTES:
            await conn.send_all(chunk(b"".join(pending)))
            pending.clear()
            size = 0
    pending.append(TEMPLATE.trailer(b"".join(sent)))
    await conn.send_all(chunk(b"".join(pending)) + b"0\r\n\r\n")


async def read_request(conn: trio.SocketStream, buf: bytearray) -> bytes | None:
    """One request's body (``Content-Length`` framed), or None when the client closed."""
    while b"\r\n\r\n" not in buf:
        data = await conn.receive_some(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        data = await conn.receive_some(65536)
        if not data:
            return None
        rest += data
    buf[:] = rest[length:]
    return rest[:length]


async def handle(conn: trio.SocketStream) -> None:
    buf = bytearray()
    try:
        while (body := await read_request(conn, buf)) is not None:
            m = PROMPT.search(body)
            if m is None:
                msg = b'{"error":{"code":"bad_prompt","message":"want tokens=N pace_ms=P"}}'
                await conn.send_all(b"HTTP/1.1 400 Bad Request\r\ncontent-type: "
                                    b"application/json\r\ncontent-length: %d\r\n\r\n%s"
                                    % (len(msg), msg))
                continue
            await stream(conn, int(m[1]), float(m[2]))
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
        pass  # the client went away (a cancelled run closes its upstream)
    finally:
        await conn.aclose()


async def serve(port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                ) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1", backlog=4096)
    task_status.started()
    await trio.serve_listeners(handle, listeners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    trio.run(serve, args.port)


if __name__ == "__main__":
    main()
