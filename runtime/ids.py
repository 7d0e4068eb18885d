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
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True
