"""A minimal HTTP/1.0 client on trio sockets, for load generation.

httpx spends ~10x the CPU of the server under test per request at hundreds of concurrent
streams, so a benchmark driven by it measures the client. HTTP/1.0 keeps this tiny: no
chunked encoding (the server closes the connection to end a streamed body).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio


async def _request(host: str, port: int, raw: bytes) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(raw)
    return stream


async def _head(stream: trio.SocketStream) -> tuple[int, int | None, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, length, rest


async def post_json(host: str, port: int, path: str, body: dict[str, Any]
                    ) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    stream = await _request(host, port, (
        f"POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
    async with stream:
        status, length, rest = await _head(stream)
        parts = [rest]
        got = len(rest)
        while length is None or got < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
    return status, json.loads(b"".join(parts) or b"null")


async def get_stream(host: str, port: int, path: str,
                     headers: dict[str, str] | None = None, *, method: str = "GET",
                     body: dict[str, Any] | None = None, strict: bool = False
                     ) -> AsyncIterator[bytes]:
    """The response body's chunks as they arrive (the server closes to end it). A status
    other than 200 ends it empty, or with ``strict`` raises ConnectionError."""
    head = dict(headers or {})
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        head |= {"Content-Type": "application/json", "Content-Length": str(len(data))}
    extra = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    stream = await _request(host, port, (
        f"{method} {path} HTTP/1.0\r\nHost: {host}\r\nAccept: text/event-stream\r\n{extra}\r\n"
    ).encode() + data)
    async with stream:
        status, _, rest = await _head(stream)
        if status != 200:
            if strict:
                raise ConnectionError(f"HTTP {status}: {rest[:300]!r}")
            return
        if rest:
            yield rest
        while chunk := await stream.receive_some(65536):
            yield chunk
