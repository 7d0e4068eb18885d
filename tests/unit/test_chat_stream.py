"""The Chat Completions stream normaliser: every delta kind, tool calls by index, the ending,
usage, bad input, and chunking (whole, one byte at a time, hypothesis-chosen splits)."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.providers.chat_stream import ChatCompletionsNormaliser
from actors.providers.fixtures import Fixture
from runtime.errors import CONTEXT_TOO_LONG, MALFORMED_CHUNK, SCHEMA_VIOLATION, STREAM_TRUNCATED
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

CID = "chatcmpl-abc"
CHAT, SMALL = fixtures_of("openai-chat")
run = partial(feed, ChatCompletionsNormaliser)
play = partial(streams.play, ChatCompletionsNormaliser)
DONE = b"data: [DONE]\n\n"


def chunk(*, choices: Any = "none", usage: Any = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"id": CID, "object": "chat.completion.chunk", "created": 1,
                            "model": "m", **extra}
    if choices != "none":
        body["choices"] = choices
    body["usage"] = usage
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def delta(finish_reason: str | None = None, **d: Any) -> bytes:
    return chunk(choices=[{"index": 0, "delta": d, "logprobs": None,
                           "finish_reason": finish_reason}])


def finish(reason: str = "stop") -> bytes:
    return delta(reason)


def call(index: int | None = None, call_id: str | None = None, name: str | None = None,
         arguments: str | None = None) -> bytes:
    entry: dict[str, Any] = {}
    if index is not None:
        entry["index"] = index
    if call_id is not None:
        entry["id"] = call_id
        entry["type"] = "function"
    function = {k: v for k, v in (("name", name), ("arguments", arguments)) if v is not None}
    if function:
        entry["function"] = function
    return delta(tool_calls=[entry])


USAGE = chunk(choices=[], usage={"prompt_tokens": 8, "completion_tokens": 6,
                                 "total_tokens": 14})
ROLE = delta(role="assistant", content="")


def finals(payloads: list[Payload]) -> list[Any]:
    return [p.final_item for p in payloads if isinstance(p, ItemDone)]


def text_of(payloads: list[Payload], item_id: str) -> str:
    return "".join(p.delta_content for p in payloads
                   if isinstance(p, ItemDelta) and p.item_id == item_id)


# --------------------------------------------------------------------------- chunking


@pytest.mark.parametrize("fx", CHAT, ids=lambda fx: fx.name)
def test_fixture_payloads_validate_and_end_once(fx: Fixture) -> None:
    for ex in fx.exchanges:
        payloads = play([ex.stream])
        for p in payloads:
            PAYLOAD_ADAPTER.validate_python(p)
        assert [p["type"] in ("response_done", "response_error") for p in payloads].count(
            True) == 1
        assert payloads[-1]["type"] in ("response_done", "response_error")


@pytest.mark.parametrize("fx", SMALL, ids=lambda fx: fx.name)
def test_one_byte_at_a_time_gives_the_same_payloads(fx: Fixture) -> None:
    for ex in fx.exchanges:
        whole = play([ex.stream])
        assert play([ex.stream[i:i + 1] for i in range(len(ex.stream))]) == whole


@pytest.mark.parametrize("fx", SMALL, ids=lambda fx: fx.name)
@settings(max_examples=20, deadline=None)
@given(cuts=st.lists(st.floats(min_value=0, max_value=1), max_size=12))
def test_any_split_gives_the_same_payloads(fx: Fixture, cuts: list[float]) -> None:
    for ex in fx.exchanges:
        points = sorted({int(c * len(ex.stream)) for c in cuts})
        pieces = [ex.stream[a:b] for a, b in zip([0, *points], [*points, len(ex.stream)],
                                                 strict=True)]
        assert play(pieces) == play([ex.stream])


def test_crlf_line_endings_comments_and_empty_data_are_fine() -> None:
    body = b": OPENROUTER PROCESSING\r\n\r\n" + ROLE.replace(b"\n", b"\r\n") + \
        b"data: \n\n" + delta(content="hi").replace(b"\n", b"\r\n") + finish() + DONE
    assert [m.content for m in finals(run(body))] == ["hi"]


def test_fast_path_and_full_path_agree() -> None:
    """A padded chunk (not compact JSON) takes the full path to the same payloads."""
    compact = run(ROLE, delta(content="a"), delta(content="b"), finish(), DONE)
    padded = run(ROLE, delta(content="a").replace(b"data: {", b"data:  { "),
                 delta(content="b"), finish(), DONE)
    assert dump(compact) == dump(padded)


def _compact_chunk(content: str, *, ensure_ascii: bool, **choice: Any) -> bytes:
    body = {"id": CID, "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None,
                         "finish_reason": None, **choice}], "usage": None}
    return ("data: " + json.dumps(body, separators=(",", ":"), ensure_ascii=ensure_ascii)
            + "\n\n").encode()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=8), min_size=2, max_size=8), st.booleans())
def test_text_chunks_read_by_their_template_are_the_text(pieces: list[str],
                                                         ensure_ascii: bool) -> None:
    """After the first text chunk, the next ones are read around their one JSON string;
    escapes, quotes, braces and non-ASCII text come out as they went in."""
    n = ChatCompletionsNormaliser(RID)
    out = n.feed(b"".join(_compact_chunk(p, ensure_ascii=ensure_ascii) for p in pieces))
    assert "message" in n._templates or not any(pieces[:1])
    out += n.feed(finish() + DONE)
    assert [i.content for i in finals(out)] == ["".join(pieces) or ""]
    assert text_of(out, f"{CID}_message") == "".join(pieces)


def test_a_chunk_that_only_looks_like_the_template_takes_the_full_path() -> None:
    n = ChatCompletionsNormaliser(RID)
    out = n.feed(_compact_chunk("a", ensure_ascii=True) + _compact_chunk("b", ensure_ascii=True))
    prefix, suffix = n._templates["message"]
    # the same bytes around something that is not one string: a second delta field
    sneaky = f'data: {prefix}"c","refusal":"d"{suffix}\n\n'.encode()
    out += n.feed(sneaky + finish() + DONE)
    assert [i.content for i in finals(out)] == ["abcd"]
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason="refusal")


def test_ollama_deltas_with_the_role_in_every_chunk() -> None:
    chunks = [delta(role="assistant", content=c) for c in ("Hi", " there")]
    out = run(*chunks, delta("stop", role="assistant", content=""), DONE)
    assert [i.content for i in finals(out)] == ["Hi there"]


# --------------------------------------------------------------------------- items


def test_a_message_streams_and_finishes() -> None:
    out = run(ROLE, delta(content="Hel"), delta(content="lo"), finish(), USAGE, DONE)
    mid = f"{CID}_message"
    assert dump(out) == dump([
        ItemStart(item_id=mid, item_type="message"),
        ItemDelta(item_id=mid, delta_content="Hel"),
        ItemDelta(item_id=mid, delta_content="lo"),
        ItemDone(item_id=mid, final_item=MessageItem(id=mid, origin="agent",
                                                     role="assistant", content="Hello")),
        UsageUpdate(response_id=RID, usage=Usage(prompt_tokens=8, completion_tokens=6,
                                                 total_tokens=14)),
        ResponseDone(response_id=RID, status="complete", finish_reason="stop"),
    ])


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_reasoning_deltas_then_the_answer(key: str) -> None:
    out = run(ROLE, delta(**{key: "think "}), delta(**{key: "hard"}), delta(content="42"),
              finish(), DONE)
    rid, mid = f"{CID}_reasoning", f"{CID}_message"
    assert finals(out) == [ReasoningItem(id=rid, origin="agent", content="think hard"),
                           MessageItem(id=mid, origin="agent", role="assistant", content="42")]
    # the reasoning is done before the answer starts
    kinds = [(p.type, getattr(p, "item_id", None)) for p in out]
    assert kinds.index(("item_done", rid)) < kinds.index(("item_start", mid))


def test_reasoning_content_wins_when_a_server_sends_both() -> None:
    out = run(delta(reasoning_content="a", reasoning="a"), delta(content="b"), finish(), DONE)
    assert finals(out)[0] == ReasoningItem(id=f"{CID}_reasoning", origin="agent", content="a")


def test_interleaved_reasoning_makes_numbered_items() -> None:
    out = run(delta(reasoning="r1"), delta(content="m1"), delta(reasoning="r2"),
              delta(content="m2"), finish(), DONE)
    assert [(type(i).__name__, i.id, i.content) for i in finals(out)] == [
        ("ReasoningItem", f"{CID}_reasoning", "r1"), ("MessageItem", f"{CID}_message", "m1"),
        ("ReasoningItem", f"{CID}_reasoning_2", "r2"),
        ("MessageItem", f"{CID}_message_2", "m2")]


def test_null_fields_in_deltas_are_nothing() -> None:
    out = run(delta(role="assistant", content=None, reasoning_content=None, refusal=None,
                    tool_calls=None), delta(content="x", reasoning_content=None), finish(), DONE)
    assert [i.content for i in finals(out)] == ["x"]


def test_a_refusal_is_the_message_and_finishes_with_refusal() -> None:
    out = run(ROLE, delta(refusal="I can't "), delta(refusal="help with that."), finish(),
              DONE)
    assert finals(out) == [MessageItem(id=f"{CID}_message", origin="agent", role="assistant",
                                       content="I can't help with that.")]
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason="refusal")


def test_a_tool_call_is_assembled_by_index() -> None:
    out = run(ROLE, call(0, "call_1", "read_file", ""), call(0, arguments='{"pa'),
              call(0, arguments='th": "a"}'), finish("tool_calls"), DONE)
    assert out[0] == ItemStart(item_id="call_1", item_type="function_call", name="read_file",
                               call_id="call_1", arguments="")
    assert text_of(out, "call_1") == '{"path": "a"}'
    assert finals(out) == [FunctionCallItem(id="call_1", name="read_file",
                                            arguments='{"path": "a"}', call_id="call_1")]
    assert out[-1] == ResponseDone(response_id=RID, status="complete",
                                   finish_reason="tool_calls")


def test_parallel_calls_interleaved_by_index() -> None:
    out = run(call(0, "call_a", "read_file", '{"path":'), call(1, "call_b", "list_dir", "{"),
              call(1, arguments='"path": "."}'), call(0, arguments=' "x"}'),
              finish("tool_calls"), DONE)
    assert finals(out) == [
        FunctionCallItem(id="call_a", name="read_file", arguments='{"path": "x"}',
                         call_id="call_a"),
        FunctionCallItem(id="call_b", name="list_dir", arguments='{"path": "."}',
                         call_id="call_b")]


def test_text_before_a_call_is_done_when_the_call_starts() -> None:
    out = run(delta(content="Let me look."), call(0, "call_1", "read_file", "{}"),
              finish("tool_calls"), DONE)
    kinds = [(p.type, getattr(p, "item_id", None)) for p in out]
    assert kinds[:4] == [("item_start", f"{CID}_message"), ("item_delta", f"{CID}_message"),
                         ("item_done", f"{CID}_message"), ("item_start", "call_1")]


def test_arguments_before_the_name_wait_for_it() -> None:
    out = run(call(0, "call_1", arguments='{"a":'), call(0, name="exec"),
              call(0, arguments=" 1}"), finish("tool_calls"), DONE)
    assert out[0] == ItemStart(item_id="call_1", item_type="function_call", name="exec",
                               call_id="call_1", arguments="")
    assert text_of(out, "call_1") == '{"a": 1}'


def test_repeated_names_and_ids_in_later_deltas_are_ignored() -> None:
    out = run(call(0, "call_1", "exec", "{"), call(0, "call_1", "exec", "}"),
              finish("tool_calls"), DONE)
    assert finals(out) == [FunctionCallItem(id="call_1", name="exec", arguments="{}",
                                            call_id="call_1")]


def test_a_call_without_an_id_or_arguments() -> None:
    out = run(call(0, name="list_dir"), finish("tool_calls"), DONE)
    assert finals(out) == [FunctionCallItem(id=f"{CID}_call_0", name="list_dir",
                                            arguments="{}", call_id=f"{CID}_call_0")]


def test_calls_without_an_index_are_told_apart_by_their_ids() -> None:
    out = run(call(None, "call_a", "read_file", '{"path": "a"}'),
              call(None, "call_b", "read_file", '{"path": '), call(None, arguments='"b"}'),
              finish("tool_calls"), DONE)
    assert [(c.call_id, c.arguments) for c in finals(out)] == [
        ("call_a", '{"path": "a"}'), ("call_b", '{"path": "b"}')]


def test_a_call_that_never_gets_a_name_is_a_schema_violation() -> None:
    err = error_of(run(call(0, "call_1", arguments="{}"), finish("tool_calls"), DONE))
    assert err.code == SCHEMA_VIOLATION and err.details is not None
    assert err.details["field"] == "choices[0].delta.tool_calls[0].function.name"


def test_other_choices_are_ignored() -> None:
    out = run(chunk(choices=[{"index": 1, "delta": {"content": "other"}},
                             {"index": 0, "delta": {"content": "mine"}}]), finish(), DONE)
    assert [i.content for i in finals(out)] == ["mine"]


def test_deltas_after_the_finish_are_ignored() -> None:
    out = run(delta(content="a"), finish(), delta(content="late"), DONE)
    assert [i.content for i in finals(out)] == ["a"]
    assert not any(isinstance(p, ItemDelta) and p.delta_content == "late" for p in out)


def test_an_empty_answer_is_an_empty_message() -> None:
    out = run(ROLE, finish(), USAGE, DONE)
    mid = f"{CID}_message"
    assert out[:2] == [ItemStart(item_id=mid, item_type="message"),
                       ItemDone(item_id=mid, final_item=MessageItem(
                           id=mid, origin="agent", role="assistant", content=""))]


def test_an_empty_completion_id_is_replaced() -> None:
    body = delta(content="x").replace(f'"id":"{CID}"'.encode(), b'"id":""')
    assert finals(run(body, finish(), DONE))[0].id == f"chatcmpl-{RID}_message"


def test_the_first_chunks_id_is_the_completion_id() -> None:
    later = delta(content="b").replace(CID.encode(), b"chatcmpl-other")
    out = run(delta(content="a"), later, finish(), DONE)
    assert [i.id for i in finals(out)] == [f"{CID}_message"]


# --------------------------------------------------------------------------- the ending


@pytest.mark.parametrize(("wire", "canonical"), [
    ("stop", "stop"), ("eos", "stop"), ("eos_token", "stop"), ("end_turn", "stop"),
    ("length", "length"), ("content_filter", "content_filter"),
    ("function_call", "tool_calls"), ("something_new", "something_new"),
])
def test_finish_reasons(wire: str, canonical: str) -> None:
    out = run(delta(content="x"), finish(wire), DONE)
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason=canonical)


def test_calls_finish_with_tool_calls_even_when_the_server_says_stop() -> None:
    out = run(call(0, "c", "exec", "{}"), finish("stop"), DONE)
    assert out[-1] == ResponseDone(response_id=RID, status="complete",
                                   finish_reason="tool_calls")


def test_done_without_a_finish_reason_ends_by_what_was_produced() -> None:
    assert run(delta(content="x"), DONE)[-1] == ResponseDone(
        response_id=RID, status="complete", finish_reason="stop")
    out = run(call(0, "c", "exec", "{}"), DONE)
    assert out[-1] == ResponseDone(response_id=RID, status="complete",
                                   finish_reason="tool_calls")
    assert finals(out) == [FunctionCallItem(id="c", name="exec", arguments="{}", call_id="c")]


def test_a_body_without_done_after_the_finish_is_complete() -> None:
    out = run(delta(content="x"), finish(), USAGE)
    assert isinstance(out[-2], UsageUpdate)
    assert out[-1] == ResponseDone(response_id=RID, status="complete", finish_reason="stop")


def test_a_body_that_ends_before_the_finish_is_truncated() -> None:
    out = run(ROLE, delta(content="x"))
    assert error_of(out) == ErrorInfo(
        code=STREAM_TRUNCATED,
        message="openai-chat stream: the response body ended before a finish_reason",
        details={"provider": "openai-chat"})
    assert error_of(run()) .code == STREAM_TRUNCATED
    # a [DONE] without its blank line never arrived
    assert error_of(run(delta(content="x"), b"data: [DONE]")).code == STREAM_TRUNCATED


def test_nothing_after_the_end() -> None:
    n = ChatCompletionsNormaliser(RID)
    n.feed(delta(content="x") + finish() + DONE)
    assert n.finished
    assert n.feed(delta(content="more")) == [] and n.end_of_stream() == []


# --------------------------------------------------------------------------- usage


def test_usage_keeps_every_detail() -> None:
    out = run(delta(content="x"), finish(), chunk(choices=[], usage={
        "prompt_tokens": 1300, "completion_tokens": 400, "total_tokens": 1700,
        "prompt_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 128,
                                  "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0}}), DONE)
    assert out[-2] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=1300, completion_tokens=400, total_tokens=1700, reasoning_tokens=256,
        cached_tokens=1024, cache_write_tokens=128))


def test_usage_without_details_or_total() -> None:
    out = run(delta(content="x"), finish(), chunk(choices=[], usage={
        "prompt_tokens": 3, "completion_tokens": 4, "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None}}), DONE)
    assert out[-2] == UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=3, completion_tokens=4, total_tokens=7))


def test_deepseek_cache_hits_are_cached_tokens() -> None:
    out = run(delta(content="x"), finish(), chunk(choices=[], usage={
        "prompt_tokens": 30, "completion_tokens": 4, "total_tokens": 34,
        "prompt_cache_hit_tokens": 24, "prompt_cache_miss_tokens": 6}), DONE)
    assert isinstance(out[-2], UsageUpdate) and out[-2].usage.cached_tokens == 24


def test_the_latest_usage_counts_and_is_reported_once() -> None:
    """vLLM's continuous usage stats: running totals on every chunk."""
    running = [chunk(choices=[{"index": 0, "delta": {"content": c}}],
                     usage={"prompt_tokens": 5, "completion_tokens": i + 1,
                            "total_tokens": 6 + i}) for i, c in enumerate("abc")]
    out = run(*running, finish(), DONE)
    usages = [p for p in out if isinstance(p, UsageUpdate)]
    assert usages == [UsageUpdate(response_id=RID, usage=Usage(
        prompt_tokens=5, completion_tokens=3, total_tokens=8))]
    assert [i.content for i in finals(out)] == ["abc"]


def test_no_usage_chunk_no_usage_update() -> None:
    assert not any(isinstance(p, UsageUpdate) for p in run(delta(content="x"), finish(), DONE))


# --------------------------------------------------------------------------- errors


def test_an_in_stream_error_object() -> None:
    body = b'data: {"error":{"message":"The server had an error","type":"server_error",' \
           b'"param":null,"code":null}}\n\n'
    out = run(delta(content="partial"), body)
    assert error_of(out) == ErrorInfo(code="server_error", message="The server had an error",
                                      details={"provider": "openai-chat"})
    assert not any(isinstance(p, ItemDone) for p in out)  # the message stays as it streamed


@pytest.mark.parametrize(("error", "code"), [
    ({"message": "m", "type": "invalid_request_error", "code": "rate_limit_exceeded"},
     "rate_limit_exceeded"),
    ({"message": "m", "type": "BadRequestError", "code": 400}, "BadRequestError"),  # vLLM
    ({"message": "m", "code": 502}, "http_502"),  # OpenRouter
    ("upstream went away", "server_error"),  # Ollama's plain string
    ({"message": "m", "type": "invalid_request_error", "code": "context_length_exceeded"},
     CONTEXT_TOO_LONG),
    ({"message": "This model's maximum context length is 4096 tokens. However, you requested "
                 "5000 tokens.", "type": "BadRequestError", "code": 400}, CONTEXT_TOO_LONG),
    ({"message": "the request exceeds the available context size, try increasing it",
      "type": "exceed_context_size_error", "code": 400}, CONTEXT_TOO_LONG),  # llama.cpp
])
def test_in_stream_error_codes(error: Any, code: str) -> None:
    body = f"data: {json.dumps({'error': error})}\n\n".encode()
    err = error_of(run(ROLE, body))
    assert err.code == code
    if code == CONTEXT_TOO_LONG:
        assert err.details is not None and "provider_code" in err.details


def test_an_openrouter_error_chunk_with_finish_reason_error() -> None:
    body = chunk(choices=[{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                 error={"code": 502, "message": "Provider disconnected"})
    assert error_of(run(delta(content="x"), body)) == ErrorInfo(
        code="http_502", message="Provider disconnected", details={"provider": "openai-chat"})
    assert error_of(run(delta(content="x"), finish("error"))).code == "server_error"


def test_an_error_event_whose_data_is_the_error() -> None:
    body = b'event: error\ndata: {"message": "overloaded", "type": "overloaded_error"}\n\n'
    assert error_of(run(ROLE, body)).code == "overloaded_error"


def test_malformed_json_ends_the_stream() -> None:
    out = run(delta(content="ok"), b'data: {"id": "x", "choices": [\n\n', finish(), DONE)
    assert error_of(out) == ErrorInfo(
        code=MALFORMED_CHUNK, message="openai-chat stream: malformed JSON in a chunk",
        details={"provider": "openai-chat", "event": "chat.completion.chunk"})


@pytest.mark.parametrize(("body", "field"), [
    (delta(content=5), "choices[0].delta.content"),
    (delta(reasoning_content=["x"]), "choices[0].delta.reasoning_content"),
    (delta(refusal=1), "choices[0].delta.refusal"),
    (delta(tool_calls="x"), "choices[0].delta.tool_calls"),
    (delta(tool_calls=["x"]), "choices[0].delta.tool_calls[0]"),
    (delta(tool_calls=[{"index": "0"}]), "choices[0].delta.tool_calls[0].index"),
    (delta(tool_calls=[{"index": 0, "id": 7}]), "choices[0].delta.tool_calls[0].id"),
    (delta(tool_calls=[{"index": 0, "function": "f"}]),
     "choices[0].delta.tool_calls[0].function"),
    (delta(tool_calls=[{"index": 0, "function": {"name": 1}}]),
     "choices[0].delta.tool_calls[0].function.name"),
    (delta(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": {}}}]),
     "choices[0].delta.tool_calls[0].function.arguments"),
    (chunk(choices="x"), "choices"),
    (chunk(choices=["x"]), "choices[0]"),
    (chunk(choices=[{"index": "0"}]), "choices[0].index"),
    (chunk(choices=[{"index": 0, "delta": "x"}]), "choices[0].delta"),
    (chunk(choices=[{"index": 0, "delta": {}, "finish_reason": 1}]),
     "choices[0].finish_reason"),
    (chunk(choices=[], usage="x"), "usage"),
    (chunk(choices=[], usage={"prompt_tokens": -1, "completion_tokens": 1}),
     "usage.prompt_tokens"),
    (chunk(choices=[], usage={"prompt_tokens": 1}), "usage.completion_tokens"),
    (chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 1,
                              "total_tokens": "2"}), "usage.total_tokens"),
    (chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 1,
                              "prompt_tokens_details": 3}), "usage.prompt_tokens_details"),
    (chunk(choices=[], usage={"prompt_tokens": 1, "completion_tokens": 1,
                              "completion_tokens_details": {"reasoning_tokens": 1.5}}),
     "usage.completion_tokens_details.reasoning_tokens"),
    (chunk(id=5, choices=[]), "id"),
    (b"data: [1, 2]\n\n", "chunk"),
    (b'data: "text"\n\n', "chunk"),
])
def test_fields_of_the_wrong_type_are_schema_violations(body: bytes, field: str) -> None:
    err = error_of(run(body, finish(), DONE))
    assert err == ErrorInfo(
        code=SCHEMA_VIOLATION,
        message=f"openai-chat stream: chat.completion.chunk: {field!r} missing or of the "
                "wrong type",
        details={"provider": "openai-chat", "event": "chat.completion.chunk", "field": field})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(
    st.sampled_from([ROLE, delta(content="x"), delta(reasoning="r"), finish(), USAGE, DONE,
                     call(0, "c", "f", "{"), call(0, arguments="}"), call(1, name="g"),
                     b'data: {"error": {"message": "e"}}\n\n', b"data: {\n\n",
                     delta(content=1), finish("tool_calls")]),
    st.binary(max_size=40)), max_size=12),
    st.integers(min_value=1, max_value=64))
def test_never_raises_and_always_ends_once(parts: list[bytes], size: int) -> None:
    body = b"".join(parts)
    n = ChatCompletionsNormaliser(RID)
    out: list[Payload] = []
    for i in range(0, len(body), size):
        out += n.feed(body[i:i + size])
    out += n.end_of_stream()
    assert n.finished
    assert [isinstance(p, ResponseDone | ResponseErrorPayload) for p in out].count(True) == 1
    assert isinstance(out[-1], ResponseDone | ResponseErrorPayload)
    for p in out:
        PAYLOAD_ADAPTER.validate_python(p.model_dump())
