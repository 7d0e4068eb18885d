"""Installable anywhere (issue 11 item 7): the wheel, installed without ``-e`` into a fresh venv
outside the checkout, serves a replay run from another folder.

The wheel is built from a copy of the project's files (no stale ``build/`` of the checkout can
leak in) without build isolation, and installed with ``--no-deps --no-index``; the fresh venv
finds the third-party dependencies in this test's own environment through a ``.pth`` line, so
the test needs no network and takes seconds, not the minute a download would. What is checked
is ours: the packages and the recorded fixtures are in the wheel, the ``cody`` entry point
works, and nothing is found through the checkout.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
from pathlib import Path

import trio

from tests.e2e.client import make_client, stream, submit
from tests.e2e.server import ROOT, ServerProcess, base_env, free_port

PROJECT_FILES = ("pyproject.toml", "README.md", "runtime", "actors", "api", "fixtures")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


async def run(*argv: str | Path, cwd: Path) -> str:
    result = await trio.run_process([str(a) for a in argv], cwd=cwd, capture_stdout=True,
                                    capture_stderr=True, check=False)
    out = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{out[-4000:]}"
    return result.stdout.decode()


async def test_wheel_installed_in_a_fresh_venv_serves_a_replay_run(tmp_path: Path) -> None:
    source, wheels, venv = tmp_path / "source", tmp_path / "wheels", tmp_path / "venv"
    elsewhere, data_dir = tmp_path / "elsewhere", tmp_path / "data"
    elsewhere.mkdir()
    with trio.fail_after(120):
        source.mkdir()
        for name in PROJECT_FILES:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, source / name, ignore=IGNORE)
            else:
                shutil.copy2(src, source / name)
        await run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                  "--no-build-isolation", "--wheel-dir", wheels, source, cwd=tmp_path)
        (wheel,) = wheels.glob("cody_core-*.whl")
        await run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
        python = venv / "bin" / "python"
        await run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet",
                  "--no-deps", "--no-index", wheel, cwd=tmp_path)
        purelib = Path((await run(python, "-c", "import sysconfig; "
                                  "print(sysconfig.get_paths()['purelib'])",
                                  cwd=elsewhere)).strip())
        (purelib / "_cody_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        where = json.loads(await run(python, "-c", (
            "import json, actors, api, runtime, cody_fixtures\n"
            "from actors.providers.fixtures import FixtureLibrary\n"
            "lib = FixtureLibrary()\n"
            "print(json.dumps({'modules': [m.__file__ for m in (actors, api, runtime, "
            "cody_fixtures)], 'fixtures': str(lib.root), 'count': len(list(lib))}))"),
            cwd=elsewhere))
        for path in [*where["modules"], where["fixtures"]]:
            assert Path(path).is_relative_to(purelib), f"{path} is not from the wheel"
        assert where["count"] == sum(1 for _ in (ROOT / "fixtures").glob("*/*/fixture.json"))

    port = free_port()
    server = ServerProcess(data_dir, base_env(), port=port, cwd=elsewhere,
                           argv=[str(venv / "bin" / "cody"), "serve", "--port", str(port),
                                 "--data-dir", str(data_dir)])
    data_dir.mkdir()
    server.start(timeout=60)
    try:
        with trio.fail_after(30):
            async with make_client(server.base_url) as client:
                accepted = await submit(client, prompt="Say hello.", model="gpt-5-mini")
                streamed = await stream(client, accepted["run_id"])
                # the web console ships as package data ([tool.setuptools.package-data])
                for path, marker in (("/", "Cody console"),
                                     ("/console/console.js", "EventSource"),
                                     ("/console/console.css", "--accent")):
                    r = await client.get(path)
                    assert r.status_code == 200 and marker in r.text, path
        assert streamed.events[-1].type == "response_done"
        response = streamed.reduce()
        assert response.status == "complete"
        assert any(i.type == "message" and i.origin == "agent" and i.content
                   for i in response.output_items), response
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert not (data_dir / "replay-requests.jsonl").exists()  # off unless asked for
