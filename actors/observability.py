"""Where the metrics are measured: thin wrappers around what the run actors already call, and
the service that renders ``/metrics``.

The wrappers keep the measuring out of the run actor and the providers: the factory wraps the
actors' log (:class:`MeteredActorLog`, per append batch) and every provider
(:class:`MeteredProvider`, per model request) once, and ``LocalRuns`` reports starts and ends.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio

from actors.providers.provider import ModelProvider, ProviderCall
from actors.submission import ActorLog
from runtime import CONTENT_TYPE, CodyError, EventLog, Metrics, WallClock

log = logging.getLogger(__name__)


class MeteredActorLog(ActorLog):
    """The actors' log, timing each batch append and counting its events."""

    def __init__(self, inner: ActorLog, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        start = trio.current_time()
        ids = await self._inner.append(run_id, events, checkpoint_seq)
        now = trio.current_time()
        self._metrics.appended(run_id, events, now - start, now)
        return ids

    async def set_status(self, run_id: str, status: str) -> None:
        await self._inner.set_status(run_id, status)


class MeteredProvider:
    """A provider whose requests are timed, from opening to the end of the body."""

    def __init__(self, inner: ModelProvider, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    @asynccontextmanager
    async def stream(self, call: ProviderCall) -> AsyncIterator[AsyncIterator[bytes]]:
        start = trio.current_time()
        try:
            async with self._inner.stream(call) as body:
                yield body
        finally:
            self._metrics.provider_request_done(call.provider_id, call.model_id,
                                                trio.current_time() - start)


class MetricsService:
    """Renders the runtime's metrics; the projector lag is read from Redis first."""

    def __init__(self, metrics: Metrics, *, log_: EventLog, clock: WallClock) -> None:
        self.metrics = metrics
        self._log = log_
        self._clock = clock
        self.content_type = CONTENT_TYPE

    async def render(self) -> bytes:
        """The Prometheus text; with Redis down the lag keeps its last value (the rest is
        still worth scraping)."""
        try:
            with trio.move_on_after(2):
                oldest = await self._log.oldest_unpersisted_ms()
                lag = 0.0 if oldest is None else max(0, self._clock.now_ms() - oldest) / 1000
                self.metrics.projector_lag.set(lag)
        except CodyError as exc:
            log.warning("metrics: projector lag unknown: %s", exc)
        return self.metrics.render()

    def sse_client_opened(self) -> None:
        self.metrics.sse_clients.inc()

    def sse_client_closed(self) -> None:
        self.metrics.sse_clients.dec()
