"""``fold_streams`` (runtime/stream_fold.py): many runs folded together, a page round per
round trip, a poison run left out without stopping the others."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from actors.providers.fixtures import FixtureLibrary
from runtime.envelope import encode_event
from runtime.errors import CorruptStream
from runtime.stream_fold import StreamFold, fold_stream, fold_streams
from tests.harness import response_view, run_fixture_offline


class Streams:
    """In-memory run streams with Redis-like entry ids; counts the calls (round trips)."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[str, bytes]]] = {}
        self.calls = 0

    def add(self, run_id: str, raws: Sequence[bytes]) -> None:
        self.entries[run_id] = [(f"{i + 1}-0", raw) for i, raw in enumerate(raws)]

    def _after(self, run_id: str, cursor: str, count: int) -> list[tuple[str, bytes]]:
        after = int(cursor.split("-")[0])
        return [e for e in self.entries.get(run_id, []) if int(e[0].split("-")[0]) > after
                ][:count]

    async def read_after(self, run_id: str, cursor: str,
                         count: int) -> list[tuple[str, bytes]]:
        self.calls += 1
        return self._after(run_id, cursor, count)

    async def read_after_many(self, reads: Sequence[tuple[str, str, int]]
                              ) -> list[list[tuple[str, bytes]]]:
        self.calls += 1
        return [self._after(*read) for read in reads]


def recorded(name: str) -> tuple[list[bytes], dict[str, object]]:
    events, response = run_fixture_offline(FixtureLibrary().get("openai", name))
    return [encode_event(ev) for ev in events], response_view(response)


async def test_many_runs_fold_as_each_alone_in_one_call_per_page_round() -> None:
    streams = Streams()
    runs = {f"run-{i}": recorded(name) for i, name in
            enumerate(["simple_message", "rapid_deltas", "tool_read_file"] * 4)}
    for run_id, (raws, _) in runs.items():
        streams.add(run_id, raws)
    longest = max(len(raws) for raws, _ in runs.values())
    page = 64
    folds = [(StreamFold(run_id), len(raws)) for run_id, (raws, _) in runs.items()]
    with trio.fail_after(10):
        failed = await fold_streams(streams, folds, page=page)
    assert failed == {}
    assert streams.calls == -(-longest // page)  # rounds of the longest run, not per run
    for fold, _ in folds:
        assert fold.response is not None
        assert response_view(fold.response) == runs[fold.run_id][1]
        alone = await fold_stream(streams, StreamFold(fold.run_id))
        assert alone.response is not None and alone.response == fold.response


async def test_until_seq_stops_a_run_early_and_a_poison_run_is_left_out() -> None:
    streams = Streams()
    good, _ = recorded("rapid_deltas")
    streams.add("good", good)
    streams.add("poison", [good[0], b"{not json", *good[1:]])
    streams.add("short", good)
    folds = [(StreamFold("good"), len(good)), (StreamFold("poison"), len(good)),
             (StreamFold("short"), 3)]
    with trio.fail_after(10):
        failed = await fold_streams(streams, folds, page=2)
    assert set(failed) == {"poison"} and isinstance(failed["poison"], CorruptStream)
    by_id = {f.run_id: f for f, _ in folds}
    assert by_id["good"].reducer.last_seq == len(good) and by_id["good"].reducer.is_terminal
    assert by_id["poison"].last_id == "1-0"  # stays on the entry before the bad one
    assert by_id["short"].reducer.last_seq == 4  # the page that reached seq 3, no further
    assert len(good) > 4
