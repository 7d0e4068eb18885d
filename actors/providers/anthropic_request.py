"""The Anthropic Messages API request body for one model request of a turn.

Anthropic keeps no state between requests, so the whole conversation goes in ``messages``
every time, as alternating ``user`` / ``assistant`` turns. Decisions:

- Items map to content blocks in order: a user prompt to a ``text`` block (a user turn that
  is one text block is sent as a plain string, as Anthropic's own examples do); an agent
  message to a ``text`` block; reasoning with a signature to a ``thinking`` block (signature
  intact, as the API requires), redacted reasoning to ``redacted_thinking`` with its data; a
  function call to a ``tool_use`` block whose ``input`` is the parsed arguments (``{}`` if
  they are not a JSON object); a function output to a ``tool_result`` block in a user turn.
  Consecutive blocks of one role are merged into one turn, so a tool loop reads
  assistant [thinking, text, tool_use] / user [tool_result] / assistant [...].
- Reasoning without a signature (OpenAI's, or one cut short) is dropped: Anthropic rejects a
  thinking block it cannot verify. Empty or blank text is dropped too (Anthropic rejects
  empty text blocks; an empty answer still left its turn in the history).
- A call without its output (a turn that ended mid tool loop) and an output without its call
  are both dropped: Anthropic rejects either half alone.
- ``system`` messages go to the top-level ``system`` parameter (Anthropic has no system
  role); ``cancelled`` and ``error`` items are Cody's own bookkeeping, never sent.
- ``thinking_budget`` enables extended thinking. Anthropic wants a budget of at least 1,024
  tokens and ``max_tokens`` above it: a smaller budget is raised to 1,024, and when the
  budget reaches ``max_output_tokens`` the answer's cap is added on top of it.

This module is pure: no I/O.
"""

from __future__ import annotations

import json
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

MIN_THINKING_BUDGET = 1024
_ROLES = {role: role for role in ("user", "assistant", "system")}


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reasoning(item: ReasoningItem) -> dict[str, Any] | None:
    if item.redacted:
        if item.encrypted_content:
            return {"type": "redacted_thinking", "data": item.encrypted_content}
        return None
    if item.signature:
        return {"type": "thinking", "thinking": item.content, "signature": item.signature}
    return None


def build_anthropic_messages(items: Sequence[OutputItem]) -> tuple[list[dict[str, Any]],
                                                                      list[str]]:
    """The ``messages`` turns for a conversation, and the texts of its system messages."""
    called, answered = call_ids(items)
    turns: list[dict[str, Any]] = []
    system: list[str] = []

    def add(role: str, block: dict[str, Any]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].append(block)
        else:
            turns.append({"role": role, "content": [block]})

    for item in items:
        if isinstance(item, MessageItem):
            if not item.content.strip():
                continue
            role = wire_role(item, _ROLES)
            if role == "system":
                system.append(item.content)
            else:
                add(role, {"type": "text", "text": item.content})
        elif isinstance(item, ReasoningItem):
            block = _reasoning(item)
            if block is not None:
                add("assistant", block)
        elif isinstance(item, FunctionCallItem):
            if item.call_id in answered:
                add("assistant", {"type": "tool_use", "id": item.call_id, "name": item.name,
                                  "input": _input(item.arguments)})
        elif isinstance(item, FunctionCallOutputItem) and item.call_id in called:
            add("user", {"type": "tool_result", "tool_use_id": item.call_id,
                         "content": item.output, "is_error": not item.success})
    for turn in turns:
        content = turn["content"]
        if turn["role"] == "user" and len(content) == 1 and content[0]["type"] == "text":
            turn["content"] = content[0]["text"]
    return turns, system


def build_anthropic_request(items: Sequence[OutputItem], tools: Sequence[ToolSpec],
                            settings: RequestSettings) -> dict[str, Any]:
    """The streamed ``POST /v1/messages`` body.

    Args:
        items: the conversation so far: earlier turns, then this turn's prompt and items.
        tools: the tools the model may call.
        settings: model name, thinking budget, output cap.
    """
    messages, system = build_anthropic_messages(items)
    max_tokens = settings.max_output_tokens
    budget: int | None = None
    if settings.thinking_budget is not None:
        budget = max(settings.thinking_budget, MIN_THINKING_BUDGET)
        if max_tokens <= budget:
            max_tokens += budget
    body: dict[str, Any] = {"model": settings.model_name, "max_tokens": max_tokens,
                            "messages": messages}
    if system:
        body["system"] = "\n\n".join(system)
    if tools:
        body["tools"] = [{"name": t.name, "description": t.description,
                          "input_schema": t.parameters} for t in tools]
    if budget is not None:
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["stream"] = True
    return body
