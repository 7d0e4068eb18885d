"""Run one ``exec`` command with as little of the server as possible (issue 14 item 8).

What a command gets, and why:

- **Environment**: only an allow-list (``ExecPolicy.env``: the server's ``PATH``, ``LANG``,
  ``LC_ALL``, ``TERM`` and the names the operator adds with ``CODY_EXEC_ENV_ALLOW``, captured
  by ``RuntimeConfig.from_env``), plus ``HOME`` and ``TMPDIR`` set to a fresh private directory
  that is removed afterwards. Nothing else of the server's environment, so no provider key.
- **Its own session and process group** (``setsid``): on timeout, on cancel and as soon as the
  shell exits, the whole group gets ``SIGKILL``, so ``sleep 30 &`` does not outlive the call.
  A process that calls ``setsid`` itself leaves the group and escapes that kill (the rlimits
  still hold it); only a container or a separate user confines it (README, Security).
- **rlimits** set in the child before ``exec`` (``preexec_fn``, which does nothing but
  ``setrlimit``: trio forks from a worker thread, and no lock-taking code may run there; no
  ``PR_SET_PDEATHSIG`` either, it would fire when that idle worker thread exits): CPU seconds,
  address space, processes, file size, open files, and no core files. Each is the lower of the
  policy and the server's own hard limit, soft and hard alike, so a command cannot raise it.
  ``RLIMIT_NPROC`` counts every process *of the user*, the server's threads included, and the
  kernel does not apply it to root: a real process limit needs ``CODY_EXEC_USER``.
- **Optionally another user** (``ExecPolicy.user``, ``CODY_EXEC_USER``: a name, ``uid`` or
  ``uid:gid``): the server needs to be root (or hold ``CAP_SETUID``/``CAP_SETGID``) for it.
- **stdin** is ``/dev/null``, **cwd** the workspace root, every other descriptor closed.
- **The server hides itself** (``hide_process_from_commands``): a command of the same user
  cannot read the server's ``/proc/<pid>/environ`` or memory, where the keys still are.
- **Output** (stdout and stderr together) is decoded while it is read and only the first
  ``cap + 1`` characters are kept; the rest is read and dropped, so a command that prints a
  gigabyte costs the server one read buffer, and is not killed for talking (it still runs to
  its end or its timeout).
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from runtime import DEFAULT_EXEC_ENV, RuntimeConfig

_READ_CHUNK = 65_536
_LEFTOVER_GRACE_S = 1.0
"""Once the shell has exited and its group is killed, how long to wait for the last output (a
process that left the group may still hold the pipe open)."""
_REAP_TIMEOUT_S = 5.0

Limit = tuple[int, int, int]
"""(``resource.RLIMIT_*``, soft, hard)."""


def _setting(name: str) -> int:
    """A limit's default as ``RuntimeConfig`` declares it: the one place it is written."""
    return int(RuntimeConfig.model_fields[name].default)


@dataclass(frozen=True, slots=True)
class ExecPolicy:
    """What an ``exec`` command may use. 0 turns a limit off (the server's own stays).
    The defaults are the config's (``exec_*`` in runtime/config.py)."""

    env: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_EXEC_ENV))
    user: str | None = None
    cpu_s: int = _setting("exec_cpu_s")
    memory_mb: int = _setting("exec_memory_mb")
    max_processes: int = _setting("exec_max_processes")
    max_file_mb: int = _setting("exec_max_file_mb")
    max_open_files: int = _setting("exec_max_open_files")

    @classmethod
    def from_config(cls, config: RuntimeConfig) -> ExecPolicy:
        return cls(env=dict(config.exec_env), user=config.exec_user, cpu_s=config.exec_cpu_s,
                   memory_mb=config.exec_memory_mb, max_processes=config.exec_max_processes,
                   max_file_mb=config.exec_max_file_mb,
                   max_open_files=config.exec_max_open_files)

    def rlimits(self) -> tuple[Limit, ...]:
        """The limits to set in the child, each capped by the server's own hard limit."""
        mib = 1024 * 1024
        wanted = [
            (resource.RLIMIT_CPU, self.cpu_s, self.cpu_s + 1),  # SIGXCPU, then SIGKILL
            (resource.RLIMIT_AS, self.memory_mb * mib, self.memory_mb * mib),
            (resource.RLIMIT_NPROC, self.max_processes, self.max_processes),
            (resource.RLIMIT_FSIZE, self.max_file_mb * mib, self.max_file_mb * mib),
            (resource.RLIMIT_NOFILE, self.max_open_files, self.max_open_files),
        ]
        limits: list[Limit] = [(resource.RLIMIT_CORE, 0, 0)]
        for which, soft, hard in wanted:
            if soft <= 0:
                continue
            _, current_hard = resource.getrlimit(which)
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)
            limits.append((which, min(soft, hard), hard))
        return tuple(limits)


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    output: str
    """At most ``cap + 1`` characters: enough for the caller to tell it was cut."""


class ExecSetupFailed(Exception):
    """The command could not be started as configured (unknown user, no permission)."""


@dataclass(frozen=True, slots=True)
class _Identity:
    uid: int
    gid: int
    groups: tuple[int, ...]


def _identity(user: str | None) -> _Identity | None:
    """The user to run as, or None to stay the server's user."""
    if user is None:
        return None
    numeric = re.fullmatch(r"(\d+)(?::(\d+))?", user)
    if numeric:
        uid = int(numeric[1])
        gid = int(numeric[2]) if numeric[2] else uid
        ident = _Identity(uid, gid, ())
    else:
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise ExecSetupFailed(f"exec user not found: {user}") from None
        ident = _Identity(pw.pw_uid, pw.pw_gid, tuple(os.getgrouplist(user, pw.pw_gid)))
    if (ident.uid, ident.gid) == (os.geteuid(), os.getegid()):
        return None
    return ident


def _prepare(user: str | None) -> tuple[_Identity | None, str]:
    """The identity and a fresh private HOME (owned by that identity). Blocking: a thread."""
    ident = _identity(user)
    home = tempfile.mkdtemp(prefix="cody-exec-")
    if ident is not None:
        try:
            os.chown(home, ident.uid, ident.gid)
        except OSError as exc:
            shutil.rmtree(home, ignore_errors=True)
            raise ExecSetupFailed(f"cannot run as user {user}: {exc.strerror}") from None
    return ident, home


def _set_limits(limits: tuple[Limit, ...]) -> None:
    """Runs in the child between fork and exec: ``setrlimit`` only (module docstring)."""
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))


def kill_group(pgid: int) -> None:
    """SIGKILL a command's process group; Linux delivers it to processes forked meanwhile too."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Capture:
    """Keeps the first ``cap + 1`` characters of a byte stream, reads and drops the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.chars = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.done = trio.Event()

    async def drain(self, stream: trio.abc.ReceiveStream) -> None:
        try:
            while chunk := await stream.receive_some(_READ_CHUNK):
                if self.chars <= self.cap:
                    piece = self.decoder.decode(chunk)
                    self.parts.append(piece)
                    self.chars += len(piece)
        finally:
            self.done.set()

    def text(self) -> str:
        if self.chars <= self.cap:
            self.parts.append(self.decoder.decode(b"", final=True))
        return "".join(self.parts)[: self.cap + 1]


async def run_command(command: str, *, cwd: Path, policy: ExecPolicy, cap: int) -> Finished:
    """Run ``command`` with ``/bin/sh -c`` under ``policy``; the caller's cancel scope is the
    timeout. Whatever way this returns or raises, the process group is dead and reaped."""
    ident, home = await trio.to_thread.run_sync(_prepare, policy.user)
    try:
        env = {"PATH": DEFAULT_EXEC_ENV["PATH"], **policy.env, "HOME": home, "TMPDIR": home}
        try:
            proc = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, preexec_fn=partial(_set_limits, policy.rlimits()),
                user=ident.uid if ident else None, group=ident.gid if ident else None,
                extra_groups=list(ident.groups) if ident else None)
        except PermissionError as exc:
            if ident is None:
                raise
            raise ExecSetupFailed(f"cannot run as user {policy.user}: {exc.strerror}") from None
        assert proc.stdout is not None
        try:
            capture = _Capture(cap)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(capture.drain, proc.stdout)
                returncode = await proc.wait()
                # The command is over, and so is whatever it left running. No checkpoint
                # between the reap and this kill, so the group id is still ours.
                kill_group(proc.pid)
                with trio.move_on_after(_LEFTOVER_GRACE_S):
                    await capture.done.wait()
                nursery.cancel_scope.cancel()
            return Finished(returncode, capture.text())
        finally:
            with trio.CancelScope(shield=True):
                if proc.returncode is None:  # timed out or cancelled: the group goes now
                    # (never after the reap: by then its id may belong to someone else)
                    kill_group(proc.pid)
                    with trio.move_on_after(_REAP_TIMEOUT_S):
                        await proc.wait()
                await proc.stdout.aclose()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_REAP_TIMEOUT_S):
            await trio.to_thread.run_sync(partial(shutil.rmtree, home, ignore_errors=True),
                                          abandon_on_cancel=True)


_PR_SET_DUMPABLE = 4


def hide_process_from_commands() -> bool:
    """Make this process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``); True if it now is.

    A command runs as the server's user unless ``CODY_EXEC_USER`` says otherwise, and the same
    user may read ``/proc/<server>/environ`` (the provider keys the server was started with:
    scrubbing the command's own environment does not hide those), ``/proc/<server>/mem``, or
    ptrace the server. A non-dumpable process's ``/proc`` files belong to root, and ptrace by
    the same user is refused. Costs: no core dumps, and py-spy or gdb need root. Files the user
    can read (the data dir, a keys file) stay readable: only another user keeps them.
    ``open_runtime`` calls this when exec is enabled.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)) == 0


def signal_note(returncode: int, policy: ExecPolicy) -> str:
    """A line that says why a command died of a signal (empty if it did not)."""
    if returncode >= 0:
        return ""
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"[killed by signal {-returncode}]\n"
    why = {
        signal.SIGXCPU: f": the CPU time limit ({policy.cpu_s} s) was reached",
        signal.SIGXFSZ: f": the file size limit ({policy.max_file_mb} MiB) was reached",
    }.get(sig, "")
    return f"[killed by {sig.name}{why}]\n"
