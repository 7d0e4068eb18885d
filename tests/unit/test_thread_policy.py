"""The thread policy rules (runtime/thread_policy.py): the reference state and the history."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.schema import (
    CancelledItem,
    ErrorItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    Response,
)
from runtime.thread_policy import (
    ENDED_KEPT,
    INTERRUPTED,
    STRATEGIES,
    Admission,
    Promotion,
    ThreadState,
    history_items,
    parse_admission,
    parse_promotion,
)

ops = st.lists(st.one_of(st.tuples(st.just("admit"), st.sampled_from(STRATEGIES)),
                         st.tuples(st.just("release"), st.integers(0, 30))), max_size=40)


def play(sequence: list[tuple[str, object]]) -> tuple[ThreadState, list[str]]:
    """Run ``sequence``; returns the state and the order in which runs started."""
    state = ThreadState()
    started: list[str] = []
    n = 0
    for op, arg in sequence:
        if op == "admit":
            run = f"r{n}"
            n += 1
            admission = state.admit(run, "node", arg)  # type: ignore[arg-type]
            if admission.decision == "start":
                started.append(run)
        else:
            known = sorted(state.nodes)
            if known:
                promotion = state.release(known[int(arg) % len(known)])  # type: ignore[call-overload]
                if promotion is not None:
                    started.append(promotion.run_id)
        assert not state.queue or state.running, "a queue waits only behind a running turn"
        assert set(state.running) | set(state.queue) == set(state.nodes)
        assert not set(state.running) & set(state.queue)
        assert len(state.ended) <= ENDED_KEPT
    return state, started


@settings(max_examples=150)
@given(ops)
def test_invariants_hold_for_any_sequence(sequence: list[tuple[str, object]]) -> None:
    _, started = play(sequence)
    assert len(started) == len(set(started)), "no run starts twice"


@settings(max_examples=100)
@given(st.lists(st.sampled_from(["reject", "enqueue"]), max_size=20))
def test_without_parallel_one_turn_runs_at_a_time_in_order(strategies: list[str]) -> None:
    state = ThreadState()
    accepted: list[str] = []
    for i, strategy in enumerate(strategies):
        admission = state.admit(f"r{i}", "n", strategy)  # type: ignore[arg-type]
        assert len(state.running) <= 1
        if admission.decision == "busy":
            assert strategy == "reject" and state.running
        else:
            accepted.append(f"r{i}")
    order: list[str] = list(state.running)
    while state.running:
        promotion = state.release(next(iter(state.running)))
        if promotion is not None:
            order.append(promotion.run_id)
    assert order == accepted, "queued turns start one at a time, first come first"


def test_reject_changes_nothing_and_names_the_running() -> None:
    state = ThreadState()
    assert state.admit("a", "n1", "reject") == Admission("start")
    before = (dict(state.nodes), set(state.running), list(state.queue))
    assert state.admit("b", "n2", "reject") == Admission("busy", (("a", "n1"),))
    assert (state.nodes, state.running, state.queue) == before


def test_interrupt_goes_first_and_names_what_to_abort() -> None:
    state = ThreadState()
    state.admit("a", "n1", "parallel")
    state.admit("b", "n2", "parallel")
    assert state.admit("q", "n1", "enqueue") == Admission("queued", position=1)
    assert state.admit("i", "n3", "interrupt") == Admission(
        "interrupt", (("a", "n1"), ("b", "n2")), position=1)
    assert state.release("a") is None  # b still runs
    assert state.release("b") == Promotion("i", "n3", ("b", "a"))
    assert state.release("i") == Promotion("q", "n1", ("i", "b", "a"))


def test_release_is_idempotent_and_a_cancelled_queued_run_leaves_the_queue() -> None:
    state = ThreadState()
    state.admit("a", "n", "enqueue")
    state.admit("b", "n", "enqueue")
    state.admit("c", "n", "enqueue")
    assert state.release("b") is None  # cancelled while queued
    assert state.release("b") is None
    assert state.release("a") == Promotion("c", "n", ("a",))
    assert state.release("a") is None
    assert state.ended == ["a"]  # b never ran


def test_parsing_the_scripts_replies() -> None:
    assert parse_admission(["start", "0"]) == Admission("start")
    assert parse_admission(["queued", "3"]) == Admission("queued", position=3)
    assert parse_admission(["interrupt", "1", "b", "n2", "a", "n1"]) == Admission(
        "interrupt", (("a", "n1"), ("b", "n2")), position=1)
    assert parse_promotion([]) is None
    assert parse_promotion(["r", "n", "e1", "e2"]) == Promotion("r", "n", ("e1", "e2"))
    for bad in ([], ["start"], ["nope", "0"], ["busy", "0", "a"]):
        with pytest.raises(ValueError):
            parse_admission(bad)


def response(rid: str, status: str, items: tuple[object, ...],
             finish_reason: str | None = None) -> Response:
    return Response(id=rid, turn_id="t", thread_id="th", model_id="m", provider_id="openai",
                    created_at=1, updated_at=1, status=status,
                    output_items=items, finish_reason=finish_reason)


def test_history_keeps_complete_turns_and_the_finished_part_of_interrupted_ones() -> None:
    prompt = MessageItem(id="p1", origin="user", role="user", content="first")
    answer = MessageItem(id="m1", origin="agent", content="hello")
    call = FunctionCallItem(id="c1", name="read_file", arguments="{}", call_id="k1")
    output = FunctionCallOutputItem(id="k1:output", origin="tool_harness", call_id="k1",
                                    output="x", success=True)
    unanswered = FunctionCallItem(id="c2", name="read_file", arguments="{}", call_id="k2")
    cancelled = CancelledItem(id="m2", origin="system", reason=INTERRUPTED)
    error = ErrorItem(id="e", origin="provider", code="X", message="x")
    complete = response("r1", "complete", (prompt, answer))
    interrupted = response("r2", "aborted", (prompt, call, output, unanswered, cancelled),
                           INTERRUPTED)
    user_cancelled = response("r3", "aborted", (prompt, answer), "cancelled by user")
    failed = response("r4", "error", (prompt, error))
    assert history_items([complete, interrupted, user_cancelled, failed]) == [
        prompt, answer, prompt, call, output]
