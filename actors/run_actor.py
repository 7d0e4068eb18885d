"""One run actor per run: the only writer of its stream (SPEC §6), a trio driver of its turn.

The rules of the turn (seq, the prompt item, usage totals, the tool loop, max iterations, how
cancel and failure end it, append-then-fold) are the pure machine of
``runtime/turn_machine.py``. This actor only does what the machine asks, and tells it how it
went:

- ``SendRequest``: builds the provider request from the conversation items, streams the body
  through the provider's normaliser into the machine. A reader task pulls the body while the
  actor waits on Redis, and each round the actor feeds everything that arrived meanwhile in
  one go (the machine merges the deltas that queued up), so the append round trip is shared by
  every token that came during the previous one; idle, a round is one chunk and nothing waits;
- ``RunTools``: runs the calls concurrently (``actors/tools.py``);
- ``Append``: appends the batch through its :class:`RunLog`, riding out a Redis outage with
  capped, jittered backoff, then tells the machine (which folds the events) and *only then*
  publishes them to subscribers: what a client sees is in Redis (SPEC §5);
- ``Finished``: records the run's status.

Fenced (issue 12, node loss): when this node stalled past its lease (SIGSTOP, a long pause, a
VM freeze), another node's janitor has ended its runs ``RUN_ORPHANED`` meanwhile; the next
append of such a run is refused by Redis (:class:`~runtime.errors.RunFenced`, atomic with the
janitor's ending, ``runtime/eventlog.py``). The machine then finishes the turn with no ending
of its own, and the actor stops at once: the provider call is dropped, nothing more is
written (no status either: the janitor's ``error`` stands), its subscribers here are closed
(they read the janitor's ending from Redis) and one warning names the run.

Deadlines (``RunLimits``): a failed append mid-turn is retried for ``append_deadline_s``; past
it the turn ends ``RUN_FAILED``. Every ending (complete, error, aborted) is written within one
deadline, ``ending_deadline_s``, that covers its retries and the wait on the group committer:
it is shielded from the cancellation of the runtime shutting down, but not from its own
deadline, and past it the run is left for the janitor, which ends it RUN_ORPHANED once Redis
is back. SIGTERM exits within the drain deadline regardless (``api/server.py``).

A run actor is never restarted (that would call the model twice). ``cancel`` stops the
provider call and the tools at once and ends the turn ``aborted``; an unexpected exception ends
it with ``response_error`` RUN_FAILED, so no Response is ever left ``in_progress``.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import trio

from actors.fanout import Fanout, LogEntry
from actors.providers.protocols import protocol as wire_protocol
from actors.providers.provider import ModelProvider, ProviderCall
from actors.providers.settings import RequestSettings
from actors.tools import ToolResult, ToolRunner
from runtime import (
    Append,
    CodyError,
    Command,
    Finished,
    OutputItem,
    Response,
    ResponseReducer,
    RunFenced,
    RuntimeConfig,
    RunTools,
    SendRequest,
    TurnLimits,
    TurnMachine,
    TurnSpec,
    WallClock,
    child_traceparent,
    is_infrastructure,
    new_traceparent,
)

log = logging.getLogger(__name__)

class RunLog(Protocol):
    """What the actor needs of the Redis event log.

    ``append`` either stores the whole batch and returns its entry ids, or raises (a
    ``RedisUnavailable`` is retried; a ``RunFenced``, the run ended by another node's janitor,
    stops the actor) having stored none of it; cancelled while its batch is still queued, it
    is withdrawn (``runtime/group_commit.py``). ``set_status`` leaves a status a janitor set."""

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]: ...

    async def set_status(self, run_id: str, status: str) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec(TurnSpec):
    """The turn (``TurnSpec``, the machine's input) plus what only the driver needs: how to
    ask the provider. A subclass, so the turn's fields are written once."""

    protocol: str
    """The provider's wire protocol (actors/providers/protocols.py): its request builder and
    stream normaliser."""
    settings: RequestSettings
    traceparent: str | None = None
    """The run's W3C trace context (the submit's ``traceparent``); None: a new trace."""

    def turn(self) -> TurnSpec:
        return self


@dataclass(frozen=True, slots=True)
class RunLimits:
    max_iterations: int = 50
    coalesce_max_chars: int = 8192
    """Adjacent deltas of an item that queued up meanwhile merge up to this size; 0: never."""
    read_ahead: int = 64
    """Provider chunks read ahead while an append is in flight (then the reader waits)."""
    max_round_bytes: int = 262_144
    """At most this much provider body is fed and appended in one round."""
    append_deadline_s: float = 30.0
    """A failed append mid-turn is retried this long; then the turn ends RUN_FAILED."""
    ending_deadline_s: float = 10.0
    """The whole ending (its append, retries, the status) is written within this, or the run
    is left for the janitor."""
    append_backoff_s: float = 0.1
    """First delay between append retries; doubled each time, up to ``append_backoff_max_s``,
    each delay drawn in [delay / 2, delay] (jitter, so runs do not retry in lockstep)."""
    append_backoff_max_s: float = 2.0

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> RunLimits:
        return cls(max_iterations=config.max_iterations,
                   coalesce_max_chars=config.coalesce_max_chars,
                   append_deadline_s=config.append_deadline_s,
                   ending_deadline_s=config.ending_deadline_s)


async def _read_provider(provider: ModelProvider, call: ProviderCall,
                         send: trio.MemorySendChannel[bytes | Exception],
                         scope: trio.CancelScope) -> None:
    """Open the request and pull its body into ``send``, inside ``scope`` (which ``cancel``
    cancels). A failure is passed on as an item, so that the actor raises it itself, in order
    after the bytes that came before it; the channel closes when the body ends."""
    with scope:
        async with send:
            try:
                async with provider.stream(call) as body:
                    pump = getattr(body, "pump", None)
                    if pump is not None:  # the live client: one idle deadline per stream
                        await pump(send)
                    else:
                        async for chunk in body:
                            if chunk:
                                await send.send(chunk)
            except Exception as exc:
                await send.send(exc)


async def _gather(receive: trio.MemoryReceiveChannel[bytes | Exception], max_bytes: int
                  ) -> tuple[list[bytes], Exception | None]:
    """Wait for the next chunk, then take what else is already queued, up to ``max_bytes``.
    No chunks and no error: the body has ended."""
    chunks: list[bytes] = []
    size = 0
    try:
        item = await receive.receive()
        while True:
            if isinstance(item, Exception):
                return chunks, item
            chunks.append(item)
            size += len(item)
            if size >= max_bytes:
                break
            item = receive.receive_nowait()
    except (trio.WouldBlock, trio.EndOfChannel):
        pass
    return chunks, None


def _single(exc: Exception) -> Exception:
    """The one exception inside (nested) groups of one, for a readable RUN_FAILED."""
    while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class RunActor:
    def __init__(self, spec: RunSpec, *, log_: RunLog, provider: ModelProvider,
                 tools: ToolRunner, clock: WallClock, limits: RunLimits,
                 subscriber_buffer: int, rng: random.Random | None = None) -> None:
        self.spec = spec
        self._wire = wire_protocol(spec.protocol)
        self._log = log_
        self._provider = provider
        self._tools = tools
        self._limits = limits
        self._rng = rng or random.Random()
        self.traceparent = spec.traceparent or new_traceparent()
        self._clock = clock
        self.accepted_at_ms = clock.now_ms()
        self.machine = self._new_machine()
        self.fanout = Fanout(subscriber_buffer)
        self._work: trio.CancelScope | None = None  # the provider reader or the tools
        self._cancel_reason: str | None = None
        self._cancel_told = False
        self._cancel_requested = trio.Event()
        self._ending_deadline = math.inf
        self.finished = trio.Event()
        self._ran = False

    def _new_machine(self) -> TurnMachine:
        limits = self._limits
        return TurnMachine(self.spec.turn(), traceparent=self.traceparent,
                           now_ms=self._clock.now_ms,
                           limits=TurnLimits(max_iterations=limits.max_iterations,
                                             coalesce_max_chars=limits.coalesce_max_chars))

    # ------------------------------------------------------------------ public face

    @property
    def cancel_requested(self) -> trio.Event:
        """Set by the first :meth:`cancel` (a queued run waits for its turn or this)."""
        return self._cancel_requested

    def replace_history(self, history: tuple[OutputItem, ...]) -> None:
        """Before :meth:`run` only: a queued turn learns its history when its turn comes
        (``actors/thread_policies.py``)."""
        if self._ran:
            raise RuntimeError(f"run {self.run_id} has started: its history is fixed")
        self.spec = replace(self.spec, history=history)
        self.machine = self._new_machine()

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def reducer(self) -> ResponseReducer:
        """The Response folded from what Redis took."""
        return self.machine.reducer

    def snapshot(self) -> Response | None:
        return self.machine.snapshot()

    @property
    def fenced(self) -> bool:
        """The run was ended by another node's janitor: this actor stopped without an ending,
        and its snapshot is not the run's Response (the janitor's ending is not in it)."""
        return self.machine.fenced

    def queued(self) -> Response:
        """The run as it reads before its ``response_start`` is stored: ``queued`` (waiting
        for its thread, or just accepted)."""
        spec = self.spec
        return Response(id=spec.run_id, turn_id=spec.turn_id, thread_id=spec.thread_id,
                        agent_id=spec.agent_id, model_id=spec.model_id,
                        provider_id=spec.provider_id, created_at=self.accepted_at_ms,
                        updated_at=self.accepted_at_ms, status="queued")

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Idempotent; ends the turn ``aborted`` unless its ending is already decided."""
        if self.machine.ending or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._cancel_requested.set()
        if self._work is not None:
            self._work.cancel()

    async def run(self) -> None:
        self._ran = True
        try:
            ending = await self._drive(self.machine.start(), until_ending=True)
            if not ending and not self.machine.finished:  # never: the machine always ends
                log.error("run %s: the turn stopped without an ending", self.run_id)
                ending = self.machine.fail(RuntimeError("the turn stopped without an ending"))
            if ending:
                await self._end(ending)
        except Exception:  # a bug in the driver: never take the other runs down with it
            log.exception("run %s: its actor failed; the run is left for the janitor",
                          self.run_id)
        finally:
            self.fanout.close()
            self.finished.set()

    # ------------------------------------------------------------------ the driver

    async def _drive(self, commands: list[Command], *, until_ending: bool) -> list[Command]:
        """Carry out the machine's commands one by one. With ``until_ending``, stop at the
        ending (its terminal append, or ``Finished``) and return what is left to do."""
        while commands:
            cmd = commands[0]
            if until_ending and (isinstance(cmd, Finished) or
                                 (isinstance(cmd, Append) and cmd.terminal)):
                return commands
            try:
                if isinstance(cmd, Append):
                    commands = await self._append(cmd)
                elif isinstance(cmd, SendRequest):
                    commands = await self._exchange(cmd)
                elif isinstance(cmd, RunTools):
                    commands = await self._run_tools(cmd)
                else:
                    await self._finished(cmd)
                    return []
            except Exception as exc:
                log.exception("run %s failed", self.run_id)
                failure = _single(exc)
                commands = self._tell(partial(self.machine.fail, failure))
        return []

    def _tell(self, outcome: Callable[[], list[Command]] | None = None) -> list[Command]:
        """Tell the machine ``outcome``, and first of a cancel that came meanwhile, so that it
        never asks for a request or a tool run the user no longer wants."""
        commands: list[Command] = []
        if self._cancel_reason is not None and not self._cancel_told:
            self._cancel_told = True
            commands += self.machine.cancel(self._cancel_reason)
        return commands + outcome() if outcome is not None else commands

    async def _end(self, commands: list[Command]) -> None:
        """The ending, within one deadline, shielded from the runtime's own cancellation."""
        self._ending_deadline = trio.current_time() + self._limits.ending_deadline_s
        with trio.CancelScope(deadline=self._ending_deadline, shield=True):
            await self._drive(commands, until_ending=False)
        if not self.machine.finished:
            if self.machine.awaiting_append:
                self.machine.append_failed(TimeoutError("ending deadline passed"))
            log.warning("run %s: its ending could not be written within %g s; left for the "
                        "janitor", self.run_id, self._limits.ending_deadline_s)

    async def _finished(self, cmd: Finished) -> None:
        if cmd.fenced:
            log.warning("run %s: fenced: another node ended it while this node was stalled "
                        "past its lease; stopped, writing nothing more", self.run_id)
            return
        if cmd.status is None:
            log.warning("run %s: its ending could not be stored; left for the janitor",
                        self.run_id)
            return
        try:
            await self._log.set_status(self.run_id, cmd.status)
        except CodyError:
            log.warning("run %s: could not record status %s", self.run_id, cmd.status)

    # ------------------------------------------------------------------ provider

    async def _exchange(self, cmd: SendRequest) -> list[Command]:
        """One model request, streamed through the normaliser into the machine."""
        if self._cancel_reason is not None:  # cancelled meanwhile: no request at all
            return self._tell()
        spec = self.spec
        call = ProviderCall(run_id=spec.run_id, provider_id=spec.provider_id,
                            model_id=spec.model_id, prompt=spec.prompt, exchange=cmd.exchange,
                            body=self._wire.build_request(cmd.items, self._tools.specs,
                                                          spec.settings),
                            traceparent=child_traceparent(self.traceparent))
        normaliser = self._wire.normaliser(spec.run_id)
        send, receive = trio.open_memory_channel[bytes | Exception](self._limits.read_ahead)
        reader = self._work = trio.CancelScope()
        failure: Exception | None = None
        try:
            async with trio.open_nursery() as nursery, receive:
                nursery.start_soon(_read_provider, self._provider, call, send, reader)
                try:
                    while not normaliser.finished:
                        chunks, failure = await _gather(receive, self._limits.max_round_bytes)
                        if chunks:
                            payloads = normaliser.feed(b"".join(chunks))
                            commands = await self._appends_while_streaming(
                                self._tell(partial(self.machine.receive_payloads, payloads)))
                            if commands:
                                return commands
                        if failure is not None or not chunks:
                            break
                finally:
                    reader.cancel()
        finally:
            self._work = None
        if self._cancel_reason is not None:
            return self._tell()
        if failure is not None:
            error = failure
            return self._tell(partial(self.machine.fail, error))
        if not normaliser.finished:
            tail = normaliser.end_of_stream()
            commands = await self._appends_while_streaming(
                self._tell(partial(self.machine.receive_payloads, tail)))
            if commands:
                return commands
        return self._tell(self.machine.provider_ended)

    async def _appends_while_streaming(self, commands: list[Command]) -> list[Command]:
        """Carry out the appends a round of payloads asks for; anything else (the ending)
        stops the stream and goes back to the driver."""
        while commands and isinstance(commands[0], Append) and not commands[0].terminal:
            commands = await self._append(commands[0])
        return commands

    # ------------------------------------------------------------------ tools

    async def _run_tools(self, cmd: RunTools) -> list[Command]:
        if self._cancel_reason is not None:
            return self._tell()
        results: list[ToolResult | None] = [None] * len(cmd.calls)

        async def run_one(i: int) -> None:
            c = cmd.calls[i]
            results[i] = await self._tools.run(c.name, c.arguments)

        with trio.CancelScope() as work:
            self._work = work
            try:
                async with trio.open_nursery() as nursery:
                    for i in range(len(cmd.calls)):
                        nursery.start_soon(run_one, i)
            finally:
                self._work = None
        if self._cancel_reason is not None or work.cancelled_caught:
            return self._tell()
        done = [r for r in results if r is not None]
        return self._tell(partial(self.machine.tool_results, done))

    # ------------------------------------------------------------------ the log

    async def _append(self, cmd: Append) -> list[Command]:
        """Store the batch, then fold (the machine) and publish; or tell the machine it
        failed, publishing nothing."""
        ids, error = await self._store(cmd)
        if ids is None:
            assert error is not None
            return self._tell(partial(self.machine.append_failed, error))
        commands = self._tell(self.machine.append_succeeded)
        self.fanout.publish(tuple(LogEntry(i, ev.type, d)
                                  for i, ev, d in zip(ids, cmd.events, cmd.data, strict=True)))
        return commands

    async def _store(self, cmd: Append) -> tuple[list[str] | None, Exception | None]:
        """Append, riding out a Redis outage with capped, jittered backoff: the entry ids, or
        the error once retrying is over.

        Mid-turn, the append itself is shielded (its outcome must be known: a half-known
        batch would leave a seq gap or a duplicate) and retried until ``append_deadline_s``
        or a cancel, which ends the turn. An ending is retried until the ending deadline, which
        the surrounding scope enforces on the append itself too."""
        limits = self._limits
        terminal = cmd.terminal
        deadline = (self._ending_deadline if terminal
                    else trio.current_time() + limits.append_deadline_s)
        delay = limits.append_backoff_s
        while True:
            try:
                with trio.CancelScope(shield=not terminal):
                    return await self._log.append(self.run_id, cmd.data, cmd.checkpoint_seq), None
            except RunFenced as exc:  # a janitor ended the run: never retried, not a bug
                return None, exc
            except Exception as exc:
                if not is_infrastructure(exc):  # a bug, not an outage: retrying cannot help
                    log.error("run %s: append failed: %r", self.run_id, exc)
                    return None, exc
                error = exc
            left = deadline - trio.current_time()
            if left <= 0 or (not terminal and self._cancel_requested.is_set()):
                return None, error
            wait = min(left, delay * self._rng.uniform(0.5, 1.0))
            log.warning("run %s: Redis unavailable, retrying append in %.2fs (%.0fs left)",
                        self.run_id, wait, left)
            with trio.move_on_after(wait):
                if terminal:
                    await trio.sleep_forever()
                else:  # a cancel stops the retries: the turn ends aborted instead
                    await self._cancel_requested.wait()
            delay = min(delay * 2, limits.append_backoff_max_s)
