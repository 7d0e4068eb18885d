"""tests/tcp_proxy.py's proxy for sync tests (browser, subprocess): it runs in a trio loop of
its own thread, and ``cut`` / ``restore`` reach into that loop."""

from __future__ import annotations

import threading

import trio

from tests.tcp_proxy import TcpProxy


class ThreadedProxy:
    """tests/tcp_proxy.py's proxy in a trio loop of its own thread (the tests are sync)."""

    def __init__(self, target_port: int) -> None:
        self.proxy = TcpProxy("127.0.0.1", target_port)
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> ThreadedProxy:
        ready = threading.Event()

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self._scope = nursery.cancel_scope
                await nursery.start(self.proxy.serve)
                ready.set()

        self._thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self._thread.start()
        assert ready.wait(10), "proxy did not start"
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def cut(self) -> None:
        trio.from_thread.run_sync(self.proxy.cut, trio_token=self._token)

    def restore(self) -> None:
        trio.from_thread.run(self.proxy.restore, trio_token=self._token)

    def stop(self) -> None:
        assert self._scope is not None and self._thread is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
