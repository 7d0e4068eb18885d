"""The services behind the API, on real Redis, through the app as a client calls it."""

from __future__ import annotations

from pathlib import Path

import trio

from actors.system import open_runtime
from api.app import create_app
from runtime.turns import TurnRequest
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


async def test_a_file_providers_key_makes_the_server_live(redis_url: str, key_prefix: str,
                                                          tmp_path: Path) -> None:
    """No CODY_REPLAY and no OpenAI/Anthropic key, but the key of the file's provider: the
    server is live, and a run of that provider goes over HTTP to it (the fake provider
    server) with the catalogue's key and headers; ``--replay`` still forces replay."""
    from runtime.config import RuntimeConfig
    from tests.fake_provider import FakeProvider
    from tests.integration.test_runtime import LIBRARY, WORKSPACE, wait_stored

    fx = LIBRARY.get("local", "simple_message")
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        (tmp_path / "cody.toml").write_text(
            f'[providers.local]\nprotocol = "openai-chat"\nbase_url = "{fake.chat_base_url}"\n'
            'api_key_env = "LOCAL_API_KEY"\nheaders = { "X-Team" = "core" }\n'
            '[models.qwen3-8b]\nprovider = "local"\nname = "Qwen/Qwen3-8B"\n')
        env = {"CODY_DATA_DIR": str(tmp_path), "CODY_REDIS_URL": redis_url,
               "CODY_KEY_PREFIX": key_prefix, "CODY_WORKSPACE": str(WORKSPACE),
               "LOCAL_API_KEY": fake.api_key}
        assert RuntimeConfig.from_env(env, replay=True).replay_auto is False
        config = RuntimeConfig.from_env(env)
        assert config.replay and config.replay_auto  # by the built-in keys alone: replay
        async with open_runtime(config) as rt:
            assert rt.config.replay is False
            assert [m.key for m in rt.models.list_models()][-1] == "set"
            accepted = await rt.submission.submit(TurnRequest(prompt=fx.prompt,
                                                              model="qwen3-8b", tools=[]))
            stored = await wait_stored(rt, accepted.run_id)
    assert response_view(stored) == fx.expected
    assert [r.body for r in fake.requests] == [fx.exchanges[0].request]
    assert fake.requests[0].headers["Authorization"] == f"Bearer {fake.api_key}"
    assert fake.requests[0].headers["X-Team"] == "core"


async def test_the_models_listing_needs_a_token_when_keys_are_on(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    token = "tok-models-0123456789"
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path,
                               api_keys=(("team", token),)) as rt:
            client = create_app(rt).test_client()
            r = await client.get("/api/v2/models")
            assert r.status_code == 401
            assert (await r.get_json())["error"]["code"] == "UNAUTHORIZED"
            r = await client.get("/api/v2/models", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200
            ids = [m["id"] for m in (await r.get_json())["data"]]
            assert ids == ["gpt-5-mini", "gpt-5-codex", "claude-haiku-4.5", "claude-sonnet-4.5"]
