"""Identifiers: uuids, W3C trace context, and the ids the runtime derives for its own items."""

from __future__ import annotations

import os
import uuid


def new_uuid() -> str:
    return str(uuid.UUID(bytes=os.urandom(16), version=4))


def new_traceparent() -> str:
    """A sampled W3C traceparent with a fresh trace id (one trace per run)."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def prompt_item_id(run_id: str) -> str:
    """The user's prompt is the first item of every Response; its id is derived from the run."""
    return f"{run_id}:prompt"


def tool_output_item_id(call_id: str) -> str:
    """A tool's output item is derived from its call, so it is the same on every replay."""
    return f"{call_id}:output"


def is_uuid(value: str) -> bool:
    return canonical_uuid(value) is not None


_UUID_HEX = frozenset("0123456789abcdef")


def canonical_uuid(value: object) -> str | None:
    """The one spelling of a uuid (lower case, hyphenated), or ``None`` if ``value`` is none.

    ``uuid.UUID`` accepts ``{u}``, ``urn:uuid:u``, upper case and the bare 32 hex digits; all of
    them name the same id, so every id a client sends is canonicalised before it is used as a
    key or compared: otherwise ``{u}`` and ``u`` would make two runs (the duplicate check is
    by string) and the braces would end up in Redis keys. Nothing else is accepted (``uuid``
    itself also strips whitespace and ``-`` anywhere: ``" u "`` is refused here).
    """
    if not isinstance(value, str) or len(value) > 45:
        return None
    raw = value.lower()
    if raw.startswith("urn:uuid:"):
        raw = raw[9:]
    if raw.startswith("{") and raw.endswith("}"):
        raw = raw[1:-1]
    if len(raw) == 36:
        if [raw[8], raw[13], raw[18], raw[23]] != ["-"] * 4:
            return None
        digits = raw.replace("-", "")
    elif len(raw) == 32:
        digits = raw
    else:
        return None
    if len(digits) != 32 or not _UUID_HEX.issuperset(digits):
        return None
    return str(uuid.UUID(hex=digits))
