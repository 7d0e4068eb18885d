"""The runs listing's merge (pure): store pages and runs in flight make pages with every run
once, newest first; and the W3C traceparent a submit may carry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.ids import child_traceparent, parse_traceparent
from runtime.runs_listing import listing_key, merge_page
from runtime.schema import Response
from runtime.store.protocol import RunQuery, encode_cursor


def resp(n: int, status: str = "complete", created: int | None = None) -> Response:
    return Response(id=f"run-{n:03d}", turn_id="t", thread_id="th", model_id="m",
                    provider_id="p", created_at=created if created is not None else 1000 + n,
                    updated_at=2000 + n, status=status)  # type: ignore[arg-type]


def store_page(rows: list[Response], query: RunQuery) -> tuple[list[Response], str | None]:
    """What the store answers: keyset, newest first."""
    ordered = sorted(rows, key=listing_key, reverse=True)
    if query.after is not None:
        ordered = [r for r in ordered if listing_key(r) < query.after]
    page = ordered[:query.limit]
    more = len(ordered) > query.limit
    return page, encode_cursor(*listing_key(page[-1])) if more else None


def q(limit: int, cursor: str | None = None, status: str | None = None) -> RunQuery:
    return RunQuery.build("default", status=status, thread_id=None, model=None, since_ms=None,
                          limit=limit, cursor=cursor)


@settings(max_examples=200, deadline=None)
@given(stored=st.sets(st.integers(0, 40), max_size=25), live=st.sets(st.integers(0, 40),
                                                                      max_size=10),
       limit=st.integers(1, 7))
def test_paging_shows_every_run_once_newest_first(stored: set[int], live: set[int],
                                                  limit: int) -> None:
    rows = [resp(n) for n in stored]
    rows = [resp(n, "in_progress" if n % 2 else "complete") for n in stored]
    fresher = [resp(n, "in_progress") for n in live]  # some are also stored rows
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        query = q(limit, cursor)
        page, nxt = store_page(rows, query)
        out = merge_page(query, page, nxt, fresher)
        assert len(out.data) <= limit
        seen += [r.run_id for r in out.data]
        cursor = out.next_cursor
        if cursor is None:
            break
    expected = sorted({*stored, *live}, reverse=True)
    assert seen == [f"run-{n:03d}" for n in expected]


def test_a_fresher_view_replaces_a_stale_row_but_never_an_ended_one() -> None:
    query = q(10)
    stored = [resp(1, "in_progress"), resp(2, "complete")]
    out = merge_page(query, stored, None, [resp(1, "complete"), resp(2, "in_progress")])
    assert {r.run_id: r.status for r in out.data} == {"run-001": "complete",
                                                     "run-002": "complete"}
    # filters apply to the fresher view: an ended run is not listed as in progress
    out = merge_page(q(10, status="in_progress"), [resp(1, "in_progress")], None,
                     [resp(1, "complete")])
    assert out.data == []


def test_summary_fields() -> None:
    out = merge_page(q(10), [resp(1)], None, [resp(2, "in_progress")])
    live, ended = out.data
    assert live.ended_at is None and live.duration_ms is None
    assert ended.ended_at == 2001 and ended.duration_ms == 2001 - 1001


@pytest.mark.parametrize("value", [
    None, "", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
])
def test_invalid_traceparent_starts_a_new_trace(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_valid_traceparent_is_kept_and_children_share_its_trace() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(tp) == tp
    assert parse_traceparent(f"01-{tp[3:]}-future") == tp  # a later version, read as 00
    child = child_traceparent(tp)
    assert child.split("-")[1] == tp.split("-")[1] and child.split("-")[3] == "01"
    assert child.split("-")[2] != tp.split("-")[2]
