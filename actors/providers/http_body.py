"""A provider's streamed response body, read with one idle deadline per stream.

Tokens arrive one at a time at a model's pace, so what each chunk costs on its way in is paid
per token. Through httpx a chunk passes four async generators (httpx's bound stream and
transport stream, httpcore's pool and HTTP/1.1 streams), two exception-mapping context
managers and a trace context manager, httpcore's h11 state machine twice, and two cancel
scopes (httpcore's read timeout and our idle timeout): ~35 % of the server's CPU per
isolated token in the profile of issue 16.

So httpx still does what it is good at - the connection pool, TLS, proxies from the
environment, the request and the response head, retries in ``live.py`` - and once the head is
in, :meth:`ProviderBody.pump` reads the body itself: straight from the connection's trio
stream into the connection's own h11 state machine, under one cancel scope for the whole
stream whose deadline moves on whenever bytes arrive (and is lifted while the chunk waits for
room in the actor's read-ahead channel: back-pressure is not the provider being idle). When
the body is complete, h11 is in the state httpcore expects and closing the response returns
the connection to the pool as before.

That reaches into httpcore's objects (``_h11_state``, ``_network_stream``), which are not
public API: :func:`raw_http11` checks every step and returns None when anything is not as
expected (another httpx/httpcore version, HTTP/2, a body httpcore already started reading),
and the body is then pumped through ``Response.aiter_raw`` under the same single deadline.
Either way the bytes handed on are exactly the body's (``aiter_raw``: no decoding).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

import h11
import httpx
import trio

from runtime import ProviderError

READ_BYTES = 65_536


def raw_http11(response: httpx.Response) -> tuple[h11.Connection, trio.abc.ReceiveStream] | None:
    """The h11 state machine and trio stream of ``response``'s HTTP/1.1 connection, if its
    body is untouched and everything is where httpcore 1.x keeps it; else None."""
    stream = getattr(response.stream, "_stream", None)  # httpx: AsyncResponseStream
    stream = getattr(stream, "_httpcore_stream", None)  # httpcore: PoolByteStream
    stream = getattr(stream, "_stream", None)  # httpcore: HTTP11ConnectionByteStream
    if stream is None or getattr(stream, "_closed", True) is not False:
        return None
    connection = getattr(stream, "_connection", None)  # httpcore: AsyncHTTP11Connection
    state = getattr(connection, "_h11_state", None)
    network = getattr(getattr(connection, "_network_stream", None), "_stream", None)
    if (not isinstance(state, h11.Connection) or not isinstance(network, trio.abc.ReceiveStream)
            or state.their_state is not h11.SEND_BODY):
        return None
    return state, network


class ProviderBody:
    """A streamed body: iterate it (one deadline per read, as before), or ``pump`` it into a
    channel with one deadline per stream (what the run actor does)."""

    def __init__(self, response: httpx.Response, chunks: AsyncIterator[bytes], *,
                 idle_timeout_s: float, lost: Callable[[BaseException], ProviderError],
                 idle: Callable[[], ProviderError]) -> None:
        self._response = response
        self._chunks = chunks
        self._idle_s = idle_timeout_s
        self._lost = lost
        self._idle = idle
        self.raw = False
        """Whether ``pump`` read the connection itself (for tests and the benchmark)."""

    def __aiter__(self) -> ProviderBody:
        return self

    def __anext__(self) -> Awaitable[bytes]:
        return self._chunks.__anext__()

    async def pump(self, send: trio.MemorySendChannel[bytes | Exception]) -> None:
        """Send every chunk of the body to ``send`` until it ends; raises ``ProviderError``
        (connection lost, or no bytes for ``idle_timeout_s``)."""
        raw = raw_http11(self._response)
        with trio.CancelScope(deadline=trio.current_time() + self._idle_s) as idle:
            if raw is not None:
                self.raw = True
                await self._pump_raw(send, *raw, idle)
            else:
                await self._pump_httpx(send, idle)
        if idle.cancelled_caught:
            raise self._idle()

    async def _pump_raw(self, send: trio.MemorySendChannel[bytes | Exception],
                        h11_state: h11.Connection, network: trio.abc.ReceiveStream,
                        idle: trio.CancelScope) -> None:
        next_event, receive_data = h11_state.next_event, h11_state.receive_data
        idle_s = self._idle_s
        # Moving a scope's deadline costs more than the read it guards (a context manager in
        # trio), so it moves only once a sixteenth of the timeout has passed, and always to
        # a bit more than the timeout: the stream times out between idle_s and 1.0625 idle_s
        # after its last bytes, never sooner.
        step = idle_s / 16
        moved = trio.current_time()
        idle.deadline = moved + idle_s + step
        current_time = trio.current_time
        while True:
            try:
                event = next_event()
                if event is h11.NEED_DATA:
                    # trio's sockets return bytes; h11 takes any bytes-like
                    receive_data(cast(bytes, await network.receive_some(READ_BYTES)))
                    now = current_time()
                    if now - moved > step:
                        moved = now
                        idle.deadline = now + idle_s + step
                    continue
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                    h11.RemoteProtocolError) as exc:
                raise self._lost(exc) from exc
            kind = type(event)
            if kind is h11.Data:
                data = bytes(event.data)  # type: ignore[union-attr]
                if data:
                    try:
                        send.send_nowait(data)
                    except trio.WouldBlock:
                        await _send(send, data, idle, idle_s)
                        moved = current_time()
            elif kind is h11.EndOfMessage:
                return
            elif kind is h11.ConnectionClosed:
                raise self._lost(ConnectionError("the provider closed the connection"))

    async def _pump_httpx(self, send: trio.MemorySendChannel[bytes | Exception],
                          idle: trio.CancelScope) -> None:
        idle_s = self._idle_s
        try:
            async for data in self._response.aiter_raw():
                idle.deadline = trio.current_time() + idle_s
                if data:
                    await _send(send, data, idle, idle_s)
        except httpx.TransportError as exc:
            raise self._lost(exc) from exc


async def _send(send: trio.MemorySendChannel[bytes | Exception], data: bytes,
                idle: trio.CancelScope, idle_s: float) -> None:
    """Hand ``data`` on; waiting for room in the channel does not count as idle."""
    try:
        send.send_nowait(data)
    except trio.WouldBlock:
        idle.deadline = math.inf
        await send.send(data)
        idle.deadline = trio.current_time() + idle_s
