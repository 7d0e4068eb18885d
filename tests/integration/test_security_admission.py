"""Admission limits over real HTTP (issue 14, item 5): live runs per node, SSE clients per
node, a tenant's concurrent runs across two nodes (counted in Redis; a dead node's slots
expire by themselves), and the body limit."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio

from tests.serving import eventually, serving

LONG = "Write a very long essay about streams."
ACME, GLOBEX = "tok-acme-0123456789abcdef", "tok-globex-0123456789abcdef"
KEYS = (("acme", ACME), ("globex", GLOBEX))


def _overloaded(r: httpx.Response, setting: str) -> None:
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "OVERLOADED"
    assert setting in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) >= 1


async def _ended(client: httpx.AsyncClient, run_id: str) -> None:
    async def ended() -> bool:
        status = (await client.get(f"/api/v2/runs/{run_id}")).json()["status"]
        return status not in ("queued", "in_progress")

    await eventually(ended, 15)


async def test_node_limits_live_runs_sse_clients_and_body(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with serving(tmp_path / "data", max_live_runs=2, max_sse_clients=1,
                           max_body_bytes=2048, replay_delay_s=0.01) as served, \
                served.client() as client:
            # a burst of ten: exactly two get in
            answers: list[httpx.Response] = []

            async def submit() -> None:
                answers.append(await client.post("/api/v2/runs", json={"prompt": LONG}))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(submit)
            runs = [r.json() for r in answers if r.status_code == 202]
            assert len(runs) == 2, [r.status_code for r in answers]
            for r in answers:
                if r.status_code != 202:
                    _overloaded(r, "CODY_MAX_LIVE_RUNS")
            _overloaded(await client.post("/api/v2/runs", json={"prompt": "hi"}),
                        "CODY_MAX_LIVE_RUNS")
            # one stream open: a second one is refused, and is welcome once the first closes
            async with client.stream("GET", runs[0]["events_url"]) as first:
                assert first.status_code == 200
                async for _ in first.aiter_bytes():
                    break
                _overloaded(await client.get(runs[1]["events_url"]), "CODY_MAX_SSE_CLIENTS")
            await eventually(lambda: served.runtime.admission.sse_clients == 0, 5)
            await client.post(f"/api/v2/runs/{runs[0]['run_id']}/cancel")
            r = await client.post("/api/v2/runs", json={"prompt": "hi"})
            assert r.status_code == 202, r.text  # a slot came free
            async with client.stream("GET", runs[1]["events_url"]) as second:
                assert second.status_code == 200
            await client.post(f"/api/v2/runs/{runs[1]['run_id']}/cancel")
            # the body limit
            r = await client.post("/api/v2/runs", json={"prompt": "x" * 4096})
            assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
                yield b'{"prompt": "'
                for _ in range(8):
                    yield b"x" * 1024
                yield b'"}'

            async with served.client() as fresh:
                r = await fresh.post("/api/v2/runs", content=chunks(), headers={
                    "Content-Type": "application/json"})
            assert r.status_code == 413, r.text
            assert served.runtime.admission.sse_clients == 0


async def test_tenant_runs_are_counted_across_nodes(tmp_path: Path) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    settings = {"api_keys": KEYS, "max_tenant_runs": 1, "replay_delay_s": 0.01,
                "lease_ttl_s": 1, "janitor_interval_s": 0.2}
    with trio.fail_after(60):
        async with serving(tmp_path / "a", prefix=prefix, **settings) as a, \
                serving(tmp_path / "b", prefix=prefix, **settings) as b, \
                a.client(headers={"Authorization": f"Bearer {ACME}"}) as acme_a, \
                b.client(headers={"Authorization": f"Bearer {ACME}"}) as acme_b, \
                b.client(headers={"Authorization": f"Bearer {GLOBEX}"}) as globex_b:
            r = await acme_a.post("/api/v2/runs", json={"prompt": LONG})
            assert r.status_code == 202
            long_run = r.json()["run_id"]
            _overloaded(await acme_b.post("/api/v2/runs", json={"prompt": "hi"}),
                        "CODY_MAX_TENANT_RUNS")
            assert (await globex_b.post("/api/v2/runs", json={"prompt": "hi"})
                    ).status_code == 202  # another tenant has its own slots
            # node b knows the run only from Redis: its owner reads it, another tenant gets 404
            assert (await acme_b.get(f"/api/v2/runs/{long_run}")).status_code == 200
            assert (await globex_b.get(f"/api/v2/runs/{long_run}")).status_code == 404
            assert (await globex_b.get(f"/api/v2/runs/{long_run}/events")).status_code == 404
            assert (await globex_b.post(f"/api/v2/runs/{long_run}/cancel")).status_code == 404
            # node a keeps its run's slot past the 1 s lease while the run lives
            await trio.sleep(1.6)
            assert (await acme_a.get(f"/api/v2/runs/{long_run}")).json()["status"] == \
                "in_progress"
            _overloaded(await acme_b.post("/api/v2/runs", json={"prompt": "hi"}),
                        "CODY_MAX_TENANT_RUNS")
            # its ending frees the slot at once, on every node
            await acme_a.post(f"/api/v2/runs/{long_run}/cancel")
            with trio.fail_after(5):
                while True:
                    r = await acme_b.post("/api/v2/runs", json={"prompt": "hi"})
                    if r.status_code == 202:
                        break
                    _overloaded(r, "CODY_MAX_TENANT_RUNS")
                    await trio.sleep(0.02)
            await _ended(acme_b, r.json()["run_id"])
            # a dead node's slot (taken, never refreshed, never freed) expires within the lease
            log = a.runtime.log
            assert await log.tenant_acquire("acme", str(uuid.uuid4()), limit=1,
                                            now_ms=int(time.time() * 1000), ttl_ms=1000)
            _overloaded(await acme_b.post("/api/v2/runs", json={"prompt": "hi"}),
                        "CODY_MAX_TENANT_RUNS")
            async def admitted() -> bool:
                r = await acme_b.post("/api/v2/runs", json={"prompt": "hi"})
                return r.status_code == 202

            await eventually(admitted, 3, 0.05)
