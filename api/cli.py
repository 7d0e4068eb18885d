"""The ``cody`` command: ``cody serve`` and ``cody run "prompt"``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import httpx
import trio

from runtime.auth import check_bind
from runtime.config import RuntimeConfig
from runtime.errors import ValidationFailed
from runtime.sse import SSEDecoder


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
    config = RuntimeConfig.from_env(None, **overrides)
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
            from actors.workers import serve_workers

            trio.run(partial(serve_workers, config, log_level=args.log_level))
        else:
            trio.run(serve, config)
    except (Exception, BaseExceptionGroup) as exc:
        # one clear line and a non-zero exit: a supervisor that gave up, an embedded Redis
        # that cannot start or be restarted, a port in use
        cause = exc
        while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
            cause = cause.exceptions[0]
        logging.getLogger("cody").critical("fatal: %r", cause, exc_info=cause)
        print(f"cody: fatal: {cause}", file=sys.stderr, flush=True)
        return 1
    return 0


class TurnPrinter:
    """Renders the canonical stream for a person: text as it arrives, reasoning and tool
    calls set apart, usage at the end."""

    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.color = color
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


async def _run_turn(args: argparse.Namespace) -> int:
    server = args.server.rstrip("/")
    body: dict[str, Any] = {"prompt": args.prompt}
    for key, value in (("model", args.model), ("provider_id", args.provider),
                       ("thread_id", args.thread), ("reasoning_effort", args.effort)):
        if value:
            body[key] = value
    if args.tools is not None:
        body["tools"] = [t for t in args.tools.split(",") if t]
    printer = TurnPrinter(sys.stdout, sys.stdout.isatty())
    timeout = httpx.Timeout(10.0, read=None)
    api_key = os.environ.get("CODY_API_KEY")
    auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=server, timeout=timeout, headers=auth) as client:
        r = await client.post("/api/v2/runs", json=body)
        if r.status_code != 202:
            print(f"cody: {r.status_code} {r.text}", file=sys.stderr)
            return 2
        accepted = r.json()
        run_id = accepted["run_id"]
        print(f"run {run_id} on thread {accepted['thread_id']}", file=sys.stderr)
        cancelled = False

        async def watch_sigint(cancel_scope: trio.CancelScope) -> None:
            nonlocal cancelled
            with trio.open_signal_receiver(signal.SIGINT) as sigs:
                async for _ in sigs:
                    if cancelled:
                        cancel_scope.cancel()
                        return
                    cancelled = True
                    print("\ncody: cancelling run...", file=sys.stderr)
                    await client.post(f"/api/v2/runs/{run_id}/cancel")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_sigint, nursery.cancel_scope)
            last_id: str | None = None
            for _attempt in range(20):
                headers = {"Accept": "text/event-stream"}
                if last_id:
                    headers["Last-Event-ID"] = last_id
                try:
                    async with client.stream("GET", accepted["events_url"],
                                             headers=headers) as resp:
                        if resp.status_code == 204:
                            break
                        decoder = SSEDecoder()
                        async for chunk in resp.aiter_bytes():
                            for msg in decoder.feed(chunk):
                                if not msg.data:
                                    continue
                                last_id = msg.id or last_id
                                printer.event(json.loads(msg.data))
                    if printer.status != "in_progress":
                        break
                except httpx.TransportError:
                    await trio.sleep(0.5)  # dropped: resume from the last event seen
            nursery.cancel_scope.cancel()
    return 0 if printer.status == "complete" else (130 if cancelled else 1)


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

    r = sub.add_parser("run", help="submit a turn and print its stream")
    r.add_argument("prompt")
    r.add_argument("--server", default=os.environ.get("CODY_SERVER", "http://127.0.0.1:8080"))
    r.add_argument("--model")
    r.add_argument("--provider")
    r.add_argument("--thread", help="continue this thread")
    r.add_argument("--effort", choices=["low", "medium", "high"])
    r.add_argument("--tools", help="comma-separated tool names (default: the server's)")

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return trio.run(_run_turn, args)


if __name__ == "__main__":
    sys.exit(main())
