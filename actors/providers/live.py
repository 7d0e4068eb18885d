"""Live provider clients over httpx: one ``HttpProvider`` per provider, whatever its protocol
(OpenAI Responses, Anthropic Messages, Chat Completions).

A provider is an ``Endpoint``: its id, its protocol, its base URL, its key (and the name of the
variable it came from, for error messages) and extra headers. What differs by protocol is
only the path and the auth header:

======================  ===============================  =====================================
protocol                URL                              auth
======================  ===============================  =====================================
``openai-responses``    ``{base_url}/responses``         ``Authorization: Bearer <key>``
``openai-chat``         ``{base_url}/chat/completions``  ``Authorization: Bearer <key>``
``anthropic-messages``  ``{base_url}/v1/messages`` (or   ``x-api-key: <key>``,
                        ``{base_url}/messages`` when     ``anthropic-version: 2023-06-01``
                        it ends in ``/v1``)
======================  ===============================  =====================================

A provider without a key sends no auth header (a local server); the configured headers are
sent on every request, after these (so a gateway's own auth header can replace them).

Why httpx and not the official SDKs' async clients: the SDKs would run on trio (they sit on
httpx and anyio), but they parse the stream into their own event objects, while Cody's
normalisers are sans-io parsers of the raw wire bytes - the same ones the replay provider
feeds. So we send the request ourselves and hand the raw body to the normaliser; the SDKs stay
test-only, as the reference for what the wire format is.

Failure handling:
- connect errors, 429 and 5xx (and Anthropic's 529) before the first byte are retried with
  exponential backoff and full jitter, honouring ``Retry-After``, at most ``max_retries`` times;
- any other HTTP error, or retries exhausted, raises ``ProviderError``: a failure the user can
  act on under its canonical code (provider_errors.py) with a message that says what to do -
  PROVIDER_AUTH names the provider and the variable that holds its key, MODEL_NOT_FOUND and
  CONTEXT_TOO_LONG the model - and any other under the provider's own code (from its JSON error
  body); the HTTP status and the provider's code are in ``details``;
- after streaming began, a dropped connection raises ``ProviderError`` PROVIDER_CONNECTION_LOST
  and a stream with no bytes for ``idle_timeout_s`` raises PROVIDER_IDLE_TIMEOUT;
- cancelling the run closes the HTTP response (and its connection) at once.

Secrets: the key is never logged or put in an error. Provider messages are shown to users, and
some echo the key they were sent, so every message and code taken from a provider is passed
through ``redact`` first; a base URL's user and password are left out of messages.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import trio

from actors.providers.http_body import ProviderBody
from actors.providers.provider import ModelProvider, ProviderCall
from actors.providers.provider_errors import classify, redact
from runtime import (
    CONTEXT_TOO_LONG,
    MODEL_NOT_FOUND,
    PROVIDER_AUTH,
    PROVIDER_CONNECTION_LOST,
    PROVIDER_IDLE_TIMEOUT,
    PROVIDER_UNREACHABLE,
    ProviderError,
    ProviderSpec,
    RuntimeConfig,
    builtin_providers,
)

log = logging.getLogger(__name__)

#: Configured headers whose values are treated as secrets (kept out of messages like the key).
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|password")
_CLOSED = httpx.ByteStream(b"")
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    base_s: float = 0.5
    max_s: float = 8.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), 60.0)
        return rng.uniform(0, min(self.max_s, self.base_s * 2 ** attempt))


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_from_body(status: int, body: bytes) -> tuple[str, str]:
    """The provider's own error code and message from its error body: OpenAI's and
    Anthropic's ``{"error": {...}}``, vLLM's top-level ``{"message", "type", "code"}``,
    Ollama's ``{"error": "..."}``, FastAPI's ``{"detail": "..."}``; else ``http_<status>``."""
    fallback = f"http_{status}"
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return fallback, body[:500].decode("utf-8", errors="replace") or f"HTTP {status}"
    if not isinstance(data, dict):
        return fallback, f"HTTP {status}"
    err = data.get("error")
    if isinstance(err, str) and err:
        return fallback, err
    if not isinstance(err, dict):
        err = data
    code, kind, message = err.get("code"), err.get("type"), err.get("message")
    if not isinstance(message, str) or not message:
        detail = data.get("detail")
        message = detail if isinstance(detail, str) and detail else f"HTTP {status}"
    if isinstance(code, str) and code:
        return code, message
    if isinstance(kind, str) and kind and kind != "error":
        return kind, message
    return fallback, message


def _safe_url(url: str) -> str:
    """``url`` without a user and password (``https://user:secret@host`` is allowed)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One provider as the live client sees it."""

    id: str
    protocol: str
    """``openai-responses``, ``anthropic-messages`` or ``openai-chat``."""
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    """The variable the key came from: error messages name it, never the key."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: ProviderSpec, env: Mapping[str, str]) -> Endpoint:
        """A catalogue provider, with its key read from ``env``."""
        key = env.get(spec.api_key_env) if spec.api_key_env else None
        return cls(spec.id, spec.protocol, spec.base_url, key or None, spec.api_key_env,
                   dict(spec.headers))

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        if self.protocol == "openai-responses":
            return f"{base}/responses"
        if self.protocol == "openai-chat":
            return f"{base}/chat/completions"
        if self.protocol == "anthropic-messages":
            return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
        raise ValueError(f"unknown protocol {self.protocol!r}")

    def request_headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.protocol == "anthropic-messages":
            headers["anthropic-version"] = "2023-06-01"
            if self.api_key:
                headers["x-api-key"] = self.api_key
        elif self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.headers)
        return headers

    @property
    def ready(self) -> bool:
        """Has what it needs to be called: its key, or it needs none."""
        return bool(self.api_key) or self.api_key_env is None


async def _close(response: httpx.Response) -> None:
    """Close ``response`` and drop its stream: httpx's Response and its stream refer to each
    other, a cycle per request left for the cyclic GC (whose pauses stall every stream)."""
    try:
        await response.aclose()
    finally:
        response.stream = _CLOSED


class HttpProvider:
    """One provider's streaming endpoint."""

    def __init__(self, endpoint: Endpoint, *,
                 client: httpx.AsyncClient | Sequence[httpx.AsyncClient], retry: RetryPolicy,
                 idle_timeout_s: float, rng: random.Random | None = None) -> None:
        self.endpoint = endpoint
        self.clients = [client] if isinstance(client, httpx.AsyncClient) else list(client)
        self.retry = retry
        self.idle_timeout_s = idle_timeout_s
        self.rng = rng or random.Random()
        self.url = endpoint.url
        self._headers = endpoint.request_headers()
        self._secrets = (endpoint.api_key, *(v for k, v in endpoint.headers.items()
                                             if _SECRET_HEADER.search(k)))
        self._where = _safe_url(self.url)

    @property
    def id(self) -> str:
        return self.endpoint.id

    def _details(self, status: int | None = None, **more: Any) -> dict[str, Any]:
        details: dict[str, Any] = {"provider": self.id}
        if status is not None:
            details["status"] = status
        details.update(more)
        return details

    def _client_for(self, run_id: str) -> httpx.AsyncClient:
        """A run's requests go through one of several pools: httpcore scans every connection
        of its pool when a request starts or ends, which with hundreds of streams open cost
        a tenth of the server's CPU; small pools keep that scan short."""
        return self.clients[hash(run_id) % len(self.clients)]

    def _http_error(self, call: ProviderCall, status: int, code: str, message: str,
                    attempts: int) -> ProviderError:
        """The error for a refused request: canonical and actionable where we can tell what
        went wrong, else the provider's own code."""
        canonical = classify(status=status, code=code, message=message)
        details = self._details(status, attempts=attempts)
        if canonical is None:
            return ProviderError(f"{self.id}: {message}", code=code, details=details)
        details["provider_code"] = code
        model = str(call.body.get("model", call.model_id))
        named = model if model == call.model_id else f"{model} (Cody model {call.model_id})"
        if canonical == PROVIDER_AUTH:
            env = self.endpoint.api_key_env
            details["api_key_env"] = env
            fix = (f"check the key in {env}" if env else
                   f"this provider has no key configured: set api_key_env in [providers."
                   f"{self.id}] of cody.toml")
            text = f"{self.id} refused the API key (HTTP {status}: {message}); {fix}"
        elif canonical == MODEL_NOT_FOUND:
            details["model"] = model
            text = f"{self.id} has no model {named}; HTTP {status}: {message}"
        else:
            assert canonical == CONTEXT_TOO_LONG
            details["model"] = model
            text = (f"{self.id}: the conversation is too long for the context window of model "
                    f"{named}; HTTP {status}: {message}")
        return ProviderError(text, code=canonical, details=details)

    async def _open(self, call: ProviderCall) -> httpx.Response:
        attempt = 0
        client = self._client_for(call.run_id)
        while True:
            headers = self._headers if call.traceparent is None else \
                {**self._headers, "traceparent": call.traceparent}
            request = client.build_request("POST", self.url, json=call.body, headers=headers)
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                reason = redact(repr(exc), self._secrets)
                if attempt >= self.retry.max_retries:
                    raise ProviderError(f"{self.id}: cannot reach {self._where}: {reason}",
                                        code=PROVIDER_UNREACHABLE,
                                        details=self._details(attempts=attempt + 1)) from exc
                delay = self.retry.delay(attempt, None, self.rng)
                log.warning("%s: %s; retry %d in %.2fs", self.id, reason, attempt + 1, delay)
                await trio.sleep(delay)
                attempt += 1
                continue
            if response.status_code == 200:
                return response
            try:
                body = await response.aread()
            finally:
                await _close(response)
            code, message = _error_from_body(response.status_code, body)
            code, message = redact(code, self._secrets), redact(message, self._secrets)
            if response.status_code in RETRYABLE_STATUS and attempt < self.retry.max_retries:
                delay = self.retry.delay(
                    attempt, parse_retry_after(response.headers.get("retry-after")), self.rng)
                log.warning("%s: HTTP %d %s; retry %d in %.2fs", self.id,
                            response.status_code, code, attempt + 1, delay)
                await trio.sleep(delay)
                attempt += 1
                continue
            raise self._http_error(call, response.status_code, code, message, attempt + 1)

    @asynccontextmanager
    async def stream(self, call: ProviderCall) -> AsyncIterator[AsyncIterator[bytes]]:
        response = await self._open(call)
        try:
            yield ProviderBody(response, self._body(response), idle_timeout_s=self.idle_timeout_s,
                               lost=partial(self._lost, response), idle=partial(self._idle_error,
                                                                               response))
        finally:
            with trio.CancelScope(shield=True):
                await _close(response)

    def _lost(self, response: httpx.Response, exc: BaseException) -> ProviderError:
        return ProviderError(
            f"{self.id}: connection lost mid-stream: {redact(repr(exc), self._secrets)}",
            code=PROVIDER_CONNECTION_LOST, details=self._details(response.status_code))

    def _idle_error(self, response: httpx.Response) -> ProviderError:
        return ProviderError(f"{self.id}: no data for {self.idle_timeout_s:g} s",
                             code=PROVIDER_IDLE_TIMEOUT,
                             details=self._details(response.status_code))

    async def _body(self, response: httpx.Response) -> AsyncIterator[bytes]:
        chunks = response.aiter_raw()
        while True:
            chunk: bytes | None = None
            with trio.move_on_after(self.idle_timeout_s):
                try:
                    chunk = await chunks.__anext__()
                except StopAsyncIteration:
                    return
                except httpx.TransportError as exc:
                    raise self._lost(response, exc) from exc
            if chunk is None:
                raise self._idle_error(response)
            yield chunk


def builtin_endpoints(config: RuntimeConfig) -> list[Endpoint]:
    """The built-in providers of the catalogue with the keys and base URLs of ``config`` (the
    runtime passes every provider of its catalogue instead, the file's included)."""
    env = config.provider_env()
    return [Endpoint.from_spec(spec, env) for spec in builtin_providers(env).values()]


@asynccontextmanager
async def open_live_providers(config: RuntimeConfig,
                              endpoints: Sequence[Endpoint] | None = None,
                              ) -> AsyncIterator[dict[str, ModelProvider]]:
    """A client per provider that is ready (has its key, or needs none); one that is not is
    left out, and its runs get 400 PROVIDER_NOT_CONFIGURED.

    Args:
        config: timeouts, retries, pools.
        endpoints: the providers (default: the built-in two, from ``config``).
    """
    timeout = httpx.Timeout(config.provider_connect_timeout_s, read=None, write=30.0, pool=None)
    pools = max(1, config.provider_pools)
    limits = httpx.Limits(max_connections=max(1, 2000 // pools),
                          max_keepalive_connections=max(1, 256 // pools))
    retry = RetryPolicy(config.provider_max_retries, config.provider_backoff_base_s,
                        config.provider_backoff_max_s)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(timeout=timeout,
                                                                     limits=limits))
                   for _ in range(pools)]
        providers: dict[str, ModelProvider] = {
            ep.id: HttpProvider(ep, client=clients, retry=retry,
                                idle_timeout_s=config.provider_idle_timeout_s)
            for ep in (builtin_endpoints(config) if endpoints is None else endpoints)
            if ep.ready}
        yield providers
