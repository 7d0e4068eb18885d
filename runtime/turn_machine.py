"""The rules of one turn, as a pure state machine: told what happened, it says what to do.

In the style of h11 and h2 (STYLE.md habit 16): no socket, no trio, no Redis in here. A driver
(the run actor, ``actors/run_actor.py``; the offline harness, ``tests/harness.py``) does the I/O
and tells the machine how it went; the machine answers with *commands*::

    driver tells it                      it may answer
    -----------------------------------  -----------------------------------------------------
    start()                              Append (response_start, the prompt item)
    receive_payloads(normaliser output)  Append (items, deltas, usage; an error ends the turn)
    provider_ended()                     RunTools, or Append (the turn's response_done)
    tool_results([...])                  Append (function_call_output items)
    cancel(reason) / fail(exc)           Append (the ending: aborted / response_error)
    append_succeeded()                   the next command: SendRequest, RunTools, Append, Finished
    append_failed(exc)                   Append (the ending, from the first seq not stored), or
                                         Finished(None) when it was the ending that failed
    append_fenced()                      Finished(None, fenced=True): nothing more, no ending
    (or append_failed(RunFenced))

One command at a time: after an ``Append`` it waits for ``append_succeeded`` or
``append_failed``; after ``SendRequest`` for the provider's payloads and ``provider_ended`` (or
``fail``); after ``RunTools`` for ``tool_results`` (or ``fail``). ``cancel`` and ``fail`` are
welcome at any time; once the ending is decided, later provider payloads and tool results are
ignored, so a driver never has to take back a command it already started.

The rules it owns (they were interleaved with trio code in the run actor, and copied into the
test harness, before):

- ``seq`` (through :class:`~runtime.envelope.EventFactory`) and the Response (through
  :class:`~runtime.reducer.ResponseReducer`);
- **append, then fold**: an event is folded into the Response only once the driver says Redis
  took it, so nothing is shown (``snapshot``, or published by the driver) that is not stored.
  After a failed append the seqs of that batch are issued again, to the ending: no gap;
- the prompt item first, right after ``response_start``, its ``item_start`` carrying the prompt
  as ``initial_content`` (SPEC §3), with a persistence checkpoint (SPEC §5);
- checkpoints at ``response_start``, at each ``item_done`` and at the terminal event;
- usage: each request's ``usage_update`` is shown as the turn's running total, and the turn's
  ``response_done`` carries the total over the requests that finished;
- the provider's ``response_done`` is held back: with function calls and ``tool_calls`` the turn
  goes on (tools, then the next request, whose conversation is the thread's history, the prompt
  and everything the turn has produced); otherwise it becomes the turn's ``response_done``;
- tool outputs become ``function_call_output`` items (origin ``tool_harness``, id derived from the
  call), in the order of the calls;
- at most ``max_iterations`` model requests; then the turn ends ``max_iterations``;
- the endings: a provider's ``response_error`` as is; a cancel cancels the open items, then
  ``turn_aborted_by_user`` and ``response_done`` aborted; a failure (a provider error raised, an
  exception, an append that could not be stored) is ``response_error`` with the provider's code
  or ``RUN_FAILED``. If not even ``response_start`` was stored, the ending brings it again, so the
  stream is always a whole Response;
- fenced (issue 12, node loss): an append refused because someone else ended the run (a
  janitor's ``RUN_ORPHANED``, written while this node was stalled past its lease) ends the turn
  at once with no ending of its own: the janitor's terminal event is already the stream's last,
  and a second one would break the stream;
- adjacent deltas of one item that queued up are merged (:mod:`runtime.coalesce`).

This module is pure: it imports neither trio nor coredis, nor anything from ``actors/``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from runtime.coalesce import coalesce_deltas
from runtime.envelope import EventFactory, encode_event
from runtime.errors import RUN_FAILED, CodyError, ProviderError, RunFenced, TurnProtocolError
from runtime.ids import prompt_item_id, tool_output_item_id
from runtime.reducer import ResponseReducer
from runtime.schema import (
    ErrorInfo,
    FunctionCallItem,
    FunctionCallOutputItem,
    ItemCancelled,
    ItemDelta,
    ItemDone,
    ItemErrorPayload,
    ItemStart,
    MessageItem,
    OutputItem,
    Payload,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    ResponseStatus,
    StreamEvent,
    TurnAbortedByUser,
    Usage,
    UsageUpdate,
)

__all__ = ["Append", "Command", "Finished", "RunTools", "SendRequest", "ToolOutcome",
           "TurnLimits", "TurnMachine", "TurnSpec"]


#: What the driver is told when it answers something the machine does not await.
_NOT_AWAITED = {"provider": "no model request is in progress", "tools": "no tools are running"}


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class TurnSpec:
    """What the turn is: who, which model, the prompt, and the thread's earlier turns."""

    run_id: str
    thread_id: str
    turn_id: str
    agent_id: str | None
    provider_id: str
    model_id: str
    prompt: str
    history: tuple[OutputItem, ...] = ()
    """Earlier turns of the thread, in order, as the provider must see them again."""


@dataclass(frozen=True, slots=True)
class TurnLimits:
    max_iterations: int = 50
    """Model requests per turn; a tool loop still going after that many ends the turn."""
    coalesce_max_chars: int = 8192
    """Adjacent deltas of one item that queued up merge up to this size; 0: never."""


class ToolOutcome(Protocol):
    """One tool call's result (``actors.tools.ToolResult`` is one)."""

    @property
    def output(self) -> str: ...

    @property
    def success(self) -> bool: ...


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Append:
    """Append ``data`` (the encoded ``events``, in order) to the run's stream, in one round
    trip, with a persistence checkpoint at ``checkpoint_seq`` when it is not None; then say
    ``append_succeeded`` (and publish the events) or ``append_failed`` (and publish nothing;
    ``append_fenced`` when Redis refused it because someone else ended the run).
    ``terminal``: this batch ends the run's stream."""

    events: tuple[StreamEvent, ...]
    data: tuple[bytes, ...]
    checkpoint_seq: int | None
    terminal: bool


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send model request number ``exchange`` (0-based) of the turn, its conversation being
    ``items``; feed the body to a fresh normaliser and the payloads to ``receive_payloads``,
    then say ``provider_ended`` (or ``fail`` if the request itself failed)."""

    exchange: int
    items: tuple[OutputItem, ...]


@dataclass(frozen=True, slots=True)
class RunTools:
    """Run these function calls (concurrently, if you like); say ``tool_results`` with one
    outcome per call, in this order."""

    calls: tuple[FunctionCallItem, ...]


@dataclass(frozen=True, slots=True)
class Finished:
    """The turn is over. ``status``: the run's terminal status, now in Redis (record it), or
    None when its ending could not be stored (the run is left for the janitor). ``fenced``:
    the run was ended by someone else (a janitor) and its appends are refused; ``status`` is
    None and there is nothing to record: stop, writing nothing more."""

    status: ResponseStatus | None
    fenced: bool = False


Command = Append | SendRequest | RunTools | Finished


# --------------------------------------------------------------------------- endings


@dataclass(frozen=True, slots=True)
class _Complete:
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class _Abort:
    reason: str


@dataclass(frozen=True, slots=True)
class _Error:
    payload: ResponseErrorPayload


_Ending = _Complete | _Abort | _Error

_CLOSES_ITEM = (ItemDone, ItemCancelled, ItemErrorPayload)


# --------------------------------------------------------------------------- the machine


class TurnMachine:
    """One turn's rules. See the module docstring for the inputs and the commands.

    Args:
        spec: the turn.
        traceparent: the run's W3C traceparent (one trace per run).
        now_ms: the injectable wall clock (timestamps, ``created_at``).
        limits: max iterations, delta merging.
    """

    def __init__(self, spec: TurnSpec, *, traceparent: str, now_ms: Callable[[], int],
                 limits: TurnLimits | None = None) -> None:
        self.spec = spec
        self.limits = limits or TurnLimits()
        self._traceparent = traceparent
        self._now_ms = now_ms
        self._factory = EventFactory(spec.run_id, traceparent, now_ms)
        self.reducer = ResponseReducer()
        """Folded from stored events only."""
        self._started = False
        self._start_payloads: tuple[Payload, ...] = ()
        self._start_stored = False
        self._open: dict[str, None] = {}  # items started and not closed, in stored events
        self._items: list[OutputItem] = []  # the turn's finished items: the next conversation
        self._usage: Usage | None = None  # the turn's total over finished requests
        # the model request in progress
        self._exchange = 0
        self._calls: list[FunctionCallItem] = []
        self._request_usage: Usage | None = None
        self._done: ResponseDone | None = None
        # what the driver is doing for us: "provider", "tools" or None
        self._awaiting: str | None = None
        self._next: str | None = None  # "request" / "tools", once everything is stored
        # the outbox: payloads decided, not yet stamped; one batch in flight at a time
        self._outbox: list[Payload] = []
        self._outbox_checkpoint = False
        self._in_flight: Append | None = None
        self._ending: _Ending | None = None
        self._ending_sent = False
        self._finished = False
        self._fenced = False

    # ------------------------------------------------------------------ state

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def ending(self) -> bool:
        """The turn's ending has been decided (it may not be stored yet)."""
        return self._ending is not None or self._finished

    @property
    def finished(self) -> bool:
        """``Finished`` has been issued: nothing more will be asked."""
        return self._finished

    @property
    def fenced(self) -> bool:
        """The run was ended by someone else: the turn finished without an ending of its own,
        and what is folded here is not the run's Response (the janitor's ending is not in it)."""
        return self._fenced

    @property
    def awaiting_append(self) -> bool:
        """An ``Append`` is out and its outcome not yet told."""
        return self._in_flight is not None

    @property
    def next_seq(self) -> int:
        """The seq the next event will get: one more than the last one stored or in flight."""
        return self._factory.next_seq

    @property
    def usage(self) -> Usage | None:
        """The turn's usage total over the model requests that finished."""
        return self._usage

    def snapshot(self) -> Response | None:
        """The Response as stored so far; None before ``response_start`` is stored."""
        return self.reducer.snapshot() if self.reducer.started else None

    # ------------------------------------------------------------------ what happened

    def start(self) -> list[Command]:
        """The turn begins: ``response_start`` and the prompt item, then the first request."""
        if self._started:
            raise TurnProtocolError("start: the turn has already started")
        self._started = True
        spec = self.spec
        prompt = MessageItem(id=prompt_item_id(spec.run_id), origin="user", role="user",
                             content=spec.prompt)
        self._items.append(prompt)
        self._start_payloads = (
            ResponseStart(response_id=spec.run_id, turn_id=spec.turn_id,
                          thread_id=spec.thread_id, agent_id=spec.agent_id,
                          model_id=spec.model_id, provider_id=spec.provider_id,
                          created_at=self._now_ms()),
            ItemStart(item_id=prompt.id, item_type="message",
                      initial_content=spec.prompt or None),
            ItemDone(item_id=prompt.id, final_item=prompt),
        )
        self._outbox += self._start_payloads
        self._outbox_checkpoint = True
        self._next = "request"
        return self._advance()

    def receive_payloads(self, payloads: Iterable[Payload]) -> list[Command]:
        """Canonical payloads from the normaliser of the request in progress."""
        if not self._accepts("provider", "receive_payloads"):
            return []
        out = self._outbox
        for p in payloads:
            cls = p.__class__
            if cls is ItemDelta or cls is ItemStart:  # the hot path: one per token
                out.append(p)
            elif isinstance(p, ItemDone):
                item = p.final_item
                self._items.append(item)
                if isinstance(item, FunctionCallItem):
                    self._calls.append(item)
                self._outbox_checkpoint = True
                out.append(p)
            elif isinstance(p, UsageUpdate):
                self._request_usage = p.usage
                total = p.usage if self._usage is None else self._usage + p.usage
                out.append(UsageUpdate(response_id=self.spec.run_id, usage=total))
            elif isinstance(p, ResponseDone):
                self._done = p
            elif isinstance(p, ResponseErrorPayload):
                self._end(_Error(p))
                break
            else:
                out.append(p)
        return self._advance()

    def provider_ended(self) -> list[Command]:
        """The request's body is over (the normaliser has given its terminal payload, or its
        ``end_of_stream`` payloads have been fed)."""
        if not self._accepts("provider", "provider_ended"):
            return []
        self._awaiting = None
        if self._request_usage is not None:
            self._usage = self._request_usage if self._usage is None else (
                self._usage + self._request_usage)
        done = self._done
        if done is None:  # a normaliser always ends with a terminal payload
            return self.fail(RuntimeError("provider stream ended without a terminal event"))
        if self._calls and done.finish_reason == "tool_calls":
            self._next = "tools"
        else:
            self._end(_Complete(done.finish_reason))
        return self._advance()

    def tool_results(self, results: Sequence[ToolOutcome]) -> list[Command]:
        """One outcome per call of the last ``RunTools``, in its order."""
        if not self._accepts("tools", "tool_results"):
            return []
        calls = self._calls
        if len(results) != len(calls):
            raise TurnProtocolError(f"tool_results: {len(results)} results for "
                                    f"{len(calls)} calls")
        self._awaiting = None
        out = self._outbox
        for call, result in zip(calls, results, strict=True):
            item = FunctionCallOutputItem(id=tool_output_item_id(call.call_id),
                                          origin="tool_harness", call_id=call.call_id,
                                          output=result.output, success=result.success)
            self._items.append(item)
            out += (ItemStart(item_id=item.id, item_type="function_call_output",
                              call_id=call.call_id),
                    ItemDone(item_id=item.id, final_item=item))
        self._outbox_checkpoint = True
        self._exchange += 1
        if self._exchange >= self.limits.max_iterations:
            self._end(_Complete("max_iterations"))
        else:
            self._next = "request"
        return self._advance()

    def cancel(self, reason: str) -> list[Command]:
        """The user cancelled: open items are cancelled and the turn ends ``aborted``.
        Ignored once the ending is decided."""
        if not self._started:
            raise TurnProtocolError("cancel: the turn has not started")
        if self._ending is not None or self._finished:
            return []
        self._end(_Abort(reason))
        return self._advance()

    def fail(self, exc: BaseException) -> list[Command]:
        """Something failed (the provider request, a tool runner, the driver): the turn ends
        with ``response_error``, the provider's code for a ``ProviderError``, else
        ``RUN_FAILED``. Ignored once the ending is decided."""
        if not self._started:
            raise TurnProtocolError("fail: the turn has not started")
        if self._ending is not None or self._finished:
            return []
        self._end(_Error(self._error_payload(exc)))
        return self._advance()

    def append_succeeded(self) -> list[Command]:
        """Redis took the last ``Append``: its events are folded; publish them."""
        batch = self._in_flight
        if batch is None:
            raise TurnProtocolError("append_succeeded: no append is in flight")
        self._in_flight = None
        apply = self.reducer.apply
        opened = self._open
        for ev in batch.events:
            apply(ev)
            cls = ev.payload.__class__
            if cls is ItemDelta:
                continue
            if cls is ItemStart:
                opened[ev.payload.item_id] = None  # type: ignore[union-attr]
            elif cls in _CLOSES_ITEM:
                opened.pop(ev.payload.item_id, None)  # type: ignore[union-attr]
        self._start_stored = True
        if batch.terminal:
            self._finished = True
            return [Finished(self.reducer.status)]
        return self._advance()

    def append_failed(self, exc: BaseException) -> list[Command]:
        """Redis did not take the last ``Append`` (the driver has given up retrying): nothing
        of it is folded, its seqs go to the ending; what was queued after it is dropped. If
        it was the ending itself, the turn is over unstored (``Finished(None)``). A
        :class:`~runtime.errors.RunFenced` is :meth:`append_fenced`."""
        if isinstance(exc, RunFenced):
            return self.append_fenced()
        batch = self._in_flight
        if batch is None:
            raise TurnProtocolError("append_failed: no append is in flight")
        self._in_flight = None
        self._factory = EventFactory(self.spec.run_id, self._traceparent, self._now_ms,
                                     first_seq=batch.events[0].seq)
        self._outbox.clear()
        self._outbox_checkpoint = False
        if batch.terminal:
            self._finished = True
            return [Finished(None)]
        if self._ending is None:
            self._end(_Error(self._error_payload(exc)))
        return self._advance()

    def append_fenced(self) -> list[Command]:
        """Redis refused the last ``Append`` because the run was ended by someone else (a
        janitor's ``RUN_ORPHANED``: this node stalled past its lease): nothing of it is
        folded, and nothing more is asked, not even an ending (the janitor's terminal event
        is already the last one). Whatever comes later (payloads, tool results, a cancel) is
        ignored. Always ``Finished(None, fenced=True)``."""
        if self._in_flight is None:
            raise TurnProtocolError("append_fenced: no append is in flight")
        self._in_flight = None
        self._outbox.clear()
        self._outbox_checkpoint = False
        self._next = None
        self._awaiting = None
        self._fenced = True
        self._finished = True
        return [Finished(None, fenced=True)]

    # ------------------------------------------------------------------ the rules

    def _end(self, ending: _Ending) -> None:
        self._ending = ending
        self._next = None
        self._awaiting = None

    def _error_payload(self, exc: BaseException) -> ResponseErrorPayload:
        if isinstance(exc, ProviderError):
            error = ErrorInfo(code=exc.code, message=exc.message,
                              details=dict(exc.details or {}) or None)
        else:
            message = exc.message if isinstance(exc, CodyError) else str(exc)
            error = ErrorInfo(code=RUN_FAILED, message=f"run failed: {message}",
                              details={"exception": type(exc).__name__})
        return ResponseErrorPayload(response_id=self.spec.run_id, error=error)

    def _ending_payloads(self, before: list[Payload]) -> list[Payload]:
        """The terminal payloads, after ``before`` (what goes in the same batch ahead of
        them): computed when they are stamped, so an abort cancels exactly the items that
        are open in what is stored."""
        ending = self._ending
        run_id = self.spec.run_id
        if isinstance(ending, _Complete):
            return [ResponseDone(response_id=run_id, status="complete", usage=self._usage,
                                 finish_reason=ending.finish_reason)]
        if isinstance(ending, _Abort):
            open_items = dict(self._open)
            for p in before:
                if isinstance(p, ItemStart):
                    open_items[p.item_id] = None
                elif isinstance(p, _CLOSES_ITEM):
                    open_items.pop(p.item_id, None)
            reason = ending.reason
            return [*(ItemCancelled(item_id=i, reason=reason) for i in open_items),
                    TurnAbortedByUser(turn_id=self.spec.turn_id, reason=reason),
                    ResponseDone(response_id=run_id, status="aborted", usage=self._usage,
                                 finish_reason=None)]
        assert isinstance(ending, _Error)
        return [ending.payload]

    def _accepts(self, awaiting: str, event: str) -> bool:
        """Whether ``event``, the answer to what the machine awaits (``awaiting``), is taken:
        not once the turn is ending (a late answer is ignored), and never unasked for."""
        if self._ending is not None or self._finished:
            return False
        if self._awaiting != awaiting:
            raise TurnProtocolError(f"{event}: {_NOT_AWAITED[awaiting]}")
        return True

    def _advance(self) -> list[Command]:
        """The next command, if the machine is not waiting on one: stored first, then on."""
        if self._in_flight is not None or self._finished:
            return []
        if self._ending is not None:
            if self._ending_sent:
                return []
            self._ending_sent = True
            before = self._outbox if self._start_stored else [*self._start_payloads]
            return [self._stamp([*before, *self._ending_payloads(before)], terminal=True)]
        if self._outbox:
            return [self._stamp(self._outbox, terminal=False)]
        step = self._next
        if step is None:
            return []
        self._next = None
        if step == "tools":
            self._awaiting = "tools"
            return [RunTools(tuple(self._calls))]
        self._awaiting = "provider"
        self._calls = []
        self._request_usage = None
        self._done = None
        return [SendRequest(self._exchange, (*self.spec.history, *self._items))]

    def _stamp(self, payloads: list[Payload], *, terminal: bool) -> Append:
        """The payloads as the next events (seq, time, trace), encoded, as one batch."""
        if len(payloads) > 1:
            payloads = coalesce_deltas(payloads, self.limits.coalesce_max_chars)
        events = tuple(map(self._factory.make, payloads))
        data = tuple(map(encode_event, events))
        checkpoint = events[-1].seq if terminal or self._outbox_checkpoint else None
        self._outbox = []
        self._outbox_checkpoint = False
        batch = Append(events, data, checkpoint, terminal)
        self._in_flight = batch
        return batch
