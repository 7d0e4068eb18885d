"""The recorded Anthropic fixtures against the official SDK's models, and against Cody's oracle.

Every data block of every ``wire_valid`` stream must validate as the SDK's
``RawMessageStreamEvent`` (its ``type`` matching the SSE ``event:`` name). That union holds
neither ``ping`` nor ``error``: a ping must be exactly ``{"type": "ping"}`` and an error must
validate as the SDK's ``ErrorResponse``. The SDK's models accept unknown keys and coerce
values, so each validated event must also dump back to exactly the JSON it came from, with no
unknown key anywhere. Every request body must validate as ``MessageCreateParamsStreaming``,
checked the same strict way (``validate_request``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import BaseModel, TypeAdapter, ValidationError

from actors.providers.anthropic_request import build_anthropic_request
from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.settings import RequestSettings
from actors.tools import BUILTIN_TOOLS
from runtime.catalogue import BUILTIN_MODELS
from runtime.config import RuntimeConfig
from runtime.schema import OUTPUT_ITEM_ADAPTER, OutputItem
from runtime.sse import SSEDecoder, SSEMessage
from tests.unit.test_anthropic_request import validate_request

LIBRARY = FixtureLibrary()
ANTHROPIC = [fx for fx in LIBRARY if fx.provider == "anthropic"]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
ERROR_ADAPTER: TypeAdapter[Any] = TypeAdapter(ErrorResponse)
SNAPSHOTS = {"claude-haiku-4.5": "claude-haiku-4-5-20251001",
             "claude-sonnet-4.5": "claude-sonnet-4-5-20250929"}


def _id(fx: Fixture) -> str:
    return fx.name


def no_extras(model: Any, where: str = "") -> None:
    """No SDK model anywhere in ``model`` kept a key it does not know."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"unknown keys at {where or 'top'}: {model.model_extra}"
        for name in type(model).model_fields:
            no_extras(getattr(model, name), f"{where}.{name}")
    elif isinstance(model, list | tuple):
        for i, v in enumerate(model):
            no_extras(v, f"{where}[{i}]")
    elif isinstance(model, dict):
        for k, v in model.items():
            no_extras(v, f"{where}.{k}")


def validate_block(m: SSEMessage) -> Any:
    """The SDK's model of one block; raises unless it is exactly what Anthropic sends."""
    if m.event == "ping":
        assert m.data == '{"type": "ping"}'
        return None
    adapter = ERROR_ADAPTER if m.event == "error" else EVENT_ADAPTER
    event = adapter.validate_json(m.data)
    assert event.type == m.event
    no_extras(event)
    assert event.model_dump(mode="json", exclude_unset=True) == json.loads(m.data)
    return event


def messages_of(fx: Fixture) -> list[list[SSEMessage]]:
    return [SSEDecoder().feed(ex.stream) for ex in fx.exchanges]


def test_there_are_anthropic_fixtures() -> None:
    names = {fx.name for fx in ANTHROPIC}
    assert {"simple_message", "thinking_message", "redacted_thinking", "tool_read_file",
            "two_turns_1", "two_turns_2", "tool_exec", "provider_error", "tool_failure",
            "tool_timeout", "malformed_chunk", "empty_message", "large_response",
            "rapid_deltas", "out_of_order", "schema_violation"} <= names


def test_prompts_are_distinct_per_model_and_one_default_each() -> None:
    seen = [(fx.model, fx.prompt) for fx in ANTHROPIC]
    assert len(seen) == len(set(seen))
    defaults = sorted(fx.model for fx in ANTHROPIC if fx.default)
    assert defaults == ["claude-haiku-4.5", "claude-sonnet-4.5"]
    haiku = LIBRARY.select("anthropic", "claude-haiku-4.5", "anything else")
    sonnet = LIBRARY.select("anthropic", "claude-sonnet-4.5", "other")
    assert haiku is not None and haiku.name == "simple_message"
    assert sonnet is not None and sonnet.name == "thinking_message"


@pytest.mark.parametrize("fx", [fx for fx in ANTHROPIC if fx.wire_valid], ids=_id)
def test_every_block_validates_as_an_sdk_stream_event(fx: Fixture) -> None:
    for ex, messages in zip(fx.exchanges, messages_of(fx), strict=True):
        assert messages and ex.stream.endswith(b"\n\n")
        events = [validate_block(m) for m in messages]
        names = [m.event for m in messages]
        assert names[0] == "message_start"
        assert names[1:3] == ["content_block_start", "ping"]
        assert names[-1] in ("message_stop", "error")
        first = events[0]
        assert first.message.model == SNAPSHOTS[fx.model]
        assert first.message.id.startswith("msg_01") and len(first.message.id) == 28
        assert first.message.content == [] and first.message.stop_reason is None
        if names[-1] == "message_stop":
            assert names[-2] == "message_delta" and events[-2].delta.stop_reason is not None


@pytest.mark.parametrize("fx", [fx for fx in ANTHROPIC if fx.wire_valid], ids=_id)
def test_blocks_are_indexed_started_and_stopped(fx: Fixture) -> None:
    """Indexes count up from 0, each block stops, and only TC-ER-09 sends a delta early."""
    for messages in messages_of(fx):
        started: list[int] = []
        stopped: list[int] = []
        early = 0
        for m in messages:
            data = json.loads(m.data)
            if m.event == "content_block_start":
                started.append(data["index"])
            elif m.event == "content_block_stop":
                stopped.append(data["index"])
            elif m.event == "content_block_delta" and data["index"] not in started:
                early += 1
        assert started == list(range(len(started)))
        if messages[-1].event == "message_stop":
            assert stopped == started
        assert early == (1 if "TC-ER-09" in fx.scenarios else 0)


@pytest.mark.parametrize("fx", [fx for fx in ANTHROPIC if not fx.wire_valid], ids=_id)
def test_broken_fixtures_are_broken_in_exactly_one_block(fx: Fixture) -> None:
    bad = 0
    for messages in messages_of(fx):
        for m in messages:
            try:
                validate_block(m)
            except (ValidationError, AssertionError):
                bad += 1
    assert bad == 1


@pytest.mark.parametrize("fx", ANTHROPIC, ids=_id)
def test_requests_validate_as_sdk_create_params(fx: Fixture) -> None:
    for ex in fx.exchanges:
        validate_request(ex.request)
        assert ex.request["stream"] is True


def _history(fx: Fixture) -> list[OutputItem]:
    if fx.after is None:
        return []
    before = LIBRARY.get("anthropic", fx.after)
    return _history(before) + [OUTPUT_ITEM_ADAPTER.validate_python(i)
                               for i in before.expected["output_items"]]


@pytest.mark.parametrize("fx", ANTHROPIC, ids=_id)
def test_requests_are_what_the_run_actor_would_send(fx: Fixture) -> None:
    """Request N carries the history, the prompt and everything the turn produced before it,
    with the settings the runtime uses for the model by default."""
    entry = BUILTIN_MODELS[fx.model]
    settings = RequestSettings(
        model_name=entry.name,
        thinking_budget=RuntimeConfig().default_thinking_budget if entry.reasoning else None)
    tools = [BUILTIN_TOOLS[t] for t in fx.tools]
    items = [OUTPUT_ITEM_ADAPTER.validate_python(i) for i in fx.expected["output_items"]]
    for ex, messages in zip(fx.exchanges, messages_of(fx), strict=True):
        msg = json.loads(messages[0].data)["message"]["id"]
        made = {f"{msg}_{json.loads(m.data)['index']}" for m in messages
                if m.event == "content_block_start"} | {
            json.loads(m.data)["content_block"].get("id") for m in messages
            if m.event == "content_block_start"}
        cut = next((i for i, item in enumerate(items) if item.id in made), len(items))
        assert ex.request == build_anthropic_request(_history(fx) + items[:cut], tools,
                                                     settings)


def test_second_turn_request_carries_the_first_turn_and_its_signature() -> None:
    first, second = LIBRARY.get("anthropic", "two_turns_1"), LIBRARY.get("anthropic",
                                                                         "two_turns_2")
    sent = second.exchanges[0].request["messages"]
    reasoning, answer = first.expected["output_items"][1:3]
    assert reasoning["signature"]
    assert sent == [
        {"role": "user", "content": first.prompt},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": reasoning["content"],
             "signature": reasoning["signature"]},
            {"type": "text", "text": answer["content"]}]},
        {"role": "user", "content": second.prompt},
    ]


def test_tool_loop_request_carries_the_call_and_its_result() -> None:
    fx = LIBRARY.get("anthropic", "tool_read_file")
    (out,) = fx.exchanges[0].tool_outputs
    sent = fx.exchanges[1].request["messages"]
    assert sent[1]["content"][-1] == {"type": "tool_use", "id": out.call_id,
                                      "name": "read_file", "input": {"path": "notes.txt"}}
    assert sent[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": out.call_id, "content": out.output,
         "is_error": False}]}


def _text_deltas(fx: Fixture) -> list[str]:
    return [json.loads(m.data)["delta"]["text"] for m in messages_of(fx)[0]
            if m.event == "content_block_delta"]


def test_large_response_is_at_least_one_mebibyte_in_small_deltas() -> None:
    deltas = _text_deltas(LIBRARY.get("anthropic", "large_response"))
    assert sum(len(d.encode()) for d in deltas) >= 1_048_576
    assert all(1024 <= len(d.encode()) <= 4096 for d in deltas)


def test_rapid_deltas_are_a_thousand_characters() -> None:
    deltas = _text_deltas(LIBRARY.get("anthropic", "rapid_deltas"))
    assert len(deltas) == 1000 and all(len(d) == 1 for d in deltas)


def test_simple_message_usage_is_8_6_14() -> None:
    usage = LIBRARY.get("anthropic", "simple_message").expected["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"],
            usage["total_tokens"]) == (8, 6, 14)


@pytest.mark.parametrize("data", [
    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x","colour":1}}',
    '{"type":"content_block_delta","index":"0","delta":{"type":"text_delta","text":"x"}}',
    '{"type":"content_block_stop","index":0}',  # named content_block_delta below
    '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":5}}',
])
def test_validate_block_catches_unknown_keys_coercion_and_wrong_names(data: str) -> None:
    with pytest.raises((AssertionError, ValidationError)):
        validate_block(SSEMessage(event="content_block_delta", data=data))


def test_validate_block_wants_pings_as_anthropic_sends_them() -> None:
    assert validate_block(SSEMessage(event="ping", data='{"type": "ping"}')) is None
    with pytest.raises(AssertionError):
        validate_block(SSEMessage(event="ping", data='{"type":"ping"}'))
