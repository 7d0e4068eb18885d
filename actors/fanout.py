"""Fan-out of a run's events to live subscribers, never slowed by any of them.

Each subscriber has a bounded memory channel. The run actor publishes batches with
``send_nowait``; a subscriber whose buffer is full is cut off (``dropped``) at once and
resumes from Redis, so a slow client costs the actor and the other clients nothing.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import trio

from runtime import TERMINAL_EVENT_TYPES, encode_entry, entry_key


def peek_type(raw: bytes) -> str:
    """The event type of an encoded StreamEvent without parsing it.

    The envelope's ``type`` comes before ``payload`` and no earlier field can hold the
    marker (ids are uuids, trace context has no ``type`` key)."""
    marker = b'"type":"'
    start = raw.find(marker)
    if start == -1:
        return ""
    start += len(marker)
    return raw[start:raw.find(b'"', start)].decode("ascii", errors="replace")


@dataclass(slots=True)
class LogEntry:
    """One event as it sits in Redis: its entry id, type and exact JSON bytes."""

    entry_id: str
    type: str
    data: bytes
    _frame: bytes | None = field(default=None, repr=False)
    _key: tuple[int, int] | None = field(default=None, repr=False)

    @classmethod
    def from_raw(cls, entry_id: str, data: bytes) -> LogEntry:
        return cls(entry_id, peek_type(data), data)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENT_TYPES

    @property
    def key(self) -> tuple[int, int]:
        """Parsed once and shared: every subscriber compares it."""
        if self._key is None:
            self._key = entry_key(self.entry_id)
        return self._key

    @property
    def frame(self) -> bytes:
        """The SSE frame, encoded once and shared by every subscriber."""
        if self._frame is None:
            self._frame = encode_entry(self.entry_id, self.type, self.data)
        return self._frame


Batch = tuple[LogEntry, ...]


class Subscription:
    def __init__(self, fanout: Fanout, buffer: int) -> None:
        self._fanout = fanout
        self.send, self.receive = trio.open_memory_channel[Batch](buffer)
        self.dropped = False

    def close(self) -> None:
        self._fanout.unsubscribe(self)
        self.receive.close()


class Fanout:
    def __init__(self, buffer: int) -> None:
        self.buffer = buffer
        self._subs: list[Subscription] = []
        self.closed = False
        self.dropped_count = 0

    def __len__(self) -> int:
        return len(self._subs)

    def subscribe(self) -> Subscription:
        sub = Subscription(self, self.buffer)
        if self.closed:
            sub.send.close()
        else:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)
        sub.send.close()

    def publish(self, batch: Batch) -> None:
        slow: list[Subscription] = []
        for sub in self._subs:
            try:
                sub.send.send_nowait(batch)
            except trio.WouldBlock:
                slow.append(sub)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                slow.append(sub)
        for sub in slow:
            sub.dropped = True
            self.dropped_count += 1
            self.unsubscribe(sub)

    def close(self) -> None:
        """The run is over: every subscriber's channel ends after what it already holds."""
        self.closed = True
        for sub in self._subs:
            sub.send.close()
        self._subs.clear()
