"""Every rule of the turn machine (runtime/turn_machine.py), one at a time, fed canonical
payloads by hand. The property tests over every fixture are in test_turn_machine_properties.py.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from runtime.errors import (
    RUN_FAILED,
    ProviderError,
    RedisUnavailable,
    RunFenced,
    TurnProtocolError,
)
from runtime.ids import prompt_item_id, tool_output_item_id
from runtime.reducer import rebuild
from runtime.schema import (
    ErrorInfo,
    FunctionCallItem,
    FunctionCallOutputItem,
    Heartbeat,
    ItemCancelled,
    ItemDelta,
    ItemDone,
    ItemStart,
    MessageItem,
    Payload,
    ReasoningItem,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    StreamEvent,
    TurnAbortedByUser,
    Usage,
    UsageUpdate,
)
from runtime.turn_machine import (
    Append,
    Command,
    Finished,
    RunTools,
    SendRequest,
    TurnLimits,
    TurnMachine,
    TurnSpec,
)

RUN = "3f2b8c1e-5d4a-4b6c-9e8f-7a1b2c3d4e5f"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
T0 = 1_700_000_000_000
PROMPT = "What does notes.txt say?"
EARLIER = (MessageItem(id="old:prompt", origin="user", role="user", content="hi"),
           MessageItem(id="msg_0", origin="agent", role="assistant", content="hello"))
U1 = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15, reasoning_tokens=3)
U2 = Usage(prompt_tokens=20, completion_tokens=4, total_tokens=24, cached_tokens=8)
CALL_A = FunctionCallItem(id="fc_a", name="read_file", arguments='{"path": "a"}', call_id="c_a")
CALL_B = FunctionCallItem(id="fc_b", name="list_dir", arguments='{"path": "."}', call_id="c_b")
ANSWER = MessageItem(id="msg_1", origin="agent", role="assistant", content="It says hi.")
DOWN = RedisUnavailable("Redis is unavailable: ConnectionError: refused")


@dataclass(frozen=True)
class Out:
    output: str
    success: bool


def machine(*, history: tuple[MessageItem, ...] = (), **limits: int) -> TurnMachine:
    spec = TurnSpec(run_id=RUN, thread_id="thread-1", turn_id="turn-1", agent_id=None,
                    provider_id="openai", model_id="gpt-5-mini", prompt=PROMPT,
                    history=history)
    return TurnMachine(spec, traceparent=TRACEPARENT, now_ms=itertools.count(T0).__next__,
                       limits=TurnLimits(**limits))


def one(commands: Sequence[Command]) -> Command:
    assert len(commands) == 1, commands
    return commands[0]


def append_of(commands: Sequence[Command]) -> Append:
    cmd = one(commands)
    assert isinstance(cmd, Append), cmd
    return cmd


def payloads(batch: Append) -> list[Payload]:
    return [e.payload for e in batch.events]


class Turn:
    """A machine and everything it has had stored, for the tests' bookkeeping."""

    def __init__(self, m: TurnMachine | None = None) -> None:
        self.m = m or machine()
        self.stored: list[StreamEvent] = []

    def ack(self, commands: Sequence[Command]) -> list[Command]:
        batch = append_of(commands)
        self.stored += batch.events
        return self.m.append_succeeded()

    def started(self) -> SendRequest:
        req = one(self.ack(self.m.start()))
        assert isinstance(req, SendRequest)
        return req

    def feed(self, *ps: Payload) -> list[Command]:
        """Feed payloads; store every non-terminal append they cause; the rest comes back."""
        commands = self.m.receive_payloads(ps)
        while commands and isinstance(commands[0], Append) and not commands[0].terminal:
            commands = self.ack(commands)
        return commands

    def seqs(self) -> list[int]:
        return [e.seq for e in self.stored]


def message(item: MessageItem | ReasoningItem, *pieces: str) -> list[Payload]:
    return [ItemStart(item_id=item.id, item_type=item.type),
            *(ItemDelta(item_id=item.id, delta_content=p) for p in pieces),
            ItemDone(item_id=item.id, final_item=item)]


def call(item: FunctionCallItem) -> list[Payload]:
    return [ItemStart(item_id=item.id, item_type="function_call", name=item.name,
                      call_id=item.call_id),
            ItemDelta(item_id=item.id, delta_content=item.arguments),
            ItemDone(item_id=item.id, final_item=item)]


def done(reason: str = "stop") -> ResponseDone:
    return ResponseDone(response_id=RUN, status="complete", finish_reason=reason)


# --------------------------------------------------------------------------- purity


def test_the_machine_imports_no_io() -> None:
    """Pure: importing it pulls in neither trio, coredis, httpx nor anything of actors/."""
    probe = ("import sys, runtime.turn_machine; print(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('trio', 'coredis', 'httpx', 'anyio', 'actors')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- start


def test_start_is_response_start_then_the_prompt_item_with_its_text() -> None:
    m = machine()
    batch = append_of(m.start())
    start, item_start, item_done = payloads(batch)
    assert isinstance(start, ResponseStart) and start.response_id == RUN
    assert start.created_at == T0
    assert item_start == ItemStart(item_id=prompt_item_id(RUN), item_type="message",
                                   initial_content=PROMPT)
    assert isinstance(item_done, ItemDone)
    assert item_done.final_item == MessageItem(id=prompt_item_id(RUN), origin="user",
                                               role="user", content=PROMPT)
    assert [e.seq for e in batch.events] == [1, 2, 3]
    assert batch.checkpoint_seq == 3 and not batch.terminal
    assert batch.data == tuple(e.model_dump_json().encode() for e in batch.events)
    assert {e.run_id for e in batch.events} == {RUN}
    assert {e.trace_context.traceparent for e in batch.events} == {TRACEPARENT}


def test_the_prompt_item_renders_from_item_start_alone() -> None:
    """A client folding item_start (before item_done) already shows the prompt."""
    batch = append_of(machine().start())
    assert rebuild(batch.events[:2]).output_items[0].content == PROMPT  # type: ignore[union-attr]


def test_start_twice_is_a_driver_bug() -> None:
    m = machine()
    m.start()
    with pytest.raises(TurnProtocolError):
        m.start()


def test_first_request_is_the_history_then_the_prompt() -> None:
    t = Turn(machine(history=EARLIER))
    req = t.started()
    assert req.exchange == 0
    assert req.items == (*EARLIER, MessageItem(id=prompt_item_id(RUN), origin="user",
                                               role="user", content=PROMPT))


# --------------------------------------------------------------------------- append, then fold


def test_nothing_is_folded_before_redis_took_it() -> None:
    m = machine()
    m.start()
    assert m.snapshot() is None and m.awaiting_append
    assert isinstance(one(m.append_succeeded()), SendRequest)
    snap = m.snapshot()
    assert snap is not None and [i.id for i in snap.output_items] == [prompt_item_id(RUN)]
    batch = append_of(m.receive_payloads(message(ANSWER, "It says ", "hi.")))
    assert m.snapshot() == snap  # in flight: not shown
    assert m.append_succeeded() == []
    after = m.snapshot()
    assert after is not None and after.output_items[-1] == ANSWER
    assert m.reducer.last_seq == batch.events[-1].seq


def test_one_command_at_a_time_payloads_queue_behind_an_append_in_flight() -> None:
    t = Turn()
    t.started()
    first = append_of(t.m.receive_payloads([ItemStart(item_id="msg_1", item_type="message")]))
    assert t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content="a")]) == []
    assert t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content="b")]) == []
    t.stored += first.events
    queued = append_of(t.m.append_succeeded())
    assert payloads(queued) == [ItemDelta(item_id="msg_1", delta_content="ab")]  # merged


def test_seq_is_gapless_and_checkpoints_mark_item_done() -> None:
    t = Turn()
    t.started()
    deltas = append_of(t.m.receive_payloads([ItemStart(item_id="msg_1", item_type="message"),
                                             ItemDelta(item_id="msg_1", delta_content="It")]))
    assert deltas.checkpoint_seq is None
    t.ack([deltas])
    closing = append_of(t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content=" says"),
                                              ItemDone(item_id="msg_1", final_item=ANSWER)]))
    assert closing.checkpoint_seq == closing.events[-1].seq
    t.ack([closing])
    end = append_of(t.feed(UsageUpdate(response_id=RUN, usage=U1), done()) or
                    t.m.provider_ended())
    assert end.terminal and end.checkpoint_seq == end.events[-1].seq
    t.stored += end.events
    assert t.seqs() == list(range(1, len(t.stored) + 1))


def test_heartbeats_and_other_payloads_pass_through() -> None:
    t = Turn()
    t.started()
    batch = append_of(t.m.receive_payloads([Heartbeat()]))
    assert payloads(batch) == [Heartbeat()]


# --------------------------------------------------------------------------- usage


def test_usage_is_a_running_total_over_the_tool_loop() -> None:
    t = Turn()
    t.started()
    assert t.feed(*call(CALL_A), UsageUpdate(response_id="x", usage=U1),
                  done("tool_calls")) == []
    tools = one(t.m.provider_ended())
    assert isinstance(tools, RunTools)
    req = one(t.ack(t.m.tool_results([Out("hi\n", True)])))
    assert isinstance(req, SendRequest) and req.exchange == 1
    first = U2.model_copy(update={"completion_tokens": 1, "total_tokens": 21})
    t.feed(*message(ANSWER, "It says hi."), UsageUpdate(response_id="x", usage=first),
           UsageUpdate(response_id="x", usage=U2), done())
    end = append_of(t.m.provider_ended())
    t.stored += end.events
    totals = [e.payload.usage.total_tokens for e in t.stored
              if isinstance(e.payload, UsageUpdate)]
    assert totals == [15, 36, 39]  # each request's latest, on top of the finished ones
    assert {e.payload.response_id for e in t.stored  # type: ignore[union-attr]
            if isinstance(e.payload, UsageUpdate)} == {RUN}
    (final,) = payloads(end)
    assert isinstance(final, ResponseDone) and final.usage == U1 + U2
    assert final.finish_reason == "stop" and final.status == "complete"
    assert t.m.usage == U1 + U2


# --------------------------------------------------------------------------- the tool loop


def test_response_done_is_held_back_while_tools_run() -> None:
    t = Turn()
    t.started()
    assert t.feed(*call(CALL_A), *call(CALL_B), done("tool_calls")) == []
    assert not any(isinstance(e.payload, ResponseDone) for e in t.stored)
    tools = one(t.m.provider_ended())
    assert isinstance(tools, RunTools) and tools.calls == (CALL_A, CALL_B)
    outputs = append_of(t.m.tool_results([Out("a text", True), Out("error: nope", False)]))
    assert outputs.checkpoint_seq == outputs.events[-1].seq
    out_a = FunctionCallOutputItem(id=tool_output_item_id("c_a"), origin="tool_harness",
                                   call_id="c_a", output="a text", success=True)
    out_b = FunctionCallOutputItem(id=tool_output_item_id("c_b"), origin="tool_harness",
                                   call_id="c_b", output="error: nope", success=False)
    assert payloads(outputs) == [
        ItemStart(item_id=out_a.id, item_type="function_call_output", call_id="c_a"),
        ItemDone(item_id=out_a.id, final_item=out_a),
        ItemStart(item_id=out_b.id, item_type="function_call_output", call_id="c_b"),
        ItemDone(item_id=out_b.id, final_item=out_b)]
    t.stored += outputs.events
    req = one(t.m.append_succeeded())
    assert isinstance(req, SendRequest) and req.exchange == 1
    assert req.items[1:] == (CALL_A, CALL_B, out_a, out_b)  # the prompt, then the turn so far


def test_calls_without_tool_calls_finish_end_the_turn() -> None:
    t = Turn()
    t.started()
    t.feed(*call(CALL_A), done("stop"))
    end = append_of(t.m.provider_ended())
    assert payloads(end)[-1] == ResponseDone(response_id=RUN, status="complete",
                                             finish_reason="stop")


def test_max_iterations_ends_the_turn_after_the_tools() -> None:
    t = Turn(machine(max_iterations=1))
    t.started()
    t.feed(*call(CALL_A), done("tool_calls"))
    assert isinstance(one(t.m.provider_ended()), RunTools)
    end = append_of(t.m.tool_results([Out("x", True)]))
    assert end.terminal
    kinds = [p.type for p in payloads(end)]
    assert kinds == ["item_start", "item_done", "response_done"]
    final = payloads(end)[-1]
    assert isinstance(final, ResponseDone) and final.finish_reason == "max_iterations"
    assert one(t.ack([end])) == Finished("complete")


def test_tool_results_must_match_the_calls() -> None:
    t = Turn()
    t.started()
    t.feed(*call(CALL_A), done("tool_calls"))
    t.m.provider_ended()
    with pytest.raises(TurnProtocolError):
        t.m.tool_results([])


# --------------------------------------------------------------------------- endings


def test_a_provider_error_ends_the_turn_with_what_came_before_it() -> None:
    t = Turn()
    t.started()
    error = ResponseErrorPayload(response_id=RUN, error=ErrorInfo(code="overloaded_error",
                                                                  message="Overloaded"))
    end = append_of(t.m.receive_payloads([ItemStart(item_id="msg_1", item_type="message"),
                                          ItemDelta(item_id="msg_1", delta_content="It"),
                                          error, ItemDelta(item_id="msg_1",
                                                           delta_content="ignored")]))
    assert end.terminal and payloads(end)[-1] == error and len(end.events) == 3
    assert t.m.ending and t.m.receive_payloads([Heartbeat()]) == []
    assert t.m.provider_ended() == []
    assert one(t.ack([end])) == Finished("error")
    assert t.m.finished


def test_a_stream_without_a_terminal_payload_fails_the_run() -> None:
    t = Turn()
    t.started()
    t.feed(*message(ANSWER, "It says hi."))
    end = append_of(t.m.provider_ended())
    (error,) = payloads(end)
    assert isinstance(error, ResponseErrorPayload) and error.error.code == RUN_FAILED
    assert error.error.message == "run failed: provider stream ended without a terminal event"
    assert error.error.details == {"exception": "RuntimeError"}


def test_cancel_cancels_the_open_items_then_aborts() -> None:
    t = Turn()
    t.started()
    t.feed(*message(ANSWER, "done"), UsageUpdate(response_id=RUN, usage=U1))
    t.feed(ItemStart(item_id="rs_1", item_type="reasoning"),
           ItemDelta(item_id="rs_1", delta_content="hmm"),
           ItemStart(item_id="fc_1", item_type="function_call"))
    end = append_of(t.m.cancel("cancelled by user"))
    assert end.terminal
    assert payloads(end) == [
        ItemCancelled(item_id="rs_1", reason="cancelled by user"),
        ItemCancelled(item_id="fc_1", reason="cancelled by user"),
        TurnAbortedByUser(turn_id="turn-1", reason="cancelled by user"),
        ResponseDone(response_id=RUN, status="aborted", usage=None, finish_reason=None)]
    assert t.m.cancel("again") == [] and t.m.fail(ValueError("late")) == []
    assert one(t.ack([end])) == Finished("aborted")
    snap = t.m.snapshot()
    assert snap is not None and snap.status == "aborted"
    assert snap.finish_reason == "cancelled by user"


def test_cancel_while_an_append_is_in_flight_waits_for_its_outcome() -> None:
    t = Turn()
    t.started()
    batch = append_of(t.m.receive_payloads([ItemStart(item_id="msg_1", item_type="message")]))
    assert t.m.cancel("stop") == []  # the batch's outcome decides what is open
    end = t.ack([batch])
    assert payloads(append_of(end))[0] == ItemCancelled(item_id="msg_1", reason="stop")


def test_cancel_while_tools_run_ignores_their_results() -> None:
    t = Turn()
    t.started()
    t.feed(*call(CALL_A), UsageUpdate(response_id=RUN, usage=U1), done("tool_calls"))
    t.m.provider_ended()
    end = append_of(t.m.cancel("stop"))
    assert t.m.tool_results([Out("late", True)]) == []
    final = payloads(end)[-1]
    assert isinstance(final, ResponseDone) and final.usage == U1  # finished requests count
    assert not any(isinstance(p, ItemCancelled) for p in payloads(end))


def test_a_provider_error_raised_keeps_its_code() -> None:
    t = Turn()
    t.started()
    exc = ProviderError("rate limited", code="rate_limit_exceeded",
                        details={"provider": "openai", "status": 429})
    (error,) = payloads(append_of(t.m.fail(exc)))
    assert isinstance(error, ResponseErrorPayload)
    assert error.error == ErrorInfo(code="rate_limit_exceeded", message="rate limited",
                                    details={"provider": "openai", "status": 429})


def test_any_other_failure_is_run_failed_naming_the_exception() -> None:
    t = Turn()
    t.started()
    (error,) = payloads(append_of(t.m.fail(ZeroDivisionError("boom"))))
    assert isinstance(error, ResponseErrorPayload)
    assert error.error == ErrorInfo(code=RUN_FAILED, message="run failed: boom",
                                    details={"exception": "ZeroDivisionError"})


def test_cancel_or_fail_before_start_is_a_driver_bug() -> None:
    with pytest.raises(TurnProtocolError):
        machine().cancel("x")
    with pytest.raises(TurnProtocolError):
        machine().fail(ValueError("x"))


# --------------------------------------------------------------------------- failed appends


def test_a_failed_append_is_not_folded_and_the_ending_reuses_its_seqs() -> None:
    t = Turn()
    t.started()
    t.feed(*message(ANSWER, "It says hi."))
    shown = t.m.snapshot()
    lost = append_of(t.m.receive_payloads([ItemStart(item_id="rs_1", item_type="reasoning"),
                                           ItemDelta(item_id="rs_1", delta_content="x")]))
    assert t.m.receive_payloads([ItemDelta(item_id="rs_1", delta_content="queued")]) == []
    end = append_of(t.m.append_failed(DOWN))
    assert t.m.snapshot() == shown  # nothing of the lost batch, nor of what queued behind it
    assert end.terminal and end.events[0].seq == lost.events[0].seq
    (error,) = payloads(end)  # rs_1 never reached Redis: nothing to cancel
    assert isinstance(error, ResponseErrorPayload) and error.error.code == RUN_FAILED
    assert error.error.details == {"exception": "RedisUnavailable"}
    assert error.error.message.startswith("run failed: Redis is unavailable")
    t.stored += end.events
    assert t.seqs() == list(range(1, len(t.stored) + 1))
    assert one(t.m.append_succeeded()) == Finished("error")
    assert t.m.snapshot() == rebuild(t.stored)


def test_a_cancel_during_a_failing_append_aborts_from_what_was_stored() -> None:
    t = Turn()
    t.started()
    t.feed(ItemStart(item_id="msg_1", item_type="message"))
    lost = append_of(t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content="a"),
                                           ItemStart(item_id="rs_1", item_type="reasoning")]))
    assert t.m.cancel("stop") == []
    end = append_of(t.m.append_failed(DOWN))
    assert end.events[0].seq == lost.events[0].seq
    assert [p.type for p in payloads(end)] == ["item_cancelled", "turn_aborted_by_user",
                                               "response_done"]
    assert payloads(end)[0] == ItemCancelled(item_id="msg_1", reason="stop")


def test_when_even_the_start_failed_the_ending_brings_it_again() -> None:
    m = machine()
    first = append_of(m.start())
    end = append_of(m.append_failed(DOWN))
    assert [e.seq for e in end.events] == [1, 2, 3, 4]
    assert payloads(end)[:3] == payloads(first)
    assert {e.event_id for e in end.events}.isdisjoint(e.event_id for e in first.events)
    assert payloads(end)[3].type == "response_error"
    assert one(m.append_succeeded()) == Finished("error")
    snap = m.snapshot()
    assert snap is not None and snap.status == "error"
    assert snap.output_items[0].id == prompt_item_id(RUN)


def test_a_failed_ending_leaves_the_run_unended() -> None:
    t = Turn()
    t.started()
    t.feed(*message(ANSWER, "It says hi."), done())
    end = append_of(t.m.provider_ended())
    assert one(t.m.append_failed(DOWN)) == Finished(None)
    assert t.m.finished and t.m.next_seq == end.events[0].seq
    snap = t.m.snapshot()
    assert snap is not None and snap.status == "in_progress"
    assert snap == rebuild(t.stored)


# --------------------------------------------------------------------------- fenced appends

FENCED = RunFenced(RUN, "node-b")


def test_a_fenced_append_finishes_the_turn_with_no_ending() -> None:
    """Another node's janitor ended the run (this node stalled past its lease): the refused
    batch is not folded, and nothing more is asked - no ending, no request, no status."""
    t = Turn()
    t.started()
    t.feed(*message(ANSWER, "It says"))
    shown = t.m.snapshot()
    append_of(t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content=" hi.")]))
    assert t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content="queued")]) == []
    assert one(t.m.append_fenced()) == Finished(None, fenced=True)
    assert t.m.finished and t.m.fenced and t.m.ending and not t.m.awaiting_append
    assert t.m.snapshot() == shown == rebuild(t.stored)
    # whatever comes later is ignored: the turn is over
    assert t.m.receive_payloads([ItemDelta(item_id="msg_1", delta_content="late")]) == []
    assert t.m.provider_ended() == []
    assert t.m.cancel("stop") == [] and t.m.fail(ValueError("late")) == []


def test_append_failed_with_run_fenced_is_a_fence_not_a_failure() -> None:
    t = Turn()
    t.started()
    append_of(t.m.receive_payloads([ItemStart(item_id="msg_1", item_type="message")]))
    assert one(t.m.append_failed(FENCED)) == Finished(None, fenced=True)
    assert t.m.fenced


def test_a_fenced_start_or_ending_finishes_fenced_too() -> None:
    m = machine()
    append_of(m.start())
    assert one(m.append_failed(FENCED)) == Finished(None, fenced=True)
    assert m.snapshot() is None
    t = Turn()
    t.started()
    t.feed(*message(ANSWER, "It says hi."), done())
    end = append_of(t.m.provider_ended())
    assert end.terminal
    assert one(t.m.append_fenced()) == Finished(None, fenced=True)
    snap = t.m.snapshot()
    assert snap is not None and snap.status == "in_progress"  # the janitor's ending is not ours


def test_a_fenced_tool_output_asks_for_no_next_request() -> None:
    t = Turn()
    t.started()
    t.feed(*call(CALL_A), done("tool_calls"))
    assert isinstance(one(t.m.provider_ended()), RunTools)
    outputs = append_of(t.m.tool_results([Out("x", True)]))
    assert [p.type for p in payloads(outputs)] == ["item_start", "item_done"]
    assert one(t.m.append_fenced()) == Finished(None, fenced=True)
    assert t.m.cancel("stop") == []


def test_a_fence_without_an_append_in_flight_is_a_driver_bug() -> None:
    with pytest.raises(TurnProtocolError):
        machine().append_fenced()
    m = machine()
    append_of(m.start())
    m.append_succeeded()
    with pytest.raises(TurnProtocolError):
        m.append_fenced()


def test_outcomes_without_an_append_in_flight_are_driver_bugs() -> None:
    m = machine()
    with pytest.raises(TurnProtocolError):
        m.append_succeeded()
    with pytest.raises(TurnProtocolError):
        m.append_failed(DOWN)
    m.start()
    with pytest.raises(TurnProtocolError):
        m.receive_payloads([])  # the start is not stored yet: no request is out
    with pytest.raises(TurnProtocolError):
        m.provider_ended()
    with pytest.raises(TurnProtocolError):
        m.tool_results([])


# --------------------------------------------------------------------------- merging


@pytest.mark.parametrize(("max_chars", "expected"), [(8192, ["abc"]), (2, ["ab", "c"]),
                                                      (0, ["a", "b", "c"])])
def test_deltas_that_came_together_are_merged(max_chars: int, expected: list[str]) -> None:
    t = Turn(machine(coalesce_max_chars=max_chars))
    t.started()
    t.feed(ItemStart(item_id="msg_1", item_type="message"))
    batch = append_of(t.m.receive_payloads(
        [ItemDelta(item_id="msg_1", delta_content=c) for c in "abc"]))
    assert [p.delta_content for p in payloads(batch)] == expected  # type: ignore[union-attr]
