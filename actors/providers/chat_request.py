"""The Chat Completions request body for one model request of a turn (``openai-chat``).

Chat Completions servers keep no state between requests, so the whole conversation goes in
``messages`` every time. Decisions:

- A user prompt is a ``user`` message, a system message a ``system`` one (OpenAI's
  ``developer`` role is not sent: most compatible servers do not know it), with the text as a
  plain string.
- What the agent produced in one model response (its text and its tool calls, in order) is one
  ``assistant`` message: ``content`` the text (``null`` when it only called tools) and
  ``tool_calls`` the calls, each ``{"id", "type": "function", "function": {"name",
  "arguments"}}``. An assistant message with neither text nor calls is left out.
- A tool output is a ``tool`` message with its ``tool_call_id``. A call without an output
  after it (a turn that ended mid tool loop) and an output without a call before it are both
  dropped: servers reject either half alone.
- Reasoning is not sent back: Chat Completions has no place for it, and servers that stream
  ``reasoning_content`` reject it in input messages (DeepSeek) or ignore it.
- ``cancelled`` and ``error`` items are Cody's own bookkeeping, never sent.
- Tools are ``{"type": "function", "function": {"name", "description", "parameters"}}``.
- ``stream: true`` with ``stream_options: {"include_usage": true}``, so the last chunk carries
  the usage; ``max_completion_tokens`` for the output cap (OpenAI's name since the reasoning
  models; compatible servers accept it or ignore it); ``reasoning_effort`` only when the model
  asks for reasoning (a server that does not reason may reject the parameter).

This module is pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from actors.providers.base import ToolSpec, wire_role
from actors.providers.settings import RequestSettings
from runtime import FunctionCallItem, FunctionCallOutputItem, MessageItem, OutputItem

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


def build_chat_messages(items: Sequence[OutputItem]) -> list[dict[str, Any]]:
    """The ``messages`` list for a conversation, in order."""
    # a call goes only if an output follows it, an output only if its call came before
    called: set[str] = set()
    kept_outputs: set[int] = set()
    for n, item in enumerate(items):
        if isinstance(item, FunctionCallItem):
            called.add(item.call_id)
        elif isinstance(item, FunctionCallOutputItem) and item.call_id in called:
            kept_outputs.add(n)
    answered: set[str] = set()
    kept_calls: set[int] = set()
    for n in range(len(items) - 1, -1, -1):
        item = items[n]
        if isinstance(item, FunctionCallOutputItem) and n in kept_outputs:
            answered.add(item.call_id)
        elif isinstance(item, FunctionCallItem) and item.call_id in answered:
            kept_calls.add(n)
    out: list[dict[str, Any]] = []
    texts: list[str] = []  # the open assistant message: its text and its calls
    calls: list[dict[str, Any]] = []

    def close_assistant() -> None:
        text = "".join(texts)
        if text or calls:
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = list(calls)
            out.append(message)
        texts.clear()
        calls.clear()

    for n, item in enumerate(items):
        if isinstance(item, MessageItem):
            role = wire_role(item, _ROLES)
            if role == "assistant":
                texts.append(item.content)
                continue
            close_assistant()
            out.append({"role": role, "content": item.content})
        elif isinstance(item, FunctionCallItem):
            if n in kept_calls:
                calls.append({"id": item.call_id, "type": "function",
                              "function": {"name": item.name, "arguments": item.arguments}})
        elif isinstance(item, FunctionCallOutputItem) and n in kept_outputs:
            close_assistant()
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        # reasoning, cancelled and error items are not sent
    close_assistant()
    return out


def build_chat_request(items: Sequence[OutputItem], tools: Sequence[ToolSpec],
                       settings: RequestSettings) -> dict[str, Any]:
    """The streamed ``POST {base_url}/chat/completions`` body.

    Args:
        items: the conversation so far: earlier turns, then this turn's prompt and items.
        tools: the tools the model may call.
        settings: model name, reasoning effort, output cap.
    """
    body: dict[str, Any] = {"model": settings.model_name,
                            "messages": build_chat_messages(items)}
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools]
    if settings.reasoning_effort is not None:
        body["reasoning_effort"] = settings.reasoning_effort
    body["max_completion_tokens"] = settings.max_output_tokens
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body
