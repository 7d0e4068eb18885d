from __future__ import annotations

from pathlib import Path

import trio

from actors.tools import ToolRunner

WS = Path(__file__).resolve().parents[2] / "fixtures" / "workspace"


def runner(timeout: float = 5.0, cap: int = 10_000) -> ToolRunner:
    return ToolRunner(WS, enabled=["read_file", "list_dir", "exec"], timeout_s=timeout,
                      output_cap=cap)


async def test_read_file_and_list_dir() -> None:
    with trio.fail_after(5):
        r = await runner().run("read_file", '{"path": "notes.txt"}')
        assert r.success and r.output == (WS / "notes.txt").read_text()
        r = await runner().run("list_dir", '{"path": "."}')
        assert r.success and r.output == "notes.txt\nsrc/"


async def test_errors_become_failed_results() -> None:
    with trio.fail_after(5):
        cases = {
            ("read_file", '{"path": "missing.txt"}'): "error: file not found: missing.txt",
            ("read_file", '{"path": "../../etc/passwd"}'):
                "error: path escapes the workspace: ../../etc/passwd",
            ("read_file", '{"path": "src"}'): "error: not a file: src",
            ("read_file", "{bad"): "error: invalid arguments: Expecting property name enclosed "
                                   "in double quotes",
            ("read_file", "[1]"): "error: invalid arguments: expected a JSON object",
            ("nope", "{}"): "error: unknown tool: nope",
            ("list_dir", '{"path": "notes.txt"}'): "error: not a directory: notes.txt",
            ("exec", '{"command": ""}'): "error: argument 'command' must be a non-empty string",
        }
        for (name, args), message in cases.items():
            r = await runner().run(name, args)
            assert not r.success
            assert r.output == message


async def test_exec_output_exit_code_and_cap() -> None:
    with trio.fail_after(5):
        r = await runner().run("exec", '{"command": "echo cody; echo err >&2"}')
        assert r.success and r.output == "cody\nerr\n"
        r = await runner().run("exec", '{"command": "exit 3"}')
        assert not r.success and r.output == "exit code 3\n"
        r = await runner(cap=5).run("exec", '{"command": "echo 1234567890"}')
        assert r.output.startswith("12345\n[output truncated")


async def test_exec_timeout_kills_the_process_group() -> None:
    with trio.fail_after(5):
        start = trio.current_time()
        r = await runner(timeout=0.3).run("exec", '{"command": "sleep 30 & sleep 30"}')
        assert not r.success and r.output == "error: timed out after 0.3 s"
        assert trio.current_time() - start < 2


async def test_disabled_tool_is_unknown() -> None:
    r = await ToolRunner(WS, enabled=["read_file"], timeout_s=1, output_cap=100).run(
        "exec", '{"command": "echo hi"}')
    assert not r.success and r.output == "error: unknown tool: exec"
