"""The benchmark's own servers, checked end to end so that bench/run.py measures real runs:
bench/token_provider.py behind ``cody serve`` in live mode, and bench/bare_sse.py."""

from __future__ import annotations

import httpx
import trio

from bench import http_load
from bench.bare_sse import serve_bare
from bench.token_provider import serve
from tests.e2e.conftest import StartServer
from tests.e2e.server import free_port


async def test_token_provider_streams_through_cody(start_server: StartServer) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, port)
            server = start_server("replay", CODY_REPLAY="0", OPENAI_API_KEY="sk-bench",
                                  OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1")
            unpaced = [await http_load.cody_stream(server.port, 300, 0.0) for _ in range(3)]
            paced = await http_load.cody_stream(server.port, 20, 5.0, lag=True)
            for res in [*unpaced, paced]:
                assert res.terminal == b"response_done"
            assert [r.tokens for r in unpaced] == [300, 300, 300]
            assert paced.tokens == 20 and paced.lags_ms is not None
            assert len(paced.lags_ms) == 20 and all(0 <= lag < 5000 for lag in paced.lags_ms)
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                resp = (await client.get(f"/api/v2/runs/{paced.run_id}")).json()
            assert resp["status"] == "complete"
            text = resp["output_items"][-1]["content"]
            assert len(text.split()) == 20 and all(t.isdigit() for t in text.split())
            nursery.cancel_scope.cancel()


async def test_bare_endpoint_streams_the_same_shape() -> None:
    port = free_port()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_bare, port)
            for _ in range(100):
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)
            whole = await http_load.bare_stream(port, 500, 0.0)
            paced = await http_load.bare_stream(port, 10, 5.0, lag=True)
            assert whole.tokens == 500 and whole.terminal == b"response_done"
            assert paced.tokens == 10 and paced.lags_ms is not None and len(paced.lags_ms) == 10
            nursery.cancel_scope.cancel()
