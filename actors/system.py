"""The runtime: one factory, ``open_runtime(config)``, builds everything from one config.

Structure (one root nursery, nothing fire-and-forget)::

    open_runtime
    ├── embedded redis-server (unless CODY_REDIS_URL)     runtime/redis_server.py
    ├── store (SQLite, or PostgreSQL with CODY_STORE_URL)   runtime/store/
    └── root nursery
        ├── supervisor (one_for_one): projector, janitor, extra workers (the HTTP server)
        └── runs nursery: one RunActor per run, never restarted

Tests open as many runtimes side by side as they like, each with its own key prefix, data
dir and store.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.fanout import Fanout
from actors.janitor import Janitor
from actors.projector import Projector
from actors.providers.fixtures import DEFAULT_FIXTURES_DIR, FixtureLibrary
from actors.providers.live import open_live_providers
from actors.providers.provider import ModelProvider
from actors.providers.replay import ReplayProvider
from actors.providers.settings import RequestSettings
from actors.reader import RunReader
from actors.run_actor import RunActor, RunLimits, RunLog, RunSpec
from actors.tools import ExecPolicy, ToolRunner, hide_process_from_commands
from runtime.clock import SystemClock, WallClock
from runtime.config import DEFAULT_PROVIDER_MODEL, RuntimeConfig
from runtime.envelope import decode_event
from runtime.errors import (
    Conflict,
    InvalidModel,
    NotFound,
    ProviderNotConfigured,
    ShuttingDown,
    StreamExpired,
    UnknownProvider,
    ValidationFailed,
)
from runtime.eventlog import EventLog, entry_key, open_redis
from runtime.group_commit import GroupCommitter
from runtime.ids import new_uuid
from runtime.keys import Keys
from runtime.redis_server import embedded_redis
from runtime.reducer import ResponseReducer
from runtime.schema import TERMINAL_EVENT_TYPES, TERMINAL_STATUSES, OutputItem, Response
from runtime.store import Store, Thread, open_store
from runtime.supervisor import ChildSpec, RestartPolicy, SupervisorOptions, supervise
from runtime.turns import TurnAccepted, TurnRequest

log = logging.getLogger(__name__)

PROVIDERS = ("openai", "anthropic")
_CURSOR = re.compile(r"^\d+-\d+$")


@dataclass(slots=True)
class RuntimeStats:
    runs_started: int = 0
    runs_finished: int = 0


@dataclass(slots=True)
class _Finished:
    """Recently finished runs, kept until the projector has surely caught up, so the next turn
    of a thread sees them as history even before they reach the store."""

    responses: OrderedDict[str, Response] = field(default_factory=OrderedDict)
    limit: int = 2048

    def add(self, resp: Response) -> None:
        self.responses[resp.id] = resp
        while len(self.responses) > self.limit:
            self.responses.popitem(last=False)


class CodyRuntime:
    def __init__(self, config: RuntimeConfig, *, log_: EventLog, store: Store,
                 providers: dict[str, ModelProvider], clock: WallClock,
                 runs_nursery: trio.Nursery, node_id: str, actor_log: RunLog) -> None:
        self.config = config
        self.log = log_
        self.store = store
        self.providers = providers
        self.clock = clock
        self.node_id = node_id
        self.actor_log = actor_log
        self.actors: dict[str, RunActor] = {}
        self.stats = RuntimeStats()
        self._runs = runs_nursery
        self._finished = _Finished()
        self.closing = False
        self.projector: Projector | None = None

    # ------------------------------------------------------------------ submit

    def _resolve_model(self, req: TurnRequest) -> tuple[str, str]:
        cfg = self.config
        if req.provider_id is not None and req.provider_id not in PROVIDERS:
            raise UnknownProvider(f"unknown provider {req.provider_id!r}; known: "
                                  f"{', '.join(PROVIDERS)}", details={"field": "provider_id"})
        if req.model is not None:
            entry = cfg.models.get(req.model)
            if entry is None:
                raise InvalidModel(f"unknown model {req.model!r}; allowed: "
                                   f"{', '.join(sorted(cfg.models))}", details={"field": "model"})
            if req.provider_id is not None and entry.provider != req.provider_id:
                raise InvalidModel(f"model {req.model!r} is not served by provider "
                                   f"{req.provider_id!r}", details={"field": "model"})
            return entry.provider, req.model
        if req.provider_id is not None:
            if req.provider_id == cfg.default_provider:
                return req.provider_id, cfg.default_model
            return req.provider_id, DEFAULT_PROVIDER_MODEL[req.provider_id]
        return cfg.default_provider, cfg.default_model

    def _provider_for(self, provider_id: str) -> ModelProvider:
        provider = self.providers.get(provider_id)
        if provider is None:
            raise ProviderNotConfigured(
                f"provider {provider_id!r} has no API key configured on this server "
                f"(set {provider_id.upper()}_API_KEY, or run the server with --replay)",
                details={"field": "provider_id", "provider": provider_id})
        return provider

    async def history(self, thread_id: str, *, exclude: str | None = None) -> list[OutputItem]:
        """Earlier finished turns of a thread, as the provider must see them again."""
        responses = {r.id: r for r in await self.store.list_thread_responses(thread_id)}
        for r in self._finished.responses.values():
            if r.thread_id == thread_id:
                stored = responses.get(r.id)
                if stored is None or stored.status not in TERMINAL_STATUSES:
                    responses[r.id] = r
        items: list[OutputItem] = []
        for r in sorted(responses.values(), key=lambda r: r.created_at):
            if r.id == exclude or r.status not in ("complete",):
                continue
            items.extend(i for i in r.output_items if i.type not in ("error", "cancelled"))
        return items

    async def submit(self, req: TurnRequest) -> TurnAccepted:
        if self.closing:
            raise ShuttingDown("the server is shutting down")
        provider_id, model_id = self._resolve_model(req)
        provider = self._provider_for(provider_id)
        enabled = self.config.effective_tools
        tools = list(enabled) if req.tools is None else req.tools
        for name in tools:
            if name not in enabled:
                raise ValidationFailed(f"tools: {name!r} is not enabled on this server "
                                       f"(enabled: {', '.join(enabled) or 'none'})",
                                       details={"field": "tools"})
        run_id = req.run_id or new_uuid()
        # a fresh uuid4 cannot collide; a client's run_id may repeat one
        if req.run_id is not None and (run_id in self.actors or await self.log.run_exists(
                run_id) or await self.store.get_response(run_id) is not None):
            raise Conflict(f"run {run_id} already exists", details={"field": "run_id"})
        thread_id = req.thread_id or new_uuid()
        turn_id = req.turn_id or new_uuid()
        await self.store.ensure_thread(thread_id)
        entry = self.config.models[model_id]
        effort = req.reasoning_effort or (self.config.default_reasoning_effort
                                          if entry.reasoning and provider_id == "openai" else None)
        budget = req.thinking_budget or (self.config.default_thinking_budget
                                         if entry.reasoning and provider_id == "anthropic"
                                         else None)
        spec = RunSpec(
            run_id=run_id, thread_id=thread_id, turn_id=turn_id, agent_id=req.agent_id,
            provider_id=provider_id, model_id=model_id, prompt=req.prompt,
            settings=RequestSettings(model_name=entry.provider_model, reasoning_effort=effort,
                                     thinking_budget=budget),
            history=tuple(await self.history(thread_id)) if req.thread_id else (),
        )
        runner = ToolRunner(self.config.workspace_root, enabled=tools,
                            timeout_s=self.config.tool_timeout_s,
                            output_cap=self.config.tool_output_cap,
                            exec_policy=ExecPolicy.from_config(self.config))
        actor = RunActor(spec, log_=self.actor_log, provider=provider, tools=runner,
                         clock=self.clock,
                         limits=RunLimits(max_iterations=self.config.max_iterations,
                                           coalesce_max_chars=self.config.coalesce_max_chars),
                         subscriber_buffer=self.config.subscriber_buffer)
        self.actors[run_id] = actor  # before it is registered live: the janitor checks here
        try:
            await self.log.put_meta(run_id, {"thread_id": thread_id, "turn_id": turn_id,
                                             "status": "in_progress", "node": self.node_id,
                                             "provider_id": provider_id, "model_id": model_id})
        except BaseException:
            self.actors.pop(run_id, None)
            raise
        self.stats.runs_started += 1
        self._runs.start_soon(self._run_actor, actor)
        return TurnAccepted(run_id=run_id, thread_id=thread_id, turn_id=turn_id,
                            events_url=f"/api/v2/runs/{run_id}/events")

    async def _run_actor(self, actor: RunActor) -> None:
        try:
            await actor.run()
        finally:
            snap = actor.snapshot()
            if snap is not None:
                self._finished.add(snap)
            self.actors.pop(actor.run_id, None)
            self.stats.runs_finished += 1

    # ------------------------------------------------------------------ reading

    async def get_response(self, run_id: str) -> Response:
        actor = self.actors.get(run_id)
        if actor is not None and (snap := actor.snapshot()) is not None:
            return snap
        stored = await self.store.get_response(run_id)
        if stored is not None and stored.status in TERMINAL_STATUSES:
            return stored
        rebuilt = await self.rebuild(run_id)
        if rebuilt is not None:
            return rebuilt
        if stored is not None:
            return stored
        if actor is not None:  # accepted, its actor not yet past response_start
            spec, now = actor.spec, self.clock.now_ms()
            return Response(id=run_id, turn_id=spec.turn_id, thread_id=spec.thread_id,
                            agent_id=spec.agent_id, model_id=spec.model_id,
                            provider_id=spec.provider_id, created_at=now, updated_at=now,
                            status="queued")
        raise NotFound(f"no run {run_id}", details={"run_id": run_id})

    async def rebuild(self, run_id: str) -> Response | None:
        """The Response replayed from the run's stream (it can always be rebuilt)."""
        reducer = ResponseReducer()
        cursor = "0-0"
        while True:
            page = await self.log.read_after(run_id, cursor, 1000)
            if not page:
                break
            for entry_id, raw in page:
                reducer.apply(decode_event(raw))
                cursor = entry_id
        return reducer.snapshot() if reducer.started else None

    async def open_reader(self, run_id: str, cursor: str | None) -> RunReader | None:
        """A reader after ``cursor``; ``None`` when the cursor is already past the end."""
        cursor = cursor or "0-0"
        if not _CURSOR.match(cursor):
            raise ValidationFailed("Last-Event-ID: must be a stream entry id like 1700000000000-0",
                                   details={"field": "Last-Event-ID"})
        actor = self.actors.get(run_id)

        def find_fanout() -> Fanout | None:
            a = self.actors.get(run_id)
            return a.fanout if a is not None else None

        if actor is None or actor.fanout.closed:
            last = await self.log.last_entry(run_id)
            if last is None:
                if actor is not None:  # started, nothing written yet
                    return RunReader(self.log, run_id, cursor, find_fanout)
                if await self.store.get_response(run_id) is not None:
                    raise StreamExpired(f"the event stream of run {run_id} has expired; "
                                        f"its Response is at /api/v2/runs/{run_id}",
                                        details={"run_id": run_id})
                raise NotFound(f"no run {run_id}", details={"run_id": run_id})
            last_id, last_type = last
            if last_type in TERMINAL_EVENT_TYPES and entry_key(cursor) >= entry_key(last_id):
                return None
        return RunReader(self.log, run_id, cursor, find_fanout)

    async def cancel(self, run_id: str) -> Response:
        actor = self.actors.get(run_id)
        if actor is not None:
            actor.cancel()
            with trio.move_on_after(30):
                await actor.finished.wait()
        return await self.get_response(run_id)

    # ------------------------------------------------------------------ threads

    async def create_thread(self, title: str | None, settings: dict[str, Any]) -> Thread:
        return await self.store.create_thread(new_uuid(), title, settings)

    async def thread_with_runs(self, thread_id: str) -> tuple[Thread, list[Response]]:
        thread = await self.store.get_thread(thread_id)
        if thread is None:
            raise NotFound(f"no thread {thread_id}", details={"thread_id": thread_id})
        runs = {r.id: r for r in await self.store.list_thread_responses(thread_id)}
        # live runs show as they are; one that just ended shows ended before the projector
        # has written it (the store only ever moves forward, so it never shows older)
        recent = [r for r in self._finished.responses.values() if r.thread_id == thread_id]
        live = [snap for actor in list(self.actors.values())
                if actor.spec.thread_id == thread_id and (snap := actor.snapshot()) is not None]
        for r in [*recent, *live]:
            stored = runs.get(r.id)
            if stored is None or stored.status not in TERMINAL_STATUSES:
                runs[r.id] = r
        return thread, sorted(runs.values(), key=lambda r: r.created_at)

    # ------------------------------------------------------------------ lifecycle

    async def ready(self) -> dict[str, bool]:
        """Each check bounded: a hung Redis makes ``/ready`` false, never slow."""
        redis_ok = store_ok = False
        with trio.move_on_after(2):
            try:
                await self.log.ping()
                redis_ok = True
            except Exception:
                pass
        with trio.move_on_after(2):
            try:
                await self.store.ping()
                store_ok = True
            except Exception:
                pass
        return {"redis": redis_ok, "store": store_ok}

    async def drain(self, reason: str = "server shutting down", timeout_s: float = 15.0) -> None:
        """Ends every open run ``aborted`` (each SSE stream gets its terminal event)."""
        self.closing = True
        actors = list(self.actors.values())
        for actor in actors:
            actor.cancel(reason)
        with trio.move_on_after(timeout_s):
            for actor in actors:
                await actor.finished.wait()


class _ActorLog:
    """What a run actor writes through: appends group-committed, status direct."""

    def __init__(self, committer: GroupCommitter, event_log: EventLog) -> None:
        self._committer = committer
        self._log = event_log

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        return await self._committer.append(run_id, events, checkpoint_seq)

    async def set_status(self, run_id: str, status: str) -> None:
        await self._log.set_status(run_id, status)


@asynccontextmanager
async def open_providers(config: RuntimeConfig) -> AsyncIterator[dict[str, ModelProvider]]:
    """Replay mode plays fixtures for both providers; live mode has a client per key."""
    if config.replay:
        fixtures = FixtureLibrary(config.fixtures_dir or DEFAULT_FIXTURES_DIR)
        record = config.data_dir / "replay-requests.jsonl" if config.replay_record_requests \
            else None
        replay = ReplayProvider(fixtures, delay_s=config.replay_delay_s, record_path=record)
        yield {"openai": replay, "anthropic": replay}
        return
    async with open_live_providers(config) as live:
        yield live


@asynccontextmanager
async def open_runtime(config: RuntimeConfig, *, clock: WallClock | None = None,
                       providers: dict[str, ModelProvider] | None = None,
                       workers: Callable[[CodyRuntime], Sequence[ChildSpec]] | None = None,
                       supervisor: SupervisorOptions | None = None,
                       run_projector: bool = True) -> AsyncIterator[CodyRuntime]:
    config.data_dir.mkdir(parents=True, exist_ok=True)
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
            providers = await stack.enter_async_context(open_providers(config))
        node_id = new_uuid()
        async with trio.open_nursery() as root:
            committer = GroupCommitter(event_log)
            await root.start(committer.run)
            runs_nursery = await root.start(_hold_nursery)
            runtime = CodyRuntime(config, log_=event_log, store=store,
                                  providers=providers,
                                  clock=clock or SystemClock(), runs_nursery=runs_nursery,
                                  node_id=node_id, actor_log=_ActorLog(committer, event_log))
            children: list[ChildSpec] = []
            if run_projector:
                projector = Projector(event_log, store, consumer=f"projector-{node_id}",
                                      claim_idle_ms=int(config.projector_claim_idle_s * 1000),
                                      block_ms=config.projector_block_ms,
                                      retention_s=config.retention_s,
                                      linger_s=config.projector_linger_ms / 1000)
                runtime.projector = projector
                children.append(ChildSpec("projector", projector.run, RestartPolicy.PERMANENT))
            janitor = Janitor(event_log, node_id=node_id, local_runs=runtime.actors,
                              clock=runtime.clock, lease_ttl_s=config.lease_ttl_s,
                              interval_s=config.janitor_interval_s)
            children.append(ChildSpec("janitor", janitor.run, RestartPolicy.PERMANENT))
            if workers is not None:
                children.extend(workers(runtime))
            if children:
                await root.start(supervise, children, supervisor or SupervisorOptions())
            try:
                yield runtime
            finally:
                with trio.CancelScope(shield=True):
                    await runtime.drain()
                root.cancel_scope.cancel()


async def _hold_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    """A nursery for run actors that lives as long as the root one."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()
