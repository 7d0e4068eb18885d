"""The client commands as a user runs them: ``cody run``, ``cody runs``, ``cody watch`` as
subprocesses against one real ``cody serve`` (this module's), replaying a slow recording.

Errors are one line on stderr and exit code 1 (an unreachable server, a 4xx, a 5xx); Ctrl-C
(SIGINT) on ``cody run`` cancels the run on the server; ``cody watch`` resumes through a cut
proxy with the text printed once; the spinner is drawn only on a terminal.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.console_fixture import MODEL, answer_text
from tests.e2e.console_server import console_server
from tests.e2e.server import ROOT, ServerProcess, base_env, free_port
from tests.threaded_proxy import ThreadedProxy

CLI = [sys.executable, "-m", "api.cli"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with console_server(tmp_path_factory.mktemp("cli")) as proc:
        yield proc


def cody(*args: str, server: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=ROOT, env=base_env(CODY_SERVER=server),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cody: ")
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unreachable_server_is_one_line_and_exit_1() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    for args in (["run", "hello"], ["runs"],
                 ["watch", "00000000-0000-4000-8000-000000000000"]):
        assert_one_line_error(cody(*args, server=nobody), "cannot reach the server",
                              nobody, "CODY_SERVER")


def test_4xx_and_5xx_are_one_line_and_exit_1(server: ServerProcess) -> None:
    done = cody("run", "hello", "--model", "no-such-model", server=server.base_url)
    assert_one_line_error(done, "400", "INVALID_MODEL", "no-such-model")
    done = cody("watch", "00000000-0000-4000-8000-000000000000", server=server.base_url)
    assert_one_line_error(done, "404", "NOT_FOUND")

    class Broken(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(502)
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b"bad gateway")

        do_POST = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    broken = ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=broken.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{broken.server_address[1]}"
        assert_one_line_error(cody("run", "hello", server=url), "502", "bad gateway")
        assert_one_line_error(cody("runs", server=url), "502")
    finally:
        broken.shutdown()
        broken.server_close()


def test_run_prints_the_turn_and_runs_lists_it(server: ServerProcess) -> None:
    done = cody("run", "hello there", "--model", MODEL, server=server.base_url)
    assert done.returncode == 0, done.stderr
    assert answer_text().strip() in done.stdout
    assert "[thinking]" in done.stdout and "read_file" in done.stdout
    assert "\r" not in done.stdout  # not a terminal: no spinner
    run_id = done.stderr.split()[1]
    listed = cody("runs", "--limit", "5", server=server.base_url)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:3] == ["RUN", "STATUS", "MODEL"]
    row = next(r for r in rows if r.startswith(run_id))
    assert row.split()[1:3] == ["complete", MODEL]
    only = cody("runs", "--status", "aborted", server=server.base_url)
    assert run_id not in only.stdout


def test_ctrl_c_cancels_the_run_on_the_server(server: ServerProcess) -> None:
    proc = subprocess.Popen([*CLI, "run", "please wait", "--model", MODEL], cwd=ROOT,
                            env=base_env(CODY_SERVER=server.base_url), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        first = proc.stderr.readline()  # "run <id> on thread <id>"
        run_id = first.split()[1]
        time.sleep(0.5)  # mid-run: thinking and the tool call take about a second
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelling" in err and "Traceback" not in err
    assert "aborted" in out
    status = httpx.get(f"{server.base_url}/api/v2/runs/{run_id}", timeout=5).json()["status"]
    assert status == "aborted"


def test_watch_resumes_after_a_drop_and_prints_the_text_once(server: ServerProcess) -> None:
    proxy = ThreadedProxy(server.port).start()
    try:
        r = httpx.post(f"{server.base_url}/api/v2/runs", json={"prompt": "watch me",
                                                              "model": MODEL}, timeout=10)
        run_id = r.json()["run_id"]
        proc = subprocess.Popen([*CLI, "watch", run_id], cwd=ROOT,
                                env=base_env(CODY_SERVER=proxy.url), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            seen = ""
            while "w005" not in seen:  # mid-text
                seen += proc.stdout.read(1)
                assert proc.poll() is None, seen
            before = proxy.proxy.connections
            proxy.cut()
            time.sleep(1.0)
            proxy.restore()
            out = seen + proc.stdout.read()  # to the end (the buffered rest included)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out
        assert out.count(answer_text().strip()) == 1, out
        assert out.count("w001") == 1 and out.count("w080") == 1
        assert out.count("read_file") == 1
        assert proxy.proxy.connections > before
    finally:
        proxy.stop()


def test_spinner_only_on_a_terminal(server: ServerProcess) -> None:
    main, child = pty.openpty()
    proc = subprocess.Popen([*CLI, "run", "spin", "--model", MODEL], cwd=ROOT,
                            env=base_env(CODY_SERVER=server.base_url), stdout=child,
                            stderr=subprocess.DEVNULL)
    os.close(child)
    out = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        proc.wait(10)
    finally:
        os.close(main)
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    assert proc.returncode == 0
    assert "waiting for the first token" in text
    assert "\r\x1b[K" in text  # cleared before the first output
    first_clear = text.index("\r\x1b[K")
    assert "waiting for the first token" not in text[first_clear:]
    assert "w080" in text
