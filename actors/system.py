"""The runtime: one factory, ``open_runtime(config)``, builds everything from one config and
hands back the services.

Structure (one root nursery, nothing fire-and-forget)::

    open_runtime
    ├── catalogue (CODY_CONFIG), read first: a bad file stops start-up  runtime/catalogue.py
    ├── embedded redis-server (unless CODY_REDIS_URL)     runtime/redis_server.py
    ├── store (SQLite, or PostgreSQL with CODY_STORE_URL)   runtime/store/
    └── root nursery
        ├── group committer                                 runtime/group_commit.py
        ├── supervisor (one_for_one): node tail, projector, janitor, extra workers (HTTP)
        └── runs nursery: one RunActor per run, never restarted       actors/local_runs.py

The services, what the API calls (and all it may call)::

    submission   submit (model and tool policy, run-id conflicts, history, actor wiring), cancel
    reading      a run's Response (actor, store or replay), readers, 404 and 410
    threads      create, list, get with runs, update, delete
    lifecycle    ready, drain
    admission    node, SSE and tenant limits (actors/admission.py)
    security     API keys -> tenants, signed events tokens (runtime/auth.py)
    models       the catalogue's models and whether each provider's key is set

Tests open as many runtimes side by side as they like, each with its own key prefix, data
dir and store.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import trio

from actors.admission import Admission
from actors.datadir import events_secret, secure_data_dir
from actors.idempotency import IdempotencyRecords
from actors.janitor import Janitor
from actors.lifecycle import Lifecycle
from actors.local_runs import LocalRuns
from actors.models import ModelService
from actors.node_tail import NodeTail
from actors.observability import MeteredActorLog, MeteredProvider, MetricsService
from actors.projector import Projector
from actors.providers.fixtures import FixtureLibrary, default_fixtures_dir
from actors.providers.live import Endpoint, open_live_providers
from actors.providers.provider import ModelProvider
from actors.providers.replay import ReplayProvider
from actors.reading import ReadingService
from actors.run_listing import RunListingService
from actors.submission import ActorLog, SubmissionService
from actors.thread_policies import ThreadPolicies
from actors.threads import ThreadService
from actors.tools import hide_process_from_commands
from runtime import (
    Catalogue,
    ChildSpec,
    EventLog,
    GroupCommitter,
    Keys,
    Metrics,
    RestartPolicy,
    RuntimeConfig,
    ScrapeSources,
    Security,
    Store,
    SupervisorOptions,
    SystemClock,
    WallClock,
    embedded_redis,
    load_configured,
    new_uuid,
    open_redis,
    open_store,
    supervise,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Services:
    """Everything the API may call: no store, no event log, no actors."""

    config: RuntimeConfig
    submission: SubmissionService
    reading: ReadingService
    threads: ThreadService
    lifecycle: Lifecycle
    admission: Admission
    security: Security
    models: ModelService
    listing: RunListingService
    observability: MetricsService


@dataclass(frozen=True, slots=True)
class CodyRuntime(Services):
    """What ``open_runtime`` hands back: the services, and the parts behind them that
    workers, tests and benchmarks look at."""

    log: EventLog
    store: Store
    runs: LocalRuns
    projector: Projector | None
    catalogue: Catalogue
    metrics: Metrics
    node_id: str = ""
    """This node's id (its lease, its control stream, its runs' ``node`` in Redis)."""
    node_tail: NodeTail | None = None
    """This node's multiplexed tail: remote runs' events, cancels from other nodes."""


@asynccontextmanager
async def open_providers(config: RuntimeConfig, catalogue: Catalogue
                         ) -> AsyncIterator[dict[str, ModelProvider]]:
    """Every provider of the catalogue, the file's as well as the built-in ones, in the
    server's mode: replay plays the fixtures for all of them; live has a client for each that
    is ready (its key is set, or it needs none), speaking its protocol at its base URL with
    its headers. A provider left out gets 400 PROVIDER_NOT_CONFIGURED naming its variable."""
    if config.replay:
        fixtures = FixtureLibrary(config.fixtures_dir or default_fixtures_dir())
        record = config.data_dir / "replay-requests.jsonl" if config.replay_record_requests \
            else None
        replay = ReplayProvider(fixtures, delay_s=config.replay_delay_s, record_path=record)
        yield {pid: replay for pid in catalogue.providers}
        return
    env = config.provider_env()
    endpoints = [Endpoint.from_spec(spec, env) for spec in catalogue.providers.values()]
    async with open_live_providers(config, endpoints) as live:
        yield live


@asynccontextmanager
async def open_runtime(config: RuntimeConfig, *, clock: WallClock | None = None,
                       providers: dict[str, ModelProvider] | None = None,
                       workers: Callable[[CodyRuntime], Sequence[ChildSpec]] | None = None,
                       supervisor: SupervisorOptions | None = None,
                       run_projector: bool = True) -> AsyncIterator[CodyRuntime]:
    # first, before Redis, the store or the data dir: a malformed cody.toml stops start-up
    catalogue = await trio.to_thread.run_sync(load_configured, config)
    if config.replay and config.replay_auto and any(
            catalogue.key_status(pid, config.provider_env()) == "set"
            for pid in catalogue.providers):
        config = config.model_copy(update={"replay": False})  # a file provider has its key
    store_file = config.effective_store_path
    secure_data_dir(config.data_dir, precreate=(store_file,) if config.store_url is None
                    and store_file.parent.is_dir() else ())
    security = Security(keys=config.api_keys, events_ttl_s=config.events_token_ttl_s,
                        events_secret=events_secret(config.data_dir, config.events_secret))
    if config.exec_enabled:
        hide_process_from_commands()  # exec: our /proc environ and memory hold the keys
    async with AsyncExitStack() as stack:
        url = config.redis_url
        if url is None:
            url = await stack.enter_async_context(embedded_redis(config.data_dir))
        writer = await stack.enter_async_context(open_redis(url, config.writer_pool_size))
        reader = await stack.enter_async_context(open_redis(url, config.reader_pool_size))
        event_log = EventLog(writer, reader, Keys(config.key_prefix, config.persist_shards))
        store = await stack.enter_async_context(open_store(config))
        if providers is None:
            providers = await stack.enter_async_context(open_providers(config, catalogue))
        node_id = new_uuid()
        clock = clock or SystemClock()
        metrics = Metrics()
        metered: dict[str, ModelProvider] = {k: MeteredProvider(p, metrics)
                                             for k, p in providers.items()}
        async with trio.open_nursery() as root:
            committer = GroupCommitter(event_log)
            await root.start(committer.run)
            runs = LocalRuns(await root.start(_hold_nursery), metrics)
            node_tail = NodeTail(event_log, node_id=node_id, local_actor=runs.get,
                                 subscriber_buffer=config.subscriber_buffer,
                                 poll_ms=config.tail_poll_ms)
            reading = ReadingService(runs=runs, log_=event_log, store=store, clock=clock,
                                     tenants=security.enabled, node_tail=node_tail)
            admission = Admission(config, log_=event_log, runs=runs, clock=clock)
            projector = None
            if run_projector:
                projector = Projector(event_log, store, consumer=f"projector-{node_id}",
                                      claim_idle_ms=int(config.projector_claim_idle_s * 1000),
                                      block_ms=config.projector_block_ms,
                                      retention_s=config.retention_s,
                                      linger_s=config.projector_linger_ms / 1000)
            # -- policies: thread policies and idempotent submits (their state is in Redis)
            policies = ThreadPolicies(writer, event_log.keys, node_id=node_id,
                                      find_actor=runs.get, poll_ms=config.thread_poll_ms,
                                      ended_ttl_s=config.retention_s)
            idempotency = IdempotencyRecords(writer, event_log.keys,
                                             ttl_s=config.idempotency_ttl_s)
            runtime = CodyRuntime(
                config=config,
                submission=SubmissionService(
                    config, runs=runs, log_=event_log, store=store, providers=metered,
                    clock=clock, node_id=node_id,
                    actor_log=MeteredActorLog(
                        ActorLog(committer, event_log, on_end=policies.release), metrics),
                    reading=reading, admission=admission, policies=policies,
                    idempotency=idempotency, catalogue=catalogue,
                    provider_env=config.provider_env(), node_tail=node_tail),
                reading=reading,
                threads=ThreadService(runs=runs, store=store),
                lifecycle=Lifecycle(runs=runs, log_=event_log, store=store),
                admission=admission, security=security,
                models=ModelService(catalogue, config.provider_env()),
                listing=RunListingService(runs=runs, log_=event_log, store=store,
                                          reading=reading, clock=clock),
                observability=MetricsService(metrics, log_=event_log, clock=clock),
                log=event_log, store=store, runs=runs, projector=projector,
                catalogue=catalogue, metrics=metrics, node_id=node_id, node_tail=node_tail)
            children: list[ChildSpec] = [
                ChildSpec("node-tail", node_tail.run, RestartPolicy.PERMANENT)]
            if projector is not None:
                children.append(ChildSpec("projector", projector.run, RestartPolicy.PERMANENT))
            janitor = Janitor(event_log, node_id=node_id, local_runs=runs.actors, clock=clock,
                              lease_ttl_s=config.lease_ttl_s,
                              interval_s=config.janitor_interval_s,
                              on_settle=policies.release_ended)
            children.append(ChildSpec("janitor", janitor.run, RestartPolicy.PERMANENT))
            children.append(ChildSpec("thread-policies", policies.run, RestartPolicy.PERMANENT))
            if config.max_tenant_runs:
                children.append(ChildSpec("admission", admission.run, RestartPolicy.PERMANENT))
            metrics.attach(ScrapeSources(
                runs_started=lambda: runs.stats.runs_started,
                runs_live=lambda: len(runs.actors), slow_dropped=runs.slow_dropped,
                janitor_endings=lambda: janitor.ended))
            if workers is not None:
                children.extend(workers(runtime))
            if children:
                await root.start(supervise, children, supervisor or SupervisorOptions())
            try:
                yield runtime
            finally:
                with trio.CancelScope(shield=True):
                    await runtime.lifecycle.drain()
                root.cancel_scope.cancel()


async def _hold_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery for run actors that lives as long as the root one."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()
