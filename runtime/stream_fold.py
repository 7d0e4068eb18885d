"""Replaying a run's stream and folding it into its Response: the one way to do it.

The stream is the truth (SPEC §4): a Response can always be rebuilt by replaying the run's
events from the start through the reducer. Whoever needs that (the reading service for a run
neither live here nor stored, the projector for every checkpoint) keeps a :class:`StreamFold`
(the reducer and the last entry read) and calls :func:`fold_stream`, which pages through the
stream after that entry. A fold can be resumed: the projector keeps one per live run so a long
run is read once, not once per checkpoint.

An event that cannot be folded (undecodable JSON, or an event before ``response_start``) raises
:class:`~runtime.errors.CorruptStream` naming the run and the entry: the run is poison, and the
caller decides what that costs (the projector skips the run, a reader gets a 500).

No trio here: the source is anything with the event log's ``read_after``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from runtime.envelope import decode_event
from runtime.errors import CorruptStream, EventOrderError
from runtime.reducer import ResponseReducer
from runtime.schema import Response


class PagedEvents(Protocol):
    async def read_after(self, run_id: str, cursor: str,
                         count: int) -> list[tuple[str, bytes]]: ...


@dataclass(slots=True)
class StreamFold:
    """One run's reducer and how far into the run's stream it has read."""

    run_id: str
    reducer: ResponseReducer = field(default_factory=ResponseReducer)
    last_id: str = "0-0"

    def feed(self, entries: Iterable[tuple[str, bytes]]) -> None:
        """Fold stream entries in, in order.

        Raises:
            CorruptStream: an entry is not a valid event, or comes before ``response_start``;
                ``last_id`` stays on the entry before it.
        """
        reducer = self.reducer
        for entry_id, raw in entries:
            try:
                reducer.apply(decode_event(raw))
            except (ValidationError, EventOrderError) as exc:
                raise CorruptStream(
                    f"run {self.run_id}: entry {entry_id} cannot be folded: "
                    f"{type(exc).__name__}: {exc}",
                    details={"run_id": self.run_id, "entry_id": entry_id,
                             "cause": type(exc).__name__}) from exc
            self.last_id = entry_id

    @property
    def response(self) -> Response | None:
        """The Response folded so far; ``None`` before ``response_start``."""
        return self.reducer.snapshot() if self.reducer.started else None


async def fold_stream(source: PagedEvents, fold: StreamFold, *, until_seq: int | None = None,
                      page: int = 1000) -> StreamFold:
    """Read ``fold``'s run after ``fold.last_id`` and fold it in: to the end of the stream, or
    until the reducer has reached ``until_seq``.

    Raises:
        CorruptStream: see :meth:`StreamFold.feed`.
        RedisUnavailable: from the source.
    """
    while until_seq is None or fold.reducer.last_seq < until_seq:
        entries = await source.read_after(fold.run_id, fold.last_id, page)
        if not entries:
            break
        fold.feed(entries)
    return fold


class PagedManyEvents(PagedEvents, Protocol):
    async def read_after_many(self, reads: Sequence[tuple[str, str, int]]
                              ) -> list[list[tuple[str, bytes]]]: ...


async def fold_streams(source: PagedManyEvents, folds: Sequence[tuple[StreamFold, int]], *,
                       page: int = 1000) -> dict[str, Exception]:
    """:func:`fold_stream` for several runs at once, each to its ``until_seq``: every round
    reads the next page of all the runs not done yet in one pipelined call. A run whose
    stream cannot be folded is left out of the later rounds and its error returned (by run
    id); the others are folded as usual.

    Raises:
        RedisUnavailable: from the source (nothing is returned: the caller retries all).
    """
    failed: dict[str, Exception] = {}
    todo = [(fold, seq) for fold, seq in folds if fold.reducer.last_seq < seq]
    while todo:
        pages = await source.read_after_many([(f.run_id, f.last_id, page) for f, _ in todo])
        left = []
        for (fold, seq), entries in zip(todo, pages, strict=True):
            if not entries:
                continue
            try:
                fold.feed(entries)
            except Exception as exc:  # the run is poison: the caller decides what it costs
                failed[fold.run_id] = exc
                continue
            if fold.reducer.last_seq < seq:
                left.append((fold, seq))
        todo = left
    return failed


async def replay_response(source: PagedEvents, run_id: str) -> Response | None:
    """The Response replayed from the run's whole stream (``None``: no ``response_start``)."""
    return (await fold_stream(source, StreamFold(run_id))).response
