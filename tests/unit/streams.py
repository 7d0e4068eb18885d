"""What the stream normaliser tests (``test_*_stream.py``) share: feeding a normaliser, the
payloads as JSON, the one ending, an SSE block, a protocol's fixtures. Not a test module."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from actors.providers.base import StreamNormaliser
from actors.providers.fixtures import Fixture, FixtureLibrary
from runtime.schema import ErrorInfo, Payload, ResponseDone, ResponseErrorPayload

RID = "run-1"
NewNormaliser = Callable[[str], StreamNormaliser]


def fixtures_of(protocol: str) -> tuple[list[Fixture], list[Fixture]]:
    """A protocol's fixtures, and those small enough to play in many chunkings."""
    every = [fx for fx in FixtureLibrary() if fx.protocol == protocol]
    return every, [fx for fx in every if fx.name != "large_response"]


def sse_block(obj: dict[str, Any], event: str | None = None) -> bytes:
    """An ``event:`` / ``data:`` block of compact JSON, the event named by ``type``."""
    return (f"event: {event or obj['type']}\n"
            f"data: {json.dumps(obj, separators=(',', ':'))}\n\n").encode()


def feed(new: NewNormaliser, *blocks: bytes, end: bool = True) -> list[Payload]:
    """The payloads of ``blocks`` fed at once, and of the end of the body if ``end``."""
    n = new(RID)
    out = n.feed(b"".join(blocks))
    if end:
        out += n.end_of_stream()
    return out


def dump(payloads: list[Payload]) -> list[dict[str, Any]]:
    return [p.model_dump(mode="json") for p in payloads]


def play(new: NewNormaliser, chunks: list[bytes]) -> list[dict[str, Any]]:
    """A whole body fed in ``chunks``, as JSON; the normaliser must have finished."""
    n = new(RID)
    out: list[Payload] = []
    for c in chunks:
        out += n.feed(c)
    out += n.end_of_stream()
    assert n.finished
    return dump(out)


def error_of(payloads: list[Payload]) -> ErrorInfo:
    """The error the payloads end with, checking that they end exactly once."""
    last = payloads[-1]
    assert isinstance(last, ResponseErrorPayload)
    assert sum(isinstance(p, ResponseErrorPayload | ResponseDone) for p in payloads) == 1
    return last.error


def whole(new: NewNormaliser, fx: Fixture) -> list[list[dict[str, Any]]]:
    """Each exchange's body fed at once, as JSON."""
    return [play(new, [ex.stream]) for ex in fx.exchanges]
