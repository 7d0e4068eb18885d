"""Playing recorded fixtures through the turn machine without Redis, HTTP or trio.

The rules of a turn live in one place, ``runtime/turn_machine.py``; the run actor drives that
machine with trio, and :class:`OfflineRun` drives the same machine synchronously: the fixture's wire
bytes (cut as the caller likes) go through the provider's real normaliser, its recorded tool
outputs (or any others) answer ``RunTools``, and every ``Append`` is "stored" in a list, or
refused when a test injects an outage. A test can also cancel or fail the turn before any
input. So the normalisers, the machine and the reducer are checked against ``expected.json``
in milliseconds, in any chunking and with any interruption.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from actors.providers.base import StreamNormaliser
from actors.providers.fixtures import Fixture, load_fixture
from actors.providers.settings import RequestSettings
from runtime.catalogue import BUILTIN_MODELS
from runtime.config import RuntimeConfig
from runtime.envelope import EventFactory
from runtime.errors import RUN_ORPHANED, RedisUnavailable, RunFenced
from runtime.ids import new_traceparent, new_uuid, prompt_item_id
from runtime.schema import (
    OUTPUT_ITEM_ADAPTER,
    ErrorInfo,
    FunctionCallItem,
    OutputItem,
    Response,
    ResponseErrorPayload,
    ResponseStart,
    StreamEvent,
)
from runtime.turn_machine import (
    Append,
    Command,
    Finished,
    RunTools,
    SendRequest,
    ToolOutcome,
    TurnLimits,
    TurnMachine,
    TurnSpec,
)

NormaliserFactory = Callable[[str], StreamNormaliser]
Chunker = Callable[[bytes], Iterable[bytes]]
Interrupt = Literal["cancel", "fail"]
ToolAnswer = Callable[[int, Sequence[FunctionCallItem]], Sequence[ToolOutcome]]
"""(exchange index, calls) -> one outcome per call."""

#: Fields of a Response that differ per run (fixtures/README.md).
PER_RUN_FIELDS = ("id", "turn_id", "thread_id", "agent_id", "created_at", "updated_at")
PROMPT_PLACEHOLDER = "<prompt>"
START_MS = 1_700_000_000_000
CANCEL_REASON = "cancelled by user"
INJECTED_FAILURE = "injected failure"
JANITOR_NODE = "node-janitor"


def response_view(resp: Response) -> dict[str, Any]:
    """The Response as ``expected.json`` writes it: JSON mode, without the per-run fields, the
    prompt item's run-derived id written as ``"<prompt>"``."""
    view = resp.model_dump(mode="json")
    for name in PER_RUN_FIELDS:
        view.pop(name, None)
    items = view.get("output_items") or []
    if items and items[0].get("id") == prompt_item_id(resp.id):
        items[0]["id"] = PROMPT_PLACEHOLDER
    return view


def real_normaliser(protocol: str) -> NormaliserFactory:
    """The real normaliser of a wire protocol (or of a built-in provider id), imported late so
    that this module loads without it."""
    from actors.providers.fixtures import BUILTIN_PROTOCOLS
    from actors.providers.protocols import protocol as wire_protocol

    return wire_protocol(BUILTIN_PROTOCOLS.get(protocol, protocol)).normaliser


def whole(stream: bytes) -> Iterable[bytes]:
    return (stream,)


def fixture_history(fx: Fixture) -> tuple[OutputItem, ...]:
    """The thread's earlier turns a fixture recorded after (``after``), as expected."""
    if fx.after is None:
        return ()
    before = load_fixture(fx.path.parent / fx.after)
    return (*fixture_history(before),
            *(OUTPUT_ITEM_ADAPTER.validate_python(i) for i in before.expected["output_items"]))


def request_settings(fx: Fixture) -> RequestSettings:
    """The settings the runtime sends for the fixture's model by default (the openai-chat
    fixtures' models are in their own catalogue, ``cody.toml`` beside them)."""
    if fx.protocol == "openai-chat":
        from runtime.catalogue import load_catalogue

        resolved = load_catalogue(fx.path.parent / "cody.toml", {}, required=True).resolve(
            fx.model)
        return RequestSettings(model_name=resolved.wire_name,
                               reasoning_effort="medium" if resolved.reasoning else None)
    entry = BUILTIN_MODELS[fx.model]
    if fx.provider == "openai":
        return RequestSettings(model_name=entry.name,
                               reasoning_effort="medium" if entry.reasoning else None)
    return RequestSettings(
        model_name=entry.name,
        thinking_budget=RuntimeConfig().default_thinking_budget if entry.reasoning else None)


@dataclass(frozen=True, slots=True)
class Outcome:
    output: str
    success: bool


def recorded_tools(fx: Fixture) -> ToolAnswer:
    """The fixture's recorded tool outputs, checked against the calls the machine asks for."""
    def answer(exchange: int, calls: Sequence[FunctionCallItem]) -> list[Outcome]:
        recorded = fx.exchanges[exchange].tool_outputs
        made = [c.call_id for c in calls]
        if [t.call_id for t in recorded] != made:
            raise AssertionError(f"{fx.name}: tool outputs for "
                                 f"{[t.call_id for t in recorded]}, calls {made}")
        return [Outcome(t.output, t.success) for t in recorded]
    return answer


@dataclass
class OfflineRun:
    """One fixture's turn, driven through :class:`~runtime.turn_machine.TurnMachine` synchronously.

    Args:
        fx: the fixture.
        chunks: how each stream body is cut into the chunks fed to the normaliser.
        normalisers: provider id -> normaliser factory (default: the real ones).
        now_ms: the wall clock (default: 1 ms later on each call, from a fixed start).
        tools: answers ``RunTools`` (default: the fixture's recorded outputs).
        append_ok: ``(batch, attempt number from 0) -> stored?``; default always.
        fence_at: the append attempt (from 0) before which another node's janitor ends the
            run ``RUN_ORPHANED`` (its events go to ``stored``, as Redis would have them);
            that append and any later one are refused as fenced (``RunFenced``).
        interrupt: ``input number from 1 -> "cancel" / "fail" / None``, asked before each
            input after ``start`` (a cancel or a failure that came meanwhile is told first,
            as the run actor does).
        limits: the machine's limits.
    """

    fx: Fixture
    chunks: Chunker = whole
    normalisers: Mapping[str, NormaliserFactory] | None = None
    now_ms: Callable[[], int] | None = None
    tools: ToolAnswer | None = None
    append_ok: Callable[[Append, int], bool] | None = None
    fence_at: int | None = None
    interrupt: Callable[[int], Interrupt | None] | None = None
    limits: TurnLimits = field(default_factory=TurnLimits)
    stored: list[StreamEvent] = field(default_factory=list)
    """Every event "Redis" took, in order (what subscribers would have been sent)."""
    requests: list[SendRequest] = field(default_factory=list)
    appends: list[tuple[Append, bool]] = field(default_factory=list)
    finished: Finished | None = None
    janitor: list[StreamEvent] = field(default_factory=list)
    """The events the janitor wrote when it fenced the run (the last of ``stored``)."""
    inputs: int = 0
    interrupted: list[tuple[int, Interrupt]] = field(default_factory=list)
    """The interrupts that took effect: (input number, what)."""

    def __post_init__(self) -> None:
        fx = self.fx
        self.run_id = new_uuid()
        self.machine = TurnMachine(
            TurnSpec(run_id=self.run_id, thread_id=new_uuid(), turn_id=new_uuid(),
                     agent_id=None, provider_id=fx.provider, model_id=fx.model,
                     prompt=fx.prompt, history=fixture_history(fx)),
            traceparent=new_traceparent(),
            now_ms=self.now_ms or itertools.count(START_MS).__next__, limits=self.limits)
        self._make = (self.normalisers[fx.provider] if self.normalisers is not None
                      else real_normaliser(fx.protocol))
        self._tools = self.tools or recorded_tools(fx)

    def run(self) -> OfflineRun:
        commands = self.machine.start()
        while commands:
            if len(commands) != 1:
                raise AssertionError(f"the machine gave {len(commands)} commands at once")
            cmd = commands[0]
            if isinstance(cmd, Append):
                commands = self._append(cmd)
            elif isinstance(cmd, SendRequest):
                commands = self._exchange(cmd)
            elif isinstance(cmd, RunTools):
                outcomes = self._tools(self.machine_exchange(), cmd.calls)
                commands = self._tell(partial(self.machine.tool_results, outcomes))
            else:
                self.finished = cmd
                break
        return self

    def machine_exchange(self) -> int:
        return self.requests[-1].exchange

    def response(self) -> Response:
        snap = self.machine.snapshot()
        assert snap is not None, "nothing was stored"
        return snap

    # ------------------------------------------------------------------ the driver

    def _tell(self, outcome: Callable[[], list[Command]] | None = None) -> list[Command]:
        self.inputs += 1
        commands: list[Command] = []
        what = self.interrupt(self.inputs) if self.interrupt is not None else None
        if what is not None:
            if not self.machine.ending:  # once the ending is decided, it is ignored
                self.interrupted.append((self.inputs, what))
            commands += (self.machine.cancel(CANCEL_REASON) if what == "cancel"
                         else self.machine.fail(RuntimeError(INJECTED_FAILURE)))
        return commands + outcome() if outcome is not None else commands

    @property
    def actor_stored(self) -> list[StreamEvent]:
        """What the actor's own appends stored (``stored`` without the janitor's ending)."""
        return self.stored[:len(self.stored) - len(self.janitor)]

    def _end_by_janitor(self) -> None:
        """What ``EventLog.end_orphan`` / ``end_unstarted`` would write."""
        spec = self.machine.spec
        last = self.stored[-1] if self.stored else None
        factory = EventFactory(self.run_id, last.trace_context.traceparent or new_traceparent()
                               if last else new_traceparent(), lambda: START_MS,
                               first_seq=last.seq + 1 if last else 1)
        events = [] if last else [factory.make(ResponseStart(
            response_id=self.run_id, turn_id=spec.turn_id, thread_id=spec.thread_id,
            model_id=spec.model_id, provider_id=spec.provider_id, created_at=START_MS))]
        events.append(factory.make(ResponseErrorPayload(
            response_id=self.run_id,
            error=ErrorInfo(code=RUN_ORPHANED, message="run orphaned: node is gone"))))
        self.janitor = events
        self.stored.extend(events)

    def _append(self, cmd: Append) -> list[Command]:
        if self.fence_at is not None and len(self.appends) >= self.fence_at:
            if not self.janitor:
                self._end_by_janitor()
            self.appends.append((cmd, False))
            return self._tell(lambda: self.machine.append_failed(
                RunFenced(self.run_id, JANITOR_NODE)))
        ok = self.append_ok(cmd, len(self.appends)) if self.append_ok is not None else True
        self.appends.append((cmd, ok))
        if not ok:
            return self._tell(lambda: self.machine.append_failed(
                RedisUnavailable("Redis is unavailable: injected")))
        self.stored.extend(cmd.events)
        return self._tell(self.machine.append_succeeded)

    def _appends_while_streaming(self, commands: list[Command]) -> list[Command]:
        while commands and isinstance(commands[0], Append) and not commands[0].terminal:
            commands = self._append(commands[0])
        return commands

    def _exchange(self, cmd: SendRequest) -> list[Command]:
        self.requests.append(cmd)
        if cmd.exchange >= len(self.fx.exchanges):
            raise AssertionError(f"{self.fx.name}: no recorded model request "
                                 f"#{cmd.exchange + 1}")
        normaliser = self._make(self.run_id)
        for chunk in self.chunks(self.fx.exchanges[cmd.exchange].stream):
            payloads = normaliser.feed(chunk)
            commands = self._appends_while_streaming(
                self._tell(partial(self.machine.receive_payloads, payloads)))
            if commands:
                return commands
            if normaliser.finished:
                break
        if not normaliser.finished:
            tail = normaliser.end_of_stream()
            commands = self._appends_while_streaming(
                self._tell(partial(self.machine.receive_payloads, tail)))
            if commands:
                return commands
        return self._tell(self.machine.provider_ended)


def run_fixture_offline(fx: Fixture, chunks: Chunker | None = None, *,
                        normalisers: Mapping[str, NormaliserFactory] | None = None,
                        now_ms: Callable[[], int] | None = None,
                        ) -> tuple[list[StreamEvent], Response]:
    """Play one recorded turn as the run actor would, without I/O.

    Args:
        fx: the fixture.
        chunks: how each stream body is cut into the chunks fed to the normaliser (default:
            one chunk).
        normalisers: provider id -> normaliser factory (default: the real ones).
        now_ms: the wall clock (default: 1 ms later on each call, from a fixed start).

    Returns:
        Every event stored, in order, and the Response.
    """
    run = OfflineRun(fx, chunks or whole, normalisers, now_ms).run()
    return run.stored, run.response()
