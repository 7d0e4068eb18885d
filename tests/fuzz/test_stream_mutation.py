"""Recorded provider streams, mutated, into every normaliser and through the turn machine.

Every fixture's wire bytes (all three protocols: openai-responses, anthropic-messages,
openai-chat) are damaged by hypothesis the ways a network or a buggy provider damages them:
bytes dropped, duplicated, swapped, truncated, garbage inserted, and the same at the level of
whole SSE blocks (a block lost, repeated, moved). What must hold whatever the damage:

- the normaliser never raises (actors/providers/base.py: "It never raises on bad input"), in
  any chunking, and after ``end_of_stream`` it is ``finished`` having given exactly one
  terminal payload (``ResponseDone`` or ``ResponseErrorPayload``), the last one;
- the same damaged streams driven through the pure turn machine (``runtime/turn_machine.py``,
  by the offline harness: tools answered, every append stored) finish, raise nothing (the
  machine documents only ``TurnProtocolError``, for a driver that breaks its protocol, which
  the harness never does), and store a gapless stream with exactly one terminal event, last,
  whose fold is the machine's Response.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.providers.fixtures import Exchange, Fixture, FixtureLibrary
from actors.providers.protocols import protocol
from runtime.reducer import rebuild
from runtime.schema import (
    TERMINAL_EVENT_TYPES,
    FunctionCallItem,
    ResponseDone,
    ResponseErrorPayload,
)
from runtime.turn_machine import SendRequest, TurnLimits
from tests.harness import OfflineRun, Outcome

LIBRARY = FixtureLibrary()
FIXTURES = sorted(LIBRARY, key=lambda fx: (fx.protocol, fx.name))
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "12")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


ENDINGS: Counter[tuple[str, str]] = Counter()
"""(normaliser | turn, how it ended), over the module: the figures line."""


def _id(fx: Fixture) -> str:
    return f"{fx.protocol}-{fx.name}"


# --------------------------------------------------------------------------- mutations

Mutation = tuple[str, int, int, int, bytes]
"""(kind, a, b, c, garbage): positions taken modulo the current length."""

KINDS = ("drop", "duplicate", "swap", "truncate", "garbage",
         "drop_block", "duplicate_block", "swap_blocks")

garbage_st = st.one_of(
    st.binary(min_size=1, max_size=40),
    st.sampled_from([b"\n\n", b"\r\n", b"data: ", b"data: {\n\n", b"data: [DONE]\n\n",
                     b"event: error\n", b"data: null\n\n", b'data: {"type": 7}\n\n',
                     b"\xff\xfe", b"data: \x00\n\n", b":\n\n", b"id: \n", b"retry: x\n"]))
mutation_st = st.tuples(st.sampled_from(KINDS), st.integers(0, 2**20), st.integers(0, 2**20),
                        st.integers(1, 400), garbage_st)
mutations_st = st.lists(mutation_st, min_size=1, max_size=6)


def _blocks(data: bytes) -> list[bytes]:
    """The body as SSE blocks, each with its blank-line terminator (the last one may lack it)."""
    out, start = [], 0
    while (end := data.find(b"\n\n", start)) != -1:
        out.append(data[start:end + 2])
        start = end + 2
    if start < len(data):
        out.append(data[start:])
    return out


def mutate(data: bytes, mutations: Sequence[Mutation]) -> bytes:
    for kind, a, b, n, junk in mutations:
        size = len(data)
        if kind.endswith(("block", "blocks")):
            blocks = _blocks(data)
            if not blocks:
                continue
            i, j = a % len(blocks), b % len(blocks)
            if kind == "drop_block":
                del blocks[i]
            elif kind == "duplicate_block":
                blocks.insert(i, blocks[i])
            else:
                blocks[i], blocks[j] = blocks[j], blocks[i]
            data = b"".join(blocks)
            continue
        i = a % (size + 1)
        if kind == "drop":
            data = data[:i] + data[i + n:]
        elif kind == "duplicate":
            data = data[:i + n] + data[i:i + n] + data[i + n:]
        elif kind == "swap":
            j = b % (size + 1)
            i, j = min(i, j), max(i, j)
            first, second = data[i:i + n], data[j:j + n]
            if i + n <= j:
                data = data[:i] + second + data[i + n:j] + first + data[j + n:]
        elif kind == "truncate":
            data = data[:i]
        else:
            data = data[:i] + junk + data[i:]
    return data


def cutter(cuts: list[int]) -> Any:
    def chunks(stream: bytes) -> list[bytes]:
        points = sorted({c % (len(stream) + 1) for c in cuts})
        return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    return chunks


cuts_st = st.lists(st.integers(min_value=0, max_value=2**31), max_size=12)


# --------------------------------------------------------------------------- the normalisers


def check_normaliser(fx: Fixture, stream: bytes, cuts: list[int]) -> None:
    normaliser = protocol(fx.protocol).normaliser("resp-fuzz")
    out = []
    for chunk in cutter(cuts)(stream):
        out += normaliser.feed(chunk)  # never raises
        if normaliser.finished:
            break
    if not normaliser.finished:
        out += normaliser.end_of_stream()
    assert normaliser.finished
    assert normaliser.feed(b"data: more\n\n") == [] and normaliser.end_of_stream() == []
    terminals = [i for i, p in enumerate(out) if isinstance(p, ResponseDone | ResponseErrorPayload)]
    assert terminals == [len(out) - 1], f"terminal payloads at {terminals} of {len(out)}"
    last = out[-1]
    ENDINGS["normaliser", last.error.code if isinstance(last, ResponseErrorPayload)
            else "done"] += 1


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@FUZZ
@given(mutations=mutations_st, cuts=cuts_st)
def test_a_mutated_stream_never_raises_and_ends_once(fx: Fixture, mutations: list[Mutation],
                                                     cuts: list[int]) -> None:
    for exchange in fx.exchanges:
        check_normaliser(fx, mutate(exchange.stream, mutations), cuts)


# --------------------------------------------------------------------------- the turn machine


@dataclasses.dataclass
class MutatedRun(OfflineRun):
    """An offline run whose streams are damaged: any call is answered ``ok`` (the damage may
    invent or lose calls), and a request past the recorded ones gets the last stream again
    (the damage may turn a final answer into a tool call)."""

    def _exchange(self, cmd: SendRequest) -> list[Any]:
        last = len(self.fx.exchanges) - 1
        if cmd.exchange > last:
            cmd = dataclasses.replace(cmd, exchange=last)
        return super()._exchange(cmd)


def answer_ok(exchange: int, calls: Sequence[FunctionCallItem]) -> list[Outcome]:
    return [Outcome("ok", True) for _ in calls]


@pytest.mark.parametrize("fx", FIXTURES, ids=_id)
@FUZZ
@given(mutations=mutations_st, cuts=cuts_st, which=st.integers(0, 3))
def test_a_mutated_turn_ends_with_exactly_one_terminal_event(
        fx: Fixture, mutations: list[Mutation], cuts: list[int], which: int) -> None:
    hit = which % len(fx.exchanges)  # damage one exchange's stream (or, with 3, all of them)
    exchanges = tuple(
        Exchange(ex.request, mutate(ex.stream, mutations) if which == 3 or i == hit
                 else ex.stream, ex.tool_outputs)
        for i, ex in enumerate(fx.exchanges))
    damaged = dataclasses.replace(fx, exchanges=exchanges)
    run = MutatedRun(damaged, cutter(cuts), tools=answer_ok,
                     limits=TurnLimits(max_iterations=4)).run()
    assert run.finished is not None and run.finished.status is not None, "the turn never ended"
    stored = run.stored
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1)), "seq has a gap"
    terminals = [i for i, e in enumerate(stored) if e.type in TERMINAL_EVENT_TYPES]
    assert terminals == [len(stored) - 1], "not exactly one terminal event, last"
    assert stored[0].type == "response_start"
    assert run.machine.snapshot() == rebuild(stored)
    assert run.finished.status == run.response().status
    ENDINGS["turn", run.finished.status] += 1


def test_zz_figures() -> None:
    """Runs after the properties (file order): prints how the damaged streams ended."""
    normaliser = {k: n for (side, k), n in ENDINGS.items() if side == "normaliser"}
    turn = {k: n for (side, k), n in ENDINGS.items() if side == "turn"}
    print(f"FAULT stream_mutation fixtures={len(FIXTURES)} "
          f"streams={sum(normaliser.values())} turns={sum(turn.values())} raised=0 "
          f"not_one_terminal=0 normaliser_endings={dict(sorted(normaliser.items()))} "
          f"turn_statuses={dict(sorted(turn.items()))}".replace(": ", ":").replace(", ", ","))
