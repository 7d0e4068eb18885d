"""A fake OpenAI + Anthropic + Chat Completions server: a real HTTP server on loopback that
streams the recorded fixtures in each API's wire format, so the real live client code runs
against it.

- ``POST /v1/responses`` (OpenAI), ``POST /v1/messages`` (Anthropic) and
  ``POST /v1/chat/completions`` (an OpenAI-compatible server, playing the ``openai-chat``
  fixtures of provider ``chat_provider``).
- Each request body is checked against the API's documented request schema (the official
  SDKs' ``*CreateParamsStreaming`` TypedDicts) and the auth header; a bad one gets the API's
  400 / 401 error body (the 401 echoes the key it was sent, as careless servers do, so that
  tests can check it never reaches a user). A model no recording uses gets the API's 404.
- The recording to play is chosen like the replay provider does: by (provider, model, the turn's
  prompt); the tool-loop position is the number of tool outputs after that prompt.
- Every request is recorded (``requests``), and faults can be queued: an HTTP status with
  Retry-After (and, optionally, the error body to send), a connection dropped mid-stream, a
  stall, a malformed chunk.
- ``closed_early`` counts streams whose client went away before the end (cancel closes upstream).

It runs in a thread (stdlib ``ThreadingHTTPServer``), so it serves sync and trio tests alike.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import TypeAdapter, ValidationError

from actors.providers.fixtures import Fixture, FixtureLibrary
from actors.providers.replay import split_blocks

#: The APIs served, by path.
PATHS = {"/v1/responses": "openai", "/v1/messages": "anthropic",
         "/v1/chat/completions": "openai-chat"}


@functools.cache
def _adapter(api: str) -> TypeAdapter[Any] | None:
    """The SDK's request schema of an API (built once: a second or so each)."""
    try:
        if api == "openai":
            from openai.types.responses.response_create_params import (
                ResponseCreateParamsStreaming,
            )

            return TypeAdapter(ResponseCreateParamsStreaming)
        if api == "openai-chat":
            from openai.types.chat.completion_create_params import (
                CompletionCreateParamsStreaming,
            )

            return TypeAdapter(CompletionCreateParamsStreaming)
        from anthropic.types.message_create_params import MessageCreateParamsStreaming

        return TypeAdapter(MessageCreateParamsStreaming)
    except Exception:  # pragma: no cover - depends on the SDK version
        return None


@dataclass
class Fault:
    """What to do to the next matching request instead of (or while) streaming it."""

    kind: str  # "status", "drop", "stall", "malformed"
    status: int = 500
    retry_after: str | None = None
    after_blocks: int = 3
    stall_s: float = 30.0
    provider: str | None = None
    """The API it applies to (``openai``, ``anthropic``, ``openai-chat``); None: any."""
    body: dict[str, Any] | None = None
    """For ``status``: the JSON error body to send (default: the API's own, with a code)."""


@dataclass
class Recorded:
    provider: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _text(content: Any) -> str:
    """A user message's text: a string, or the text parts of a content list, joined."""
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content)
    return str(content)


def turn_position(provider: str, body: dict[str, Any]) -> tuple[str, int]:
    """The turn's prompt and how many tool rounds came after it in this request (``provider``
    is the API: ``openai``, ``anthropic`` or ``openai-chat``)."""
    prompt, rounds = "", 0
    if provider == "openai-chat":
        previous = None
        for msg in body.get("messages", []):
            role = msg.get("role")
            if role == "user":
                prompt, rounds = _text(msg.get("content")), 0
            elif role == "tool" and previous != "tool":
                rounds += 1  # parallel calls' outputs, side by side, are one round
            previous = role
        return prompt, rounds
    if provider == "openai":
        previous = None
        for item in body.get("input", []):
            kind = item.get("type", "message")
            if item.get("role") == "user" and kind == "message":
                prompt, rounds = _text(item.get("content")), 0
            elif kind == "function_call_output" and previous != "function_call_output":
                rounds += 1  # parallel calls' outputs, side by side, are one round
            previous = kind
        return prompt, rounds
    for msg in body.get("messages", []):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            prompt, rounds = content, 0
            continue
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if any(b.get("type") == "tool_result" for b in content):
            rounds += 1
        elif texts:
            prompt, rounds = "".join(texts), 0
    return prompt, rounds


class FakeProvider:
    def __init__(self, library: FixtureLibrary | None = None, *, api_key: str = "test-key",
                 block_delay_s: float = 0.0, chat_provider: str = "local") -> None:
        self.library = library or FixtureLibrary()
        self.api_key = api_key
        self.chat_provider = chat_provider
        #: API -> the provider whose fixtures it plays
        self.providers = {"openai": "openai", "anthropic": "anthropic",
                          "openai-chat": chat_provider}
        #: (provider, wire model name) -> Cody's model id, from the recorded requests
        self.models = {(fx.provider, str(fx.exchanges[0].request.get("model"))): fx.model
                       for fx in self.library}
        self.block_delay_s = block_delay_s
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.closed_early = 0
        self.completed = 0
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_base_url(self) -> str:
        """The ``base_url`` of an ``openai-chat`` provider served by this fake."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FakeProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def take_fault(self, provider: str) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.provider in (None, provider):
                    return self.faults.pop(i)
        return None

    def knows_model(self, api: str, body: dict[str, Any]) -> bool:
        return (self.providers[api], str(body.get("model"))) in self.models

    def select(self, api: str, body: dict[str, Any]) -> tuple[Fixture, int] | None:
        provider = self.providers[api]
        wire = str(body.get("model"))
        model = self.models.get((provider, wire), wire)
        prompt, rounds = turn_position(api, body)
        fx = self.library.select(provider, model, prompt)
        if fx is None or rounds >= len(fx.exchanges):
            return None
        return fx, rounds

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _error(self, status: int, provider: str, code: str, message: str,
                       headers: dict[str, str] | None = None,
                       body: dict[str, Any] | None = None) -> None:
                if body is None and provider == "anthropic":
                    body = {"type": "error", "error": {"type": code, "message": message}}
                elif body is None:
                    body = {"error": {"message": message, "type": code, "code": code,
                                      "param": None}}
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                provider = PATHS.get(self.path)
                if provider is None:
                    self.send_error(404)
                    return
                if provider == "anthropic":
                    sent = self.headers.get("x-api-key") or ""
                    authed = sent == fake.api_key and bool(self.headers.get("anthropic-version"))
                else:
                    sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    authed = sent == fake.api_key
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length))
                except json.JSONDecodeError:
                    self._error(400, provider, "invalid_request_error", "body is not JSON")
                    return
                with fake.lock:
                    fake.requests.append(Recorded(provider, self.path, dict(self.headers), body))
                if not authed:
                    self._error(401, provider, "authentication_error",
                                f"Incorrect API key provided: {sent}")
                    return
                adapter = _adapter(provider)
                if adapter is not None:
                    try:
                        adapter.validate_python(body)
                    except ValidationError as exc:
                        self._error(400, provider, "invalid_request_error",
                                    f"request does not match the schema: {exc}")
                        return
                if body.get("stream") is not True:
                    self._error(400, provider, "invalid_request_error", "stream must be true")
                    return
                fault = fake.take_fault(provider)
                if fault is not None and fault.kind == "status":
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    self._error(fault.status, provider,
                                "rate_limit_error" if fault.status == 429 else "api_error",
                                f"injected {fault.status}", headers, fault.body)
                    return
                if not fake.knows_model(provider, body):
                    model = body.get("model")
                    if provider == "anthropic":
                        self._error(404, provider, "not_found_error", f"model: {model}")
                    else:
                        self._error(404, provider, "model_not_found",
                                    f"The model `{model}` does not exist or you do not have "
                                    "access to it.")
                    return
                chosen = fake.select(provider, body)
                if chosen is None:
                    self._error(400, provider, "invalid_request_error", "no recording for this")
                    return
                fx, rounds = chosen
                blocks = split_blocks(fx.exchanges[rounds].stream)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for i, block in enumerate(blocks):
                        if fault is not None and i == fault.after_blocks:
                            if fault.kind == "drop":
                                self.wfile.flush()
                                self.connection.shutdown(2)
                                return
                            if fault.kind == "stall":
                                time.sleep(fault.stall_s)
                                return
                            if fault.kind == "malformed":
                                self.wfile.write(b'event: x\ndata: {"type": "x", oops\n\n')
                        self.wfile.write(block)
                        self.wfile.flush()
                        if fake.block_delay_s:
                            time.sleep(fake.block_delay_s)
                except (BrokenPipeError, ConnectionResetError):
                    with fake.lock:
                        fake.closed_early += 1
                    return
                with fake.lock:
                    fake.completed += 1

        return Handler
