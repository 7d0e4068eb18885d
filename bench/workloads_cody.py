"""Cody workloads for ``bench/run.py``: fan-out lag, resume latency, memory, CPU per event.

Each workload takes an open runtime (or a config to open one) and returns plain figures, so
the driver only formats. Everything runs in-process: the runtime's reader is used exactly as
the SSE route uses it, without HTTP in the way.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import coredis
import trio

from actors.providers.fixtures import FixtureLibrary
from actors.reader import RunReader
from actors.system import CodyRuntime
from runtime.envelope import EventFactory, encode_event
from runtime.eventlog import entry_key
from runtime.schema import (
    ItemDelta,
    ItemDone,
    ItemStart,
    MessageItem,
    Payload,
    ResponseDone,
    ResponseStart,
    Usage,
)
from runtime.turns import TurnRequest

LIB = FixtureLibrary()
FX = LIB.get("openai", "rapid_deltas")
SMALL = LIB.get("openai", "simple_message")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def rss_kib() -> int:
    """Resident set size from /proc (what the OS charges us, allocator slack included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss() -> int:
    gc.collect()
    return rss_kib()


async def wait_until(ready: Callable[[], bool], timeout_s: float = 60.0) -> None:
    with trio.fail_after(timeout_s):
        while True:
            if ready():
                return
            await trio.sleep(0.05)


def rapid_request() -> TurnRequest:
    return TurnRequest(prompt=FX.prompt, provider_id="openai", model=FX.model, tools=[])


def small_request() -> TurnRequest:
    return TurnRequest(prompt=SMALL.prompt, provider_id="openai", model=SMALL.model, tools=[])


# ---------------------------------------------------------------------------- fan-out


@dataclass
class FanoutResult:
    subscribers: int
    events: int
    lags_ms: list[float] = field(default_factory=list)
    dropped: int = 0
    seconds: float = 0.0
    run_id: str = ""


async def fanout(rt: CodyRuntime, subscribers: int, wait_s: float = 30.0) -> FanoutResult:
    """One paced run, ``subscribers`` readers opened right after submit. Lag is receipt wall
    time minus the XADD millisecond in the entry id (both from this host's clock)."""
    accepted = await rt.submission.submit(rapid_request())
    run_id = accepted.run_id
    actor = rt.runs.actors[run_id]
    readers: list[RunReader] = []
    for _ in range(subscribers):
        reader = await rt.reading.open_reader(run_id, None)
        assert reader is not None
        readers.append(reader)
    counts = [0] * subscribers
    lasts = [""] * subscribers
    lags: list[float] = []

    async def consume(i: int, reader: RunReader) -> None:
        prev = (0, 0)
        n = 0
        while not reader.done:
            batch = await reader.next_batch(wait_s)
            if batch is None:
                raise AssertionError(f"subscriber {i}: nothing for {wait_s}s")
            if not batch:
                break
            now_ms = time.time_ns() / 1e6
            assert batch[0].key > prev, "out of order or duplicate across batches"
            prev = batch[-1].key
            n += len(batch)
            lags.extend(now_ms - int(e.entry_id.partition("-")[0]) for e in batch)
        counts[i] = n
        lasts[i] = reader.last_id

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i, reader in enumerate(readers):
            nursery.start_soon(consume, i, reader)
    seconds = time.perf_counter() - start
    stored = await rt.log.read_all(run_id)
    assert stored, "run wrote nothing"
    for i in range(subscribers):
        assert counts[i] == len(stored), f"subscriber {i}: {counts[i]} of {len(stored)} events"
        assert lasts[i] == stored[-1][0], f"subscriber {i} ended at {lasts[i]}"
    return FanoutResult(subscribers, len(stored), lags, actor.fanout.dropped_count, seconds,
                        run_id)


async def plain_fanout(redis_url: str, prefix: str, subscribers: int, events: list[bytes],
                       delay_s: float) -> FanoutResult:
    """Reference: the same events XADDed one by one at the same pace with the same client
    library, each then sent to ``subscribers`` bare trio memory channels; same lag bookkeeping.
    """
    key = f"{prefix}:plainfan:{{{uuid.uuid4()}}}"
    lags: list[float] = []
    chans = [trio.open_memory_channel[tuple[str, ...]](4096) for _ in range(subscribers)]
    counts = [0] * subscribers

    async def consume(i: int, receive: trio.MemoryReceiveChannel[tuple[str, ...]]) -> None:
        async for batch in receive:
            now_ms = time.time_ns() / 1e6
            counts[i] += len(batch)
            lags.extend(now_ms - int(entry_id.partition("-")[0]) for entry_id in batch)

    start = time.perf_counter()
    async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
        async with trio.open_nursery() as nursery:
            for i, (_, receive) in enumerate(chans):
                nursery.start_soon(consume, i, receive)
            for n, data in enumerate(events):
                if n:
                    await trio.sleep(delay_s)
                entry_id = await client.xadd(key, {b"event": data})
                batch = (entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),)
                for send, _ in chans:
                    send.send_nowait(batch)
            for send, _ in chans:
                send.close()
        await client.delete([key])
    assert all(c == len(events) for c in counts)
    return FanoutResult(subscribers, len(events), lags, 0, time.perf_counter() - start)


# ---------------------------------------------------------------------------- resume


def build_events(run_id: str, n: int) -> list[bytes]:
    """``n`` encoded events of one run: start, one message streamed in deltas, done."""
    factory = EventFactory(run_id, TRACEPARENT, lambda: time.time_ns() // 1_000_000)
    item_id = f"msg_{run_id}"
    deltas = n - 4
    payloads: list[Payload] = [
        ResponseStart(response_id=run_id, turn_id=str(uuid.uuid4()),
                      thread_id=str(uuid.uuid4()), model_id="gpt-5-mini", provider_id="openai",
                      created_at=int(time.time() * 1000)),
        ItemStart(item_id=item_id, item_type="message"),
        *(ItemDelta(item_id=item_id, delta_content=f"tok{i} ") for i in range(deltas)),
        ItemDone(item_id=item_id, final_item=MessageItem(
            id=item_id, origin="agent", content="".join(f"tok{i} " for i in range(deltas)))),
        ResponseDone(response_id=run_id, status="complete",
                     usage=Usage(prompt_tokens=10, completion_tokens=deltas,
                                 total_tokens=10 + deltas),
                     finish_reason="stop"),
    ]
    return [encode_event(factory.make(p)) for p in payloads]


@dataclass
class ResumeResult:
    events: int
    ours_ms: dict[str, list[float]]
    plain_ms: dict[str, list[float]]


async def resume(rt: CodyRuntime, redis_url: str, *, n_events: int = 10_000,
                 repeats: int = 200) -> ResumeResult:
    """open_reader(cursor) → first batch, at start, middle and end-1 of a finished stream.
    Reference: one XRANGE of the reader's first page (64 entries): what replay needs at least."""
    run_id = str(uuid.uuid4())
    events = build_events(run_id, n_events)
    ids: list[str] = []
    for i in range(0, len(events), 1000):
        ids += await rt.log.append(run_id, events[i:i + 1000])
    cursors = {"start": "0-0", "middle": ids[len(ids) // 2], "end-1": ids[-2]}
    ours: dict[str, list[float]] = {k: [] for k in cursors}
    plain: dict[str, list[float]] = {k: [] for k in cursors}
    key = rt.log.keys.run_events(run_id)
    async with coredis.Redis.from_url(redis_url, decode_responses=False) as client:
        for _ in range(repeats):
            for name, cursor in cursors.items():
                t0 = time.perf_counter()
                reader = await rt.reading.open_reader(run_id, cursor)
                assert reader is not None
                batch = await reader.next_batch(5.0)
                t1 = time.perf_counter()
                assert batch, f"no first batch from {name}"
                assert entry_key(batch[0].entry_id) > entry_key(cursor)
                reader.close()
                ours[name].append((t1 - t0) * 1000)
                t0 = time.perf_counter()
                got = await client.xrange(key, f"({cursor}", "+", count=64)
                t1 = time.perf_counter()
                assert got
                plain[name].append((t1 - t0) * 1000)
    return ResumeResult(len(ids), ours, plain)


# ---------------------------------------------------------------------------- memory


@dataclass
class MemoryResult:
    runs: int
    per_run_kib: float
    subscribers: int
    per_subscriber_kib: float


async def memory(rt: CodyRuntime, request: TurnRequest, *, runs: int = 1000,
                 subscribers: int = 1000) -> MemoryResult:
    """RSS growth per live run, then per idle subscriber on one live run. The runtime must
    be paced slowly enough (replay_delay_s) that every run stays live while measured.

    The replay provider holds the whole recorded stream of each run split into blocks, so a
    big fixture (rapid_deltas, 263 KiB) charges each run its size: a live provider does not."""
    base = settled_rss()
    run_ids = [(await rt.submission.submit(request)).run_id for _ in range(runs)]
    await wait_until(lambda: all(a.snapshot() is not None for rid in run_ids
                                 if (a := rt.runs.actors.get(rid))))
    assert all(rid in rt.runs.actors for rid in run_ids), "a run ended while measured"
    with_runs = settled_rss()
    run_id = run_ids[0]
    actor = rt.runs.actors[run_id]
    readers = [await rt.reading.open_reader(run_id, None) for _ in range(subscribers)]

    caught_up = 0

    async def idle(reader: RunReader) -> None:
        nonlocal caught_up
        # None: replayed what Redis had, subscribed live, nothing new since
        while await reader.next_batch(0.05) is not None:
            pass
        caught_up += 1
        while not reader.done:
            await reader.next_batch(60.0)

    async with trio.open_nursery() as nursery:
        for reader in readers:
            assert reader is not None
            nursery.start_soon(idle, reader)
        await wait_until(lambda: caught_up >= subscribers)
        assert len(actor.fanout) >= subscribers
        with_subs = settled_rss()
        assert run_id in rt.runs.actors, "the run ended while measured"
        nursery.cancel_scope.cancel()
    for reader in readers:
        assert reader is not None
        reader.close()
    return MemoryResult(runs, (with_runs - base) / runs, subscribers,
                        (with_subs - with_runs) / max(1, subscribers))


# ---------------------------------------------------------------------------- CPU per event


async def cpu_per_event(rt: CodyRuntime, runs: int = 100) -> tuple[int, float, float]:
    """Process CPU seconds / events for ``runs`` unpaced runs with one reader each.
    Returns (events, CPU µs per event, wall seconds)."""
    total = 0

    async def one() -> None:
        nonlocal total
        accepted = await rt.submission.submit(rapid_request())
        reader = await rt.reading.open_reader(accepted.run_id, None)
        assert reader is not None
        while not reader.done:
            batch = await reader.next_batch(30.0)
            assert batch is not None
            total += len(batch)

    c0, w0 = time.process_time(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(runs):
            nursery.start_soon(one)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return total, cpu / total * 1e6, wall
