"""The catalogue end to end, through a real ``cody serve``: a ``cody.toml`` declaring an
OpenAI-compatible ``local`` provider (protocol ``openai-chat``) and custom Anthropic models, the
SPEC §12 conditions that apply to ``openai-chat`` (every recorded ``local`` turn, two turns on a
thread, resume, concurrent runs, bad model names), ``<provider>/<name>`` routing, keys
(PROVIDER_NOT_CONFIGURED, PROVIDER_AUTH), ``GET /api/v2/models`` and ``cody models``.

Each mode shares one server for the module (``chat_server``): in replay mode it plays the
fixtures; in live mode its providers are the fake provider server (tests/fake_provider.py),
which received exactly the recorded requests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.providers.fixtures import Fixture, FixtureLibrary
from tests.e2e.client import make_client, sent_requests, stream, submit, wait_persisted
from tests.e2e.conftest import _servers
from tests.e2e.server import ROOT, ServerProcess, base_env
from tests.fake_provider import FakeProvider
from tests.harness import response_view

LIBRARY = FixtureLibrary()
CHAT = [fx for fx in LIBRARY if fx.protocol == "openai-chat"]
SINGLE_TURN = [fx for fx in CHAT if fx.after is None]
WRONG_KEY = "sk-wrong-5b0e17c2d9"

#: The catalogue of these servers: the fixtures' own (fixtures/openai-chat/cody.toml) with the
#: base URLs of the fake, plus custom Anthropic models and providers for the key checks.
CODY_TOML = '''\
[providers.local]                    # an OpenAI-compatible server (vLLM-style names)
protocol = "openai-chat"
base_url = "{chat}"
api_key_env = "LOCAL_API_KEY"
headers = {{ "X-Team" = "core" }}

[providers.nokey]                    # its key variable is never set
protocol = "openai-chat"
base_url = "{chat}"
api_key_env = "NOKEY_API_KEY"

[providers.wrongkey]                 # set, but not the key the server wants
protocol = "openai-chat"
base_url = "{chat}"
api_key_env = "WRONG_API_KEY"

[providers.open]                     # no key at all (a local server), yet the server wants one
protocol = "openai-chat"
base_url = "{chat}"

[models.qwen3-8b]
provider = "local"
name = "Qwen/Qwen3-8B"

[models.gpt-oss-20b]
provider = "local"
name = "openai/gpt-oss-20b"
reasoning = true

[models.haiku]                       # a custom Anthropic model: thinking on by default
provider = "anthropic"
name = "claude-haiku-4-5"
reasoning = true

[models.opus]                        # one the fake has never heard of
provider = "anthropic"
name = "claude-opus-4-5"
'''


@pytest.fixture(scope="module", params=["replay", "live"])
def chat_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ServerProcess]:
    mode = str(request.param)
    tmp = tmp_path_factory.mktemp(f"chat-{mode}")
    with contextlib.ExitStack() as stack:
        fake = stack.enter_context(FakeProvider(LIBRARY)) if mode == "live" else None
        config = tmp / "cody.toml"
        config.write_text(CODY_TOML.format(
            chat=fake.chat_base_url if fake is not None else "http://127.0.0.1:9/v1"))
        env = {"CODY_CONFIG": str(config)}
        if fake is not None:
            env.update(LOCAL_API_KEY=fake.api_key, WRONG_API_KEY=WRONG_KEY)
        start = stack.enter_context(_servers(tmp))
        yield start(mode, fake=fake, **env)


def _mode(server: ServerProcess) -> str:
    return str(server.mode)  # type: ignore[attr-defined]


def _fake(server: ServerProcess) -> FakeProvider | None:
    fake: FakeProvider | None = server.fake  # type: ignore[attr-defined]
    return fake


async def run_turn(server: ServerProcess, fx: Fixture, *, model: str | None = None,
                   thread_id: str | None = None, **more: Any
                   ) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Submit ``fx``'s prompt, stream it to the end, and read it back from the store: the
    streamed Response's view, the stored one's, and the submit answer."""
    async with make_client(server.base_url) as client:
        body: dict[str, Any] = {"prompt": fx.prompt, "model": model or fx.model,
                                "tools": list(fx.tools), **more}
        if thread_id:
            body["thread_id"] = thread_id
        accepted = await submit(client, **body)
        streamed = await stream(client, accepted["run_id"])
        assert streamed.status_code == 200
        seqs = [e.seq for e in streamed.events]
        assert seqs == list(range(1, len(seqs) + 1)), "gap or duplicate in the stream"
        live = response_view(streamed.reduce())
        persisted = await wait_persisted(client, accepted["thread_id"], accepted["run_id"])
        return live, response_view(persisted), accepted


def _sent(server: ServerProcess, prompt: str) -> list[dict[str, Any]]:
    return sent_requests(server, prompt)


# --------------------------------------------------------------------------- the conditions


@pytest.mark.parametrize("fx", SINGLE_TURN, ids=lambda fx: fx.name)
async def test_every_recorded_local_turn(chat_server: ServerProcess, fx: Fixture) -> None:
    """TC-HP-01, 03, 05, 07, 08 and TC-ER-01..05, 07, 08, 12 for openai-chat: the streamed
    and the stored Response are the fixture's, and the provider got the recorded requests
    (in live mode over HTTP, at ``{base_url}/chat/completions``, with the key and the
    catalogue's headers)."""
    with trio.fail_after(60):
        live, persisted, _ = await run_turn(chat_server, fx)
    assert live == fx.expected
    assert persisted == fx.expected
    assert _sent(chat_server, fx.prompt)[-len(fx.exchanges):] == [
        ex.request for ex in fx.exchanges]
    fake = _fake(chat_server)
    if fake is not None:
        mine = [r for r in fake.requests if r.body in [ex.request for ex in fx.exchanges]]
        assert mine and all(r.path == "/v1/chat/completions" for r in mine)
        assert all(r.headers["Authorization"] == f"Bearer {fake.api_key}" for r in mine)
        assert all(r.headers["X-Team"] == "core" for r in mine)


def test_the_local_recordings_cover_the_conditions() -> None:
    covered = {s for fx in CHAT for s in fx.scenarios}
    wanted = {"TC-HP-01", "TC-HP-03", "TC-HP-05", "TC-HP-06", "TC-HP-07", "TC-HP-08",
              "TC-HP-09"} | {f"TC-ER-{i:02d}" for i in (1, 2, 3, 4, 5, 7, 8, 12)}
    assert wanted <= covered, sorted(wanted - covered)


async def test_hp06_two_turns_on_one_thread(chat_server: ServerProcess) -> None:
    first, second = LIBRARY.get("local", "two_turns_1"), LIBRARY.get("local", "two_turns_2")
    with trio.fail_after(60):
        live1, persisted1, accepted1 = await run_turn(chat_server, first)
        live2, persisted2, _ = await run_turn(chat_server, second,
                                              thread_id=accepted1["thread_id"])
    assert live1 == persisted1 == first.expected
    assert live2 == persisted2 == second.expected
    sent = _sent(chat_server, second.prompt)[-1]
    assert sent == second.exchanges[0].request  # the history as Chat Completions messages
    answer = next(i for i in first.expected["output_items"]
                  if i["type"] == "message" and i["origin"] == "agent")
    assert sent["messages"][:2] == [{"role": "user", "content": first.prompt},
                                    {"role": "assistant", "content": answer["content"]}]


async def test_hp09_resume_with_last_event_id(chat_server: ServerProcess) -> None:
    fx = LIBRARY.get("local", "rapid_deltas")
    with trio.fail_after(60):
        async with make_client(chat_server.base_url) as client:
            accepted = await submit(client, prompt=fx.prompt, model="qwen3-8b")
            first = await stream(client, accepted["run_id"], stop_after=3)
            rest = await stream(client, accepted["run_id"], last_event_id=first.ids[-1])
            after_end = await stream(client, accepted["run_id"], last_event_id=rest.ids[-1])
    events = first.events + rest.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "response_done"
    assert after_end.status_code == 204
    from runtime.reducer import rebuild

    assert response_view(rebuild(events)) == fx.expected


async def test_hp10_er10_er11_concurrent_runs(chat_server: ServerProcess) -> None:
    """Every single-turn recording at once on its own thread (TC-HP-10), 20 more of one
    recording (TC-ER-10, scaled down), and two runs on one thread (TC-ER-11)."""
    simple = LIBRARY.get("local", "simple_message")
    thread = str(uuid.uuid4())
    jobs: list[tuple[Fixture, str | None]] = [(fx, None) for fx in SINGLE_TURN]
    jobs += [(simple, None)] * 20 + [(simple, thread), (LIBRARY.get("local", "tool_read_file"),
                                                        thread)]
    results: list[tuple[Fixture, dict[str, Any], dict[str, Any]]] = []

    async def one(fx: Fixture, thread_id: str | None) -> None:
        live, persisted, _ = await run_turn(chat_server, fx, thread_id=thread_id)
        results.append((fx, live, persisted))

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for fx, thread_id in jobs:
                nursery.start_soon(one, fx, thread_id)
    assert len(results) == len(jobs)
    for fx, live, persisted in results:
        assert live == persisted == fx.expected, fx.name
    async with make_client(chat_server.base_url) as client:
        runs = (await client.get(f"/api/v2/threads/{thread}")).json()["runs"]
    assert len(runs) == 2


async def test_er06_bad_model_names(chat_server: ServerProcess) -> None:
    cases = [({"model": "qwen9"}, "INVALID_MODEL", "model"),
             ({"model": "local/"}, "INVALID_MODEL", "model"),
             ({"model": "mistral/large"}, "UNKNOWN_PROVIDER", "model"),
             ({"model": "qwen3-8b", "provider_id": "anthropic"}, "INVALID_MODEL", "model"),
             ({"model": "local/x", "provider_id": "openai"}, "INVALID_MODEL", "model"),
             ({"provider_id": "nope"}, "UNKNOWN_PROVIDER", "provider_id")]
    async with make_client(chat_server.base_url) as client:
        for extra, code, field in cases:
            r = await client.post("/api/v2/runs", json={"prompt": "hi", **extra})
            assert r.status_code == 400, (extra, r.text)
            assert r.json()["error"]["code"] == code, extra
            assert r.json()["error"]["details"]["field"] == field, extra


# --------------------------------------------------------------------------- routing


async def test_provider_slash_name_is_sent_as_is(chat_server: ServerProcess) -> None:
    """``local/Qwen/Qwen3-8B`` is not a catalogue id: the name after ``local/`` goes on the
    wire unchanged, to the same provider, with its defaults (no reasoning)."""
    fx = LIBRARY.get("local", "simple_message")
    with trio.fail_after(60):
        live, persisted, _ = await run_turn(chat_server, fx, model="local/Qwen/Qwen3-8B")
    expected = {**fx.expected, "model_id": "local/Qwen/Qwen3-8B"}
    assert live == persisted == expected
    assert _sent(chat_server, fx.prompt)[-1] == fx.exchanges[0].request


async def test_reasoning_is_per_model_and_per_run(chat_server: ServerProcess) -> None:
    reasoning = LIBRARY.get("local", "reasoning_message")  # gpt-oss-20b: reasoning = true
    with trio.fail_after(60):
        live, _, _ = await run_turn(chat_server, reasoning)
        assert live == reasoning.expected
        assert _sent(chat_server, reasoning.prompt)[-1]["reasoning_effort"] == "medium"
        simple = LIBRARY.get("local", "simple_message")  # qwen3-8b: no reasoning by default
        await run_turn(chat_server, simple, reasoning_effort="high")
        assert _sent(chat_server, simple.prompt)[-1]["reasoning_effort"] == "high"


async def test_a_custom_anthropic_model(chat_server: ServerProcess) -> None:
    """``haiku`` is the file's: Anthropic's ``claude-haiku-4-5`` with thinking by default
    (the built-in claude-haiku-4.5 has none); a per-run budget wins over the default."""
    fx = LIBRARY.get("anthropic", "simple_message")
    with trio.fail_after(60):
        live, persisted, _ = await run_turn(chat_server, fx, model="haiku")
        assert live == persisted == {**fx.expected, "model_id": "haiku"}
        sent = _sent(chat_server, fx.prompt)[-1]
        assert sent["model"] == "claude-haiku-4-5"
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        await run_turn(chat_server, fx, model="haiku", thinking_budget=4096)
        assert _sent(chat_server, fx.prompt)[-1]["thinking"]["budget_tokens"] == 4096


async def test_a_model_the_provider_does_not_have(chat_server: ServerProcess) -> None:
    """Live: the provider's 404 is MODEL_NOT_FOUND naming both names; replay plays the
    provider's default recording for a model it has none of."""
    async with make_client(chat_server.base_url) as client:
        accepted = await submit(client, prompt="Hello", model="opus")
        with trio.fail_after(60):
            resp = (await stream(client, accepted["run_id"])).reduce()
    assert resp.model_id == "opus" and resp.provider_id == "anthropic"
    if _mode(chat_server) == "replay":  # plays the provider's simple_message
        assert resp.status == "complete"
        return
    assert resp.status == "error" and resp.error is not None
    assert resp.error.code == "MODEL_NOT_FOUND"
    assert "claude-opus-4-5 (Cody model opus)" in resp.error.message


# --------------------------------------------------------------------------- keys


async def test_a_provider_without_its_key(chat_server: ServerProcess) -> None:
    """Live: a provider whose key variable is unset is refused at submit, naming the
    variable; replay needs no key."""
    async with make_client(chat_server.base_url) as client:
        r = await client.post("/api/v2/runs", json={"prompt": "hi", "model": "nokey/m"})
    if _mode(chat_server) == "replay":
        assert r.status_code == 202
        return
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "PROVIDER_NOT_CONFIGURED"
    assert "NOKEY_API_KEY" in error["message"]
    assert error["details"] == {"field": "provider_id", "provider": "nokey",
                                "api_key_env": "NOKEY_API_KEY"}


async def test_a_refused_key_is_provider_auth(chat_server: ServerProcess) -> None:
    """Live: a key the provider refuses (or a provider declared without one that wants one)
    ends the run PROVIDER_AUTH, saying what to fix; replay calls no provider, and has no
    recording for these providers."""
    fx = LIBRARY.get("local", "simple_message")
    live = _mode(chat_server) == "live"
    async with make_client(chat_server.base_url) as client:
        for model, hint in (("wrongkey/Qwen/Qwen3-8B", "check the key in WRONG_API_KEY"),
                            ("open/Qwen/Qwen3-8B", "set api_key_env in [providers.open]")):
            accepted = await submit(client, prompt=fx.prompt, model=model)
            with trio.fail_after(60):
                streamed = await stream(client, accepted["run_id"])
            resp = streamed.reduce()
            assert resp.status == "error" and resp.error is not None
            if not live:
                assert resp.error.code == "REPLAY_NO_FIXTURE"
                continue
            assert resp.error.code == "PROVIDER_AUTH", resp.error
            assert hint in resp.error.message
            # the fake echoes the key it got in its 401; none of it reaches a client
            assert WRONG_KEY not in json.dumps([e.model_dump(mode="json")
                                                for e in streamed.events])
    assert WRONG_KEY not in chat_server.log()


# --------------------------------------------------------------------------- listing


async def test_models_endpoint_and_cody_models(chat_server: ServerProcess) -> None:
    async with make_client(chat_server.base_url) as client:
        r = await client.get("/api/v2/models")
        doc = (await client.get("/openapi.json")).json()
    assert r.status_code == 200
    data = r.json()["data"]
    live = _mode(chat_server) == "live"
    key = "set" if live else "missing"
    assert data == [
        {"id": "gpt-5-mini", "provider": "openai", "name": "gpt-5-mini",
         "protocol": "openai-responses", "reasoning": False, "key": key},
        {"id": "gpt-5-codex", "provider": "openai", "name": "gpt-5-codex",
         "protocol": "openai-responses", "reasoning": True, "key": key},
        {"id": "claude-haiku-4.5", "provider": "anthropic", "name": "claude-haiku-4-5",
         "protocol": "anthropic-messages", "reasoning": False, "key": key},
        {"id": "claude-sonnet-4.5", "provider": "anthropic", "name": "claude-sonnet-4-5",
         "protocol": "anthropic-messages", "reasoning": True, "key": key},
        {"id": "qwen3-8b", "provider": "local", "name": "Qwen/Qwen3-8B",
         "protocol": "openai-chat", "reasoning": False, "key": key},
        {"id": "gpt-oss-20b", "provider": "local", "name": "openai/gpt-oss-20b",
         "protocol": "openai-chat", "reasoning": True, "key": key},
        {"id": "haiku", "provider": "anthropic", "name": "claude-haiku-4-5",
         "protocol": "anthropic-messages", "reasoning": True, "key": key},
        {"id": "opus", "provider": "anthropic", "name": "claude-opus-4-5",
         "protocol": "anthropic-messages", "reasoning": False, "key": key},
    ]
    assert "/api/v2/models" in doc["paths"] and "ModelInfo" in doc["components"]["schemas"]
    out = await trio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "api.cli", "models", "--server", chat_server.base_url],
        cwd=ROOT, capture_output=True, text=True, timeout=30))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "PROVIDER", "NAME", "PROTOCOL", "REASONING", "KEY"]
    assert lines[5].split() == ["qwen3-8b", "local", "Qwen/Qwen3-8B", "openai-chat", "no", key]
    assert len(lines) == 1 + len(data)


# --------------------------------------------------------------------------- start-up


MALFORMED = [
    ('[providers.local]\nprotocol = "openai-chat"\nbase_url = "not a url"\n',
     ":3: providers.local.base_url: 'not a url' is not an http(s) URL"),
    ('[models.qwen]\nprovider = "local"\nname = "q"\n',
     ":2: models.qwen.provider: no provider 'local'"),
    ('[models.qwen\nprovider = "local"\n', ":1: invalid TOML: "),
]


def test_a_malformed_file_stops_cody_serve(tmp_path: Path) -> None:
    """The real command: one line naming file, line and field; no traceback; exit code 2;
    nothing started (the file is read before the data dir is even made)."""
    text, where = MALFORMED[0]
    config = tmp_path / "cody.toml"
    config.write_text(text)
    env = base_env(CODY_CONFIG=str(config), CODY_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run([sys.executable, "-m", "api.cli", "serve"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == f"cody: configuration error: {config}{where}\n"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(("text", "where"), MALFORMED)
def test_each_malformed_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], text: str,
                                         where: str) -> None:
    """The same ``cody serve`` entry point in this process (quicker than a subprocess each)."""
    from api.cli import main

    config = tmp_path / "cody.toml"
    config.write_text(text)
    monkeypatch.setenv("CODY_CONFIG", str(config))
    monkeypatch.setenv("CODY_DATA_DIR", str(tmp_path / "data"))
    assert main(["serve"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"cody: configuration error: {config}{where}"), out.err
    assert out.err.count("\n") == 1 and "Traceback" not in out.err
    assert not (tmp_path / "data").exists()


def test_a_named_file_that_is_missing_stops_start_up(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from api.cli import main

    monkeypatch.setenv("CODY_CONFIG", str(tmp_path / "nope.toml"))
    monkeypatch.setenv("CODY_DATA_DIR", str(tmp_path / "data"))
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == (f"cody: configuration error: {tmp_path / 'nope.toml'}: "
                                       "no such file (CODY_CONFIG)\n")
