"""Idempotent submits: what an ``Idempotency-Key`` means (pure: no trio, no Redis).

A client that timed out on ``POST /runs`` cannot know whether its run was made. With an
``Idempotency-Key`` it retries safely: the first submit with a key *claims* it, and its
response is *recorded* under the key for ``CODY_IDEMPOTENCY_TTL_S`` (24 h); every later
submit with that key and the same body gets the recorded response (``200``, same ``run_id``),
one with another body ``422 IDEMPOTENCY_MISMATCH``. The record lives in Redis
(``actors/idempotency.py``), so it holds across nodes; this module says what a key, a body's
fingerprint, a record and the comparison are.

Decisions where the issue is silent:

- *The same body* is the same request once validated: the canonical JSON (sorted keys, no
  whitespace, absent and ``null`` alike, ids lower-cased) of the ``TurnRequest``, hashed with
  SHA-256. Key order, spacing or an explicit ``null`` do not make a different body.
- A key is 1 to :data:`MAX_KEY_LENGTH` printable ASCII characters without spaces (what fits
  an HTTP header unquoted, e.g. a uuid or a ULID); anything else is ``400`` naming the header.
- Keys are per tenant: two tenants' equal keys are two records.
- Only a submit that was accepted is recorded. One that failed (400, 409, 503, ...) releases
  its claim, so a retry runs it again: a client must be able to fix its request or wait out
  an outage with the same key.
- A duplicate that arrives while the first is still being submitted (a claim *pending*)
  waits for it, briefly (a submit takes milliseconds), then gets the recorded response; if the
  first takes longer than that, ``409 IDEMPOTENCY_IN_PROGRESS`` with ``Retry-After``. A
  pending claim expires after :data:`CLAIM_TTL_S`, so a node that dies mid-submit does not
  hold a key for a day.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from runtime.errors import ValidationFailed

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
CLAIM_TTL_S = 60
"""A pending claim (a submit under way) expires after this, should its node die."""
_KEY = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$")


def check_key(value: str | None) -> str | None:
    """The header's value if it is a valid key (``None`` if absent).

    Raises:
        ValidationFailed: empty, too long, or not printable ASCII (field ``Idempotency-Key``).
    """
    if value is None:
        return None
    if not _KEY.match(value):
        raise ValidationFailed(
            f"{HEADER}: must be 1 to {MAX_KEY_LENGTH} printable ASCII characters, no spaces",
            details={"field": HEADER})
    return value


def canonical_json(body: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(body: Any) -> str:
    """SHA-256 (hex) of the body's canonical JSON: what "the same body" compares."""
    return hashlib.sha256(canonical_json(body).encode()).hexdigest()


State = Literal["pending", "done"]


@dataclass(frozen=True, slots=True)
class Record:
    """What Redis holds under a key: who claimed it (``token``), for which body, and once
    ``done`` the submit response to give back."""

    state: State
    fingerprint: str
    token: str
    response: dict[str, Any] | None = None

    def encode(self) -> str:
        return canonical_json({"state": self.state, "fingerprint": self.fingerprint,
                               "token": self.token, "response": self.response})

    @classmethod
    def decode(cls, raw: bytes | str) -> Record:
        """Raises:
            ValueError: not a record (a corrupt or foreign value).
        """
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("state") not in ("pending", "done") \
                or not isinstance(data.get("fingerprint"), str) \
                or not isinstance(data.get("token"), str):
            raise ValueError(f"not an idempotency record: {raw!r}")
        response = data.get("response")
        if data["state"] == "done" and not isinstance(response, dict):
            raise ValueError(f"a done idempotency record without a response: {raw!r}")
        return cls(data["state"], data["fingerprint"], data["token"],
                   response if isinstance(response, dict) else None)


Decision = Literal["claimed", "replay", "mismatch", "pending"]


def decide(existing: Record | None, body_fingerprint: str) -> Decision:
    """What a submit with a key does, given what the key holds.

    ``claimed``: nothing was there and the claim is ours (submit, then record). ``replay``:
    the same body was accepted before (answer its response). ``mismatch``: another body holds
    the key (422). ``pending``: the same body is being submitted right now (wait for it).
    """
    if existing is None:
        return "claimed"
    if existing.fingerprint != body_fingerprint:
        return "mismatch"
    return "replay" if existing.state == "done" else "pending"
