"""Sans-io Server-Sent Events: an incremental decoder, and the one encoder of what we send.

Every byte of SSE that Cody writes comes from here: the frame of a stored event
(:func:`encode_entry`, built once per event and shared by every subscriber), comments
(:data:`STREAM_OPEN`, :data:`KEEP_ALIVE`) and general frames (:func:`encode_frame`).

The decoder follows the WHATWG event-stream rules: lines end in CRLF, LF or CR (a CR at the
end of one chunk may be the first half of a CRLF split across chunks, so it is carried over,
as httpx's ``LineDecoder`` does); a blank line dispatches the event; ``data`` lines join with
``\\n``; a line starting with ``:`` is a comment; one leading space after the colon is dropped.
Feed it bytes in any chunking and it yields the same events.
"""

from __future__ import annotations

from typing import NamedTuple


class SSEMessage(NamedTuple):
    event: str
    data: str
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    """Turns a byte stream into ``SSEMessage`` values, whatever the chunk boundaries."""

    __slots__ = ("_buffer", "_data", "_event", "_id", "_pending_cr", "_retry")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pending_cr = False
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        out: list[SSEMessage] = []
        if not chunk:
            return out
        buf = self._buffer
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf += chunk
        # what is buffered from before holds no line end: only the new chunk can add one
        if b"\r" not in chunk:
            if b"\n" not in chunk:
                return out
            # fast path (what providers send): LF-only lines, split in one call
            lines = bytes(buf).split(b"\n")
            rest = lines.pop()
            line = self._line
            for raw in lines:
                line(raw, out)
            buf[:] = rest
            return out
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr == -1 and lf == -1:
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, nxt = lf, lf + 1
            else:
                end = cr
                if cr + 1 < n:
                    nxt = cr + 2 if buf[cr + 1] == 0x0A else cr + 1
                else:
                    nxt = cr + 1
                    self._pending_cr = True
            self._line(bytes(buf[start:end]), out)
            start = nxt
        del buf[:start]
        return out

    def close(self) -> list[SSEMessage]:
        """End of stream: a final line without terminator is processed; an event that never
        got its blank line is discarded, as the SSE rules say."""
        out: list[SSEMessage] = []
        if self._buffer:
            self._line(bytes(self._buffer), out)
            self._buffer.clear()
        self._reset()
        return out

    def _reset(self) -> None:
        self._event = ""
        self._data = []
        self._retry = None

    def _line(self, raw: bytes, out: list[SSEMessage]) -> None:
        if not raw:
            if self._data:
                out.append(SSEMessage(self._event or "message", "\n".join(self._data), self._id,
                                      self._retry))
            self._reset()
            return
        if raw[:5] == b"data:":  # the common case first
            value = raw[6:] if raw[5:6] == b" " else raw[5:]
            self._data.append(value.decode("utf-8", errors="replace"))
            return
        if raw[:1] == b":":
            return
        line = raw.decode("utf-8", errors="replace")
        name, sep, value_s = line.partition(":")
        if sep and value_s[:1] == " ":
            value_s = value_s[1:]
        if name == "data":
            self._data.append(value_s)
        elif name == "event":
            self._event = value_s
        elif name == "id":
            if "\0" not in value_s:
                self._id = value_s
        elif name == "retry" and value_s.isdigit():
            self._retry = int(value_s)


def encode_frame(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE frame. ``data`` is split on newlines so any text is carried intact."""
    parts: list[str] = []
    if id is not None:
        parts.append(f"id: {id}\n")
    if event is not None:
        parts.append(f"event: {event}\n")
    for line in data.split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode("utf-8")


def encode_entry(entry_id: str, event_type: str, data: bytes) -> bytes:
    """The frame of one event of a run's stream (SPEC §7): ``id`` is its Redis entry id,
    ``event`` its type, ``data`` its JSON exactly as stored.

    The hot path (once per event, whatever the number of subscribers): one join, no decoding
    of ``data``. It is what :func:`encode_frame` gives for one line of data, and the stored
    JSON is always one line (JSON escapes newlines inside strings)."""
    return b"".join((b"id: ", entry_id.encode(), b"\nevent: ", event_type.encode(),
                     b"\ndata: ", data, b"\n\n"))


def encode_comment(text: str = "") -> bytes:
    """A comment line: clients ignore it; it keeps proxies and idle connections open."""
    return f": {text}\n\n".encode()


STREAM_OPEN = encode_comment("stream open")
"""Sent first on every event stream, so a client sees the stream is open at once."""
KEEP_ALIVE = encode_comment("keep-alive")
"""Sent when a run has been quiet for ``keepalive_s``."""
