"""An httpx + httpx-sse client of the HTTP API, as an application would write one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from httpx_sse import aconnect_sse

from runtime.reducer import ResponseReducer
from runtime.schema import Response, StreamEvent


@dataclass
class Streamed:
    ids: list[str]
    events: list[StreamEvent]
    status_code: int

    def reduce(self) -> Response:
        reducer = ResponseReducer()
        for ev in self.events:
            reducer.apply(ev)
        return reducer.snapshot()


def make_client(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0, read=None),
                             limits=httpx.Limits(max_connections=500))


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v2/runs", json=body)
    assert r.status_code == 202, r.text
    data: dict[str, Any] = r.json()
    return data


async def stream(client: httpx.AsyncClient, run_id: str, *, last_event_id: str | None = None,
                 after: str | None = None, stop_after: int | None = None) -> Streamed:
    """Read the run's SSE stream to its end (or drop the connection after ``stop_after``)."""
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    params = {"after": after} if after else {}
    ids: list[str] = []
    events: list[StreamEvent] = []
    async with aconnect_sse(client, "GET", f"/api/v2/runs/{run_id}/events", headers=headers,
                            params=params) as source:
        status = source.response.status_code
        if status != 200:
            return Streamed(ids, events, status)
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            ev = StreamEvent.model_validate_json(sse.data)
            assert sse.event == ev.type
            ids.append(sse.id)
            events.append(ev)
            if stop_after is not None and len(events) >= stop_after:
                break
    return Streamed(ids, events, status)


async def wait_persisted(client: httpx.AsyncClient, thread_id: str, run_id: str,
                         limit_s: float = 20.0) -> Response:
    """The run as the store has it (``GET /threads/{id}`` reads the store), once terminal."""
    with trio.fail_after(limit_s):
        while True:
            r = await client.get(f"/api/v2/threads/{thread_id}")
            assert r.status_code == 200, r.text
            for run in r.json()["runs"]:
                if run["id"] == run_id and run["status"] in ("complete", "error", "aborted"):
                    return Response.model_validate(run)
            await trio.sleep(0.05)


def sent_requests(server: Any, prompt: str, provider: str | None = None
                  ) -> list[dict[str, Any]]:
    """The provider request bodies a turn sent, in order: from the replay provider's record
    (replay mode) or from what the fake provider server received (live mode); only those of
    ``provider`` when given, by the API they went to (``openai``, ``anthropic``,
    ``openai-chat``; a shared server has every provider's turns on record)."""
    fake = getattr(server, "fake", None)
    if fake is not None:
        bodies = [r.body for r in fake.requests]
    else:
        path = server.data_dir / "replay-requests.jsonl"
        bodies = [json.loads(line)["request"] for line in path.read_text().splitlines()]
    from tests.fake_provider import turn_position

    out = []
    for body in bodies:
        sent_to = ("openai" if "input" in body else
                   "openai-chat" if "stream_options" in body else "anthropic")
        if provider not in (None, sent_to):
            continue
        if turn_position(sent_to, body)[0] == prompt:
            out.append(body)
    return out
