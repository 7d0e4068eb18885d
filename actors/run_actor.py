"""One run actor per run: the only writer of its stream (SPEC §6).

The actor drives the turn: it builds each provider request from the thread's history and the
turn so far, feeds the provider's bytes to the normaliser, wraps the payloads into events with
gapless ``seq``, folds them into its reducer, appends them to Redis (one pipelined round trip per
chunk, with a persistence checkpoint where SPEC §5 asks for one) and only then publishes them to
subscribers. Function calls run as tools, concurrently, and their outputs feed the next request.

A run actor is never restarted (that would call the model twice). ``cancel`` stops the
provider call and the tools at once and ends the turn ``aborted``; an unexpected exception ends
it with ``response_error`` RUN_FAILED, so no Response is ever left ``in_progress``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from actors.fanout import Fanout, LogEntry
from actors.providers.anthropic_request import build_anthropic_request
from actors.providers.anthropic_stream import AnthropicMessagesNormaliser
from actors.providers.base import StreamNormaliser, ToolSpec
from actors.providers.openai_request import build_openai_request
from actors.providers.openai_stream import OpenAIResponsesNormaliser
from actors.providers.provider import ModelProvider, ProviderCall
from actors.providers.settings import RequestSettings
from actors.tools import ToolResult, ToolRunner
from runtime.clock import WallClock
from runtime.coalesce import coalesce_deltas
from runtime.envelope import EventFactory, encode_event
from runtime.errors import RUN_FAILED, CodyError, ProviderError, RedisUnavailable
from runtime.ids import new_traceparent, prompt_item_id, tool_output_item_id
from runtime.reducer import ResponseReducer
from runtime.schema import (
    ErrorInfo,
    FunctionCallItem,
    FunctionCallOutputItem,
    ItemCancelled,
    ItemDelta,
    ItemDone,
    ItemStart,
    MessageItem,
    OutputItem,
    Payload,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    TurnAbortedByUser,
    Usage,
    UsageUpdate,
)

log = logging.getLogger(__name__)

NormaliserFactory = Callable[[str], StreamNormaliser]
RequestBuilder = Callable[[Sequence[OutputItem], Sequence[ToolSpec], RequestSettings],
                          dict[str, Any]]

NORMALISERS: dict[str, NormaliserFactory] = {
    "openai": OpenAIResponsesNormaliser,
    "anthropic": AnthropicMessagesNormaliser,
}
REQUEST_BUILDERS: dict[str, RequestBuilder] = {
    "openai": build_openai_request,
    "anthropic": build_anthropic_request,
}


class RunLog(Protocol):
    """What the actor needs of the Redis event log."""

    async def append(self, run_id: str, events: Sequence[bytes],
                     checkpoint_seq: int | None = None) -> list[str]: ...

    async def set_status(self, run_id: str, status: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RunSpec:
    run_id: str
    thread_id: str
    turn_id: str
    agent_id: str | None
    provider_id: str
    model_id: str
    prompt: str
    settings: RequestSettings
    history: tuple[OutputItem, ...]
    """Earlier turns of the thread, in order, as the provider must see them again."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    max_iterations: int = 50
    append_retries: int = 20
    append_backoff_s: float = 0.25
    coalesce_max_chars: int = 8192
    """Adjacent deltas of an item that queued up meanwhile merge up to this size; 0: never."""
    read_ahead: int = 64
    """Provider chunks read ahead while an append is in flight (then the reader waits)."""
    max_round_bytes: int = 262_144
    """At most this much provider body is fed and appended in one round."""


class _Stop(Exception):
    """The turn is over (terminal event emitted)."""


async def _read_ahead(body: AsyncIterator[bytes],
                      send: trio.MemorySendChannel[bytes | Exception]) -> None:
    """Pull the provider body into ``send``; a failure is passed on as an item, so that the
    actor raises it itself, in order after the bytes that came before it."""
    async with send:
        try:
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


class RunActor:
    def __init__(self, spec: RunSpec, *, log_: RunLog, provider: ModelProvider,
                 tools: ToolRunner, clock: WallClock, limits: RunLimits,
                 subscriber_buffer: int) -> None:
        self.spec = spec
        self._log = log_
        self._provider = provider
        self._tools = tools
        self._clock = clock
        self._limits = limits
        self._factory = EventFactory(spec.run_id, new_traceparent(), clock.now_ms)
        self.reducer = ResponseReducer()
        self.fanout = Fanout(subscriber_buffer)
        self._scope = trio.CancelScope()
        self._cancel_reason: str | None = None
        self._open_items: dict[str, None] = {}
        self._turn_items: list[OutputItem] = []
        self._usage: Usage | None = None
        self._terminal = False
        self.finished = trio.Event()

    # ------------------------------------------------------------------ public face

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    def snapshot(self) -> Response | None:
        return self.reducer.snapshot() if self.reducer.started else None

    def cancel(self, reason: str = "cancelled by user") -> None:
        """Idempotent; ends the turn ``aborted`` unless it has already ended."""
        if self._terminal or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        self._scope.cancel()

    async def run(self) -> None:
        try:
            await self._start()
            with self._scope:
                await self._turn()
            if self._cancel_reason is not None and not self._terminal:
                await self._shielded(self._abort(self._cancel_reason))
        except _Stop:
            pass
        except ProviderError as exc:
            await self._shielded(self._provider_failed(exc))
        except Exception as exc:
            log.exception("run %s failed", self.run_id)
            await self._shielded(self._fail(exc))
        finally:
            self.fanout.close()
            self.finished.set()

    # ------------------------------------------------------------------ the turn

    async def _start(self) -> None:
        spec = self.spec
        prompt = MessageItem(id=prompt_item_id(spec.run_id), origin="user", role="user",
                             content=spec.prompt)
        self._turn_items.append(prompt)
        await self._emit([
            ResponseStart(response_id=spec.run_id, turn_id=spec.turn_id,
                          thread_id=spec.thread_id, agent_id=spec.agent_id,
                          model_id=spec.model_id, provider_id=spec.provider_id,
                          created_at=self._clock.now_ms()),
            ItemStart(item_id=prompt.id, item_type="message"),
            ItemDone(item_id=prompt.id, final_item=prompt),
        ], checkpoint=True)

    async def _turn(self) -> None:
        spec = self.spec
        build = REQUEST_BUILDERS[spec.provider_id]
        for exchange in range(self._limits.max_iterations):
            body = build([*spec.history, *self._turn_items], self._tools.specs, spec.settings)
            call = ProviderCall(run_id=spec.run_id, provider_id=spec.provider_id,
                                model_id=spec.model_id, prompt=spec.prompt, exchange=exchange,
                                body=body)
            done, calls = await self._exchange(call)
            if calls and done.finish_reason == "tool_calls":
                await self._run_tools(calls)
                continue
            await self._finish(done.finish_reason)
            return
        await self._finish("max_iterations")

    async def _exchange(self, call: ProviderCall) -> tuple[ResponseDone, list[FunctionCallItem]]:
        """One model request: stream it through the normaliser into the log.

        A reader task keeps pulling the provider's body while the actor waits on Redis, and
        each round the actor takes everything that arrived meanwhile: one normaliser feed, one
        append, with adjacent deltas merged (runtime/coalesce.py). Idle, that is one chunk
        per round, so nothing waits; busy, the append round trip is shared by every token
        that arrived during the previous one."""
        normaliser = NORMALISERS[call.provider_id](call.run_id)
        calls: list[FunctionCallItem] = []
        request_usage: list[Usage] = []
        done: ResponseDone | None = None
        failure: Exception | None = None
        send, receive = trio.open_memory_channel[bytes | Exception](self._limits.read_ahead)
        async with self._provider.stream(call) as body, trio.open_nursery() as nursery:
            nursery.start_soon(_read_ahead, body, send)
            try:
                async with receive:
                    while not normaliser.finished:
                        chunks, error = await _gather(receive, self._limits.max_round_bytes)
                        if chunks:
                            done = await self._absorb(normaliser.feed(b"".join(chunks)),
                                                      calls, request_usage) or done
                        if error is not None:
                            raise error
                        if not chunks:
                            break
            except Exception as exc:  # raised outside the nursery, so not as an ExceptionGroup
                failure = exc
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if not normaliser.finished:
            done = await self._absorb(normaliser.end_of_stream(), calls, request_usage) or done
        if request_usage:
            self._usage = request_usage[-1] if self._usage is None else (
                self._usage + request_usage[-1])
        if done is None:  # the normaliser always ends with a terminal payload
            raise RuntimeError("provider stream ended without a terminal event")
        return done, calls

    async def _absorb(self, payloads: list[Payload], calls: list[FunctionCallItem],
                      request_usage: list[Usage]) -> ResponseDone | None:
        """Pass item payloads through; turn usage into the turn's running total; hold back the
        provider's ``response_done`` (the turn may go on with tools); emit errors and stop."""
        out: list[Payload] = []
        done: ResponseDone | None = None
        checkpoint = False
        for p in payloads:
            if isinstance(p, ItemStart):
                self._open_items[p.item_id] = None
                out.append(p)
            elif isinstance(p, ItemDelta):
                out.append(p)
            elif isinstance(p, ItemDone):
                self._open_items.pop(p.item_id, None)
                self._turn_items.append(p.final_item)
                if isinstance(p.final_item, FunctionCallItem):
                    calls.append(p.final_item)
                checkpoint = True
                out.append(p)
            elif isinstance(p, UsageUpdate):
                request_usage.append(p.usage)
                total = p.usage if self._usage is None else self._usage + p.usage
                out.append(UsageUpdate(response_id=self.run_id, usage=total))
            elif isinstance(p, ResponseDone):
                done = p
            elif isinstance(p, ResponseErrorPayload):
                out.append(p)
                await self._emit(out, terminal=True)
                raise _Stop
            else:
                out.append(p)
        if out:
            await self._emit(out, checkpoint=checkpoint)
        return done

    async def _run_tools(self, calls: list[FunctionCallItem]) -> None:
        results: list[ToolResult | None] = [None] * len(calls)

        async def run_one(i: int, c: FunctionCallItem) -> None:
            results[i] = await self._tools.run(c.name, c.arguments)

        async with trio.open_nursery() as nursery:
            for i, c in enumerate(calls):
                nursery.start_soon(run_one, i, c)
        out: list[Payload] = []
        for c, r in zip(calls, results, strict=True):
            assert r is not None
            item = FunctionCallOutputItem(id=tool_output_item_id(c.call_id),
                                          origin="tool_harness", call_id=c.call_id,
                                          output=r.output, success=r.success)
            self._turn_items.append(item)
            out += [ItemStart(item_id=item.id, item_type="function_call_output",
                              call_id=c.call_id),
                    ItemDone(item_id=item.id, final_item=item)]
        await self._emit(out, checkpoint=True)

    async def _finish(self, finish_reason: str | None) -> None:
        await self._emit([ResponseDone(response_id=self.run_id, status="complete",
                                       usage=self._usage, finish_reason=finish_reason)],
                         terminal=True)

    # ------------------------------------------------------------------ endings

    async def _abort(self, reason: str) -> None:
        out: list[Payload] = [ItemCancelled(item_id=i, reason=reason) for i in self._open_items]
        out += [TurnAbortedByUser(turn_id=self.spec.turn_id, reason=reason),
                ResponseDone(response_id=self.run_id, status="aborted", usage=self._usage,
                             finish_reason=None)]
        self._open_items.clear()
        await self._emit(out, terminal=True)

    async def _provider_failed(self, exc: ProviderError) -> None:
        details = dict(exc.details or {})
        await self._emit([ResponseErrorPayload(
            response_id=self.run_id,
            error=ErrorInfo(code=exc.code, message=exc.message, details=details or None))],
            terminal=True)

    async def _fail(self, exc: BaseException) -> None:
        if self._terminal or not self.reducer.started:
            return
        await self._emit([ResponseErrorPayload(
            response_id=self.run_id,
            error=ErrorInfo(code=RUN_FAILED, message=f"run failed: {exc}",
                            details={"exception": type(exc).__name__}))], terminal=True)

    async def _shielded(self, work: Any) -> None:
        """Endings must be written even while the surrounding scope is being cancelled."""
        with trio.CancelScope(shield=True), trio.move_on_after(30):
            try:
                await work
            except CodyError:
                log.exception("run %s: could not write its ending", self.run_id)

    # ------------------------------------------------------------------ the log

    async def _emit(self, payloads: list[Payload], *, checkpoint: bool = False,
                    terminal: bool = False) -> None:
        if self._terminal:
            return
        payloads = coalesce_deltas(payloads, self._limits.coalesce_max_chars)
        events = [self._factory.make(p) for p in payloads]
        for ev in events:
            self.reducer.apply(ev)
        data = [encode_event(ev) for ev in events]
        seq = events[-1].seq if checkpoint or terminal else None
        with trio.CancelScope(shield=True):  # a half-written batch would leave a seq gap
            ids = await self._append(data, seq)
        if terminal:
            self._terminal = True
        self.fanout.publish(tuple(LogEntry(i, ev.type, d)
                                  for i, ev, d in zip(ids, events, data, strict=True)))
        if terminal:
            status = self.reducer.status
            with trio.CancelScope(shield=True):
                try:
                    await self._log.set_status(self.run_id, status)
                except RedisUnavailable:
                    log.warning("run %s: could not record status %s", self.run_id, status)

    async def _append(self, data: list[bytes], seq: int | None) -> list[str]:
        """Append, riding out a Redis outage for a while: what a client sees must be in Redis,
        so the actor waits rather than publish what it could not store."""
        delay = self._limits.append_backoff_s
        for attempt in range(self._limits.append_retries):
            try:
                return await self._log.append(self.run_id, data, seq)
            except RedisUnavailable:
                if attempt + 1 == self._limits.append_retries:
                    raise
                log.warning("run %s: Redis unavailable, retrying append in %.2fs",
                            self.run_id, delay)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")
