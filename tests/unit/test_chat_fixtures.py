"""The recorded Chat Completions fixtures against the official ``openai`` SDK, and against
Cody's oracle.

Every data block of every ``wire_valid`` stream must be a chunk the SDK reads: a
``ChatCompletionChunk`` (strict: no field the SDK does not know, except the reasoning deltas
that compatible servers add, ``reasoning_content`` and ``reasoning``), an in-stream error
``{"error": ErrorObject}`` (what the SDK's ``Stream`` raises ``APIError`` for), or
``[DONE]``. Every request body must validate as ``CompletionCreateParamsStreaming``, and,
since that TypedDict validates lazily and drops unknown keys, equal what the SDK makes of it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.shared import ErrorObject
from pydantic import BaseModel, TypeAdapter, ValidationError

from actors.providers.chat_request import build_chat_request
from actors.providers.chat_stream import ChatCompletionsNormaliser
from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.settings import RequestSettings
from actors.tools import BUILTIN_TOOLS
from runtime.catalogue import load_catalogue
from runtime.schema import OUTPUT_ITEM_ADAPTER, OutputItem, UsageUpdate
from runtime.sse import SSEDecoder
from tests.unit.wire_checks import sdk_accepts

LIBRARY = FixtureLibrary()
CHAT = [fx for fx in LIBRARY if fx.protocol == "openai-chat"]
CATALOGUE = load_catalogue(LIBRARY.root / "openai-chat" / "cody.toml", {}, required=True)
REQUEST_ADAPTER: TypeAdapter[Any] = TypeAdapter(CompletionCreateParamsStreaming)
#: Fields compatible servers add that the SDK does not model, by the model that carries them.
SERVER_EXTRAS = {"ChoiceDelta": {"reasoning_content", "reasoning"}}


class InStreamError(BaseModel):
    error: ErrorObject


def validate_request(body: dict[str, Any]) -> None:
    """Raises ``ValidationError`` or ``AssertionError`` unless the SDK accepts ``body`` as is."""
    sdk_accepts(REQUEST_ADAPTER, body)


def unknown_fields(model: BaseModel, path: str = "chunk") -> list[str]:
    """Every field of ``model`` (recursively) that the SDK does not know."""
    extra = set(model.model_extra or ()) - SERVER_EXTRAS.get(type(model).__name__, set())
    found = [f"{path}.{name}" for name in sorted(extra)]
    for name in type(model).model_fields:
        value = getattr(model, name)
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if isinstance(v, BaseModel):
                found += unknown_fields(v, f"{path}.{name}[{i}]" if isinstance(value, list)
                                        else f"{path}.{name}")
    return found


def validate_block(data: str) -> str:
    """The kind of a stream's data block, if the SDK reads it: ``chunk``, ``error``, ``done``."""
    if data == "[DONE]":
        return "done"
    if "error" in json.loads(data):
        InStreamError.model_validate_json(data, strict=True)
        return "error"
    chunk = ChatCompletionChunk.model_validate_json(data)
    assert unknown_fields(chunk) == [], data
    return "chunk"


def _id(fx: Fixture) -> str:
    return fx.name


def test_there_are_chat_fixtures() -> None:
    names = {fx.name for fx in CHAT}
    assert {"simple_message", "reasoning_message", "reasoning_field", "tool_read_file",
            "two_turns_1", "two_turns_2", "tool_exec", "parallel_tools", "provider_error",
            "tool_failure", "tool_timeout", "malformed_chunk", "empty_message",
            "large_response", "rapid_deltas", "schema_violation", "truncated_stream"} <= names
    assert {fx.provider for fx in CHAT} == {"local"}


def test_prompts_are_distinct_per_model_and_one_default_each() -> None:
    seen = [(fx.model, fx.prompt) for fx in CHAT]
    assert len(seen) == len(set(seen))
    assert sorted(fx.model for fx in CHAT if fx.default) == ["gpt-oss-20b", "qwen3-8b"]
    qwen = LIBRARY.select("local", "qwen3-8b", "anything else")
    oss = LIBRARY.select("local", "gpt-oss-20b", "other")
    assert qwen is not None and qwen.name == "simple_message"
    assert oss is not None and oss.name == "reasoning_message"


def test_fixture_models_are_in_their_catalogue() -> None:
    for fx in CHAT:
        resolved = CATALOGUE.resolve(fx.model)
        assert resolved.provider.id == fx.provider and resolved.provider.protocol == fx.protocol
        assert all(ex.request["model"] == resolved.wire_name for ex in fx.exchanges)


@pytest.mark.parametrize("fx", [fx for fx in CHAT if fx.wire_valid], ids=_id)
def test_every_block_validates_as_an_sdk_chunk(fx: Fixture) -> None:
    for ex in fx.exchanges:
        messages = SSEDecoder().feed(ex.stream)
        assert messages and ex.stream.endswith(b"\n\n")
        kinds = [validate_block(m.data) for m in messages]
        assert all(m.event == "message" for m in messages)  # data-only SSE
        if fx.name == "provider_error":
            assert kinds[-1] == "error" and kinds.count("error") == 1
        elif fx.name == "truncated_stream":
            assert set(kinds) == {"chunk"}
        else:
            assert kinds[-1] == "done" and kinds.count("done") == 1
            chunks = [json.loads(m.data) for m in messages[:-1]]
            assert len({c["id"] for c in chunks}) == 1  # one completion id per body
            # usage: null until the last chunk, which has no choices and the usage
            assert all(c["usage"] is None for c in chunks[:-1])
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is not None
            assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "tool_calls")


@pytest.mark.parametrize("fx", [fx for fx in CHAT if not fx.wire_valid], ids=_id)
def test_broken_fixtures_are_broken_in_exactly_one_block(fx: Fixture) -> None:
    bad = 0
    for ex in fx.exchanges:
        for m in SSEDecoder().feed(ex.stream):
            try:
                validate_block(m.data)
            except (ValidationError, ValueError):
                bad += 1
    assert bad == 1


def test_the_chunk_check_refuses_unknown_fields() -> None:
    fx = LIBRARY.get("local", "simple_message")
    data = json.loads(SSEDecoder().feed(fx.exchanges[0].stream)[1].data)
    validate_block(json.dumps(data))
    data["choices"][0]["delta"]["colour"] = "teal"
    with pytest.raises(AssertionError):
        validate_block(json.dumps(data))
    del data["choices"][0]["delta"]["colour"]
    data["choices"][0]["finish_reason"] = "done"
    with pytest.raises(ValidationError):
        validate_block(json.dumps(data))


@pytest.mark.parametrize("fx", CHAT, ids=_id)
def test_requests_validate_as_sdk_create_params(fx: Fixture) -> None:
    for ex in fx.exchanges:
        validate_request(ex.request)
        assert ex.request["stream"] is True
        assert ex.request["stream_options"] == {"include_usage": True}


def test_validate_request_catches_unknown_keys_and_bad_values() -> None:
    body = json.loads(json.dumps(LIBRARY.get("local", "parallel_tools").exchanges[1].request))
    validate_request(body)
    body["messages"][0]["colour"] = "teal"
    with pytest.raises(AssertionError):
        validate_request(body)
    del body["messages"][0]["colour"]
    body["messages"][1]["role"] = "robot"
    with pytest.raises((ValidationError, AssertionError)):
        validate_request(body)


def _history(fx: Fixture) -> list[OutputItem]:
    if fx.after is None:
        return []
    before = LIBRARY.get("local", fx.after)
    return _history(before) + [OUTPUT_ITEM_ADAPTER.validate_python(i)
                               for i in before.expected["output_items"]]


@pytest.mark.parametrize("fx", CHAT, ids=_id)
def test_requests_are_what_the_run_actor_would_send(fx: Fixture) -> None:
    """Request N carries the history, the prompt and everything the turn produced before it,
    with the catalogue's wire name and reasoning setting."""
    resolved = CATALOGUE.resolve(fx.model)
    settings = RequestSettings(model_name=resolved.wire_name,
                               reasoning_effort="medium" if resolved.reasoning else None)
    tools = [BUILTIN_TOOLS[t] for t in fx.tools]
    items = [OUTPUT_ITEM_ADAPTER.validate_python(i) for i in fx.expected["output_items"]]
    # each request follows the prompt, or the end of a tool round (its outputs side by side)
    cuts = [1] + [i + 1 for i, item in enumerate(items) if item.type == "function_call_output"
                  and (i + 1 == len(items) or items[i + 1].type != "function_call_output")]
    assert len(cuts) == len(fx.exchanges)
    for ex, cut in zip(fx.exchanges, cuts, strict=True):
        assert ex.request == build_chat_request(_history(fx) + items[:cut], tools, settings)


def test_reasoning_models_ask_for_it_and_reasoning_is_not_sent_back() -> None:
    reasoning = LIBRARY.get("local", "reasoning_message").exchanges[0].request
    assert reasoning["reasoning_effort"] == "medium"
    assert "reasoning_effort" not in LIBRARY.get("local", "simple_message").exchanges[0].request
    second = LIBRARY.get("local", "two_turns_2").exchanges[0].request["messages"]
    first = LIBRARY.get("local", "two_turns_1")
    answer = first.expected["output_items"][1]["content"]
    assert second == [{"role": "user", "content": first.prompt},
                      {"role": "assistant", "content": answer},
                      {"role": "user", "content": LIBRARY.get("local", "two_turns_2").prompt}]


def test_parallel_calls_go_back_in_one_assistant_message() -> None:
    fx = LIBRARY.get("local", "parallel_tools")
    messages = fx.exchanges[1].request["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    calls = messages[1]["tool_calls"]
    outputs = fx.exchanges[0].tool_outputs
    assert messages[1]["content"] is None
    assert [c["id"] for c in calls] == [t.call_id for t in outputs]
    assert [m["tool_call_id"] for m in messages[2:]] == [t.call_id for t in outputs]
    assert [m["content"] for m in messages[2:]] == [t.output for t in outputs]


def test_large_response_is_at_least_one_mebibyte_in_small_deltas() -> None:
    fx = LIBRARY.get("local", "large_response")
    deltas = [c["choices"][0]["delta"].get("content") for c in _chunks(fx)]
    text = [d for d in deltas if d]
    assert sum(len(d.encode()) for d in text) >= 1_048_576
    assert all(1024 <= len(d.encode()) <= 4096 for d in text)


def test_rapid_deltas_are_a_thousand_characters() -> None:
    deltas = [c["choices"][0]["delta"].get("content")
              for c in _chunks(LIBRARY.get("local", "rapid_deltas"))]
    text = [d for d in deltas if d]
    assert len(text) == 1000 and all(len(d) == 1 for d in text)


def _chunks(fx: Fixture) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in SSEDecoder().feed(fx.exchanges[0].stream)
            if m.data != "[DONE]" and json.loads(m.data).get("choices")]


def test_usage_mapping_is_pinned_by_the_reasoning_fixture() -> None:
    """``completion_tokens_details.reasoning_tokens``, ``prompt_tokens_details.cached_tokens``
    and ``.cache_write_tokens``, exactly as the last chunk sent them."""
    fx = LIBRARY.get("local", "reasoning_message")
    wire = json.loads(SSEDecoder().feed(fx.exchanges[0].stream)[-2].data)["usage"]
    n = ChatCompletionsNormaliser("r")
    (usage,) = [p for p in n.feed(fx.exchanges[0].stream) if isinstance(p, UsageUpdate)]
    assert usage.usage.model_dump() == {
        "prompt_tokens": wire["prompt_tokens"], "completion_tokens": wire["completion_tokens"],
        "total_tokens": wire["total_tokens"],
        "reasoning_tokens": wire["completion_tokens_details"]["reasoning_tokens"],
        "cached_tokens": wire["prompt_tokens_details"]["cached_tokens"],
        "cache_write_tokens": wire["prompt_tokens_details"]["cache_write_tokens"]}
    assert fx.expected["usage"] == usage.usage.model_dump()
    simple = LIBRARY.get("local", "simple_message").expected["usage"]
    assert simple["reasoning_tokens"] is None and simple["cached_tokens"] is None
