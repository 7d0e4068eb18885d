"""The console's API on an in-process runtime on real Redis: the runs listing (store rows and
runs in flight, on this node and another), ``/metrics`` (parsed, counters equal to what ran),
and the submit's ``traceparent`` reaching the provider (the fake provider over real HTTP)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from runtime.envelope import decode_event
from tests.conftest import TCP_REDIS_URL
from tests.fake_provider import FakeProvider
from tests.integration.test_runtime import read_all, runtime_for, turn, wait_stored


@pytest.fixture
def redis_url() -> str:
    """The listing merges Redis and the store the same way on every backend: TCP only."""
    return TCP_REDIS_URL


async def _submit(client: Any, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    r = await client.post("/api/v2/runs", json=body, headers=headers)
    assert r.status_code == 202, await r.get_data()
    out: dict[str, Any] = await r.get_json()
    return out


async def _list(client: Any, query: str = "") -> dict[str, Any]:
    r = await client.get(f"/api/v2/runs{query}")
    assert r.status_code == 200, await r.get_data()
    out: dict[str, Any] = await r.get_json()
    return out


async def test_runs_listing_merges_live_runs_and_pages_without_repeats(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'shared.db'}"
    with trio.fail_after(60):
        async with runtime_for(redis_url, key_prefix, tmp_path / "a", store_url=store,
                               replay_delay_s=0.05) as slow, \
                runtime_for(redis_url, key_prefix, tmp_path / "b", store_url=store) as fast:
            c_slow, c_fast = create_app(slow).test_client(), create_app(fast).test_client()
            done = []
            for _ in range(3):
                done.append(await _submit(c_fast, turn("openai", "simple_message")
                                          .model_dump(exclude_none=True)))
            for d in done:
                await wait_stored(fast, d["run_id"])
            # live on the other node (runtime `slow`): only the Redis registry knows it here
            live = await _submit(c_slow, turn("anthropic", "rapid_deltas")
                                 .model_dump(exclude_none=True))
            page = await _list(c_fast)
            ids = [r["run_id"] for r in page["data"]]
            assert ids[0] == live["run_id"]
            assert set(ids) == {live["run_id"], *(d["run_id"] for d in done)}
            row = page["data"][0]
            assert row["status"] in ("queued", "in_progress")
            assert row["ended_at"] is None and row["duration_ms"] is None
            assert row["model"] == "claude-haiku-4.5" and row["thread_id"] == live["thread_id"]
            assert page["next_cursor"] is None
            ended = next(r for r in page["data"] if r["run_id"] == done[0]["run_id"])
            assert ended["status"] == "complete" and ended["usage"]["total_tokens"] > 0
            assert ended["duration_ms"] == ended["ended_at"] - ended["created_at"]

            only_live = await _list(c_fast, "?status=in_progress,queued")
            assert [r["run_id"] for r in only_live["data"]] == [live["run_id"]]
            by_thread = await _list(c_fast, f"?thread_id={done[1]['thread_id']}")
            assert [r["run_id"] for r in by_thread["data"]] == [done[1]["run_id"]]
            assert (await _list(c_fast, "?model=gpt-5-mini"))["data"][-1]["run_id"] \
                == done[0]["run_id"]

            seen: list[str] = []
            cursor: str | None = None
            for _ in range(5):
                page = await _list(c_fast, "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
                seen += [r["run_id"] for r in page["data"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == ids  # every run once, newest first, across pages

            for query, field in [("?status=nope", "status"), ("?limit=0", "limit"),
                                 ("?limit=x", "limit"), ("?cursor=zzz", "cursor"),
                                 ("?thread_id=1", "thread_id"), ("?since=yesterday", "since")]:
                r = await c_fast.get(f"/api/v2/runs{query}")
                assert r.status_code == 400, query
                assert (await r.get_json())["error"]["details"]["field"] == field
            await c_slow.post(f"/api/v2/runs/{live['run_id']}/cancel")
            assert (await _list(c_slow, "?status=aborted"))["data"][0]["run_id"] \
                == live["run_id"]  # its node knows at once; another once it is persisted
            await wait_stored(slow, live["run_id"])
            assert (await _list(c_fast, "?status=aborted"))["data"][0]["run_id"] \
                == live["run_id"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_what_ran(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            client = create_app(rt).test_client()
            runs = [("openai", "simple_message"), ("anthropic", "thinking_message"),
                    ("openai", "tool_read_file")]
            events = 0
            tokens: dict[tuple[str, str, str], int] = {}
            for provider, name in runs:
                accepted = await _submit(client, turn(provider, name)
                                         .model_dump(exclude_none=True))
                r = await client.get(accepted["events_url"])  # one SSE client, to the end
                assert r.status_code == 200
                stored = await wait_stored(rt, accepted["run_id"])
                events += len(await read_all(rt, accepted["run_id"]))
                assert stored.usage is not None
                for kind, n in (("prompt", stored.usage.prompt_tokens),
                                ("completion", stored.usage.completion_tokens)):
                    key = (stored.provider_id, stored.model_id, kind)
                    tokens[key] = tokens.get(key, 0) + n
            r = await client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            got = _samples((await r.get_data()).decode())
            assert got[("cody_runs_started_total", ())] == 3
            assert got[("cody_runs_finished_total", (("status", "complete"),))] == 3
            assert got[("cody_runs_live", ())] == 0
            assert got[("cody_events_appended_total", ())] == events
            for (provider, model, kind), n in tokens.items():
                labels = (("kind", kind), ("model", model), ("provider", provider))
                assert got[("cody_tokens_total", labels)] == n
            assert got[("cody_sse_clients", ())] == 0
            assert got[("cody_slow_subscribers_dropped_total", ())] == 0
            assert got[("cody_janitor_endings_total", ())] == 0
            ttft = sum(v for (name, _), v in got.items()
                       if name == "cody_time_to_first_token_seconds_count")
            assert ttft == 3
            requests = sum(v for (name, _), v in got.items()
                           if name == "cody_provider_request_duration_seconds_count")
            assert requests == 4  # the tool turn asks the model twice
            assert got[("cody_redis_append_seconds_count", ())] >= 3
            assert got[("cody_projector_lag_seconds", ())] >= 0


async def test_metrics_of_one_runtime_are_its_own(redis_url: str, key_prefix: str,
                                                  tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'shared.db'}"  # one queue on one prefix: one store
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path / "a", store_url=store) as a, \
                runtime_for(redis_url, key_prefix, tmp_path / "b", store_url=store) as b:
            accepted = await a.submission.submit(turn("openai", "simple_message"))
            await wait_stored(a, accepted.run_id)
            got_a = _samples(a.metrics.render().decode())
            got_b = _samples(b.metrics.render().decode())
            assert got_a[("cody_runs_started_total", ())] == 1
            assert got_b[("cody_runs_started_total", ())] == 0


async def test_traceparent_of_the_submit_is_the_runs_trace_and_reaches_the_provider(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{trace_id}-00f067aa0ba902b7-01"
    with FakeProvider() as fake, trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay=False,
                               openai_api_key=fake.api_key,
                               openai_base_url=fake.openai_base_url) as rt:
            client = create_app(rt).test_client()
            accepted = await _submit(client, turn("openai", "tool_read_file")
                                     .model_dump(exclude_none=True), traceparent=incoming)
            await wait_stored(rt, accepted["run_id"])
            events = [decode_event(e.data) for e in await read_all(rt, accepted["run_id"])]
            assert {e.trace_context.traceparent for e in events} == {incoming}
            sent = [r.headers.get("traceparent") or r.headers.get("Traceparent")
                    for r in fake.requests]
            assert len(sent) == 2
            for header in sent:
                assert header is not None
                version, tid, span, flags = header.split("-")
                assert (version, tid, flags) == ("00", trace_id, "01")
                assert span != "00f067aa0ba902b7"  # a child span of the run

            # an invalid header starts a new trace, as W3C says
            bad = await _submit(client, turn("openai", "simple_message")
                                .model_dump(exclude_none=True), traceparent="00-zz-bad-01")
            await wait_stored(rt, bad["run_id"])
            first = decode_event((await read_all(rt, bad["run_id"]))[0].data)
            assert trace_id not in first.trace_context.traceparent
            assert fake.requests[-1].headers.get("traceparent", "").split("-")[1] \
                == first.trace_context.traceparent.split("-")[1]


async def test_openapi_documents_the_listing_metrics_and_console(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path) as rt:
            client = create_app(rt).test_client()
            doc = await (await client.get("/openapi.json")).get_json()
            runs = doc["paths"]["/api/v2/runs"]
            assert {"get", "post"} <= set(runs)
            params = {p["name"] for p in runs["get"]["parameters"]}
            assert params == {"status", "thread_id", "model", "since", "limit", "cursor"}
            page = doc["components"]["schemas"]["RunPage"]
            assert set(page["properties"]) == {"data", "next_cursor"}
            summary = doc["components"]["schemas"]["RunSummary"]
            assert {"run_id", "thread_id", "status", "model", "created_at", "ended_at",
                    "usage", "duration_ms"} <= set(summary["properties"])
            assert "/metrics" in doc["paths"] and "/" in doc["paths"]
            r = await client.get("/")
            assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
            assert (await client.get("/console/nope.js")).status_code == 404


async def test_with_api_keys_the_listing_and_metrics_need_a_key_and_show_the_tenants_own(
        redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    acme, globex = "tok-acme-0123456789abcdef", "tok-globex-0123456789abcdef"
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, replay_delay_s=0.05,
                               api_keys=(("acme", acme), ("globex", globex))) as rt:
            client = create_app(rt).test_client()
            a, g = {"Authorization": f"Bearer {acme}"}, {"Authorization": f"Bearer {globex}"}
            body = turn("anthropic", "rapid_deltas").model_dump(exclude_none=True)
            mine = await _submit(client, body, **a)
            theirs = await _submit(client, body, **g)
            assert "?token=" in mine["events_url"]
            for path in ("/api/v2/runs", "/metrics"):
                r = await client.get(path)
                assert r.status_code == 401, path
                assert (await r.get_json())["error"]["code"] == "UNAUTHORIZED"
            assert (await client.get("/")).status_code == 200  # the console asks for a key
            r = await client.get("/api/v2/runs", headers=a)
            assert [x["run_id"] for x in (await r.get_json())["data"]] == [mine["run_id"]]
            r = await client.get("/api/v2/runs", headers=g)
            assert [x["run_id"] for x in (await r.get_json())["data"]] == [theirs["run_id"]]
            r = await client.get("/metrics", headers=a)
            assert r.status_code == 200
            assert _samples((await r.get_data()).decode())[("cody_runs_started_total", ())] == 2
            for run in (mine, theirs):
                await client.post(f"/api/v2/runs/{run['run_id']}/cancel",
                                  headers=a if run is mine else g)
            for run, tenant in ((mine, "acme"), (theirs, "globex")):
                while True:  # persisted, in its tenant's rows
                    stored = await rt.store.get_response(run["run_id"], tenant=tenant)
                    if stored is not None and stored.status == "aborted":
                        break
                    await trio.sleep(0.02)
            r = await client.get("/api/v2/runs", headers=a)
            rows = (await r.get_json())["data"]
            assert [(x["run_id"], x["status"]) for x in rows] == [(mine["run_id"], "aborted")]


async def test_metrics_count_a_slow_subscriber_cut_off(redis_url: str, key_prefix: str,
                                                       tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, subscriber_buffer=1,
                               replay_delay_s=0.002) as rt:
            accepted = await rt.submission.submit(turn("openai", "rapid_deltas"))
            reader = await rt.reading.open_reader(accepted.run_id, None)
            assert reader is not None
            first = await reader.next_batch(5.0)  # subscribed now
            assert first
            got = len(first)
            await rt.runs.actors[accepted.run_id].finished.wait()  # never read meanwhile
            while not reader.done:  # it resumes from Redis: nothing is lost
                batch = await reader.next_batch(5.0)
                assert batch is not None
                got += len(batch)
            reader.close()
            assert got == len(await read_all(rt, accepted.run_id))
            samples = _samples(rt.metrics.render().decode())
            assert samples[("cody_slow_subscribers_dropped_total", ())] >= 1


async def test_metrics_count_the_janitors_endings(redis_url: str, key_prefix: str,
                                                  tmp_path: Path) -> None:
    from tests.integration.test_janitor import write_run

    with trio.fail_after(30):
        async with runtime_for(redis_url, key_prefix, tmp_path, janitor_interval_s=0.2) as rt:
            orphan = await write_run(rt.log, f"dead-{uuid.uuid4()}", finished=False)
            while True:  # this node's janitor ends it (its node has no lease)
                last = await rt.log.last_entry(orphan)
                if last is not None and last[1] == "response_error":
                    break
                await trio.sleep(0.05)
            # the janitor counts the ending once its script returns, a moment after the entry
            # is readable: wait for the count, then check it is exactly one
            for _ in range(1000):  # bounded by the fail_after too
                if _samples(rt.metrics.render().decode())[("cody_janitor_endings_total", ())]:
                    break
                await trio.sleep(0.01)
            await trio.sleep(0.5)  # two more sweeps: the run is not ended twice
            samples = _samples(rt.metrics.render().decode())
            assert samples[("cody_janitor_endings_total", ())] == 1
