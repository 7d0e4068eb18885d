"""A loopback TCP proxy that a test can cut and restore, to make an outage on demand.

``cut()`` closes the listener and every proxied connection (clients see their connection
drop, and new ones refused); ``restore()`` listens again on the same port. Runs in the test's
trio loop: ``port = await nursery.start(proxy.serve)``.
"""

from __future__ import annotations

import trio


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.port = 0
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self.connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Runs until cancelled; reports the port once listening."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._listen()
            task_status.started(self.port)
            await trio.sleep_forever()  # keeps the nursery open for restore()

    async def _listen(self) -> None:
        assert self._nursery is not None
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        scope = trio.CancelScope()
        self._scope = scope

        async def accept_all() -> None:
            with scope:
                async with trio.open_nursery() as conns:
                    try:
                        while True:
                            client = await listeners[0].accept()
                            self.connections += 1
                            conns.start_soon(self._pipe_both, client)
                    finally:
                        await trio.aclose_forcefully(listeners[0])

        self._nursery.start_soon(accept_all)

    async def _pipe_both(self, client: trio.SocketStream) -> None:
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*self._target)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                async def pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                    try:
                        async for chunk in src:
                            await dst.send_all(chunk)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pipe, client, upstream)
                nursery.start_soon(pipe, upstream, client)

    def cut(self) -> None:
        """Drop every connection and stop listening (until ``restore``)."""
        assert self._scope is not None
        self._scope.cancel()

    async def restore(self) -> None:
        await trio.lowlevel.checkpoint()  # let the cut finish closing
        await self._listen()
