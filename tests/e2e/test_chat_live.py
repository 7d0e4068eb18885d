"""The ``openai-chat`` protocol live: the real HTTP client (actors/providers/live.py), the
protocol's request builder and normaliser (looked up in actors/providers/protocols.py), the
real tools and the reducer, against the fake provider server streaming the recorded chunks
over loopback HTTP.

The driver below does for one turn what the run actor does (request, stream, normalise, tools,
next request, usage totals), so that the protocol's pieces are checked on their own; the same
recordings through ``cody serve``, its run actors and ``POST /runs`` are in
tests/e2e/test_chat_conditions.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import httpx
import pytest
import trio

from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.live import Endpoint, HttpProvider, RetryPolicy
from actors.providers.protocols import protocol
from actors.providers.provider import ProviderCall
from actors.providers.settings import RequestSettings
from actors.tools import ToolRunner
from runtime.catalogue import load_catalogue
from runtime.envelope import EventFactory
from runtime.errors import CONTEXT_TOO_LONG, MODEL_NOT_FOUND, PROVIDER_AUTH, ProviderError
from runtime.ids import new_traceparent, new_uuid, prompt_item_id, tool_output_item_id
from runtime.reducer import ResponseReducer
from runtime.schema import (
    OUTPUT_ITEM_ADAPTER,
    ErrorInfo,
    FunctionCallItem,
    FunctionCallOutputItem,
    ItemDone,
    ItemStart,
    MessageItem,
    OutputItem,
    Payload,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    Usage,
    UsageUpdate,
)
from tests.e2e.server import WORKSPACE
from tests.fake_provider import FakeProvider, Fault
from tests.harness import response_view

LIBRARY = FixtureLibrary()
CHAT = [fx for fx in LIBRARY if fx.protocol == "openai-chat"]
CATALOGUE = load_catalogue(LIBRARY.root / "openai-chat" / "cody.toml", {}, required=True)
KEY = "sk-local-FAKE-93e1c0d7a4b8"


class _Stop(Exception):
    """The turn ended with a response_error (already emitted)."""


async def live_turn(fake: FakeProvider, fx: Fixture, *, history: Sequence[OutputItem] = (),
                    model: str | None = None, api_key: str | None = None) -> Response:
    """One turn of ``fx`` over HTTP, as the run actor would drive it."""
    resolved = CATALOGUE.resolve(model or fx.model)
    endpoint = Endpoint.from_spec(resolved.provider, {"LOCAL_API_KEY": api_key or fake.api_key})
    endpoint = Endpoint(endpoint.id, endpoint.protocol, fake.chat_base_url, endpoint.api_key,
                        endpoint.api_key_env)
    wire = protocol(endpoint.protocol)
    settings = RequestSettings(resolved.wire_name,
                               reasoning_effort="medium" if resolved.reasoning else None)
    runner = ToolRunner(WORKSPACE, enabled=fx.tools, timeout_s=fx.tool_timeout_s or 10,
                        output_cap=65_536)
    run_id = new_uuid()
    factory = EventFactory(run_id, new_traceparent(), itertools.count(1).__next__)
    reducer = ResponseReducer()
    turn_usage: Usage | None = None

    def emit(p: Payload) -> None:
        reducer.apply(factory.make(p))

    prompt = MessageItem(id=prompt_item_id(run_id), origin="user", role="user",
                         content=fx.prompt)
    items: list[OutputItem] = [prompt]
    emit(ResponseStart(response_id=run_id, turn_id=new_uuid(), thread_id=new_uuid(),
                       model_id=resolved.model_id, provider_id=endpoint.id, created_at=1))
    emit(ItemStart(item_id=prompt.id, item_type="message"))
    emit(ItemDone(item_id=prompt.id, final_item=prompt))

    def absorb(payloads: list[Payload], calls: list[FunctionCallItem],
               done: list[ResponseDone], usage: list[Usage]) -> None:
        for p in payloads:
            if isinstance(p, UsageUpdate):
                usage.append(p.usage)
                emit(UsageUpdate(response_id=run_id, usage=p.usage if turn_usage is None
                                 else turn_usage + p.usage))
            elif isinstance(p, ResponseDone):
                done.append(p)
            else:
                emit(p)
                if isinstance(p, ResponseErrorPayload):
                    raise _Stop
                if isinstance(p, ItemDone):
                    items.append(p.final_item)
                    if isinstance(p.final_item, FunctionCallItem):
                        calls.append(p.final_item)

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        http = HttpProvider(endpoint, client=client, retry=RetryPolicy(2, 0.05, 0.2),
                            idle_timeout_s=10)
        try:
            for exchange in range(10):
                body = wire.build_request([*history, *items], runner.specs, settings)
                normaliser = wire.normaliser(run_id)
                calls: list[FunctionCallItem] = []
                done: list[ResponseDone] = []
                usage: list[Usage] = []
                call = ProviderCall(run_id=run_id, provider_id=endpoint.id,
                                    model_id=resolved.model_id, prompt=fx.prompt,
                                    exchange=exchange, body=body)
                async with http.stream(call) as chunks:
                    async for chunk in chunks:
                        absorb(normaliser.feed(chunk), calls, done, usage)
                        if normaliser.finished:
                            break
                if not normaliser.finished:
                    absorb(normaliser.end_of_stream(), calls, done, usage)
                if usage:
                    turn_usage = usage[-1] if turn_usage is None else turn_usage + usage[-1]
                if calls and done[0].finish_reason == "tool_calls":
                    for c in calls:
                        result = await runner.run(c.name, c.arguments)
                        output = FunctionCallOutputItem(
                            id=tool_output_item_id(c.call_id), origin="tool_harness",
                            call_id=c.call_id, output=result.output, success=result.success)
                        items.append(output)
                        emit(ItemStart(item_id=output.id, item_type="function_call_output",
                                       call_id=c.call_id))
                        emit(ItemDone(item_id=output.id, final_item=output))
                    continue
                emit(ResponseDone(response_id=run_id, status="complete", usage=turn_usage,
                                  finish_reason=done[0].finish_reason))
                break
        except _Stop:
            pass
        except ProviderError as exc:
            emit(ResponseErrorPayload(response_id=run_id, error=ErrorInfo(
                code=exc.code, message=exc.message, details=exc.details)))
    return reducer.snapshot()


def history_of(fx: Fixture) -> list[OutputItem]:
    if fx.after is None:
        return []
    before = LIBRARY.get(fx.provider, fx.after)
    return history_of(before) + [OUTPUT_ITEM_ADAPTER.validate_python(i)
                                 for i in before.expected["output_items"]]


@pytest.mark.parametrize("fx", CHAT, ids=lambda fx: fx.name)
async def test_every_recorded_turn_live(fx: Fixture) -> None:
    """Happy paths (message, reasoning, tool loops, parallel calls, a later turn with its
    history), tool failure and timeout, and the broken streams, each as its fixture says; the
    server received exactly the recorded requests."""
    with FakeProvider(LIBRARY) as fake, trio.fail_after(60):
        resp = await live_turn(fake, fx, history=history_of(fx))
    assert response_view(resp) == fx.expected
    assert [r.body for r in fake.requests] == [ex.request for ex in fx.exchanges]
    assert all(r.path == "/v1/chat/completions" for r in fake.requests)
    assert all(r.headers["Authorization"] == f"Bearer {fake.api_key}" for r in fake.requests)


async def test_a_dropped_connection_ends_the_turn() -> None:
    fx = LIBRARY.get("local", "rapid_deltas")
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        fake.faults.append(Fault("drop", after_blocks=4))
        resp = await live_turn(fake, fx)
    assert resp.status == "error" and resp.error is not None
    assert resp.error.code in ("STREAM_TRUNCATED", "PROVIDER_CONNECTION_LOST")


async def test_a_malformed_chunk_from_the_wire() -> None:
    fx = LIBRARY.get("local", "simple_message")
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        fake.faults.append(Fault("malformed", after_blocks=3))
        resp = await live_turn(fake, fx)
    assert resp.status == "error" and resp.error is not None
    assert resp.error.code == "MALFORMED_CHUNK"
    assert resp.error.details == {"provider": "openai-chat", "event": "chat.completion.chunk"}


async def test_rate_limits_are_retried() -> None:
    fx = LIBRARY.get("local", "simple_message")
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        fake.faults.append(Fault("status", status=429, retry_after="0.1"))
        resp = await live_turn(fake, fx)
    assert response_view(resp) == fx.expected
    assert len(fake.requests) == 2


async def test_a_wrong_key_is_provider_auth_naming_its_variable() -> None:
    fx = LIBRARY.get("local", "simple_message")
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        resp = await live_turn(fake, fx, api_key=KEY)
    assert fake.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert resp.status == "error" and resp.error is not None
    assert resp.error.code == PROVIDER_AUTH
    assert "local refused the API key" in resp.error.message
    assert "LOCAL_API_KEY" in resp.error.message
    assert resp.error.details is not None and resp.error.details["api_key_env"] == "LOCAL_API_KEY"
    # the fake echoed the key it got; nothing of it reaches the Response
    assert KEY not in resp.model_dump_json()


async def test_an_unknown_model_is_model_not_found() -> None:
    fx = LIBRARY.get("local", "simple_message")
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        resp = await live_turn(fake, fx, model="local/qwen9-400b")
    assert resp.model_id == "local/qwen9-400b"
    assert fake.requests[0].body["model"] == "qwen9-400b"  # sent as is
    assert resp.error is not None and resp.error.code == MODEL_NOT_FOUND
    assert resp.error.message.startswith("local has no model qwen9-400b (Cody model "
                                         "local/qwen9-400b)")


async def test_a_context_overflow_is_context_too_long() -> None:
    fx = LIBRARY.get("local", "simple_message")
    vllm = {"object": "error", "type": "BadRequestError", "param": None, "code": 400,
            "message": "This model's maximum context length is 32768 tokens. However, you "
                       "requested 40960 tokens (32768 in the messages, 8192 in the "
                       "completion). Please reduce the length of the messages or completion."}
    with FakeProvider(LIBRARY) as fake, trio.fail_after(30):
        fake.faults.append(Fault("status", status=400, body=vllm))
        resp = await live_turn(fake, fx)
    assert resp.error is not None and resp.error.code == CONTEXT_TOO_LONG
    assert resp.error.details is not None
    assert resp.error.details["provider_code"] == "BadRequestError"
    assert resp.error.details["model"] == "Qwen/Qwen3-8B"
