"""The submission service: turning a ``TurnRequest`` into a running run actor, and stopping one.

It owns the policy of a submit, in this order: nothing is accepted while draining
(``503 SHUTTING_DOWN``); the model and provider are resolved through the catalogue
(runtime/catalogue.py: a catalogue id, or ``<provider>/<provider's model name>`` sent as is;
``UNKNOWN_PROVIDER``, ``INVALID_MODEL``) and the provider must be configured
(``PROVIDER_NOT_CONFIGURED``, naming the variable its key belongs in); the run's reasoning
settings are the model's defaults unless the run names its own (``reasoning_effort``,
``thinking_budget``); the requested tools must be enabled on this server; a client's
``run_id`` must be new (``409 CONFLICT``). Then it gathers the thread's history, wires the
actor (provider, tools, limits, the log it writes through), records the run's metadata, asks
the thread policies whether it may start (``actors/thread_policies.py``: start, ``409
THREAD_BUSY``, or queued behind the running turn, interrupting it for ``interrupt``) and
starts it in the runs nursery (a queued one first waits there for its turn; it holds its
admission slot while it waits).

With an ``Idempotency-Key`` (:meth:`SubmissionService.submit_idempotent`) a submit happens at
most once per key and body (``actors/idempotency.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial

import trio

from actors.admission import Admission
from actors.idempotency import IdempotencyRecords
from actors.local_runs import LocalRuns, freshest
from actors.node_tail import NodeTail
from actors.providers.provider import ModelProvider
from actors.providers.settings import RequestSettings
from actors.reading import ReadingService
from actors.run_actor import RunActor, RunLimits, RunSpec
from actors.thread_policies import ThreadPolicies
from actors.tools import ExecPolicy, ToolRunner
from runtime import (
    DEFAULT_TENANT,
    TERMINAL_STATUSES,
    Catalogue,
    Conflict,
    EventLog,
    GroupCommitter,
    OutputItem,
    Overloaded,
    ProviderNotConfigured,
    Resolved,
    Response,
    RuntimeConfig,
    Store,
    ThreadBusy,
    TurnAccepted,
    TurnRequest,
    ValidationFailed,
    WallClock,
    history_items,
    new_uuid,
    parse_traceparent,
    reasoning_defaults,
)

log = logging.getLogger(__name__)

CANCEL_WAIT_S = 30.0
"""How long a cancel waits for the run's ending to be written before answering."""


class ActorLog:
    """What a run actor writes through: appends group-committed, status direct."""

    def __init__(self, committer: GroupCommitter, event_log: EventLog,
                 on_end: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._committer = committer
        self._log = event_log
        self._on_end = on_end
        """Called before a terminal status is recorded (the thread release): if it fails,
        the run stays registered live and the janitor settles it."""

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]:
        return await self._committer.append(run_id, events, checkpoint_seq)

    async def set_status(self, run_id: str, status: str) -> None:
        """Unless a janitor ended the run meanwhile: then its status stays (``EventLog.
        set_status`` is conditional, atomically)."""
        if self._on_end is not None and status in TERMINAL_STATUSES:
            await self._on_end(run_id)
        if not await self._log.set_status(run_id, status):
            log.warning("run %s: status %s not recorded: another node ended the run", run_id,
                        status)


class SubmissionService:
    def __init__(self, config: RuntimeConfig, *, runs: LocalRuns, log_: EventLog,
                 store: Store, providers: dict[str, ModelProvider], clock: WallClock,
                 node_id: str, actor_log: ActorLog, reading: ReadingService,
                 catalogue: Catalogue, provider_env: Mapping[str, str],
                 policies: ThreadPolicies, idempotency: IdempotencyRecords,
                 admission: Admission | None = None,
                 node_tail: NodeTail | None = None) -> None:
        self._config = config
        self._catalogue = catalogue
        self._provider_env = provider_env
        self._runs = runs
        self._log = log_
        self._store = store
        self._providers = providers
        self._clock = clock
        self._node_id = node_id
        self._actor_log = actor_log
        self._reading = reading
        self._policies = policies
        self._idempotency = idempotency
        self._admission = admission or Admission(config, log_=log_, runs=runs, clock=clock)
        self._node_tail = node_tail

    # ------------------------------------------------------------------ policy

    def resolve_model(self, req: TurnRequest) -> Resolved:
        """The provider and model a turn runs on (runtime/catalogue.py ``Catalogue.resolve``).

        Raises:
            UnknownProvider: ``provider_id``, or the ``<provider>/`` of ``model``, is not in
                the catalogue.
            InvalidModel: ``model`` is neither a catalogue id nor ``<provider>/<name>``, or it
                is not served by ``provider_id``.
        """
        return self._catalogue.resolve(req.model, req.provider_id)

    def _provider_for(self, provider_id: str) -> ModelProvider:
        provider = self._providers.get(provider_id)
        if provider is None:
            # live mode leaves out a provider whose key is not set: say which variable
            self._catalogue.api_key(provider_id, self._provider_env)
            raise ProviderNotConfigured(
                f"provider {provider_id!r} is not available on this server",
                details={"field": "provider_id", "provider": provider_id})
        return provider

    def _tools_for(self, req: TurnRequest) -> list[str]:
        enabled = self._config.effective_tools
        tools = list(enabled) if req.tools is None else req.tools
        for name in tools:
            if name not in enabled:
                raise ValidationFailed(f"tools: {name!r} is not enabled on this server "
                                       f"(enabled: {', '.join(enabled) or 'none'})",
                                       details={"field": "tools"})
        return tools

    async def _check_new(self, run_id: str) -> None:
        """Whoever's it is: an id another tenant used must not start a second run on the same
        Redis keys (it is refused as taken; nothing of that run is shown)."""
        if run_id in self._runs or await self._log.run_exists(run_id) or \
                await self._store.response_tenant(run_id) is not None:
            raise Conflict(f"run {run_id} already exists", details={"field": "run_id"})

    async def history(self, thread_id: str, *, tenant: str = DEFAULT_TENANT,
                      ended: Sequence[str] = ()) -> list[OutputItem]:
        """Earlier finished turns of a thread, as the provider must see them again
        (``runtime.thread_policy.history_items``: complete turns, and the finished part of
        interrupted ones). ``ended``: runs that just ended on the thread, maybe on another
        node and not stored yet; each is taken from here or rebuilt from its stream."""
        stored = await self._store.list_thread_responses(thread_id, tenant=tenant)
        fresher = [*self._runs.recent_on(thread_id),
                   *(r for r in self._runs.live_on(thread_id) if r.status in TERMINAL_STATUSES)]
        known = {r.id for r in (*stored, *fresher) if r.status in TERMINAL_STATUSES}
        for run_id in ended:
            if run_id not in known and (rebuilt := await self._reading.rebuild(run_id)) \
                    and rebuilt.thread_id == thread_id:
                fresher.append(rebuilt)
        responses: list[Response] = freshest(stored, fresher)
        return history_items(responses)

    # ------------------------------------------------------------------ submit and cancel

    async def submit_idempotent(self, req: TurnRequest, key: str | None, *,
                                tenant: str = DEFAULT_TENANT, traceparent: str | None = None
                                ) -> tuple[TurnAccepted, bool]:
        """:meth:`submit`, at most once per ``Idempotency-Key`` and body (``key`` None: just
        submit): the response, and whether it replays an earlier submit's.

        Raises:
            IdempotencyMismatch: the key was used for another body.
            IdempotencyInProgress: the key's first submit is still under way.
            ...: whatever :meth:`submit` raises.
        """
        if key is None:
            return await self.submit(req, tenant=tenant, traceparent=traceparent), False
        self._runs.check_accepting()
        return await self._idempotency.submit_once(
            req, key, tenant=tenant,
            submit=partial(self.submit, tenant=tenant, traceparent=traceparent))

    async def submit(self, req: TurnRequest, *, tenant: str = DEFAULT_TENANT,
                     traceparent: str | None = None) -> TurnAccepted:
        """``traceparent``: the request's W3C header; valid, it becomes the run's trace.

        Raises (besides the policy errors above):
            NotFound: ``thread_id`` is another tenant's.
            Overloaded: a node or tenant admission limit is reached (actors/admission.py).
            ThreadBusy: ``multitask_strategy`` reject, and the thread has a turn running.
        """
        self._runs.check_accepting()
        self._admission.check_node()
        resolved = self.resolve_model(req)
        provider_id, model_id = resolved.provider.id, resolved.model_id
        protocol = resolved.provider.protocol
        provider = self._provider_for(provider_id)
        tools = self._tools_for(req)
        run_id = req.run_id or new_uuid()
        if req.run_id is not None:  # a fresh uuid4 cannot collide; a client's may repeat one
            await self._check_new(run_id)
        thread_id = req.thread_id or new_uuid()
        turn_id = req.turn_id or new_uuid()
        await self._store.ensure_thread(thread_id, tenant=tenant)
        cfg = self._config
        effort, budget = reasoning_defaults(protocol, resolved.reasoning,
                                            cfg.default_reasoning_effort,
                                            cfg.default_thinking_budget)
        effort = req.reasoning_effort or effort  # the run's own choice wins, field by field
        budget = req.thinking_budget or budget
        spec = RunSpec(
            run_id=run_id, thread_id=thread_id, turn_id=turn_id, agent_id=req.agent_id,
            provider_id=provider_id, protocol=protocol, model_id=model_id, prompt=req.prompt,
            settings=RequestSettings(model_name=resolved.wire_name, reasoning_effort=effort,
                                     thinking_budget=budget),
            history=tuple(await self.history(thread_id, tenant=tenant)) if req.thread_id
            else (),
            traceparent=parse_traceparent(traceparent),
        )
        runner = ToolRunner(cfg.workspace_root, enabled=tools, timeout_s=cfg.tool_timeout_s,
                            output_cap=cfg.tool_output_cap,
                            exec_policy=ExecPolicy.from_config(cfg))
        actor = RunActor(spec, log_=self._actor_log, provider=provider, tools=runner,
                         clock=self._clock, limits=RunLimits.from_config(cfg),
                         subscriber_buffer=cfg.subscriber_buffer)
        await self._admission.acquire(tenant, run_id)
        try:  # again, with no await until reserve: exact under a burst of submits
            self._admission.check_node()
        except Overloaded:
            await self._admission.release(run_id)
            raise
        self._runs.reserve(actor)
        try:
            meta: dict[str, str | int] = {
                "thread_id": thread_id, "turn_id": turn_id, "status": "in_progress",
                "node": self._node_id, "provider_id": provider_id, "model_id": model_id,
                "protocol": protocol, "tenant": tenant, "created_at": self._clock.now_ms()}
            if req.agent_id:
                meta["agent_id"] = req.agent_id
            await self._log.put_meta(run_id, meta)
            policy = await self._policies.admit(
                run_id, thread_id, req.multitask_strategy or cfg.multitask_strategy)
        except BaseException:
            self._runs.release(run_id)
            await self._admission.release(run_id)
            raise
        if policy.decision == "busy":
            # its trace goes first: while it is registered and not local, a janitor would
            # end it as an orphan
            try:
                await self._policies.forget_refused(run_id)
            finally:
                self._runs.release(run_id)
                await self._admission.release(run_id)
            running = [r for r, _ in policy.running]
            raise ThreadBusy(f"thread {thread_id} has a turn running ({', '.join(running)}); "
                             f"send it later, or with multitask_strategy enqueue or interrupt",
                             details={"field": "thread_id", "running": running})
        before = None
        if policy.waits:
            try:
                await self._log.set_status(run_id, "queued")
                await self._policies.interrupt(policy.running)
            except BaseException:
                try:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await self._policies.abandon(run_id)
                        await self._policies.forget_refused(run_id)
                finally:
                    self._runs.release(run_id)
                    await self._admission.release(run_id)
                raise
            load = partial(self._queued_history, tenant=tenant)
            before = partial(self._policies.wait_turn, actor, load)
        self._runs.start(actor, on_end=lambda: self._admission.release(run_id), before=before)
        return TurnAccepted(run_id=run_id, thread_id=thread_id, turn_id=turn_id,
                            events_url=f"/api/v2/runs/{run_id}/events",
                            status="queued" if policy.waits else "in_progress")

    async def _queued_history(self, thread_id: str, ended: Sequence[str], *,
                              tenant: str = DEFAULT_TENANT) -> tuple[OutputItem, ...]:
        return tuple(await self.history(thread_id, tenant=tenant, ended=ended))

    async def cancel(self, run_id: str, *, tenant: str = DEFAULT_TENANT) -> Response:
        """Idempotent: a live run ends ``aborted`` (waited for, up to :data:`CANCEL_WAIT_S`);
        any run answers with its Response as it then is. A run whose actor is on another
        node is cancelled by its owner, told through Redis (actors/node_tail.py).

        Raises:
            NotFound: no such run (or another tenant's).
        """
        await self._reading.check_owner(run_id, tenant)
        actor = self._runs.get(run_id)
        if actor is not None:
            actor.cancel()
            with trio.move_on_after(CANCEL_WAIT_S):
                await actor.finished.wait()
        elif self._node_tail is not None:
            await self._node_tail.cancel_remote(run_id, reason="cancelled by user",
                                                wait_s=CANCEL_WAIT_S)
        return await self._reading.get_response(run_id, tenant=tenant)
