"""The runtime on real Redis (TCP and embedded): actors, fan-out, readers, projector, store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from actors.fanout import LogEntry
from actors.projector import Projector
from actors.providers.fixtures import FixtureLibrary
from actors.providers.provider import ProviderCall
from actors.providers.replay import ReplayProvider
from actors.system import CodyRuntime, open_runtime
from runtime.config import RuntimeConfig
from runtime.envelope import decode_event
from runtime.reducer import rebuild
from runtime.schema import Response, StreamEvent
from runtime.turns import TurnRequest
from tests.harness import response_view

LIBRARY = FixtureLibrary()
WORKSPACE = Path(__file__).resolve().parents[2] / "fixtures" / "workspace"


def config_for(redis_url: str, key_prefix: str, data_dir: Path, **more: object) -> RuntimeConfig:
    values: dict[str, object] = dict(redis_url=redis_url, key_prefix=key_prefix,
                                     data_dir=data_dir, workspace_root=WORKSPACE,
                                     exec_enabled=True, tool_timeout_s=1.0,
                                     projector_claim_idle_s=0.3, projector_block_ms=100,
                                     retention_s=120)
    values.update(more)
    return RuntimeConfig.model_validate(values)


@asynccontextmanager
async def runtime_for(redis_url: str, key_prefix: str, data_dir: Path,
                      **kwargs: object) -> AsyncIterator[CodyRuntime]:
    providers = kwargs.pop("providers", None)
    run_projector = bool(kwargs.pop("run_projector", True))
    cfg = config_for(redis_url, key_prefix, data_dir, **kwargs)
    async with open_runtime(cfg, providers=providers,  # type: ignore[arg-type]
                            run_projector=run_projector) as rt:
        yield rt


async def read_all(rt: CodyRuntime, run_id: str, cursor: str = "0-0") -> list[LogEntry]:
    reader = await rt.reading.open_reader(run_id, cursor)
    assert reader is not None
    out: list[LogEntry] = []
    while not reader.done:
        batch = await reader.next_batch(5.0)
        assert batch is not None, "reader stalled"
        out += batch
    return out


def events_of(entries: list[LogEntry]) -> list[StreamEvent]:
    return [decode_event(e.data) for e in entries]


async def wait_stored(rt: CodyRuntime, run_id: str, limit_s: float = 10) -> Response:
    with trio.fail_after(limit_s):
        while True:
            stored = await rt.store.get_response(run_id)
            if stored is not None and stored.status in ("complete", "error", "aborted"):
                return stored
            await trio.sleep(0.02)


def turn(fx_provider: str, name: str, **more: object) -> TurnRequest:
    fx = LIBRARY.get(fx_provider, name)
    return TurnRequest.model_validate({"prompt": fx.prompt, "provider_id": fx.provider,
                                       "model": fx.model, "tools": list(fx.tools), **more})


async def test_replayed_run_same_response_everywhere(redis_url: str, key_prefix: str,
                                                     tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            for provider, name in [("openai", "tool_read_file"), ("anthropic", "thinking_message")]:
                fx = LIBRARY.get(provider, name)
                accepted = await rt.submission.submit(turn(provider, name))
                actor = rt.runs.actors[accepted.run_id]
                entries = await read_all(rt, accepted.run_id)
                await actor.finished.wait()
                from_stream = rebuild(events_of(entries))
                from_actor = actor.snapshot()
                stored = await wait_stored(rt, accepted.run_id)
                assert from_actor is not None
                assert response_view(from_stream) == fx.expected
                assert from_actor == from_stream == stored


async def test_hundred_concurrent_runs_stay_isolated(redis_url: str, key_prefix: str,
                                                     tmp_path: Path) -> None:
    names = [("openai", "simple_message"), ("anthropic", "simple_message"),
             ("openai", "reasoning_message"), ("anthropic", "tool_read_file")]
    with trio.fail_after(90):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            runs: list[tuple[str, str, str]] = []
            for i in range(100):
                provider, name = names[i % len(names)]
                accepted = await rt.submission.submit(turn(provider, name))
                runs.append((accepted.run_id, provider, name))
            results: dict[str, list[LogEntry]] = {}

            async def consume(run_id: str) -> None:
                results[run_id] = await read_all(rt, run_id)

            async with trio.open_nursery() as nursery:
                for run_id, _, _ in runs:
                    nursery.start_soon(consume, run_id)
            for run_id, provider, name in runs:
                events = events_of(results[run_id])
                assert {e.run_id for e in events} == {run_id}
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                assert response_view(rebuild(events)) == LIBRARY.get(provider, name).expected
                stored = await wait_stored(rt, run_id)
                assert response_view(stored) == LIBRARY.get(provider, name).expected


async def test_join_mid_run_and_resume_from_any_cursor(redis_url: str, key_prefix: str,
                                                       tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.002) as rt:
            accepted = await rt.submission.submit(turn("openai", "rapid_deltas"))
            await trio.sleep(0.3)  # the run is going
            late = await read_all(rt, accepted.run_id)
            ids = [e.entry_id for e in late]
            assert [e.seq for e in events_of(late)] == list(range(1, len(late) + 1))
            for cut in [0, 1, 2, len(ids) // 3, len(ids) // 2, len(ids) - 2]:
                resumed = await read_all(rt, accepted.run_id, ids[cut])
                assert [e.entry_id for e in resumed] == ids[cut + 1:]
            assert await rt.reading.open_reader(accepted.run_id, ids[-1]) is None


async def test_resume_while_live(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.002) as rt:
            accepted = await rt.submission.submit(turn("anthropic", "rapid_deltas"))
            collected: list[LogEntry] = []
            cursor = "0-0"
            while True:  # connect, take a few, drop, resume: over and over while it runs
                reader = await rt.reading.open_reader(accepted.run_id, cursor)
                if reader is None:
                    break
                batch = await reader.next_batch(5.0)
                reader.close()
                assert batch is not None
                collected += batch[:7]
                cursor = collected[-1].entry_id
                if collected[-1].terminal:
                    break
            events = events_of(collected)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert response_view(rebuild(events)) == LIBRARY.get("anthropic",
                                                                  "rapid_deltas").expected


async def test_slow_subscriber_dropped_others_keep_pace(redis_url: str, key_prefix: str,
                                                        tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with runtime_for(redis_url, key_prefix, tmp_path, subscriber_buffer=4,
                               replay_delay_s=0.0005) as rt:
            accepted = await rt.submission.submit(turn("openai", "rapid_deltas"))
            actor = rt.runs.actors[accepted.run_id]
            slow = await rt.reading.open_reader(accepted.run_id, None)
            assert slow is not None
            assert await slow.next_batch(0.05) is not None  # subscribed
            fast_entries = await read_all(rt, accepted.run_id)
            assert actor.fanout.dropped_count >= 1
            slow_entries: list[LogEntry] = []
            while not slow.done:
                batch = await slow.next_batch(5.0)
                assert batch is not None
                slow_entries += batch
            assert [e.entry_id for e in slow_entries] == [e.entry_id for e in fast_entries][
                len(fast_entries) - len(slow_entries):]


async def test_cancel_ends_aborted(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.01) as rt:
            accepted = await rt.submission.submit(turn("anthropic", "rapid_deltas"))
            await trio.sleep(0.3)
            resp = await rt.submission.cancel(accepted.run_id)
            assert resp.status == "aborted"
            again = await rt.submission.cancel(accepted.run_id)  # idempotent
            assert again.status == "aborted"
            events = events_of(await read_all(rt, accepted.run_id))
            types = [e.type for e in events]
            assert types[-2:] == ["turn_aborted_by_user", "response_done"]
            assert "item_cancelled" in types
            stored = await wait_stored(rt, accepted.run_id)
            assert stored.status == "aborted"
            assert stored.finish_reason == "cancelled by user"


class ExplodingProvider:
    def __init__(self, after_blocks: int) -> None:
        self.inner = ReplayProvider(LIBRARY)
        self.after = after_blocks

    @asynccontextmanager
    async def stream(self, call: ProviderCall) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.inner.stream(call) as body:
            async def broken() -> AsyncIterator[bytes]:
                n = 0
                async for chunk in body:
                    for piece in chunk.split(b"\n\n"):
                        if n == self.after:
                            raise ZeroDivisionError("provider blew up")
                        n += 1
                        yield piece + b"\n\n"
            yield broken()


async def test_provider_exception_ends_run_failed(redis_url: str, key_prefix: str,
                                                  tmp_path: Path) -> None:
    boom = ExplodingProvider(after_blocks=4)
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path,
                               providers={"openai": boom, "anthropic": boom}) as rt:
            accepted = await rt.submission.submit(turn("openai", "simple_message"))
            events = events_of(await read_all(rt, accepted.run_id))
            assert events[-1].type == "response_error"
            stored = await wait_stored(rt, accepted.run_id)
            assert stored.status == "error"
            assert stored.error is not None and stored.error.code == "RUN_FAILED"
            assert stored.error.details == {"exception": "ZeroDivisionError"}


async def test_killed_projector_is_taken_over(redis_url: str, key_prefix: str,
                                              tmp_path: Path) -> None:
    """A projector that took checkpoints and died before acking them: a new one claims them
    with XAUTOCLAIM, and every run ends up persisted exactly once, at its final seq."""
    with trio.fail_after(60):
        async with runtime_for(redis_url, key_prefix, tmp_path, run_projector=False) as rt:
            await rt.log.ensure_group()  # what the doomed projector did when it started
            runs = [(await rt.submission.submit(turn(p, n))).run_id
                    for p, n in [("openai", "simple_message"), ("anthropic", "tool_exec"),
                                 ("openai", "parallel_tools")] * 3]
            for run_id in runs:
                await read_all(rt, run_id)
            # the doomed projector reads every checkpoint, then "crashes" before its XACK
            taken = await rt.log.read_checkpoints(f"doomed-{uuid.uuid4()}", 1000, 100)
            assert {c.run_id for c in taken} == set(runs)
            assert await rt.log.read_checkpoints("another", 1000, 50) == []
            for run_id in runs:
                assert await rt.store.get_response(run_id) is None
            rescuer = Projector(rt.log, rt.store, consumer="rescuer", claim_idle_ms=200,
                                block_ms=50, retention_s=60)
            async with trio.open_nursery() as nursery:
                await nursery.start(rescuer.run)
                for run_id in runs:
                    stored = await wait_stored(rt, run_id)
                    assert stored == await rt.reading.rebuild(run_id)
                nursery.cancel_scope.cancel()
            assert rescuer.persisted == len(runs)
            assert await rt.log.pending_count() == 0
            assert await rt.log.ttl(runs[0]) > 0  # terminal and persisted: retention set


async def test_tool_failure_and_timeout_keep_the_run_going(redis_url: str, key_prefix: str,
                                                           tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            for provider, name in [("openai", "tool_failure"), ("anthropic", "tool_timeout")]:
                accepted = await rt.submission.submit(turn(provider, name))
                events = events_of(await read_all(rt, accepted.run_id))
                resp = rebuild(events)
                outputs = [i for i in resp.output_items if i.type == "function_call_output"]
                assert outputs and all(not o.success for o in outputs)  # type: ignore[union-attr]
                assert resp.status == "complete"
                assert response_view(resp) == LIBRARY.get(provider, name).expected


@pytest.mark.parametrize("bad", [{"model": "nope"}, {"tools": ["exec", "rm"]}])
async def test_submit_rejects_bad_turns(redis_url: str, key_prefix: str, tmp_path: Path,
                                        bad: dict[str, object]) -> None:
    from runtime.errors import CodyError

    with trio.fail_after(15):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            with pytest.raises(CodyError) as info:
                await rt.submission.submit(TurnRequest.model_validate({"prompt": "x", **bad}))
            assert info.value.status == 400


async def test_expired_stream_is_410_but_response_stays(redis_url: str, key_prefix: str,
                                                        tmp_path: Path) -> None:
    from runtime.errors import StreamExpired

    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, retention_s=1) as rt:
            accepted = await rt.submission.submit(turn("openai", "simple_message"))
            await read_all(rt, accepted.run_id)
            stored = await wait_stored(rt, accepted.run_id)
            for _ in range(100):  # the retention TTL runs out
                if not await rt.log.run_exists(accepted.run_id):
                    break
                await trio.sleep(0.1)
            with pytest.raises(StreamExpired):
                await rt.reading.open_reader(accepted.run_id, None)
            assert await rt.reading.get_response(accepted.run_id) == stored


async def test_max_iterations_ends_the_turn(redis_url: str, key_prefix: str,
                                            tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, max_iterations=1) as rt:
            accepted = await rt.submission.submit(turn("anthropic", "tool_read_file"))
            resp = rebuild(events_of(await read_all(rt, accepted.run_id)))
    assert resp.status == "complete"
    assert resp.finish_reason == "max_iterations"
    assert [i.type for i in resp.output_items][-1] == "function_call_output"


async def test_a_run_reads_as_queued_before_it_starts(redis_url: str, key_prefix: str,
                                                      tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.05) as rt:
            accepted = await rt.submission.submit(turn("openai", "simple_message"))
            first = await rt.reading.get_response(accepted.run_id)  # right after the 202
            assert first.status in ("queued", "in_progress")
            assert first.thread_id == accepted.thread_id
            await read_all(rt, accepted.run_id)
            assert (await rt.reading.get_response(accepted.run_id)).status == "complete"


DELTA_EVENT = {"openai": b"event: response.output_text.delta\n",
               "anthropic": b"event: content_block_delta\n"}


def fixture_deltas(provider: str, name: str) -> int:
    """How many text deltas the provider streamed (one SSE block each)."""
    return LIBRARY.get(provider, name).exchanges[0].stream.count(DELTA_EVENT[provider])


async def test_backlogged_deltas_merge_and_the_response_is_the_same(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    """Unpaced replay hands the actor 16 KiB of stream at a time, as a socket that filled
    while the actor waited on Redis would: the deltas in it are written as few events."""
    for provider in ("openai", "anthropic"):
        with trio.fail_after(30):
            async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
                accepted = await rt.submission.submit(turn(provider, "rapid_deltas"))
                events = events_of(await read_all(rt, accepted.run_id))
                deltas = sum(e.type == "item_delta" for e in events)
                assert 1 <= deltas <= fixture_deltas(provider, "rapid_deltas") // 20
                assert [e.seq for e in events] == list(range(1, len(events) + 1))
                expected = LIBRARY.get(provider, "rapid_deltas").expected
                assert response_view(rebuild(events)) == expected
                assert response_view(await wait_stored(rt, accepted.run_id)) == expected


async def test_merging_off_or_idle_writes_one_event_per_delta(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    cases = [({"coalesce_max_chars": 0}, "rapid_deltas"),  # off: every delta, even backlogged
             ({"replay_delay_s": 0.02}, "simple_message")]  # idle: nothing queues up
    for settings, name in cases:
        with trio.fail_after(30):
            async with runtime_for(redis_url, key_prefix, tmp_path, **settings) as rt:
                accepted = await rt.submission.submit(turn("openai", name))
                events = events_of(await read_all(rt, accepted.run_id))
                want = LIBRARY.get("openai", name)
                deltas = sum(e.type == "item_delta" for e in events)
                assert deltas == fixture_deltas("openai", name) > 1
                assert response_view(rebuild(events)) == want.expected


async def test_projector_lingers_and_folds_a_short_run_into_one_write(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path,
                               projector_linger_ms=400) as rt:
            assert rt.projector is not None
            accepted = await rt.submission.submit(turn("openai", "simple_message"))
            stored = await wait_stored(rt, accepted.run_id)
            assert response_view(stored) == LIBRARY.get("openai", "simple_message").expected
            assert rt.projector.persisted == 1  # start, prompt and end checkpoints: one write


async def test_a_just_finished_run_shows_on_its_thread_before_it_is_stored(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path,
                               projector_linger_ms=5000) as rt:
            accepted = await rt.submission.submit(turn("openai", "simple_message"))
            await rt.runs.actors[accepted.run_id].finished.wait()
            assert accepted.run_id not in rt.runs.actors
            assert await rt.store.get_response(accepted.run_id) is None  # still lingering
            _, runs = await rt.threads.with_runs(accepted.thread_id)
            assert [(r.id, r.status) for r in runs] == [(accepted.run_id, "complete")]
