"""The Redis event log (SPEC §5): run streams, run metadata, the persistence queue.

Two coredis clients, both ``decode_responses=False``: a *writer* for short commands and a
*reader* for blocking reads. A blocking ``XREAD``/``XREADGROUP`` holds a pool connection for
as long as it blocks, so blocking reads get their own sized pool and are always finite
(clamped to :attr:`EventLog.max_block_ms`; callers loop) - never ``BLOCK 0``.

Run streams are never trimmed (no MAXLEN: a long run must replay whole); a terminal, persisted
run gets a retention TTL instead. Every method translates Redis errors at the boundary, so
callers only ever see :class:`~runtime.errors.RedisUnavailable` (or a ``REDIS_ERROR``
:class:`~runtime.errors.CodyError` for a bug).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import coredis
from coredis.exceptions import StreamDuplicateConsumerGroupError
from coredis.response.types import StreamEntry
from coredis.tokens import PureToken

from runtime.keys import Keys
from runtime.redis_errors import map_redis_errors
from runtime.schema import TERMINAL_STATUSES

log = logging.getLogger(__name__)

Client = coredis.Redis[bytes]
Entry = tuple[str, bytes]
"""A run stream entry: (entry id, encoded StreamEvent)."""

EVENT_FIELD = b"event"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One persistence work item: persist run ``run_id`` up to at least ``seq``."""

    entry_id: str
    run_id: str
    seq: int


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, seq) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@asynccontextmanager
async def open_redis(url: str, max_connections: int, *, connect_timeout_s: float = 5.0,
                     stream_timeout_s: float | None = 30.0,
                     pool_timeout_s: float | None = 30.0) -> AsyncIterator[Client]:
    """A coredis client for ``redis://host:port/db`` or ``unix:///path/to/redis.sock``
    (``?db=N`` and ``user:password@`` work in both, as coredis parses them).

    Timeouts keep a dead or stalled server from hanging anyone: ``stream_timeout_s`` must stay
    above the longest blocking read (:attr:`EventLog.max_block_ms`). coredis runs its
    connections in a task group that wraps whatever the body raises in an exception group;
    a single error is unwrapped again here, so callers see the error they raised.
    """
    options: dict[str, Any] = dict(decode_responses=False, max_connections=max_connections,
                                   connect_timeout=connect_timeout_s,
                                   stream_timeout=stream_timeout_s,
                                   pool_timeout=pool_timeout_s)
    if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL {url!r}: use redis://host:port/db "
                         f"or unix:///path/to/redis.sock")
    with map_redis_errors():
        client: Client = coredis.Redis.from_url(url, **options)
    raised: BaseException | None = None
    try:
        async with client:
            try:
                yield client
            except BaseException as exc:
                raised = exc
                raise
    except BaseExceptionGroup as group:
        if raised is not None and len(group.exceptions) == 1 \
                and group.exceptions[0] is raised:
            raise raised from raised.__cause__
        raise


class EventLog:
    """The only gateway to Redis: every key comes from :class:`~runtime.keys.Keys`."""

    def __init__(self, writer: Client, reader: Client, keys: Keys, *,
                 max_block_ms: int = 5000) -> None:
        self._w = writer
        self._r = reader
        self.keys = keys
        self.max_block_ms = max_block_ms

    def _block(self, block_ms: int) -> int | None:
        """A finite BLOCK argument: ``None`` (do not block) for 0, never Redis's "forever"."""
        return min(block_ms, self.max_block_ms) if block_ms > 0 else None

    async def ping(self) -> None:
        with map_redis_errors():
            await self._w.ping()

    # ------------------------------------------------------------------ run streams

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        """Append encoded events to the run's stream, in order, in one round trip.

        With ``checkpoint_seq``, a ``{run_id, seq}`` checkpoint is added to the persist stream
        in the same pipeline, after the events, so the projector never sees a checkpoint
        ahead of the events it names. Returns the entry ids of ``events``.
        """
        if not events and checkpoint_seq is None:
            return []
        key = self.keys.run_events(run_id)
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pending = [pipe.xadd(key, {EVENT_FIELD: data}) for data in events]
                if checkpoint_seq is not None:
                    pipe.xadd(self.keys.persist_stream,
                              {b"run_id": run_id, b"seq": str(checkpoint_seq)})
            ids: list[str] = []
            for request in pending:
                entry_id = await request
                if entry_id is None:  # only with NOMKSTREAM, which we never send
                    raise AssertionError("XADD returned no id")
                ids.append(_s(entry_id))
        return ids

    async def append_many(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]]
                          ) -> list[list[str]]:
        """Several runs' appends (each as :meth:`append`) in one pipelined round trip."""
        persist = self.keys.persist_stream
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pending = []
                for run_id, events, checkpoint_seq in batches:
                    key = self.keys.run_events(run_id)
                    pending.append([pipe.xadd(key, {EVENT_FIELD: data}) for data in events])
                    if checkpoint_seq is not None:
                        pipe.xadd(persist, {b"run_id": run_id, b"seq": str(checkpoint_seq)})
            out: list[list[str]] = []
            for requests in pending:
                ids: list[str] = []
                for request in requests:
                    entry_id = await request
                    if entry_id is None:
                        raise AssertionError("XADD returned no id")
                    ids.append(_s(entry_id))
                out.append(ids)
        return out

    async def read_after(self, run_id: str, cursor: str, count: int) -> list[Entry]:
        """Up to ``count`` entries strictly after ``cursor`` (``"0-0"``: from the start)."""
        with map_redis_errors():
            entries = await self._w.xrange(self.keys.run_events(run_id), f"({cursor or '0-0'}",
                                           "+", count=count)
        return [(_s(e.identifier), _b(e.field_values[EVENT_FIELD])) for e in entries]

    async def read_all(self, run_id: str, *, page: int = 1000) -> list[Entry]:
        """The whole stream, read in pages (replay from the start)."""
        out: list[Entry] = []
        cursor = "0-0"
        while batch := await self.read_after(run_id, cursor, page):
            out += batch
            cursor = batch[-1][0]
        return out

    async def tail(self, run_id: str, cursor: str, block_ms: int, count: int) -> list[Entry]:
        """One finite blocking read (on the reader client) of entries after ``cursor``;
        ``[]`` when nothing arrived within ``block_ms`` (clamped to ``max_block_ms``)."""
        key = self.keys.run_events(run_id)
        with map_redis_errors():
            got = await self._r.xread({key: cursor or "0-0"}, count=count,
                                      block=self._block(block_ms))
        if not got:
            return []
        return [(_s(e.identifier), _b(e.field_values[EVENT_FIELD]))
                for entries in got.values() for e in entries]

    async def last_raw(self, run_id: str) -> Entry | None:
        """The run's last entry, or ``None`` if its stream does not exist (or expired)."""
        with map_redis_errors():
            entries = await self._w.xrevrange(self.keys.run_events(run_id), "+", "-", count=1)
        if not entries:
            return None
        return _s(entries[0].identifier), _b(entries[0].field_values[EVENT_FIELD])

    async def last_entry(self, run_id: str) -> tuple[str, str] | None:
        """(entry id, event type) of the run's last entry, or ``None``."""
        last = await self.last_raw(run_id)
        if last is None:
            return None
        event_type = json.loads(last[1]).get("type", "")
        return last[0], str(event_type)

    async def run_exists(self, run_id: str) -> bool:
        """Whether the run has a stream or metadata in Redis (not yet expired)."""
        with map_redis_errors():
            return await self._w.exists(self.keys.run_keys(run_id)) > 0

    exists = run_exists

    async def set_retention(self, run_id: str, ttl_s: int) -> None:
        """Expire all of a terminal, persisted run's keys after ``ttl_s`` seconds."""
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                for key in self.keys.run_keys(run_id):
                    pipe.expire(key, ttl_s)

    async def ttl(self, run_id: str) -> int:
        """Seconds left on the run's stream: -1 no TTL, -2 no stream."""
        with map_redis_errors():
            return await self._w.ttl(self.keys.run_events(run_id))

    # ------------------------------------------------------------------ run metadata

    async def put_meta(self, run_id: str, fields: Mapping[str, str | int]) -> None:
        """Write metadata fields. A ``node`` with a non-terminal (or no) ``status`` also
        registers the run as live on that node, for the janitor."""
        values = {k.encode(): str(v) for k, v in fields.items()}
        node = fields.get("node")
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.run_meta(run_id), values)
                if node is not None and str(fields.get("status", "")) not in TERMINAL_STATUSES:
                    pipe.hset(self.keys.live_runs, {run_id: str(node)})

    async def get_meta(self, run_id: str) -> dict[str, str]:
        with map_redis_errors():
            raw = await self._w.hgetall(self.keys.run_meta(run_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def set_status(self, run_id: str, status: str) -> None:
        """Record the run's status; a terminal status also unregisters it as live."""
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pipe.hset(self.keys.run_meta(run_id), {b"status": status})
                if status in TERMINAL_STATUSES:
                    pipe.hdel(self.keys.live_runs, [run_id])

    # ------------------------------------------------------------------ node leases, live runs

    async def register_live(self, run_id: str, node_id: str) -> None:
        with map_redis_errors():
            await self._w.hset(self.keys.live_runs, {run_id: node_id})

    async def unregister_live(self, run_id: str) -> None:
        with map_redis_errors():
            await self._w.hdel(self.keys.live_runs, [run_id])

    async def live_runs(self) -> dict[str, str]:
        """run id -> node id of every run registered live."""
        with map_redis_errors():
            raw = await self._w.hgetall(self.keys.live_runs)
        return {_s(k): _s(v) for k, v in raw.items()}

    async def refresh_lease(self, node_id: str, ttl_s: int) -> None:
        with map_redis_errors():
            await self._w.set(self.keys.node_lease(node_id), b"1", ex=ttl_s)

    async def lease_alive(self, node_id: str) -> bool:
        with map_redis_errors():
            return await self._w.exists([self.keys.node_lease(node_id)]) > 0

    # ------------------------------------------------------------------ persistence queue

    async def ensure_group(self) -> None:
        """``XGROUP CREATE persist cody-projector 0 MKSTREAM``; an existing group is fine."""
        # BUSYGROUP: created at an earlier start or by another node
        with map_redis_errors(), suppress(StreamDuplicateConsumerGroupError):
            await self._w.xgroup_create(self.keys.persist_stream, self.keys.projector_group,
                                        "0", mkstream=True)

    async def read_group(self, consumer: str, count: int,
                         block_ms: int) -> list[tuple[str, dict[str, str]]]:
        """New persist entries for ``consumer`` (one finite blocking read on the reader)."""
        with map_redis_errors():
            got = await self._r.xreadgroup(self.keys.projector_group, consumer,
                                           {self.keys.persist_stream: ">"}, count=count,
                                           block=self._block(block_ms))
        if not got:
            return []
        return [(_s(e.identifier), {_s(k): _s(v) for k, v in e.field_values.items()})
                for entries in got.values() for e in entries]

    async def autoclaim(self, consumer: str, min_idle_ms: int,
                        count: int) -> list[tuple[str, dict[str, str]]]:
        """Take over up to ``count`` entries pending longer than ``min_idle_ms`` (XAUTOCLAIM):
        what a crashed projector had read but not acked."""
        out: list[tuple[str, dict[str, str]]] = []
        start: bytes | str = "0-0"
        with map_redis_errors():
            for _ in range(16):  # bounded: each call scans at most count * 10 PEL entries
                reply = await self._w.xautoclaim(self.keys.persist_stream,
                                                 self.keys.projector_group, consumer,
                                                 min_idle_ms, start, count=count - len(out))
                start, entries = reply[0], reply[1]
                for e in entries:
                    if isinstance(e, StreamEntry):  # Redis 6.2 gives nil for deleted ones
                        out.append((_s(e.identifier),
                                    {_s(k): _s(v) for k, v in e.field_values.items()}))
                if _s(start) == "0-0" or len(out) >= count:
                    break
        return out

    async def ack(self, entry_ids: Sequence[str]) -> None:
        """XACK: these checkpoints are done (persisted, or dropped as malformed)."""
        if not entry_ids:
            return
        with map_redis_errors():
            await self._w.xack(self.keys.persist_stream, self.keys.projector_group, entry_ids)

    def _checkpoints(self, entries: list[tuple[str, dict[str, str]]]
                     ) -> tuple[list[Checkpoint], list[str]]:
        good: list[Checkpoint] = []
        bad: list[str] = []
        for entry_id, fields in entries:
            try:
                good.append(Checkpoint(entry_id, fields["run_id"], int(fields["seq"])))
            except (KeyError, ValueError):
                log.warning("persist queue: dropping malformed entry %s %r", entry_id, fields)
                bad.append(entry_id)
        return good, bad

    async def read_checkpoints(self, consumer: str, count: int,
                               block_ms: int) -> list[Checkpoint]:
        """:meth:`read_group` as checkpoints; malformed entries are acked and dropped, so
        they are not taken over again and again."""
        good, bad = self._checkpoints(await self.read_group(consumer, count, block_ms))
        await self.ack(bad)
        return good

    async def claim_checkpoints(self, consumer: str, min_idle_ms: int,
                                count: int) -> list[Checkpoint]:
        good, bad = self._checkpoints(await self.autoclaim(consumer, min_idle_ms, count))
        await self.ack(bad)
        return good

    async def pending_count(self) -> int:
        """Entries read by some projector and not acked yet."""
        with map_redis_errors():
            summary = await self._w.xpending(self.keys.persist_stream,
                                             self.keys.projector_group)
        return int(getattr(summary, "pending", 0))

    async def trim_persist(self) -> int:
        """Drop persist entries that every projector has read and acked; returns how many.

        The persist stream is a queue, not a log: without this it grows by a few entries per
        run forever. Only entries below both the oldest pending entry and the group's
        last-delivered id go, so no checkpoint is lost (trimming is by millisecond, so a few
        done entries may stay until the next call).
        """
        stream, group = self.keys.persist_stream, self.keys.projector_group
        with map_redis_errors():
            summary = await self._w.xpending(stream, group)
            groups = await self._w.xinfo_groups(stream)
            floor: tuple[int, int] | None = None
            for info in groups:
                delivered = info.get(b"last-delivered-id")
                if info.get(b"name") == group.encode() and isinstance(delivered, bytes):
                    floor = entry_key(delivered.decode())
            if floor is None:
                return 0
            oldest = getattr(summary, "minimum_identifier", None)
            if isinstance(oldest, bytes | str):
                floor = min(floor, entry_key(_s(oldest)))
            if floor[0] == 0:
                return 0
            return await self._w.xtrim(stream, PureToken.MINID, floor[0])
