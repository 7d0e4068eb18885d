"""Properties of the reducer: chunking does not matter, replays and duplicates change nothing,
and any event sequence folds without crashing into a Response that round-trips as JSON."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.envelope import EventFactory, decode_event, encode_event
from runtime.reducer import ResponseReducer, rebuild
from runtime.schema import (
    FunctionCallItem,
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
    UsageUpdate,
)
from tests.unit.test_schema import error_infos, opt_texts, output_items, texts, usages

RUN = "run-1"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
T0 = 1_700_000_000_000
START = ResponseStart(response_id=RUN, turn_id="t", thread_id="th", model_id="m",
                      provider_id="p", created_at=T0)


def make_events(payloads: list[Payload], times: list[int] | None = None) -> list[StreamEvent]:
    stamps = iter(times) if times is not None else iter(lambda: T0, None)
    f = EventFactory(RUN, TRACEPARENT, lambda: next(stamps))
    return [f.make(p) for p in payloads]


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


def final_for(item_type: str, item_id: str, text: str) -> OutputItem:
    if item_type == "message":
        return MessageItem(id=item_id, origin="agent", role="assistant", content=text)
    if item_type == "reasoning":
        return ReasoningItem(id=item_id, origin="agent", content=text, signature="sig")
    return FunctionCallItem(id=item_id, name="tool", arguments=text, call_id=f"c-{item_id}")


item_specs = st.lists(
    st.tuples(st.sampled_from(["message", "reasoning", "function_call"]), st.text(max_size=60),
              st.lists(st.integers(min_value=0, max_value=1000), max_size=12)),
    min_size=1, max_size=4)


def script(specs: list[tuple[str, str, list[int]]], done: bool) -> list[Payload]:
    """Every item started, its text streamed in the given pieces, interleaved round robin."""
    out: list[Payload] = [START]
    pieces = []
    for n, (item_type, text, cuts) in enumerate(specs):
        out.append(ItemStart(item_id=f"i{n}", item_type=item_type))
        pieces.append(split(text, cuts))
    for k in range(max(len(p) for p in pieces)):
        for n, p in enumerate(pieces):
            if k < len(p):
                out.append(ItemDelta(item_id=f"i{n}", delta_content=p[k]))
    if done:
        for n, (item_type, text, _) in enumerate(specs):
            out.append(ItemDone(item_id=f"i{n}", final_item=final_for(item_type, f"i{n}", text)))
        out.append(ResponseDone(response_id=RUN, status="complete", finish_reason="stop"))
    return out


@settings(max_examples=100, deadline=None)
@given(item_specs, st.booleans())
def test_any_chunking_of_deltas_gives_the_same_response(
        specs: list[tuple[str, str, list[int]]], done: bool) -> None:
    whole: list[tuple[str, str, list[int]]] = [(t, text, []) for t, text, _ in specs]
    reference = rebuild(make_events(script(whole, done)))
    assert rebuild(make_events(script(specs, done))) == reference
    # live items stand where they started; function calls appear when done
    shown = [(f"i{n}", text) for n, (t, text, _) in enumerate(specs)
             if t in ("message", "reasoning")]
    shown += [(f"i{n}", text) for n, (t, text, _) in enumerate(specs)
              if done and t == "function_call"]
    assert [(i.id, getattr(i, "content", None) or getattr(i, "arguments", None) or "")
            for i in reference.output_items] == shown


# --------------------------------------------------------------------------- arbitrary streams

item_ids = st.sampled_from(["a", "b", "c"])
stream_payloads: st.SearchStrategy[Payload] = st.one_of(
    st.builds(ItemStart, item_id=item_ids,
              item_type=st.sampled_from(["message", "reasoning", "function_call"]),
              initial_content=opt_texts),
    st.builds(ItemDelta, item_id=item_ids, delta_content=texts),
    st.builds(ItemDelta, item_id=item_ids, delta_content=texts),
    st.builds(ItemDone, item_id=item_ids, final_item=output_items),
    st.builds(ItemErrorPayload, item_id=item_ids, error=error_infos),
    st.builds(ItemCancelled, item_id=item_ids, reason=opt_texts),
    st.builds(UsageUpdate, response_id=st.just(RUN), usage=usages),
    st.builds(ResponseDone, response_id=st.just(RUN),
              status=st.sampled_from(["complete", "error", "aborted"]),
              usage=st.none() | usages, finish_reason=opt_texts),
    st.builds(ResponseErrorPayload, response_id=st.just(RUN), error=error_infos),
    st.builds(TurnAbortedByUser, turn_id=st.just("t"), reason=texts),
    st.just(Heartbeat()),
)


@st.composite
def streams(draw: st.DrawFn) -> list[StreamEvent]:
    payloads = draw(st.lists(stream_payloads, max_size=25))
    times = draw(st.lists(st.integers(min_value=T0 - 100, max_value=T0 + 100),
                          min_size=len(payloads) + 1, max_size=len(payloads) + 1))
    return make_events([START, *payloads], times)


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_duplicates_and_replays_change_nothing(events: list[StreamEvent],
                                               data: st.DataObject) -> None:
    reducer = ResponseReducer()
    changed_times = []
    for ev in events:
        if reducer.apply(ev):
            changed_times.append(ev.timestamp)
    final = reducer.snapshot()
    assert final.updated_at == max(changed_times)
    assert reducer.last_seq == len(events)

    # duplicates of earlier events, inserted anywhere after their original
    noisy = list(events)
    for _ in range(data.draw(st.integers(min_value=1, max_value=10))):
        i = data.draw(st.integers(min_value=0, max_value=len(events) - 1))
        at = data.draw(st.integers(min_value=noisy.index(events[i]) + 1, max_value=len(noisy)))
        noisy.insert(at, events[i])
    assert rebuild(noisy) == final

    # a whole replay on top of a finished fold changes nothing
    for ev in events:
        assert not reducer.apply(ev)
    assert reducer.snapshot() == final

    # the events, and the Response, survive their trip through JSON
    assert rebuild(decode_event(encode_event(ev)) for ev in events) == final
    assert Response.model_validate_json(final.model_dump_json()) == final


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(min_value=0, max_value=25))
def test_a_snapshot_is_the_fold_of_a_prefix(events: list[StreamEvent], cut: int) -> None:
    """Snapshots taken along the way are what a fresh fold of that prefix gives: the projector
    (which folds incrementally) and a rebuild from Redis always agree."""
    cut = min(cut, len(events) - 1)
    reducer = ResponseReducer()
    for ev in events[:cut + 1]:
        reducer.apply(ev)
    mid = reducer.snapshot()
    for ev in events[cut + 1:]:
        reducer.apply(ev)
    assert mid == rebuild(events[:cut + 1])
    assert reducer.snapshot() == rebuild(events)
