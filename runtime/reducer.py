"""Folding a run's canonical events into its ``Response`` (SPEC §4).

The rules, one handler per event type (``_RULES`` at the bottom is the table):

========================  =================================================================
``response_start``        header fields; ``status`` in_progress; ``created_at`` from the
                          payload, ``updated_at`` from the event. Must come first: any other
                          event before it raises ``EventOrderError``. A second one is a
                          stream sequence error.
``item_start``            opens a buffer seeded with ``initial_content``; ``message`` and
                          ``reasoning`` items appear in ``output_items`` at once (origin agent,
                          role assistant, until ``item_done`` brings the real item), other
                          types only at ``item_done``. Starting an item that is already open
                          is a stream sequence error; restarting a finished one reopens it
                          where it stands.
``item_delta``            appends to the open buffer.
``item_done``             ``final_item`` (authoritative) replaces the buffer; a new id is
                          appended, a known id is replaced in place; the buffer closes.
``item_error``            the item is removed (its buffer closed) and an ``error`` item
                          (origin system, same id) is appended.
``item_cancelled``        likewise, with a ``cancelled`` item (origin system, same id).
``usage_update``          overwrites ``usage``.
``response_done``         ``status`` unless already error/aborted; ``finish_reason`` if still
                          null; ``usage`` if given.
``response_error``        ``status`` error and ``error``.
``turn_aborted_by_user``  ``status`` aborted, ``finish_reason`` the reason.
``heartbeat``             nothing.
========================  =================================================================

A delta or done for an item with no open buffer - never started, or already done, errored or
cancelled - is a stream sequence error: ``status`` error, ``error`` STREAM_SEQUENCE_ERROR
naming the item, ``finish_reason`` ``stream_error``, and every later item event is ignored
(response-level events still apply).

Every event is deduplicated by ``event_id``: a repeated event changes nothing. ``updated_at``
is the latest timestamp of the events that changed the Response. Deltas are kept as lists of
chunks and joined only when a snapshot needs them, so thousands of deltas cost O(n).

This module is pure: it imports neither trio nor coredis.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from runtime.errors import STREAM_SEQUENCE_ERROR, EventOrderError
from runtime.schema import (
    TERMINAL_EVENT_TYPES,
    CancelledItem,
    ErrorInfo,
    ErrorItem,
    ItemCancelled,
    ItemDelta,
    ItemDone,
    ItemErrorPayload,
    ItemStart,
    MessageItem,
    OutputItem,
    ReasoningItem,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    ResponseStatus,
    StreamEvent,
    TurnAbortedByUser,
    Usage,
    UsageUpdate,
)

#: Item types shown while they stream; the others appear when done.
LIVE_ITEM_TYPES: frozenset[str] = frozenset({"message", "reasoning"})
STREAM_ERROR_FINISH_REASON = "stream_error"


class _Buffer:
    """An open item: its type, and its text as chunks (joined lazily)."""

    __slots__ = ("chunks", "item_type", "live")

    def __init__(self, item_type: str, initial: str | None) -> None:
        self.item_type = item_type
        self.live = item_type in LIVE_ITEM_TYPES
        self.chunks: list[str] = [initial] if initial else []

    def text(self) -> str:
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0]
        joined = "".join(chunks)
        chunks[:] = [joined] if joined else []
        return joined

    def item(self, item_id: str) -> OutputItem:
        """The item as shown while it streams (``item_done`` brings the authoritative one)."""
        if self.item_type == "reasoning":
            return ReasoningItem(id=item_id, origin="agent", content=self.text())
        return MessageItem(id=item_id, origin="agent", role="assistant", content=self.text())


class ResponseReducer:
    """The ``Response`` of one run, folded event by event. Deterministic and replayable."""

    __slots__ = ("_broken", "_created_at", "_error", "_finish_reason", "_last_seq", "_open",
                 "_seen", "_slots", "_snapshot", "_start", "_status", "_terminal", "_updated_at",
                 "_usage")

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._last_seq = 0
        self._start: ResponseStart | None = None
        self._created_at = 0
        self._updated_at = 0
        self._status: ResponseStatus = "queued"
        # Output positions, in order of first insertion: a finished item or a live buffer.
        self._slots: dict[str, OutputItem | _Buffer] = {}
        self._open: dict[str, _Buffer] = {}
        self._usage: Usage | None = None
        self._finish_reason: str | None = None
        self._error: ErrorInfo | None = None
        self._broken = False
        self._terminal = False
        self._snapshot: Response | None = None

    # ------------------------------------------------------------------ public face

    @property
    def started(self) -> bool:
        return self._start is not None

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` applied so far (0 before any event)."""
        return self._last_seq

    @property
    def status(self) -> ResponseStatus:
        return self._status

    @property
    def is_terminal(self) -> bool:
        """A terminal event (``response_done`` / ``response_error``) has been applied."""
        return self._terminal

    def apply(self, event: StreamEvent) -> bool:
        """Fold one event in; True if the Response changed.

        Raises:
            EventOrderError: the event came before ``response_start``.
        """
        event_id = event.event_id
        if event_id in self._seen:
            return False
        if self._start is None and event.type != "response_start":
            raise EventOrderError(f"{event.type} (seq {event.seq}) before response_start",
                                  details={"event_id": event_id, "seq": event.seq})
        changed = _RULES[event.type](self, event.payload, event.timestamp)
        self._seen.add(event_id)
        if event.seq > self._last_seq:
            self._last_seq = event.seq
        if event.type in TERMINAL_EVENT_TYPES:
            self._terminal = True
        if changed:
            self._snapshot = None
            if event.timestamp > self._updated_at:
                self._updated_at = event.timestamp
        return changed

    def snapshot(self) -> Response:
        """The Response as of now: an immutable value that later events do not touch.

        Raises:
            EventOrderError: no ``response_start`` yet.
        """
        snap = self._snapshot
        if snap is not None:
            return snap
        start = self._start
        if start is None:
            raise EventOrderError("no response_start yet: there is no Response")
        items = tuple(slot.item(item_id) if isinstance(slot, _Buffer) else slot
                      for item_id, slot in self._slots.items())
        snap = Response(id=start.response_id, turn_id=start.turn_id, thread_id=start.thread_id,
                        agent_id=start.agent_id, model_id=start.model_id,
                        provider_id=start.provider_id, created_at=self._created_at,
                        updated_at=self._updated_at, status=self._status, output_items=items,
                        usage=self._usage, finish_reason=self._finish_reason,
                        error=self._error)
        self._snapshot = snap
        return snap

    # ------------------------------------------------------------------ the rules

    def _response_start(self, p: ResponseStart, ts: int) -> bool:
        if self._start is not None:
            return self._sequence_error("response_start", None, "a second response_start")
        self._start = p
        self._created_at = p.created_at
        self._updated_at = ts
        self._status = "in_progress"
        return True

    def _item_start(self, p: ItemStart, ts: int) -> bool:
        if self._broken:
            return False
        if p.item_id in self._open:
            return self._sequence_error("item_start", p.item_id,
                                        f"item_start for item {p.item_id!r}, already open")
        buf = _Buffer(p.item_type, p.initial_content)
        self._open[p.item_id] = buf
        if buf.live:
            self._slots[p.item_id] = buf
        return buf.live

    def _item_delta(self, p: ItemDelta, ts: int) -> bool:
        if self._broken:
            return False
        buf = self._open.get(p.item_id)
        if buf is None:
            return self._sequence_error("item_delta", p.item_id,
                                        _no_buffer("item_delta", p.item_id))
        if not p.delta_content:
            return False
        buf.chunks.append(p.delta_content)
        return buf.live

    def _item_done(self, p: ItemDone, ts: int) -> bool:
        if self._broken:
            return False
        if self._open.pop(p.item_id, None) is None:
            return self._sequence_error("item_done", p.item_id,
                                        _no_buffer("item_done", p.item_id))
        self._slots[p.item_id] = p.final_item
        return True

    def _item_error(self, p: ItemErrorPayload, ts: int) -> bool:
        if self._broken:
            return False
        e = p.error
        self._replace_with(p.item_id, ErrorItem(id=p.item_id, origin="system", code=e.code,
                                                message=e.message, details=e.details))
        return True

    def _item_cancelled(self, p: ItemCancelled, ts: int) -> bool:
        if self._broken:
            return False
        self._replace_with(p.item_id, CancelledItem(id=p.item_id, origin="system",
                                                    reason=p.reason))
        return True

    def _usage_update(self, p: UsageUpdate, ts: int) -> bool:
        if p.usage == self._usage:
            return False
        self._usage = p.usage
        return True

    def _response_done(self, p: ResponseDone, ts: int) -> bool:
        changed = False
        if self._status not in ("error", "aborted") and self._status != p.status:
            self._status = p.status
            changed = True
        if self._finish_reason is None and p.finish_reason is not None:
            self._finish_reason = p.finish_reason
            changed = True
        if p.usage is not None and p.usage != self._usage:
            self._usage = p.usage
            changed = True
        return changed

    def _response_error(self, p: ResponseErrorPayload, ts: int) -> bool:
        if self._status == "error" and self._error == p.error:
            return False
        self._status = "error"
        self._error = p.error
        return True

    def _turn_aborted(self, p: TurnAbortedByUser, ts: int) -> bool:
        if self._status == "aborted" and self._finish_reason == p.reason:
            return False
        self._status = "aborted"
        self._finish_reason = p.reason
        return True

    def _heartbeat(self, p: object, ts: int) -> bool:
        return False

    # ------------------------------------------------------------------ helpers

    def _replace_with(self, item_id: str, item: OutputItem) -> None:
        """Close and remove the item, then append ``item`` (which takes the same id)."""
        self._open.pop(item_id, None)
        self._slots.pop(item_id, None)
        self._slots[item_id] = item

    def _sequence_error(self, event_type: str, item_id: str | None, message: str) -> bool:
        details: dict[str, Any] = {"event_type": event_type}
        if item_id is not None:
            details["item_id"] = item_id
        self._status = "error"
        self._error = ErrorInfo(code=STREAM_SEQUENCE_ERROR, message=message, details=details)
        self._finish_reason = STREAM_ERROR_FINISH_REASON
        self._broken = True
        return True


def _no_buffer(event_type: str, item_id: str) -> str:
    return f"{event_type} for item {item_id!r}, which has no open buffer"


_Rule = Callable[[ResponseReducer, Any, int], bool]

#: The table: event type -> rule. Each rule returns True if the Response changed.
_RULES: dict[str, _Rule] = {
    "response_start": ResponseReducer._response_start,
    "item_start": ResponseReducer._item_start,
    "item_delta": ResponseReducer._item_delta,
    "item_done": ResponseReducer._item_done,
    "item_error": ResponseReducer._item_error,
    "item_cancelled": ResponseReducer._item_cancelled,
    "usage_update": ResponseReducer._usage_update,
    "response_done": ResponseReducer._response_done,
    "response_error": ResponseReducer._response_error,
    "turn_aborted_by_user": ResponseReducer._turn_aborted,
    "heartbeat": ResponseReducer._heartbeat,
}


def rebuild(events: Iterable[StreamEvent]) -> Response:
    """The Response replayed from a run's events (from the start of its stream).

    Raises:
        EventOrderError: the events do not begin with ``response_start``.
    """
    reducer = ResponseReducer()
    for ev in events:
        reducer.apply(ev)
    return reducer.snapshot()
