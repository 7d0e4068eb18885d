"""Events per second through the hot path: provider bytes -> normaliser -> EventFactory ->
ResponseReducer (and, separately, JSON encoding), over the rapid_deltas and large_response
fixtures of each protocol: OpenAI Responses (``openai``), Anthropic Messages (``anthropic``)
and Chat Completions (``local``, the openai-chat fixtures). Target: >= 200,000 events/s on one
core. The ``turn`` column is what a run actor does minus Redis: the same bytes through the
turn machine (runtime/turn_machine.py: its rules, stamping, encoding, and folding once the
append is acknowledged, which here is at once), with delta merging off so that it writes the
same events as the other columns; compare it with ``+encode``.

    python bench/reducer.py                 # best of 7 runs per stage
    python bench/reducer.py --profile       # plus a cProfile of the whole pipeline
    python bench/reducer.py --synthetic     # factory + reducer only, no fixtures needed
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.providers.base import StreamNormaliser
from actors.providers.fixtures import Fixture, FixtureLibrary
from runtime.envelope import EventFactory, encode_event
from runtime.reducer import ResponseReducer
from runtime.schema import (
    ItemDelta,
    ItemDone,
    ItemStart,
    MessageItem,
    Payload,
    ResponseDone,
    ResponseStart,
    StreamEvent,
)
from runtime.turn_machine import Append, SendRequest, TurnLimits, TurnMachine, TurnSpec

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
RUN = "3f2b8c1e-5d4a-4b6c-9e8f-7a1b2c3d4e5f"
NAMES = ("rapid_deltas", "large_response")
PROVIDERS = ("openai", "anthropic", "local")
"""The fixtures' providers: one per protocol."""
START = ResponseStart(response_id=RUN, turn_id="t", thread_id="th", model_id="m",
                      provider_id="p", created_at=0)


def normaliser(fx: Fixture) -> Callable[[str], StreamNormaliser]:
    """The normaliser of the fixture's protocol."""
    from actors.providers.protocols import protocol

    return protocol(fx.protocol).normaliser


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def normalise(fx: Fixture, make: Callable[[str], StreamNormaliser],
              chunk: int) -> list[Payload]:
    out: list[Payload] = [START]
    for ex in fx.exchanges:
        n = make(RUN)
        for c in chunked(ex.stream, chunk):
            out += n.feed(c)
        if not n.finished:
            out += n.end_of_stream()
    return out


def fold(payloads: Sequence[Payload]) -> list[StreamEvent]:
    factory = EventFactory(RUN, TRACEPARENT, itertools.count(1).__next__)
    reducer = ResponseReducer()
    events: list[StreamEvent] = []
    for p in payloads:
        ev = factory.make(p)
        reducer.apply(ev)
        events.append(ev)
    reducer.snapshot()
    return events


def pipeline(fx: Fixture, make: Callable[[str], StreamNormaliser], chunk: int) -> int:
    """Bytes to Response, as the run actor does it (minus Redis): returns the event count."""
    factory = EventFactory(RUN, TRACEPARENT, itertools.count(1).__next__)
    reducer = ResponseReducer()
    apply, stamp = reducer.apply, factory.make
    apply(stamp(START))
    count = 1
    for ex in fx.exchanges:
        n = make(RUN)
        for c in chunked(ex.stream, chunk):
            for p in n.feed(c):
                apply(stamp(p))
                count += 1
        if not n.finished:
            for p in n.end_of_stream():
                apply(stamp(p))
                count += 1
    reducer.snapshot()
    return count


def turn(fx: Fixture, make: Callable[[str], StreamNormaliser], chunk: int) -> int:
    """Bytes to Response through the turn machine, every append acknowledged at once (no
    tools: the benchmark's fixtures have none); returns the event count."""
    machine = TurnMachine(TurnSpec(run_id=RUN, thread_id="th", turn_id="t", agent_id=None,
                                   provider_id=fx.provider, model_id=fx.model,
                                   prompt=fx.prompt),
                          traceparent=TRACEPARENT, now_ms=itertools.count(1).__next__,
                          limits=TurnLimits(coalesce_max_chars=0))
    count = 0

    def settle(commands: list) -> list:  # type: ignore[type-arg]
        nonlocal count
        while commands and isinstance(commands[0], Append):
            count += len(commands[0].events)
            commands = machine.append_succeeded()
        return commands

    commands = settle(machine.start())
    while commands and isinstance(commands[0], SendRequest):
        n = make(RUN)
        for c in chunked(fx.exchanges[commands[0].exchange].stream, chunk):
            settle(machine.receive_payloads(n.feed(c)))
        if not n.finished:
            settle(machine.receive_payloads(n.end_of_stream()))
        commands = settle(machine.provider_ended())
    machine.snapshot()
    return count


def encode_all(events: Sequence[StreamEvent]) -> list[bytes]:
    return [encode_event(e) for e in events]


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}"


def synthetic(deltas: int = 20_000) -> list[Payload]:
    text = [f"tok{i} " for i in range(deltas)]
    return [START, ItemStart(item_id="msg_1", item_type="message"),
            *[ItemDelta(item_id="msg_1", delta_content=t) for t in text],
            ItemDone(item_id="msg_1", final_item=MessageItem(
                id="msg_1", origin="agent", role="assistant", content="".join(text))),
            ResponseDone(response_id=RUN, status="complete", finish_reason="stop")]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=4096, help="bytes per feed() call")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--provider", choices=PROVIDERS, action="append",
                    help="only this provider's fixtures (repeatable; default all three)")
    args = ap.parse_args(argv)

    if args.synthetic:
        payloads = synthetic()
        t = best(lambda: fold(payloads), args.repeat)
        events = fold(payloads)
        t_enc = best(lambda: [encode_event(e) for e in events], args.repeat)
        print(f"synthetic {len(payloads):,} events: factory+reducer {rate(len(payloads), t)} "
              f"ev/s, encode {rate(len(events), t_enc)} ev/s")
        return 0

    library = FixtureLibrary()
    providers = args.provider or PROVIDERS
    makers = {p: normaliser(library.get(p, NAMES[0])) for p in providers}
    print(f"{'fixture':<34}{'events':>8}{'MB':>7}{'normalise':>13}{'stamp+fold':>13}"
          f"{'pipeline':>13}{'+encode':>13}{'turn':>13}{'MB/s':>8}"
          f"   (events/s, best of {args.repeat})")
    total_events = total_turn = 0
    total_time = total_turn_time = 0.0
    for provider, name in itertools.product(providers, NAMES):
        fx = library.get(provider, name)
        make = makers[provider]
        payloads = normalise(fx, make, args.chunk)
        events = fold(payloads)
        n = len(payloads)
        t_norm = best(partial(normalise, fx, make, args.chunk), args.repeat)
        t_fold = best(partial(fold, payloads), args.repeat)
        t_pipe = best(partial(pipeline, fx, make, args.chunk), args.repeat)
        t_enc = best(partial(encode_all, events), args.repeat)
        n_turn = turn(fx, make, args.chunk)
        t_turn = best(partial(turn, fx, make, args.chunk), args.repeat)
        size = sum(len(ex.stream) for ex in fx.exchanges) / 1e6
        print(f"{fx.protocol + '/' + name:<34}{n:>8,}{size:>7.2f}{rate(n, t_norm)}"
              f"{rate(n, t_fold)}{rate(n, t_pipe)}{rate(n, t_pipe + t_enc)}"
              f"{rate(n_turn, t_turn)}{size / t_pipe:>8.0f}")
        total_events += n
        total_time += t_pipe
        total_turn += n_turn
        total_turn_time += t_turn
    print(f"{'all':<34}{total_events:>8,}{'':>7}{'':>13}{'':>13}"
          f"{rate(total_events, total_time)}{'':>13}{rate(total_turn, total_turn_time)}")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for provider, name in itertools.product(providers, NAMES):
            for _ in range(3):
                pipeline(library.get(provider, name), makers[provider], args.chunk)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
