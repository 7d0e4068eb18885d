"""Built-in tools (SPEC §9): ``read_file``, ``list_dir`` and, when enabled, ``exec``.

Every tool is confined to the workspace root: ``read_file`` and ``list_dir`` open through
``workspace.Workspace`` (no path is checked and opened later), ``exec`` runs under
``sandbox.ExecPolicy``. A tool never raises into the run: a bad argument, an error or a timeout
comes back as ``ToolResult(success=False, output="error: ...")`` so the model can read what
went wrong. Output formats are the contract of fixtures/README.md.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from actors.tools.sandbox import ExecPolicy, ExecSetupFailed, run_command, signal_note
from actors.tools.workspace import EscapesWorkspace, Resolver, Workspace


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
    workspace: Workspace
    exec_policy: ExecPolicy


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, object]
    fn: ToolFn = field(repr=False)


def _path_arg(args: dict[str, Any], default: str | None = None) -> str:
    raw = args.get("path", default)
    if not isinstance(raw, str) or not raw:
        raise _ToolFailure("argument 'path' must be a non-empty string")
    return raw


def _cap(text: str, cap: int) -> str:
    if len(text) <= cap:
        return text
    return text[:cap] + f"\n[output truncated at {cap} characters]"


def _open(ctx: ToolContext, raw: str, missing: str) -> int:
    """A descriptor of what ``raw`` names beneath the root; the tool's messages otherwise."""
    try:
        return ctx.workspace.open(raw)
    except EscapesWorkspace:
        raise _ToolFailure(f"path escapes the workspace: {raw}") from None
    except FileNotFoundError:
        raise _ToolFailure(f"{missing} not found: {raw}") from None
    except ValueError as exc:  # a NUL byte
        raise _ToolFailure(str(exc)) from None


def read_text(ctx: ToolContext, raw: str) -> str:
    """The first ``output_cap + 1`` characters of a regular file, read through its descriptor
    (universal newlines, undecodable bytes replaced). Blocking: run it in a thread."""
    fd = _open(ctx, raw, "file")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _ToolFailure(f"not a file: {raw}")
        os.set_blocking(fd, True)
        f = os.fdopen(fd, "r", encoding="utf-8", errors="replace")
    except BaseException:
        os.close(fd)
        raise
    with f:
        return f.read(ctx.output_cap + 1)


def _is_dir_beneath(ctx: ToolContext, rel: str) -> bool:
    """Whether ``rel`` (a symlink in a listing) leads to a directory inside the workspace."""
    try:
        fd = ctx.workspace.open(rel)
    except (OSError, EscapesWorkspace):
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def list_names(ctx: ToolContext, raw: str) -> list[str]:
    """Sorted entries of a directory, directories (and symlinks to directories inside the
    workspace) with a trailing ``/``. Blocking: run it in a thread."""
    fd = _open(ctx, raw, "directory")
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise _ToolFailure(f"not a directory: {raw}")
        with os.scandir(fd) as entries:
            found = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in entries]
    finally:
        os.close(fd)
    rel = ctx.workspace.relative(raw)
    names = []
    for name, is_dir, is_link in found:
        if is_link:
            is_dir = _is_dir_beneath(ctx, f"{rel}/{name}")
        names.append(name + ("/" if is_dir else ""))
    return sorted(names)


async def _read_file(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raw = _path_arg(args)
    text = await trio.to_thread.run_sync(read_text, ctx, raw, abandon_on_cancel=True)
    return ToolResult(_cap(text, ctx.output_cap), True)


async def _list_dir(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    raw = _path_arg(args, ".")
    names = await trio.to_thread.run_sync(list_names, ctx, raw, abandon_on_cancel=True)
    return ToolResult(_cap("\n".join(names), ctx.output_cap), True)


async def _exec(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise _ToolFailure("argument 'command' must be a non-empty string")
    try:
        done = await run_command(command, cwd=ctx.root, policy=ctx.exec_policy,
                                 cap=ctx.output_cap)
    except ExecSetupFailed as exc:
        raise _ToolFailure(str(exc)) from None
    if done.returncode != 0:
        header = f"exit code {done.returncode}\n" + signal_note(done.returncode, ctx.exec_policy)
        return ToolResult(_cap(header + done.output, ctx.output_cap), False)
    return ToolResult(_cap(done.output, ctx.output_cap), True)


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
    """Runs the tools a run enabled, each under its own timeout.

    ``exec_policy`` defaults to ``ExecPolicy()``: a minimal environment (never the server's)
    and the default limits. ``path_resolver`` is for tests that pin one of the two ways of
    resolving paths (workspace.py); ``auto`` picks ``openat2`` when the kernel has it.
    """

    def __init__(self, root: Path, *, enabled: Sequence[str], timeout_s: float,
                 output_cap: int, exec_policy: ExecPolicy | None = None,
                 path_resolver: Resolver = "auto") -> None:
        self.ctx = ToolContext(root=root, output_cap=output_cap,
                               workspace=Workspace(root, resolver=path_resolver),
                               exec_policy=exec_policy or ExecPolicy())
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
