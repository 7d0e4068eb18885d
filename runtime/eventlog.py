"""The Redis event log (SPEC §5, §13): run streams, run metadata, the persistence queue.

Two coredis clients, both ``decode_responses=False``: a *writer* for short commands and a
*reader* for blocking reads. A blocking ``XREAD``/``XREADGROUP`` holds a pool connection for
as long as it blocks, so blocking reads get their own sized pool and are always finite
(clamped to :attr:`EventLog.max_block_ms`; callers loop) - never ``BLOCK 0``.

The same code runs on one Redis (``redis://``, ``unix://``) and on a Redis Cluster
(``redis+cluster://host:port,...``, :func:`open_redis`). What differs on a cluster, and how:

- A pipeline spans nodes, and coredis sends it node by node, so a run's checkpoint (on its
  persist shard, another slot) could reach Redis before the run's events. On a cluster,
  :meth:`EventLog.append_many` therefore writes every event first and the checkpoints in a
  second pipeline once the events are acknowledged; on one Redis it stays one pipeline (its
  commands run in order).
- A multi-key read must stay within one slot, and the persist shards are in different slots.
  On one Redis a single blocking ``XREADGROUP`` covers every shard. On a cluster a read is a
  non-blocking round over all shards in one pipeline (coredis groups it by node), repeated
  every ``cluster_poll_ms`` (default 50) until one finds checkpoints: no connection held per
  shard, and a checkpoint waits at most ``cluster_poll_ms`` plus a round (persistence is off
  the live path: the run's actor serves the run while it runs). Why not one blocking read on
  one shard between rounds: Redis times blocked clients out at its ``hz`` tick, so a
  ``BLOCK 100`` on an idle node returns after 100-200 ms (measured), which doubled the wait.
  :meth:`EventLog.tail_many` reads the same way, and so does :meth:`EventLog.read_node`, a
  node's multiplexed tail (actors/node_tail.py): one blocking ``XREAD`` over every watched
  run and the node's control stream on one Redis; on a cluster, pipelined non-blocking
  rounds that its caller paces (``CODY_TAIL_POLL_MS``).
- Everything that must be atomic is on one run's keys, which share the ``{run_id}`` hash tag:
  the janitor's orphan ending is one Lua script (:meth:`EventLog.end_orphan`), and so is each
  run's append (:data:`APPEND_LUA`, fenced: refused once a janitor ended the run) and its
  status (:data:`SET_STATUS_LUA`). On one Redis the append's script also writes the run's
  checkpoint (its persist shard is then just another key); on a cluster the checkpoints of the
  appends that were taken go in the second pipeline.

Run streams are never trimmed (no MAXLEN: a long run must replay whole); a terminal, persisted
run gets a retention TTL instead. Every method translates Redis errors at the boundary, so
callers only ever see :class:`~runtime.errors.RedisUnavailable` (or a ``REDIS_ERROR``
:class:`~runtime.errors.CodyError` for a bug).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import coredis
import trio
from coredis.connection import TCPLocation
from coredis.exceptions import NoScriptError, StreamDuplicateConsumerGroupError
from coredis.response.types import StreamEntry
from coredis.tokens import PureToken

from runtime.errors import RunFenced
from runtime.keys import Keys
from runtime.redis_errors import map_redis_errors, translate
from runtime.schema import TERMINAL_STATUSES

log = logging.getLogger(__name__)

Client = coredis.Redis[bytes] | coredis.RedisCluster[bytes]
Entry = tuple[str, bytes]
"""A run stream entry: (entry id, encoded StreamEvent)."""

EVENT_FIELD = b"event"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SINGLE_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One persistence work item: persist run ``run_id`` up to at least ``seq``.

    ``entry_id`` is unique within its persist shard only; acking needs both."""

    entry_id: str
    run_id: str
    seq: int
    shard: int = 0


OrphanOutcome = Literal["appended", "ended", "moved", "gone", "owner"]


@dataclass(frozen=True, slots=True)
class OrphanEnding:
    """What :meth:`EventLog.end_orphan` did.

    ``appended``: this call wrote the ending (``entry_id`` is its id). ``ended``: the run's
    metadata already says it ended. ``moved``: the stream has a newer entry than the one the
    caller decided on (``entry_id``: that newer one), so decide again. ``gone``: no stream.
    ``owner``: the run is registered to another node than the caller named.
    """

    outcome: OrphanOutcome
    entry_id: str | None = None


# The janitor's check-and-append, atomic on one run's keys (one slot: they share {run_id}).
# KEYS: events stream, meta hash. ARGV: the last entry id the caller decided on, the encoded
# response_error event, the node the run should belong to, the node ending it, then every
# terminal status.
END_ORPHAN_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return {'gone', ''} end
if last[1][1] ~= ARGV[1] then return {'moved', last[1][1]} end
local meta = redis.call('HMGET', KEYS[2], 'status', 'node')
for i = 5, #ARGV do
  if meta[1] == ARGV[i] then return {'ended', last[1][1]} end
end
if meta[2] and meta[2] ~= ARGV[3] then return {'owner', meta[2]} end
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'error', 'ended_by', ARGV[4])
return {'appended', id}
"""

# -- policies: the janitor's ending of a run that never wrote an event (queued, or its node
# died before its start), atomic on its keys. KEYS: events stream, meta hash. ARGV: the node
# the run should belong to, the node ending it, the encoded response_start, the encoded
# response_error, then every terminal status.
END_UNSTARTED_LUA = """
if redis.call('XLEN', KEYS[1]) > 0 then return {'moved', ''} end
local meta = redis.call('HMGET', KEYS[2], 'status', 'node')
if not meta[1] then return {'gone', ''} end
for i = 5, #ARGV do
  if meta[1] == ARGV[i] then return {'ended', ''} end
end
if meta[2] and meta[2] ~= ARGV[1] then return {'owner', meta[2]} end
redis.call('XADD', KEYS[1], '*', 'event', ARGV[3])
local id = redis.call('XADD', KEYS[1], '*', 'event', ARGV[4])
redis.call('HSET', KEYS[2], 'status', 'error', 'ended_by', ARGV[2])
return {'appended', id}
"""

# -- node loss (issue 12): a run's append, fenced. A node that stalled past its lease (SIGSTOP,
# a long pause, a VM freeze) comes back with its run actors still appending, after a janitor
# has ended their runs RUN_ORPHANED; every append is refused once the run's metadata says
# someone ended it (``ended_by``, set by END_ORPHAN_LUA and END_UNSTARTED_LUA in the same
# step as their ending), so the janitor's terminal event stays the stream's last.
# KEYS: events stream, meta hash, and on one Redis only (another slot on a cluster) the run's
# persist shard for its checkpoint. ARGV: run id, checkpoint seq, then the encoded events.
# Replies the events' entry ids, or (refused) the node that ended the run, as a string.
APPEND_LUA = """
local by = redis.call('HGET', KEYS[2], 'ended_by')
if by then return by end
local ids = {}
for i = 3, #ARGV do
  ids[i - 2] = redis.call('XADD', KEYS[1], '*', 'event', ARGV[i])
end
if KEYS[3] then redis.call('XADD', KEYS[3], '*', 'run_id', ARGV[1], 'seq', ARGV[2]) end
return ids
"""

# The run's status, unless a janitor ended the run (its ``status=error`` stays). KEYS: meta
# hash, and on one Redis only the run's live-registry shard (a terminal status unregisters
# it). ARGV: status, run id. Replies 1 if set, 0 if refused.
SET_STATUS_LUA = """
if redis.call('HEXISTS', KEYS[1], 'ended_by') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
if KEYS[2] then redis.call('HDEL', KEYS[2], ARGV[2]) end
return 1
"""

# Delete a stream only if its last entry is still the one the caller has seen (nothing was
# added since): the end of a migration out of a legacy key.
DELETE_IF_LAST_LUA = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 or last[1][1] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return -1
"""


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable (ms, seq) pair."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """``redis+cluster://[user:password@]host:port,host:port,...[?skip_full_coverage_check=1]``
    parsed: the seed nodes (any reachable one is enough; coredis discovers the rest)."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    skip_full_coverage_check: bool = False


def parse_cluster_url(url: str) -> ClusterURL:
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"not a cluster URL: {url!r}")
    netloc = parts.netloc
    username = password = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        user, sep, secret = auth.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if sep else None)
    nodes: list[tuple[str, int]] = []
    for seed in netloc.split(","):
        host, sep, port = seed.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bad seed node {seed!r} in {url!r}: write host:port")
        nodes.append((host.strip("[]"), int(port)))
    if parts.path not in ("", "/"):
        raise ValueError(f"a cluster has no databases: drop {parts.path!r} from {url!r}")
    query = parse_qs(parts.query)
    skip = query.get("skip_full_coverage_check", ["0"])[-1].lower() in ("1", "true", "yes")
    return ClusterURL(tuple(nodes), username, password, parts.scheme == "rediss+cluster", skip)


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


@asynccontextmanager
async def open_redis(url: str, max_connections: int, *, connect_timeout_s: float = 5.0,
                     stream_timeout_s: float | None = 30.0,
                     pool_timeout_s: float | None = 30.0) -> AsyncIterator[Client]:
    """A coredis client for ``redis://host:port/db``, ``unix:///path/to/redis.sock`` (``?db=N``
    and ``user:password@`` work in both, as coredis parses them) or a Redis Cluster,
    ``redis+cluster://host:port,host:port,...`` (seed nodes; ``rediss+cluster://`` for TLS).

    On a cluster ``max_connections`` is per node (a run's blocking reads all land on the node
    of its slot), and some seed node must answer when the client opens (coredis reads the
    cluster's layout then; :class:`~runtime.errors.RedisUnavailable` if none does); later
    outages, failovers and moved slots are followed as they come.

    Timeouts keep a dead or stalled server from hanging anyone: ``stream_timeout_s`` must stay
    above the longest blocking read (:attr:`EventLog.max_block_ms`). coredis runs its
    connections in a task group that wraps whatever the body raises in an exception group; a
    single error is unwrapped again here, so callers see the error they raised.
    """
    scheme = urlsplit(url).scheme
    client: Client
    if scheme in CLUSTER_SCHEMES:
        spec = parse_cluster_url(url)
        with map_redis_errors():
            client = coredis.RedisCluster(
                startup_nodes=[TCPLocation(h, p) for h, p in spec.nodes],
                username=spec.username, password=spec.password, ssl=spec.ssl,
                skip_full_coverage_check=spec.skip_full_coverage_check,
                decode_responses=False, max_connections=max_connections,
                max_connections_per_node=True, connect_timeout=connect_timeout_s,
                stream_timeout=stream_timeout_s, pool_timeout=pool_timeout_s)
    elif scheme in SINGLE_SCHEMES:
        options: dict[str, Any] = dict(decode_responses=False, max_connections=max_connections,
                                       connect_timeout=connect_timeout_s,
                                       stream_timeout=stream_timeout_s,
                                       pool_timeout=pool_timeout_s)
        with map_redis_errors():
            client = coredis.Redis.from_url(url, **options)
    else:
        raise ValueError(f"unsupported Redis URL {url!r}: use redis://host:port/db, "
                         f"unix:///path/to/redis.sock or redis+cluster://host:port,host:port")
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
        if raised is None and (ours := translate(group)) is not None:
            raise ours from group
        raise
    except Exception as exc:
        # a cluster client discovers the cluster's layout as it opens: none reachable
        if raised is None and (ours := translate(exc)) is not None:
            raise ours from exc
        raise

# -- security: a tenant's run slot, taken only while fewer than the limit are unexpired.
# KEYS: the tenant's sorted set. ARGV: now (ms), the slot's expiry (ms), the limit, run id,
# the key's own TTL (ms: long after every slot in it expired, so an idle tenant leaves nothing).
TENANT_ACQUIRE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


def _fields(entry: StreamEntry) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in entry.field_values.items()}


class EventLog:
    """The only gateway to Redis: every key comes from :class:`~runtime.keys.Keys`."""

    def __init__(self, writer: Client, reader: Client, keys: Keys, *,
                 max_block_ms: int = 5000, cluster_poll_ms: int = 50) -> None:
        self._w = writer
        self._r = reader
        self.keys = keys
        self.max_block_ms = max_block_ms
        self.cluster = isinstance(writer, coredis.RedisCluster)
        """Whether this is a Redis Cluster (reads and appends take the cluster paths)."""
        self.cluster_poll_ms = cluster_poll_ms
        self._shard_of_key = {key: i for i, key in enumerate(keys.persist_streams)}
        self._end_orphan = writer.register_script(END_ORPHAN_LUA)
        self._delete_if_last = writer.register_script(DELETE_IF_LAST_LUA)
        self._end_unstarted = writer.register_script(END_UNSTARTED_LUA)
        self._tenant_acquire = writer.register_script(TENANT_ACQUIRE_LUA)
        self._set_status = writer.register_script(SET_STATUS_LUA)
        self._append_sha = hashlib.sha1(APPEND_LUA.encode()).hexdigest()

    def _block(self, block_ms: int) -> int | None:
        """A finite BLOCK argument: ``None`` (do not block) for 0, never Redis's "forever"."""
        return min(block_ms, self.max_block_ms) if block_ms > 0 else None

    async def ping(self) -> None:
        with map_redis_errors():
            await self._w.ping()

    # ------------------------------------------------------------------ reading many streams

    async def _read_streams(self, streams: Mapping[str, str], count: int, block_ms: int,
                            group: tuple[str, str] | None = None
                            ) -> dict[str, tuple[StreamEntry, ...]]:
        """``XREAD`` (or, with ``group=(group, consumer)``, ``XREADGROUP``) over several
        streams, blocking up to ``block_ms`` (clamped) until one of them has entries.

        One Redis: a single command. A cluster: rounds of non-blocking reads in one pipeline,
        ``cluster_poll_ms`` apart, until one finds entries or the time is up.
        """
        if not streams:
            return {}
        block = self._block(block_ms)
        if not self.cluster or len(streams) == 1:
            with map_redis_errors():
                got = await self._xread(self._r, streams, count, block, group)
            return dict(got or {})
        deadline = trio.current_time() + (block or 0) / 1000
        while True:
            found = await self._read_round(streams, count, group)
            remaining = deadline - trio.current_time()
            if found or remaining <= 0:
                return found
            await trio.sleep(min(remaining, self.cluster_poll_ms / 1000))

    async def _read_round(self, streams: Mapping[str, str], count: int,
                          group: tuple[str, str] | None) -> dict[str, tuple[StreamEntry, ...]]:
        """One non-blocking read of every stream, pipelined (a cluster groups it by node)."""
        found: dict[str, tuple[StreamEntry, ...]] = {}
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pending = [self._xread(pipe, {key: cursor}, count, None, group)
                           for key, cursor in streams.items()]
            for request in pending:
                got = await request
                if got:
                    found.update(got)
        return found

    @staticmethod
    def _xread(client: Any, streams: Mapping[str, str], count: int, block: int | None,
               group: tuple[str, str] | None) -> Any:
        if group is None:
            return client.xread(dict(streams), count=count, block=block)
        return client.xreadgroup(group[0], group[1], dict(streams), count=count, block=block)

    # ------------------------------------------------------------------ run streams

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        """Append encoded events to the run's stream, in order.

        With ``checkpoint_seq``, a ``{run_id, seq}`` checkpoint goes to the run's persist shard
        after the events, so the projector never sees a checkpoint ahead of the events it
        names. Returns the entry ids of ``events``.

        Raises:
            RunFenced: the run was ended by someone else (a janitor); nothing was written.
        """
        if not events and checkpoint_seq is None:
            return []
        result = (await self.append_many([(run_id, events, checkpoint_seq)]))[0]
        if isinstance(result, RunFenced):
            raise result
        return result

    async def append_many(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]]
                          ) -> list[list[str] | RunFenced]:
        """Several runs' appends (each as :meth:`append`) in one pipelined round trip (two on
        a cluster when there are checkpoints: events first, then checkpoints). Each run's
        result is its entry ids, or :class:`~runtime.errors.RunFenced` (nothing of that run
        written, its checkpoint neither) when its run was ended by someone else: one fenced
        run never fails the others.

        Each run's events are one script call (:data:`APPEND_LUA`), atomic on the run's keys:
        refused whole if the run's metadata has ``ended_by``. Only ``ended_by`` is checked,
        not the run's ``node`` against the appender: a run's owner never changes (the node
        that accepted it runs its actor, SPEC §13), and every ending written by anyone but its
        actor is a janitor's, which sets ``ended_by`` in the same atomic step; so ``ended_by``
        alone says "someone else ended it" - whichever janitor did, this node's own too (its
        actor was thought gone). A checkpoint alone (no events: the janitor settling a run
        it ended) is not fenced. What the fence cannot see: a node stalled past the run's
        retention TTL (default 24 h), when its metadata has expired.

        The script is sent by SHA (``EVALSHA``); a ``NOSCRIPT`` (Redis restarted, or its script
        cache was flushed) sends those runs' appends again with the body (``EVAL``, which
        caches it again): a run refused ``NOSCRIPT`` wrote nothing, so nothing is doubled."""
        out: list[list[str] | RunFenced] = [[] for _ in batches]
        cluster = self.cluster
        with map_redis_errors():
            scripted = [i for i, (_, events, _) in enumerate(batches) if events]
            missing = await self._append_round(batches, scripted, out, by_sha=True)
            if missing:
                await self._append_round(batches, missing, out, by_sha=False)
            if cluster and any(seq is not None and not isinstance(out[i], RunFenced)
                               for i, (_, _, seq) in enumerate(batches)):
                async with self._w.pipeline(transaction=False) as pipe:
                    for i, (run_id, _, checkpoint_seq) in enumerate(batches):
                        if checkpoint_seq is not None and not isinstance(out[i], RunFenced):
                            self._checkpoint(pipe, run_id, checkpoint_seq)
        return out

    async def _append_round(self, batches: Sequence[tuple[str, Sequence[bytes], int | None]],
                            scripted: Sequence[int], out: list[list[str] | RunFenced], *,
                            by_sha: bool) -> list[int]:
        """One pipeline: the appends of ``batches[i]`` for ``i`` in ``scripted`` and (first
        round only, ``by_sha``) on one Redis the checkpoints that come alone; their results
        into ``out``. Returns the runs refused ``NOSCRIPT``."""
        keys = self.keys
        cluster = self.cluster
        pending: list[tuple[int, Any]] = []
        async with self._w.pipeline(transaction=False, raise_on_error=False) as pipe:
            if by_sha:
                for run_id, events, checkpoint_seq in batches:
                    if not events and checkpoint_seq is not None and not cluster:
                        pending.append((-1, self._checkpoint(pipe, run_id, checkpoint_seq)))
            for i in scripted:
                run_id, events, checkpoint_seq = batches[i]
                run_keys = [keys.run_events(run_id), keys.run_meta(run_id)]
                if checkpoint_seq is not None and not cluster:
                    run_keys.append(keys.persist_stream_for(run_id))
                args: list[str | bytes] = [
                    run_id, "" if checkpoint_seq is None else str(checkpoint_seq), *events]
                pending.append((i, pipe.evalsha(self._append_sha, run_keys, args) if by_sha
                                else pipe.eval(APPEND_LUA, run_keys, args)))
        missing: list[int] = []
        for i, request in pending:
            try:
                reply = await request
            except NoScriptError:
                missing.append(i)
                continue
            if i < 0:
                continue
            if isinstance(reply, bytes | str):
                out[i] = RunFenced(batches[i][0], _s(reply))
            else:
                out[i] = [_s(entry_id) for entry_id in reply]
        return missing

    def _checkpoint(self, pipe: Any, run_id: str, seq: int) -> Any:
        return pipe.xadd(self.keys.persist_stream_for(run_id),
                         {b"run_id": run_id, b"seq": str(seq)})

    async def read_after(self, run_id: str, cursor: str, count: int) -> list[Entry]:
        """Up to ``count`` entries strictly after ``cursor`` (``"0-0"``: from the start)."""
        with map_redis_errors():
            entries = await self._w.xrange(self.keys.run_events(run_id), f"({cursor or '0-0'}",
                                           "+", count=count)
        return [(_s(e.identifier), _b(e.field_values[EVENT_FIELD])) for e in entries]

    async def read_after_many(self, reads: Sequence[tuple[str, str, int]]
                              ) -> list[list[Entry]]:
        """:meth:`read_after` for several runs (``(run_id, cursor, count)`` each) in one
        pipelined round trip: the projector folds a batch of runs at the cost of one."""
        if len(reads) == 1:
            run_id, cursor, count = reads[0]
            return [await self.read_after(run_id, cursor, count)]
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pending = [pipe.xrange(self.keys.run_events(run_id), f"({cursor or '0-0'}",
                                       "+", count=count) for run_id, cursor, count in reads]
            pages = [await request for request in pending]
        return [[(_s(e.identifier), _b(e.field_values[EVENT_FIELD])) for e in entries]
                for entries in pages]

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
        got = await self.tail_many({run_id: cursor}, block_ms, count)
        return got.get(run_id, [])

    async def tail_many(self, cursors: Mapping[str, str], block_ms: int,
                        count: int) -> dict[str, list[Entry]]:
        """One finite blocking read over several runs' streams (run id -> cursor): the runs
        that had entries after their cursor, with those entries. One ``XREAD`` on one Redis;
        on a cluster, rounds as described in the module docstring."""
        by_key = {self.keys.run_events(run_id): run_id for run_id in cursors}
        got = await self._read_streams(
            {key: cursors[run_id] or "0-0" for key, run_id in by_key.items()}, count, block_ms)
        return {by_key[_s(key)]: [(_s(e.identifier), _b(e.field_values[EVENT_FIELD]))
                                  for e in entries]
                for key, entries in got.items() if entries}

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
                    pipe.hset(self.keys.live_runs_for(run_id), {run_id: str(node)})

    async def get_meta(self, run_id: str) -> dict[str, str]:
        with map_redis_errors():
            raw = await self._w.hgetall(self.keys.run_meta(run_id))
        return {_s(k): _s(v) for k, v in raw.items()}

    async def set_status(self, run_id: str, status: str) -> bool:
        """Record the run's status; a terminal status also unregisters it as live. Unless
        the run was ended by someone else (``ended_by``, a janitor): then its status (``error``)
        and registration stay as the janitor left them (it unregisters the run itself once its
        checkpoint is written, so nothing here may take that away). Atomic on the run's keys
        (:data:`SET_STATUS_LUA`); on a cluster the registry (another slot) is updated in a
        second call, once the status is set. Returns whether it was set."""
        unregister = status in TERMINAL_STATUSES
        keys = [self.keys.run_meta(run_id)]
        if unregister and not self.cluster:
            keys.append(self.keys.live_runs_for(run_id))
        with map_redis_errors():
            done = bool(await self._set_status(keys=keys, args=[status, run_id]))
            if done and unregister and self.cluster:
                await self._w.hdel(self.keys.live_runs_for(run_id), [run_id])
        return done

    async def end_orphan(self, run_id: str, *, last_id: str, event: bytes, owner: str,
                         by: str) -> OrphanEnding:
        """Append ``event`` (the run's ``response_error`` RUN_ORPHANED) and mark the run
        ended - only if its last entry is still ``last_id``, its metadata does not say it
        ended, and it is registered to ``owner``. One Lua script on the run's keys, so of many
        janitors racing over one run exactly one appends; the others learn why not."""
        with map_redis_errors():
            reply: Any = await self._end_orphan(
                keys=[self.keys.run_events(run_id), self.keys.run_meta(run_id)],
                args=[last_id, event, owner, by, *sorted(TERMINAL_STATUSES)])
        if not isinstance(reply, list | tuple) or len(reply) != 2:
            raise AssertionError(f"end_orphan script replied {reply!r}")
        outcome, detail = _s(reply[0]), _s(reply[1])
        if outcome not in ("appended", "ended", "moved", "gone", "owner"):
            raise AssertionError(f"end_orphan script replied {reply!r}")
        return OrphanEnding(outcome, detail or None)  # type: ignore[arg-type]

    async def end_unstarted(self, run_id: str, *, start: bytes, event: bytes, owner: str,
                            by: str) -> OrphanEnding:
        """Append ``start`` (its ``response_start``) and ``event`` (``response_error``
        RUN_ORPHANED) to a run that has no event yet, and mark it ended - only if its stream
        is still empty, its metadata does not say it ended and it is registered to ``owner``
        (one Lua script on the run's keys, like :meth:`end_orphan`)."""
        with map_redis_errors():
            reply: Any = await self._end_unstarted(
                keys=[self.keys.run_events(run_id), self.keys.run_meta(run_id)],
                args=[owner, by, start, event, *sorted(TERMINAL_STATUSES)])
        outcome, detail = _s(reply[0]), _s(reply[1])
        if outcome not in ("appended", "ended", "moved", "gone", "owner"):
            raise AssertionError(f"end_unstarted script replied {reply!r}")
        return OrphanEnding(outcome, detail or None)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ node leases, live runs

    async def register_live(self, run_id: str, node_id: str) -> None:
        with map_redis_errors():
            await self._w.hset(self.keys.live_runs_for(run_id), {run_id: node_id})

    async def unregister_live(self, run_id: str) -> None:
        with map_redis_errors():
            await self._w.hdel(self.keys.live_runs_for(run_id), [run_id])

    async def live_runs(self) -> dict[str, str]:
        """run id -> node id of every run registered live (every shard, one pipeline)."""
        out: dict[str, str] = {}
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pending = [pipe.hgetall(key) for key in self.keys.live_shards]
            for request in pending:
                out.update({_s(k): _s(v) for k, v in (await request).items()})
        return out

    async def migrate_legacy_live(self) -> int:
        """Move the runs of the pre-sharding registry (``<prefix>:live``) into their shards,
        so an upgrade loses none; returns how many moved (0 once done: one HGETALL)."""
        legacy = self.keys.legacy_live_runs
        with map_redis_errors():
            raw = await self._w.hgetall(legacy)
            if not raw:
                return 0
            async with self._w.pipeline(transaction=False) as pipe:
                for run_id, node in raw.items():
                    pipe.hset(self.keys.live_runs_for(_s(run_id)), {run_id: node})
            await self._w.hdel(legacy, list(raw))
        log.info("moved %d live runs from %s into %d shards", len(raw), legacy, self.keys.shards)
        return len(raw)

    async def refresh_lease(self, node_id: str, ttl_s: int) -> bool:
        """(Re)write the node's lease for ``ttl_s`` seconds; returns whether it was still
        there (``False``: it had lapsed, or this is its first write). One ``SET ... GET``."""
        with map_redis_errors():
            before = await self._w.set(self.keys.node_lease(node_id), b"1", ex=ttl_s, get=True)
        return before is not None

    async def lease_alive(self, node_id: str) -> bool:
        with map_redis_errors():
            return await self._w.exists([self.keys.node_lease(node_id)]) > 0

    # ------------------------------------------------------------------ nodes: control, tail

    async def send_control(self, node_id: str, fields: Mapping[str, str], *,
                           maxlen: int = 1000, ttl_s: int = 3600) -> str:
        """Append a control entry (``kind``: ``cancel`` with ``run_id``, or ``wake``) to
        ``node_id``'s control stream. Capped (approximately ``maxlen``) and expiring: a node
        that went away leaves nothing behind for long, and a live one reads it at once."""
        key = self.keys.node_control(node_id)
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                added = pipe.xadd(key, {k.encode(): v.encode() for k, v in fields.items()},
                                  trim_strategy=PureToken.MAXLEN, threshold=maxlen,
                                  trim_operator=PureToken.APPROXIMATELY)
                pipe.expire(key, ttl_s)
            return _s(await added or b"")

    async def read_node(self, node_id: str, control_cursor: str, runs: Mapping[str, str],
                        count: int, block_ms: int
                        ) -> tuple[list[tuple[str, dict[str, str]]], dict[str, list[Entry]]]:
        """One read of a node's multiplexed tail: its control stream after
        ``control_cursor`` and every watched run's stream after its cursor (run id ->
        cursor). Returns (control entries, run id -> new entries).

        One Redis: a single ``XREAD`` over all of them, blocking up to ``block_ms``
        (clamped), so one connection per node serves every remote subscriber; a ``wake``
        entry on the control stream ends it early. A cluster: keys in different slots cannot
        share one command (``CROSSSLOT``, even on one node), so with runs to read it is one
        non-blocking round, one ``XREAD`` per key pipelined (coredis sends one batch per
        cluster node), and the caller polls (``block_ms`` is ignored); with none, a blocking
        read of the control stream alone."""
        control_key = self.keys.node_control(node_id)
        by_key = {self.keys.run_events(run_id): run_id for run_id in runs}
        streams = {control_key: control_cursor or "0-0"}
        streams.update({key: runs[run_id] or "0-0" for key, run_id in by_key.items()})
        if self.cluster and runs:
            got = await self._read_round(streams, count, None)
        else:  # one Redis, or a cluster with only the control stream (one key, one slot)
            with map_redis_errors():
                got = dict(await self._xread(self._r, streams, count, self._block(block_ms),
                                             None) or {})
        control: list[tuple[str, dict[str, str]]] = []
        entries: dict[str, list[Entry]] = {}
        for raw_key, found in got.items():
            key = _s(raw_key)
            if key == control_key:
                control = [(_s(e.identifier), _fields(e)) for e in found]
            elif found and key in by_key:
                entries[by_key[key]] = [(_s(e.identifier), _b(e.field_values[EVENT_FIELD]))
                                        for e in found]
        return control, entries

    # -- security: per-tenant run slots (actors/admission.py)

    async def tenant_acquire(self, tenant: str, run_id: str, *, limit: int, now_ms: int,
                             ttl_ms: int) -> bool:
        """Take a slot for ``run_id``, expiring ``ttl_ms`` from now unless refreshed, unless
        ``limit`` unexpired ones are taken."""
        with map_redis_errors():
            reply: Any = await self._tenant_acquire(
                keys=[self.keys.tenant_runs(tenant)],
                args=[now_ms, now_ms + ttl_ms, limit, run_id, 4 * ttl_ms])
        return bool(reply)

    async def tenant_release(self, tenant: str, run_id: str) -> None:
        with map_redis_errors():
            await self._w.zrem(self.keys.tenant_runs(tenant), [run_id])

    async def tenant_refresh(self, slots: Mapping[str, Sequence[str]], *, now_ms: int,
                             ttl_ms: int) -> None:
        """Push the expiry of these (tenant -> run ids) slots, of runs still live here, on."""
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                for tenant, run_ids in slots.items():
                    key = self.keys.tenant_runs(tenant)
                    pipe.zadd(key, {r: now_ms + ttl_ms for r in run_ids})
                    pipe.pexpire(key, 4 * ttl_ms)

    # ------------------------------------------------------------------ persistence queue

    async def ensure_group(self) -> None:
        """``XGROUP CREATE <shard> cody-projector 0 MKSTREAM`` on every persist shard (an
        existing group is fine), then move any pre-sharding queue into the shards."""
        for stream in self.keys.persist_streams:
            # BUSYGROUP: created at an earlier start or by another node
            with map_redis_errors(), suppress(StreamDuplicateConsumerGroupError):
                await self._w.xgroup_create(stream, self.keys.projector_group, "0",
                                            mkstream=True)
        await self.migrate_legacy_persist()

    async def migrate_legacy_persist(self, *, page: int = 500) -> int:
        """Copy every checkpoint of the pre-sharding queue (``<prefix>:persist``) into its
        run's shard and delete the old stream; returns how many were copied.

        Every entry is copied, read or not, acked or not: a checkpoint persisted twice changes
        nothing (the store keeps the highest seq), one left behind would be lost. The old
        stream is deleted only if nothing was added to it meanwhile; otherwise the copy goes
        on from there. Safe when several nodes do it at once (at worst, duplicates)."""
        legacy = self.keys.legacy_persist_stream
        copied = 0
        with map_redis_errors():
            if (await self._w.type(legacy) or b"none") != b"stream":
                return 0
            cursor = "-"
            for _ in range(10_000):
                entries = await self._w.xrange(legacy, cursor, "+", count=page)
                if entries:
                    async with self._w.pipeline(transaction=False) as pipe:
                        for e in entries:
                            fields = _fields(e)
                            if "run_id" in fields and fields.get("seq", "").isdigit():
                                self._checkpoint(pipe, fields["run_id"], int(fields["seq"]))
                                copied += 1
                    cursor = f"({_s(entries[-1].identifier)}"
                    continue
                last = cursor[1:] if cursor != "-" else "0-0"
                if await self._delete_if_last(keys=[legacy], args=[last]) != -1:
                    break
        if copied:
            log.info("moved %d checkpoints from %s into %d shards", copied, legacy,
                     self.keys.shards)
        return copied

    async def read_checkpoints(self, consumer: str, count: int,
                               block_ms: int) -> list[Checkpoint]:
        """New checkpoints for ``consumer`` from every shard (one finite blocking read, see
        the module docstring); malformed entries are acked and dropped, so they are not taken
        over again and again. ``count`` bounds each shard's share."""
        group = self.keys.projector_group
        got = await self._read_streams({key: ">" for key in self.keys.persist_streams},
                                       count, block_ms, (group, consumer))
        return await self._checkpoints(
            (self._shard_of_key[_s(key)], entry) for key, entries in got.items()
            for entry in entries)

    async def claim_checkpoints(self, consumer: str, min_idle_ms: int,
                                count: int) -> list[Checkpoint]:
        """Take over up to ``count`` checkpoints pending longer than ``min_idle_ms``
        (XAUTOCLAIM, shard by shard): what a crashed projector had read but not acked."""
        found: list[tuple[int, StreamEntry]] = []
        group = self.keys.projector_group
        with map_redis_errors():
            for shard, stream in enumerate(self.keys.persist_streams):
                start: bytes | str = "0-0"
                for _ in range(16):  # bounded: each call scans at most count * 10 PEL entries
                    reply: Any = await self._w.xautoclaim(stream, group, consumer, min_idle_ms,
                                                     start, count=count - len(found))
                    start, entries = reply[0], reply[1]
                    # Redis 6.2 gives nil for deleted entries
                    found += [(shard, e) for e in entries if isinstance(e, StreamEntry)]
                    if _s(start) == "0-0" or len(found) >= count:
                        break
                if len(found) >= count:
                    break
        return await self._checkpoints(found)

    async def _checkpoints(self, entries: Iterable[tuple[int, StreamEntry]]
                           ) -> list[Checkpoint]:
        good: list[Checkpoint] = []
        bad: list[Checkpoint] = []
        for shard, entry in entries:
            fields = _fields(entry)
            entry_id = _s(entry.identifier)
            try:
                good.append(Checkpoint(entry_id, fields["run_id"], int(fields["seq"]), shard))
            except (KeyError, ValueError):
                log.warning("persist queue: dropping malformed entry %s %r", entry_id, fields)
                bad.append(Checkpoint(entry_id, "", 0, shard))
        await self.ack(bad)
        return good

    async def ack(self, checkpoints: Sequence[Checkpoint], *, retain: Sequence[str] = (),
                  ttl_s: int = 0) -> None:
        """XACK: these checkpoints are done (persisted, or dropped as malformed). With
        ``retain``, those (terminal, persisted) runs' keys get ``ttl_s`` first, in the same
        pipelined round trip (as :meth:`set_retention`)."""
        if not checkpoints and not retain:
            return
        by_shard: dict[int, list[str]] = defaultdict(list)
        for c in checkpoints:
            by_shard[c.shard].append(c.entry_id)
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                for run_id in retain:
                    for key in self.keys.run_keys(run_id):
                        pipe.expire(key, ttl_s)
                for shard, ids in by_shard.items():
                    pipe.xack(self.keys.persist_shard(shard), self.keys.projector_group, ids)

    async def pending_count(self) -> int:
        """Checkpoints read by some projector and not acked yet, over every shard."""
        group = self.keys.projector_group
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pending = [pipe.xpending(stream, group) for stream in self.keys.persist_streams]
            return sum([int(getattr(await r, "pending", 0)) for r in pending])

    async def trim_persist(self) -> int:
        """Drop persist entries that every projector has read and acked; returns how many.

        The persist shards are queues, not logs: without this they grow by a few entries per
        run forever. In each shard only entries below both the oldest pending entry and the
        group's last-delivered id go, so no checkpoint is lost (trimming is by millisecond, so
        a few done entries may stay until the next call).
        """
        group = self.keys.projector_group
        trimmed = 0
        with map_redis_errors():
            for stream in self.keys.persist_streams:
                summary = await self._w.xpending(stream, group)
                floor: tuple[int, int] | None = None
                for info in await self._w.xinfo_groups(stream):
                    delivered = info.get(b"last-delivered-id")
                    if info.get(b"name") == group.encode() and isinstance(delivered, bytes):
                        floor = entry_key(delivered.decode())
                if floor is None:
                    continue
                oldest = getattr(summary, "minimum_identifier", None)
                if isinstance(oldest, bytes | str):
                    floor = min(floor, entry_key(_s(oldest)))
                if floor[0] == 0:
                    continue
                trimmed += await self._w.xtrim(stream, PureToken.MINID, floor[0])
        return trimmed

    # -- console: the projector's lag, for /metrics

    async def oldest_unpersisted_ms(self) -> int | None:
        """The time (ms, from its entry id) of the oldest checkpoint no projector has acked:
        the oldest pending one, or the first one after the group's last-delivered id; over
        every shard. ``None``: nothing waits. Three small commands per shard, for a scrape."""
        group = self.keys.projector_group
        oldest: int | None = None
        with map_redis_errors():
            for stream in self.keys.persist_streams:
                candidates: list[int] = []
                summary = await self._w.xpending(stream, group)
                minimum = getattr(summary, "minimum_identifier", None)
                if isinstance(minimum, bytes | str):
                    candidates.append(entry_key(_s(minimum))[0])
                delivered = "0-0"
                for info in await self._w.xinfo_groups(stream):
                    last = info.get(b"last-delivered-id")
                    if info.get(b"name") == group.encode() and isinstance(last, bytes):
                        delivered = last.decode()
                after = await self._w.xrange(stream, f"({delivered}", "+", count=1)
                if after:
                    candidates.append(entry_key(_s(after[0].identifier))[0])
                if candidates and (oldest is None or min(candidates) < oldest):
                    oldest = min(candidates)
        return oldest
