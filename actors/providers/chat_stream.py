"""Normalising a Chat Completions stream (``chat.completion.chunk``) into canonical payloads
(sans-io), for OpenAI and every OpenAI-compatible server (vLLM, llama.cpp, Ollama, LM Studio,
OpenRouter, Groq, Together, ...).

The body is SSE ``data:`` lines, each one chunk, ending with ``data: [DONE]``. Unlike the
Responses and Messages APIs, a chunk announces no items: it carries deltas of the one
assistant message (``choices[0].delta``), and the normaliser makes the items itself:

=================================  ========================================================
``delta.reasoning_content``,       a reasoning item (vLLM, DeepSeek, llama.cpp send
``delta.reasoning``                ``reasoning_content``; OpenRouter, Ollama and newer vLLM
                                   ``reasoning``; the first one present counts)
``delta.content``,                 a message item (a refusal is shown as the message, and
``delta.refusal``                  finishes the response with ``refusal``)
``delta.tool_calls[]``             a function_call item per ``index``: ``id`` and
                                   ``function.name`` start it (arguments that arrive before
                                   the name are held until then), ``function.arguments``
                                   pieces are its deltas; parallel calls have their own index
``choices[0].finish_reason``       every open item is done; the response ends at
                                   ``[DONE]`` (or when the body ends), after the usage chunk
``usage`` (any chunk; the last     ``usage_update`` at the end (the latest one counts: vLLM
one with ``include_usage``)        can send running totals on every chunk)
``error`` (in-stream)              ``response_error`` with the server's code
``data: [DONE]``                   ``response_done`` complete
=================================  ========================================================

Items: one text item is open at a time. When the kind of text changes (reasoning, then the
answer; or the answer, then more reasoning), the open one is done and a new one starts; a tool
call starting closes the open text item. Calls stay open until the finish. A response that
produced neither a message nor a call gets an empty message, as the other protocols give one.
Only choice 0 is read (Cody never asks for ``n`` > 1); the legacy ``delta.function_call``,
audio, logprobs and moderation fields are ignored.

Item ids: every chunk of a completion carries its ``id`` (``chatcmpl-…``); the first chunk's
is the completion id (a server that changes it per chunk is not followed; an empty one is
replaced by ``chatcmpl-<response id>``). Items are ``<completion id>_reasoning`` and
``<completion id>_message``, the n-th (n >= 2) of a kind ``…_message_<n>``; a tool call's item
id is its call id (``call_…``, also its ``call_id``), or ``<completion id>_call_<index>`` when
the server gives none. A server that repeats completion ids within one turn (Ollama draws them
from 1,000 numbers) may give two model requests of a turn the same item ids.

Finish reasons: ``stop`` (also ``eos``, ``eos_token``, ``end_turn``, ``stop_sequence``),
``length``, ``tool_calls`` (also the legacy ``function_call``), ``content_filter``; others
pass through. A choice that produced tool calls finishes with ``tool_calls`` even when the
server says ``stop`` (some local servers do), a refusal with ``refusal``. ``[DONE]`` without a
finish reason ends the response as ``tool_calls`` or ``stop``, by what it produced.

Usage: ``prompt_tokens``, ``completion_tokens``, ``total_tokens`` (the sum when a server
omits it), ``completion_tokens_details.reasoning_tokens``,
``prompt_tokens_details.cached_tokens`` (DeepSeek's ``prompt_cache_hit_tokens`` when that is
absent) and ``prompt_tokens_details.cache_write_tokens``.

Errors: an ``error`` object in a chunk (OpenAI, vLLM and OpenRouter send one mid-stream; its
``code`` may be a string or an HTTP status number) ends the stream with the server's code (its
string ``code``, else its ``type``, else ``http_<status>``), or the canonical one for a
failure a user can act on (provider_errors.py). ``finish_reason: "error"`` without one is a
``server_error``. Bad input never raises: JSON that does not parse is MALFORMED_CHUNK; a
field of the wrong type is SCHEMA_VIOLATION, with messages shaped like the other normalisers'::

    openai-chat stream: malformed JSON in a chunk
    openai-chat stream: chat.completion.chunk: '<field>' missing or of the wrong type

and details ``{"provider": "openai-chat", "event": "chat.completion.chunk"}`` (plus ``field``).
A body that ends before any finish reason is STREAM_TRUNCATED.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from actors.providers.fastpath import loads as _loads
from actors.providers.fastpath import new_delta as _new_delta
from actors.providers.fastpath import scan as _scan
from actors.providers.fastpath import scanstring as _scanstring
from actors.providers.provider_errors import classify
from actors.providers.sse_normaliser import SSENormaliser, Violation
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

PROVIDER = "openai-chat"
EVENT = "chat.completion.chunk"
DONE = "[DONE]"
_FINISH_REASONS = {
    "stop": "stop", "eos": "stop", "eos_token": "stop", "end_turn": "stop",
    "stop_sequence": "stop", "length": "length", "tool_calls": "tool_calls",
    "function_call": "tool_calls", "content_filter": "content_filter",
}
_REASONING_KEYS = ("reasoning_content", "reasoning")
_DELTA = "choices[0].delta"


def _count(obj: dict[str, Any], field: str, path: str) -> int:
    value = obj.get(field)
    if type(value) is not int or value < 0:
        raise Violation(path)
    return value


def _detail(usage: dict[str, Any], details: str, field: str) -> int | None:
    inner = usage.get(details)
    if inner is None:
        return None
    if type(inner) is not dict:
        raise Violation(f"usage.{details}")
    if inner.get(field) is None:
        return None
    return _count(inner, field, f"usage.{details}.{field}")


def _text(delta: dict[str, Any], field: str) -> str | None:
    value = delta.get(field)
    if value is None or type(value) is str:
        return value
    raise Violation(f"{_DELTA}.{field}")


class _Text:
    """An open message or reasoning item and its text so far."""

    __slots__ = ("item_id", "kind", "parts")

    def __init__(self, kind: str, item_id: str) -> None:
        self.kind = kind
        self.item_id = item_id
        self.parts: list[str] = []

    def final(self) -> OutputItem:
        text = "".join(self.parts)
        if self.kind == "message":
            return MessageItem(id=self.item_id, origin="agent", role="assistant", content=text)
        return ReasoningItem(id=self.item_id, origin="agent", content=text)


class _Call:
    """A tool call being assembled from the deltas of one ``index``."""

    __slots__ = ("call_id", "index", "name", "parts", "started")

    def __init__(self, index: int) -> None:
        self.index = index
        self.call_id = ""
        self.name = ""
        self.parts: list[str] = []
        self.started = False

    def final(self) -> FunctionCallItem:
        return FunctionCallItem(id=self.call_id, name=self.name,
                                arguments="".join(self.parts) or "{}", call_id=self.call_id)


class ChatCompletionsNormaliser(SSENormaliser):
    """One Chat Completions stream in, canonical payloads out (``StreamNormaliser``)."""

    __slots__ = ("_answered", "_calls", "_cid", "_finish_reason", "_kinds", "_refused",
                 "_templates", "_text", "_usage")
    PROVIDER = PROVIDER
    ENDS_WITH = "a finish_reason"

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self._cid: str | None = None  # the completion id, from the first chunk
        self._text: _Text | None = None  # the open message or reasoning item
        self._calls: dict[int, _Call] = {}  # by index, until the finish
        self._kinds: dict[str, int] = {}  # text items started, by kind
        self._answered = False  # a message or a call was started
        self._refused = False
        self._finish_reason: str | None = None  # canonical, once the choice finished
        self._usage: Usage | None = None
        #: text item kind -> the bytes before and after the text of its chunks (``feed``)
        self._templates: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------ dispatch

    def feed(self, data: bytes) -> list[Payload]:
        out: list[Payload] = []
        if self._finished:
            return out
        templates = self._templates
        for message in self._decoder.feed(data):
            text = message.data
            open_text = self._text
            # The hot path, one chunk per token. A server repeats every byte of a text
            # chunk but the text (same id, created, model, nulls): once one chunk of the open
            # item was read in full, the next ones that match it byte for byte around one
            # JSON string are that string, decoded alone (a fifth of a full parse).
            template = templates.get(open_text.kind) if open_text is not None else None
            if open_text is not None and template is not None \
                    and text.startswith(template[0]) and text.endswith(template[1]):
                start = len(template[0])
                try:
                    decoded, end = _scanstring(text, start + 1)
                except ValueError:
                    end = -1
                if end == len(text) - len(template[1]) and text[start] == '"':
                    if decoded:
                        open_text.parts.append(decoded)
                        out.append(_new_delta(open_text.item_id, decoded))
                    continue
            # Else, inlined: a compact chunk (the C scanner read it all) whose only delta is
            # more text for the open item. Anything else takes the full path in _chunk.
            try:
                obj, end = _scan(text, 0)
            except (StopIteration, ValueError, RecursionError):
                end = -1
            if end == len(text) and type(obj) is dict:
                choices = obj.get("choices")
                if (open_text is not None and self._finish_reason is None
                        and type(choices) is list and len(choices) == 1
                        and obj.get("usage") is None and obj.get("error") is None):
                    choice = choices[0]
                    if type(choice) is dict and choice.get("finish_reason") is None \
                            and choice.get("index", 0) == 0:
                        delta = choice.get("delta")
                        if type(delta) is dict and (len(delta) == 1 or (
                                len(delta) == 2 and delta.get("role") == "assistant")):
                            key = "content" if open_text.kind == "message" else (
                                "reasoning_content" if "reasoning_content" in delta
                                else "reasoning")
                            piece = delta.get(key)
                            if type(piece) is str:
                                if piece:
                                    open_text.parts.append(piece)
                                    out.append(_new_delta(open_text.item_id, piece))
                                if open_text.kind not in templates:
                                    self._learn(open_text.kind, key, text, obj)
                                continue
                self._chunk(message.event, obj, out)
            else:
                self._message(message, out)
            if self._finished:
                break
        return out

    def _learn(self, kind: str, key: str, text: str, obj: dict[str, Any]) -> None:
        """Keep the bytes around the text of a text chunk as the template for its kind, if
        the chunk with any other string in their place parses to the same chunk."""
        marker = f'"{key}":"'
        at = text.find(marker)
        if at < 0:
            return
        start = at + len(marker) - 1
        try:
            _, end = _scanstring(text, start + 1)
        except ValueError:
            return
        prefix, suffix = text[:start], text[end:]
        try:
            probe = _loads(prefix + '"\\u0000"' + suffix)
        except (ValueError, RecursionError):
            return
        expected = {**obj, "choices": [{**obj["choices"][0],
                                        "delta": {**obj["choices"][0]["delta"],
                                                  key: "\u0000"}}]}
        if probe == expected:
            self._templates[kind] = (prefix, suffix)

    def _body_ended(self, out: list[Payload]) -> None:
        if self._finish_reason is not None:  # a server that sends no [DONE]
            self._guarded(self._end, out)
        else:
            super()._body_ended(out)

    def _message(self, message: SSEMessage, out: list[Payload]) -> None:
        data = message.data
        if data == DONE:
            self._guarded(self._end, out)
            return
        if not data.strip():  # an empty data line: a keep-alive of sorts
            return
        try:
            obj = _loads(data)
        except (ValueError, RecursionError):
            self._fail(out, MALFORMED_CHUNK, f"{PROVIDER} stream: malformed JSON in a chunk",
                       {"event": EVENT})
            return
        self._chunk(message.event, obj, out)

    def _chunk(self, event: str, obj: Any, out: list[Payload]) -> None:
        def chunk(out: list[Payload]) -> None:
            if type(obj) is not dict:
                raise Violation("chunk")
            error = obj.get("error")
            if error is None and event == "error" and "message" in obj:
                error = obj  # `event: error` whose data is the error itself
            if error is not None:
                self._error(error, out)
            else:
                self._chunk_fields(obj, out)

        self._guarded(chunk, out)

    def _guarded(self, step: Callable[[list[Payload]], None], out: list[Payload]) -> None:
        """Run ``step``; bad input becomes the stream's SCHEMA_VIOLATION, never an exception."""
        try:
            step(out)
        except Violation as exc:
            self._fail(out, SCHEMA_VIOLATION,
                       f"{PROVIDER} stream: {EVENT}: {exc.field!r} missing or of the wrong type",
                       {"event": EVENT, "field": exc.field})
        except ValidationError as exc:  # a final item our schema refuses
            self._fail(out, SCHEMA_VIOLATION,
                       f"{PROVIDER} stream: {EVENT}: {exc.errors()[0]['msg']}", {"event": EVENT})
        except Exception as exc:  # never raise on provider input
            self._fail(out, SCHEMA_VIOLATION, f"{PROVIDER} stream: {EVENT}: {exc!r}",
                       {"event": EVENT})

    # ------------------------------------------------------------------ one chunk

    def _chunk_fields(self, obj: dict[str, Any], out: list[Payload]) -> None:
        if self._cid is None:
            cid = obj.get("id")
            if cid is not None and type(cid) is not str:
                raise Violation("id")
            self._cid = cid or f"chatcmpl-{self._response_id}"
        usage = obj.get("usage")
        if usage is not None:
            self._usage = self._parse_usage(usage)
        choices = obj.get("choices")
        if choices is None:
            return
        if type(choices) is not list:
            raise Violation("choices")
        for n, choice in enumerate(choices):
            if type(choice) is not dict:
                raise Violation(f"choices[{n}]")
            index = choice.get("index", 0)
            if type(index) is not int:
                raise Violation(f"choices[{n}].index")
            if index == 0:
                self._choice(choice, out)

    def _choice(self, choice: dict[str, Any], out: list[Payload]) -> None:
        delta = choice.get("delta")
        finish = choice.get("finish_reason")
        if finish is not None and type(finish) is not str:
            raise Violation("choices[0].finish_reason")
        if self._finish_reason is not None:
            return  # the choice is over; nothing more belongs to it
        if delta is not None:
            if type(delta) is not dict:
                raise Violation(_DELTA)
            self._delta(delta, out)
        if finish is None:
            return
        if finish == "error":
            self._fail(out, "server_error",
                       "the server ended the completion with finish_reason 'error'", {})
            return
        self._close_all(out)
        reason = _FINISH_REASONS.get(finish, finish)
        if self._calls and reason == "stop":
            reason = "tool_calls"
        elif self._refused and reason == "stop":
            reason = "refusal"
        self._finish_reason = reason

    def _delta(self, delta: dict[str, Any], out: list[Payload]) -> None:
        reasoning = None
        for key in _REASONING_KEYS:
            reasoning = _text(delta, key)
            if reasoning is not None:
                break
        if reasoning:
            self._append_text("reasoning", reasoning, out)
        content = _text(delta, "content")
        if content:
            self._append_text("message", content, out)
        refusal = _text(delta, "refusal")
        if refusal:
            self._refused = True
            self._append_text("message", refusal, out)
        calls = delta.get("tool_calls")
        if calls is None:
            return
        if type(calls) is not list:
            raise Violation(f"{_DELTA}.tool_calls")
        for n, entry in enumerate(calls):
            self._call_delta(n, entry, out)

    def _append_text(self, kind: str, piece: str, out: list[Payload]) -> None:
        current = self._text
        if current is None or current.kind != kind:
            self._close_text(out)
            seen = self._kinds.get(kind, 0) + 1
            self._kinds[kind] = seen
            item_id = f"{self._cid}_{kind}" if seen == 1 else f"{self._cid}_{kind}_{seen}"
            current = self._text = _Text(kind, item_id)
            if kind == "message":
                self._answered = True
            out.append(ItemStart(item_id=item_id,
                                 item_type="message" if kind == "message" else "reasoning"))
        current.parts.append(piece)
        out.append(_new_delta(current.item_id, piece))

    def _close_text(self, out: list[Payload]) -> None:
        current = self._text
        if current is not None:
            out.append(ItemDone(item_id=current.item_id, final_item=current.final()))
            self._text = None

    def _call_delta(self, n: int, entry: Any, out: list[Payload]) -> None:
        path = f"{_DELTA}.tool_calls[{n}]"
        if type(entry) is not dict:
            raise Violation(path)
        index = entry.get("index")
        call_id = entry.get("id")
        if call_id is not None and type(call_id) is not str:
            raise Violation(f"{path}.id")
        if index is None:  # servers that leave it out send each call whole, or in order
            index = next((c.index for c in self._calls.values() if call_id and
                          c.call_id == call_id), None)
            if index is None:
                last = max(self._calls, default=-1)
                index = last + 1 if call_id or last < 0 else last
        elif type(index) is not int or index < 0:
            raise Violation(f"{path}.index")
        function = entry.get("function")
        if function is not None and type(function) is not dict:
            raise Violation(f"{path}.function")
        function = function or {}
        name = function.get("name")
        if name is not None and type(name) is not str:
            raise Violation(f"{path}.function.name")
        arguments = function.get("arguments")
        if arguments is not None and type(arguments) is not str:
            raise Violation(f"{path}.function.arguments")
        call = self._calls.get(index)
        if call is None:
            call = self._calls[index] = _Call(index)
        if call_id and not call.call_id:
            call.call_id = call_id
        if name and not call.name:
            call.name = name
        if call.name and not call.started:
            self._start_call(call, out)
        if arguments:
            call.parts.append(arguments)
            if call.started:
                out.append(_new_delta(call.call_id, arguments))

    def _start_call(self, call: _Call, out: list[Payload]) -> None:
        """Announce the call (once it has a name), and pass on what arrived before it."""
        if call.started:
            return
        if not call.name:
            raise Violation(f"{_DELTA}.tool_calls[{call.index}].function.name")
        self._close_text(out)
        call.call_id = call.call_id or f"{self._cid}_call_{call.index}"
        call.started = True
        self._answered = True
        out.append(ItemStart(item_id=call.call_id, item_type="function_call", name=call.name,
                             call_id=call.call_id, arguments=""))
        if call.parts:
            out.append(_new_delta(call.call_id, "".join(call.parts)))

    # ------------------------------------------------------------------ the end

    def _parse_usage(self, usage: Any) -> Usage:
        if type(usage) is not dict:
            raise Violation("usage")
        prompt = _count(usage, "prompt_tokens", "usage.prompt_tokens")
        completion = _count(usage, "completion_tokens", "usage.completion_tokens")
        total = (prompt + completion if usage.get("total_tokens") is None
                 else _count(usage, "total_tokens", "usage.total_tokens"))
        cached = _detail(usage, "prompt_tokens_details", "cached_tokens")
        if cached is None and usage.get("prompt_cache_hit_tokens") is not None:
            cached = _count(usage, "prompt_cache_hit_tokens", "usage.prompt_cache_hit_tokens")
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total,
                     reasoning_tokens=_detail(usage, "completion_tokens_details",
                                              "reasoning_tokens"),
                     cached_tokens=cached,
                     cache_write_tokens=_detail(usage, "prompt_tokens_details",
                                                "cache_write_tokens"))

    def _close_all(self, out: list[Payload]) -> None:
        """The choice finished: the open text item and every call are done."""
        self._close_text(out)
        for call in self._calls.values():
            self._start_call(call, out)
            out.append(ItemDone(item_id=call.call_id, final_item=call.final()))

    def _end(self, out: list[Payload]) -> None:
        """``[DONE]``, or the body ended after the finish: the response is complete."""
        reason = self._finish_reason
        if reason is None:  # [DONE] without a finish reason
            self._close_all(out)
            reason = "tool_calls" if self._calls else "refusal" if self._refused else "stop"
        if not self._answered:
            item_id = f"{self._cid or 'chatcmpl-' + self._response_id}_message"
            out.append(ItemStart(item_id=item_id, item_type="message"))
            out.append(ItemDone(item_id=item_id, final_item=MessageItem(
                id=item_id, origin="agent", role="assistant", content="")))
        if self._usage is not None:
            out.append(UsageUpdate(response_id=self._response_id, usage=self._usage))
        out.append(ResponseDone(response_id=self._response_id, status="complete",
                                finish_reason=reason))
        self._finished = True

    def _error(self, error: Any, out: list[Payload]) -> None:
        code: object = None
        kind: object = None
        message: object = None
        param: object = None
        if type(error) is dict:
            code, kind = error.get("code"), error.get("type")
            message, param = error.get("message"), error.get("param")
        elif type(error) is str:
            message = error
        status = code if type(code) is int else None
        own = (code if type(code) is str and code else kind if type(kind) is str and kind
               else f"http_{code}" if status is not None else "server_error")
        text = message if type(message) is str and message else "error"
        details: dict[str, Any] = {"param": param} if type(param) is str else {}
        canonical = classify(status=status, code=own, message=text)
        if canonical is not None:
            details["provider_code"] = own
        self._fail(out, canonical or own, text, details)
