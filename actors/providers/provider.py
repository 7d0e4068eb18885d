"""The one-method interface every model provider offers the run actor.

A provider opens one streamed model request and hands back the raw body bytes; which
normaliser reads them is decided by ``provider_id``. Failures before the first byte are
raised as ``runtime.errors.ProviderError`` (carrying the provider's code); the actor turns
them into ``response_error``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ProviderCall:
    run_id: str
    provider_id: str
    model_id: str
    prompt: str
    """The turn's prompt: the replay provider picks its recording by it."""
    exchange: int
    """0-based index of this model request within the turn's tool loop."""
    body: dict[str, Any]
    """The provider request body, in the provider's own format."""
    traceparent: str | None = None
    """W3C trace context for the request (a child span of the run's trace): a live provider
    sends it as the ``traceparent`` header."""


class ModelProvider(Protocol):
    def stream(self, call: ProviderCall) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Open the request; iterate the response body's bytes as they arrive."""
        ...
