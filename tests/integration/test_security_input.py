"""Input hardening over real HTTP (issue 14, item 7): bounded JSON, media type, canonical ids,
range-checked cursors, CORS and cross-site writes, private data dir, SSE send timeout."""

from __future__ import annotations

import os
import socket
import stat
import time
import uuid
from pathlib import Path

import httpx
import pytest
import trio

from actors.reading import check_cursor
from api.bodies import json_depth_exceeds
from runtime.errors import ValidationFailed
from runtime.ids import canonical_uuid
from tests.serving import Served, eventually, serving

JSON = {"Content-Type": "application/json"}


def test_json_depth_scan() -> None:
    assert not json_depth_exceeds(b'{"a": [1, {"b": "[[[[[[[[[[[["}]}', 3)
    assert json_depth_exceeds(b'{"a": [1, {"b": [[]]}]}', 3)
    assert not json_depth_exceeds(b'{"a": "\\"[[[[", "b": [[1]]}', 3)
    assert json_depth_exceeds(b"[" * 2000 + b"]" * 2000, 32)


def test_canonical_uuid_and_cursor_ranges() -> None:
    u = str(uuid.uuid4())
    for spelling in (u, u.upper(), "{" + u + "}", "urn:uuid:" + u, u.replace("-", "")):
        assert canonical_uuid(spelling) == u
    for bad in (" " + u, u + "}", "{" + u, u[:-1], "x" * 36, "", "urn:uuid:{" + u + "}"):
        assert canonical_uuid(bad) is None
    assert check_cursor("18446744073709551615-18446744073709551615")
    for bad in ("18446744073709551616-0", "99999999999999999999-0", "1-99999999999999999999",
                "1-", "-1", "1-2-3", "0x1-0", "1" * 21 + "-0"):
        with pytest.raises(ValidationFailed):
            check_cursor(bad)


def test_listing_cursors_are_range_checked() -> None:
    from runtime.store.protocol import decode_cursor, encode_cursor

    assert decode_cursor(encode_cursor(1_700_000_000_000, "r")) == (1_700_000_000_000, "r")
    for created_at in (2**63, 10**20, -1):
        with pytest.raises(ValidationFailed):
            decode_cursor(encode_cursor(created_at, "r"))


async def _submit(client: httpx.AsyncClient, **body: object) -> dict[str, str]:
    r = await client.post("/api/v2/runs", json={"prompt": "hi", **body})
    assert r.status_code == 202, r.text
    data: dict[str, str] = r.json()
    return data


async def test_bodies_media_type_ids_and_cursors(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with serving(tmp_path / "data", replay_delay_s=0.02) as served, \
                served.client() as client:
            # 2,000 nested arrays (about 4 KB): 400 naming the body, never a 500, in a burst
            deep = b"[" * 2000 + b"]" * 2000
            nested = b'{"prompt": "hi", "tools": ' + deep + b"}"
            statuses: list[int] = []

            async def bad(body: bytes) -> None:
                r = await client.post("/api/v2/runs", content=body, headers=JSON)
                statuses.append(r.status_code)
                assert r.json()["error"]["details"]["field"] == "body", r.text

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(bad, deep if i % 2 else nested)
            assert statuses == [400] * 40
            r = await client.post("/api/v2/threads", content=b'{"settings": ' + deep + b"}",
                                  headers=JSON)
            assert r.status_code == 400 and r.json()["error"]["code"] == "VALIDATION_ERROR"

            # JSON only: text/plain (what a cross-site form or fetch sends unasked) is 415
            for headers in ({"Content-Type": "text/plain"}, {},
                            {"Content-Type": "application/x-www-form-urlencoded"}):
                r = await client.post("/api/v2/runs", content=b'{"prompt": "hi"}',
                                      headers=headers)
                assert r.status_code == 415, (headers, r.text)
                assert r.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
            r = await client.patch(f"/api/v2/threads/{uuid.uuid4()}", content=b'{"title":"x"}',
                                   headers={"Content-Type": "text/plain"})
            assert r.status_code == 415
            r = await client.post("/api/v2/runs", content=b'{"prompt": "hi"}',
                                  headers={"Content-Type": "application/json; charset=utf-8"})
            assert r.status_code == 202, r.text
            assert (await client.post("/api/v2/threads")).status_code == 201  # empty is fine

            # one uuid, one run, whatever its spelling; the braces never reach a Redis key
            u = str(uuid.uuid4())
            accepted = await _submit(client, run_id="{" + u.upper() + "}")
            assert accepted["run_id"] == u
            assert accepted["events_url"] == f"/api/v2/runs/{u}/events"
            for spelling in (u, "urn:uuid:" + u, u.replace("-", "")):
                r = await client.post("/api/v2/runs", json={"prompt": "hi", "run_id": spelling})
                assert r.status_code == 409, (spelling, r.text)
            for spelling in ("{" + u + "}", "urn:uuid:" + u.upper()):
                r = await client.get(f"/api/v2/runs/{spelling}")
                assert r.status_code == 200 and r.json()["id"] == u
            keys = served.runtime.log.keys
            assert await served.runtime.log.run_exists(u)
            assert "{{" not in keys.run_events(u)
            t = str(uuid.uuid4())
            first = await _submit(client, thread_id="urn:uuid:" + t)
            assert first["thread_id"] == t
            r = await client.get("/api/v2/threads/{" + t + "}")
            assert r.status_code == 200 and r.json()["thread"]["id"] == t

            # overflowing cursors: 400 before Redis is asked, on a live run
            live = await _submit(client, prompt="Write a very long essay about streams.")
            for bad_cursor in ("99999999999999999999-0", "1-99999999999999999999"):
                r = await client.get(live["events_url"], headers={"Last-Event-ID": bad_cursor})
                assert r.status_code == 400, r.text
                assert r.json()["error"]["details"]["field"] == "Last-Event-ID"
                r = await client.get(live["events_url"], params={"after": bad_cursor})
                assert r.status_code == 400, r.text
                assert r.json()["error"]["details"]["field"] == "after"
            r = await client.get("/api/v2/runs", params={"cursor": "r1.WzEwMDAwMDAwMDAwMD"
                                                         "AwMDAwMDAwMDAwMCwiYSJd"})
            assert r.status_code in (400, 405), r.text  # 405 until the listing route exists
            for query, field in (("offset=" + "9" * 30, "offset"), ("offset=-1", "offset"),
                                 ("limit=" + "9" * 30, "limit"), ("limit=" + "9" * 5000,
                                                                  "limit")):
                r = await client.get(f"/api/v2/threads?{query}")
                assert r.status_code == 400, (query[:20], r.text)
                assert r.json()["error"]["details"]["field"] == field
            await client.post(f"/api/v2/runs/{live['run_id']}/cancel")
            assert (await client.get("/health")).status_code == 200


async def test_cors_closed_and_cross_site_writes_refused(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with serving(tmp_path / "data") as served, served.client() as client:
            evil = {"Origin": "http://evil.example"}
            r = await client.post("/api/v2/runs", json={"prompt": "hi"}, headers=evil)
            assert r.status_code == 403 and r.json()["error"]["code"] == "ORIGIN_NOT_ALLOWED"
            r = await client.post("/api/v2/runs", content=b'{"prompt": "hi"}',
                                  headers={**evil, "Content-Type": "text/plain"})
            assert r.status_code == 403
            accepted = await _submit(client)
            r = await client.post(f"/api/v2/runs/{accepted['run_id']}/cancel", headers=evil)
            assert r.status_code == 403
            r = await client.get(f"/api/v2/runs/{accepted['run_id']}", headers=evil)
            assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
            r = await client.options("/api/v2/runs", headers={
                **evil, "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in r.headers
            # the server's own pages (the console) may write
            r = await client.post("/api/v2/runs", json={"prompt": "hi"},
                                  headers={"Origin": served.base_url})
            assert r.status_code == 202, r.text

        async with serving(tmp_path / "data2", cors_origins=("https://app.example",)) as served, \
                served.client() as client:
            app = {"Origin": "https://app.example"}
            r = await client.options("/api/v2/runs", headers={
                **app, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"})
            assert r.status_code == 204
            assert r.headers["access-control-allow-origin"] == "https://app.example"
            assert "Authorization" in r.headers["access-control-allow-headers"]
            assert "POST" in r.headers["access-control-allow-methods"]
            assert "Origin" in r.headers["vary"]
            r = await client.post("/api/v2/runs", json={"prompt": "hi"}, headers=app)
            assert r.status_code == 202
            assert r.headers["access-control-allow-origin"] == "https://app.example"
            r = await client.get("/api/v2/runs/not-a-uuid", headers=app)
            assert r.headers["access-control-allow-origin"] == "https://app.example"
            other = {"Origin": "https://app.example.evil"}
            r = await client.options("/api/v2/runs", headers={
                **other, "Access-Control-Request-Method": "POST"})
            assert "access-control-allow-origin" not in r.headers
            r = await client.post("/api/v2/runs", json={"prompt": "hi"}, headers=other)
            assert r.status_code == 403


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_data_dir_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    old = data / "replay-requests.jsonl"  # left by an older version
    old.write_text("")
    os.chmod(old, 0o644)
    other = data / "not-ours.txt"  # a file the server did not make is left alone
    other.write_text("x")
    os.chmod(other, 0o644)
    old_umask = os.umask(0o022)  # what a user's shell has
    try:
        with trio.fail_after(40):
            async with serving(data, redis_url=None, replay_record_requests=True) as served, \
                    served.client() as client:
                accepted = await _submit(client)
                async def stored() -> bool:
                    resp = await served.runtime.store.get_response(accepted["run_id"])
                    return resp is not None and resp.status == "complete"

                await eventually(stored, 15, 0.05)
                assert _mode(data) == 0o700
                found = {p.relative_to(data).as_posix(): _mode(p) for p in data.rglob("*")
                         if not p.is_socket()}
                assert found.pop("not-ours.txt") == 0o644
                for name in ("cody.db", "replay-requests.jsonl", "redis.log", "events-secret"):
                    assert name in found, sorted(found)
                assert any("appendonly" in n for n in found), sorted(found)
                loose = {n: oct(m) for n, m in found.items()
                         if m != (0o700 if (data / n).is_dir() else 0o600)}
                assert loose == {}, loose
    finally:
        os.umask(old_umask)


def _raw_sse(port: int, path: str) -> socket.socket:
    """A client that asks for a stream and then never reads (a 4 KB receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                 "\r\n".encode())
    return sock


async def _run_ended(served: Served, run_id: str) -> None:
    async with served.client() as client:
        async def ended() -> bool:
            r = await client.get(f"/api/v2/runs/{run_id}")
            return bool(r.json()["status"] != "in_progress")

        await eventually(ended, 20, 0.05)


@pytest.mark.parametrize("timeout_s", [0.0, 1.0], ids=["no-timeout", "timeout-1s"])
async def test_a_client_that_reads_nothing_is_dropped(tmp_path: Path, timeout_s: float) -> None:
    """About 1 MB of events to a client that never reads: without the timeout its stream
    stays open (the control); with it, it is dropped within the timeout, and it can resume."""
    with trio.fail_after(40):
        async with serving(tmp_path / "data", sse_send_timeout_s=timeout_s) as served, \
                served.client() as client:
            accepted = await _submit(client, prompt="Write a very long essay about streams.")
            port = int(served.base_url.rsplit(":", 1)[1])
            sock = _raw_sse(port, accepted["events_url"])
            try:
                await eventually(lambda: served.runtime.admission.sse_clients >= 1, 10)
                await _run_ended(served, accepted["run_id"])
                ended = time.monotonic()
                with trio.move_on_after(timeout_s + 2.5 if timeout_s else 3.0):
                    await eventually(lambda: served.runtime.admission.sse_clients == 0, 10)
                open_after = served.runtime.admission.sse_clients
                dropped_s = time.monotonic() - ended
                if timeout_s:
                    assert open_after == 0, "the non-reading client was never dropped"
                    print(f"\nnon-reading client dropped {dropped_s:.2f} s after its run ended")
                    # and it may resume: the whole stream, to its terminal event
                    events = 0
                    async with client.stream("GET", accepted["events_url"]) as r:
                        assert r.status_code == 200
                        async for line in r.aiter_lines():
                            if line.startswith("event: "):
                                events += 1
                                last = line
                    assert last == "event: response_done", last
                    assert events > 100
                else:
                    assert open_after == 1, "the control did not fill the buffers"
            finally:
                sock.close()
