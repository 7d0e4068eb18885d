"""Idempotency-Key and multitask_strategy over real HTTP: one ``cody serve`` for the module
(replay mode, a small delay so that turns overlap), its settings from the environment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.e2e.client import make_client, stream, submit
from tests.e2e.conftest import _drop_keys
from tests.e2e.server import WORKSPACE, ServerProcess, base_env
from tests.integration.test_runtime import LIBRARY


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("policies-server")
    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    proc = ServerProcess(data_dir, base_env(
        CODY_REDIS_URL="redis://127.0.0.1:6379/0", CODY_KEY_PREFIX=prefix, CODY_REPLAY="1",
        CODY_WORKSPACE=str(WORKSPACE), CODY_REPLAY_DELAY_S="0.01",
        CODY_MULTITASK_STRATEGY="enqueue", CODY_IDEMPOTENCY_TTL_S="600"))
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        _drop_keys(prefix)


def prompt(name: str) -> dict[str, str]:
    fx = LIBRARY.get("openai", name)
    return {"prompt": fx.prompt, "model": fx.model}


async def test_idempotency_key_over_http(server: ServerProcess) -> None:
    with trio.fail_after(30):
        async with make_client(server.base_url) as client:
            key = {"Idempotency-Key": str(uuid.uuid4())}
            first = await client.post("/api/v2/runs", json=prompt("simple_message"),
                                      headers=key)
            assert first.status_code == 202
            retried = await client.post("/api/v2/runs", json=prompt("simple_message"),
                                        headers=key)
            assert retried.status_code == 200 and retried.json() == first.json()
            other = await client.post("/api/v2/runs", json=prompt("two_turns_1"), headers=key)
            assert other.status_code == 422
            assert other.json()["error"]["code"] == "IDEMPOTENCY_MISMATCH"
            bad = await client.post("/api/v2/runs", json=prompt("simple_message"),
                                    headers={"Idempotency-Key": "two words"})
            assert bad.status_code == 400
            assert bad.json()["error"]["details"]["field"] == "Idempotency-Key"
            streamed = await stream(client, first.json()["run_id"])
            assert streamed.events[-1].type == "response_done"
            spec = (await client.get("/openapi.json")).json()
            post = spec["paths"]["/api/v2/runs"]["post"]
            assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
            assert {"200", "202", "409", "422"} <= set(post["responses"])
            assert "THREAD_BUSY" in post["responses"]["409"]["description"]
            strategy = spec["components"]["schemas"]["TurnRequest"]["properties"][
                "multitask_strategy"]
            assert "enqueue" in str(strategy)


async def test_the_server_default_enqueues_and_the_queued_run_streams(
        server: ServerProcess) -> None:
    """CODY_MULTITASK_STRATEGY=enqueue: the second turn queues; a client that connects to
    its events at once waits for its start and reads it to the end; reject still refuses."""
    with trio.fail_after(30):
        async with make_client(server.base_url) as client:
            first = await submit(client, **prompt("two_turns_1"))
            second = await submit(client, **prompt("simple_message"),
                                  thread_id=first["thread_id"])
            assert second["status"] == "queued"
            busy = await client.post("/api/v2/runs", json={
                **prompt("simple_message"), "thread_id": first["thread_id"],
                "multitask_strategy": "reject"})
            assert busy.status_code == 409
            assert busy.json()["error"]["code"] == "THREAD_BUSY"
            queued = await stream(client, second["run_id"])  # connected while queued
            assert queued.status_code == 200
            assert [e.seq for e in queued.events] == list(range(1, len(queued.events) + 1))
            assert queued.events[-1].type == "response_done"
            ran = await stream(client, first["run_id"])
            assert queued.events[0].timestamp >= ran.events[-1].timestamp
            thread = (await client.get(f"/api/v2/threads/{first['thread_id']}")).json()
            assert [r["id"] for r in thread["runs"]] == [first["run_id"], second["run_id"]]
