"""Running recorded fixtures without Redis, HTTP or trio, and comparing Responses with them.

``run_fixture_offline`` does what the run actor does with a provider's bytes (normaliser, tool
loop, usage totals, envelopes, reducer), with the tools' outputs taken from the fixture, so
the normalisers and the reducer can be checked against ``expected.json`` in milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from actors.providers.base import StreamNormaliser
from actors.providers.fixtures import Exchange, Fixture
from runtime.envelope import EventFactory
from runtime.ids import new_traceparent, new_uuid, prompt_item_id, tool_output_item_id
from runtime.reducer import ResponseReducer
from runtime.schema import (
    FunctionCallItem,
    FunctionCallOutputItem,
    ItemDone,
    ItemStart,
    MessageItem,
    Payload,
    Response,
    ResponseDone,
    ResponseErrorPayload,
    ResponseStart,
    StreamEvent,
    Usage,
    UsageUpdate,
)

NormaliserFactory = Callable[[str], StreamNormaliser]
Chunker = Callable[[bytes], Iterable[bytes]]

#: Fields of a Response that differ per run (fixtures/README.md).
PER_RUN_FIELDS = ("id", "turn_id", "thread_id", "agent_id", "created_at", "updated_at")
PROMPT_PLACEHOLDER = "<prompt>"
START_MS = 1_700_000_000_000


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


class _OfflineRun:
    """The run actor's bookkeeping, minus I/O: every payload becomes an event at once."""

    def __init__(self, fx: Fixture, now_ms: Callable[[], int]) -> None:
        self.run_id = new_uuid()
        self.factory = EventFactory(self.run_id, new_traceparent(), now_ms)
        self.reducer = ResponseReducer()
        self.events: list[StreamEvent] = []
        self.usage: Usage | None = None  # the turn's total over finished requests
        self.now_ms = now_ms
        self.fx = fx

    def emit(self, payload: Payload) -> None:
        ev = self.factory.make(payload)
        self.reducer.apply(ev)
        self.events.append(ev)

    def start(self) -> None:
        prompt = MessageItem(id=prompt_item_id(self.run_id), origin="user", role="user",
                             content=self.fx.prompt)
        self.emit(ResponseStart(response_id=self.run_id, turn_id=new_uuid(),
                                thread_id=new_uuid(), model_id=self.fx.model,
                                provider_id=self.fx.provider, created_at=self.now_ms()))
        self.emit(ItemStart(item_id=prompt.id, item_type="message"))
        self.emit(ItemDone(item_id=prompt.id, final_item=prompt))

    def exchange(self, ex: Exchange, normaliser: StreamNormaliser, chunks: Chunker,
                 calls: list[FunctionCallItem]) -> ResponseDone | None:
        """One model request; its function calls go to ``calls``. Returns the provider's
        held-back ``response_done``, or None when the run ended with an error (emitted)."""
        done: ResponseDone | None = None
        request_usage: Usage | None = None
        payloads: list[Payload] = []
        for chunk in chunks(ex.stream):
            payloads += normaliser.feed(chunk)
            if normaliser.finished:
                break
        if not normaliser.finished:
            payloads += normaliser.end_of_stream()
        for p in payloads:
            if isinstance(p, UsageUpdate):
                request_usage = p.usage
                total = p.usage if self.usage is None else self.usage + p.usage
                self.emit(UsageUpdate(response_id=self.run_id, usage=total))
            elif isinstance(p, ResponseDone):
                done = p
            elif isinstance(p, ResponseErrorPayload):
                self.emit(p)
                return None
            else:
                if isinstance(p, ItemDone) and isinstance(p.final_item, FunctionCallItem):
                    calls.append(p.final_item)
                self.emit(p)
        if request_usage is not None:
            self.usage = request_usage if self.usage is None else self.usage + request_usage
        if done is None:
            raise AssertionError(f"{self.fx.name}: the stream ended without a terminal payload")
        return done

    def tool_outputs(self, ex: Exchange, calls: list[FunctionCallItem]) -> None:
        """The fixture's recorded tool outputs, for the calls the normaliser produced."""
        recorded = [t.call_id for t in ex.tool_outputs]
        made = [c.call_id for c in calls]
        if recorded != made:
            raise AssertionError(f"{self.fx.name}: tool outputs for {recorded}, calls {made}")
        for t in ex.tool_outputs:
            item = FunctionCallOutputItem(id=tool_output_item_id(t.call_id),
                                          origin="tool_harness", call_id=t.call_id,
                                          output=t.output, success=t.success)
            self.emit(ItemStart(item_id=item.id, item_type="function_call_output",
                                call_id=t.call_id))
            self.emit(ItemDone(item_id=item.id, final_item=item))

    def finish(self, done: ResponseDone) -> None:
        self.emit(ResponseDone(response_id=self.run_id, status="complete", usage=self.usage,
                               finish_reason=done.finish_reason))


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
        Every event emitted, in order, and the reduced Response.
    """
    make = normalisers[fx.provider] if normalisers is not None else real_normaliser(fx.protocol)
    run = _OfflineRun(fx, now_ms or itertools.count(START_MS).__next__)
    run.start()
    last = len(fx.exchanges) - 1
    for i, ex in enumerate(fx.exchanges):
        calls: list[FunctionCallItem] = []
        done = run.exchange(ex, make(run.run_id), chunks or whole, calls)
        if done is None:
            break
        if calls and done.finish_reason == "tool_calls" and i < last:
            run.tool_outputs(ex, calls)
            continue
        run.finish(done)
        break
    return run.events, run.reducer.snapshot()
