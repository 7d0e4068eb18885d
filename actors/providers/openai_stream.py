"""Normalising an OpenAI Responses API stream into canonical payloads (sans-io).

Feed it the response body's bytes in any chunking; it decodes the SSE blocks and maps each
event, by the ``type`` in its JSON (as the official SDK does), to the payloads that
``actors/providers/base.py`` describes:

======================================  ===================================================
``response.output_item.added``          ``item_start`` (message, reasoning, function_call;
                                        other item types and their events are ignored)
``response.output_text.delta``,         ``item_delta``
``response.refusal.delta``,
``response.reasoning_summary_text
.delta``, ``response.reasoning_text
.delta``, ``response.function_call_
arguments.delta``
``response.reasoning_summary_part       ``item_delta`` ``"\\n\\n"`` before the 2nd and later
.added``                                parts, so the deltas add up to the final text
``response.output_item.done``           ``item_done`` with the final item
``response.completed``                  ``usage_update`` (with reasoning, cached and
                                        cache-write tokens, runtime/schema.py ``Usage``),
                                        ``response_done`` complete
``response.incomplete``                 ``usage_update``, ``response_done`` complete with the
                                        reason (``length``, ``content_filter``)
``response.failed``, ``error``          ``response_error`` with OpenAI's code, or the
                                        canonical one for a failure a user can act on
                                        (``context_length_exceeded``: CONTEXT_TOO_LONG)
anything else                           nothing (OpenAI adds event types; we tolerate them)
======================================  ===================================================

Final items: a message's content is its ``output_text`` and ``refusal`` parts joined; a
reasoning item's content is its summary parts joined by a blank line (or, without a summary,
its reasoning text), with ``encrypted_content`` kept for the next request.

Bad input never raises. JSON that does not parse is MALFORMED_CHUNK; a known event missing a
field it needs, or with a field of the wrong type, is SCHEMA_VIOLATION. The checks are by hand,
not with the SDK's models: this is the hot path (one event per token). Their messages::

    openai stream: malformed JSON in a '<sse event name>' event
    openai stream: <event type>: '<field>' missing or of the wrong type

with details ``{"provider": "openai", "event": <name or type>}`` (plus ``"field"`` for a
schema violation). Deltas for items never announced are passed on untouched: spotting them is
the reducer's job (STREAM_SEQUENCE_ERROR).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from actors.providers.fastpath import loads as _loads
from actors.providers.fastpath import new_delta as _new_delta
from actors.providers.fastpath import scan as _scan
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

PROVIDER = "openai"
_SUMMARY_SEPARATOR = "\n\n"
_ITEM_TYPES = frozenset({"message", "reasoning", "function_call"})
_INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
_DELTA_EVENTS = frozenset({
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.function_call_arguments.delta",
})


def _str(obj: dict[str, Any], field: str, *, empty: bool = True) -> str:
    value = obj.get(field)
    if type(value) is not str or (not empty and not value):
        raise Violation(field)
    return value


def _list(obj: dict[str, Any], field: str) -> list[Any]:
    value = obj.get(field)
    if value is None:
        return []
    if type(value) is not list:
        raise Violation(field)
    return value


def _count(obj: dict[str, Any], field: str) -> int:
    value = obj.get(field)
    if type(value) is not int or value < 0:
        raise Violation(field)
    return value


def _optional_count(obj: dict[str, Any], details: str, field: str) -> int | None:
    inner = obj.get(details)
    if type(inner) is not dict or field not in inner:
        return None
    return _count(inner, field)


def _texts(parts: list[Any], kinds: dict[str, str], field: str) -> list[str]:
    """The text of each part whose ``type`` is a key of ``kinds`` (value: its text field)."""
    out: list[str] = []
    for part in parts:
        if type(part) is not dict:
            raise Violation(field)
        key = kinds.get(part.get("type"))  # type: ignore[arg-type]
        if key is not None:
            out.append(_str(part, key))
    return out


class OpenAIResponsesNormaliser(SSENormaliser):
    """One Responses API stream in, canonical payloads out (``StreamNormaliser``)."""

    __slots__ = ("_called", "_known", "_refused", "_summary_parts")
    PROVIDER = PROVIDER
    ENDS_WITH = "a terminal event"

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self._known: set[str] = set()  # items announced by output_item.added
        self._summary_parts: dict[str, int] = {}
        self._called = False  # a function_call item was done
        self._refused = False  # a message carried a refusal

    def feed(self, data: bytes) -> list[Payload]:
        out: list[Payload] = []
        if self._finished:
            return out
        known = self._known
        for message in self._decoder.feed(data):
            # The hot path, one per token, inlined: compact JSON (the C scanner read it all)
            # of a well-formed text delta. Anything else takes the full path in _message.
            text = message.data
            try:
                obj, end = _scan(text, 0)
            except (StopIteration, ValueError, RecursionError):
                end = -1
            if end == len(text) and type(obj) is dict:
                kind = obj.get("type")
                if type(kind) is str and kind in _DELTA_EVENTS:
                    item_id = obj.get("item_id")
                    delta = obj.get("delta")
                    if type(item_id) is str and item_id and type(delta) is str:
                        if delta or item_id not in known:
                            out.append(_new_delta(item_id, delta))
                        continue
                self._event(message.event, obj, out)
            else:
                self._message(message, out)
            if self._finished:
                break
        return out

    # ------------------------------------------------------------------ dispatch

    def _message(self, message: SSEMessage, out: list[Payload]) -> None:
        data = message.data
        try:
            obj = _loads(data)
        except (ValueError, RecursionError):
            if data == "[DONE]":  # Chat Completions' end marker; harmless here
                return
            self._fail(out, MALFORMED_CHUNK,
                       f"openai stream: malformed JSON in a {message.event!r} event",
                       {"event": message.event})
            return
        self._event(message.event, obj, out)

    def _event(self, event: str, obj: Any, out: list[Payload]) -> None:
        """One parsed event (``event`` is its SSE name, for errors before its type is known)."""
        kind = obj.get("type") if type(obj) is dict else None
        if type(kind) is not str:
            self._fail(out, SCHEMA_VIOLATION,
                       f"openai stream: {event}: 'type' missing or of the wrong type",
                       {"event": event, "field": "type"})
            return
        if kind in _DELTA_EVENTS:
            item_id = obj.get("item_id")
            delta = obj.get("delta")
            if type(item_id) is not str or not item_id:
                self._violation(out, kind, "item_id")
            elif type(delta) is not str:
                self._violation(out, kind, "delta")
            elif delta or item_id not in self._known:
                out.append(_new_delta(item_id, delta))
            return
        handler = _HANDLERS.get(kind)
        if handler is None:
            return
        try:
            handler(self, obj, out)
        except Violation as exc:
            self._violation(out, kind, exc.field)
        except ValidationError as exc:  # a final item our schema refuses (e.g. empty name)
            self._fail(out, SCHEMA_VIOLATION, f"openai stream: {kind}: {exc.errors()[0]['msg']}",
                       {"event": kind})
        except Exception as exc:  # never raise on provider input
            self._fail(out, SCHEMA_VIOLATION, f"openai stream: {kind}: {exc!r}", {"event": kind})

    def _violation(self, out: list[Payload], kind: str, field: str) -> None:
        self._fail(out, SCHEMA_VIOLATION,
                   f"openai stream: {kind}: {field!r} missing or of the wrong type",
                   {"event": kind, "field": field})

    # ------------------------------------------------------------------ items

    def _item_added(self, obj: dict[str, Any], out: list[Payload]) -> None:
        item = require_dict(obj, "item")
        kind = item.get("type")
        if kind not in _ITEM_TYPES:
            return
        item_id = _str(item, "id", empty=False)
        self._known.add(item_id)
        if kind == "function_call":
            out.append(ItemStart(item_id=item_id, item_type="function_call",
                                 name=_str(item, "name"), call_id=_str(item, "call_id"),
                                 arguments=""))
        elif kind == "reasoning":
            out.append(ItemStart(item_id=item_id, item_type="reasoning"))
        else:
            out.append(ItemStart(item_id=item_id, item_type="message"))

    def _summary_part(self, obj: dict[str, Any], out: list[Payload]) -> None:
        item_id = _str(obj, "item_id", empty=False)
        seen = self._summary_parts.get(item_id, 0)
        self._summary_parts[item_id] = seen + 1
        if seen:
            out.append(_new_delta(item_id, _SUMMARY_SEPARATOR))

    def _text_done(self, obj: dict[str, Any], out: list[Payload]) -> None:
        _str(obj, "item_id", empty=False)
        _str(obj, "text")

    def _arguments_done(self, obj: dict[str, Any], out: list[Payload]) -> None:
        _str(obj, "item_id", empty=False)
        _str(obj, "arguments")

    def _item_done(self, obj: dict[str, Any], out: list[Payload]) -> None:
        item = require_dict(obj, "item")
        kind = item.get("type")
        if kind not in _ITEM_TYPES:
            return
        item_id = _str(item, "id", empty=False)
        final: OutputItem
        if kind == "message":
            parts = _list(item, "content")
            texts = _texts(parts, {"output_text": "text", "refusal": "refusal"}, "content")
            if any(type(p) is dict and p.get("type") == "refusal" for p in parts):
                self._refused = True
            final = MessageItem(id=item_id, origin="agent", role="assistant",
                                content="".join(texts))
        elif kind == "reasoning":
            summary = _texts(_list(item, "summary"), {"summary_text": "text"}, "summary")
            text = _SUMMARY_SEPARATOR.join(summary) if summary else "".join(
                _texts(_list(item, "content"), {"reasoning_text": "text"}, "content"))
            encrypted = item.get("encrypted_content")
            if encrypted is not None and type(encrypted) is not str:
                raise Violation("encrypted_content")
            final = ReasoningItem(id=item_id, origin="agent", content=text,
                                  encrypted_content=encrypted)
        else:
            final = FunctionCallItem(id=item_id, name=_str(item, "name", empty=False),
                                     arguments=_str(item, "arguments"),
                                     call_id=_str(item, "call_id", empty=False))
            self._called = True
        out.append(ItemDone(item_id=item_id, final_item=final))

    # ------------------------------------------------------------------ the end

    def _usage(self, response: dict[str, Any], out: list[Payload]) -> None:
        usage = response.get("usage")
        if usage is None:
            return
        if type(usage) is not dict:
            raise Violation("usage")
        out.append(UsageUpdate(response_id=self._response_id, usage=Usage(
            prompt_tokens=_count(usage, "input_tokens"),
            completion_tokens=_count(usage, "output_tokens"),
            total_tokens=_count(usage, "total_tokens"),
            reasoning_tokens=_optional_count(usage, "output_tokens_details", "reasoning_tokens"),
            cached_tokens=_optional_count(usage, "input_tokens_details", "cached_tokens"),
            cache_write_tokens=_optional_count(usage, "input_tokens_details",
                                               "cache_write_tokens"),
        )))

    def _done(self, out: list[Payload], finish_reason: str) -> None:
        out.append(ResponseDone(response_id=self._response_id, status="complete",
                                finish_reason=finish_reason))
        self._finished = True

    def _completed(self, obj: dict[str, Any], out: list[Payload]) -> None:
        response = require_dict(obj, "response")
        output = _list(response, "output")
        called = self._called or any(
            type(i) is dict and i.get("type") == "function_call" for i in output)
        self._usage(response, out)
        self._done(out, "tool_calls" if called else "refusal" if self._refused else "stop")

    def _incomplete(self, obj: dict[str, Any], out: list[Payload]) -> None:
        response = require_dict(obj, "response")
        details = response.get("incomplete_details")
        reason = details.get("reason") if type(details) is dict else None
        self._usage(response, out)
        if type(reason) is str and reason:
            self._done(out, _INCOMPLETE_REASONS.get(reason, reason))
        else:
            self._done(out, "incomplete")

    def _failed(self, obj: dict[str, Any], out: list[Payload]) -> None:
        response = require_dict(obj, "response")
        error = response.get("error")
        code: object = None
        message: object = None
        if type(error) is dict:
            code, message = error.get("code"), error.get("message")
        self._provider_error(out, code if type(code) is str and code else "server_error",
                             message if type(message) is str else "the response failed", {})

    def _error(self, obj: dict[str, Any], out: list[Payload]) -> None:
        code = obj.get("code")
        message = obj.get("message")
        param = obj.get("param")
        self._provider_error(out, code if type(code) is str and code else "server_error",
                             message if type(message) is str else "error",
                             {"param": param} if type(param) is str else {})

    def _provider_error(self, out: list[Payload], code: str, message: str,
                        details: dict[str, Any]) -> None:
        """OpenAI's error, under the canonical code when it is one a user can act on
        (``context_length_exceeded`` -> CONTEXT_TOO_LONG; provider_errors.py)."""
        canonical = classify(status=None, code=code, message=message)
        if canonical is not None:
            details = {**details, "provider_code": code}
        self._fail(out, canonical or code, message, details)


# Dispatch by event type: plain functions, not bound methods kept on the instance (a
# normaliser holding its own bound methods is a reference cycle per run for the cyclic GC).
_HANDLERS: dict[str, Callable[[OpenAIResponsesNormaliser, dict[str, Any], list[Payload]], None]] = {
    "response.output_item.added": OpenAIResponsesNormaliser._item_added,
    "response.output_item.done": OpenAIResponsesNormaliser._item_done,
    "response.reasoning_summary_part.added": OpenAIResponsesNormaliser._summary_part,
    "response.output_text.done": OpenAIResponsesNormaliser._text_done,
    "response.function_call_arguments.done": OpenAIResponsesNormaliser._arguments_done,
    "response.completed": OpenAIResponsesNormaliser._completed,
    "response.incomplete": OpenAIResponsesNormaliser._incomplete,
    "response.failed": OpenAIResponsesNormaliser._failed,
    "error": OpenAIResponsesNormaliser._error,
}
