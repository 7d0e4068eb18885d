"""Merging queued deltas (runtime/coalesce.py) never changes the Response, never reorders and
never loses text; it merges only adjacent deltas of one item, within the size cap."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.coalesce import coalesce_deltas
from runtime.reducer import rebuild
from runtime.schema import ItemDelta, ItemDone, ItemStart, MessageItem, Payload
from tests.unit.test_reducer_properties import (
    START,
    item_specs,
    make_events,
    script,
    stream_payloads,
)


def texts_by_item(payloads: list[Payload]) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in payloads:
        if isinstance(p, ItemDelta):
            out[p.item_id] = out.get(p.item_id, "") + p.delta_content
    return out


def non_deltas(payloads: list[Payload]) -> list[Payload]:
    return [p for p in payloads if not isinstance(p, ItemDelta)]


@settings(max_examples=200, deadline=None)
@given(st.lists(stream_payloads, max_size=30), st.integers(min_value=0, max_value=40))
def test_any_stream_folds_to_the_same_response(payloads: list[Payload], cap: int) -> None:
    merged = coalesce_deltas(payloads, cap)
    assert rebuild(make_events([START, *merged])) == rebuild(make_events([START, *payloads]))
    assert non_deltas(merged) == non_deltas(payloads)  # same order, nothing else touched
    assert texts_by_item(merged) == texts_by_item(payloads)
    for a, b in itertools.pairwise(merged):  # whatever stays apart had to
        if isinstance(a, ItemDelta) and isinstance(b, ItemDelta) and cap > 0:
            assert a.item_id != b.item_id or (
                len(a.delta_content) + len(b.delta_content) > cap)


@settings(max_examples=100, deadline=None)
@given(item_specs, st.booleans(), st.integers(min_value=1, max_value=200))
def test_interleaved_items_keep_their_texts(specs: list[tuple[str, str, list[int]]],
                                            done: bool, cap: int) -> None:
    payloads = script(specs, done)
    merged = coalesce_deltas(payloads, cap)
    assert rebuild(make_events(merged)) == rebuild(make_events(payloads))
    for p in merged:
        if isinstance(p, ItemDelta):
            original = [q for q in payloads if isinstance(q, ItemDelta) and q == p]
            assert len(p.delta_content) <= cap or original, "only a lone delta may exceed"


def test_a_backlog_of_tokens_becomes_one_event() -> None:
    tokens = [ItemDelta(item_id="m", delta_content=f"t{i} ") for i in range(1000)]
    final = MessageItem(id="m", origin="agent", role="assistant",
                        content="".join(t.delta_content for t in tokens))
    payloads: list[Payload] = [ItemStart(item_id="m", item_type="message"), *tokens,
                               ItemDone(item_id="m", final_item=final)]
    merged = coalesce_deltas(payloads, 1_000_000)
    assert len(merged) == 3
    assert merged[1] == ItemDelta(item_id="m", delta_content=final.content)


def test_the_cap_splits_between_deltas_never_inside_one() -> None:
    payloads: list[Payload] = [ItemDelta(item_id="m", delta_content=t)
                               for t in ("ab", "cd", "efghij", "k")]
    assert [p.delta_content for p in coalesce_deltas(payloads, 4)  # type: ignore[union-attr]
            ] == ["abcd", "efghij", "k"]


def test_off_and_trivial_inputs_are_unchanged() -> None:
    payloads: list[Payload] = [ItemDelta(item_id="m", delta_content="a"),
                               ItemDelta(item_id="m", delta_content="b")]
    assert coalesce_deltas(payloads, 0) == payloads
    assert coalesce_deltas(payloads[:1], 10) == payloads[:1]
    assert coalesce_deltas([], 10) == []


def test_different_items_are_never_merged() -> None:
    payloads: list[Payload] = [ItemDelta(item_id="a", delta_content="1"),
                               ItemDelta(item_id="b", delta_content="2"),
                               ItemDelta(item_id="a", delta_content="3")]
    assert coalesce_deltas(payloads, 100) == payloads
