"""The live provider clients against the fake provider server: history, tool outputs in each
provider's format, retries, mid-stream failures, idle timeout, cancel closing upstream."""

from __future__ import annotations

import json

import pytest
import trio

from actors.providers.fixtures import FixtureLibrary
from tests.e2e.client import make_client, sent_requests, stream, submit, wait_persisted
from tests.e2e.conftest import StartServer
from tests.fake_provider import FakeProvider, Fault
from tests.harness import response_view

LIBRARY = FixtureLibrary()


async def run_turn(base_url: str, provider: str, name: str,
                   thread_id: str | None = None) -> tuple[dict[str, str], object]:
    fx = LIBRARY.get(provider, name)
    async with make_client(base_url) as client:
        body: dict[str, object] = {"prompt": fx.prompt, "provider_id": provider,
                                   "model": fx.model, "tools": list(fx.tools)}
        if thread_id:
            body["thread_id"] = thread_id
        accepted = await submit(client, **body)
        streamed = await stream(client, accepted["run_id"])
        return accepted, streamed.reduce()


async def test_second_turn_carries_history_and_signature(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        server = start_server("live", fake=fake)
        with trio.fail_after(60):
            first, resp1 = await run_turn(server.base_url, "anthropic", "two_turns_1")
            _, resp2 = await run_turn(server.base_url, "anthropic", "two_turns_2",
                                      thread_id=first["thread_id"])
    fx1, fx2 = LIBRARY.get("anthropic", "two_turns_1"), LIBRARY.get("anthropic", "two_turns_2")
    assert response_view(resp1) == fx1.expected  # type: ignore[arg-type]
    assert response_view(resp2) == fx2.expected  # type: ignore[arg-type]
    body = sent_requests(server, fx2.prompt)[0]
    messages = body["messages"]
    assert messages[0] == {"role": "user", "content": fx1.prompt}
    assistant = messages[1]
    assert assistant["role"] == "assistant"
    thinking = [b for b in assistant["content"] if b["type"] == "thinking"]
    signature = next(i["signature"] for i in fx1.expected["output_items"]
                     if i["type"] == "reasoning")
    assert thinking and thinking[0]["signature"] == signature
    answer = next(i["content"] for i in fx1.expected["output_items"]
                  if i["type"] == "message" and i["origin"] == "agent")
    assert {"type": "text", "text": answer} in assistant["content"]
    assert messages[-1] == {"role": "user", "content": fx2.prompt}


async def test_openai_second_turn_carries_history(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        server = start_server("live", fake=fake)
        with trio.fail_after(60):
            first, _ = await run_turn(server.base_url, "openai", "two_turns_1")
            await run_turn(server.base_url, "openai", "two_turns_2",
                           thread_id=first["thread_id"])
    fx1, fx2 = LIBRARY.get("openai", "two_turns_1"), LIBRARY.get("openai", "two_turns_2")
    text = json.dumps(sent_requests(server, fx2.prompt)[0]["input"])
    answer = next(i["content"] for i in fx1.expected["output_items"]
                  if i["type"] == "message" and i["origin"] == "agent")
    assert json.dumps(fx1.prompt) in text and json.dumps(answer) in text


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_tool_outputs_go_back_in_the_provider_format(start_server: StartServer,
                                                           provider: str) -> None:
    fx = LIBRARY.get(provider, "tool_read_file")
    with FakeProvider() as fake:
        server = start_server("live", fake=fake)
        with trio.fail_after(60):
            _, resp = await run_turn(server.base_url, provider, "tool_read_file")
    assert response_view(resp) == fx.expected  # type: ignore[arg-type]
    first, second = sent_requests(server, fx.prompt)
    output = fx.exchanges[0].tool_outputs[0]
    if provider == "openai":
        call = next(i for i in second["input"] if i.get("type") == "function_call")
        result = next(i for i in second["input"] if i.get("type") == "function_call_output")
        assert call["call_id"] == output.call_id == result["call_id"]
        assert result["output"] == output.output
        assert [t["name"] for t in first["tools"]] == ["read_file"]
    else:
        last = second["messages"][-1]
        assert last["role"] == "user"
        block = last["content"][0]
        assert block["type"] == "tool_result" and block["tool_use_id"] == output.call_id
        assert block["content"] == output.output and block["is_error"] is False
        assert [t["name"] for t in first["tools"]] == ["read_file"]


@pytest.mark.parametrize(("status", "retry_after"), [(429, "0.2"), (500, None), (529, None)])
async def test_retryable_errors_are_retried(start_server: StartServer, status: int,
                                            retry_after: str | None) -> None:
    provider = "anthropic" if status == 529 else "openai"
    with FakeProvider() as fake:
        fake.faults += [Fault("status", status=status, retry_after=retry_after),
                        Fault("status", status=status, retry_after=retry_after)]
        server = start_server("live", fake=fake, CODY_PROVIDER_BACKOFF_BASE_S="0.05")
        with trio.fail_after(60):
            start = trio.current_time()
            _, resp = await run_turn(server.base_url, provider, "simple_message")
            took = trio.current_time() - start
    assert response_view(resp) == LIBRARY.get(provider, "simple_message").expected  # type: ignore[arg-type]
    assert len(fake.requests) == 3
    if retry_after:
        assert took >= 0.4  # Retry-After honoured twice


async def test_retries_are_bounded(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        fake.faults += [Fault("status", status=503) for _ in range(10)]
        server = start_server("live", fake=fake)
        with trio.fail_after(60):
            _, resp = await run_turn(server.base_url, "openai", "simple_message")
    assert resp.status == "error"  # type: ignore[attr-defined]
    assert resp.error.details["status"] == 503  # type: ignore[attr-defined]
    assert len(fake.requests) == 4  # the first try and 3 retries


async def test_non_retryable_error_carries_the_provider_code(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        fake.faults.append(Fault("status", status=400, body={"error": {
            "message": "Unsupported value: 'temperature'", "type": "invalid_request_error",
            "param": "temperature", "code": "unsupported_value"}}))
        server = start_server("live", fake=fake)
        with trio.fail_after(30):
            _, resp = await run_turn(server.base_url, "openai", "simple_message")
    assert resp.status == "error"  # type: ignore[attr-defined]
    assert resp.error.code == "unsupported_value"  # type: ignore[attr-defined]
    assert resp.error.message == "openai: Unsupported value: 'temperature'"  # type: ignore[attr-defined]
    assert resp.error.details == {"provider": "openai", "status": 400,  # type: ignore[attr-defined]
                                  "attempts": 1}
    assert len(fake.requests) == 1


async def test_a_refused_key_names_the_provider_and_its_variable(
        start_server: StartServer) -> None:
    with FakeProvider(api_key="other-key") as fake:
        server = start_server("live", fake=fake, ANTHROPIC_API_KEY="wrong-anthropic-key",
                              OPENAI_API_KEY="wrong-openai-key")
        with trio.fail_after(60):
            for provider in ("openai", "anthropic"):
                _, resp = await run_turn(server.base_url, provider, "simple_message")
                var = f"{provider.upper()}_API_KEY"
                error = resp.error  # type: ignore[attr-defined]
                assert error.code == "PROVIDER_AUTH"
                assert error.message.startswith(f"{provider} refused the API key (HTTP 401")
                assert error.message.endswith(f"check the key in {var}")
                assert error.details == {
                    "provider": provider, "status": 401, "attempts": 1,
                    "provider_code": "authentication_error", "api_key_env": var}
                assert "wrong-" not in error.message  # the fake echoed the key it got
    assert len(fake.requests) == 2


ERRORS_A_USER_CAN_ACT_ON = [
    ("openai", 404, {"error": {"message": "The model `gpt-5-mini` does not exist or you do "
                               "not have access to it.", "type": "invalid_request_error",
                               "param": None, "code": "model_not_found"}}, "MODEL_NOT_FOUND"),
    ("anthropic", 404, {"type": "error", "error": {"type": "not_found_error",
                                                   "message": "model: claude-haiku-4-5"}},
     "MODEL_NOT_FOUND"),
    ("openai", 400, {"error": {"message": "Your input exceeds the context window of this "
                               "model. Please adjust your input and try again.",
                               "type": "invalid_request_error", "param": "input",
                               "code": "context_length_exceeded"}}, "CONTEXT_TOO_LONG"),
    ("anthropic", 400, {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 208310 tokens > 200000 maximum"}}, "CONTEXT_TOO_LONG"),
]


async def test_model_and_context_errors_name_the_model(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        server = start_server("live", fake=fake)
        with trio.fail_after(60):
            for provider, status, body, code in ERRORS_A_USER_CAN_ACT_ON:
                fake.faults.append(Fault("status", status=status, body=body,
                                         provider=provider))
                _, resp = await run_turn(server.base_url, provider, "simple_message")
                wire = fake.requests[-1].body["model"]
                error = resp.error  # type: ignore[attr-defined]
                assert (error.code, error.details["model"]) == (code, wire), provider
                assert f"model {wire}" in error.message
                assert f"; HTTP {status}: " in error.message
                assert error.details["provider_code"] == (body["error"].get("code")  # type: ignore[index, union-attr]
                                                          or body["error"]["type"])  # type: ignore[index]


async def test_no_key_anywhere_a_run_reaches(start_server: StartServer) -> None:
    """Recognisable fake keys, a provider that echoes a wrong key back: neither key is in the
    events, the Responses (live and stored), the store or the server's log."""
    good, bad = "sk-cody-LEAKCHECK-good-5d1f0a9b", "sk-ant-cody-LEAKCHECK-bad-7c2e4f1d"
    with FakeProvider(api_key=good) as fake:
        server = start_server("live", fake=fake, OPENAI_API_KEY=good, ANTHROPIC_API_KEY=bad,
                              CODY_LOG_LEVEL="debug")
        seen: list[str] = []
        with trio.fail_after(60):
            async with make_client(server.base_url) as client:
                for provider, name in (("openai", "tool_read_file"),
                                       ("anthropic", "simple_message")):
                    fx = LIBRARY.get(provider, name)
                    accepted = await submit(client, prompt=fx.prompt, provider_id=provider,
                                            model=fx.model, tools=list(fx.tools))
                    await stream(client, accepted["run_id"])
                    stored = await wait_persisted(client, accepted["thread_id"],
                                                  accepted["run_id"])
                    seen.append(stored.model_dump_json())
                    for path in (f"/api/v2/runs/{accepted['run_id']}/events",
                                 f"/api/v2/runs/{accepted['run_id']}",
                                 f"/api/v2/threads/{accepted['thread_id']}"):
                        seen.append((await client.get(path)).text)
        assert fake.requests[-1].headers["x-api-key"] == bad  # the bad key was sent, and echoed
    statuses = [json.loads(s)["status"] for s in seen[::4]]
    assert statuses == ["complete", "error"]
    assert "PROVIDER_AUTH" in seen[-1] and "ANTHROPIC_API_KEY" in seen[-1]
    server.stop()
    files = [p for p in server.data_dir.rglob("*") if p.is_file()]
    assert {"server.log", "cody.db"} <= {p.name for p in files}
    seen += [p.read_bytes().decode("utf-8", errors="replace") for p in files]
    everything = "\n".join(seen)
    for key in (good, bad):
        assert key not in everything
        assert key[-12:] not in everything  # nor a recognisable piece of it
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_mid_stream_drop_ends_with_provider_error(start_server: StartServer,
                                                        provider: str) -> None:
    with FakeProvider() as fake:
        fake.faults.append(Fault("drop", after_blocks=4))
        server = start_server("live", fake=fake)
        with trio.fail_after(30):
            accepted, resp = await run_turn(server.base_url, provider, "rapid_deltas")
            async with make_client(server.base_url) as client:
                stored = await wait_persisted(client, accepted["thread_id"], accepted["run_id"])
    assert resp.status == "error"  # type: ignore[attr-defined]
    assert resp.error.code in ("STREAM_TRUNCATED", "PROVIDER_CONNECTION_LOST")  # type: ignore[attr-defined]
    assert stored.status == "error"


async def test_malformed_chunk_from_the_wire(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        fake.faults.append(Fault("malformed", after_blocks=5))
        server = start_server("live", fake=fake)
        with trio.fail_after(30):
            _, resp = await run_turn(server.base_url, "openai", "simple_message")
    assert resp.status == "error"  # type: ignore[attr-defined]
    assert resp.error.code == "MALFORMED_CHUNK"  # type: ignore[attr-defined]


async def test_stall_hits_the_idle_timeout(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        fake.faults.append(Fault("stall", after_blocks=3, stall_s=20))
        server = start_server("live", fake=fake, CODY_PROVIDER_IDLE_TIMEOUT_S="1")
        with trio.fail_after(15):
            start = trio.current_time()
            _, resp = await run_turn(server.base_url, "anthropic", "simple_message")
            took = trio.current_time() - start
    assert resp.status == "error"  # type: ignore[attr-defined]
    assert resp.error.code == "PROVIDER_IDLE_TIMEOUT"  # type: ignore[attr-defined]
    assert 1.0 <= took < 8


async def test_cancel_closes_the_upstream_connection(start_server: StartServer) -> None:
    with FakeProvider(block_delay_s=0.02) as fake:
        server = start_server("live", fake=fake)
        fx = LIBRARY.get("openai", "rapid_deltas")
        with trio.fail_after(30):
            async with make_client(server.base_url) as client:
                accepted = await submit(client, prompt=fx.prompt, provider_id="openai",
                                        model=fx.model)
                await trio.sleep(0.5)
                r = await client.post(f"/api/v2/runs/{accepted['run_id']}/cancel")
                assert r.json()["status"] == "aborted"
                for _ in range(200):  # the fake server sees its client go away
                    if fake.closed_early:
                        break
                    await trio.sleep(0.05)
                assert fake.closed_early == 1
    assert fake.completed == 0


async def test_provider_without_a_key_is_not_configured(start_server: StartServer) -> None:
    with FakeProvider() as fake:
        server = start_server("live", fake=fake, ANTHROPIC_API_KEY="")
        async with make_client(server.base_url) as client:
            r = await client.post("/api/v2/runs", json={"prompt": "hi",
                                                        "model": "claude-haiku-4.5"})
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "PROVIDER_NOT_CONFIGURED"
            ok = await client.post("/api/v2/runs", json={"prompt": "hi"})  # openai has a key
            assert ok.status_code == 202
