"""The Responses API request body built from a conversation (and checked against the SDK)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.providers.openai_request import build_openai_request
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
from tests.unit.test_openai_fixtures import validate_request
from tests.unit.wire_checks import Spec, agent, user

MINI = RequestSettings(model_name="gpt-5-mini")
CODEX = RequestSettings(model_name="gpt-5-codex", reasoning_effort="high",
                        max_output_tokens=1000)


def test_a_first_request() -> None:
    body = build_openai_request([user("Hi")], [], MINI)
    assert body == {"model": "gpt-5-mini",
                    "input": [{"type": "message", "role": "user", "content": "Hi"}],
                    "max_output_tokens": 8192, "store": False, "stream": True}
    validate_request(body)


def test_tools_reasoning_and_include() -> None:
    spec = Spec("lookup", "Look a word up.", {"type": "object", "properties": {}})
    body = build_openai_request([user("Hi")], [spec, BUILTIN_TOOLS["exec"]], CODEX)
    assert body["tools"] == [
        {"type": "function", "name": "lookup", "description": "Look a word up.",
         "parameters": {"type": "object", "properties": {}}, "strict": False},
        {"type": "function", "name": "exec", "description": BUILTIN_TOOLS["exec"].description,
         "parameters": BUILTIN_TOOLS["exec"].parameters, "strict": False},
    ]
    assert body["reasoning"] == {"effort": "high", "summary": "auto"}
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["max_output_tokens"] == 1000
    validate_request(body)


def test_a_tool_loop_and_a_later_turn() -> None:
    items: list[OutputItem] = [
        user("Read notes.txt"),
        ReasoningItem(id="rs_1", origin="agent", content="I should read it.",
                      encrypted_content="gAAAA1"),
        FunctionCallItem(id="fc_1", name="read_file", arguments='{"path":"notes.txt"}',
                         call_id="call_1"),
        FunctionCallOutputItem(id="call_1:output", origin="tool_harness", call_id="call_1",
                               output="hello\n", success=True),
        agent("It says hello."),
        user("Thanks", 1),
    ]
    body = build_openai_request(items, [BUILTIN_TOOLS["read_file"]], CODEX)
    assert body["input"] == [
        {"type": "message", "role": "user", "content": "Read notes.txt"},
        {"type": "reasoning", "id": "rs_1",
         "summary": [{"type": "summary_text", "text": "I should read it."}],
         "encrypted_content": "gAAAA1"},
        {"type": "function_call", "call_id": "call_1", "name": "read_file",
         "arguments": '{"path":"notes.txt"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "hello\n"},
        {"type": "message", "role": "assistant", "content": "It says hello."},
        {"type": "message", "role": "user", "content": "Thanks"},
    ]
    validate_request(body)


def test_what_openai_cannot_use_is_left_out() -> None:
    items: list[OutputItem] = [
        user("Q"),
        # reasoning OpenAI cannot take back: none encrypted, Anthropic's, redacted
        ReasoningItem(id="rs_2", origin="agent", content="thought"),
        ReasoningItem(id="thinking-1", origin="agent", content="t", signature="sig"),
        ReasoningItem(id="rs_3", origin="agent", content="", encrypted_content="x",
                      redacted=True),
        # a call whose output never came, an output whose call is gone
        FunctionCallItem(id="fc_9", name="exec", arguments="{}", call_id="call_9"),
        FunctionCallOutputItem(id="call_8:output", origin="tool_harness", call_id="call_8",
                               output="x", success=False),
        CancelledItem(id="c1", origin="system", reason="cancelled by user"),
        ErrorItem(id="e1", origin="system", code="X", message="y"),
        agent(""),
        MessageItem(id="s1", origin="system", content="Be brief."),
        user("Q2", 1),
    ]
    body = build_openai_request(items, [], MINI)
    assert body["input"] == [
        {"type": "message", "role": "user", "content": "Q"},
        {"type": "message", "role": "system", "content": "Be brief."},
        {"type": "message", "role": "user", "content": "Q2"},
    ]
    validate_request(body)


def test_reasoning_with_empty_summary_is_sent_with_an_empty_list() -> None:
    items: list[OutputItem] = [user("Q"), ReasoningItem(id="rs_1", origin="agent", content="",
                                                        encrypted_content="gAAAA")]
    body = build_openai_request(items, [], CODEX)
    assert body["input"][1] == {"type": "reasoning", "id": "rs_1", "summary": [],
                                "encrypted_content": "gAAAA"}
    validate_request(body)


_text = st.text(min_size=0, max_size=20)
_item = st.one_of(
    st.builds(lambda t, n: user(t or "x", n), _text, st.integers(0, 9)),
    st.builds(agent, _text, st.integers(0, 9)),
    st.builds(lambda t, e: ReasoningItem(id="rs_x", origin="agent", content=t,
                                         encrypted_content=e), _text, st.none() | _text),
    st.builds(lambda n: FunctionCallItem(id=f"fc_{n}", name="read_file", arguments="{}",
                                         call_id=f"call_{n}"), st.integers(0, 3)),
    st.builds(lambda n, ok: FunctionCallOutputItem(id=f"call_{n}:output", origin="tool_harness",
                                                   call_id=f"call_{n}", output="o", success=ok),
              st.integers(0, 3), st.booleans()),
)


@settings(max_examples=50, deadline=None)
@given(items=st.lists(_item, max_size=10), tools=st.lists(st.sampled_from(sorted(BUILTIN_TOOLS)),
                                                          unique=True),
       effort=st.sampled_from([None, "low", "medium", "high"]))
def test_any_conversation_gives_a_body_the_sdk_accepts(items: list[OutputItem],
                                                       tools: list[str],
                                                       effort: str | None) -> None:
    settings_ = RequestSettings(model_name="gpt-5-mini", reasoning_effort=effort)  # type: ignore[arg-type]
    body = build_openai_request(items, [BUILTIN_TOOLS[t] for t in tools], settings_)
    validate_request(body)
    calls = [i["call_id"] for i in body["input"] if i["type"] == "function_call"]
    outputs = {i["call_id"] for i in body["input"] if i["type"] == "function_call_output"}
    assert set(calls) == outputs
