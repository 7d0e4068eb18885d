"""The OpenAI Responses stream normaliser: every event type, bad input, and chunking.

Every parser is tested whole, one byte at a time, and with hypothesis-chosen splits (as h11's
tests do): the payloads must not depend on where the body was cut.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.providers.fixtures import BUILTIN_PROTOCOLS, Fixture
from actors.providers.openai_stream import OpenAIResponsesNormaliser
from runtime.errors import MALFORMED_CHUNK, SCHEMA_VIOLATION, STREAM_TRUNCATED
from runtime.schema import (
    PAYLOAD_ADAPTER,
    ErrorInfo,
    FunctionCallItem,
    ItemDelta,
    ItemDone,
    ItemStart,
    MessageItem,
    Payload,
    ReasoningItem,
    ResponseDone,
    ResponseErrorPayload,
    Usage,
    UsageUpdate,
)
from tests.unit import streams
from tests.unit.streams import RID, dump, error_of, feed, fixtures_of
from tests.unit.streams import sse_block as block

OPENAI, SMALL = fixtures_of(BUILTIN_PROTOCOLS["openai"])
run = partial(feed, OpenAIResponsesNormaliser)
play = partial(streams.play, OpenAIResponsesNormaliser)
whole = partial(streams.whole, OpenAIResponsesNormaliser)


def ev(kind: str, **fields: Any) -> bytes:
    return block({"type": kind, "sequence_number": 0, **fields})


def completed(output: Any = None, usage: Any = "default",
              kind: str = "response.completed", **extra: Any) -> bytes:
    if usage == "default":
        usage = {"input_tokens": 8, "input_tokens_details": {"cached_tokens": 2},
                 "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 3},
                 "total_tokens": 14}
    return ev(kind, response={"id": "resp_1", "object": "response", "status": "completed",
                              "output": output or [], "usage": usage, **extra})


MSG_ADDED = ev("response.output_item.added", output_index=0,
               item={"id": "msg_1", "type": "message", "status": "in_progress", "content": [],
                     "role": "assistant"})


def delta(kind: str, item_id: str, text: Any) -> bytes:
    return ev(kind, item_id=item_id, output_index=0, content_index=0, delta=text)


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("fx", OPENAI, ids=lambda fx: fx.name)
def test_fixture_payloads_validate_and_end_once(fx: Fixture) -> None:
    for ex in fx.exchanges:
        n = OpenAIResponsesNormaliser(RID)
        payloads = n.feed(ex.stream)
        assert n.finished
        assert n.end_of_stream() == []
        assert n.feed(b"event: error\ndata: {}\n\n") == []
        terminal = [p for p in payloads if isinstance(p, ResponseDone | ResponseErrorPayload)]
        assert terminal == [payloads[-1]]
        for p in payloads:  # deltas are built without validation: prove they are valid
            assert PAYLOAD_ADAPTER.validate_python(p.model_dump()) == p


@pytest.mark.parametrize("fx", SMALL, ids=lambda fx: fx.name)
def test_one_byte_at_a_time_gives_the_same_payloads(fx: Fixture) -> None:
    expected = whole(fx)
    for ex, want in zip(fx.exchanges, expected, strict=True):
        s = ex.stream
        assert play([s[i:i + 1] for i in range(len(s))]) == want


def test_large_response_in_odd_chunks_gives_the_same_payloads() -> None:
    (fx,) = [fx for fx in OPENAI if fx.name == "large_response"]
    (want,) = whole(fx)
    s = fx.exchanges[0].stream
    assert play([s[i:i + 997] for i in range(0, len(s), 997)]) == want
    deltas = "".join(p["delta_content"] for p in want if p["type"] == "item_delta")
    assert len(deltas.encode()) >= 1_048_576


@pytest.mark.parametrize("fx", OPENAI, ids=lambda fx: fx.name)
@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=12))
def test_any_split_gives_the_same_payloads(fx: Fixture, cuts: list[float]) -> None:
    for ex in fx.exchanges[:1]:
        s = ex.stream
        points = sorted({int(c * len(s)) for c in cuts} | {0, len(s)})
        chunks = [s[a:b] for a, b in itertools.pairwise(points)]
        assert play(chunks) == play([s])


def test_crlf_line_endings_and_comments_are_fine() -> None:
    body = (MSG_ADDED + delta("response.output_text.delta", "msg_1", "hi") + completed())
    crlf = b": keep-alive\r\n\r\n" + body.replace(b"\n", b"\r\n")
    assert dump(run(crlf)) == dump(run(body))


def test_utf8_split_inside_a_character() -> None:
    body = MSG_ADDED + delta("response.output_text.delta", "msg_1", "naïve — ok") + completed()
    n = OpenAIResponsesNormaliser(RID)
    out = [p for i in range(len(body)) for p in n.feed(body[i:i + 1])]
    assert next(p for p in out if isinstance(p, ItemDelta)).delta_content == "naïve — ok"


# --------------------------------------------------------------------------- event types


def test_lifecycle_and_part_events_emit_nothing() -> None:
    resp = {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}
    part = {"type": "output_text", "annotations": [], "text": ""}
    out = run(ev("response.created", response=resp), ev("response.in_progress", response=resp),
              ev("response.queued", response=resp),
              ev("response.content_part.added", item_id="msg_1", output_index=0,
                 content_index=0, part=part),
              ev("response.content_part.done", item_id="msg_1", output_index=0,
                 content_index=0, part=part),
              ev("response.output_text.done", item_id="msg_1", output_index=0,
                 content_index=0, text="x", logprobs=[]),
              ev("response.function_call_arguments.done", item_id="fc_1", output_index=0,
                 arguments="{}"),
              ev("response.reasoning_summary_text.done", item_id="rs_1", output_index=0,
                 summary_index=0, text="x"),
              end=False)
    assert out == []


def test_items_start_with_their_type() -> None:
    out = run(
        MSG_ADDED,
        ev("response.output_item.added", output_index=1,
           item={"id": "rs_1", "type": "reasoning", "summary": []}),
        ev("response.output_item.added", output_index=2,
           item={"id": "fc_1", "type": "function_call", "status": "in_progress",
                 "arguments": "", "call_id": "call_1", "name": "read_file"}),
        end=False)
    assert out == [
        ItemStart(item_id="msg_1", item_type="message"),
        ItemStart(item_id="rs_1", item_type="reasoning"),
        ItemStart(item_id="fc_1", item_type="function_call", name="read_file",
                  call_id="call_1", arguments=""),
    ]


@pytest.mark.parametrize("kind", [
    "response.output_text.delta", "response.refusal.delta",
    "response.reasoning_summary_text.delta", "response.reasoning_text.delta",
    "response.function_call_arguments.delta",
])
def test_every_delta_event_is_an_item_delta(kind: str) -> None:
    out = run(delta(kind, "it_1", "abc"), end=False)
    assert out == [ItemDelta(item_id="it_1", delta_content="abc")]


def test_deltas_for_items_never_announced_are_passed_on() -> None:
    out = run(delta("response.output_text.delta", "msg_9", "x"),
              delta("response.output_text.delta", "msg_9", ""), end=False)
    assert out == [ItemDelta(item_id="msg_9", delta_content="x"),
                   ItemDelta(item_id="msg_9", delta_content="")]


def test_empty_deltas_of_known_items_are_dropped() -> None:
    assert run(MSG_ADDED, delta("response.output_text.delta", "msg_1", ""), end=False) == [
        ItemStart(item_id="msg_1", item_type="message")]


def test_padded_delta_takes_the_full_path_to_the_same_payload() -> None:
    body = (b'event: response.output_text.delta\ndata:  {"type": "response.output_text.delta",'
            b' "item_id": "msg_9", "delta": "x"}\t\n\n')
    assert run(body, end=False) == [ItemDelta(item_id="msg_9", delta_content="x")]


def test_summary_parts_after_the_first_are_separated_by_a_blank_line() -> None:
    def part(i: int) -> bytes:
        return ev("response.reasoning_summary_part.added", item_id="rs_1", output_index=0,
                  summary_index=i, part={"type": "summary_text", "text": ""})

    def text(t: str) -> bytes:
        return ev("response.reasoning_summary_text.delta", item_id="rs_1", output_index=0,
                  summary_index=0, delta=t)

    out = run(part(0), text("one"), part(1), text("two"), part(2), text("three"), end=False)
    assert "".join(p.delta_content for p in out if isinstance(p, ItemDelta)) == \
        "one\n\ntwo\n\nthree"


def test_message_done_joins_text_and_refusal_parts() -> None:
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "annotations": [], "text": "Hello "},
                        {"type": "output_text", "annotations": [], "text": "there."}]}
    out = run(ev("response.output_item.done", output_index=0, item=item), completed([item]))
    assert out[0] == ItemDone(item_id="msg_1", final_item=MessageItem(
        id="msg_1", origin="agent", role="assistant", content="Hello there."))
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason="stop")


def test_a_refusal_finishes_with_refusal() -> None:
    item = {"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    out = run(ev("response.output_item.done", output_index=0, item=item), completed([item]))
    assert out[0].final_item.content == "I can't help with that."  # type: ignore[union-attr]
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason="refusal")


def test_reasoning_done_keeps_summary_and_encrypted_content() -> None:
    item = {"id": "rs_1", "type": "reasoning", "encrypted_content": "gAAAA",
            "summary": [{"type": "summary_text", "text": "a"},
                        {"type": "summary_text", "text": "b"}]}
    out = run(ev("response.output_item.done", output_index=0, item=item), end=False)
    assert out == [ItemDone(item_id="rs_1", final_item=ReasoningItem(
        id="rs_1", origin="agent", content="a\n\nb", encrypted_content="gAAAA"))]


def test_reasoning_without_summary_uses_its_reasoning_text() -> None:
    item = {"id": "rs_1", "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": "thinking..."}]}
    out = run(ev("response.output_item.done", output_index=0, item=item), end=False)
    assert out[0].final_item == ReasoningItem(  # type: ignore[union-attr]
        id="rs_1", origin="agent", content="thinking...")


def test_function_call_done_and_tool_calls_finish() -> None:
    item = {"id": "fc_1", "type": "function_call", "status": "completed",
            "arguments": '{"path":"a"}', "call_id": "call_1", "name": "read_file"}
    out = run(ev("response.output_item.done", output_index=0, item=item), completed([item]))
    assert out == [
        ItemDone(item_id="fc_1", final_item=FunctionCallItem(
            id="fc_1", name="read_file", arguments='{"path":"a"}', call_id="call_1")),
        UsageUpdate(response_id=RID, usage=Usage(prompt_tokens=8, completion_tokens=6,
                                                 total_tokens=14, reasoning_tokens=3,
                                                 cached_tokens=2)),
        ResponseDone(response_id=RID, status="complete", finish_reason="tool_calls"),
    ]


def test_completed_output_alone_decides_tool_calls() -> None:
    out = run(completed([{"type": "function_call", "id": "fc_1"}]))
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason="tool_calls")


def test_usage_without_details_and_without_usage() -> None:
    out = run(completed(usage={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}))
    assert out[0] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=1, completion_tokens=2, total_tokens=3))
    assert run(completed(usage=None)) == [
        ResponseDone(response_id=RID, status="complete", finish_reason="stop")]


@pytest.mark.parametrize(("reason", "finish"), [
    ("max_output_tokens", "length"), ("content_filter", "content_filter"),
    ("max_messages", "max_messages"), (None, "incomplete"),
])
def test_incomplete_maps_its_reason(reason: str | None, finish: str) -> None:
    out = run(completed(kind="response.incomplete", incomplete_details={"reason": reason}))
    assert isinstance(out[0], UsageUpdate)
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason=finish)


def test_failed_carries_the_providers_code() -> None:
    out = run(MSG_ADDED, completed(kind="response.failed", usage=None,
                                   error={"code": "rate_limit_exceeded", "message": "slow down"}))
    assert out[-1] == ResponseErrorPayload(response_id=RID, error=ErrorInfo(
        code="rate_limit_exceeded", message="slow down", details={"provider": "openai"}))


def test_usage_keeps_reasoning_cached_and_cache_write_tokens() -> None:
    """``input_tokens_details.cached_tokens`` / ``.cache_write_tokens`` and
    ``output_tokens_details.reasoning_tokens`` (the SDK's ``ResponseUsage``)."""
    out = run(completed(usage={
        "input_tokens": 1300, "output_tokens": 400, "total_tokens": 1700,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 128},
        "output_tokens_details": {"reasoning_tokens": 256}}))
    assert out[0] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=1300, completion_tokens=400, total_tokens=1700, reasoning_tokens=256,
        cached_tokens=1024, cache_write_tokens=128))


@pytest.mark.parametrize("kind", ["response.failed", "error"])
def test_context_length_exceeded_is_context_too_long(kind: str) -> None:
    message = ("Your input exceeds the context window of this model. Please adjust your input "
               "and try again.")
    if kind == "error":
        body = ev("error", code="context_length_exceeded", message=message, param="input")
    else:
        body = completed(kind="response.failed", usage=None,
                         error={"code": "context_length_exceeded", "message": message})
    err = error_of(run(body))
    assert (err.code, err.message) == ("CONTEXT_TOO_LONG", message)
    assert err.details is not None and err.details["provider_code"] == "context_length_exceeded"


def test_failed_without_error_is_a_server_error() -> None:
    assert error_of(run(completed(kind="response.failed", usage=None))).code == "server_error"


def test_error_event() -> None:
    out = run(ev("error", code="invalid_prompt", message="bad", param="input"))
    assert error_of(out) == ErrorInfo(code="invalid_prompt", message="bad",
                                      details={"provider": "openai", "param": "input"})
    out = run(ev("error", code=None, message="boom", param=None))
    assert error_of(out) == ErrorInfo(code="server_error", message="boom",
                                      details={"provider": "openai"})


def test_unknown_events_and_item_types_are_ignored() -> None:
    web = {"id": "ws_1", "type": "web_search_call", "status": "completed"}
    out = run(ev("response.web_search_call.searching", item_id="ws_1", output_index=0),
              ev("response.output_item.added", output_index=0, item=web),
              ev("response.output_item.done", output_index=0, item=web),
              ev("response.something_new", anything={"x": 1}),
              block({"type": "response.output_text.annotation.added", "item_id": "m"}),
              b"event: response.output_text.delta\ndata: [DONE]\n\n",
              completed())
    assert [p.type for p in out] == ["usage_update", "response_done"]


# --------------------------------------------------------------------------- bad input


def test_malformed_json_ends_the_stream() -> None:
    n = OpenAIResponsesNormaliser(RID)
    out = n.feed(MSG_ADDED + b'event: response.output_text.delta\ndata: {"type":"resp\n\n')
    assert n.finished
    assert error_of(out) == ErrorInfo(
        code=MALFORMED_CHUNK,
        message="openai stream: malformed JSON in a 'response.output_text.delta' event",
        details={"provider": "openai", "event": "response.output_text.delta"})
    assert n.feed(completed()) == [] and n.end_of_stream() == []


@pytest.mark.parametrize(("body", "field"), [
    (delta("response.output_text.delta", "msg_1", 7), "delta"),
    (ev("response.output_text.delta", output_index=0, delta="x"), "item_id"),
    (ev("response.refusal.delta", item_id="", delta="x"), "item_id"),
    (ev("response.output_item.added", output_index=0, item="msg_1"), "item"),
    (ev("response.output_item.added", output_index=0, item={"type": "message"}), "id"),
    (ev("response.output_item.added", output_index=0,
        item={"type": "function_call", "id": "fc_1", "call_id": "c"}), "name"),
    (ev("response.output_item.done", output_index=0,
        item={"type": "message", "id": "m", "content": "text"}), "content"),
    (ev("response.output_item.done", output_index=0,
        item={"type": "message", "id": "m", "content": [{"type": "output_text"}]}), "text"),
    (ev("response.output_item.done", output_index=0,
        item={"type": "reasoning", "id": "r", "summary": [], "encrypted_content": 5}),
     "encrypted_content"),
    (ev("response.output_item.done", output_index=0,
        item={"type": "function_call", "id": "f", "name": "", "arguments": "{}",
              "call_id": "c"}), "name"),
    (ev("response.reasoning_summary_part.added", summary_index=0), "item_id"),
    (ev("response.output_text.done", item_id="m", text=None), "text"),
    (ev("response.completed"), "response"),
    (completed(usage={"input_tokens": "8", "output_tokens": 1, "total_tokens": 9}),
     "input_tokens"),
    (completed(usage={"input_tokens": 8, "output_tokens": 1, "total_tokens": 9,
                      "output_tokens_details": {"reasoning_tokens": -1}}), "reasoning_tokens"),
    (completed(usage=[1]), "usage"),
    (completed(output={"x": 1}), "output"),
])
def test_known_events_with_bad_fields_are_schema_violations(body: bytes, field: str) -> None:
    error = error_of(run(body))
    assert error.code == SCHEMA_VIOLATION
    assert error.details is not None and error.details["field"] == field
    assert error.details["provider"] == "openai"


@pytest.mark.parametrize("data", [b"[1,2]", b'"text"', b"{}", b'{"type":3}',
                                  b'{"type":["response.output_text.delta"]}',
                                  b'{"type":{"a":1},"item_id":"m","delta":"x"}'])
def test_data_that_is_not_a_typed_object_is_a_schema_violation(data: bytes) -> None:
    error = error_of(run(b"event: x\ndata: " + data + b"\n\n"))
    assert error.code == SCHEMA_VIOLATION


def test_schema_violation_message() -> None:
    error = error_of(run(delta("response.output_text.delta", "msg_1", 7)))
    assert error.message == ("openai stream: response.output_text.delta: 'delta' missing or of "
                             "the wrong type")


def test_end_without_terminal_event_is_truncation() -> None:
    n = OpenAIResponsesNormaliser(RID)
    out = n.feed(MSG_ADDED + delta("response.output_text.delta", "msg_1", "par"))
    assert not n.finished
    end = n.end_of_stream()
    assert n.finished
    assert error_of(out + end).code == STREAM_TRUNCATED
    assert n.end_of_stream() == []


def test_a_terminal_block_without_its_blank_line_is_truncation() -> None:
    body = completed()[:-1]  # the body ends after the data line's newline
    n = OpenAIResponsesNormaliser(RID)
    assert n.feed(body) == []
    assert error_of(n.end_of_stream()).code == STREAM_TRUNCATED


def test_an_empty_body_is_truncation() -> None:
    assert error_of(run(b"")).code == STREAM_TRUNCATED


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.sampled_from([MSG_ADDED, delta("response.output_text.delta", "msg_1", "x"),
                     b"data: {\n\n", b"event: error\n", b"data: null\n\n", completed(),
                     ev("response.output_item.done", output_index=0, item={"type": "message"}),
                     b"\r\n", b"\n\n"])), max_size=12))
def test_never_raises_and_always_ends_once(parts: list[bytes]) -> None:
    n = OpenAIResponsesNormaliser(RID)
    out: list[Payload] = []
    for p in parts:
        out += n.feed(p)
    out += n.end_of_stream()
    assert n.finished
    assert sum(isinstance(p, ResponseDone | ResponseErrorPayload) for p in out) == 1
    assert isinstance(out[-1], ResponseDone | ResponseErrorPayload)
