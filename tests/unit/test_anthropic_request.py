"""The Anthropic Messages request body: turns, blocks, tools, thinking, and the SDK's view."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from anthropic.types.message_create_params import MessageCreateParamsStreaming
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from actors.providers.anthropic_request import build_anthropic_request
from actors.providers.settings import RequestSettings
from runtime.schema import (
    CancelledItem,
    ErrorItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    OutputItem,
    ReasoningItem,
)
from tests.unit.wire_checks import Spec, sdk_accepts

REQUEST_ADAPTER: TypeAdapter[Any] = TypeAdapter(MessageCreateParamsStreaming)
HAIKU = RequestSettings(model_name="claude-haiku-4-5")


def validate_request(body: dict[str, Any]) -> None:
    """Raises ``ValidationError`` or ``AssertionError`` unless the SDK accepts ``body`` as is."""
    sdk_accepts(REQUEST_ADAPTER, body)


READ = Spec("read_file", "Read a file.", {"type": "object", "properties": {
    "path": {"type": "string"}}, "required": ["path"]})


def user(text: str, i: int = 0) -> MessageItem:
    return MessageItem(id=f"run-{i}:prompt", origin="user", role="user", content=text)


def agent(text: str, i: int = 0) -> MessageItem:
    return MessageItem(id=f"msg_01_{i}", origin="agent", role="assistant", content=text)


def thinking(text: str, signature: str | None = "sig==") -> ReasoningItem:
    return ReasoningItem(id="msg_01_0", origin="agent", content=text, signature=signature)


def call(call_id: str = "toolu_01", arguments: str = '{"path": "notes.txt"}') -> FunctionCallItem:
    return FunctionCallItem(id=call_id, name="read_file", arguments=arguments, call_id=call_id)


def output(call_id: str = "toolu_01", text: str = "hello\n",
           success: bool = True) -> FunctionCallOutputItem:
    return FunctionCallOutputItem(id=f"{call_id}:output", origin="tool_harness",
                                  call_id=call_id, output=text, success=success)


def test_a_prompt() -> None:
    body = build_anthropic_request([user("Hi")], [], HAIKU)
    assert body == {"model": "claude-haiku-4-5", "max_tokens": 8192,
                    "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    assert list(body) == ["model", "max_tokens", "messages", "stream"]
    validate_request(body)


def test_a_tool_loop_with_thinking() -> None:
    items: list[OutputItem] = [
        user("What does notes.txt say?"), thinking("I should read it."),
        agent("Reading it."), call(), output(), agent("It says hello.", 1)]
    body = build_anthropic_request(items, [READ], RequestSettings(
        model_name="claude-sonnet-4-5", thinking_budget=2048))
    assert body["messages"] == [
        {"role": "user", "content": "What does notes.txt say?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should read it.", "signature": "sig=="},
            {"type": "text", "text": "Reading it."},
            {"type": "tool_use", "id": "toolu_01", "name": "read_file",
             "input": {"path": "notes.txt"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "hello\n",
             "is_error": False}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It says hello."}]},
    ]
    assert body["tools"] == [{"name": "read_file", "description": "Read a file.",
                              "input_schema": READ.parameters}]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 8192
    validate_request(body)


def test_failed_tool_is_an_error_result_and_parallel_results_share_a_turn() -> None:
    items: list[OutputItem] = [user("Two files"), call("toolu_a"), call("toolu_b"),
                               output("toolu_a", "error: file not found: a", False),
                               output("toolu_b", "b\n")]
    body = build_anthropic_request(items, [READ], HAIKU)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert [b["id"] for b in body["messages"][1]["content"]] == ["toolu_a", "toolu_b"]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_a", "content": "error: file not found: a",
         "is_error": True},
        {"type": "tool_result", "tool_use_id": "toolu_b", "content": "b\n", "is_error": False}]
    validate_request(body)


def test_redacted_thinking_goes_back_as_its_data() -> None:
    items: list[OutputItem] = [
        user("q"), ReasoningItem(id="msg_01_1", origin="agent", content="", redacted=True,
                                 encrypted_content="EmwKAhgB"), agent("a"), user("q2", 1)]
    body = build_anthropic_request(items, [], HAIKU)
    assert body["messages"][1]["content"][0] == {"type": "redacted_thinking", "data": "EmwKAhgB"}
    validate_request(body)


@pytest.mark.parametrize("reasoning", [
    ReasoningItem(id="rs_1", origin="agent", content="OpenAI summary",
                  encrypted_content="gAAAAB..."),
    ReasoningItem(id="msg_01_0", origin="agent", content="unsigned"),
    ReasoningItem(id="msg_01_0", origin="agent", content="", redacted=True),
])
def test_reasoning_anthropic_cannot_verify_is_dropped(reasoning: ReasoningItem) -> None:
    body = build_anthropic_request([user("q"), reasoning, agent("a"), user("next", 1)], [],
                                   HAIKU)
    assert body["messages"][1] == {"role": "assistant",
                                   "content": [{"type": "text", "text": "a"}]}


def test_half_tool_exchanges_are_dropped() -> None:
    items: list[OutputItem] = [user("q"), call("toolu_lonely"), agent("a"),
                               output("toolu_orphan"), user("next", 1)]
    body = build_anthropic_request(items, [], HAIKU)
    assert body["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": "next"}]


@pytest.mark.parametrize(("arguments", "parsed"), [
    ('{"path": "a"}', {"path": "a"}), ("not json", {}), ("[1, 2]", {}), ("", {}),
])
def test_tool_input_is_the_parsed_arguments(arguments: str, parsed: dict[str, Any]) -> None:
    body = build_anthropic_request([user("q"), call(arguments=arguments), output()], [], HAIKU)
    assert body["messages"][1]["content"][0]["input"] == parsed


def test_consecutive_user_turns_merge_and_empty_answers_are_dropped() -> None:
    """A turn that failed before answering leaves two prompts in a row."""
    items: list[OutputItem] = [user("first"), agent(""), agent("   ", 1), user("second", 1)]
    body = build_anthropic_request(items, [], HAIKU)
    assert body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]
    validate_request(body)


def test_system_messages_and_bookkeeping_items() -> None:
    items: list[OutputItem] = [
        MessageItem(id="s", origin="system", content="Be brief."),
        MessageItem(id="s2", origin="user", role="system", content="Use British spelling."),
        user("q"),
        CancelledItem(id="c", origin="user", reason="stop"),
        ErrorItem(id="e", origin="provider", code="overloaded_error", message="Overloaded"),
        MessageItem(id="m", origin="agent", content="answer"),  # no role: from its origin
    ]
    body = build_anthropic_request(items, [], HAIKU)
    assert body["system"] == "Be brief.\n\nUse British spelling."
    assert body["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "answer"}]}]
    validate_request(body)


@pytest.mark.parametrize(("budget", "max_output", "sent_budget", "max_tokens"), [
    (2048, 8192, 2048, 8192),
    (8192, 8192, 8192, 16384),
    (10000, 4096, 10000, 14096),
    (100, 8192, 1024, 8192),
    (100, 1000, 1024, 2024),
])
def test_thinking_budget(budget: int, max_output: int, sent_budget: int,
                         max_tokens: int) -> None:
    body = build_anthropic_request([user("q")], [], RequestSettings(
        model_name="claude-sonnet-4-5", thinking_budget=budget, max_output_tokens=max_output))
    assert body["thinking"] == {"type": "enabled", "budget_tokens": sent_budget}
    assert body["max_tokens"] == max_tokens > sent_budget
    validate_request(body)


def test_no_thinking_without_a_budget() -> None:
    body = build_anthropic_request([user("q")], [], RequestSettings(
        model_name="claude-haiku-4-5", max_output_tokens=1000))
    assert "thinking" not in body and body["max_tokens"] == 1000


def test_validate_request_catches_unknown_keys_and_bad_values() -> None:
    body = build_anthropic_request([user("q"), call(), output()], [READ], HAIKU)
    validate_request(body)
    bad = json.loads(json.dumps(body))
    bad["messages"][1]["content"][0]["colour"] = "teal"
    with pytest.raises(AssertionError):
        validate_request(bad)
    bad = json.loads(json.dumps(body))
    bad["messages"][0]["role"] = "robot"
    with pytest.raises(ValidationError):
        validate_request(bad)
    bad = json.loads(json.dumps(body))
    bad["stream"] = False
    with pytest.raises(ValidationError):
        validate_request(bad)


# --------------------------------------------------------------------------- any conversation

_TEXT = st.text(alphabet="ab ", max_size=4)


@st.composite
def conversations(draw: st.DrawFn) -> list[OutputItem]:
    """Plausible histories: turns of prompt, then reasoning, text and tool rounds, in any mix,
    some cut short (a call without its output), some answers empty."""
    items: list[OutputItem] = []
    n = 0
    for turn in range(draw(st.integers(1, 4))):
        items.append(user("prompt " + draw(_TEXT), turn))
        for _ in range(draw(st.integers(0, 3))):
            kind = draw(st.sampled_from(["think", "redacted", "text", "tools", "unsigned"]))
            n += 1
            if kind == "think":
                items.append(thinking(draw(_TEXT)))
            elif kind == "redacted":
                items.append(ReasoningItem(id=f"r{n}", origin="agent", content="",
                                           redacted=True, encrypted_content="EmwK"))
            elif kind == "unsigned":
                items.append(thinking(draw(_TEXT), signature=None))
            elif kind == "text":
                items.append(agent(draw(_TEXT), n))
            else:
                ids = [f"toolu_{n}_{k}" for k in range(draw(st.integers(1, 2)))]
                items += [call(i) for i in ids]
                if draw(st.booleans()):
                    items += [output(i, draw(_TEXT), draw(st.booleans())) for i in ids]
    return items


@settings(max_examples=60, deadline=None)
@given(conversations())
def test_any_conversation_makes_a_valid_request(items: list[OutputItem]) -> None:
    body = build_anthropic_request(items, [READ], HAIKU)
    validate_request(body)
    messages = body["messages"]
    roles = [m["role"] for m in messages]
    assert roles[0] == "user"
    assert all(a != b for a, b in itertools.pairwise(roles))  # alternating
    for i, m in enumerate(messages):
        blocks = [] if isinstance(m["content"], str) else m["content"]
        assert m["content"]
        for b in blocks:
            if b["type"] == "text":
                assert b["text"].strip()
        uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
        if uses:  # answered by the next turn, results first
            following = messages[i + 1]["content"]
            results = [b["tool_use_id"] for b in following if b["type"] == "tool_result"]
            assert results[:len(uses)] == uses
            assert all(b["type"] == "tool_result" for b in following[:len(uses)])
