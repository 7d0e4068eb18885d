"""Normalising an Anthropic Messages API stream into canonical payloads (sans-io).

Feed it the response body's bytes in any chunking; it decodes the SSE blocks and maps each
event, by the ``type`` in its JSON (which must agree with the SSE ``event:`` name), to the
payloads that ``actors/providers/base.py`` describes:

=================================  ========================================================
``message_start``                  nothing (the message id and input usage are kept)
``content_block_start``            ``item_start``: ``text`` a message, ``thinking`` and
                                   ``redacted_thinking`` a reasoning item, ``tool_use`` a
                                   function_call; other block types (server tools) and
                                   their deltas are ignored
``content_block_delta``            ``item_delta`` for ``text_delta``, ``thinking_delta``,
                                   ``input_json_delta``; ``signature_delta`` is kept for
                                   the final item; ``citations_delta`` is ignored
``content_block_stop``             ``item_done`` with the final item
``message_delta``                  nothing (stop reason and cumulative usage are kept)
``message_stop``                   ``usage_update``, then ``response_done`` complete
``error``                          ``response_error`` with Anthropic's error type as code
``ping``, anything else            nothing (Anthropic may add event types; we tolerate them)
=================================  ========================================================

Item ids: a ``tool_use`` block brings its ``toolu_`` id (also the call id); text and
thinking blocks have none, so theirs is ``<message id>_<index>``. A delta, or a stop, for an
index that was never started is passed on under the id that index would have: spotting it is
the reducer's job (STREAM_SEQUENCE_ERROR). For a stray stop the final item is an empty
message, which the reducer never shows.

Usage: ``prompt_tokens`` counts every input token (``input_tokens`` plus cache creation and
cache reads), ``completion_tokens`` is the latest cumulative ``output_tokens``,
``cached_tokens`` the cache reads (``cache_read_input_tokens``), ``cache_write_tokens`` the
cache creation (``cache_creation_input_tokens``) and ``reasoning_tokens`` the latest
``output_tokens_details.thinking_tokens``, each when Anthropic reported it (None otherwise).
Stop reasons map to canonical finish reasons (``_FINISH_REASONS``); one we do not know passes
through as is. An ``error`` event keeps Anthropic's error type as its code, except a failure a
user can act on (a prompt too long for the context window: CONTEXT_TOO_LONG;
provider_errors.py).

Bad input never raises. JSON that does not parse is MALFORMED_CHUNK; a known event missing a
field it needs, with a field of the wrong type, or arriving before ``message_start``, is
SCHEMA_VIOLATION. The checks are by hand, not with the SDK's models: this is the hot path
(one event per token). Their messages, shaped like the OpenAI normaliser's::

    anthropic stream: malformed JSON in a '<sse event name>' event
    anthropic stream: <event type>: '<field>' missing or of the wrong type

with details ``{"provider": "anthropic", "event": <name or type>}`` (plus ``"field"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from actors.providers.fastpath import loads as _loads
from actors.providers.fastpath import new_delta as _new_delta
from actors.providers.provider_errors import classify
from actors.providers.sse_normaliser import SSENormaliser, Violation, require_dict
from runtime import (
    MALFORMED_CHUNK,
    SCHEMA_VIOLATION,
    FunctionCallItem,
    ItemDone,
    ItemStart,
    MessageItem,
    OutputItem,
    Payload,
    ReasoningItem,
    ResponseDone,
    SSEMessage,
    Usage,
    UsageUpdate,
)

PROVIDER = "anthropic"
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
}
#: Delta type -> (the block type it belongs to, the field carrying its text).
_TEXT_DELTAS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "input_json_delta": ("tool_use", "partial_json"),
}
_INPUT_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _str(obj: dict[str, Any], field: str, path: str, *, empty: bool = True) -> str:
    value = obj.get(field)
    if type(value) is not str or (not empty and not value):
        raise Violation(path)
    return value


def _index(obj: dict[str, Any]) -> int:
    value = obj.get("index")
    if type(value) is not int or value < 0:
        raise Violation("index")
    return value


def _count(obj: dict[str, Any], field: str, path: str, *, optional: bool) -> int | None:
    value = obj.get(field)
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise Violation(path)
    return value


class _Block:
    """An open content block: what it will become, and its text as chunks."""

    __slots__ = ("call_id", "data", "input", "item_id", "kind", "name", "parts", "signature")

    def __init__(self, kind: str, item_id: str) -> None:
        self.kind = kind
        self.item_id = item_id
        self.parts: list[str] = []
        self.signature = ""
        self.name = ""
        self.call_id = ""
        self.data = ""  # redacted thinking
        self.input: dict[str, Any] = {}

    def final(self) -> OutputItem:
        text = "".join(self.parts)
        if self.kind == "text":
            return MessageItem(id=self.item_id, origin="agent", role="assistant", content=text)
        if self.kind == "thinking":
            return ReasoningItem(id=self.item_id, origin="agent", content=text,
                                 signature=self.signature or None)
        if self.kind == "redacted_thinking":
            return ReasoningItem(id=self.item_id, origin="agent", content="", redacted=True,
                                 encrypted_content=self.data)
        if not text:
            text = json.dumps(self.input) if self.input else "{}"
        return FunctionCallItem(id=self.item_id, name=self.name, arguments=text,
                                call_id=self.call_id)


class AnthropicMessagesNormaliser(SSENormaliser):
    """One Messages API stream in, canonical payloads out (``StreamNormaliser``)."""

    __slots__ = ("_ids", "_ignored", "_input", "_message_id", "_open", "_output",
                 "_stop_reason", "_thinking")
    PROVIDER = PROVIDER
    ENDS_WITH = "message_stop"

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self._message_id: str | None = None
        self._open: dict[int, _Block] = {}
        self._ids: dict[int, str] = {}  # every index started, open or not
        self._ignored: set[int] = set()  # blocks of types we do not map
        # Input usage by field, None where Anthropic has not reported it.
        self._input: dict[str, int | None] = dict.fromkeys(_INPUT_FIELDS)
        self._output = 0
        self._thinking: int | None = None  # output_tokens_details.thinking_tokens
        self._stop_reason: str | None = None

    # ------------------------------------------------------------------ dispatch

    def _message(self, message: SSEMessage, out: list[Payload]) -> None:
        event = message.event
        try:
            obj = _loads(message.data)
        except (ValueError, RecursionError):
            self._fail(out, MALFORMED_CHUNK,
                       f"anthropic stream: malformed JSON in a {event!r} event", {"event": event})
            return
        kind = obj.get("type") if type(obj) is dict else None
        if type(kind) is not str or (event != "message" and event != kind):
            self._fail(out, SCHEMA_VIOLATION,
                       f"anthropic stream: {event}: 'type' missing or of the wrong type",
                       {"event": event, "field": "type"})
            return
        handler = _HANDLERS.get(kind)
        if handler is None:  # ping, and event types added after this was written
            return
        try:
            if self._message_id is None and kind != "message_start" and kind != "error":
                raise Violation("message_start")
            handler(self, obj, out)
        except Violation as exc:
            self._fail(out, SCHEMA_VIOLATION,
                       f"anthropic stream: {kind}: {exc.field!r} missing or of the wrong type",
                       {"event": kind, "field": exc.field})
        except ValidationError as exc:  # a final item our schema refuses (e.g. empty name)
            self._fail(out, SCHEMA_VIOLATION,
                       f"anthropic stream: {kind}: {exc.errors()[0]['msg']}", {"event": kind})
        except Exception as exc:  # never raise on provider input
            self._fail(out, SCHEMA_VIOLATION, f"anthropic stream: {kind}: {exc!r}",
                       {"event": kind})

    def _item_id(self, index: int) -> str:
        """The id of the item at ``index``: the one it was started with, else the text id."""
        item_id = self._ids.get(index)
        return item_id if item_id is not None else f"{self._message_id}_{index}"

    # ------------------------------------------------------------------ the message

    def _message_start(self, obj: dict[str, Any], out: list[Payload]) -> None:
        message = require_dict(obj, "message")
        self._message_id = _str(message, "id", "message.id", empty=False)
        usage = message.get("usage")
        if type(usage) is not dict:
            raise Violation("message.usage")
        self._usage(usage, "message.usage", input_required=True)

    def _usage(self, usage: dict[str, Any], path: str, *, input_required: bool) -> None:
        for field in _INPUT_FIELDS:
            value = _count(usage, field, f"{path}.{field}",
                           optional=not (input_required and field == "input_tokens"))
            if value is not None:
                self._input[field] = value
        output = _count(usage, "output_tokens", f"{path}.output_tokens", optional=False)
        self._output = output or 0
        details = usage.get("output_tokens_details")
        if details is not None:
            if type(details) is not dict:
                raise Violation(f"{path}.output_tokens_details")
            thinking = _count(details, "thinking_tokens",
                              f"{path}.output_tokens_details.thinking_tokens", optional=True)
            if thinking is not None:
                self._thinking = thinking

    def _message_delta(self, obj: dict[str, Any], out: list[Payload]) -> None:
        delta = require_dict(obj, "delta")
        usage = require_dict(obj, "usage")
        stop_reason = delta.get("stop_reason")
        if stop_reason is not None:
            if type(stop_reason) is not str:
                raise Violation("delta.stop_reason")
            self._stop_reason = stop_reason
        self._usage(usage, "usage", input_required=False)

    def _message_stop(self, obj: dict[str, Any], out: list[Payload]) -> None:
        for index in sorted(self._open):  # blocks never stopped: the message is complete
            out.append(ItemDone(item_id=self._open[index].item_id,
                                final_item=self._open[index].final()))
        self._open.clear()
        inp = self._input
        cached = inp["cache_read_input_tokens"]
        written = inp["cache_creation_input_tokens"]
        prompt = (inp["input_tokens"] or 0) + (written or 0) + (cached or 0)
        out.append(UsageUpdate(response_id=self._response_id, usage=Usage(
            prompt_tokens=prompt, completion_tokens=self._output,
            total_tokens=prompt + self._output, reasoning_tokens=self._thinking,
            cached_tokens=cached, cache_write_tokens=written)))
        reason = self._stop_reason
        out.append(ResponseDone(response_id=self._response_id, status="complete",
                                finish_reason=None if reason is None
                                else _FINISH_REASONS.get(reason, reason)))
        self._finished = True

    def _error(self, obj: dict[str, Any], out: list[Payload]) -> None:
        error = obj.get("error")
        code: object = None
        message: object = None
        if type(error) is dict:
            code, message = error.get("type"), error.get("message")
        request_id = obj.get("request_id")
        own = code if type(code) is str and code else "api_error"
        text = message if type(message) is str else "error"
        details: dict[str, Any] = {"request_id": request_id} if type(request_id) is str else {}
        canonical = classify(status=None, code=own, message=text)
        if canonical is not None:
            details["provider_code"] = own
        self._fail(out, canonical or own, text, details)

    # ------------------------------------------------------------------ content blocks

    def _block_start(self, obj: dict[str, Any], out: list[Payload]) -> None:
        index = _index(obj)
        block = require_dict(obj, "content_block")
        kind = block.get("type")
        if kind == "text" or kind == "thinking":
            item_id = f"{self._message_id}_{index}"
            b = _Block(kind, item_id)
            initial = _str(block, kind, f"content_block.{kind}")
            if initial:
                b.parts.append(initial)
            if kind == "thinking":
                sig = block.get("signature")
                if sig is not None and type(sig) is not str:
                    raise Violation("content_block.signature")
                b.signature = sig or ""
            out.append(ItemStart(item_id=item_id,
                                 item_type="message" if kind == "text" else "reasoning",
                                 initial_content=initial or None))
        elif kind == "redacted_thinking":
            item_id = f"{self._message_id}_{index}"
            b = _Block(kind, item_id)
            b.data = _str(block, "data", "content_block.data")
            out.append(ItemStart(item_id=item_id, item_type="reasoning"))
        elif kind == "tool_use":
            item_id = _str(block, "id", "content_block.id", empty=False)
            b = _Block(kind, item_id)
            b.call_id = item_id
            b.name = _str(block, "name", "content_block.name", empty=False)
            given = block.get("input")
            if given is not None and type(given) is not dict:
                raise Violation("content_block.input")
            b.input = given or {}
            out.append(ItemStart(item_id=item_id, item_type="function_call", name=b.name,
                                 call_id=item_id, arguments=""))
        else:
            if type(kind) is not str:
                raise Violation("content_block.type")
            self._ignored.add(index)  # server tool blocks and the like: not ours to show
            return
        self._ignored.discard(index)
        self._ids[index] = b.item_id
        self._open[index] = b

    def _block_delta(self, obj: dict[str, Any], out: list[Payload]) -> None:
        index = obj.get("index")
        if type(index) is not int or index < 0:
            raise Violation("index")
        delta = obj.get("delta")
        if type(delta) is not dict:
            raise Violation("delta")
        kind = delta.get("type")
        if type(kind) is not str:
            raise Violation("delta.type")
        block = self._open.get(index)
        spec = _TEXT_DELTAS.get(kind)
        if spec is not None:
            text = delta.get(spec[1])
            if type(text) is not str:
                raise Violation(f"delta.{spec[1]}")
            if block is None:
                if index not in self._ignored:  # never started: the reducer will say so
                    out.append(_new_delta(self._item_id(index), text))
                return
            if block.kind != spec[0]:
                raise Violation("delta.type")
            if text:
                block.parts.append(text)
                out.append(_new_delta(block.item_id, text))
        elif kind == "signature_delta":
            signature = _str(delta, "signature", "delta.signature")
            if block is None:
                if index not in self._ignored:
                    out.append(_new_delta(self._item_id(index), ""))
                return
            if block.kind != "thinking":
                raise Violation("delta.type")
            block.signature = signature
        # citations_delta and delta types added later: nothing to show

    def _block_stop(self, obj: dict[str, Any], out: list[Payload]) -> None:
        index = _index(obj)
        block = self._open.pop(index, None)
        if block is not None:
            out.append(ItemDone(item_id=block.item_id, final_item=block.final()))
        elif index not in self._ignored:  # never started, or stopped twice
            item_id = self._item_id(index)
            out.append(ItemDone(item_id=item_id, final_item=MessageItem(
                id=item_id, origin="agent", role="assistant", content="")))


# Dispatch by event type: plain functions, not bound methods kept on the instance (a
# normaliser holding its own bound methods is a reference cycle per run for the cyclic GC).
_Handler = Callable[[AnthropicMessagesNormaliser, dict[str, Any], list[Payload]], None]
_HANDLERS: dict[str, _Handler] = {
    "message_start": AnthropicMessagesNormaliser._message_start,
    "content_block_start": AnthropicMessagesNormaliser._block_start,
    "content_block_delta": AnthropicMessagesNormaliser._block_delta,
    "content_block_stop": AnthropicMessagesNormaliser._block_stop,
    "message_delta": AnthropicMessagesNormaliser._message_delta,
    "message_stop": AnthropicMessagesNormaliser._message_stop,
    "error": AnthropicMessagesNormaliser._error,
}
