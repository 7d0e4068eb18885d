"""Reading one run's events from any cursor, with no gap and no duplicate.

The order of work is what makes it exact: subscribe to the live fan-out first, then replay
Redis after the cursor, then take live batches, dropping any entry at or before the last one
already delivered. Every event is in Redis before it is published (SPEC §5), so replay plus
live covers everything. A subscriber cut off for being slow goes back to replay and carries
on from its own cursor. When the run's actor is not in this process the live side is the node's
multiplexed tail (``subscribe_remote``, actors/node_tail.py: one read for all remote runs), or,
without one, finite blocking reads of its own.

The reader is pull-based (``next_batch`` with a deadline) so that an SSE generator never
yields inside a cancel scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from actors.fanout import Fanout, LogEntry, Subscription
from runtime import entry_key


class EventSource(Protocol):
    async def read_after(self, run_id: str, cursor: str, count: int) -> list[tuple[str, bytes]]:
        ...

    async def tail(self, run_id: str, cursor: str, block_ms: int,
                   count: int) -> list[tuple[str, bytes]]:
        ...


class RunReader:
    def __init__(self, source: EventSource, run_id: str, cursor: str,
                 find_fanout: Callable[[], Fanout | None], *, page: int = 1000,
                 first_page: int = 64,
                 subscribe_remote: Callable[[], Awaitable[Subscription | None]] | None = None
                 ) -> None:
        self.source = source
        self.run_id = run_id
        self.last_id = cursor or "0-0"
        self._last_key = entry_key(self.last_id)
        self._find_fanout = find_fanout
        self._subscribe_remote = subscribe_remote
        """For a run whose actor is not here: the node's multiplexed tail (actors/node_tail.py)."""
        self._page = page
        self._replay_page = min(first_page, page)
        """Replay starts with a small page, so that a resuming client gets its first events
        in the time of a small XRANGE rather than a full page's, then doubles to ``page``."""
        self._sub: Subscription | None = None
        self._mode = "replay"
        self.done = False
        self.delivered = 0

    def _accept(self, entries: list[LogEntry]) -> list[LogEntry]:
        out: list[LogEntry] = []
        for entry in entries:
            key = entry.key
            if key <= self._last_key:
                continue
            out.append(entry)
            self._last_key = key
            self.last_id = entry.entry_id
            if entry.terminal:
                self.done = True
                self.close()
                break
        self.delivered += len(out)
        return out

    async def next_batch(self, wait_s: float) -> list[LogEntry] | None:
        """The next entries after the cursor; ``None`` if none came within ``wait_s``;
        ``[]`` once ``done`` (the terminal event has been delivered)."""
        while not self.done:
            if self._mode == "replay":
                if self._sub is None:
                    fanout = self._find_fanout()
                    if fanout is not None and not fanout.closed:
                        self._sub = fanout.subscribe()
                    elif self._subscribe_remote is not None:
                        self._sub = await self._subscribe_remote()
                raw = await self.source.read_after(self.run_id, self.last_id,
                                                   self._replay_page)
                self._replay_page = min(self._page, self._replay_page * 2)
                if raw:
                    out = self._accept([LogEntry.from_raw(i, d) for i, d in raw])
                    if out:
                        return out
                    continue
                self._mode = "live" if self._sub is not None else "tail"
            elif self._mode == "live":
                assert self._sub is not None
                receive = self._sub.receive
                entries: list[LogEntry] = []
                ended = False
                try:
                    # what is already queued needs no timeout (set up per call, it costs more
                    # than the receive with 1,000 subscribers); take it all in one batch
                    while True:
                        entries.extend(receive.receive_nowait())
                except trio.WouldBlock:
                    pass
                except trio.EndOfChannel:
                    ended = True
                if not entries and not ended:
                    with trio.move_on_after(wait_s):
                        try:
                            entries.extend(await receive.receive())
                        except trio.EndOfChannel:
                            ended = True
                    if not entries and not ended:
                        return None
                out = self._accept(entries)
                if ended and not self.done:
                    # dropped for being slow, or the run ended: Redis has the rest
                    self._sub.close()
                    self._sub = None
                    self._mode = "replay"
                if out:
                    return out
            else:
                raw = await self.source.tail(self.run_id, self.last_id,
                                             max(1, int(wait_s * 1000)), self._page)
                if not raw:
                    return None
                out = self._accept([LogEntry.from_raw(i, d) for i, d in raw])
                if out:
                    return out
        return []

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
