"""Fan-out and the gapless reader, against an in-memory event source (the same reader runs
against Redis in the integration tests)."""

from __future__ import annotations

import trio

from actors.fanout import Fanout, LogEntry, peek_type
from actors.reader import RunReader
from runtime.eventlog import entry_key


class MemoryLog:
    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes]] = []
        self.new = trio.Event()

    def add(self, n: int, terminal: bool = False) -> list[LogEntry]:
        out = []
        for _ in range(n):
            i = f"1000-{len(self.entries)}"
            kind = "item_delta"
            data = b'{"event_id":"x","type":"%s","payload":{}}' % kind.encode()
            self.entries.append((i, data))
            out.append(LogEntry.from_raw(i, data))
        if terminal:
            i = f"1000-{len(self.entries)}"
            data = b'{"event_id":"x","type":"response_done","payload":{}}'
            self.entries.append((i, data))
            out.append(LogEntry.from_raw(i, data))
        self.new.set()
        self.new = trio.Event()
        return out

    async def read_after(self, run_id: str, cursor: str, count: int) -> list[tuple[str, bytes]]:
        key = entry_key(cursor)
        return [e for e in self.entries if entry_key(e[0]) > key][:count]

    async def tail(self, run_id: str, cursor: str, block_ms: int,
                   count: int) -> list[tuple[str, bytes]]:
        got = await self.read_after(run_id, cursor, count)
        if got:
            return got
        with trio.move_on_after(block_ms / 1000):
            await self.new.wait()
        return await self.read_after(run_id, cursor, count)


def test_peek_type() -> None:
    assert peek_type(b'{"event_id":"a","trace_context":{"traceparent":"x"},"type":"heartbeat"}'
                     ) == "heartbeat"
    assert peek_type(b"{}") == ""


async def drain(reader: RunReader) -> list[str]:
    ids: list[str] = []
    while not reader.done:
        batch = await reader.next_batch(1.0)
        assert batch is not None, "reader stalled"
        ids += [e.entry_id for e in batch]
    return ids


async def test_join_mid_run_gets_everything_once() -> None:
    log = MemoryLog()
    fanout = Fanout(64)
    log.add(5)
    with trio.fail_after(5):
        reader = RunReader(log, "r", "0-0", lambda: fanout)
        first = await reader.next_batch(1.0)
        assert first is not None and len(first) == 5
        # events written and published after the reader subscribed, some overlapping replay
        for _ in range(3):
            fanout.publish(tuple(log.add(4)))
        fanout.publish(tuple(log.add(1, terminal=True)))
        fanout.close()
        rest = await drain(reader)
    ids = [e.entry_id for e in first] + rest
    assert ids == [i for i, _ in log.entries]


async def test_resume_from_any_cursor() -> None:
    log = MemoryLog()
    log.add(20, terminal=True)
    all_ids = [i for i, _ in log.entries]
    with trio.fail_after(5):
        for k in range(len(all_ids) - 1):  # at the terminal id the API answers 204
            reader = RunReader(log, "r", all_ids[k], lambda: None)
            assert await drain(reader) == all_ids[k + 1:]


async def test_slow_subscriber_is_dropped_and_resumes_from_the_log() -> None:
    log = MemoryLog()
    fanout = Fanout(2)
    with trio.fail_after(5):
        slow = RunReader(log, "r", "0-0", lambda: fanout)
        fast = RunReader(log, "r", "0-0", lambda: fanout)
        assert await slow.next_batch(0.01) is None  # subscribed, nothing yet
        assert await fast.next_batch(0.01) is None
        fast_ids: list[str] = []
        for _ in range(10):
            fanout.publish(tuple(log.add(3)))
            batch = await fast.next_batch(1.0)
            assert batch is not None
            fast_ids += [e.entry_id for e in batch]
        assert fanout.dropped_count == 1  # the slow one, never the fast one
        fanout.publish(tuple(log.add(0, terminal=True)))
        fanout.close()
        fast_ids += await drain(fast)
        slow_ids = await drain(slow)
    assert slow_ids == fast_ids == [i for i, _ in log.entries]


async def test_tail_when_no_actor_is_local() -> None:
    log = MemoryLog()
    log.add(2)
    with trio.fail_after(5):
        reader = RunReader(log, "r", "0-0", lambda: None)
        got: list[str] = []

        async def later() -> None:
            await trio.sleep(0.05)
            log.add(3, terminal=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            got = await drain(reader)
    assert got == [i for i, _ in log.entries]


async def test_replay_starts_with_a_small_page_then_doubles() -> None:
    """A resuming client's first events cost one small read, however long the stream."""
    log = MemoryLog()
    log.add(2000, terminal=True)
    asked: list[int] = []
    read_after = log.read_after

    async def counting(run_id: str, cursor: str, count: int) -> list[tuple[str, bytes]]:
        asked.append(count)
        return await read_after(run_id, cursor, count)

    log.read_after = counting  # type: ignore[method-assign]
    with trio.fail_after(5):
        reader = RunReader(log, "r", "0-0", lambda: None, page=1000, first_page=64)
        first = await reader.next_batch(1.0)
        assert first is not None and len(first) == 64
        got = len(first)
        while not reader.done:
            batch = await reader.next_batch(1.0)
            assert batch is not None
            got += len(batch)
    assert got == 2001
    assert asked[:5] == [64, 128, 256, 512, 1000]
