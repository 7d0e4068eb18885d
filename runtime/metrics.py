"""Prometheus metrics of one runtime: its own ``CollectorRegistry`` (never the global one, so
tests open many runtimes side by side and each counts only its own runs).

Cheap on the hot path by construction:

- what the runtime already counts (runs started, live runs, slow subscribers cut off, janitor
  endings) is read when ``/metrics`` is scraped, through :class:`ScrapeCollector`: nothing is
  done per event for them;
- per append batch (not per token): the events counter and the Redis append latency, one
  ``inc`` and one ``observe`` whatever the batch holds;
- per run: the finished counter, tokens (from the run's final usage) and the time to first
  token, found by peeking at the types of a run's first batches only, until its first
  ``item_delta``;
- per model request: the provider request duration.

Names (``_total`` is added to counters by the exposition format):

    cody_runs_started_total                          runs accepted and started on this node
    cody_runs_finished_total{status}                 runs whose actor ended, by final status
    cody_runs_live                                   run actors alive on this node
    cody_events_appended_total                       events appended to Redis by run actors
    cody_tokens_total{provider,model,kind}           tokens of finished runs; kind prompt|completion
    cody_sse_clients                                 SSE connections open now
    cody_slow_subscribers_dropped_total              subscribers cut off for falling behind
    cody_time_to_first_token_seconds{provider,model} submit to the first text/thinking delta stored
    cody_provider_request_duration_seconds{provider,model}  one model request, open to body end
    cody_redis_append_seconds                        one batch append (group commit included)
    cody_projector_lag_seconds                       age of the oldest unpersisted checkpoint
    cody_janitor_endings_total                       runs the janitor ended RUN_ORPHANED

This module is pure (no I/O): callers pass the times, and the projector lag is set by the
metrics service before each scrape (it needs Redis).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from runtime.schema import Usage

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0, 10.0)
_REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_ITEM_DELTA = b'"type":"item_delta"'


@dataclass(frozen=True, slots=True)
class ScrapeSources:
    """What the runtime counts anyway, read at scrape time."""

    runs_started: Callable[[], int]
    runs_live: Callable[[], int]
    slow_dropped: Callable[[], int]
    janitor_endings: Callable[[], int]


class ScrapeCollector(Collector):
    def __init__(self, sources: ScrapeSources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        s = self._sources
        yield CounterMetricFamily("cody_runs_started", "Runs accepted and started on this node.",
                                  value=s.runs_started())
        yield GaugeMetricFamily("cody_runs_live", "Run actors alive on this node.",
                                value=s.runs_live())
        yield CounterMetricFamily("cody_slow_subscribers_dropped",
                                  "SSE subscribers cut off for falling behind (they resume "
                                  "from Redis).", value=s.slow_dropped())
        yield CounterMetricFamily("cody_janitor_endings",
                                  "Runs this node's janitor ended RUN_ORPHANED.",
                                  value=s.janitor_endings())


class HotPath(Collector):
    """The per-batch metrics as plain numbers (no lock, no label lookup: ~0.3 us a batch),
    exported at scrape: the events counter and the Redis append latency histogram."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.events = 0
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe_append(self, events: int, seconds: float) -> None:
        self.events += events
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("cody_events_appended",
                                  "Events appended to Redis by run actors.", value=self.events)
        cumulative, running = [], 0
        for bound, n in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            cumulative.append((bound, float(running)))
        yield HistogramMetricFamily("cody_redis_append_seconds",
                                    "One batch append of a run actor (group commit included).",
                                    buckets=cumulative, sum_value=self.total)


class Metrics:
    """One per runtime (``CodyRuntime.metrics``); the API renders it at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.runs_finished = Counter("cody_runs_finished", "Runs whose actor ended, by status.",
                                     ["status"], registry=r)
        self.hot = HotPath(_LATENCY_BUCKETS)
        r.register(self.hot)
        self.tokens = Counter("cody_tokens", "Tokens of finished runs.",
                              ["provider", "model", "kind"], registry=r)
        self.sse_clients = Gauge("cody_sse_clients", "SSE connections open now.", registry=r)
        self.ttft = Histogram("cody_time_to_first_token_seconds",
                              "From submit to the run's first text or thinking delta in Redis.",
                              ["provider", "model"], buckets=_TTFT_BUCKETS, registry=r)
        self.provider_request = Histogram(
            "cody_provider_request_duration_seconds",
            "One model request: from opening it to the end of its body (or its failure).",
            ["provider", "model"], buckets=_REQUEST_BUCKETS, registry=r)
        self.projector_lag = Gauge("cody_projector_lag_seconds",
                                   "Age of the oldest checkpoint not yet persisted (0: none).",
                                   registry=r)
        self._first_token: dict[str, tuple[float, str, str]] = {}
        """run id -> (start time, provider, model), until its first delta is stored."""

    def attach(self, sources: ScrapeSources) -> None:
        """Register the counts the runtime keeps itself (once, by the factory)."""
        self.registry.register(ScrapeCollector(sources))

    # ------------------------------------------------------------------ runs

    def run_started(self, run_id: str, provider: str, model: str, now: float) -> None:
        self._first_token[run_id] = (now, provider, model)

    def run_finished(self, run_id: str, status: str, provider: str, model: str,
                     usage: Usage | None) -> None:
        self._first_token.pop(run_id, None)
        self.runs_finished.labels(status).inc()
        if usage is not None:
            if usage.prompt_tokens:
                self.tokens.labels(provider, model, "prompt").inc(usage.prompt_tokens)
            if usage.completion_tokens:
                self.tokens.labels(provider, model, "completion").inc(usage.completion_tokens)

    def appended(self, run_id: str, events: Sequence[bytes], seconds: float, now: float) -> None:
        """One batch stored: per batch, never per event, except a run's first batches are
        peeked at until one holds an ``item_delta`` (the first token)."""
        self.hot.observe_append(len(events), seconds)
        if self._first_token and run_id in self._first_token:
            for raw in events:
                if _ITEM_DELTA in raw:
                    start, provider, model = self._first_token.pop(run_id)
                    self.ttft.labels(provider, model).observe(max(0.0, now - start))
                    break

    def provider_request_done(self, provider: str, model: str, seconds: float) -> None:
        self.provider_request.labels(provider, model).observe(seconds)

    # ------------------------------------------------------------------ scrape

    def render(self) -> bytes:
        return generate_latest(self.registry)
