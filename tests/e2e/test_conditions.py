"""SPEC §12 acceptance conditions, end to end: a real ``cody serve`` process, real TCP, real Redis.

Each run's streamed events are reduced by the client and compared with the fixture's expected
Response, and the persisted Response (read back from the store) is compared with it too.
"""

from __future__ import annotations

import json

import pytest
import trio

from actors.providers.fixtures import Fixture, FixtureLibrary
from tests.e2e.client import make_client, sent_requests, stream, submit, wait_persisted
from tests.e2e.conftest import StartServer
from tests.e2e.server import ServerProcess
from tests.harness import response_view

LIBRARY = FixtureLibrary()
#: The built-in providers' recordings. The openai-chat ones (provider ``local``, which needs a
#: cody.toml) run through a server of their own in tests/e2e/test_chat_conditions.py.
SERVED = [fx for fx in LIBRARY if fx.provider in ("openai", "anthropic")]
SINGLE_TURN = [fx for fx in SERVED if fx.after is None]


@pytest.fixture
def server(module_server: ServerProcess) -> ServerProcess:
    """Every test here submits its own runs on its own threads: one server per mode serves
    them all (the tests that restart or reconfigure a server start their own)."""
    return module_server


def _id(fx: Fixture) -> str:
    return f"{fx.provider}-{fx.name}"


async def run_fixture(server: ServerProcess, fx: Fixture, *, thread_id: str | None = None
                      ) -> tuple[dict[str, object], dict[str, object], dict[str, str]]:
    async with make_client(server.base_url) as client:
        body: dict[str, object] = {"prompt": fx.prompt, "provider_id": fx.provider,
                                   "model": fx.model, "tools": list(fx.tools)}
        if thread_id:
            body["thread_id"] = thread_id
        accepted = await submit(client, **body)
        streamed = await stream(client, accepted["run_id"])
        assert streamed.status_code == 200
        seqs = [e.seq for e in streamed.events]
        assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate in the stream"
        live = response_view(streamed.reduce())
        persisted = await wait_persisted(client, accepted["thread_id"], accepted["run_id"])
        got = await client.get(f"/api/v2/runs/{accepted['run_id']}")
        assert got.status_code == 200
        assert response_view(type(persisted).model_validate(got.json())) == response_view(persisted)
        return live, response_view(persisted), accepted


@pytest.mark.parametrize("fx", SINGLE_TURN, ids=_id)
async def test_fixture_end_to_end(server: ServerProcess, fx: Fixture) -> None:
    """TC-HP-01..05, 07, 08 and TC-ER-01..05, 07..09, 12: one test per recorded turn."""
    with trio.fail_after(60):
        live, persisted, _ = await run_fixture(server, fx)
    assert live == fx.expected
    assert persisted == fx.expected


def test_every_condition_has_a_fixture() -> None:
    covered = {s for fx in SERVED for s in fx.scenarios}
    wanted = {f"TC-HP-0{i}" for i in range(1, 9)} | {
        f"TC-ER-{i:02d}" for i in (1, 2, 3, 4, 5, 7, 8, 9, 12)}
    assert wanted <= covered, sorted(wanted - covered)


async def test_hp07_usage_persisted(server: ServerProcess) -> None:
    with trio.fail_after(30):
        for provider in ("openai", "anthropic"):
            fx = LIBRARY.get(provider, "simple_message")
            _, persisted, _ = await run_fixture(server, fx)
            assert persisted["usage"]["prompt_tokens"] == 8  # type: ignore[index]
            assert persisted["usage"]["completion_tokens"] == 6  # type: ignore[index]
            assert persisted["usage"]["total_tokens"] == 14  # type: ignore[index]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_hp06_two_turns_on_one_thread(server: ServerProcess, provider: str) -> None:
    first, second = LIBRARY.get(provider, "two_turns_1"), LIBRARY.get(provider, "two_turns_2")
    with trio.fail_after(60):
        live1, persisted1, accepted1 = await run_fixture(server, first)
        live2, persisted2, accepted2 = await run_fixture(server, second,
                                                         thread_id=accepted1["thread_id"])
    assert live1 == persisted1 == first.expected
    assert live2 == persisted2 == second.expected
    # the second request carried the first turn's question and answer (and its reasoning)
    sent = sent_requests(server, second.prompt, provider)[0]
    text = json.dumps(sent)
    assert first.prompt in text and second.prompt in text
    answer = next(i for i in first.expected["output_items"]
                  if i["type"] == "message" and i["origin"] == "agent")
    assert json.dumps(answer["content"])[1:-1] in text
    for item in first.expected["output_items"]:
        if item["type"] == "reasoning" and item.get("signature"):
            assert item["signature"] in text
    async with make_client(server.base_url) as client:
        thread = (await client.get(f"/api/v2/threads/{accepted1['thread_id']}")).json()
    assert [r["id"] for r in thread["runs"]] == [accepted1["run_id"], accepted2["run_id"]]


@pytest.mark.parametrize("mode", ["replay", "live"])
async def test_hp09_resume_with_last_event_id(start_server: StartServer, mode: str) -> None:
    """Drop after 3 events, resume with Last-Event-ID: no duplicate, no gap."""
    from tests.fake_provider import FakeProvider

    with FakeProvider(block_delay_s=0.002) as fake:
        server = start_server(mode, fake=fake, CODY_REPLAY_DELAY_S="0.002")
        await _resume_checks(server)


async def _resume_checks(server: ServerProcess) -> None:
    fx = LIBRARY.get("openai", "rapid_deltas")
    with trio.fail_after(60):
        async with make_client(server.base_url) as client:
            accepted = await submit(client, prompt=fx.prompt, provider_id="openai",
                                    model=fx.model)
            first = await stream(client, accepted["run_id"], stop_after=3)
            assert len(first.events) == 3
            rest = await stream(client, accepted["run_id"], last_event_id=first.ids[-1])
            # and again from the middle with ?after=
            mid = len(rest.ids) // 2
            tail = await stream(client, accepted["run_id"], after=rest.ids[mid])
            after_end = await stream(client, accepted["run_id"], last_event_id=rest.ids[-1])
    events = first.events + rest.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert len({e.event_id for e in events}) == len(events)
    assert events[-1].type == "response_done"
    assert tail.events == rest.events[mid + 1:]
    assert after_end.status_code == 204
    from runtime.reducer import rebuild

    assert response_view(rebuild(events)) == fx.expected


async def test_hp10_concurrent_turns_on_separate_threads(server: ServerProcess) -> None:
    fixtures = [fx for fx in SINGLE_TURN if fx.wire_valid][:10]
    results: dict[str, tuple[object, object]] = {}

    async def one(fx: Fixture) -> None:
        live, persisted, _ = await run_fixture(server, fx)
        results[_id(fx)] = (live, persisted)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for fx in fixtures:
                nursery.start_soon(one, fx)
    for fx in fixtures:
        assert results[_id(fx)] == (fx.expected, fx.expected)


async def test_er05_empty_prompt_is_rejected(server: ServerProcess) -> None:
    async with make_client(server.base_url) as client:
        for prompt in ("", "   "):
            r = await client.post("/api/v2/runs", json={"prompt": prompt})
            assert r.status_code == 400
            assert r.json()["error"]["code"] == "VALIDATION_ERROR"
            assert r.json()["error"]["details"]["field"] == "prompt"


async def test_er06_invalid_model(server: ServerProcess) -> None:
    async with make_client(server.base_url) as client:
        r = await client.post("/api/v2/runs", json={"prompt": "hi", "model": "gpt-2"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "INVALID_MODEL"
        r = await client.post("/api/v2/runs", json={"prompt": "hi", "model": "gpt-5-mini",
                                                    "provider_id": "anthropic"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "INVALID_MODEL"
        r = await client.post("/api/v2/runs", json={"prompt": "hi", "provider_id": "mistral"})
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "UNKNOWN_PROVIDER"


async def test_er10_fifty_concurrent_runs(server: ServerProcess) -> None:
    fx = LIBRARY.get("anthropic", "simple_message")
    views: list[tuple[object, object]] = []

    async def one() -> None:
        live, persisted, _ = await run_fixture(server, fx)
        views.append((live, persisted))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
    assert len(views) == 50
    assert all(v == (fx.expected, fx.expected) for v in views)


async def test_er11_two_runs_on_one_thread(server: ServerProcess) -> None:
    a, b = LIBRARY.get("openai", "simple_message"), LIBRARY.get("openai", "tool_read_file")
    async with make_client(server.base_url) as client:
        thread = (await client.post("/api/v2/threads", json={"title": "parallel"})).json()
    out: dict[str, tuple[object, object]] = {}

    async def one(fx: Fixture) -> None:
        live, persisted, _ = await run_fixture(server, fx, thread_id=thread["id"])
        out[fx.name] = (live, persisted)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, a)
            nursery.start_soon(one, b)
    assert out[a.name] == (a.expected, a.expected)
    assert out[b.name] == (b.expected, b.expected)
    async with make_client(server.base_url) as client:
        runs = (await client.get(f"/api/v2/threads/{thread['id']}")).json()["runs"]
    assert len(runs) == 2


async def test_keepalive_comments_while_quiet(start_server: StartServer) -> None:
    server = start_server(CODY_KEEPALIVE_S="0.1", CODY_REPLAY_DELAY_S="0.3")
    fx = LIBRARY.get("anthropic", "simple_message")
    with trio.fail_after(60):
        async with make_client(server.base_url) as client:
            accepted = await submit(client, prompt=fx.prompt, provider_id="anthropic",
                                    model=fx.model)
            body = b""
            async with client.stream("GET", accepted["events_url"]) as resp:
                assert resp.headers["content-type"].startswith("text/event-stream")
                async for chunk in resp.aiter_bytes():
                    body += chunk
    assert body.count(b": keep-alive\n\n") >= 3
    assert body.rstrip().endswith(b"}")  # closed right after the terminal event
    assert b"event: response_done" in body
