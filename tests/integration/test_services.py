"""The services behind the API, on real Redis, through the app as a client calls it."""

from __future__ import annotations

from pathlib import Path

import trio

from api.app import create_app
from tests.integration.test_runtime import runtime_for, turn


async def test_submit_while_draining_is_503_shutting_down_with_retry_after(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.01) as rt:
            client = create_app(rt).test_client()
            body = turn("anthropic", "rapid_deltas").model_dump(exclude_none=True)
            r = await client.post("/api/v2/runs", json=body)
            assert r.status_code == 202, await r.get_data()
            open_run = (await r.get_json())["run_id"]
            await rt.lifecycle.drain("server shutting down", timeout_s=10)
            assert rt.lifecycle.closing
            assert (await rt.reading.get_response(open_run)).status == "aborted"
            r = await client.post("/api/v2/runs", json=body)
            assert r.status_code == 503
            assert r.headers["Retry-After"] == "5"
            error = (await r.get_json())["error"]
            assert error["code"] == "SHUTTING_DOWN"
            assert "shutting down" in error["message"]
            # even for a provider this server cannot serve: draining is said first
            r = await client.post("/api/v2/runs", json={"prompt": "x", "provider_id": "nope"})
            assert r.status_code == 503
            assert (await r.get_json())["error"]["code"] == "SHUTTING_DOWN"
            # reads still work while draining
            r = await client.get(f"/api/v2/runs/{open_run}")
            assert r.status_code == 200 and (await r.get_json())["status"] == "aborted"


async def test_ready_reports_each_dependency(redis_url: str, key_prefix: str,
                                             tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            client = create_app(rt).test_client()
            r = await client.get("/api/v2/ready")
            assert r.status_code == 200
            assert await r.get_json() == {"status": "ready", "redis": True, "store": True}
