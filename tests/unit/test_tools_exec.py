"""The ``exec`` tool's confinement (actors/tools/sandbox.py): what a command can see and use.

Real commands, real limits. The fork bomb runs as a user of its own (a random uid with no
processes, when the tests run as root: the kernel does not apply RLIMIT_NPROC to root), so its
process count can be watched and the limit is exact; as another user it runs as that user, with
a limit just above what the user already runs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import site
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from actors.tools import ExecPolicy, ToolResult, ToolRunner
from runtime.config import RuntimeConfig
from runtime.errors import ValidationFailed

MIB = 1024 * 1024


def runner(root: Path, policy: ExecPolicy | None = None, *, timeout: float = 10.0,
           cap: int = 10_000) -> ToolRunner:
    return ToolRunner(root, enabled=["exec"], timeout_s=timeout, output_cap=cap,
                      exec_policy=policy)


async def sh(r: ToolRunner, command: str) -> ToolResult:
    return await r.run("exec", json.dumps({"command": command}))


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that still runs (a zombie is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (within the caller's deadline) until ``predicate()`` holds."""
    while not predicate():  # noqa: ASYNC110 - a process ending in /proc fires no event
        await trio.sleep(0.02)


def tasks_of(uid: int, *, zombies: bool = True) -> int:
    """Tasks (threads) whose real uid is ``uid``: what RLIMIT_NPROC counts."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields.get("Uid", "-1 ").split()[0]) != uid:
            continue
        if not zombies and fields.get("State", "").strip().startswith("Z"):
            continue
        count += int(fields.get("Threads", "1").strip() or 1)
    return count


@dataclass
class Sandboxed:
    user: str | None
    uid: int
    workspace: Path


@pytest.fixture
def sandboxed() -> Iterator[Sandboxed]:
    """A workspace (world-traversable, owned by the command's user) and that user: a random
    uid of its own under root, else the current user."""
    ws = Path(tempfile.mkdtemp(prefix="cody-exec-test-"))
    os.chmod(ws, 0o755)
    if os.geteuid() == 0:
        uid = random.randrange(3_000_000, 2**31 - 2)
        while tasks_of(uid):
            uid += 1
        os.chown(ws, uid, uid)
        box = Sandboxed(f"{uid}:{uid}", uid, ws)
    else:
        box = Sandboxed(None, os.getuid(), ws)
    try:
        yield box
    finally:
        shutil.rmtree(ws, ignore_errors=True)


# --- environment -------------------------------------------------------------------------------

async def test_the_server_environment_does_not_reach_a_command(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secrets = {"OPENAI_API_KEY": "sk-test-openai-9f8e7d",
               "ANTHROPIC_API_KEY": "sk-ant-test-1a2b3c",
               "CODY_API_KEYS": "t:tok-test-55aa-0123456789",
               "AWS_SECRET_ACCESS_KEY": "aws-test-77cc",
               "DATABASE_URL": "postgres://u:pw-test-33dd@h/db"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("MY_TOOLCHAIN", "/opt/toolchain")
    monkeypatch.setenv("CODY_EXEC_ENV_ALLOW", "MY_TOOLCHAIN")
    config = RuntimeConfig.from_env()  # what `cody serve` does with its own environment
    assert config.openai_api_key == secrets["OPENAI_API_KEY"]
    with trio.fail_after(10):
        for policy in [ExecPolicy.from_config(config), None]:  # configured, and the default
            res = await sh(runner(tmp_path, policy), "env; cat /proc/self/environ")
            assert res.success
            for value in secrets.values():
                assert value not in res.output
            env = dict(line.split("=", 1) for line in res.output.split("\n")[:-1]
                       if "=" in line and "\0" not in line)
            expected = {"PATH", "LANG", "HOME", "TMPDIR", "PWD"}
            if policy is not None:
                expected |= {"LC_ALL", "TERM", "MY_TOOLCHAIN"}
                assert env["MY_TOOLCHAIN"] == "/opt/toolchain"
                assert env["PATH"] == os.environ["PATH"]
            assert set(env) == expected
            assert env["PWD"] == str(tmp_path)


def test_a_secret_cannot_be_allowed_into_the_environment() -> None:
    for name in ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "CODY_API_KEYS"]:
        with pytest.raises(ValidationFailed, match=f"CODY_EXEC_ENV_ALLOW: {name} is a secret"):
            RuntimeConfig.from_env({"CODY_EXEC_ENV_ALLOW": f"TERM,{name}", name: "x"})


_SERVER = """
import sys, trio
from pathlib import Path
from actors.tools import ToolRunner, hide_process_from_commands
if sys.argv[1] == "hidden":
    assert hide_process_from_commands()
r = ToolRunner(Path(sys.argv[2]), enabled=["exec"], timeout_s=10, output_cap=100_000)
command = "cat /proc/$PPID/environ; echo; head -c 64 /proc/$PPID/mem; echo; id -u"
print(trio.run(r.run, "exec", '{"command": "%s"}' % command).output)
"""


def _python_for(user: dict[str, int | list[int]]) -> str:
    """A Python of this version that ``user`` may run (the venv's may live under /root)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in [sys.executable, f"/usr/bin/python{version}"]:
        try:
            subprocess.run([candidate, "-c", ""], check=True, timeout=20, cwd="/",
                           **user)  # type: ignore[call-overload]
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    raise AssertionError(f"no Python {sys.version_info[:2]} that uid {user} can run")


@pytest.mark.parametrize("hidden", [False, True])
def test_a_command_cannot_read_the_keys_from_the_servers_proc(sandboxed: Sandboxed,
                                                              hidden: bool) -> None:
    """The server's *own* environment still holds the keys: a command of the same user could
    read them from /proc/<server>/environ, unless the server is non-dumpable."""
    user: dict[str, int | list[int]] = {}
    if sandboxed.user is not None:  # root: the "server" runs as the test's own user
        user = {"user": sandboxed.uid, "group": sandboxed.uid, "extra_groups": []}
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": os.pathsep.join([str(root), *site.getsitepackages()]),
           "OPENAI_API_KEY": "sk-proc-test-6e5f4d"}
    done = subprocess.run(
        [_python_for(user), "-c", _SERVER, "hidden" if hidden else "plain",
         str(sandboxed.workspace)], env=env, cwd=sandboxed.workspace, capture_output=True,
        text=True, timeout=60, **user)  # type: ignore[call-overload]
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.rstrip().endswith(str(sandboxed.uid))  # the command ran as the server's user
    if hidden:
        assert "sk-proc-test" not in out and out.count("Permission denied") == 2
    else:  # what the scrubbed environment alone leaves open
        assert "OPENAI_API_KEY=sk-proc-test-6e5f4d" in out


async def test_home_is_private_and_removed(tmp_path: Path) -> None:
    with trio.fail_after(10):
        res = await sh(runner(tmp_path), 'echo "$HOME"; stat -c %a "$HOME"; touch "$HOME/x"')
    home, mode, _ = res.output.split("\n")
    assert res.success and mode == "700" and home != str(tmp_path)
    assert Path(home).name.startswith("cody-exec-") and not await trio.Path(home).exists()


async def test_no_server_descriptor_and_no_stdin(tmp_path: Path) -> None:
    keep = [os.open(os.devnull, os.O_RDONLY) for _ in range(3)]
    os.set_inheritable(keep[0], True)  # even one marked inheritable stays in the server
    try:
        with trio.fail_after(10):
            res = await sh(runner(tmp_path), "ls /proc/self/fd; readlink /proc/self/fd/0; cat")
    finally:
        for fd in keep:
            os.close(fd)
    # 3 is ls's own listing of /proc/self/fd; cat reads /dev/null and ends at once
    assert res.success and res.output == "0\n1\n2\n3\n/dev/null\n"


# --- process group -----------------------------------------------------------------------------

async def test_what_a_command_leaves_running_is_killed_when_it_ends(tmp_path: Path) -> None:
    with trio.fail_after(10):
        start = trio.current_time()
        res = await sh(runner(tmp_path), "sleep 30 & echo $!")
        assert res.success and trio.current_time() - start < 3
        pid = int(res.output)
        await eventually(lambda: not alive(pid))


async def test_a_process_that_leaves_the_group_does_not_hold_the_call(tmp_path: Path) -> None:
    """``setsid`` takes a process out of the group, so the kill misses it (the README says
    so); it holds the output pipe open, yet the call returns once the shell has."""
    with trio.fail_after(10):
        start = trio.current_time()
        res = await sh(runner(tmp_path), "setsid sleep 30 & sleep 0.3; echo $!")
        took = trio.current_time() - start
    pid = int(res.output)
    try:
        assert res.success and alive(pid) and took < 3
    finally:
        os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_timeout_and_cancel_kill_the_whole_group(tmp_path: Path, how: str) -> None:
    r = runner(tmp_path, timeout=0.5 if how == "timeout" else 30)
    command = "sleep 30 & echo $! > pids; (sleep 30; echo late) & echo $! >> pids; sleep 30"
    with trio.fail_after(10):
        start = trio.current_time()
        with trio.move_on_after(0.5 if how == "cancel" else 30):
            res = await sh(r, command)
            assert res.output == "error: timed out after 0.5 s"
        assert trio.current_time() - start < 3
        pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
        assert len(pids) == 2
        await eventually(lambda: not any(alive(p) for p in pids))


# --- rlimits -----------------------------------------------------------------------------------

async def test_a_fork_bomb_is_stopped_by_the_process_limit(sandboxed: Sandboxed) -> None:
    ws = sandboxed.workspace
    os.mkfifo(ws / "hold")  # the shell waits on it without spinning or forking
    before = tasks_of(sandboxed.uid)
    limit = before + 24
    r = runner(ws, ExecPolicy(user=sandboxed.user, max_processes=limit), timeout=3)
    command = "exec 2>bomb.log; bomb() { bomb | bomb & }; bomb; read x < hold"
    peak = 0
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, await trio.to_thread.run_sync(tasks_of, sandboxed.uid))
                    await trio.sleep(0.01)
            nursery.start_soon(watch)
            res = await sh(r, command)
            nursery.cancel_scope.cancel()
        log = (ws / "bomb.log").read_text(errors="replace")
        print(f"\nfork bomb: limit {limit}, peak {peak} tasks, "
              f"{log.count('Cannot fork')} failed forks in 3 s")
        assert res.output == "error: timed out after 3 s"
        assert "Cannot fork" in log
        assert peak <= limit
        # and nothing of it is left
        await eventually(lambda: tasks_of(sandboxed.uid, zombies=False) <= before)


async def test_a_memory_hog_is_stopped_by_the_address_space_limit(tmp_path: Path) -> None:
    hog = ("import sys\nheld = []\nfor i in range(32):\n"
           "    held.append(bytearray(64 << 20))\n    print((i + 1) * 64, flush=True)\n")
    (tmp_path / "hog.py").write_text(hog)  # 2 GiB if nothing stops it
    with trio.fail_after(20):
        res = await sh(runner(tmp_path, ExecPolicy(memory_mb=256)), "python3 hog.py")
    assert not res.success and res.output.startswith("exit code 1\n")
    assert "MemoryError" in res.output
    held = [int(line) for line in res.output.split("\n") if line.isdigit()]
    assert max(held, default=0) < 256


async def test_a_busy_loop_is_stopped_by_the_cpu_limit(tmp_path: Path) -> None:
    with trio.fail_after(40):
        start = trio.current_time()
        res = await sh(runner(tmp_path, ExecPolicy(cpu_s=1), timeout=30), "while :; do :; done")
        took = trio.current_time() - start
    print(f"\nbusy loop: stopped after {took:.2f} s")
    assert res.output == ("exit code -24\n"
                          "[killed by SIGXCPU: the CPU time limit (1 s) was reached]\n")
    assert not res.success and took < 25


async def test_a_file_is_stopped_by_the_file_size_limit(tmp_path: Path) -> None:
    with trio.fail_after(20):
        res = await sh(runner(tmp_path, ExecPolicy(max_file_mb=1)),
                       "head -c 3000000 /dev/zero > big.bin")
    assert not res.success
    # the shell reports head's SIGXFSZ as 128 + 25
    assert res.output.startswith("exit code 153\n") and "File size limit exceeded" in res.output
    assert (tmp_path / "big.bin").stat().st_size == MIB


async def test_open_files_are_limited(tmp_path: Path) -> None:
    with trio.fail_after(20):
        res = await sh(runner(tmp_path, ExecPolicy(max_open_files=16)),
                       "python3 -c \"fs = [open('/dev/null') for _ in range(64)]\"")
    assert not res.success and "Too many open files" in res.output


async def test_a_command_cannot_raise_its_limits(tmp_path: Path) -> None:
    with trio.fail_after(10):
        res = await sh(runner(tmp_path, ExecPolicy(cpu_s=7)), "ulimit -t 100 || ulimit -H -t")
    assert res.output.endswith("8\n")  # hard limit: soft + 1, SIGKILL after SIGXCPU


# --- output ------------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_a_huge_output_is_capped_while_it_is_read(tmp_path: Path) -> None:
    size = 256 * MIB
    peak = baseline = _rss()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, _rss())
                    await trio.sleep(0.005)
            nursery.start_soon(watch)
            start = trio.current_time()
            res = await sh(runner(tmp_path, timeout=50, cap=10_000),
                           f"head -c {size} /dev/zero | tr '\\0' x; echo done >&2")
            took = trio.current_time() - start
            nursery.cancel_scope.cancel()
    print(f"\nhuge output: {size // MIB} MiB read in {took:.2f} s, "
          f"server RSS +{(peak - baseline) / MIB:.1f} MiB")
    assert res.success  # the command ran to its end: nothing was killed for talking
    assert res.output == "x" * 10_000 + "\n[output truncated at 10000 characters]"
    assert peak - baseline < 16 * MIB


# --- users -------------------------------------------------------------------------------------

async def test_commands_run_as_the_configured_user(sandboxed: Sandboxed) -> None:
    with trio.fail_after(10):
        res = await sh(runner(sandboxed.workspace, ExecPolicy(user=sandboxed.user)),
                       "id -u; id -G; touch made")
    uid = sandboxed.uid
    gids = [str(uid)] if sandboxed.user else [str(g) for g in {os.getegid(), *os.getgroups()}]
    assert res.success and res.output.split("\n")[0] == str(uid)
    assert sorted(res.output.split("\n")[1].split()) == sorted(set(gids))
    assert (sandboxed.workspace / "made").stat().st_uid == uid


async def test_an_unknown_user_is_a_clear_error(tmp_path: Path) -> None:
    with trio.fail_after(10):
        res = await sh(runner(tmp_path, ExecPolicy(user="no-such-user-cody")), "true")
    assert not res.success and res.output == "error: exec user not found: no-such-user-cody"
