"""Identifiers: uuids, W3C trace context, and the ids the runtime derives for its own items."""

from __future__ import annotations

import os
import re
import uuid


def new_uuid() -> str:
    return str(uuid.UUID(bytes=os.urandom(16), version=4))


def new_traceparent() -> str:
    """A sampled W3C traceparent with a fresh trace id (one trace per run)."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


def parse_traceparent(value: str | None) -> str | None:
    """An incoming W3C ``traceparent`` as the run's trace context, or ``None`` (start a new
    trace) when it is absent or invalid, as W3C Trace Context says a receiver must: version
    ``ff``, an all-zero trace or parent id, or a malformed value are ignored. A future version
    is read as version 00 (its first four fields), which is what the run then carries."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or set(trace_id) == {"0"} \
            or set(parent_id) == {"0"}:
        return None
    return f"00-{trace_id}-{parent_id}-{flags}"


def child_traceparent(traceparent: str) -> str:
    """The traceparent a provider request carries: the run's trace id and flags, a new span
    id (the request is a child span of the run)."""
    _version, trace_id, _parent, flags = traceparent.split("-")[:4]
    return f"00-{trace_id}-{os.urandom(8).hex()}-{flags}"


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
