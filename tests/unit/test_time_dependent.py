"""Backoff, Retry-After, idle timeouts, keep-alive waits and group commit, under
``MockClock(autojump_threshold=0)``: no sockets here (httpx's MockTransport, memory sources)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from itertools import pairwise

import httpx
import pytest
import trio
import trio.testing

from actors.providers.live import Endpoint, HttpProvider, RetryPolicy, parse_retry_after
from actors.providers.provider import ProviderCall
from actors.reader import RunReader
from runtime.errors import ProviderError, RedisUnavailable
from runtime.group_commit import GroupCommitter

CALL = ProviderCall(run_id="r", provider_id="openai", model_id="gpt-5-mini", prompt="p",
                    exchange=0, body={"model": "gpt-5-mini", "stream": True})


@pytest.fixture
def mock_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


def provider(handler: httpx.MockTransport, *, retries: int = 3, idle: float = 60.0
             ) -> HttpProvider:
    client = httpx.AsyncClient(transport=handler)
    endpoint = Endpoint("openai", "openai-responses", "http://fake/v1", "k", "OPENAI_API_KEY")
    return HttpProvider(endpoint, client=client, retry=RetryPolicy(retries, 0.5, 8.0),
                        idle_timeout_s=idle, rng=random.Random(7))


class OneChunk(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"event: x\ndata: {}\n\n"


async def test_retry_after_is_honoured(mock_clock: trio.testing.MockClock) -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(trio.current_time())
        if len(seen) < 3:
            return httpx.Response(429, headers={"Retry-After": "30"},
                                  json={"error": {"code": "rate_limit_exceeded", "message": "x"}})
        return httpx.Response(200, stream=OneChunk())

    with trio.fail_after(200):
        async with provider(httpx.MockTransport(handler)).stream(CALL) as body:
            chunks = [c async for c in body]
    assert b"".join(chunks) == b"event: x\ndata: {}\n\n"
    assert [round(b - a) for a, b in pairwise(seen)] == [30, 30]


async def test_backoff_grows_and_is_bounded(mock_clock: trio.testing.MockClock) -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(trio.current_time())
        return httpx.Response(503, json={"error": {"code": "overloaded", "message": "busy"}})

    with trio.fail_after(200), pytest.raises(ProviderError) as info:
        async with provider(httpx.MockTransport(handler), retries=4).stream(CALL):
            pass
    assert info.value.code == "overloaded"
    assert info.value.details == {"provider": "openai", "status": 503, "attempts": 5}
    gaps = [b - a for a, b in pairwise(seen)]
    assert len(gaps) == 4
    assert all(0 <= g <= min(8.0, 0.5 * 2 ** i) for i, g in enumerate(gaps))


async def test_idle_stream_is_an_error(mock_clock: trio.testing.MockClock) -> None:
    class Stalling(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"event: x\ndata: {}\n\n"
            await trio.sleep_forever()
            yield b""  # pragma: no cover

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Stalling())

    with trio.fail_after(200), pytest.raises(ProviderError) as info:
        async with provider(httpx.MockTransport(handler), idle=45).stream(CALL) as body:
            async for _ in body:
                pass
    assert info.value.code == "PROVIDER_IDLE_TIMEOUT"
    assert 45 <= trio.current_time() < 46


def test_parse_retry_after() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


class SilentSource:
    async def read_after(self, run_id: str, cursor: str, count: int) -> list[tuple[str, bytes]]:
        return []

    async def tail(self, run_id: str, cursor: str, block_ms: int,
                   count: int) -> list[tuple[str, bytes]]:
        await trio.sleep(block_ms / 1000)
        return []


async def test_reader_wait_is_the_keepalive_interval(mock_clock: trio.testing.MockClock) -> None:
    reader = RunReader(SilentSource(), "r", "0-0", lambda: None)
    start = trio.current_time()
    assert await reader.next_batch(15.0) is None
    assert trio.current_time() - start == pytest.approx(15.0)


class RecordingLog:
    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def append_many(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]]
                          ) -> list[list[str]]:
        await trio.sleep(0.001)  # one round trip
        if self.fail:
            raise RedisUnavailable("down")
        self.calls.append([run_id for run_id, _, _ in batches])
        return [[f"1-{i}" for i, _ in enumerate(events)] for _, events, _ in batches]


async def test_group_commit_batches_waiting_appends(mock_clock: trio.testing.MockClock) -> None:
    log = RecordingLog()
    committer = GroupCommitter(log)
    got: dict[str, list[str]] = {}

    async def actor(name: str) -> None:
        got[name] = await committer.append(name, [b"a", b"b"], None)

    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        async with trio.open_nursery() as actors:
            for i in range(50):
                actors.start_soon(actor, f"run-{i}")
        nursery.cancel_scope.cancel()
    assert got == {f"run-{i}": ["1-0", "1-1"] for i in range(50)}
    assert len(log.calls) < 5  # 50 appends, a handful of round trips
    assert sorted(r for call in log.calls for r in call) == sorted(got)


async def test_group_commit_failure_reaches_every_waiter(
        mock_clock: trio.testing.MockClock) -> None:
    committer = GroupCommitter(RecordingLog(fail=True))
    errors: list[BaseException] = []

    async def actor() -> None:
        try:
            await committer.append("r", [b"x"], 1)
        except RedisUnavailable as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        async with trio.open_nursery() as actors:
            for _ in range(5):
                actors.start_soon(actor)
        nursery.cancel_scope.cancel()
    assert len(errors) == 5
