"""Every recorded fixture, played offline through its normaliser and the reducer, gives its
``expected.json`` - in any chunking of the wire bytes, and with duplicated events.

The first half checks the harness itself on a small library built in a tmp dir, whose
"provider" streams canonical payloads as SSE, so it needs no real normaliser.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.sse_normaliser import SSENormaliser
from runtime.errors import STREAM_TRUNCATED
from runtime.ids import prompt_item_id
from runtime.reducer import rebuild
from runtime.schema import (
    PAYLOAD_ADAPTER,
    TERMINAL_EVENT_TYPES,
    ErrorInfo,
    FunctionCallItem,
    ItemDelta,
    ItemDone,
    ItemStart,
    MessageItem,
    Payload,
    ReasoningItem,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    StreamEvent,
    Usage,
    UsageUpdate,
)
from runtime.sse import SSEMessage, encode_frame
from tests.harness import NormaliserFactory, response_view, run_fixture_offline

LIBRARY = FixtureLibrary()
FIXTURES = sorted(LIBRARY, key=lambda fx: (fx.provider, fx.name))


def _id(fx: Fixture) -> str:
    return f"{fx.provider}-{fx.name}"


def cutter(cuts: list[int]) -> Callable[[bytes], Iterable[bytes]]:
    """Cut each stream at the given points (taken modulo its length)."""
    def chunks(stream: bytes) -> Iterable[bytes]:
        points = sorted({c % (len(stream) + 1) for c in cuts})
        return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    return chunks


def with_duplicates(events: list[StreamEvent], picks: list[tuple[int, int]]) -> list[StreamEvent]:
    """Copies of earlier events inserted after their originals."""
    noisy = list(events)
    for i, offset in picks:
        i %= len(events)
        first = noisy.index(events[i])
        noisy.insert(first + 1 + offset % (len(noisy) - first), events[i])
    return noisy


def check_stream_shape(events: list[StreamEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    assert len({e.run_id for e in events}) == 1
    assert events[0].type == "response_start"
    assert [e.type in TERMINAL_EVENT_TYPES for e in events].count(True) == 1
    assert events[-1].type in TERMINAL_EVENT_TYPES


# --------------------------------------------------------------------------- the harness


class CanonicalNormaliser(SSENormaliser):
    """A stand-in provider whose wire format is canonical payloads as SSE ``data:`` lines: the
    real normalisers' frame (``SSENormaliser``: decoding, one ending, STREAM_TRUNCATED), with
    no provider format to parse."""

    __slots__ = ()
    PROVIDER = "canonical"
    ENDS_WITH = "a terminal payload"

    def _message(self, message: SSEMessage, out: list[Payload]) -> None:
        p = PAYLOAD_ADAPTER.validate_json(message.data)
        self._finished = isinstance(p, ResponseDone | ResponseErrorPayload)
        out.append(p)


FAKE: dict[str, NormaliserFactory] = {"canonical": CanonicalNormaliser}
REASONING = ReasoningItem(id="rs_1", origin="agent", content="Look at the file.",
                          signature="sig==")
CALL = FunctionCallItem(id="fc_1", name="read_file", arguments='{"path": "notes.txt"}',
                        call_id="call_1")
ANSWER = MessageItem(id="msg_1", origin="agent", role="assistant", content="It says hello.")
PARTIAL = "It says"


def sse(payloads: list[Payload]) -> bytes:
    return b"".join(encode_frame(PAYLOAD_ADAPTER.dump_json(p).decode(), event=p.type)
                    for p in payloads)


def item(i: OutputItemLike, pieces: list[str]) -> list[Payload]:
    return [ItemStart(item_id=i.id, item_type=i.type),
            *[ItemDelta(item_id=i.id, delta_content=d) for d in pieces],
            ItemDone(item_id=i.id, final_item=i)]


OutputItemLike = ReasoningItem | FunctionCallItem | MessageItem


def write_fixture(root: Path, name: str, streams: list[bytes],
                  tool_outputs: list[list[dict[str, Any]]], expected: dict[str, Any]) -> None:
    d = root / "canonical" / name
    d.mkdir(parents=True)
    exchanges = []
    for n, (stream, outputs) in enumerate(zip(streams, tool_outputs, strict=True), 1):
        (d / f"request-{n}.json").write_text("{}")
        (d / f"stream-{n}.sse").write_bytes(stream)
        exchanges.append({"request": f"request-{n}.json", "stream": f"stream-{n}.sse",
                          "tool_outputs": outputs})
    (d / "fixture.json").write_text(json.dumps({
        "name": name, "scenarios": [], "provider": "canonical", "model": "m-1",
        "prompt": f"prompt of {name}", "default": False, "wire_valid": True, "after": None,
        "tools": ["read_file"], "exchanges": exchanges}))
    (d / "expected.json").write_text(json.dumps(expected))


def prompt_view(name: str) -> dict[str, Any]:
    return {"type": "message", "id": "<prompt>", "correlation_id": None, "origin": "user",
            "role": "user", "content": f"prompt of {name}"}


@pytest.fixture
def small_library(tmp_path: Path) -> FixtureLibrary:
    u = Usage
    tool_loop = [
        sse([*item(REASONING, ["Look at ", "the file."]),
             *item(CALL, ['{"path": ', '"notes.txt"}']),
             UsageUpdate(response_id="x", usage=u(prompt_tokens=10, completion_tokens=5,
                                                  total_tokens=15, reasoning_tokens=3)),
             ResponseDone(response_id="x", status="complete", finish_reason="tool_calls")]),
        sse([*item(ANSWER, ["It ", "says ", "hello."]),
             UsageUpdate(response_id="x", usage=u(prompt_tokens=20, completion_tokens=1,
                                                  total_tokens=21, cached_tokens=8)),
             UsageUpdate(response_id="x", usage=u(prompt_tokens=20, completion_tokens=4,
                                                  total_tokens=24, cached_tokens=8)),
             ResponseDone(response_id="x", status="complete", finish_reason="stop")]),
    ]
    write_fixture(tmp_path, "tool_loop", tool_loop,
                  [[{"call_id": "call_1", "output": "hello\n", "success": True}], []], {
                      "model_id": "m-1", "provider_id": "canonical", "status": "complete",
                      "output_items": [
                          prompt_view("tool_loop"), REASONING.model_dump(mode="json"),
                          CALL.model_dump(mode="json"),
                          {"type": "function_call_output", "id": "call_1:output",
                           "correlation_id": None, "origin": "tool_harness",
                           "call_id": "call_1", "output": "hello\n", "success": True},
                          ANSWER.model_dump(mode="json")],
                      "usage": {"prompt_tokens": 30, "completion_tokens": 9,
                                "total_tokens": 39, "reasoning_tokens": 3,
                                "cached_tokens": 8, "cache_write_tokens": None},
                      "finish_reason": "stop", "error": None})
    failing = [sse([ItemStart(item_id="msg_1", item_type="message"),
                    ItemDelta(item_id="msg_1", delta_content=PARTIAL),
                    ResponseErrorPayload(response_id="x", error=ErrorInfo(
                        code="overloaded_error", message="Overloaded"))])]
    write_fixture(tmp_path, "provider_error", failing, [[]], {
        "model_id": "m-1", "provider_id": "canonical", "status": "error",
        "output_items": [prompt_view("provider_error"),
                         {"type": "message", "id": "msg_1", "correlation_id": None,
                          "origin": "agent", "role": "assistant", "content": PARTIAL}],
        "usage": None, "finish_reason": None,
        "error": {"code": "overloaded_error", "message": "Overloaded", "details": None}})
    truncated = [tool_loop[1][:len(tool_loop[1]) // 2]]
    write_fixture(tmp_path, "truncated", truncated, [[]], {})
    return FixtureLibrary(tmp_path)


@pytest.mark.parametrize("name", ["tool_loop", "provider_error"])
def test_harness_on_a_small_library(small_library: FixtureLibrary, name: str) -> None:
    fx = small_library.get("canonical", name)
    events, resp = run_fixture_offline(fx, normalisers=FAKE)
    check_stream_shape(events)
    assert response_view(resp) == fx.expected
    assert resp.id == events[0].run_id and resp.output_items[0].id == prompt_item_id(resp.id)
    assert rebuild(events) == resp
    byte_at_a_time = run_fixture_offline(
        fx, lambda s: [s[i:i + 1] for i in range(len(s))], normalisers=FAKE)[1]
    assert response_view(byte_at_a_time) == fx.expected


def test_harness_mirrors_the_actor(small_library: FixtureLibrary) -> None:
    """The provider's tool_calls ending is held back; usage is a running total per turn."""
    events, _ = run_fixture_offline(small_library.get("canonical", "tool_loop"),
                                    normalisers=FAKE)
    types = [e.type for e in events]
    assert types[:3] == ["response_start", "item_start", "item_done"]
    assert types.count("response_done") == 1
    totals = [e.payload.usage.total_tokens for e in events
              if isinstance(e.payload, UsageUpdate)]
    assert totals == [15, 36, 39]
    outputs = [i for i, e in enumerate(events) if e.payload.type == "item_start"
               and e.payload.item_type == "function_call_output"]
    assert len(outputs) == 1
    assert types[outputs[0] - 1] == "usage_update"  # after the first request, before the next
    done = events[-1].payload
    assert isinstance(done, ResponseDone) and done.finish_reason == "stop"
    assert done.usage is not None and done.usage.total_tokens == 39


def test_harness_reports_truncation(small_library: FixtureLibrary) -> None:
    _, resp = run_fixture_offline(small_library.get("canonical", "truncated"),
                                  normalisers=FAKE)
    assert resp.status == "error" and resp.error is not None
    assert resp.error.code == STREAM_TRUNCATED


def test_response_view_rules() -> None:
    resp = Response(id="r1", turn_id="t", thread_id="th", agent_id="a", model_id="m",
                    provider_id="p", created_at=1, updated_at=2, status="complete",
                    output_items=(MessageItem(id=prompt_item_id("r1"), origin="user",
                                              content="hi"),
                                  MessageItem(id=prompt_item_id("r1"), origin="agent",
                                              content="not first")))
    view = response_view(resp)
    assert set(view) == {"model_id", "provider_id", "status", "output_items", "usage",
                         "finish_reason", "error"}
    assert [i["id"] for i in view["output_items"]] == ["<prompt>", prompt_item_id("r1")]
    # only a first item with the run's prompt id is the prompt
    other = resp.model_copy(update={"output_items": (
        MessageItem(id="msg_1", origin="agent", content=""), resp.output_items[0])})
    assert [i["id"] for i in response_view(other)["output_items"]] == [
        "msg_1", prompt_item_id("r1")]


# --------------------------------------------------------------------------- the real library


def test_the_library_is_there() -> None:
    """Guards the parametrised tests below from collecting nothing."""
    names = {(fx.provider, fx.name) for fx in FIXTURES}
    for provider in ("openai", "anthropic"):
        assert (provider, "rapid_deltas") in names
        assert (provider, "large_response") in names


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
def test_fixture_gives_its_expected_response(fx: Fixture) -> None:
    events, resp = run_fixture_offline(fx)
    check_stream_shape(events)
    assert response_view(resp) == fx.expected
    assert rebuild(events) == resp


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=2**31), max_size=40))
def test_fixture_in_any_chunking(fx: Fixture, cuts: list[int]) -> None:
    _, resp = run_fixture_offline(fx, cutter(cuts))
    assert response_view(resp) == fx.expected


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
def test_fixture_in_61_byte_chunks(fx: Fixture) -> None:
    """Reads that cut SSE lines, JSON and UTF-8 mid-way, for every protocol's fixtures (one
    test here, not one per protocol's fixture tests)."""
    _, resp = run_fixture_offline(fx, lambda s: [s[i:i + 61] for i in range(0, len(s), 61)])
    assert response_view(resp) == fx.expected


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
def test_fixture_in_small_chunks(fx: Fixture) -> None:
    # byte by byte where that is cheap; multi-MB streams in odd network-sized reads
    size = 1 if sum(len(e.stream) for e in fx.exchanges) < 50_000 else 4093
    _, resp = run_fixture_offline(fx, lambda s: [s[i:i + size] for i in range(0, len(s), size)])
    assert response_view(resp) == fx.expected


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0)),
                      min_size=1, max_size=20))
def test_fixture_replayed_with_duplicates(fx: Fixture, picks: list[tuple[int, int]]) -> None:
    events, resp = run_fixture_offline(fx)
    assert rebuild(with_duplicates(events, picks)) == resp
