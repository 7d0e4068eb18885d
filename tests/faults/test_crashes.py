"""The server process dies or is stopped with runs in flight; a run's stream is poisoned.

- SIGKILL of ``cody serve`` with 20 runs streaming, on the embedded Redis and on an external
  one (side by side), then a restart on the same data dir and port: every run ends with
  ``RUN_ORPHANED`` within the node lease (the new node's janitor ends the dead node's runs),
  every client resumes with ``Last-Event-ID`` and reads to the terminal event with no gap and no
  duplicate, and the store holds each Response exactly once, folded to its terminal event.
- SIGTERM with 20 runs streaming: exit 0 within the drain deadline, every client got its run's
  ``response_done`` ``aborted``, and no ``redis-server`` is left behind.
- A poison run (an entry the projector cannot fold, and a checkpoint naming it) written into a
  live server's Redis: the projector logs it, skips it and carries on persisting every other
  run; the server stays ready.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from runtime.envelope import EventFactory, encode_event
from runtime.eventlog import EventLog, open_redis
from runtime.ids import new_traceparent, new_uuid
from runtime.keys import Keys
from runtime.schema import ResponseStart
from tests.faults.kit import (
    Followed,
    RedisProcess,
    assert_sigterm_exits_0,
    check_stream,
    cody_env,
    embedded_redis_pids,
    eventually,
    figure,
    follow,
    log_tail,
    make_client,
    ready_status,
    running_cody,
    running_redis,
    short_body,
    sigterm_and_wait,
    start_long_runs,
    stored_responses,
    submit,
    wait_all,
)

RUNS = 20
LEASE_TTL_S = 5
JANITOR_INTERVAL_S = 1.0
SWEEP_S = 4.0
"""One janitor sweep over 20 orphans (four round trips each) and the clients' reconnects."""


def ending_code(f: Followed) -> str | None:
    """The error code of the run's terminal event (its type if it is not an error)."""
    end = f.terminal
    if end is None:
        return None
    error = getattr(end.payload, "error", None)
    return str(error.code) if error is not None else end.type


async def wait_stored_once(data_dir: Path, followed: list[Followed], limit_s: float) -> None:
    """Each run's Response is in the store once, folded to the terminal event the client got."""
    want = {f.run_id: (f.status(), f.events[-1].seq) for f in followed}
    rows: dict[str, list[tuple[str, int]]] = {}
    with trio.move_on_after(limit_s):
        while True:
            rows = await trio.to_thread.run_sync(stored_responses, data_dir, list(want))
            if all(rows[r] == [w] for r, w in want.items()):
                return
            await trio.sleep(0.2)
    wrong = {r: (rows.get(r), w) for r, w in want.items() if rows.get(r) != [w]}
    raise AssertionError(f"store rows (got, want) for {len(wrong)} runs: "
                         f"{dict(list(wrong.items())[:5])}")


async def sigkill_and_restart(tmp_path: Path, redis: RedisProcess | None) -> None:
    name = "external" if redis is not None else "embedded"
    env = cody_env(redis, CODY_LEASE_TTL_S=str(LEASE_TTL_S),
                   CODY_JANITOR_INTERVAL_S=f"{JANITOR_INTERVAL_S:g}")
    data_dir = tmp_path / "cody"
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_cody(data_dir, env))
        client = await stack.enter_async_context(make_client(first.base_url))
        assert first.proc is not None
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                followed = await start_long_runs(client, RUNS, nursery)
                await trio.sleep(1.5)
                assert all(f.events and f.terminal is None for f in followed), \
                    "the runs are not streaming, or already over, 1.5 s in"
                first.proc.kill()  # SIGKILL: nothing runs, nothing is cleaned up
                await trio.to_thread.run_sync(first.proc.wait)
                killed = trio.current_time()
                seen_before = sum(len(f.events) for f in followed)

                async def no_redis() -> bool:
                    return not await embedded_redis_pids(data_dir)

                # the embedded redis-server follows its parent
                await eventually(no_redis, 5, "the embedded redis-server gone after SIGKILL")
                second = await stack.enter_async_context(
                    running_cody(data_dir, env, port=first.port))
                restarted = trio.current_time() - killed
                ended = await wait_all(followed, killed + 60)
                nursery.cancel_scope.cancel()  # only stragglers are left: they fail below
            for f in followed:
                check_stream(f)
            open_runs = [f.run_id for f in followed if f.terminal is None]
            assert not open_runs, (f"{len(open_runs)} of {RUNS} runs not ended "
                                   f"60 s after SIGKILL\n{log_tail(second)}")
            # the dead node's runs end when its lease has expired and a janitor sweeps: the
            # new node's, as soon as it is up if that took longer than the lease
            within = max(LEASE_TTL_S, restarted) + JANITOR_INTERVAL_S + SWEEP_S
            assert ended - killed <= within, \
                (f"runs ended {ended - killed:.1f} s after SIGKILL (restart took "
                 f"{restarted:.1f} s, lease {LEASE_TTL_S} s)\n{log_tail(second)}")
            codes = Counter(ending_code(f) for f in followed)
            assert codes == {"RUN_ORPHANED": RUNS}, codes
            resumed = sum(1 for f in followed if len(f.outcomes) > 1)
            await wait_stored_once(data_dir, followed, 15)
            for f in followed:  # and its thread shows it once, ended
                thread_id = f.events[0].payload.thread_id  # type: ignore[union-attr]
                r = await client.get(f"/api/v2/threads/{thread_id}")
                assert r.status_code == 200, r.text
                shown = [(run["id"], run["status"]) for run in r.json()["runs"]]
                assert shown == [(f.run_id, "error")], shown
            took = await assert_sigterm_exits_0(second)
            assert not await embedded_redis_pids(data_dir), "orphaned redis-server"
    figure(f"sigkill_{name}_redis", runs=RUNS, lease_s=LEASE_TTL_S, restart_s=restarted,
           all_terminal_after_kill_s=ended - killed, orphaned=codes["RUN_ORPHANED"],
           clients_resumed=resumed, events_before_kill=seen_before, gaps=0,
           stored_once=RUNS, sigterm_exit_s=took)


async def test_sigkill_with_20_runs_in_flight_then_restart(tmp_path: Path) -> None:
    async def external() -> None:
        async with running_redis(tmp_path / "external" / "redis") as redis:
            await sigkill_and_restart(tmp_path / "external", redis)

    with trio.fail_after(150):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sigkill_and_restart, tmp_path / "embedded", None)
            nursery.start_soon(external)


async def test_sigterm_with_20_runs_in_flight(tmp_path: Path) -> None:
    drain_s = 5.0
    async with running_cody(tmp_path / "cody",
                            cody_env(CODY_DRAIN_TIMEOUT_S=f"{drain_s:g}")) as server, \
            make_client(server.base_url) as client:
        with trio.fail_after(60):
            assert len(await embedded_redis_pids(server.data_dir)) == 1
            async with trio.open_nursery() as nursery:
                followed = await start_long_runs(client, RUNS, nursery)
                await trio.sleep(1.5)
                assert all(f.events and f.terminal is None for f in followed)
                code, took = await sigterm_and_wait(server, drain_s + 10)
                await wait_all(followed, trio.current_time() + 2)
                nursery.cancel_scope.cancel()
            assert code == 0, f"exit code {code} after {took:.2f} s\n{log_tail(server)}"
            assert took <= drain_s, f"exited {took:.2f} s after SIGTERM\n{log_tail(server)}"
            for f in followed:
                check_stream(f)
            endings = Counter((f.terminal.type if f.terminal else None, f.status())
                              for f in followed)
            assert endings == {("response_done", "aborted"): RUNS}, endings
            aborted_by_user = sum(1 for f in followed
                                  if any(e.type == "turn_aborted_by_user" for e in f.events))
            async def no_redis() -> bool:
                return not await embedded_redis_pids(server.data_dir)

            await eventually(no_redis, 5, "no redis-server left after SIGTERM")
    figure("sigterm_20_runs", runs=RUNS, drain_deadline_s=drain_s, exit_code=code,
           exit_s=took, aborted=endings[("response_done", "aborted")],
           turn_aborted_events=aborted_by_user, orphans=0)


def poison_entries(run_id: str) -> list[bytes]:
    """A run's stream the projector cannot fold: a good start, then an entry that is not an
    event at all."""
    factory = EventFactory(run_id, new_traceparent(), lambda: 1_700_000_000_000)
    start = ResponseStart(response_id=run_id, turn_id=new_uuid(), thread_id=new_uuid(),
                          model_id="gpt-5-mini", provider_id="openai", created_at=1)
    return [encode_event(factory.make(start)), b'{"not": "an event"', json.dumps(
        {"seq": 3, "type": "response_done"}).encode()]


async def test_poison_event_in_a_run_stream(tmp_path: Path) -> None:
    async with running_redis(tmp_path / "redis") as redis:
        env = cody_env(redis)
        async with running_cody(tmp_path / "cody", env) as server, \
                make_client(server.base_url) as client:
            with trio.fail_after(60):
                async def short_runs(n: int) -> list[Followed]:
                    out = []
                    for _ in range(n):
                        f = Followed((await submit(client, **short_body()))["run_id"])
                        await follow(client, f)
                        out.append(f)
                    return out

                before = await short_runs(3)
                await wait_stored_once(server.data_dir, before, 10)
                poisoned = [new_uuid(), new_uuid()]
                async with open_redis(redis.url, 2) as w, open_redis(redis.url, 2) as r:
                    log = EventLog(w, r, Keys(env["CODY_KEY_PREFIX"]))
                    for run_id in poisoned:
                        entries = poison_entries(run_id)
                        await log.append(run_id, entries, checkpoint_seq=len(entries))
                began = trio.current_time()
                after = await short_runs(5)
                await wait_stored_once(server.data_dir, after, 10)
                carried_on = trio.current_time() - began
                status, _ = await ready_status(client)
                assert status == 200, log_tail(server)
                got = [(await client.get(f"/api/v2/runs/{run_id}")).json() for run_id in poisoned]
                codes = [g.get("error", {}).get("code") for g in got]
                assert codes == ["CORRUPT_STREAM"] * 2, got
                assert await trio.to_thread.run_sync(
                    stored_responses, server.data_dir, poisoned) == {p: [] for p in poisoned}
                async def logged() -> bool:
                    return server.log().count("poison run") >= len(poisoned)

                await eventually(logged, 5, "a 'poison run' log line for each")
                took = await assert_sigterm_exits_0(server)
    figure("poison_event", poisoned=len(poisoned), logged=server.log().count("poison run"),
           persisted_after=len(after), persisted_within_s=carried_on, ready=status,
           get_poisoned=codes[0], sigterm_exit_s=took)

