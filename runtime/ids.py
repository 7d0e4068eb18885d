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
    try:
        uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return False
    return True
