"""The canonical schema and its envelope: strictness, byte-stable JSON, the event factory.

The hypothesis strategies here (``payloads``, ``stream_events``, ...) are reused by the
reducer's property tests.
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runtime.envelope import EventFactory, decode_event, encode_event
from runtime.schema import (
    OUTPUT_ITEM_ADAPTER,
    PAYLOAD_ADAPTER,
    CancelledItem,
    ErrorInfo,
    ErrorItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    Heartbeat,
    ItemCancelled,
    ItemDelta,
    ItemDone,
    ItemErrorPayload,
    ItemStart,
    MessageItem,
    OutputItem,
    Payload,
    ReasoningItem,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    StreamEvent,
    TurnAbortedByUser,
    Usage,
    UsageUpdate,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# --------------------------------------------------------------------------- strategies

ids = st.text(min_size=1, max_size=24)
texts = st.text(max_size=40)
opt_texts = st.none() | texts
counts = st.integers(min_value=0, max_value=2**40)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
details = st.none() | st.dictionaries(texts, json_values, max_size=3)
usages = st.builds(Usage, prompt_tokens=counts, completion_tokens=counts, total_tokens=counts,
                   reasoning_tokens=st.none() | counts, cached_tokens=st.none() | counts,
                   cache_write_tokens=st.none() | counts)
error_infos = st.builds(ErrorInfo, code=ids, message=texts, details=details)
correlation = st.none() | texts

output_items: st.SearchStrategy[OutputItem] = st.one_of(
    st.builds(MessageItem, id=ids, correlation_id=correlation,
              origin=st.sampled_from(["user", "agent", "system"]), content=texts,
              role=opt_texts),
    st.builds(ReasoningItem, id=ids, correlation_id=correlation,
              origin=st.sampled_from(["agent", "system"]), content=texts, signature=opt_texts,
              encrypted_content=opt_texts, redacted=st.none() | st.booleans()),
    st.builds(FunctionCallItem, id=ids, correlation_id=correlation, name=ids, arguments=texts,
              call_id=ids),
    st.builds(FunctionCallOutputItem, id=ids, correlation_id=correlation,
              origin=st.sampled_from(["system", "tool_harness"]), call_id=ids, output=texts,
              success=st.booleans()),
    st.builds(CancelledItem, id=ids, correlation_id=correlation,
              origin=st.sampled_from(["agent", "system", "user"]), reason=opt_texts),
    st.builds(ErrorItem, id=ids, correlation_id=correlation,
              origin=st.sampled_from(["agent", "system", "provider"]), code=ids, message=texts,
              details=details),
)
item_types = st.sampled_from(["message", "reasoning", "function_call", "function_call_output",
                              "cancelled", "error"])

payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(ResponseStart, response_id=ids, turn_id=ids, thread_id=ids, agent_id=opt_texts,
              model_id=ids, provider_id=ids, created_at=counts),
    st.builds(ItemStart, item_id=ids, item_type=item_types, initial_content=opt_texts,
              name=opt_texts, arguments=opt_texts, call_id=opt_texts),
    st.builds(ItemDelta, item_id=ids, delta_content=texts),
    st.builds(ItemDone, item_id=ids, final_item=output_items),
    st.builds(ItemErrorPayload, item_id=ids, error=error_infos),
    st.builds(ItemCancelled, item_id=ids, reason=opt_texts),
    st.builds(UsageUpdate, response_id=ids, usage=usages),
    st.builds(ResponseDone, response_id=ids,
              status=st.sampled_from(["complete", "error", "aborted"]),
              usage=st.none() | usages, finish_reason=opt_texts),
    st.builds(ResponseErrorPayload, response_id=ids, error=error_infos),
    st.builds(TurnAbortedByUser, turn_id=ids, reason=texts),
    st.just(Heartbeat()),
)
traceparents = st.tuples(st.binary(min_size=16, max_size=16),
                         st.binary(min_size=8, max_size=8)).map(
    lambda t: f"00-{t[0].hex()}-{t[1].hex()}-01")


@st.composite
def stream_events(draw: st.DrawFn, payload: st.SearchStrategy[Payload] = payloads
                  ) -> StreamEvent:
    p = draw(payload)
    return StreamEvent(event_id=str(draw(st.uuids(version=4))), run_id=draw(ids),
                       seq=draw(st.integers(min_value=1, max_value=2**40)),
                       timestamp=draw(counts),
                       trace_context={"traceparent": draw(traceparents),
                                      "tracestate": draw(opt_texts)},
                       type=p.type, payload=p)


def event_json(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "6f1c1d2e-1a2b-4c3d-8e4f-5a6b7c8d9e0f", "run_id": "run-1", "seq": 1,
        "timestamp": 1, "trace_context": {"traceparent": TRACEPARENT}, "type": "item_delta",
        "payload": {"type": "item_delta", "item_id": "msg_1", "delta_content": "hi"},
    }
    base.update(overrides)
    return base


# --------------------------------------------------------------------------- JSON round trip


@settings(max_examples=300, deadline=None)
@given(stream_events())
def test_event_json_round_trip_is_identity(ev: StreamEvent) -> None:
    raw = encode_event(ev)
    back = decode_event(raw)
    assert back == ev
    assert encode_event(back) == raw
    assert decode_event(raw.decode()) == ev
    assert raw == ev.model_dump_json().encode()


@settings(max_examples=100, deadline=None)
@given(payloads)
def test_payload_round_trip(p: Payload) -> None:
    raw = PAYLOAD_ADAPTER.dump_json(p)
    assert PAYLOAD_ADAPTER.validate_json(raw) == p
    assert PAYLOAD_ADAPTER.dump_json(PAYLOAD_ADAPTER.validate_json(raw)) == raw


@settings(max_examples=100, deadline=None)
@given(output_items)
def test_output_item_round_trip(item: OutputItem) -> None:
    raw = OUTPUT_ITEM_ADAPTER.dump_json(item)
    assert OUTPUT_ITEM_ADAPTER.validate_json(raw) == item
    assert OUTPUT_ITEM_ADAPTER.dump_json(OUTPUT_ITEM_ADAPTER.validate_json(raw)) == raw


@settings(max_examples=50, deadline=None)
@given(st.lists(output_items, max_size=4), st.none() | usages, st.none() | error_infos)
def test_response_round_trip(items: list[OutputItem], usage: Usage | None,
                             error: ErrorInfo | None) -> None:
    resp = Response(id="r", turn_id="t", thread_id="th", model_id="m", provider_id="p",
                    created_at=1, updated_at=2, status="complete", output_items=tuple(items),
                    usage=usage, error=error)
    raw = resp.model_dump_json()
    assert Response.model_validate_json(raw) == resp
    assert Response.model_validate_json(raw).model_dump_json() == raw


# --------------------------------------------------------------------------- strictness


def test_valid_base_event_decodes() -> None:
    ev = decode_event(json.dumps(event_json()))
    assert isinstance(ev.payload, ItemDelta)


@pytest.mark.parametrize("where", ["envelope", "payload", "trace_context", "final_item",
                                   "usage"])
def test_unknown_fields_rejected(where: str) -> None:
    doc = event_json()
    if where == "envelope":
        doc["extra"] = 1
    elif where == "payload":
        doc["payload"]["extra"] = 1
    elif where == "trace_context":
        doc["trace_context"]["extra"] = 1
    elif where == "final_item":
        doc.update(type="item_done", payload={
            "type": "item_done", "item_id": "m",
            "final_item": {"type": "message", "id": "m", "origin": "agent", "content": "",
                           "colour": "red"}})
    else:
        doc.update(type="usage_update", payload={
            "type": "usage_update", "response_id": "r",
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2,
                      "bogus_tokens": 1}})
    with pytest.raises(ValidationError, match="xtra"):
        decode_event(json.dumps(doc))


def test_type_payload_mismatch_rejected() -> None:
    with pytest.raises(ValidationError, match="does not match"):
        decode_event(json.dumps(event_json(type="item_done")))


def test_unknown_payload_type_rejected() -> None:
    doc = event_json(type="item_frobnicate")
    doc["payload"]["type"] = "item_frobnicate"
    with pytest.raises(ValidationError):
        decode_event(json.dumps(doc))


@pytest.mark.parametrize("payload", [
    {"type": "item_delta", "item_id": "", "delta_content": "x"},
    {"type": "item_start", "item_id": "", "item_type": "message"},
    {"type": "item_cancelled", "item_id": ""},
    {"type": "item_error", "item_id": "", "error": {"code": "X", "message": ""}},
])
def test_empty_item_id_rejected(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="item_id"):
        decode_event(json.dumps(event_json(type=payload["type"], payload=payload)))


@pytest.mark.parametrize(("field", "value"), [
    ("event_id", "not-a-uuid"), ("seq", 0), ("timestamp", -1), ("run_id", ""),
    ("trace_context", {"traceparent": "00-xyz-01"}),
])
def test_bad_envelope_fields_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        decode_event(json.dumps(event_json(**{field: value})))


def test_provider_ids_pass_through() -> None:
    for item_id in ("msg_0a1b", "rs_9", "toolu_01A", "x"):
        ev = decode_event(json.dumps(event_json(
            payload={"type": "item_delta", "item_id": item_id, "delta_content": ""})))
        assert isinstance(ev.payload, ItemDelta) and ev.payload.item_id == item_id


def test_events_are_frozen() -> None:
    ev = decode_event(json.dumps(event_json()))
    with pytest.raises(ValidationError):
        ev.seq = 2  # type: ignore[misc]


# --------------------------------------------------------------------------- EventFactory


def factory(first_seq: int = 1) -> EventFactory:
    clock = itertools.count(1000)
    return EventFactory("run-1", TRACEPARENT, clock.__next__, first_seq)


@settings(max_examples=100, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=8))
def test_factory_output_validates(items: list[Payload]) -> None:
    f = factory()
    for p in items:
        ev = f.make(p)
        assert StreamEvent.model_validate(ev.model_dump()) == ev
        assert decode_event(encode_event(ev)) == ev
        assert ev.type == p.type and ev.payload is p


def test_factory_stamps_gapless_seq_time_trace_and_unique_uuid4() -> None:
    f = factory(first_seq=7)
    evs = [f.make(Heartbeat()) for _ in range(2000)]
    assert [e.seq for e in evs] == list(range(7, 2007))
    assert f.next_seq == 2007
    assert [e.timestamp for e in evs] == list(range(1000, 3000))
    assert {e.run_id for e in evs} == {"run-1"}
    assert {e.trace_context.traceparent for e in evs} == {TRACEPARENT}
    assert len({e.event_id for e in evs}) == 2000
    for e in evs:
        u = uuid.UUID(e.event_id)
        assert u.version == 4 and u.variant == uuid.RFC_4122 and str(u) == e.event_id


def test_factory_output_is_frozen_and_copyable() -> None:
    ev = factory().make(ItemDelta(item_id="m", delta_content="x"))
    with pytest.raises(ValidationError):
        ev.seq = 9  # type: ignore[misc]
    assert ev.model_copy(update={"seq": 9}).seq == 9
    assert ev.seq == 1
    assert ev.model_fields_set == set(StreamEvent.model_fields)


def test_factory_rejects_what_is_not_a_payload() -> None:
    f = factory()
    with pytest.raises(TypeError):
        f.make({"type": "heartbeat"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        f.make(MessageItem(id="m", origin="agent", content=""))  # type: ignore[arg-type]
    assert f.next_seq == 1  # nothing was used up


def test_factory_validates_its_inputs() -> None:
    with pytest.raises(ValidationError):
        EventFactory("r", "not-a-traceparent", lambda: 0)
    with pytest.raises(ValueError, match="first_seq"):
        EventFactory("r", TRACEPARENT, lambda: 0, first_seq=0)


def test_decode_rejects_bad_json() -> None:
    with pytest.raises(ValidationError):
        decode_event(b"{not json")
    with pytest.raises(ValidationError):
        decode_event("")


@given(usages, usages)
def test_usage_sums_every_field_and_keeps_unreported_ones_unreported(a: Usage, b: Usage) -> None:
    total = a + b
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert getattr(total, name) == getattr(a, name) + getattr(b, name)
    for name in ("reasoning_tokens", "cached_tokens", "cache_write_tokens"):
        x, y = getattr(a, name), getattr(b, name)
        assert getattr(total, name) == (None if x is None and y is None else (x or 0) + (y or 0))
