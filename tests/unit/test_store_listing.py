"""The pure part of run listing (cursors round-trip, bad ones and bad arguments are 400s)
and the store package's public face."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.errors import ValidationFailed
from runtime.store.protocol import MAX_LIST_LIMIT, RunQuery, decode_cursor, encode_cursor


@given(created_at=st.integers(0, 2**63 - 1), run_id=st.text(max_size=64))  # ids: <= 64
def test_a_cursor_round_trips_and_is_url_safe(created_at: int, run_id: str) -> None:
    cursor = encode_cursor(created_at, run_id)
    assert decode_cursor(cursor) == (created_at, run_id)
    assert all(c.isalnum() or c in "-_." for c in cursor)


@given(st.text())
def test_anything_else_is_a_bad_cursor_never_a_crash(text: str) -> None:
    try:
        created_at, run_id = decode_cursor(text)
    except ValidationFailed as exc:
        assert exc.details == {"field": "cursor"}
    else:
        assert text.startswith("r1.")  # only what could be ours decodes
        assert decode_cursor(encode_cursor(created_at, run_id)) == (created_at, run_id)


def test_query_arguments_are_checked() -> None:
    def build(**kw: object) -> RunQuery:
        args: dict[str, object] = dict(status=None, thread_id=None, model=None, since_ms=None,
                                       limit=50, cursor=None)
        args.update(kw)
        return RunQuery.build("t", **args)  # type: ignore[arg-type]

    assert build(status="complete").statuses == ("complete",)
    assert build(status={"error"}).statuses == ("error",)
    assert build(cursor=encode_cursor(5, "r")).after == (5, "r")
    assert build(limit=MAX_LIST_LIMIT).limit == MAX_LIST_LIMIT
    for kw, field in [({"limit": 0}, "limit"), ({"limit": True}, "limit"),
                      ({"status": "done"}, "status"), ({"status": ()}, "status")]:
        with pytest.raises(ValidationFailed) as info:
            build(**kw)
        assert info.value.details == {"field": field}


def test_the_store_packages_public_face() -> None:
    import runtime.store

    assert sorted(runtime.store.__all__) == ["DEFAULT_TENANT", "MAX_LIST_LIMIT", "SQLiteStore",
                                             "Store", "Thread", "open_store"]
    for name in runtime.store.__all__:
        assert getattr(runtime.store, name) is not None
