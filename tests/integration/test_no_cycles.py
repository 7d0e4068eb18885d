"""Runs leave nothing for the cyclic garbage collector (issue 16, item 4).

Reference counting frees a run's objects the moment it ends, unless they form cycles; those
wait for a collection, and a full collection of a busy server stalls every stream on the
loop (60-100 ms measured at 500 runs). So: with the collector off, N runs of each shape
(plain turns, the tool loop, a provider error, a dropped stream, a cancel) through an
in-process runtime whose live client talks HTTP to the fake provider, then ``gc.collect()``
must find less than one object per run (it finds none today); one-off caches are warmed by
two runs of each shape first.
"""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio

from actors.system import CodyRuntime
from api.gc_policy import YoungOnlyGC
from bench.rawhttp import get_stream, post_json
from runtime.turns import TurnRequest
from tests import fake_provider
from tests.fake_provider import FakeProvider, Fault
from tests.integration.test_runtime import read_all, runtime_for, turn, wait_stored
from tests.serving import serving

RUNS = 6


def cyclic_garbage() -> tuple[int, Counter[str]]:
    """What a collection finds now, by type (kept for the message, then released)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found, kinds


async def runs_leave_no_cycles(shape: str, make_run: Callable[[], Awaitable[None]]) -> None:
    for _ in range(2):  # warm caches (models, adapters, pools) on the first runs
        await make_run()
    await trio.sleep(0.2)  # the projector folds what the warm-up wrote
    gc.collect()
    gc.disable()
    try:
        for _ in range(RUNS):
            await make_run()
        await trio.sleep(0.5)  # the projector folds and stores the last runs
        found, kinds = cyclic_garbage()
    finally:
        gc.enable()
    assert found < RUNS, f"{shape}: {found / RUNS:.1f} objects in cycles per run: " \
        f"{kinds.most_common(12)}"


async def one_turn(rt: CodyRuntime, request: TurnRequest) -> None:
    accepted = await rt.submission.submit(request)
    await read_all(rt, accepted.run_id)


ON_TCP = pytest.mark.parametrize("redis_url", ["tcp"], indirect=True)


@ON_TCP
async def test_live_runs_leave_no_reference_cycles(tmp_path: Path, redis_url: str,
                                                   key_prefix: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake provider runs in this process; its check of each request against the SDK's
    # schema (pydantic iterating TypedDict fields) leaves cycles of its own. The schema is
    # checked by tests/e2e/test_live_providers.py; here only the runtime's objects count.
    monkeypatch.setattr(fake_provider, "_adapter", lambda api: None)
    with FakeProvider() as fake:
        async with runtime_for(redis_url, key_prefix, tmp_path, replay=False,
                               openai_api_key="test-key", anthropic_api_key="test-key",
                               openai_base_url=fake.openai_base_url,
                               anthropic_base_url=fake.anthropic_base_url,
                               provider_idle_timeout_s=0.5, provider_max_retries=0) as rt:
            with trio.fail_after(120):
                for provider in ("openai", "anthropic"):
                    for name in ("simple_message", "tool_read_file", "provider_error"):
                        request = turn(provider, name)
                        await runs_leave_no_cycles(f"{provider} {name}",
                                                   lambda r=request: one_turn(rt, r))

                    def dropping(provider: str = provider) -> Awaitable[None]:
                        fake.faults.append(Fault("drop", provider=provider, after_blocks=2))
                        return one_turn(rt, turn(provider, "rapid_deltas"))

                    await runs_leave_no_cycles(f"{provider} dropped", dropping)

                    def refused(provider: str = provider) -> Awaitable[None]:
                        fake.faults.append(Fault("status", status=400, provider=provider))
                        return one_turn(rt, turn(provider, "simple_message"))

                    await runs_leave_no_cycles(f"{provider} refused", refused)

                async def cancelled() -> None:
                    fake.faults.append(Fault("stall", stall_s=0.3, after_blocks=2))
                    accepted = await rt.submission.submit(turn("openai", "rapid_deltas"))
                    await trio.sleep(0.02)
                    await rt.submission.cancel(accepted.run_id)
                    await read_all(rt, accepted.run_id)
                    await wait_stored(rt, accepted.run_id)

                await runs_leave_no_cycles("cancelled", cancelled)
    # the fake's handler threads of the stalled streams end on their own: wait for them, so
    # that what they held is not garbage in the next test's count
    with trio.fail_after(10):
        while True:
            if not any("process_request" in t.name for t in threading.enumerate()):
                break
            await trio.sleep(0.05)
    gc.collect()


@ON_TCP
async def test_replayed_runs_leave_no_reference_cycles(tmp_path: Path, redis_url: str,
                                                       key_prefix: str) -> None:
    async with runtime_for(redis_url, key_prefix, tmp_path, replay=True) as rt:
        with trio.fail_after(60):
            for name in ("simple_message", "tool_read_file"):
                request = turn("openai", name)
                await runs_leave_no_cycles(name, lambda r=request: one_turn(rt, r))


HTTP_RUNS = 60


async def http_run(port: int) -> None:
    """A submit and the run's SSE stream, each on a connection of its own (HTTP/1.0: the
    server closes it), as bench/run.py's clients do."""
    status, accepted = await post_json("127.0.0.1", port, "/api/v2/runs", {
        "prompt": "hi", "provider_id": "openai", "model": "gpt-5-mini", "tools": []})
    assert status == 202, accepted
    async for chunk in get_stream("127.0.0.1", port,
                                  f"/api/v2/runs/{accepted['run_id']}/events"):
        if b"response_done" in chunk or b"response_error" in chunk:
            break


async def test_http_runs_leave_nothing_past_a_young_collection(tmp_path: Path) -> None:
    """Over real HTTP, under ``cody serve``'s GC policy (api/gc_policy.py: young collections,
    their survivors frozen), a full collection then finds what the server would keep until
    its next idle moment: less than an object per run. Hypercorn's connection server left
    36 objects per connection in cycles (72 per run) before ``_ConnectionServer``; werkzeug's
    URL matcher makes a small cycle per request, which dies young and is frozen only when a
    young collection happens to run inside the match. (``serving`` serves through
``api.server.http_worker``, which installs the connection server.)"""
    thresholds = gc.get_threshold()
    with trio.fail_after(60):
        async with serving(tmp_path) as served:
            port = int(served.base_url.rsplit(":", 1)[1])
            for _ in range(3):  # warm caches
                await http_run(port)
            await trio.sleep(0.3)
            policy = YoungOnlyGC()
            policy.install()
            try:
                for _ in range(HTTP_RUNS):
                    await http_run(port)
                await trio.sleep(0.5)  # the projector folds and stores the last runs
                assert policy.young > 0
                gc.unfreeze()
                found, kinds = cyclic_garbage()
            finally:
                policy.uninstall()
                gc.unfreeze()
                gc.set_threshold(*thresholds)
    assert found < HTTP_RUNS, f"{found / HTTP_RUNS:.1f} objects in cycles per HTTP run: " \
        f"{kinds.most_common(12)}"
