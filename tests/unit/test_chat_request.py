"""The Chat Completions request body built from a conversation (and checked against the SDK)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.providers.chat_request import build_chat_messages, build_chat_request
from actors.providers.settings import RequestSettings
from actors.tools import BUILTIN_TOOLS
from runtime.schema import (
    CancelledItem,
    ErrorItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    OutputItem,
    ReasoningItem,
)
from tests.unit.test_chat_fixtures import validate_request
from tests.unit.wire_checks import Spec, agent, user

QWEN = RequestSettings(model_name="Qwen/Qwen3-8B")
OSS = RequestSettings(model_name="openai/gpt-oss-20b", reasoning_effort="high",
                      max_output_tokens=1000)


def fc(n: int, name: str = "read_file", arguments: str = '{"path": "a"}') -> FunctionCallItem:
    return FunctionCallItem(id=f"call_{n}", name=name, arguments=arguments, call_id=f"call_{n}")


def out(n: int, output: str = "text", success: bool = True) -> FunctionCallOutputItem:
    return FunctionCallOutputItem(id=f"call_{n}:output", origin="tool_harness",
                                  call_id=f"call_{n}", output=output, success=success)


def tool_call(n: int, name: str = "read_file", arguments: str = '{"path": "a"}'
              ) -> dict[str, object]:
    return {"id": f"call_{n}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def test_a_first_request() -> None:
    body = build_chat_request([user("Hi")], [], QWEN)
    assert body == {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "Hi"}],
                    "max_completion_tokens": 8192, "stream": True,
                    "stream_options": {"include_usage": True}}
    validate_request(body)


def test_tools_and_reasoning_effort() -> None:
    spec = Spec("lookup", "Look a word up.", {"type": "object", "properties": {}})
    body = build_chat_request([user("Hi")], [spec, BUILTIN_TOOLS["exec"]], OSS)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "lookup", "description": "Look a word up.",
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "exec",
                                          "description": BUILTIN_TOOLS["exec"].description,
                                          "parameters": BUILTIN_TOOLS["exec"].parameters}},
    ]
    assert body["reasoning_effort"] == "high" and body["max_completion_tokens"] == 1000
    validate_request(body)


def test_a_tool_loop_with_text_and_parallel_calls() -> None:
    items: list[OutputItem] = [
        user("Look at a and b"), agent("Reading both."), fc(1), fc(2, "list_dir", "{}"),
        out(1, "A"), out(2, "B", success=False), agent("Done.", 2)]
    body = build_chat_request(items, [BUILTIN_TOOLS["read_file"]], QWEN)
    assert body["messages"] == [
        {"role": "user", "content": "Look at a and b"},
        {"role": "assistant", "content": "Reading both.",
         "tool_calls": [tool_call(1), tool_call(2, "list_dir", "{}")]},
        {"role": "tool", "tool_call_id": "call_1", "content": "A"},
        {"role": "tool", "tool_call_id": "call_2", "content": "B"},
        {"role": "assistant", "content": "Done."},
    ]
    validate_request(body)


def test_calls_alone_have_null_content() -> None:
    assert build_chat_messages([user("x"), fc(1), out(1)])[1] == {
        "role": "assistant", "content": None, "tool_calls": [tool_call(1)]}


def test_half_a_call_is_dropped() -> None:
    """A call without its output (the turn ended mid-loop), an output without its call."""
    messages = build_chat_messages([user("x"), agent("Let me look."), fc(1), user("y", 1),
                                    out(9)])
    assert messages == [{"role": "user", "content": "x"},
                        {"role": "assistant", "content": "Let me look."},
                        {"role": "user", "content": "y"}]


def test_reasoning_and_bookkeeping_are_not_sent() -> None:
    messages = build_chat_messages([
        user("x"), ReasoningItem(id="r", origin="agent", content="hmm", signature="sig"),
        CancelledItem(id="c", origin="system"),
        ErrorItem(id="e", origin="provider", code="x", message="y"), agent("")])
    assert messages == [{"role": "user", "content": "x"}]


def test_roles() -> None:
    messages = build_chat_messages([
        MessageItem(id="s", origin="system", content="Be brief."),
        MessageItem(id="d", origin="system", role="developer", content="Use tools."),
        MessageItem(id="u", origin="user", content="Hi"), agent("Hello")])
    assert [m["role"] for m in messages] == ["system", "system", "user", "assistant"]


def test_two_turns_keep_their_order() -> None:
    messages = build_chat_messages([user("a"), agent("b"), user("c", 1), agent("d", 1),
                                    user("e", 2)])
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e")]


items_strategy = st.lists(st.one_of(
    st.builds(user, st.text(max_size=5), st.integers(0, 3)),
    st.builds(agent, st.text(max_size=5), st.integers(0, 3)),
    st.builds(fc, st.integers(0, 3)),
    st.builds(out, st.integers(0, 3), st.text(max_size=5), st.booleans()),
    st.just(ReasoningItem(id="r", origin="agent", content="t"))), max_size=12)


@settings(max_examples=150, deadline=None)
@given(items_strategy)
def test_every_conversation_is_a_request_the_sdk_accepts(items: list[OutputItem]) -> None:
    body = build_chat_request(items, [BUILTIN_TOOLS["read_file"]], OSS)
    validate_request(body)
    messages = body["messages"]
    # every tool message answers a call that an earlier assistant message made
    made: set[str] = set()
    for m in messages:
        if m["role"] == "assistant":
            assert m["content"] or m.get("tool_calls")
            made |= {c["id"] for c in m.get("tool_calls", [])}
        if m["role"] == "tool":
            assert m["tool_call_id"] in made
