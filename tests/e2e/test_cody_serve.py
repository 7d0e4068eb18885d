"""``cody serve`` as a user runs it: no env but a port and a data dir, embedded Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from tests.e2e.client import make_client, stream, submit
from tests.e2e.server import ServerProcess, base_env


def redis_servers_for(data_dir: Path) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines()
            if "redis-server" in line and str(data_dir) in line]


async def test_cody_serve_embedded_then_sigterm(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, base_env())
    server.start(timeout=60)
    try:
        assert redis_servers_for(tmp_path), "the embedded redis-server is not running"
        with trio.fail_after(30):
            async with make_client(server.base_url) as client:
                accepted = await submit(client, prompt="Hello from a fresh machine")
                streamed = await stream(client, accepted["run_id"])
                assert streamed.events[-1].type == "response_done"
                assert streamed.reduce().status == "complete"
                r = await client.get(f"/api/v2/runs/{accepted['run_id']}")
                assert r.json()["status"] == "complete"
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert not redis_servers_for(tmp_path), "orphaned redis-server after SIGTERM"


async def test_sigterm_aborts_open_runs_and_closes_streams(tmp_path: Path) -> None:
    env = base_env(CODY_REPLAY_DELAY_S="0.05")
    server = ServerProcess(tmp_path, env)
    server.start(timeout=60)
    try:
        with trio.fail_after(60):
            async with make_client(server.base_url) as client:
                accepted = await submit(client, prompt="x", provider_id="anthropic",
                                        model="claude-haiku-4.5")
                # rapid_deltas is long at 50 ms per block: the run is still going
                from actors.providers.fixtures import FixtureLibrary

                fx = FixtureLibrary().get("anthropic", "rapid_deltas")
                accepted = await submit(client, prompt=fx.prompt, provider_id="anthropic",
                                        model=fx.model)
                got: list[object] = []

                async def read() -> None:
                    got.append(await stream(client, accepted["run_id"]))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(read)
                    await trio.sleep(1.0)
                    server.proc.send_signal(15)  # type: ignore[union-attr]
            streamed = got[0]
            assert streamed.events[-1].type == "response_done"  # type: ignore[attr-defined]
            assert streamed.reduce().status == "aborted"  # type: ignore[attr-defined]
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert not redis_servers_for(tmp_path)


async def test_cody_run_prints_the_turn(tmp_path: Path) -> None:
    import sys

    from actors.providers.fixtures import FixtureLibrary
    from tests.e2e.server import ROOT

    fx = FixtureLibrary().get("openai", "tool_read_file")
    server = ServerProcess(tmp_path, base_env(
        CODY_REDIS_URL="redis://127.0.0.1:6379/0", CODY_KEY_PREFIX=f"e2e-run-{tmp_path.name}",
        CODY_WORKSPACE=str(ROOT / "fixtures" / "workspace")))
    server.start(timeout=60)
    try:
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "api.cli", "run", fx.prompt, "--server", server.base_url,
                 "--model", fx.model, "--tools", "read_file"],
                cwd=ROOT, capture_stdout=True, capture_stderr=True, check=False)
    finally:
        server.stop()
    out = done.stdout.decode()
    assert done.returncode == 0, done.stderr.decode()
    answer = next(i["content"] for i in fx.expected["output_items"]
                  if i["type"] == "message" and i["origin"] == "agent")
    assert answer in out
    assert '→ read_file({"path":"notes.txt"})' in out or "→ read_file(" in out
    assert "← ok: Cody Core notes" in out
    usage = fx.expected["usage"]
    assert f"{usage['total_tokens']} total" in out
