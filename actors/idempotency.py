"""Idempotency-Key records in Redis (the I/O; the rules are ``runtime/idempotency.py``).

One string key per (tenant, key) (``Keys.idempotency``: hashed, one hash tag, so fine on a
cluster), holding a JSON :class:`~runtime.idempotency.Record`:

- **claim**: one Lua script reads the key and, if it is empty, writes a *pending* record
  (with this submit's random token, expiring after ``CLAIM_TTL_S``) in the same step. Of any
  number of concurrent duplicates, on any nodes, exactly one gets the claim; the others see
  the pending record and wait for it.
- **complete**: the claimant replaces its pending record with the *done* one (the submit
  response), for ``CODY_IDEMPOTENCY_TTL_S``, only if the record is still its own (its token).
- **release**: a submit that failed deletes its pending record (again only its own), so a
  retry runs it afresh.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from runtime import (
    CLAIM_TTL_S,
    HEADER,
    Client,
    CodyError,
    IdempotencyInProgress,
    IdempotencyMismatch,
    Keys,
    Record,
    TurnAccepted,
    TurnRequest,
    decide,
    fingerprint,
    map_redis_errors,
    new_uuid,
)

log = logging.getLogger(__name__)

# KEYS: the record. ARGV: the pending record, its TTL (ms). The current value, or nil if
# this call claimed the key.
CLAIM_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS: the record. ARGV: the claimant's token, the new value ('' deletes), its TTL (ms).
# 1 if written (the record was the claimant's, or had expired), else 0.
SETTLE_LUA = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, rec = pcall(cjson.decode, cur)
  if not ok or type(rec) ~= 'table' or rec['token'] ~= ARGV[1] then return 0 end
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""

WAIT_S = 10.0
"""How long a duplicate waits for the first submit with its key to finish."""
WAIT_STEP_S = 0.02


class IdempotencyRecords:
    def __init__(self, client: Client, keys: Keys, *, ttl_s: int) -> None:
        self._w = client
        self._keys = keys
        self._ttl_ms = ttl_s * 1000
        self._claim = client.register_script(CLAIM_LUA)
        self._settle = client.register_script(SETTLE_LUA)

    async def _try_claim(self, redis_key: str, pending: Record) -> Record | None:
        """``None`` if claimed, else what the key holds."""
        with map_redis_errors():
            cur: Any = await self._claim(keys=[redis_key],
                                         args=[pending.encode(), CLAIM_TTL_S * 1000])
        if cur is None:
            return None
        try:
            return Record.decode(cur)
        except ValueError:
            log.error("idempotency: unreadable record at %s; treated as another body",
                      redis_key)
            return Record("done", "", "", {})

    async def submit_once(self, req: TurnRequest, key: str, *, tenant: str,
                          submit: Callable[[TurnRequest], Awaitable[TurnAccepted]]
                          ) -> tuple[TurnAccepted, bool]:
        """``submit(req)`` at most once per (tenant, key, body): the response, and whether it
        is a replay of an earlier submit.

        Raises:
            IdempotencyMismatch: the key holds a submit of another body.
            IdempotencyInProgress: the first submit with this key is still running after
                :data:`WAIT_S`.
            RedisUnavailable: Redis is down (nothing was submitted).
            CodyError: whatever ``submit`` raised (the claim is released).
        """
        redis_key = self._keys.idempotency(tenant, key)
        body = fingerprint(req.model_dump(mode="json", exclude_none=True))
        token = new_uuid()
        with trio.move_on_after(WAIT_S):
            while True:
                existing = await self._try_claim(redis_key, Record("pending", body, token))
                decision = decide(existing, body)
                if decision == "mismatch":
                    raise IdempotencyMismatch(
                        f"{HEADER}: this key was used for a different request body",
                        details={"field": HEADER})
                if decision == "replay":
                    assert existing is not None and existing.response is not None
                    return TurnAccepted.model_validate(existing.response), True
                if decision == "claimed":
                    break
                await trio.sleep(WAIT_STEP_S)  # pending: the first submit is under way
        if decision == "pending":
            raise IdempotencyInProgress(
                f"{HEADER}: a request with this key is still being processed; retry",
                details={"field": HEADER})
        try:
            accepted = await submit(req)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self._write(redis_key, token, "")
                except CodyError as exc:  # it expires after CLAIM_TTL_S anyway
                    log.warning("idempotency: could not release a claim: %s", exc)
            raise
        done = Record("done", body, token, accepted.model_dump(mode="json"))
        # the run exists now: its record must be written (a retry would make another), and
        # the client gets its run even if Redis is failing right now
        with trio.CancelScope(shield=True), trio.move_on_after(WAIT_S / 2):
            for attempt in range(5):
                try:
                    if not await self._write(redis_key, token, done.encode()):
                        log.warning("idempotency: the claim on a key expired during its submit")
                    break
                except CodyError as exc:
                    if not exc.infrastructure or attempt == 4:
                        log.error("idempotency: could not record a submit: %s", exc)
                        break
                await trio.sleep(0.1 * 2 ** attempt)
        return accepted, False

    async def _write(self, redis_key: str, token: str, value: str) -> bool:
        with map_redis_errors():
            return bool(await self._settle(keys=[redis_key],
                                           args=[token, value, self._ttl_ms]))
