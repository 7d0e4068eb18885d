"""Every rule of the reducer (SPEC §4), one event type at a time."""

from __future__ import annotations

import pytest

from runtime.clock import FixedClock
from runtime.envelope import EventFactory
from runtime.errors import STREAM_SEQUENCE_ERROR, EventOrderError
from runtime.reducer import ResponseReducer, rebuild
from runtime.schema import (
    CancelledItem,
    ErrorInfo,
    ErrorItem,
    FunctionCallItem,
    Heartbeat,
    ItemCancelled,
    ItemDelta,
    ItemDone,
    ItemErrorPayload,
    ItemStart,
    MessageItem,
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

RUN = "3f2b8c1e-5d4a-4b6c-9e8f-7a1b2c3d4e5f"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
T0 = 1_700_000_000_000
U1 = Usage(prompt_tokens=8, completion_tokens=6, total_tokens=14)
U2 = Usage(prompt_tokens=20, completion_tokens=10, total_tokens=30, reasoning_tokens=4,
           cached_tokens=2)


class Run:
    """A reducer and an event factory with a hand-set clock."""

    def __init__(self, start: bool = True) -> None:
        self.clock = FixedClock(T0)
        self.factory = EventFactory(RUN, TRACEPARENT, self.clock.now_ms)
        self.reducer = ResponseReducer()
        self.events: list[StreamEvent] = []
        if start:
            self.apply(self.start_payload())

    @staticmethod
    def start_payload() -> ResponseStart:
        return ResponseStart(response_id=RUN, turn_id="turn-1", thread_id="thread-1",
                             agent_id="agent-1", model_id="gpt-5-mini", provider_id="openai",
                             created_at=T0 - 5)

    def make(self, payload: Payload, at: int | None = None) -> StreamEvent:
        if at is not None:
            self.clock.ms = at
        ev = self.factory.make(payload)
        self.events.append(ev)
        return ev

    def apply(self, payload: Payload, at: int | None = None) -> bool:
        return self.reducer.apply(self.make(payload, at))

    def snap(self) -> Response:
        return self.reducer.snapshot()


def msg(item_id: str, content: str, origin: str = "agent") -> MessageItem:
    return MessageItem(id=item_id, origin=origin, role="assistant", content=content)


def call(item_id: str, call_id: str = "call_1") -> FunctionCallItem:
    return FunctionCallItem(id=item_id, name="read_file", arguments='{"path": "a"}',
                            call_id=call_id)


# --------------------------------------------------------------------------- response_start


@pytest.mark.parametrize("payload", [
    Heartbeat(), ItemStart(item_id="m", item_type="message"),
    ItemDelta(item_id="m", delta_content="x"), UsageUpdate(response_id=RUN, usage=U1),
    ResponseDone(response_id=RUN, status="complete", finish_reason="stop"),
    ResponseErrorPayload(response_id=RUN, error=ErrorInfo(code="X", message="x")),
    TurnAbortedByUser(turn_id="t", reason="r"),
])
def test_any_event_before_response_start_is_an_error(payload: Payload) -> None:
    run = Run(start=False)
    with pytest.raises(EventOrderError):
        run.apply(payload)
    assert not run.reducer.started and run.reducer.last_seq == 0
    assert run.reducer.status == "queued" and not run.reducer.is_terminal
    with pytest.raises(EventOrderError):
        run.snap()
    assert run.apply(Run.start_payload())  # the rejected event left no trace
    assert run.reducer.started


def test_response_start_sets_the_header() -> None:
    run = Run(start=False)
    assert run.apply(Run.start_payload(), at=T0 + 1)
    snap = run.snap()
    assert (snap.id, snap.turn_id, snap.thread_id, snap.agent_id) == (
        RUN, "turn-1", "thread-1", "agent-1")
    assert (snap.model_id, snap.provider_id) == ("gpt-5-mini", "openai")
    assert (snap.created_at, snap.updated_at) == (T0 - 5, T0 + 1)
    assert snap.status == "in_progress" == run.reducer.status
    assert snap.output_items == () and snap.usage is None
    assert snap.finish_reason is None and snap.error is None
    assert run.reducer.last_seq == 1 and not run.reducer.is_terminal


def test_second_response_start_is_a_sequence_error() -> None:
    run = Run()
    assert run.apply(Run.start_payload())
    snap = run.snap()
    assert snap.status == "error" and snap.error is not None
    assert snap.error.code == STREAM_SEQUENCE_ERROR
    assert snap.finish_reason == "stream_error"


# --------------------------------------------------------------------------- items


def test_prompt_item_as_the_actor_emits_it() -> None:
    run = Run()
    prompt = MessageItem(id=f"{RUN}:prompt", origin="user", role="user", content="hi")
    assert run.apply(ItemStart(item_id=prompt.id, item_type="message"))
    assert run.apply(ItemDone(item_id=prompt.id, final_item=prompt))
    assert run.snap().output_items == (prompt,)


@pytest.mark.parametrize("item_type", ["message", "reasoning"])
def test_live_items_appear_at_once_and_grow(item_type: str) -> None:
    run = Run()
    assert run.apply(ItemStart(item_id="i1", item_type=item_type,
                               initial_content="He"))
    (item,) = run.snap().output_items
    assert item.type == item_type and item.id == "i1" and item.origin == "agent"
    assert item.content == "He"  # type: ignore[union-attr]
    for d in ["llo", ", ", "world"]:
        assert run.apply(ItemDelta(item_id="i1", delta_content=d))
    assert run.snap().output_items[0].content == "Hello, world"  # type: ignore[union-attr]
    if item_type == "message":
        assert isinstance(run.snap().output_items[0], MessageItem)
        assert run.snap().output_items[0].role == "assistant"  # type: ignore[union-attr]
    else:
        assert isinstance(run.snap().output_items[0], ReasoningItem)


def test_item_start_without_initial_content_is_empty() -> None:
    run = Run()
    run.apply(ItemStart(item_id="m", item_type="message"))
    assert run.snap().output_items == (MessageItem(id="m", origin="agent", role="assistant",
                                                   content=""),)
    assert not run.apply(ItemDelta(item_id="m", delta_content=""))  # nothing to show


def test_item_done_replaces_the_buffered_text() -> None:
    run = Run()
    run.apply(ItemStart(item_id="m", item_type="message"))
    run.apply(ItemDelta(item_id="m", delta_content="draft"))
    final = MessageItem(id="m", origin="agent", role="assistant", content="Final text",
                        correlation_id="c")
    assert run.apply(ItemDone(item_id="m", final_item=final))
    assert run.snap().output_items == (final,)


def test_reasoning_done_keeps_signature_and_encrypted_content() -> None:
    run = Run()
    run.apply(ItemStart(item_id="rs_1", item_type="reasoning"))
    run.apply(ItemDelta(item_id="rs_1", delta_content="thinking"))
    final = ReasoningItem(id="rs_1", origin="agent", content="thinking", signature="sig",
                          encrypted_content="enc")
    run.apply(ItemDone(item_id="rs_1", final_item=final))
    assert run.snap().output_items == (final,)


@pytest.mark.parametrize("item_type", ["function_call", "function_call_output", "error",
                                       "cancelled"])
def test_other_items_appear_only_when_done(item_type: str) -> None:
    run = Run()
    updated = run.snap().updated_at
    assert not run.apply(ItemStart(item_id="fc", item_type=item_type,
                                   name="read_file", call_id="call_1"), at=T0 + 10)
    assert not run.apply(ItemDelta(item_id="fc", delta_content='{"pa'), at=T0 + 11)
    assert not run.apply(ItemDelta(item_id="fc", delta_content='th": "a"}'), at=T0 + 12)
    assert run.snap().output_items == ()
    assert run.snap().updated_at == updated  # nothing visible changed
    assert run.apply(ItemDone(item_id="fc", final_item=call("fc")), at=T0 + 13)
    assert run.snap().output_items == (call("fc"),)
    assert run.snap().updated_at == T0 + 13


def test_position_is_fixed_by_first_insertion() -> None:
    run = Run()
    run.apply(ItemStart(item_id="a", item_type="message"))
    run.apply(ItemStart(item_id="b", item_type="function_call"))
    run.apply(ItemStart(item_id="c", item_type="reasoning"))
    run.apply(ItemDone(item_id="b", final_item=call("b")))
    run.apply(ItemDone(item_id="c", final_item=ReasoningItem(id="c", origin="agent",
                                                             content="r")))
    run.apply(ItemDone(item_id="a", final_item=msg("a", "A")))
    assert [i.id for i in run.snap().output_items] == ["a", "c", "b"]
    # an id that comes back is replaced where it first stood
    run.apply(ItemStart(item_id="a", item_type="message", initial_content="again"))
    assert [i.id for i in run.snap().output_items] == ["a", "c", "b"]
    assert run.snap().output_items[0].content == "again"  # type: ignore[union-attr]
    run.apply(ItemDone(item_id="a", final_item=msg("a", "A2")))
    assert run.snap().output_items[0] == msg("a", "A2")
    run.apply(ItemStart(item_id="d", item_type="message"))
    run.apply(ItemDone(item_id="d", final_item=msg("d", "D")))
    assert [i.id for i in run.snap().output_items] == ["a", "c", "b", "d"]


def test_item_error_removes_the_item_and_appends_an_error_item() -> None:
    run = Run()
    run.apply(ItemStart(item_id="a", item_type="message"))
    run.apply(ItemDelta(item_id="a", delta_content="partial"))
    run.apply(ItemStart(item_id="b", item_type="message"))
    err = ErrorInfo(code="CONTENT_FILTER", message="blocked", details={"k": [1]})
    assert run.apply(ItemErrorPayload(item_id="a", error=err))
    assert run.snap().output_items == (
        MessageItem(id="b", origin="agent", role="assistant", content=""),
        ErrorItem(id="a", origin="system", code="CONTENT_FILTER", message="blocked",
                  details={"k": [1]}),
    )
    assert run.snap().status == "in_progress"
    # its buffer is closed: a later delta for it is a sequence error
    run.apply(ItemDelta(item_id="a", delta_content="more"))
    assert run.snap().error is not None
    assert run.snap().error.code == STREAM_SEQUENCE_ERROR  # type: ignore[union-attr]


def test_item_cancelled_removes_the_item_and_appends_a_cancelled_item() -> None:
    run = Run()
    run.apply(ItemStart(item_id="a", item_type="reasoning"))
    run.apply(ItemStart(item_id="fc", item_type="function_call"))
    run.apply(ItemStart(item_id="b", item_type="message"))
    assert run.apply(ItemCancelled(item_id="a", reason="user"))
    assert run.apply(ItemCancelled(item_id="fc"))
    assert run.snap().output_items == (
        MessageItem(id="b", origin="agent", role="assistant", content=""),
        CancelledItem(id="a", origin="system", reason="user"),
        CancelledItem(id="fc", origin="system", reason=None),
    )


def test_item_error_for_a_finished_item_replaces_it() -> None:
    run = Run()
    run.apply(ItemStart(item_id="a", item_type="message"))
    run.apply(ItemDone(item_id="a", final_item=msg("a", "x")))
    run.apply(ItemErrorPayload(item_id="a", error=ErrorInfo(code="E", message="m")))
    assert run.snap().output_items == (ErrorItem(id="a", origin="system", code="E",
                                                 message="m"),)
    assert run.snap().error is None


# --------------------------------------------------------------------------- sequence errors


@pytest.mark.parametrize("case", ["delta_unknown", "done_unknown", "done_twice",
                                  "delta_after_done", "start_while_open"])
def test_stream_sequence_error(case: str) -> None:
    run = Run()
    run.apply(ItemStart(item_id="m", item_type="message"))
    run.apply(ItemDelta(item_id="m", delta_content="ok"))
    if case == "delta_unknown":
        bad: Payload = ItemDelta(item_id="ghost", delta_content="boo")
    elif case == "done_unknown":
        bad = ItemDone(item_id="ghost", final_item=msg("ghost", "boo"))
    elif case == "start_while_open":
        bad = ItemStart(item_id="m", item_type="message")
    else:
        run.apply(ItemDone(item_id="m", final_item=msg("m", "ok")))
        bad = (ItemDone(item_id="m", final_item=msg("m", "again")) if case == "done_twice"
               else ItemDelta(item_id="m", delta_content="late"))
    before = run.snap().output_items
    assert run.apply(bad, at=T0 + 50)
    snap = run.snap()
    assert snap.status == "error" and snap.finish_reason == "stream_error"
    assert snap.error is not None and snap.error.code == STREAM_SEQUENCE_ERROR
    item_id = bad.item_id  # type: ignore[union-attr]
    assert repr(item_id) in snap.error.message
    assert snap.error.details is not None and snap.error.details["item_id"] == item_id
    assert snap.output_items == before and snap.updated_at == T0 + 50
    assert not run.reducer.is_terminal  # the stream goes on to its terminal event

    # every later item event is ignored
    later_events: list[Payload] = [
        ItemStart(item_id="n", item_type="message"),
        ItemDelta(item_id="m", delta_content="x"),
        ItemDone(item_id="n", final_item=msg("n", "n")),
        ItemErrorPayload(item_id="m", error=ErrorInfo(code="E", message="")),
        ItemCancelled(item_id="m"),
    ]
    for later in later_events:
        assert not run.apply(later, at=T0 + 60)
    assert run.snap() == snap
    # response-level events still apply, within the rules
    assert run.apply(UsageUpdate(response_id=RUN, usage=U1), at=T0 + 70)
    run.apply(ResponseDone(response_id=RUN, status="complete", usage=U2,
                           finish_reason="stop"), at=T0 + 80)
    final = run.snap()
    assert final.status == "error" and final.finish_reason == "stream_error"
    assert final.usage == U2 and final.error == snap.error and final.updated_at == T0 + 80
    assert run.reducer.is_terminal


# --------------------------------------------------------------------------- dedup, seq, time


def test_a_repeated_event_changes_nothing() -> None:
    run = Run()
    start = run.make(ItemStart(item_id="m", item_type="message"))
    delta = run.make(ItemDelta(item_id="m", delta_content="x"), at=T0 + 5)
    done = run.make(ItemDone(item_id="m", final_item=msg("m", "x")), at=T0 + 6)
    r = run.reducer
    assert r.apply(start) and r.apply(delta)
    snap = run.snap()
    assert not r.apply(delta) and not r.apply(start)
    assert run.snap() == snap and run.snap().output_items[0].content == "x"  # type: ignore[union-attr]
    assert r.apply(done)
    snap = run.snap()
    for ev in (done, delta, start, run.events[0]):  # run.events[0] is response_start
        assert not r.apply(ev)
    assert run.snap() == snap and snap.status == "in_progress" and snap.error is None


def test_dedup_is_by_event_id_not_seq() -> None:
    run = Run()
    ev = run.make(ItemStart(item_id="m", item_type="message"))
    same_seq = ev.model_copy(update={"event_id": "0b9a2c1e-5d4a-4b6c-9e8f-7a1b2c3d4e5f",
                                     "payload": ItemDelta(item_id="m", delta_content="y"),
                                     "type": "item_delta"})
    assert run.reducer.apply(ev) and run.reducer.apply(same_seq)
    assert run.snap().output_items[0].content == "y"  # type: ignore[union-attr]


def test_last_seq_is_the_highest_applied() -> None:
    run = Run()
    assert run.reducer.last_seq == 1
    evs = [run.make(Heartbeat()) for _ in range(4)]  # seq 2..5
    run.reducer.apply(evs[3])
    run.reducer.apply(evs[1])
    assert run.reducer.last_seq == 5
    run.reducer.apply(evs[3])
    assert run.reducer.last_seq == 5


def test_heartbeat_changes_nothing() -> None:
    run = Run()
    snap = run.snap()
    assert not run.apply(Heartbeat(), at=T0 + 1000)
    assert run.snap() == snap and run.reducer.last_seq == 2


def test_updated_at_is_the_latest_changing_event() -> None:
    run = Run(start=False)
    run.apply(Run.start_payload(), at=T0)
    assert run.snap().updated_at == T0
    run.apply(ItemStart(item_id="m", item_type="message"), at=T0 + 10)
    assert run.snap().updated_at == T0 + 10
    run.apply(ItemDelta(item_id="m", delta_content="a"), at=T0 + 3)  # clock went back
    assert run.snap().updated_at == T0 + 10
    assert run.snap().output_items[0].content == "a"  # type: ignore[union-attr]
    run.apply(Heartbeat(), at=T0 + 99)  # no change, no bump
    run.apply(ItemDelta(item_id="m", delta_content=""), at=T0 + 99)
    assert run.snap().updated_at == T0 + 10
    run.apply(ItemDelta(item_id="m", delta_content="b"), at=T0 + 20)
    assert run.snap().updated_at == T0 + 20
    assert run.snap().created_at == T0 - 5


# --------------------------------------------------------------------------- response level


def test_usage_update_overwrites() -> None:
    run = Run()
    assert run.apply(UsageUpdate(response_id=RUN, usage=U1))
    assert run.snap().usage == U1
    assert run.apply(UsageUpdate(response_id=RUN, usage=U2))
    assert run.snap().usage == U2
    assert not run.apply(UsageUpdate(response_id=RUN, usage=U2))


def test_response_done_completes() -> None:
    run = Run()
    run.apply(UsageUpdate(response_id=RUN, usage=U1))
    assert run.apply(ResponseDone(response_id=RUN, status="complete", finish_reason="stop"))
    snap = run.snap()
    assert snap.status == "complete" and snap.finish_reason == "stop" and snap.usage == U1
    assert run.reducer.is_terminal and run.reducer.status == "complete"
    run2 = Run()
    run2.apply(ResponseDone(response_id=RUN, status="complete", usage=U2, finish_reason=None))
    assert run2.snap().usage == U2 and run2.snap().finish_reason is None


def test_response_done_keeps_an_error_status() -> None:
    run = Run()
    err = ErrorInfo(code="rate_limit_exceeded", message="slow down", details={"retry": 1})
    assert run.apply(ResponseErrorPayload(response_id=RUN, error=err))
    assert run.reducer.is_terminal
    snap = run.snap()
    assert snap.status == "error" and snap.error == err and snap.finish_reason is None
    run.apply(ResponseDone(response_id=RUN, status="complete", finish_reason="stop"))
    snap = run.snap()
    assert snap.status == "error" and snap.error == err and snap.finish_reason == "stop"


def test_turn_aborted_then_done_aborted() -> None:
    run = Run()
    run.apply(ItemStart(item_id="m", item_type="message"))
    run.apply(ItemCancelled(item_id="m", reason="cancelled by user"))
    assert run.apply(TurnAbortedByUser(turn_id="turn-1", reason="cancelled by user"))
    assert run.reducer.status == "aborted" and not run.reducer.is_terminal
    run.apply(ResponseDone(response_id=RUN, status="complete", usage=U1,
                           finish_reason="stop"))
    snap = run.snap()
    assert snap.status == "aborted" and snap.finish_reason == "cancelled by user"
    assert snap.usage == U1 and run.reducer.is_terminal
    assert snap.output_items == (CancelledItem(id="m", origin="system",
                                               reason="cancelled by user"),)


def test_response_done_aborted_status() -> None:
    run = Run()
    run.apply(ResponseDone(response_id=RUN, status="aborted", finish_reason=None))
    assert run.snap().status == "aborted" and run.reducer.is_terminal


# --------------------------------------------------------------------------- snapshots


def test_snapshots_are_independent_values() -> None:
    run = Run()
    run.apply(ItemStart(item_id="m", item_type="message"))
    run.apply(ItemDelta(item_id="m", delta_content="one"))
    first = run.snap()
    first_json = first.model_dump_json()
    run.apply(ItemDelta(item_id="m", delta_content=" two"))
    run.apply(ItemStart(item_id="n", item_type="reasoning"))
    run.apply(UsageUpdate(response_id=RUN, usage=U1))
    run.apply(ResponseDone(response_id=RUN, status="complete", finish_reason="stop"))
    assert first.model_dump_json() == first_json
    second = run.snap()
    assert second.output_items[0].content == "one two"  # type: ignore[union-attr]
    assert len(second.output_items) == 2 and second.status == "complete"
    assert isinstance(second.output_items, tuple)
    with pytest.raises(Exception, match="frozen"):
        second.status = "error"  # type: ignore[misc]
    assert run.snap() == second


def test_many_deltas_and_interleaved_snapshots() -> None:
    run = Run()
    run.apply(ItemStart(item_id="m", item_type="message"))
    expected = []
    for i in range(5000):
        run.apply(ItemDelta(item_id="m", delta_content=str(i % 10)))
        expected.append(str(i % 10))
        if i % 997 == 0:
            assert run.snap().output_items[0].content == "".join(expected)  # type: ignore[union-attr]
    assert run.snap().output_items[0].content == "".join(expected)  # type: ignore[union-attr]


def test_rebuild_equals_the_live_fold() -> None:
    run = Run()
    run.apply(ItemStart(item_id="rs", item_type="reasoning"), at=T0 + 1)
    run.apply(ItemDelta(item_id="rs", delta_content="hmm"), at=T0 + 2)
    run.apply(ItemDone(item_id="rs", final_item=ReasoningItem(id="rs", origin="agent",
                                                              content="hmm")), at=T0 + 3)
    run.apply(ItemStart(item_id="fc", item_type="function_call"), at=T0 + 4)
    run.apply(ItemDone(item_id="fc", final_item=call("fc")), at=T0 + 5)
    run.apply(UsageUpdate(response_id=RUN, usage=U1), at=T0 + 6)
    run.apply(ResponseDone(response_id=RUN, status="complete", finish_reason="tool_calls"),
              at=T0 + 7)
    assert rebuild(run.events) == run.snap()
    assert rebuild(run.events + run.events) == run.snap()
    with pytest.raises(EventOrderError):
        rebuild(run.events[1:])
