"""The turn machine over every recorded fixture (every protocol), driven directly by the
offline harness: in any chunking, with any tool outcome, an append refused at any point (an
outage, or fenced: another node's janitor ended the run), a cancel or a failure before any
input, the run's stored stream has exactly one terminal event (none only if the ending itself
could not be stored; the janitor's when fenced, and nothing after it), gapless ``seq``, and a
Response that is exactly the fold of what was stored; with nothing injected it is the fixture's
``expected.json``, and every model request is the one recorded.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.protocols import protocol
from actors.tools import BUILTIN_TOOLS
from runtime.errors import RUN_FAILED, RUN_ORPHANED
from runtime.reducer import rebuild
from runtime.schema import TERMINAL_EVENT_TYPES, FunctionCallItem, StreamEvent
from runtime.turn_machine import Append
from tests.harness import (
    CANCEL_REASON,
    INJECTED_FAILURE,
    Chunker,
    OfflineRun,
    Outcome,
    request_settings,
    response_view,
)

LIBRARY = FixtureLibrary()
FIXTURES = sorted(LIBRARY, key=lambda fx: (fx.provider, fx.name))
PROPERTY = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _id(fx: Fixture) -> str:
    return f"{fx.provider}-{fx.name}"


def cutter(cuts: list[int]) -> Chunker:
    """Cut each stream at the given points (taken modulo its length)."""
    def chunks(stream: bytes) -> list[bytes]:
        points = sorted({c % (len(stream) + 1) for c in cuts})
        return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    return chunks


cuts_st = st.lists(st.integers(min_value=0, max_value=2**31), max_size=40)


def check_stream(run: OfflineRun) -> None:
    """What holds whatever was injected."""
    stored = run.stored
    assert run.finished is not None, "the turn never finished"
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1)), "seq has a gap"
    assert len({e.event_id for e in stored}) == len(stored)
    assert {e.run_id for e in stored} <= {run.run_id}
    terminals = [i for i, e in enumerate(stored) if e.type in TERMINAL_EVENT_TYPES]
    if run.finished.fenced:  # the janitor's ending is the one terminal event, and the last
        assert run.janitor and stored[-len(run.janitor):] == run.janitor
        assert terminals == [len(stored) - 1], "not exactly one terminal event, last"
        assert stored[-1].payload.error.code == RUN_ORPHANED  # type: ignore[union-attr]
        assert run.finished.status is None
        assert not run.appends[-1][1], "the actor asked for an append after the fence"
        assert [ok for _, ok in run.appends].count(False) >= 1
        mine = run.actor_stored
        assert run.machine.snapshot() == (rebuild(mine) if mine else None)
        assert rebuild(stored).status == "error"
        return
    assert not run.janitor
    if run.finished.status is None:  # the ending itself was refused
        assert terminals == [] and not run.appends[-1][1] and run.appends[-1][0].terminal
    else:
        assert terminals == [len(stored) - 1], "not exactly one terminal event, last"
    if stored:
        assert stored[0].type == "response_start"
        assert run.machine.snapshot() == rebuild(stored), "folded what was not stored"
        if run.finished.status is not None:
            assert run.finished.status == run.response().status
    else:
        assert run.machine.snapshot() is None
    for batch, _ in run.appends:
        want = batch.events[-1].seq if batch.terminal else None
        assert batch.checkpoint_seq in (want, batch.events[-1].seq)
        if any(e.type in ("response_start", "item_done") for e in batch.events):
            assert batch.checkpoint_seq == batch.events[-1].seq, "no checkpoint"


def every_item_closed(events: list[StreamEvent]) -> bool:
    open_items: set[str] = set()
    for e in events:
        p: Any = e.payload
        if e.type == "item_start":
            open_items.add(p.item_id)
        elif e.type in ("item_done", "item_cancelled", "item_error"):
            open_items.discard(p.item_id)
    return not open_items


# --------------------------------------------------------------------------- nothing injected


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@PROPERTY
@given(cuts=cuts_st)
def test_any_chunking_gives_the_expected_response_and_requests(fx: Fixture,
                                                               cuts: list[int]) -> None:
    run = OfflineRun(fx, cutter(cuts)).run()
    check_stream(run)
    assert response_view(run.response()) == fx.expected
    tools = [BUILTIN_TOOLS[t] for t in fx.tools]
    assert [r.exchange for r in run.requests] == list(range(len(fx.exchanges)))
    for req, ex in zip(run.requests, fx.exchanges, strict=True):
        build = protocol(fx.protocol).build_request
        assert build(req.items, tools, request_settings(fx)) == ex.request
    assert every_item_closed(run.stored) or run.response().status == "error"


@pytest.mark.parametrize("fx", [fx for fx in FIXTURES if fx.tools], ids=_id)
@PROPERTY
@given(cuts=cuts_st, outcomes=st.lists(st.tuples(st.text(max_size=30), st.booleans()),
                                       min_size=4, max_size=4))
def test_any_tool_outcome_becomes_its_output_item(fx: Fixture, cuts: list[int],
                                                  outcomes: list[tuple[str, bool]]) -> None:
    given_out: dict[str, tuple[str, bool]] = {}

    def tools(exchange: int, calls: Any) -> list[Outcome]:
        out = []
        for i, c in enumerate(calls):
            assert isinstance(c, FunctionCallItem)
            given_out[c.call_id] = outcomes[i % len(outcomes)]
            out.append(Outcome(*given_out[c.call_id]))
        return out

    run = OfflineRun(fx, cutter(cuts), tools=tools).run()
    check_stream(run)
    want = json.loads(json.dumps(fx.expected))
    for item in want["output_items"]:
        if item["type"] == "function_call_output":
            item["output"], item["success"] = given_out[item["call_id"]]
    assert response_view(run.response()) == want


# --------------------------------------------------------------------------- interrupted


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@PROPERTY
@given(cuts=cuts_st, at=st.integers(min_value=1, max_value=80),
       what=st.sampled_from(["cancel", "fail"]))
def test_a_cancel_or_a_failure_at_any_point_ends_the_turn_once(
        fx: Fixture, cuts: list[int], at: int, what: str) -> None:
    run = OfflineRun(fx, cutter(cuts), interrupt=lambda n: what if n == at else None).run()  # type: ignore[arg-type,return-value]
    check_stream(run)
    resp = run.response()
    if not run.interrupted:  # it came after the ending was decided, or never came
        assert response_view(resp) == fx.expected
        return
    final = run.stored[-1].payload
    if what == "cancel":
        assert [e.type for e in run.stored[-2:]] == ["turn_aborted_by_user", "response_done"]
        assert final.status == "aborted"  # type: ignore[union-attr]
        assert resp.status in ("aborted", "error")  # a stream already broken stays error
        assert every_item_closed(run.stored) or resp.error is not None
        if resp.status == "aborted":
            assert resp.finish_reason == CANCEL_REASON
    else:
        assert final.type == "response_error"
        assert final.error.code == RUN_FAILED  # type: ignore[union-attr]
        assert final.error.message == f"run failed: {INJECTED_FAILURE}"  # type: ignore[union-attr]
        assert resp.status == "error"


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@PROPERTY
@given(cuts=cuts_st, refused=st.sets(st.integers(min_value=0, max_value=60), min_size=1,
                                     max_size=3),
       cancel_at=st.none() | st.integers(min_value=1, max_value=80))
def test_a_refused_append_at_any_point_is_never_shown_and_leaves_no_gap(
        fx: Fixture, cuts: list[int], refused: set[int], cancel_at: int | None) -> None:
    shown: list[bool] = []

    def append_ok(batch: Append, attempt: int) -> bool:
        # before every append: what the machine shows is exactly what was stored
        snap = run.machine.snapshot()
        shown.append(snap == (rebuild(run.stored) if run.stored else None))
        return attempt not in refused

    run = OfflineRun(fx, cutter(cuts), append_ok=append_ok,
                     interrupt=lambda n: "cancel" if n == cancel_at else None)
    run.run()
    check_stream(run)
    assert all(shown)
    first_refused = next((i for i, (_, ok) in enumerate(run.appends) if not ok), None)
    if first_refused is None:  # the turn had fewer appends than the first refusal
        if not run.interrupted:
            assert response_view(run.response()) == fx.expected
        return
    lost, _ = run.appends[first_refused]
    assert not any(e.event_id in {x.event_id for x in lost.events} for e in run.stored)
    if lost.terminal:
        assert run.finished is not None and run.finished.status is None
        return
    ending, stored = run.appends[first_refused + 1]
    assert ending.terminal and ending.events[0].seq == lost.events[0].seq
    assert len(run.appends) == first_refused + 2  # the ending is the last thing asked
    if stored and not run.interrupted:
        assert run.stored[-1].payload.type == "response_error"
        assert run.response().error is not None


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@PROPERTY
@given(cuts=cuts_st, fence_at=st.integers(min_value=0, max_value=40),
       refused=st.sets(st.integers(min_value=0, max_value=40), max_size=2),
       interrupt_at=st.none() | st.integers(min_value=1, max_value=80),
       what=st.sampled_from(["cancel", "fail"]))
def test_a_fenced_append_at_any_point_leaves_the_janitors_ending_the_one_terminal_event(
        fx: Fixture, cuts: list[int], fence_at: int, refused: set[int],
        interrupt_at: int | None, what: str) -> None:
    """Node loss (issue 12): another node's janitor ends the run before any append (also
    among outages, a cancel or a failure): that append is refused, nothing of it is stored,
    the machine asks for nothing more, and the janitor's RUN_ORPHANED stays the last event."""
    run = OfflineRun(fx, cutter(cuts), fence_at=fence_at,
                     append_ok=lambda batch, attempt: attempt not in refused,
                     interrupt=lambda n: what if n == interrupt_at else None)  # type: ignore[arg-type,return-value]
    run.run()
    check_stream(run)
    assert run.finished is not None
    if len(run.appends) <= fence_at:  # the turn ended (or gave up) before the fence
        assert not run.finished.fenced and not run.janitor
        return
    assert run.finished.fenced and run.machine.fenced
    fenced, stored = run.appends[fence_at]
    assert not stored and len(run.appends) == fence_at + 1
    assert not {e.event_id for e in fenced.events} & {e.event_id for e in run.stored}
