"""Idempotent submits and thread policies on real Redis (TCP, embedded, cluster), through the
services and the app, with one or two in-process runtimes (nodes) on one Redis."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.providers.replay import ReplayProvider
from actors.system import CodyRuntime
from actors.thread_policies import ThreadPolicies
from api.app import create_app
from runtime.eventlog import open_redis
from runtime.keys import Keys
from runtime.schema import Response
from runtime.thread_policy import INTERRUPTED, STRATEGIES, ThreadState
from runtime.turns import TurnRequest
from tests.integration.test_runtime import LIBRARY, events_of, read_all, runtime_for, turn
from tests.serving import serving

TCP_ONLY = pytest.mark.parametrize("redis_url", ["tcp"], indirect=True)


def body(name: str = "simple_message", **more: object) -> dict[str, Any]:
    return turn("openai", name, **more).model_dump(exclude_none=True)


async def ended(rt: CodyRuntime, run_id: str, limit_s: float = 15) -> Response:
    with trio.fail_after(limit_s):
        while True:
            resp = await rt.reading.get_response(run_id)
            if resp.status in ("complete", "error", "aborted"):
                return resp
            await trio.sleep(0.02)


def sent_text(replay: ReplayProvider, run_id: str) -> str:
    """Every request body the run sent to its (replayed) provider, as one text."""
    return " ".join(str(r["request"]) for r in replay.requests if r["run_id"] == run_id)


@asynccontextmanager
async def node(redis_url: str, key_prefix: str, data_dir: Path, store: Path,
               **more: object) -> AsyncIterator[tuple[CodyRuntime, ReplayProvider]]:
    """One runtime; several on one prefix and one store file are several nodes."""
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    replay = ReplayProvider(LIBRARY, delay_s=float(more.pop("replay_delay_s", 0.0)))  # type: ignore[arg-type]
    async with runtime_for(redis_url, key_prefix, data_dir, store_path=store,
                           providers={"openai": replay, "anthropic": replay},
                           thread_poll_ms=20, **more) as rt:
        yield rt, replay


# ---------------------------------------------------------------------- the scripts


async def test_the_lua_scripts_decide_as_the_reference_model(redis_url: str,
                                                             key_prefix: str) -> None:
    """Random sequences of admissions and releases, through Redis and through ThreadState:
    every decision and every promotion the same."""
    rnd = random.Random(14)
    with trio.fail_after(60):
        async with open_redis(redis_url, 4) as client:
            policies = ThreadPolicies(client, Keys(key_prefix), node_id="n1",
                                      find_actor=lambda _: None)
            for _ in range(25):
                thread_id, model, n = str(uuid.uuid4()), ThreadState(), 0
                for _ in range(20):
                    if rnd.random() < 0.55 or not model.nodes:
                        run_id, n = f"r{n}", n + 1
                        strategy = rnd.choice(STRATEGIES)
                        got = await policies.admit(run_id, thread_id, strategy)  # type: ignore[arg-type]
                        assert got == model.admit(run_id, "n1", strategy)  # type: ignore[arg-type]
                    else:
                        run_id = rnd.choice([*sorted(model.nodes), "gone"])
                        promoted = await policies.release_on(thread_id, run_id)
                        assert promoted == model.release(run_id)


# ---------------------------------------------------------------------- idempotency


@TCP_ONLY
async def test_a_retried_submit_returns_the_original_run(redis_url: str, key_prefix: str,
                                                         tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            client = create_app(rt).test_client()
            key = {"Idempotency-Key": f"retry-{uuid.uuid4()}"}
            first = await client.post("/api/v2/runs", json=body(), headers=key)
            assert first.status_code == 202
            original = await first.get_json()
            # the same body however spelled: key order, an explicit null
            again = await client.post("/api/v2/runs", headers=key, json={
                "model": body()["model"], **body(), "agent_id": None})
            assert again.status_code == 200
            assert await again.get_json() == original
            other = await client.post("/api/v2/runs", json=body(prompt="other"), headers=key)
            assert other.status_code == 422
            error = (await other.get_json())["error"]
            assert error["code"] == "IDEMPOTENCY_MISMATCH"
            assert error["details"]["field"] == "Idempotency-Key"
            for bad in ("", "a b", "x" * 256, "\u00e9t\u00e9"):
                r = await client.post("/api/v2/runs", json=body(),
                                      headers={"Idempotency-Key": bad})
                assert r.status_code == 400, bad
                assert (await r.get_json())["error"]["details"]["field"] == "Idempotency-Key"
            # per tenant: another tenant's equal key is another record
            req = TurnRequest.model_validate(body())
            mine, replayed = await rt.submission.submit_idempotent(
                req, key["Idempotency-Key"], tenant="default")
            assert (mine.run_id, replayed) == (original["run_id"], True)
            theirs, replayed = await rt.submission.submit_idempotent(
                req, key["Idempotency-Key"], tenant="other")
            assert theirs.run_id != original["run_id"] and not replayed
            # without a key nothing changes: each submit is a run
            a = await client.post("/api/v2/runs", json=body())
            b = await client.post("/api/v2/runs", json=body())
            assert a.status_code == b.status_code == 202
            assert (await a.get_json())["run_id"] != (await b.get_json())["run_id"]
            await ended(rt, original["run_id"])


@TCP_ONLY
async def test_a_failed_submit_releases_its_key(redis_url: str, key_prefix: str,
                                                tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            client = create_app(rt).test_client()
            key = {"Idempotency-Key": str(uuid.uuid4())}
            for _ in range(2):  # refused, not recorded: the same answer again
                r = await client.post("/api/v2/runs", json={"prompt": "x", "model": "nope"},
                                      headers=key)
                assert r.status_code == 400
                assert (await r.get_json())["error"]["code"] == "INVALID_MODEL"
            fixed = await client.post("/api/v2/runs", json=body(), headers=key)
            assert fixed.status_code == 202


async def test_concurrent_duplicates_make_exactly_one_run(redis_url: str, key_prefix: str,
                                                          tmp_path: Path) -> None:
    """Twenty at once on each of two nodes: one run, and all forty answers name it."""
    store = tmp_path / "shared.db"
    req = TurnRequest.model_validate(body())
    key = f"dup-{uuid.uuid4()}"
    with trio.fail_after(60):
        async with node(redis_url, key_prefix, tmp_path / "a", store) as (a, _), \
                node(redis_url, key_prefix, tmp_path / "b", store) as (b, _):
            answers: list[tuple[str, bool]] = []

            async def send(rt: CodyRuntime) -> None:
                accepted, replayed = await rt.submission.submit_idempotent(req, key)
                answers.append((accepted.run_id, replayed))

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(send, a if i % 2 else b)
            assert len({run_id for run_id, _ in answers}) == 1
            assert sum(not replayed for _, replayed in answers) == 1
            assert a.runs.stats.runs_started + b.runs.stats.runs_started == 1
            await ended(a if answers[0][0] in a.runs or a.runs.recent.responses.get(
                answers[0][0]) else b, answers[0][0])


# ---------------------------------------------------------------------- thread policies


@TCP_ONLY
async def test_reject_answers_409_thread_busy_while_a_turn_runs(redis_url: str,
                                                                key_prefix: str,
                                                                tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.01) as rt:
            client = create_app(rt).test_client()
            first = await (await client.post("/api/v2/runs", json=body("rapid_deltas"))
                           ).get_json()
            thread = first["thread_id"]
            r = await client.post("/api/v2/runs", json=body(
                thread_id=thread, multitask_strategy="reject"))
            assert r.status_code == 409
            error = (await r.get_json())["error"]
            assert error["code"] == "THREAD_BUSY"
            assert error["details"]["running"] == [first["run_id"]]
            # parallel (the default) still starts beside it
            r = await client.post("/api/v2/runs", json=body(thread_id=thread))
            assert r.status_code == 202
            beside = (await r.get_json())["run_id"]
            await rt.submission.cancel(first["run_id"])
            await ended(rt, beside)
            r = await client.post("/api/v2/runs", json=body(
                thread_id=thread, multitask_strategy="reject"))
            assert r.status_code == 202, await r.get_json()
            r = await client.post("/api/v2/runs", json={**body(),
                                                        "multitask_strategy": "sometimes"})
            assert r.status_code == 400
            assert (await r.get_json())["error"]["details"]["field"] == "multitask_strategy"


async def test_enqueue_waits_for_the_running_turn_and_sees_it(redis_url: str,
                                                              key_prefix: str,
                                                              tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        replay_delay_s=0.03) as (rt, replay):
            client = create_app(rt).test_client()
            first = await (await client.post("/api/v2/runs", json=body("two_turns_1"))
                           ).get_json()
            r = await client.post("/api/v2/runs", json=body(
                "simple_message", thread_id=first["thread_id"], multitask_strategy="enqueue"))
            assert r.status_code == 202
            second = await r.get_json()
            assert second["status"] == "queued" and first["status"] == "in_progress"
            got = await client.get(f"/api/v2/runs/{second['run_id']}")
            assert (await got.get_json())["status"] == "queued"
            view = await (await client.get(f"/api/v2/threads/{first['thread_id']}")).get_json()
            assert [(r["id"], r["status"]) for r in view["runs"]] == [
                (first["run_id"], "in_progress"), (second["run_id"], "queued")]
            # its events can be read at once: the reader waits for the start
            queued_events = events_of(await read_all(rt, second["run_id"]))
            first_events = events_of(await read_all(rt, first["run_id"]))
            assert first_events[-1].type == "response_done"
            assert queued_events[0].type == "response_start"
            assert queued_events[0].timestamp >= first_events[-1].timestamp
            assert (await rt.reading.get_response(second["run_id"])).status == "complete"
            # the queued turn saw the first as history: its prompt and its answer
            fx = LIBRARY.get("openai", "two_turns_1")
            assert fx.prompt in sent_text(replay, second["run_id"])


async def test_interrupt_aborts_the_running_turn_then_starts(redis_url: str,
                                                             key_prefix: str,
                                                             tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        replay_delay_s=0.01) as (rt, replay):
            first = await rt.submission.submit(TurnRequest.model_validate(body("rapid_deltas")))
            await trio.sleep(0.3)  # well under way
            second = await rt.submission.submit(TurnRequest.model_validate(body(
                "simple_message", thread_id=first.thread_id, multitask_strategy="interrupt")))
            assert second.status == "queued"
            aborted = events_of(await read_all(rt, first.run_id))
            assert [e.type for e in aborted][-2:] == ["turn_aborted_by_user", "response_done"]
            resp = await ended(rt, first.run_id)
            assert (resp.status, resp.finish_reason) == ("aborted", INTERRUPTED)
            done = await ended(rt, second.run_id)
            assert done.status == "complete"
            started = events_of(await read_all(rt, second.run_id))[0]
            assert started.timestamp >= aborted[-1].timestamp
            assert LIBRARY.get("openai", "rapid_deltas").prompt in sent_text(replay,
                                                                             second.run_id)


@TCP_ONLY
async def test_a_queued_run_cancelled_before_its_turn_never_calls_the_model(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        replay_delay_s=0.01) as (rt, replay):
            first = await rt.submission.submit(TurnRequest.model_validate(body("rapid_deltas")))
            queued = [await rt.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="enqueue"))) for _ in range(2)]
            cancelled = await rt.submission.cancel(queued[0].run_id)
            assert cancelled.status == "aborted"
            assert sent_text(replay, queued[0].run_id) == ""
            await rt.submission.cancel(first.run_id)
            assert (await ended(rt, queued[1].run_id)).status == "complete"


# ---------------------------------------------------------------------- across nodes


async def test_a_turn_queued_on_another_node_starts_when_the_first_ends(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    store = tmp_path / "shared.db"
    with trio.fail_after(40):
        async with node(redis_url, key_prefix, tmp_path / "a", store,
                        replay_delay_s=0.03) as (a, _), \
                node(redis_url, key_prefix, tmp_path / "b", store,
                     replay_delay_s=0.01) as (b, replay_b):
            first = await a.submission.submit(TurnRequest.model_validate(body("two_turns_1")))
            second = await b.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="enqueue")))
            assert second.status == "queued"
            assert (await a.reading.get_response(second.run_id)).status == "queued"
            reader = await a.reading.open_reader(second.run_id, None)  # from the other node
            assert reader is not None
            first_end = events_of(await read_all(a, first.run_id))[-1]
            done = await ended(b, second.run_id)
            assert done.status == "complete"
            start = events_of(await read_all(b, second.run_id))[0]
            assert start.timestamp >= first_end.timestamp
            assert LIBRARY.get("openai", "two_turns_1").prompt in sent_text(replay_b,
                                                                            second.run_id)
            # and an interrupt from b aborts a's running turn
            third = await a.submission.submit(TurnRequest.model_validate(body(
                "rapid_deltas", thread_id=first.thread_id)))
            await trio.sleep(0.2)
            fourth = await b.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="interrupt")))
            resp = await ended(a, third.run_id, limit_s=5)
            assert (resp.status, resp.finish_reason) == ("aborted", INTERRUPTED)
            assert (await ended(b, fourth.run_id)).status == "complete"
            r = await create_app(a).test_client().get(f"/api/v2/runs/{fourth.run_id}/events")
            assert r.status_code == 200


async def test_a_queue_behind_a_dead_nodes_run_moves_on(redis_url: str, key_prefix: str,
                                                        tmp_path: Path) -> None:
    """A run of a node that died holds the thread; the janitor ends it RUN_ORPHANED, which
    releases the thread, and the queued turn starts."""
    dead_run, thread = str(uuid.uuid4()), str(uuid.uuid4())
    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        janitor_interval_s=0.2, lease_ttl_s=1) as (rt, _):
            dead = ThreadPolicies(rt.log._w, rt.log.keys, node_id="dead-node",
                                  find_actor=lambda _: None)
            # the node dies 3 s from now (its lease runs out): until then its run is queued
            await rt.log.refresh_lease("dead-node", 3)
            await rt.log.put_meta(dead_run, {"thread_id": thread, "turn_id": str(uuid.uuid4()),
                                             "status": "in_progress", "node": "dead-node",
                                             "provider_id": "openai", "model_id": "gpt-5-mini"})
            assert (await dead.admit(dead_run, thread, "parallel")).decision == "start"
            queued = await rt.submission.submit(TurnRequest.model_validate(body(
                thread_id=thread, multitask_strategy="enqueue")))
            assert queued.status == "queued"
            orphan = await ended(rt, dead_run)
            assert orphan.status == "error" and orphan.error is not None
            assert orphan.error.code == "RUN_ORPHANED"
            assert (await ended(rt, queued.run_id)).status == "complete"
            runs, running, queue, _ = rt.log.keys.thread_keys(thread)
            assert await rt.log._w.exists([runs, running, queue]) == 0


@TCP_ONLY
async def test_a_queued_run_of_a_dead_node_does_not_stall_the_queue(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    """Queued behind a live turn: a run of a node that died, then a live one. Nobody will
    start the dead run; the janitor ends it, queued or promoted (its start and RUN_ORPHANED
    together, so its readers get an ending), which takes it off the thread, and the last one
    runs."""
    dead_run = str(uuid.uuid4())
    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        replay_delay_s=0.02, janitor_interval_s=0.2,
                        lease_ttl_s=1) as (rt, _):
            first = await rt.submission.submit(TurnRequest.model_validate(body()))
            dead = ThreadPolicies(rt.log._w, rt.log.keys, node_id="dead-node",
                                  find_actor=lambda _: None)
            # the node dies 3 s from now (its lease runs out): until then its run is queued
            await rt.log.refresh_lease("dead-node", 3)
            await rt.log.put_meta(dead_run, {
                "thread_id": first.thread_id, "turn_id": str(uuid.uuid4()), "status": "queued",
                "node": "dead-node", "provider_id": "openai", "model_id": "gpt-5-mini",
                "created_at": 1})
            assert (await dead.admit(dead_run, first.thread_id, "enqueue")).position == 1
            last = await rt.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="enqueue")))
            assert (await rt.reading.get_response(dead_run)).status == "queued"
            reader = await rt.reading.open_reader(dead_run, None)  # waits, no 404
            assert reader is not None
            orphan = events_of(await read_all(rt, dead_run))
            assert [e.type for e in orphan] == ["response_start", "response_error"]
            assert (await ended(rt, first.run_id)).status == "complete"
            assert (await ended(rt, last.run_id)).status == "complete"


@TCP_ONLY
async def test_a_drain_ends_queued_runs_aborted_too(redis_url: str, key_prefix: str,
                                                    tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        replay_delay_s=0.01) as (rt, replay):
            first = await rt.submission.submit(TurnRequest.model_validate(body("rapid_deltas")))
            queued = await rt.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="enqueue")))
            await rt.lifecycle.drain("server shutting down", timeout_s=10)
            for run_id in (first.run_id, queued.run_id):
                resp = await rt.reading.get_response(run_id)
                assert (resp.status, resp.finish_reason) == ("aborted", "server shutting down")
            assert sent_text(replay, queued.run_id) == ""
            runs, running, queue, _ = rt.log.keys.thread_keys(first.thread_id)
            assert await rt.log._w.exists([runs, running, queue]) == 0


async def test_idempotency_keys_are_per_tenant_over_http_with_tokens(tmp_path: Path) -> None:
    """With API keys on: a tenant's retry gets its run back with an events_url whose token
    is signed afresh (and works); another tenant's equal key is its own run."""
    acme, globex = "tok-acme-0123456789abcdef", "tok-globex-0123456789abcdef"
    with trio.fail_after(30):
        async with serving(tmp_path, api_keys=(("acme", acme), ("globex", globex))) as srv, \
                srv.client(headers={"Authorization": f"Bearer {acme}"}) as a, \
                srv.client(headers={"Authorization": f"Bearer {globex}"}) as g:
            key = {"Idempotency-Key": "same-key-for-both"}
            first = await a.post("/api/v2/runs", json=body(), headers=key)
            assert first.status_code == 202
            again = await a.post("/api/v2/runs", json=body(), headers=key)
            assert again.status_code == 200
            assert again.json()["run_id"] == first.json()["run_id"]
            assert "token=" in again.json()["events_url"]
            async with srv.client() as anonymous:  # the token alone opens the events
                events = await anonymous.get(again.json()["events_url"])
                assert events.status_code == 200
            theirs = await g.post("/api/v2/runs", json=body(), headers=key)
            assert theirs.status_code == 202
            assert theirs.json()["run_id"] != first.json()["run_id"]


@TCP_ONLY
async def test_a_bug_while_a_run_waits_aborts_that_run_only(redis_url: str, key_prefix: str,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    async def broken(*_: object, **__: object) -> tuple[()]:
        raise ZeroDivisionError("history blew up")

    with trio.fail_after(30):
        async with node(redis_url, key_prefix, tmp_path, tmp_path / "cody.db",
                        replay_delay_s=0.01) as (rt, _):
            monkeypatch.setattr(rt.submission, "_queued_history", broken)
            first = await rt.submission.submit(TurnRequest.model_validate(body()))
            queued = await rt.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="enqueue")))
            assert (await ended(rt, first.run_id)).status == "complete"
            resp = await ended(rt, queued.run_id)
            assert (resp.status, resp.finish_reason) == ("aborted",
                                                         "could not start: internal error")
            after = await rt.submission.submit(TurnRequest.model_validate(body(
                thread_id=first.thread_id, multitask_strategy="reject")))
            assert (await ended(rt, after.run_id)).status == "complete"
