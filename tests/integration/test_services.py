"""The services behind the API, on real Redis, through the app as a client calls it."""

from __future__ import annotations

from pathlib import Path

import trio

from api.app import create_app
from tests.harness import response_view
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


async def test_the_catalogue_in_the_runtime(redis_url: str, key_prefix: str,
                                            tmp_path: Path) -> None:
    """``<data dir>/cody.toml`` is read by the factory: its models are listed, a run of its
    provider records the provider's protocol and plays through that protocol's normaliser,
    and ``<provider>/<name>`` routes to it."""
    from tests.integration.test_runtime import LIBRARY, wait_stored

    (tmp_path / "cody.toml").write_text(
        (LIBRARY.root / "openai-chat" / "cody.toml").read_text())
    fx = LIBRARY.get("local", "tool_read_file")
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            client = create_app(rt).test_client()
            r = await client.get("/api/v2/models")
            models = {m["id"]: m for m in (await r.get_json())["data"]}
            assert models["qwen3-8b"] == {"id": "qwen3-8b", "provider": "local",
                                          "name": "Qwen/Qwen3-8B", "protocol": "openai-chat",
                                          "reasoning": False, "key": "missing"}
            assert rt.catalogue.source == str(tmp_path / "cody.toml")
            for model in ("qwen3-8b", "local/Qwen/Qwen3-8B"):
                r = await client.post("/api/v2/runs", json={
                    "prompt": fx.prompt, "model": model, "tools": list(fx.tools)})
                assert r.status_code == 202, await r.get_data()
                run_id = (await r.get_json())["run_id"]
                stored = await wait_stored(rt, run_id)
                assert response_view(stored) == {**fx.expected, "model_id": model}
                meta = await rt.log.get_meta(run_id)
                assert (meta["provider_id"], meta["model_id"], meta["protocol"]) == (
                    "local", model, "openai-chat")
