"""The OpenAI Responses API request body for one model request of a turn.

The conversation goes in ``input`` in full on every request (``store: false``: OpenAI keeps no
state between requests, so a tool loop or a later turn resends everything). Decisions:

- Messages are "easy input" messages (``{"type": "message", "role", "content": "<text>"}``),
  for the user and the assistant alike; an assistant message with no text is left out.
- Reasoning goes back only when OpenAI can use it: an ``rs_`` id with ``encrypted_content``
  (requested through ``include`` whenever ``reasoning_effort`` is set). Reasoning from another
  provider (Anthropic signatures, redacted thinking) means nothing to OpenAI and is dropped.
- Function calls go back without their ``fc_`` item id: with ``store: false`` an item id makes
  OpenAI demand the reasoning item that preceded the call, which we may not have kept.
- A call without its output (a turn that ended mid tool loop) and an output without its call
  are both dropped: OpenAI rejects either half alone.
- ``cancelled`` and ``error`` items are Cody's own bookkeeping, never sent.

This module is pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.providers.base import ToolSpec, call_ids, wire_role
from actors.providers.settings import RequestSettings
from runtime import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    OutputItem,
    ReasoningItem,
)

_ROLES = {role: role for role in ("user", "assistant", "system", "developer")}


def _message(item: MessageItem) -> dict[str, Any] | None:
    role = wire_role(item, _ROLES)
    if role == "assistant" and not item.content:
        return None
    return {"type": "message", "role": role, "content": item.content}


def _reasoning(item: ReasoningItem) -> dict[str, Any] | None:
    if not item.encrypted_content or item.redacted or not item.id.startswith("rs_"):
        return None
    summary = [{"type": "summary_text", "text": item.content}] if item.content else []
    return {"type": "reasoning", "id": item.id, "summary": summary,
            "encrypted_content": item.encrypted_content}


def build_openai_input(items: Sequence[OutputItem]) -> list[dict[str, Any]]:
    """The ``input`` list for a conversation, in order."""
    called, answered = call_ids(items)
    out: list[dict[str, Any]] = []
    for item in items:
        entry: dict[str, Any] | None = None
        if isinstance(item, MessageItem):
            entry = _message(item)
        elif isinstance(item, ReasoningItem):
            entry = _reasoning(item)
        elif isinstance(item, FunctionCallItem):
            if item.call_id in answered:
                entry = {"type": "function_call", "call_id": item.call_id, "name": item.name,
                         "arguments": item.arguments}
        elif isinstance(item, FunctionCallOutputItem) and item.call_id in called:
            entry = {"type": "function_call_output", "call_id": item.call_id,
                     "output": item.output}
        if entry is not None:
            out.append(entry)
    return out


def build_openai_request(items: Sequence[OutputItem], tools: Sequence[ToolSpec],
                         settings: RequestSettings) -> dict[str, Any]:
    """The streamed ``POST /v1/responses`` body.

    Args:
        items: the conversation so far: earlier turns, then this turn's prompt and items.
        tools: the tools the model may call.
        settings: model name, reasoning effort, output cap.
    """
    body: dict[str, Any] = {"model": settings.model_name, "input": build_openai_input(items)}
    if tools:
        body["tools"] = [{"type": "function", "name": t.name, "description": t.description,
                          "parameters": t.parameters, "strict": False} for t in tools]
    if settings.reasoning_effort is not None:
        body["reasoning"] = {"effort": settings.reasoning_effort, "summary": "auto"}
        body["include"] = ["reasoning.encrypted_content"]
    body["max_output_tokens"] = settings.max_output_tokens
    body["store"] = False
    body["stream"] = True
    return body
