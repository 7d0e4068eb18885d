"""The Anthropic Messages stream normaliser: every event type, bad input, and chunking.

Every parser is tested whole, one byte at a time, and with hypothesis-chosen splits (as h11's
tests do): the payloads must not depend on where the body was cut.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.providers.anthropic_stream import AnthropicMessagesNormaliser
from actors.providers.base import StreamNormaliser
from actors.providers.fixtures import BUILTIN_PROTOCOLS, Fixture
from runtime.errors import CONTEXT_TOO_LONG, MALFORMED_CHUNK, SCHEMA_VIOLATION, STREAM_TRUNCATED
from runtime.schema import (
    PAYLOAD_ADAPTER,
    TERMINAL_EVENT_TYPES,
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
from tests.unit.streams import RID, error_of, feed, fixtures_of
from tests.unit.streams import sse_block as block

MSG = "msg_01XFDUDYJgAACzvnptvVoYEL"
TOOLU = "toolu_01T1x1fJ34qAmk2tNTrN7Up6"
ANTHROPIC, SMALL = fixtures_of(BUILTIN_PROTOCOLS["anthropic"])
run = partial(feed, AnthropicMessagesNormaliser)
play = partial(streams.play, AnthropicMessagesNormaliser)
whole = partial(streams.whole, AnthropicMessagesNormaliser)


def ev(kind: str, **fields: Any) -> bytes:
    return block({"type": kind, **fields})


def start(input_tokens: int = 8, output_tokens: int = 1, **usage: Any) -> bytes:
    return ev("message_start", message={
        "model": "claude-haiku-4-5-20251001", "id": MSG, "type": "message",
        "role": "assistant", "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, **usage}})


def block_start(index: int, **content_block: Any) -> bytes:
    return ev("content_block_start", index=index, content_block=content_block)


def delta(index: int, **d: Any) -> bytes:
    return ev("content_block_delta", index=index, delta=d)


def text(index: int, t: Any) -> bytes:
    return delta(index, type="text_delta", text=t)


def stop(index: int) -> bytes:
    return ev("content_block_stop", index=index)


def finish(stop_reason: str | None = "end_turn", output_tokens: int = 6,
           **usage: Any) -> bytes:
    return (ev("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": None},
               usage={"output_tokens": output_tokens, **usage})
            + ev("message_stop"))


PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def test_is_a_stream_normaliser() -> None:
    n: StreamNormaliser = AnthropicMessagesNormaliser(RID)
    assert not n.finished


# --------------------------------------------------------------------------- fast paths


def test_padded_data_is_still_an_event() -> None:
    body = start() + b'event: message_stop\ndata:   {"type":"message_stop"}  \n\n'
    assert isinstance(run(body)[-1], ResponseDone)


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("fx", SMALL, ids=lambda fx: fx.name)
def test_fixture_one_byte_at_a_time(fx: Fixture) -> None:
    for ex, expected in zip(fx.exchanges, whole(fx), strict=True):
        assert play([ex.stream[i:i + 1] for i in range(len(ex.stream))]) == expected


def test_large_fixture_in_odd_chunks() -> None:
    (fx,) = [fx for fx in ANTHROPIC if fx.name == "large_response"]
    (expected,) = whole(fx)
    body = fx.exchanges[0].stream
    assert play([body[i:i + 7919] for i in range(0, len(body), 7919)]) == expected


@pytest.mark.parametrize("fx", ANTHROPIC, ids=lambda fx: fx.name)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=2**31), max_size=30))
def test_fixture_in_any_chunking(fx: Fixture, cuts: list[int]) -> None:
    for ex, expected in zip(fx.exchanges, whole(fx), strict=True):
        body = ex.stream
        points = sorted({c % (len(body) + 1) for c in cuts})
        pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
        assert play(pieces) == expected


@pytest.mark.parametrize("fx", ANTHROPIC, ids=lambda fx: fx.name)
def test_fixture_payloads_are_valid_and_end_once(fx: Fixture) -> None:
    for payloads in whole(fx):
        for p in payloads:
            PAYLOAD_ADAPTER.validate_python(p)  # model_construct'ed deltas are real payloads
        kinds = [p["type"] for p in payloads]
        assert sum(k in TERMINAL_EVENT_TYPES for k in kinds) == 1
        assert kinds[-1] in TERMINAL_EVENT_TYPES


# --------------------------------------------------------------------------- each event type


def test_text_message() -> None:
    out = run(start(), block_start(0, type="text", text=""), PING, text(0, "Hello"),
              text(0, ", Cody"), stop(0), finish(output_tokens=6))
    item = f"{MSG}_0"
    assert out == [
        ItemStart(item_id=item, item_type="message"),
        ItemDelta(item_id=item, delta_content="Hello"),
        ItemDelta(item_id=item, delta_content=", Cody"),
        ItemDone(item_id=item, final_item=MessageItem(id=item, origin="agent",
                                                      role="assistant", content="Hello, Cody")),
        UsageUpdate(response_id=RID, usage=Usage(prompt_tokens=8, completion_tokens=6,
                                                 total_tokens=14)),
        ResponseDone(response_id=RID, status="complete", finish_reason="stop"),
    ]


def test_text_block_with_initial_text_and_empty_deltas() -> None:
    out = run(start(), block_start(0, type="text", text="Hi"), text(0, ""), text(0, "!"),
              stop(0), finish())
    item = f"{MSG}_0"
    assert out[:3] == [ItemStart(item_id=item, item_type="message", initial_content="Hi"),
                       ItemDelta(item_id=item, delta_content="!"),
                       ItemDone(item_id=item, final_item=MessageItem(
                           id=item, origin="agent", role="assistant", content="Hi!"))]


def test_thinking_keeps_its_signature() -> None:
    out = run(start(), block_start(0, type="thinking", thinking="", signature=""),
              delta(0, type="thinking_delta", thinking="Let me "),
              delta(0, type="thinking_delta", thinking="think."),
              delta(0, type="signature_delta", signature="EqQBCkgIARABGAIi=="), stop(0),
              block_start(1, type="text", text=""), text(1, "Done."), stop(1), finish())
    r, m = f"{MSG}_0", f"{MSG}_1"
    assert out[:4] == [
        ItemStart(item_id=r, item_type="reasoning"),
        ItemDelta(item_id=r, delta_content="Let me "),
        ItemDelta(item_id=r, delta_content="think."),
        ItemDone(item_id=r, final_item=ReasoningItem(id=r, origin="agent",
                                                     content="Let me think.",
                                                     signature="EqQBCkgIARABGAIi==")),
    ]
    assert out[4] == ItemStart(item_id=m, item_type="message")
    done = out[6]
    assert isinstance(done, ItemDone) and done.final_item.id == m


def test_thinking_without_a_signature() -> None:
    out = run(start(), block_start(0, type="thinking", thinking="", signature=""),
              delta(0, type="thinking_delta", thinking="hm"), stop(0), finish())
    done = out[2]
    assert isinstance(done, ItemDone) and isinstance(done.final_item, ReasoningItem)
    assert done.final_item.signature is None


def test_redacted_thinking() -> None:
    out = run(start(), block_start(0, type="redacted_thinking", data="EmwKAhgBEgy3va3p"),
              stop(0), finish())
    item = f"{MSG}_0"
    assert out[:2] == [
        ItemStart(item_id=item, item_type="reasoning"),
        ItemDone(item_id=item, final_item=ReasoningItem(
            id=item, origin="agent", content="", redacted=True,
            encrypted_content="EmwKAhgBEgy3va3p")),
    ]


def test_tool_use() -> None:
    out = run(start(), block_start(0, type="tool_use", id=TOOLU, name="read_file", input={}),
              delta(0, type="input_json_delta", partial_json=""),
              delta(0, type="input_json_delta", partial_json='{"path": '),
              delta(0, type="input_json_delta", partial_json='"notes.txt"}'), stop(0),
              finish("tool_use", 40))
    assert out == [
        ItemStart(item_id=TOOLU, item_type="function_call", name="read_file", call_id=TOOLU,
                  arguments=""),
        ItemDelta(item_id=TOOLU, delta_content='{"path": '),
        ItemDelta(item_id=TOOLU, delta_content='"notes.txt"}'),
        ItemDone(item_id=TOOLU, final_item=FunctionCallItem(
            id=TOOLU, name="read_file", arguments='{"path": "notes.txt"}', call_id=TOOLU)),
        UsageUpdate(response_id=RID, usage=Usage(prompt_tokens=8, completion_tokens=40,
                                                 total_tokens=48)),
        ResponseDone(response_id=RID, status="complete", finish_reason="tool_calls"),
    ]


@pytest.mark.parametrize(("given", "arguments"), [
    ({}, "{}"),
    (None, "{}"),
    ({"command": "ls"}, '{"command": "ls"}'),
])
def test_tool_use_without_deltas(given: dict[str, Any] | None, arguments: str) -> None:
    fields: dict[str, Any] = {"type": "tool_use", "id": TOOLU, "name": "exec"}
    if given is not None:
        fields["input"] = given
    out = run(start(), block_start(0, **fields), stop(0), finish("tool_use"))
    done = out[1]
    assert isinstance(done, ItemDone) and isinstance(done.final_item, FunctionCallItem)
    assert done.final_item.arguments == arguments


def test_usage_counts_cache_tokens_and_takes_the_latest_totals() -> None:
    out = run(start(input_tokens=50, output_tokens=2, cache_creation_input_tokens=100,
                    cache_read_input_tokens=1000),
              block_start(0, type="text", text=""), text(0, "x"), stop(0),
              ev("message_delta", delta={"stop_reason": None}, usage={"output_tokens": 5}),
              finish(output_tokens=9, input_tokens=51, cache_read_input_tokens=1001))
    assert out[-2] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=51 + 100 + 1001, completion_tokens=9, total_tokens=51 + 100 + 1001 + 9,
        cached_tokens=1001, cache_write_tokens=100))


def test_thinking_tokens_are_the_reasoning_tokens() -> None:
    """``message_delta.usage.output_tokens_details.thinking_tokens`` (the SDK's
    ``MessageDeltaUsage``), cumulative like the rest: the latest one counts."""
    out = run(start(),
              ev("message_delta", delta={"stop_reason": None},
                 usage={"output_tokens": 5, "output_tokens_details": {"thinking_tokens": 3}}),
              finish(output_tokens=40, output_tokens_details={"thinking_tokens": 31}))
    assert out[0] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=8, completion_tokens=40, total_tokens=48, reasoning_tokens=31))


def test_usage_without_thinking_details_has_no_reasoning_tokens() -> None:
    out = run(start(), finish(output_tokens_details=None))
    assert isinstance(out[0], UsageUpdate) and out[0].usage.reasoning_tokens is None


@pytest.mark.parametrize(("details", "field"), [
    ("lots", "usage.output_tokens_details"),
    ({"thinking_tokens": "3"}, "usage.output_tokens_details.thinking_tokens"),
    ({"thinking_tokens": -1}, "usage.output_tokens_details.thinking_tokens"),
])
def test_bad_thinking_details_are_schema_violations(details: Any, field: str) -> None:
    err = error_of(run(start(), finish(output_tokens_details=details)))
    assert err.code == SCHEMA_VIOLATION and err.details is not None
    assert err.details["field"] == field


def test_prompt_too_long_is_context_too_long() -> None:
    message = "prompt is too long: 208310 tokens > 200000 maximum"
    err = error_of(run(start(), ev("error", error={"type": "invalid_request_error",
                                                   "message": message})))
    assert err.model_dump() == {
        "code": CONTEXT_TOO_LONG, "message": message,
        "details": {"provider": "anthropic", "provider_code": "invalid_request_error"}}


def test_usage_with_null_cache_fields() -> None:
    out = run(start(input_tokens=8, cache_creation_input_tokens=None,
                    cache_read_input_tokens=None), finish(output_tokens=6))
    assert out[0] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=8, completion_tokens=6, total_tokens=14, cached_tokens=None,
        cache_write_tokens=None))


def test_cache_reads_reported_as_zero_are_kept() -> None:
    out = run(start(cache_read_input_tokens=0), finish())
    assert isinstance(out[0], UsageUpdate) and out[0].usage.cached_tokens == 0


@pytest.mark.parametrize(("stop_reason", "finish_reason"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("tool_use", "tool_calls"),
    ("max_tokens", "length"), ("refusal", "refusal"), ("pause_turn", "pause_turn"),
    ("model_context_window_exceeded", "length"), ("something_new", "something_new"),
    (None, None),
])
def test_stop_reasons(stop_reason: str | None, finish_reason: str | None) -> None:
    out = run(start(), finish(stop_reason))
    assert out[-1] == ResponseDone(response_id=RID, status="complete",
                                   finish_reason=finish_reason)


def test_ping_unknown_events_and_unknown_blocks_are_ignored() -> None:
    out = run(PING, start(), PING,
              ev("something_new", payload={"x": 1}),
              block_start(0, type="server_tool_use", id="srvtoolu_01", name="web_search",
                          input={}),
              delta(0, type="input_json_delta", partial_json='{"query": "x"}'),
              delta(0, type="citations_delta", citation={}), stop(0),
              block_start(1, type="text", text=""), text(1, "ok"),
              delta(1, type="citations_delta", citation={"type": "char_location"}),
              delta(1, type="brand_new_delta", stuff=1), stop(1), finish())
    assert [type(p).__name__ for p in out] == ["ItemStart", "ItemDelta", "ItemDone",
                                               "UsageUpdate", "ResponseDone"]


def test_blocks_left_open_are_closed_at_message_stop() -> None:
    out = run(start(), block_start(0, type="text", text=""), text(0, "cut"), finish())
    done = out[2]
    assert isinstance(done, ItemDone) and done.final_item == MessageItem(
        id=f"{MSG}_0", origin="agent", role="assistant", content="cut")


# --------------------------------------------------------------------------- errors


def test_error_event() -> None:
    out = run(start(), block_start(0, type="text", text=""), text(0, "Event"),
              ev("error", error={"type": "overloaded_error", "message": "Overloaded"}))
    err = error_of(out)
    assert isinstance(out[-1], ResponseErrorPayload) and out[-1].response_id == RID
    assert err.model_dump() == {"code": "overloaded_error", "message": "Overloaded",
                                      "details": {"provider": "anthropic"}}


def test_error_event_keeps_the_request_id_and_needs_no_message_start() -> None:
    out = run(ev("error", error={"type": "api_error", "message": "Internal server error"},
                 request_id="req_011CSHoEeqs5C35K2UUqR7Fy"))
    assert error_of(out).details == {"provider": "anthropic",
                                           "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def test_error_event_without_details() -> None:
    err = error_of(run(start(), ev("error", error="boom")))
    assert (err.code, err.message) == ("api_error", "error")


def test_malformed_json() -> None:
    out = run(start(), b'event: content_block_delta\ndata: {"type":"content_block_delta",'
                       b'"index":0,"delta":{"type":"text_del\n\n', finish())
    err = error_of(out)
    assert err.code == MALFORMED_CHUNK
    assert err.message == ("anthropic stream: malformed JSON in a 'content_block_delta' "
                                 "event")
    assert err.details == {"provider": "anthropic", "event": "content_block_delta"}


@pytest.mark.parametrize("data", [b"[1, 2]", b'"text"', b'{"index": 0}', b'{"type": 7}'])
def test_json_that_is_not_an_event(data: bytes) -> None:
    err = error_of(run(start(), b"event: content_block_delta\ndata: " + data + b"\n\n"))
    assert err.code == SCHEMA_VIOLATION
    assert err.details == {"provider": "anthropic", "event": "content_block_delta",
                                 "field": "type"}


def test_event_name_and_type_must_agree() -> None:
    err = error_of(run(start(), block({"type": "message_stop"}, event="content_block_stop")))
    assert err.code == SCHEMA_VIOLATION


def test_data_without_an_event_name_is_dispatched_on_its_type() -> None:
    body = b"".join(b"data: " + b.split(b"data: ", 1)[1]
                    for b in (start(), block_start(0, type="text", text=""), text(0, "a"),
                              stop(0), finish()))
    assert isinstance(run(body)[-1], ResponseDone)


SCHEMA_CASES: list[tuple[str, bytes, str]] = [
    ("message_start without message", ev("message_start"), "message"),
    ("message without id", ev("message_start", message={"usage": {"input_tokens": 1,
                                                                  "output_tokens": 1}}),
     "message.id"),
    ("message without usage", ev("message_start", message={"id": MSG}), "message.usage"),
    ("input tokens not a number", start(input_tokens="8"),  # type: ignore[arg-type]
     "message.usage.input_tokens"),
    ("negative cache reads", start(cache_read_input_tokens=-1),
     "message.usage.cache_read_input_tokens"),
    ("start without index", ev("content_block_start", content_block={"type": "text",
                                                                     "text": ""}), "index"),
    ("start with a string index", ev("content_block_start", index="0",
                                     content_block={"type": "text", "text": ""}), "index"),
    ("start without block", ev("content_block_start", index=0), "content_block"),
    ("block without type", block_start(0, text=""), "content_block.type"),
    ("text block without text", block_start(0, type="text"), "content_block.text"),
    ("tool_use without id", block_start(0, type="tool_use", name="x", input={}),
     "content_block.id"),
    ("tool_use with empty name", block_start(0, type="tool_use", id=TOOLU, name="",
                                             input={}), "content_block.name"),
    ("tool_use with list input", block_start(0, type="tool_use", id=TOOLU, name="x",
                                             input=[]), "content_block.input"),
    ("redacted without data", block_start(0, type="redacted_thinking"), "content_block.data"),
    ("thinking with numeric signature",
     block_start(0, type="thinking", thinking="", signature=5), "content_block.signature"),
    ("delta without delta", ev("content_block_delta", index=0), "delta"),
    ("delta without index", ev("content_block_delta", delta={"type": "text_delta",
                                                             "text": "x"}), "index"),
    ("delta without type", delta(0, text="x"), "delta.type"),
    ("text_delta with a number", text(0, 42), "delta.text"),
    ("thinking_delta without thinking", delta(0, type="thinking_delta"), "delta.thinking"),
    ("input_json_delta with null", delta(0, type="input_json_delta", partial_json=None),
     "delta.partial_json"),
    ("signature_delta with a list", delta(0, type="signature_delta", signature=[]),
     "delta.signature"),
    ("stop without index", ev("content_block_stop"), "index"),
    ("message_delta without usage", ev("message_delta", delta={"stop_reason": "end_turn"}),
     "usage"),
    ("message_delta without output tokens",
     ev("message_delta", delta={"stop_reason": "end_turn"}, usage={"input_tokens": 3}),
     "usage.output_tokens"),
    ("numeric stop reason", ev("message_delta", delta={"stop_reason": 1},
                               usage={"output_tokens": 1}), "delta.stop_reason"),
]


@pytest.mark.parametrize(("case", "bad", "field"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES])
def test_schema_violations(case: str, bad: bytes, field: str) -> None:
    prefix = b"" if bad.startswith(b"event: message_start") else start()
    if bad.startswith(b"event: content_block_delta"):
        prefix += block_start(0, type="text", text="")
    err = error_of(run(prefix, bad, finish()))
    assert err.code == SCHEMA_VIOLATION, err
    event = bad.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
    assert err.details == {"provider": "anthropic", "event": event, "field": field}
    assert err.message == (f"anthropic stream: {event}: {field!r} missing or of the "
                                 f"wrong type")


@pytest.mark.parametrize("bad", [
    delta(0, type="thinking_delta", thinking="x"),
    delta(0, type="input_json_delta", partial_json="{"),
    delta(0, type="signature_delta", signature="sig"),
])
def test_delta_of_another_block_type(bad: bytes) -> None:
    err = error_of(run(start(), block_start(0, type="text", text=""), bad, finish()))
    assert (err.code, err.details) == (SCHEMA_VIOLATION, {
        "provider": "anthropic", "event": "content_block_delta", "field": "delta.type"})


@pytest.mark.parametrize("early", [block_start(0, type="text", text=""), text(0, "x"), stop(0),
                                   finish()])
def test_events_before_message_start(early: bytes) -> None:
    err = error_of(run(early, start(), finish()))
    assert err.code == SCHEMA_VIOLATION
    assert err.details is not None and err.details["field"] == "message_start"


def test_truncated_stream() -> None:
    out = run(start(), block_start(0, type="text", text=""), text(0, "Hel"))
    assert out[-1] == ResponseErrorPayload.model_validate({
        "response_id": RID, "error": {
            "code": STREAM_TRUNCATED, "details": {"provider": "anthropic"},
            "message": "anthropic stream: the response body ended before message_stop"}})
    assert len(out) == 3


def test_message_stop_without_its_blank_line_is_truncation() -> None:
    body = start() + finish()
    out = run(body[:-1])
    assert error_of(out).code == STREAM_TRUNCATED


def test_message_stop_ended_by_end_of_stream_line() -> None:
    """A last line without its newline is still a line, but the event needs a blank line."""
    n = AnthropicMessagesNormaliser(RID)
    body = start() + finish()
    assert n.feed(body[:-2]) == []
    out = n.end_of_stream()
    assert error_of(out).code == STREAM_TRUNCATED


def test_nothing_after_the_terminal_payload() -> None:
    n = AnthropicMessagesNormaliser(RID)
    out = n.feed(start() + finish() + start() + finish())
    assert sum(isinstance(p, ResponseDone) for p in out) == 1
    assert n.finished
    assert n.feed(start()) == []
    assert n.end_of_stream() == []


def test_error_stops_processing_of_the_same_chunk() -> None:
    n = AnthropicMessagesNormaliser(RID)
    out = n.feed(start() + b"event: x\ndata: {oops\n\n" + block_start(0, type="text", text=""))
    assert len(out) == 1 and isinstance(out[0], ResponseErrorPayload)
    assert n.end_of_stream() == []


# --------------------------------------------------------------------------- sequence problems


def test_delta_for_a_block_never_started_is_passed_on() -> None:
    out = run(start(), block_start(0, type="text", text=""), text(0, "a"), stop(0),
              text(1, "early"), block_start(1, type="text", text=""), text(1, "b"), stop(1),
              finish())
    assert out[3] == ItemDelta(item_id=f"{MSG}_1", delta_content="early")
    assert isinstance(out[-1], ResponseDone)


def test_delta_after_its_block_stopped_keeps_the_blocks_id() -> None:
    out = run(start(), block_start(0, type="tool_use", id=TOOLU, name="x", input={}), stop(0),
              delta(0, type="input_json_delta", partial_json="{}"),
              delta(0, type="signature_delta", signature="s"), finish())
    assert out[2:4] == [ItemDelta(item_id=TOOLU, delta_content="{}"),
                        ItemDelta(item_id=TOOLU, delta_content="")]


def test_stop_for_a_block_never_started_is_passed_on() -> None:
    out = run(start(), stop(3), finish())
    item = f"{MSG}_3"
    assert out[0] == ItemDone(item_id=item, final_item=MessageItem(
        id=item, origin="agent", role="assistant", content=""))


def test_a_block_started_twice_is_started_twice() -> None:
    out = run(start(), block_start(0, type="text", text=""), block_start(0, type="text",
                                                                         text=""), finish())
    assert out[:2] == [ItemStart(item_id=f"{MSG}_0", item_type="message")] * 2


# --------------------------------------------------------------------------- never raises


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.sampled_from([
    start(), block_start(0, type="text", text=""), text(0, "x"), stop(0), finish(), PING,
    b"\n", b"\r\n", b"data: {\n\n", b"event: error\n", text(2, 3),
    block_start(1, type="tool_use", id=TOOLU, name="x", input={})]), max_size=12))
def test_never_raises_and_ends_exactly_once(chunks: list[bytes]) -> None:
    n = AnthropicMessagesNormaliser(RID)
    out: list[Payload] = []
    for c in chunks:
        out += n.feed(c)
    out += n.end_of_stream()
    assert n.finished
    assert sum(p.type in TERMINAL_EVENT_TYPES for p in out) == 1
    assert out[-1].type in TERMINAL_EVENT_TYPES
    for p in out:
        PAYLOAD_ADAPTER.validate_python(p.model_dump())
