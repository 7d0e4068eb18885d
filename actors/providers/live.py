"""Live provider clients: the OpenAI Responses API and the Anthropic Messages API over httpx.

Why httpx and not the official SDKs' async clients: the SDKs would run on trio (they sit on
httpx and anyio), but they parse the stream into their own event objects, while Cody's
normalisers are sans-io parsers of the raw wire bytes - the same ones the replay provider
feeds. So we send the request ourselves and hand the raw body to the normaliser; the SDKs stay
test-only, as the reference for what the wire format is.

Failure handling:
- connect errors, 429 and 5xx (and Anthropic's 529) before the first byte are retried with
  exponential backoff and full jitter, honouring ``Retry-After``, at most ``max_retries`` times;
- any other HTTP error, or retries exhausted, raises ``ProviderError`` with the provider's own
  error code (from its JSON error body) and the HTTP status in ``details``;
- after streaming began, a dropped connection raises ``ProviderError`` PROVIDER_CONNECTION_LOST
  and a stream with no bytes for ``idle_timeout_s`` raises PROVIDER_IDLE_TIMEOUT;
- cancelling the run closes the HTTP response (and its connection) at once.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx
import trio

from actors.providers.provider import ModelProvider, ProviderCall
from runtime.config import RuntimeConfig
from runtime.errors import (
    PROVIDER_CONNECTION_LOST,
    PROVIDER_IDLE_TIMEOUT,
    PROVIDER_UNREACHABLE,
    ProviderError,
)

log = logging.getLogger(__name__)

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
    import time

    return max(0.0, when.timestamp() - time.time())


def _error_from_body(kind: str, status: int, body: bytes) -> tuple[str, str]:
    """The provider's own error code and message from its JSON error body."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"http_{status}", body[:500].decode("utf-8", errors="replace") or f"HTTP {status}"
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        code = err.get("code") or err.get("type") or f"http_{status}"
        return str(code), str(err.get("message") or f"HTTP {status}")
    return f"http_{status}", f"HTTP {status}"


class HttpProvider:
    """One provider's streaming endpoint."""

    def __init__(self, kind: Literal["openai", "anthropic"], *, base_url: str, api_key: str,
                 client: httpx.AsyncClient | Sequence[httpx.AsyncClient], retry: RetryPolicy,
                 idle_timeout_s: float, rng: random.Random | None = None) -> None:
        self.kind = kind
        self.api_key = api_key
        self.clients = [client] if isinstance(client, httpx.AsyncClient) else list(client)
        self.retry = retry
        self.idle_timeout_s = idle_timeout_s
        self.rng = rng or random.Random()
        base = base_url.rstrip("/")
        if kind == "openai":
            self.url = f"{base}/responses"
        else:
            self.url = f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def _headers(self) -> dict[str, str]:
        if self.kind == "openai":
            return {"Authorization": f"Bearer {self.api_key}", "Accept": "text/event-stream"}
        return {"x-api-key": self.api_key, "anthropic-version": "2023-06-01",
                "Accept": "text/event-stream"}

    def _details(self, status: int | None = None, **more: Any) -> dict[str, Any]:
        details: dict[str, Any] = {"provider": self.kind}
        if status is not None:
            details["status"] = status
        details.update(more)
        return details

    def _client_for(self, run_id: str) -> httpx.AsyncClient:
        """A run's requests go through one of several pools: httpcore scans every connection
        of its pool when a request starts or ends, which with hundreds of streams open cost
        a tenth of the server's CPU; small pools keep that scan short."""
        return self.clients[hash(run_id) % len(self.clients)]

    async def _open(self, call: ProviderCall) -> httpx.Response:
        attempt = 0
        client = self._client_for(call.run_id)
        while True:
            request = client.build_request("POST", self.url, json=call.body,
                                           headers=self._headers())
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                if attempt >= self.retry.max_retries:
                    raise ProviderError(f"{self.kind}: cannot reach {self.url}: {exc!r}",
                                        code=PROVIDER_UNREACHABLE,
                                        details=self._details(attempts=attempt + 1)) from exc
                delay = self.retry.delay(attempt, None, self.rng)
                log.warning("%s: %r; retry %d in %.2fs", self.kind, exc, attempt + 1, delay)
                await trio.sleep(delay)
                attempt += 1
                continue
            if response.status_code == 200:
                return response
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            code, message = _error_from_body(self.kind, response.status_code, body)
            if response.status_code in RETRYABLE_STATUS and attempt < self.retry.max_retries:
                delay = self.retry.delay(
                    attempt, parse_retry_after(response.headers.get("retry-after")), self.rng)
                log.warning("%s: HTTP %d %s; retry %d in %.2fs", self.kind,
                            response.status_code, code, attempt + 1, delay)
                await trio.sleep(delay)
                attempt += 1
                continue
            raise ProviderError(f"{self.kind}: {message}", code=code,
                                details=self._details(response.status_code,
                                                      attempts=attempt + 1))

    @asynccontextmanager
    async def stream(self, call: ProviderCall) -> AsyncIterator[AsyncIterator[bytes]]:
        response = await self._open(call)
        try:
            yield self._body(response)
        finally:
            with trio.CancelScope(shield=True):
                await response.aclose()

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
                    raise ProviderError(
                        f"{self.kind}: connection lost mid-stream: {exc!r}",
                        code=PROVIDER_CONNECTION_LOST,
                        details=self._details(response.status_code)) from exc
            if chunk is None:
                raise ProviderError(
                    f"{self.kind}: no data for {self.idle_timeout_s:g} s",
                    code=PROVIDER_IDLE_TIMEOUT, details=self._details(response.status_code))
            yield chunk


@asynccontextmanager
async def open_live_providers(config: RuntimeConfig) -> AsyncIterator[dict[str, ModelProvider]]:
    """A client per provider that has a key; a provider without one is left out (its runs
    get 400 PROVIDER_NOT_CONFIGURED)."""
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
        providers: dict[str, ModelProvider] = {}
        if config.openai_api_key:
            providers["openai"] = HttpProvider(
                "openai", base_url=config.openai_base_url, api_key=config.openai_api_key,
                client=clients, retry=retry, idle_timeout_s=config.provider_idle_timeout_s)
        if config.anthropic_api_key:
            providers["anthropic"] = HttpProvider(
                "anthropic", base_url=config.anthropic_base_url,
                api_key=config.anthropic_api_key, client=clients, retry=retry,
                idle_timeout_s=config.provider_idle_timeout_s)
        yield providers
