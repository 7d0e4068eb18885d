"""The ``cody`` command: ``cody serve``, and the client commands ``cody run "prompt"``,
``cody runs``, ``cody watch RUN_ID`` and ``cody models``.

The client commands talk to ``CODY_SERVER`` (default ``http://127.0.0.1:8080``; ``--server``).
An unreachable server, a 4xx or a 5xx is one line on stderr and exit code 1, never a traceback.
A watched stream that drops is resumed after the last event seen (``Last-Event-ID``).

``cody models`` asks the server for ``GET /api/v2/models`` rather than reading ``cody.toml``
itself: what a server serves depends on its own ``CODY_CONFIG``, data dir and environment (the
keys), which the shell running ``cody models`` need not share; the server is the one that knows.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio

from runtime import RuntimeConfig, SSEDecoder, ValidationFailed, check_bind


def _serve(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.data_dir:
        overrides["data_dir"] = Path(args.data_dir)
    if args.redis_url:
        overrides["redis_url"] = args.redis_url
    if args.replay:
        overrides["replay"] = True
    if args.live:
        overrides["replay"] = False
    if args.exec:
        overrides["exec_enabled"] = True
    if args.workspace:
        overrides["workspace_root"] = Path(args.workspace)
    if args.workers is not None:
        overrides["workers"] = args.workers

    if args.insecure:
        overrides["insecure"] = True
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = RuntimeConfig.from_env(None, **overrides)
    except ValidationFailed as exc:  # a setting is wrong: the message names it
        print(f"cody: configuration error: {exc.message}", file=sys.stderr, flush=True)
        return 2
    try:  # before the server's imports: a refused bind says so at once
        check_bind(config.host, has_keys=bool(config.api_keys), insecure=config.insecure)
    except ValidationFailed as exc:
        print(f"cody: fatal: {exc}", file=sys.stderr, flush=True)
        return 1
    from api.server import serve

    try:
        if args.worker_fd is not None:  # one of the nodes of `cody serve --workers N`
            fd = args.worker_fd

            def ready() -> None:
                os.write(fd, b"r")
                os.close(fd)

            trio.run(partial(serve, config, ready=ready, announce=False))
        elif config.workers > 1:
            from actors import serve_workers

            trio.run(partial(serve_workers, config, log_level=args.log_level))
        else:
            trio.run(serve, config)
    except (Exception, BaseExceptionGroup) as exc:
        # one clear line and a non-zero exit: a supervisor that gave up, an embedded Redis
        # that cannot start or be restarted, a port in use
        cause = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
        if isinstance(cause, ValidationFailed):
            # cody.toml (read by the factory) is wrong: the message names file, line and
            # field; a traceback would only hide it
            print(f"cody: configuration error: {cause.message}", file=sys.stderr, flush=True)
            return 2
        logging.getLogger("cody").critical("fatal: %r", cause, exc_info=cause)
        print(f"cody: fatal: {cause}", file=sys.stderr, flush=True)
        return 1
    return 0


class TurnPrinter:
    """Renders the canonical stream for a person: text as it arrives, reasoning and tool
    calls set apart, usage at the end."""

    def __init__(self, out: TextIO, color: bool, spinner: Spinner | None = None) -> None:
        self.out = out
        self.color = color
        self.spinner = spinner
        self.kinds: dict[str, str] = {}
        self.current: str | None = None
        self.status = "in_progress"

    def _style(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _switch(self, item_id: str, header: str | None) -> None:
        if self.current != item_id:
            if self.current is not None:
                self.out.write("\n")
            if header:
                self.out.write(header)
            self.current = item_id

    def event(self, ev: dict[str, Any]) -> None:
        p = ev["payload"]
        t = p["type"]
        if self.spinner is not None and t not in ("response_start", "heartbeat"):
            self.spinner.stop()
        w = self.out.write
        if t == "item_start":
            self.kinds[p["item_id"]] = p["item_type"]
            if p["item_type"] == "reasoning":
                self._switch(p["item_id"], self._style("[thinking] ", "2;3"))
            elif p["item_type"] == "message":
                self._switch(p["item_id"], None)
        elif t == "item_delta":
            kind = self.kinds.get(p["item_id"])
            if kind == "reasoning":
                self._switch(p["item_id"], self._style("[thinking] ", "2;3"))
                w(self._style(p["delta_content"], "2;3"))
            elif kind == "message":
                self._switch(p["item_id"], None)
                w(p["delta_content"])
        elif t == "item_done":
            item = p["final_item"]
            if item["type"] == "function_call":
                self._switch(item["id"], None)
                w(self._style(f"→ {item['name']}({item['arguments']})", "36"))
            elif item["type"] == "function_call_output":
                self._switch(item["id"], None)
                first = item["output"].splitlines()[0] if item["output"] else ""
                mark = "ok" if item["success"] else "failed"
                w(self._style(f"← {mark}: {first[:120]}", "36" if item["success"] else "31"))
            elif item["type"] == "message" and item.get("origin") == "user":
                pass
        elif t in ("item_error", "response_error"):
            self._switch("error", None)
            w(self._style(f"error {p['error']['code']}: {p['error']['message']}", "31"))
        elif t == "turn_aborted_by_user":
            self._switch("aborted", None)
            w(self._style(f"aborted: {p['reason']}", "33"))
        if t == "response_done":
            self.status = p["status"]
            usage = p.get("usage")
            self.out.write("\n")
            if usage:
                w(self._style(f"[{p['status']}; tokens: {usage['prompt_tokens']} in, "
                              f"{usage['completion_tokens']} out, {usage['total_tokens']} total]",
                              "2") + "\n")
        elif t == "response_error":
            self.status = "error"
            self.out.write("\n")
        self.out.flush()


class Spinner:
    """A spinner while waiting for the first token: only on a terminal (``enabled``), gone
    (the line cleared) as soon as anything else is printed."""

    FRAMES = "|/-\\"

    def __init__(self, out: TextIO, enabled: bool) -> None:
        self.out = out
        self.active = enabled

    async def run(self) -> None:
        i = 0
        while self.active:
            self.out.write(f"\r{self.FRAMES[i % len(self.FRAMES)]} waiting for the first token")
            self.out.flush()
            i += 1
            await trio.sleep(0.1)

    def stop(self) -> None:
        if self.active:
            self.active = False
            self.out.write("\r\x1b[K")
            self.out.flush()


class CliError(Exception):
    """What the client says on stderr, as one line, before it exits 1."""


def _server_url(args: argparse.Namespace) -> str:
    return str(args.server).rstrip("/")


def _http_error(r: httpx.Response) -> CliError:
    try:
        err = r.json()["error"]
        text = f"{err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        text = " ".join(r.text.split())[:200] or r.reason_phrase
    return CliError(f"the server answered {r.status_code}: {text}")


async def _request(client: httpx.AsyncClient, method: str, url: str,
                   **kwargs: Any) -> httpx.Response:
    """One request; an unreachable server or a 4xx/5xx becomes a :class:`CliError`."""
    try:
        r = await client.request(method, url, **kwargs)
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the server at {client.base_url} "
                       f"({type(exc).__name__}); is `cody serve` running? "
                       f"(set CODY_SERVER or --server)") from exc
    if r.status_code >= 400:
        raise _http_error(r)
    return r


MAX_RECONNECTS = 60
"""Consecutive failed reconnects (0.5 s apart) before a watch gives up."""


async def _follow(client: httpx.AsyncClient, events_url: str, printer: TurnPrinter) -> None:
    """Print the run's events to the end, resuming after the last one seen when the
    connection drops (``Last-Event-ID``: no gap, no duplicate)."""
    last_id: str | None = None
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            async with client.stream("GET", events_url, headers=headers) as resp:
                if resp.status_code == 204:
                    return
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _http_error(resp)
                failures = 0
                decoder = SSEDecoder()
                async for chunk in resp.aiter_bytes():
                    for msg in decoder.feed(chunk):
                        if not msg.data:
                            continue
                        last_id = msg.id or last_id
                        printer.event(json.loads(msg.data))
            if printer.status != "in_progress":
                return
        except httpx.TransportError as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise CliError(f"lost the server at {client.base_url} ({type(exc).__name__}) "
                               f"and could not reconnect") from exc
            await trio.sleep(0.5)  # dropped: resume from the last event seen


def _client(args: argparse.Namespace) -> httpx.AsyncClient:
    """A client of the server; with ``CODY_API_KEY`` every request carries it as Bearer."""
    api_key = os.environ.get("CODY_API_KEY")
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.AsyncClient(base_url=_server_url(args), timeout=httpx.Timeout(10.0, read=None),
                             headers=auth)


def _printer() -> TurnPrinter:
    tty = sys.stdout.isatty()
    return TurnPrinter(sys.stdout, tty, Spinner(sys.stdout, tty))


async def _watch_with_spinner(client: httpx.AsyncClient, events_url: str,
                              printer: TurnPrinter) -> None:
    async with trio.open_nursery() as nursery:
        if printer.spinner is not None and printer.spinner.active:
            nursery.start_soon(printer.spinner.run)
        try:
            await _follow(client, events_url, printer)
        finally:
            if printer.spinner is not None:
                printer.spinner.stop()


async def _run_turn(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prompt": args.prompt}
    for key, value in (("model", args.model), ("provider_id", args.provider),
                       ("thread_id", args.thread), ("reasoning_effort", args.effort),
                       ("thinking_budget", args.thinking_budget)):
        if value:
            body[key] = value
    if args.tools is not None:
        body["tools"] = [t for t in args.tools.split(",") if t]
    printer = _printer()
    async with _client(args) as client:
        accepted = (await _request(client, "POST", "/api/v2/runs", json=body)).json()
        run_id = accepted["run_id"]
        print(f"run {run_id} on thread {accepted['thread_id']}", file=sys.stderr)
        cancelled = False

        async def watch_sigint(cancel_scope: trio.CancelScope) -> None:
            nonlocal cancelled
            with trio.open_signal_receiver(signal.SIGINT) as sigs:
                async for _ in sigs:
                    if cancelled:  # a second Ctrl-C: stop waiting for the ending
                        cancel_scope.cancel()
                        return
                    cancelled = True
                    if printer.spinner is not None:
                        printer.spinner.stop()
                    print("\ncody: cancelling run...", file=sys.stderr)
                    await _request(client, "POST", f"/api/v2/runs/{run_id}/cancel")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_sigint, nursery.cancel_scope)
            await _watch_with_spinner(client, accepted["events_url"], printer)
            nursery.cancel_scope.cancel()
    return 0 if printer.status == "complete" else (130 if cancelled else 1)


MODEL_COLUMNS = ("id", "provider", "name", "protocol", "reasoning", "key")


def models_table(models: list[dict[str, Any]]) -> str:
    """``GET /api/v2/models``'s data as a plain text table, one model a line."""
    rows = [[c.upper() for c in MODEL_COLUMNS]]
    for m in models:
        rows.append([("yes" if m[c] else "no") if c == "reasoning" else str(m[c])
                     for c in MODEL_COLUMNS])
    widths = [max(len(r[i]) for r in rows) for i in range(len(MODEL_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True))
                     .rstrip() for r in rows) + "\n"


async def _models(args: argparse.Namespace) -> int:
    """The models the server serves (``GET /api/v2/models``), as a table."""
    async with _client(args) as client:
        page = (await _request(client, "GET", "/api/v2/models")).json()
    sys.stdout.write(models_table(page["data"]))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    """Attach to a run (from its first event); Ctrl-C detaches, the run goes on."""
    printer = _printer()
    async with _client(args) as client:
        run = (await _request(client, "GET", f"/api/v2/runs/{args.run_id}")).json()
        print(f"run {run['id']} on thread {run['thread_id']} ({run['status']})",
              file=sys.stderr)
        with trio.open_signal_receiver(signal.SIGINT) as sigs:
            async with trio.open_nursery() as nursery:
                async def detach() -> None:
                    async for _ in sigs:
                        nursery.cancel_scope.cancel()
                        return

                nursery.start_soon(detach)
                await _watch_with_spinner(client, f"/api/v2/runs/{args.run_id}/events",
                                          printer)
                nursery.cancel_scope.cancel()
        if printer.status == "in_progress":  # detached, or the stream had ended already
            printer.status = (await _request(client, "GET",
                                             f"/api/v2/runs/{args.run_id}")).json()["status"]
    return 0 if printer.status == "complete" else 1


def _duration(row: dict[str, Any]) -> str:
    ms = row.get("duration_ms")
    return "-" if ms is None else f"{ms / 1000:.1f}s"


async def _runs(args: argparse.Namespace) -> int:
    """A table of runs, newest first (``GET /api/v2/runs``)."""
    params: dict[str, str | int] = {"limit": args.limit}
    for key, value in (("status", args.status), ("thread_id", args.thread),
                       ("model", args.model)):
        if value:
            params[key] = value
    async with _client(args) as client:
        page = (await _request(client, "GET", "/api/v2/runs", params=params)).json()
    rows = [("RUN", "STATUS", "MODEL", "THREAD", "TOKENS", "DURATION", "CREATED")]
    for r in page["data"]:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"] / 1000))
        tokens = str(r["usage"]["total_tokens"]) if r.get("usage") else "-"
        rows.append((r["run_id"], r["status"], r["model"], r["thread_id"], tokens,
                     _duration(r), created))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if page.get("next_cursor"):
        print(f"(more: --limit {args.limit * 2})", file=sys.stderr)
    return 0


def _client_command(command: Any, args: argparse.Namespace) -> int:
    """Run a client command: a :class:`CliError` (or anything unexpected) is one line on
    stderr and exit code 1, never a traceback."""
    try:
        return int(trio.run(command, args))
    except CliError as exc:
        print(f"cody: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except (Exception, BaseExceptionGroup) as exc:
        cause: BaseException = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
        if isinstance(cause, CliError):
            print(f"cody: {cause}", file=sys.stderr)
        else:
            print(f"cody: {type(cause).__name__}: {cause}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cody", description="Cody Core: streamed LLM turns")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the runtime and HTTP server in one process")
    s.add_argument("--host", help="bind address (CODY_HOST, default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (CODY_PORT, default 8080)")
    s.add_argument("--data-dir", help="data dir (CODY_DATA_DIR, default ~/.cody)")
    s.add_argument("--redis-url", help="Redis URL (CODY_REDIS_URL; default: embedded)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--replay", action="store_true", help="play recorded fixtures")
    mode.add_argument("--live", action="store_true", help="call the real providers")
    s.add_argument("--exec", action="store_true", help="enable the exec tool (CODY_EXEC=1)")
    s.add_argument("--workspace", help="tool workspace root (CODY_WORKSPACE, default cwd)")
    s.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without CODY_API_KEYS (CODY_INSECURE=1)")
    s.add_argument("--log-level", default=os.environ.get("CODY_LOG_LEVEL", "warning"))
    s.add_argument("--workers", type=int,
                   help="node processes on one port (CODY_WORKERS, default 1; README, "
                        "Scaling out)")
    s.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)  # set by the parent

    server = os.environ.get("CODY_SERVER", "http://127.0.0.1:8080")
    r = sub.add_parser("run", help="submit a turn and print its stream (Ctrl-C cancels it)")
    r.add_argument("prompt")
    r.add_argument("--server", default=server, help="server URL (CODY_SERVER)")
    r.add_argument("--model")
    r.add_argument("--provider")
    r.add_argument("--thread", help="continue this thread")
    r.add_argument("--effort", choices=["low", "medium", "high"])
    r.add_argument("--thinking-budget", type=int, help="Anthropic thinking budget (tokens)")
    r.add_argument("--tools", help="comma-separated tool names (default: the server's)")

    ls = sub.add_parser("runs", help="list runs, newest first")
    ls.add_argument("--server", default=server, help="server URL (CODY_SERVER)")
    ls.add_argument("--status", help="e.g. in_progress, or complete,error")
    ls.add_argument("--thread", help="one thread's runs")
    ls.add_argument("--model")
    ls.add_argument("--limit", type=int, default=20)

    wa = sub.add_parser("watch", help="attach to a run and print its stream (resumes after a "
                                      "drop; Ctrl-C detaches)")
    wa.add_argument("run_id")
    wa.add_argument("--server", default=server, help="server URL (CODY_SERVER)")

    m = sub.add_parser("models", help="list the models a server serves, and whether it has "
                                      "each provider's key")
    m.add_argument("--server", default=server, help="server URL (CODY_SERVER)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    commands = {"run": _run_turn, "runs": _runs, "watch": _watch, "models": _models}
    return _client_command(commands[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
