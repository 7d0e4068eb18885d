"""The recorded OpenAI fixtures against the official SDK's models, and against Cody's oracle.

Every data block of every ``wire_valid`` stream must validate as the SDK's
``ResponseStreamEvent`` (and its ``type`` must match the SSE ``event:`` name); every request
body must validate as ``ResponseCreateParamsStreaming``. That TypedDict validates lazily
(``Iterable`` fields come back as validator iterators) and silently drops unknown keys, so
``validate_request`` iterates everything and requires the validated body to equal the input:
an unknown key anywhere, or a value the SDK would coerce, fails.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import ResponseStreamEvent
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from pydantic import TypeAdapter, ValidationError

from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.openai_request import build_openai_request
from actors.providers.settings import RequestSettings
from actors.tools import BUILTIN_TOOLS
from runtime.catalogue import BUILTIN_MODELS
from runtime.schema import OUTPUT_ITEM_ADAPTER, OutputItem
from runtime.sse import SSEDecoder
from tests.unit.wire_checks import sdk_accepts

LIBRARY = FixtureLibrary()
OPENAI = [fx for fx in LIBRARY if fx.provider == "openai"]
EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
REQUEST_ADAPTER: TypeAdapter[Any] = TypeAdapter(ResponseCreateParamsStreaming)


def validate_request(body: dict[str, Any]) -> None:
    """Raises ``ValidationError`` or ``AssertionError`` unless the SDK accepts ``body`` as is."""
    sdk_accepts(REQUEST_ADAPTER, body)


def _id(fx: Fixture) -> str:
    return fx.name


def test_there_are_openai_fixtures() -> None:
    names = {fx.name for fx in OPENAI}
    assert {"simple_message", "reasoning_message", "tool_read_file", "two_turns_1",
            "two_turns_2", "tool_exec", "parallel_tools", "provider_error", "tool_failure",
            "tool_timeout", "malformed_chunk", "empty_message", "large_response",
            "rapid_deltas", "out_of_order", "schema_violation"} <= names


def test_prompts_are_distinct_per_model_and_one_default_each() -> None:
    seen = [(fx.model, fx.prompt) for fx in OPENAI]
    assert len(seen) == len(set(seen))
    defaults = sorted(fx.model for fx in OPENAI if fx.default)
    assert defaults == ["gpt-5-codex", "gpt-5-mini"]
    mini = LIBRARY.select("openai", "gpt-5-mini", "anything else")
    codex = LIBRARY.select("openai", "gpt-5-codex", "other")
    assert mini is not None and mini.name == "simple_message"
    assert codex is not None and codex.name == "reasoning_message"


@pytest.mark.parametrize("fx", [fx for fx in OPENAI if fx.wire_valid], ids=_id)
def test_every_block_validates_as_an_sdk_stream_event(fx: Fixture) -> None:
    for ex in fx.exchanges:
        messages = SSEDecoder().feed(ex.stream)
        assert messages
        assert ex.stream.endswith(b"\n\n")
        seqs = []
        for m in messages:
            event = EVENT_ADAPTER.validate_json(m.data)
            assert event.type == m.event
            seqs.append(event.sequence_number)
        assert sorted(seqs) == list(range(len(seqs)))
        # only the out-of-order fixture (TC-ER-09) sends events out of sequence
        assert (seqs == sorted(seqs)) == ("TC-ER-09" not in fx.scenarios)
        assert messages[0].event == "response.created"
        assert messages[-1].event in ("response.completed", "response.failed")


@pytest.mark.parametrize("fx", [fx for fx in OPENAI if not fx.wire_valid], ids=_id)
def test_broken_fixtures_are_broken_in_exactly_one_block(fx: Fixture) -> None:
    bad = 0
    for ex in fx.exchanges:
        for m in SSEDecoder().feed(ex.stream):
            try:
                EVENT_ADAPTER.validate_json(m.data)
            except ValidationError:
                bad += 1
    assert bad == 1


@pytest.mark.parametrize("fx", OPENAI, ids=_id)
def test_requests_validate_as_sdk_create_params(fx: Fixture) -> None:
    for ex in fx.exchanges:
        validate_request(ex.request)
        assert ex.request["stream"] is True and ex.request["store"] is False


def test_validate_request_catches_unknown_keys_and_bad_values() -> None:
    body = json.loads(json.dumps(LIBRARY.get("openai", "parallel_tools").exchanges[1].request))
    validate_request(body)
    body["input"][0]["colour"] = "teal"
    with pytest.raises(AssertionError):
        validate_request(body)
    del body["input"][0]["colour"]
    body["tools"][0]["type"] = "not-a-tool"
    with pytest.raises(ValidationError):
        validate_request(body)


def _history(fx: Fixture) -> list[OutputItem]:
    if fx.after is None:
        return []
    before = LIBRARY.get("openai", fx.after)
    return _history(before) + [OUTPUT_ITEM_ADAPTER.validate_python(i)
                               for i in before.expected["output_items"]]


@pytest.mark.parametrize("fx", OPENAI, ids=_id)
def test_requests_are_what_the_run_actor_would_send(fx: Fixture) -> None:
    """Request N carries the history, the prompt and everything the turn produced before it."""
    entry = BUILTIN_MODELS[fx.model]
    settings = RequestSettings(model_name=entry.name,
                               reasoning_effort="medium" if entry.reasoning else None)
    tools = [BUILTIN_TOOLS[t] for t in fx.tools]
    items = [OUTPUT_ITEM_ADAPTER.validate_python(i) for i in fx.expected["output_items"]]
    for ex in fx.exchanges:
        # everything shown before the first item this exchange's stream produced
        made = {json.loads(m.data)["item"]["id"] for m in SSEDecoder().feed(ex.stream)
                if m.event == "response.output_item.added"}
        cut = next((i for i, item in enumerate(items) if item.id in made), len(items))
        assert ex.request == build_openai_request(_history(fx) + items[:cut], tools, settings)


def test_second_turn_request_carries_the_first_turn() -> None:
    first, second = LIBRARY.get("openai", "two_turns_1"), LIBRARY.get("openai", "two_turns_2")
    sent = second.exchanges[0].request["input"]
    answer = first.expected["output_items"][1]["content"]
    assert sent == [
        {"type": "message", "role": "user", "content": first.prompt},
        {"type": "message", "role": "assistant", "content": answer},
        {"type": "message", "role": "user", "content": second.prompt},
    ]


def test_large_response_is_at_least_one_mebibyte_in_small_deltas() -> None:
    fx = LIBRARY.get("openai", "large_response")
    deltas = [json.loads(m.data)["delta"] for m in SSEDecoder().feed(fx.exchanges[0].stream)
              if m.event == "response.output_text.delta"]
    assert sum(len(d.encode()) for d in deltas) >= 1_048_576
    assert all(1024 <= len(d.encode()) <= 4096 for d in deltas)


def test_rapid_deltas_are_a_thousand_characters() -> None:
    fx = LIBRARY.get("openai", "rapid_deltas")
    deltas = [json.loads(m.data)["delta"] for m in SSEDecoder().feed(fx.exchanges[0].stream)
              if m.event == "response.output_text.delta"]
    assert len(deltas) == 1000 and all(len(d) == 1 for d in deltas)
