"""The replay provider: plays recorded provider wire streams from ``fixtures/``.

It builds the same request a live client would and records it (in memory and, if asked, as
JSON lines in a file), so tests can check what a turn would have sent, history included. The
recorded body is then played back one SSE block at a time, optionally paced, and goes through
the same normaliser as a live stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from actors.datadir import private_open
from actors.providers.fixtures import FixtureLibrary
from actors.providers.provider import ProviderCall
from runtime import REPLAY_EXHAUSTED, REPLAY_NO_FIXTURE, ProviderError


def split_blocks(body: bytes) -> list[bytes]:
    """The body cut after each blank line, as a server flushes one event at a time."""
    blocks: list[bytes] = []
    start = 0
    while True:
        end = body.find(b"\n\n", start)
        if end == -1:
            break
        blocks.append(body[start:end + 2])
        start = end + 2
    if start < len(body):
        blocks.append(body[start:])
    return blocks


def _coalesce(blocks: list[bytes], size: int) -> list[bytes]:
    """Unpaced replay hands over what a socket read would: many events per chunk."""
    out: list[bytes] = []
    current = bytearray()
    for block in blocks:
        current += block
        if len(current) >= size:
            out.append(bytes(current))
            current.clear()
    if current:
        out.append(bytes(current))
    return out


class ReplayProvider:
    def __init__(self, library: FixtureLibrary, *, delay_s: float = 0.0,
                 record_path: Path | None = None) -> None:
        self.library = library
        self.delay_s = delay_s
        self.record_path = record_path
        self.requests: list[dict[str, Any]] = []

    def _record(self, call: ProviderCall) -> None:
        entry = {"run_id": call.run_id, "provider": call.provider_id, "model": call.model_id,
                 "exchange": call.exchange, "request": call.body}
        self.requests.append(entry)
        if len(self.requests) > 10_000:
            del self.requests[:5_000]
        if self.record_path is not None:
            with private_open(self.record_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    @asynccontextmanager
    async def stream(self, call: ProviderCall) -> AsyncIterator[AsyncIterator[bytes]]:
        wire = call.body.get("model")
        fixture = self.library.select(call.provider_id, call.model_id, call.prompt,
                                      wire if isinstance(wire, str) else None)
        if fixture is None:
            raise ProviderError(
                f"no recorded stream for provider {call.provider_id!r} model {call.model_id!r}",
                code=REPLAY_NO_FIXTURE, details={"provider": call.provider_id})
        if call.exchange >= len(fixture.exchanges):
            raise ProviderError(
                f"recording {fixture.name!r} has no model request #{call.exchange + 1}",
                code=REPLAY_EXHAUSTED, details={"provider": call.provider_id})
        await trio.to_thread.run_sync(self._record, call)
        blocks = split_blocks(fixture.exchanges[call.exchange].stream)
        if not self.delay_s:
            blocks = _coalesce(blocks, 16_384)

        async def body() -> AsyncIterator[bytes]:
            for i, block in enumerate(blocks):
                if self.delay_s and i:
                    await trio.sleep(self.delay_s)
                yield block

        yield body()
