"""Built-in tools (SPEC §9): ``read_file``, ``list_dir`` and, when enabled, ``exec``.

Every tool is confined to the workspace root. A tool never raises into the run: a bad
argument, an error or a timeout comes back as ``ToolResult(success=False, output="error: ...")``
so the model can read what went wrong. Output formats are the contract of fixtures/README.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio


@dataclass(frozen=True, slots=True)
class ToolResult:
    output: str
    success: bool


class _ToolFailure(Exception):
    """Raised inside a tool to turn into ``success: false`` with this message."""


ToolFn = Callable[["ToolContext", dict[str, Any]], Awaitable[ToolResult]]


@dataclass(frozen=True, slots=True)
class ToolContext:
    root: Path
    output_cap: int


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, object]
    fn: ToolFn = field(repr=False)


def _resolve(ctx: ToolContext, raw: object) -> Path:
    if not isinstance(raw, str) or not raw:
        raise _ToolFailure("argument 'path' must be a non-empty string")
    root = ctx.root.resolve()
    target = (root / raw).resolve()
    if target != root and root not in target.parents:
        raise _ToolFailure(f"path escapes the workspace: {raw}")
    return target


def _cap(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    return text[:cap] + f"\n[output truncated at {cap} characters]"


async def _read_file(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raw = args.get("path")
    path = _resolve(ctx, raw)

    def read() -> str:
        if not path.exists():
            raise _ToolFailure(f"file not found: {raw}")
        if not path.is_file():
            raise _ToolFailure(f"not a file: {raw}")
        with path.open("r", encoding="utf-8", errors="replace") as f:
            return f.read(ctx.output_cap + 1)

    text = await trio.to_thread.run_sync(read, abandon_on_cancel=True)
    return ToolResult(_cap(text, ctx.output_cap), True)


async def _list_dir(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raw = args.get("path", ".")
    path = _resolve(ctx, raw)

    def listing() -> str:
        if not path.exists():
            raise _ToolFailure(f"directory not found: {raw}")
        if not path.is_dir():
            raise _ToolFailure(f"not a directory: {raw}")
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
        return "\n".join(names)

    text = await trio.to_thread.run_sync(listing, abandon_on_cancel=True)
    return ToolResult(_cap(text, ctx.output_cap), True)


async def _kill_group(process: trio.Process) -> None:
    """Cancel delivery for ``exec``: kill the whole process group the shell started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


async def _exec(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise _ToolFailure("argument 'command' must be a non-empty string")
    done = await trio.run_process(
        command,
        shell=True,
        cwd=ctx.root,
        check=False,
        capture_stdout=True,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        deliver_cancel=_kill_group,
    )
    text = done.stdout.decode("utf-8", errors="replace")
    if done.returncode != 0:
        return ToolResult(_cap(f"exit code {done.returncode}\n{text}", ctx.output_cap), False)
    return ToolResult(_cap(text, ctx.output_cap), True)


_PATH_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"path": {"type": "string", "description": "Path relative to the workspace."}},
    "required": ["path"],
    "additionalProperties": False,
}

BUILTIN_TOOLS: Mapping[str, Tool] = {
    "read_file": Tool("read_file", "Read a UTF-8 text file from the workspace.", _PATH_SCHEMA,
                      _read_file),
    "list_dir": Tool("list_dir", "List a directory of the workspace; directories end in '/'.",
                     _PATH_SCHEMA, _list_dir),
    "exec": Tool(
        "exec",
        "Run a shell command in the workspace; returns stdout and stderr.",
        {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "Shell command."}},
            "required": ["command"],
            "additionalProperties": False,
        },
        _exec,
    ),
}


class ToolRunner:
    """Runs the tools a run enabled, each under its own timeout."""

    def __init__(self, root: Path, *, enabled: Sequence[str], timeout_s: float,
                 output_cap: int) -> None:
        self.ctx = ToolContext(root=root, output_cap=output_cap)
        self.timeout_s = timeout_s
        self.tools = {name: BUILTIN_TOOLS[name] for name in enabled if name in BUILTIN_TOOLS}

    @property
    def specs(self) -> list[Tool]:
        return list(self.tools.values())

    async def run(self, name: str, arguments: str) -> ToolResult:
        tool = self.tools.get(name)
        if tool is None:
            return ToolResult(f"error: unknown tool: {name}", False)
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return ToolResult(f"error: invalid arguments: {exc.msg}", False)
        if not isinstance(args, dict):
            return ToolResult("error: invalid arguments: expected a JSON object", False)
        result: ToolResult | None = None
        with trio.move_on_after(self.timeout_s):
            try:
                result = await tool.fn(self.ctx, args)
            except _ToolFailure as exc:
                result = ToolResult(f"error: {exc}", False)
            except OSError as exc:
                result = ToolResult(f"error: {exc.strerror or exc}", False)
            except Exception as exc:  # a tool bug must not crash the run (SPEC §9)
                result = ToolResult(f"error: {type(exc).__name__}: {exc}", False)
        if result is None:
            return ToolResult(f"error: timed out after {self.timeout_s:g} s", False)
        return result
