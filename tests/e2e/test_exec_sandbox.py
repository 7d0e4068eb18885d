"""The ``exec`` tool in a real ``cody serve``: the provider keys in the server's own environment
never reach a command (issue 14: a prompt-injected model ran ``env`` and read them)."""

from __future__ import annotations

import shutil
from pathlib import Path

import trio

from actors.providers.fixtures import FixtureLibrary
from runtime.schema import FunctionCallOutputItem
from tests.e2e.client import make_client, stream, submit
from tests.e2e.conftest import StartServer
from tests.e2e.server import ROOT

SECRETS = {"OPENAI_API_KEY": "sk-e2e-openai-4c3b2a", "ANTHROPIC_API_KEY": "sk-ant-e2e-9d8c7b"}


def env_fixture(root: Path) -> Path:
    """The recorded ``tool_exec`` turn, with the model asking for ``echo cody; env``."""
    target = root / "openai" / "tool_exec"
    shutil.copytree(ROOT / "fixtures" / "openai" / "tool_exec", target)
    wire = (target / "stream-1.sse").read_text()
    wire = wire.replace('echo cody\\"', 'echo cody; env\\"')  # done events, completed response
    wire = wire.replace('"delta":"y\\"}"', '"delta":"y; env\\"}"')  # the last argument delta
    assert wire.count("echo cody; env") == 3 and '"delta":"y; env' in wire
    (target / "stream-1.sse").write_text(wire)
    return root


async def test_the_provider_keys_of_the_server_never_reach_exec(start_server: StartServer,
                                                                tmp_path: Path) -> None:
    fixtures = env_fixture(tmp_path / "fixtures")
    fx = FixtureLibrary(fixtures).get("openai", "tool_exec")
    server = start_server(CODY_FIXTURES_DIR=str(fixtures), CODY_REPLAY="1",
                          CODY_TOOL_TIMEOUT_S="10", **SECRETS)
    with trio.fail_after(60):
        async with make_client(server.base_url) as client:
            accepted = await submit(client, prompt=fx.prompt, provider_id="openai",
                                    model=fx.model, tools=["exec"])
            streamed = await stream(client, accepted["run_id"])
    outputs = [i for i in streamed.reduce().output_items if isinstance(i, FunctionCallOutputItem)]
    assert len(outputs) == 1 and outputs[0].success
    output = outputs[0].output
    assert output.startswith("cody\n") and "\nHOME=" in output and "\nPATH=" in output
    for name, value in SECRETS.items():
        assert name not in output and value not in output
    names = {line.split("=", 1)[0] for line in output.split("\n")[1:] if "=" in line}
    assert names <= {"PATH", "LANG", "LC_ALL", "TERM", "HOME", "TMPDIR", "PWD"}
