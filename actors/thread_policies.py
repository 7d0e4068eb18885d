"""Thread policies on Redis: admission, the queue, promotion, interrupts (the I/O).

The rules are ``runtime/thread_policy.py``; here they run as Lua scripts on one thread's keys
(``Keys.thread_keys``: one hash tag, ``{<thread_id>}``, so one slot on a cluster), which makes
"is the thread busy, who is next" one atomic step however many nodes submit at once:

- ``ADMIT`` (at submit): start, refuse, queue, or queue first and name the runs to interrupt;
- ``RELEASE`` (when a run ends, here or by the janitor): forget the run and, if nothing runs
  any more, promote the head of the queue, returning it with the runs that last ended.

A queued run's actor waits in this process (:meth:`ThreadPolicies.wait_turn`) until it is
promoted: at once when the run ahead of it ended here (the release names it), else within
``thread_poll_ms`` (:meth:`ThreadPolicies.run` polls the membership of every waiting run in
one pipeline). When its turn comes it reads its history, then runs like any other.

Interrupting a run on another node: its id goes to that node's ``interrupts`` list, which the
node's poller empties each round and cancels what it names. A run on a node that died is not
interrupted: the janitor ends it ``RUN_ORPHANED`` within the lease and releases it, and the
queue moves on (:meth:`ThreadPolicies.release_ended`).

Releasing comes *before* a run is unregistered as live (``ActorLog.set_status``): if a node
dies between the two, its janitor finds the run ended but registered and releases it again
(the release is idempotent), so a thread is never held by a run nobody will end.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from runtime import (
    ENDED_KEPT,
    INTERRUPTED,
    STRATEGIES,
    Admission,
    Client,
    CodyError,
    Keys,
    OutputItem,
    Promotion,
    RedisUnavailable,
    Strategy,
    map_redis_errors,
    parse_admission,
    parse_promotion,
)

log = logging.getLogger(__name__)

# KEYS: runs (hash run -> node), running (set), queue (list). ARGV: run, node, strategy.
# Reply: {decision, position, run, node, ...} (the running runs, for busy and interrupt).
ADMIT_LUA = """
local run, node, strategy = ARGV[1], ARGV[2], ARGV[3]
local busy = redis.call('SCARD', KEYS[2]) > 0 or redis.call('LLEN', KEYS[3]) > 0
if strategy == 'parallel' or not busy then
  redis.call('HSET', KEYS[1], run, node)
  redis.call('SADD', KEYS[2], run)
  return {'start', '0'}
end
local out = {'busy', '0'}
for _, r in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  out[#out + 1] = r
  out[#out + 1] = redis.call('HGET', KEYS[1], r) or ''
end
if strategy == 'reject' then return out end
redis.call('HSET', KEYS[1], run, node)
if strategy == 'enqueue' then
  return {'queued', tostring(redis.call('RPUSH', KEYS[3], run))}
end
redis.call('LPUSH', KEYS[3], run)
out[1] = 'interrupt'
out[2] = '1'
return out
"""

# KEYS: runs, running, queue, ended. ARGV: run, how many ended ids to keep, their TTL (s).
# Reply: {} or {promoted run, its node, ended run ids newest first...}.
RELEASE_LUA = """
local run = ARGV[1]
local known = redis.call('HDEL', KEYS[1], run)
local was = redis.call('SREM', KEYS[2], run)
redis.call('LREM', KEYS[3], 0, run)
if known == 1 and was == 1 then
  redis.call('LREM', KEYS[4], 0, run)
  redis.call('LPUSH', KEYS[4], run)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
if redis.call('SCARD', KEYS[2]) == 0 then
  local head = redis.call('LPOP', KEYS[3])
  if head then
    redis.call('SADD', KEYS[2], head)
    local out = {head, redis.call('HGET', KEYS[1], head) or ''}
    for _, r in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do out[#out + 1] = r end
    return out
  end
end
return {}
"""

# KEYS: a list. Everything in it, emptied in the same step.
POP_ALL_LUA = """
local v = redis.call('LRANGE', KEYS[1], 0, -1)
if #v > 0 then redis.call('DEL', KEYS[1]) end
return v
"""

INTERRUPTS_TTL_S = 3600
"""A node's interrupt list expires if the node never reads it (it died)."""
RELEASE_RETRY_S = 5.0
"""A release that meets a Redis outage is retried this long (then the janitor does it)."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Interruptible(Protocol):
    """What the policies need of a run actor."""

    def cancel(self, reason: str) -> None: ...


HistoryLoader = Callable[[str, Sequence[str]], Awaitable[tuple[OutputItem, ...]]]
"""(thread id, runs that just ended there) -> the history a promoted run starts with."""


@dataclass(slots=True, eq=False)
class _Waiter:
    thread_id: str
    event: trio.Event = field(default_factory=trio.Event)
    promotion: Promotion | None = None

    def promote(self, promotion: Promotion) -> None:
        self.promotion = promotion
        self.event.set()


class ThreadPolicies:
    """One per runtime: admits runs to threads, holds this node's queued runs until their
    turn, releases runs as they end, and carries interrupts between nodes."""

    def __init__(self, client: Client, keys: Keys, *, node_id: str,
                 find_actor: Callable[[str], Interruptible | None], poll_ms: int = 100,
                 ended_ttl_s: int = 86_400) -> None:
        self._w = client
        self._keys = keys
        self.node_id = node_id
        self._find_actor = find_actor
        self._poll_s = poll_ms / 1000
        self._ended_ttl_s = ended_ttl_s
        self._admit = client.register_script(ADMIT_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._pop_all = client.register_script(POP_ALL_LUA)
        self._held: dict[str, str] = {}
        """run id -> thread id of this node's runs admitted and not yet released."""
        self._waiting: dict[str, _Waiter] = {}

    # ------------------------------------------------------------------ submit

    async def admit(self, run_id: str, thread_id: str, strategy: Strategy) -> Admission:
        """The atomic decision for a new run on ``thread_id``. A run that may start or must
        wait is held (released when it ends); a waiting one is registered to be woken."""
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown multitask strategy {strategy!r}")
        with map_redis_errors():
            reply: Any = await self._admit(keys=self._keys.thread_keys(thread_id)[:3],
                                      args=[run_id, self.node_id, strategy])
        admission = parse_admission([_s(v) for v in reply])
        if admission.decision != "busy":
            self._held[run_id] = thread_id
        if admission.waits:
            self._waiting[run_id] = _Waiter(thread_id)
        return admission

    async def interrupt(self, runs: Sequence[tuple[str, str]]) -> None:
        """Abort ``runs`` (run id, node): here at once, elsewhere through the node's list."""
        remote: dict[str, list[str]] = {}
        for run_id, node in runs:
            if node == self.node_id:
                actor = self._find_actor(run_id)
                if actor is not None:
                    actor.cancel(INTERRUPTED)
            elif node:
                remote.setdefault(node, []).append(run_id)
        if not remote:
            return
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                for node, run_ids in remote.items():
                    key = self._keys.node_interrupts(node)
                    pipe.rpush(key, run_ids)
                    pipe.expire(key, INTERRUPTS_TTL_S)

    async def forget_refused(self, run_id: str) -> None:
        """A run refused after its metadata was written (``reject``): remove its trace."""
        with map_redis_errors():
            async with self._w.pipeline(transaction=False) as pipe:
                pipe.delete([self._keys.run_meta(run_id)])
                pipe.hdel(self._keys.live_runs_for(run_id), [run_id])

    async def abandon(self, run_id: str) -> None:
        """A run admitted but never started (its submit failed after admission)."""
        self._waiting.pop(run_id, None)
        await self.release(run_id)

    # ------------------------------------------------------------------ waiting

    def waiting(self, run_id: str) -> bool:
        return run_id in self._waiting

    async def wait_turn(self, actor: Any, load_history: HistoryLoader) -> None:
        """Hold a queued run until its turn (or its cancel), then give it its history.

        ``actor`` is a :class:`~actors.run_actor.RunActor`. Cancelled while waiting, it starts
        at once and ends ``aborted`` without calling the model. Its history cannot be read
        (Redis or the store down past :data:`RELEASE_RETRY_S` of retries): cancelled too.
        Never raises (it runs in the runs nursery): a bug here aborts this run only."""
        try:
            await self._wait_turn(actor, load_history)
        except Exception:
            log.exception("run %s: waiting for its turn failed", actor.run_id)
            actor.cancel("could not start: internal error")

    async def _wait_turn(self, actor: Any, load_history: HistoryLoader) -> None:
        waiter = self._waiting.get(actor.run_id)
        if waiter is None:
            return
        try:
            if not waiter.event.is_set():
                async with trio.open_nursery() as nursery:
                    async def until(event: trio.Event) -> None:
                        await event.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(until, waiter.event)
                    nursery.start_soon(until, actor.cancel_requested)
        finally:
            self._waiting.pop(actor.run_id, None)
        promotion = waiter.promotion
        if promotion is None:  # cancelled while queued
            return
        delay = 0.05
        deadline = trio.current_time() + RELEASE_RETRY_S
        while True:
            try:
                history = await load_history(waiter.thread_id, promotion.ended)
                break
            except CodyError as exc:
                if not exc.infrastructure or trio.current_time() >= deadline:
                    log.warning("run %s: cannot read its thread's history: %s",
                                actor.run_id, exc)
                    actor.cancel("could not read the thread's history")
                    return
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
        actor.replace_history(history)

    # ------------------------------------------------------------------ ending

    async def release(self, run_id: str) -> None:
        """A run of this node ended: free its place on the thread (promoting the next).

        Raises:
            RedisUnavailable: still down after :data:`RELEASE_RETRY_S`; the run stays
                registered, and the janitor releases it when it settles the run.
        """
        thread_id = self._held.get(run_id)
        if thread_id is None:
            return
        await self.release_on(thread_id, run_id)
        self._held.pop(run_id, None)

    async def release_ended(self, run_id: str) -> None:
        """The janitor ended or settled ``run_id`` (of any node): release it on its thread
        (named by the run's metadata; a run without one holds none)."""
        self._held.pop(run_id, None)
        with map_redis_errors():
            thread_id = await self._w.hget(self._keys.run_meta(run_id), "thread_id")
        if thread_id:
            await self.release_on(_s(thread_id), run_id)

    async def release_on(self, thread_id: str, run_id: str) -> Promotion | None:
        """The release script for ``run_id`` on ``thread_id``; the run promoted, if any
        (woken here at once if it waits here)."""
        delay = 0.05
        deadline = trio.current_time() + RELEASE_RETRY_S
        while True:
            try:
                with map_redis_errors():
                    reply: Any = await self._release(
                        keys=self._keys.thread_keys(thread_id),
                        args=[run_id, ENDED_KEPT, self._ended_ttl_s])
                break
            except RedisUnavailable:
                if trio.current_time() >= deadline:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)
        promotion = parse_promotion([_s(v) for v in reply])
        if promotion is not None:
            self._wake(promotion)
        return promotion

    def _wake(self, promotion: Promotion) -> None:
        waiter = self._waiting.get(promotion.run_id)
        if waiter is not None and waiter.promotion is None:
            waiter.promote(promotion)

    # ------------------------------------------------------------------ the poller

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Every ``thread_poll_ms``: wake the waiting runs that were promoted (by a release
        on another node), and cancel the runs other nodes asked to interrupt. An outage is
        waited out (the next round tries again)."""
        task_status.started()
        while True:
            await trio.sleep(self._poll_s)
            try:
                await self.poll()
            except CodyError as exc:
                if not exc.infrastructure:
                    raise
                log.debug("thread policies: poll skipped: %s", exc)

    async def poll(self) -> None:
        """One round (see :meth:`run`)."""
        waiting = [(run_id, w) for run_id, w in self._waiting.items() if w.promotion is None]
        with map_redis_errors():
            promoted: list[tuple[str, _Waiter]] = []
            if waiting:
                async with self._w.pipeline(transaction=False) as pipe:
                    checks = [pipe.sismember(self._keys.thread_keys(w.thread_id)[1], run_id)
                              for run_id, w in waiting]
                promoted = [(run_id, w) for (run_id, w), check
                            in zip(waiting, checks, strict=True) if await check]
            for run_id, w in promoted:
                ended = await self._w.lrange(self._keys.thread_keys(w.thread_id)[3], 0, -1)
                self._wake(Promotion(run_id, self.node_id, tuple(_s(r) for r in ended)))
            asked: Any = await self._pop_all(keys=[self._keys.node_interrupts(self.node_id)])
        for run_id in asked or ():
            actor = self._find_actor(_s(run_id))
            if actor is not None:
                actor.cancel(INTERRUPTED)
