"""Every route rejects bad input with the documented 4xx, and the server keeps serving."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import trio

from tests.e2e.client import make_client
from tests.e2e.conftest import StartServer
from tests.e2e.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One replay-mode server for the whole table: each case also checks that it still
    serves after the bad request before it."""
    from tests.e2e.conftest import _drop_keys
    from tests.e2e.server import WORKSPACE, base_env

    prefix = f"e2e-{uuid.uuid4().hex[:12]}"
    proc = ServerProcess(tmp_path_factory.mktemp("validation"), base_env(
        CODY_REDIS_URL="redis://127.0.0.1:6379/0", CODY_KEY_PREFIX=prefix, CODY_REPLAY="1",
        CODY_WORKSPACE=str(WORKSPACE), CODY_RETENTION_S="300"))
    proc.start()
    yield proc
    proc.stop()
    _drop_keys(prefix)

RUN = str(uuid.uuid4())
THREAD = str(uuid.uuid4())
BIG = "x" * (1_048_576 + 10)

# (method, path, body (bytes or JSON-able or None), status, code, field)
CASES: list[tuple[str, str, object, int, str, str | None]] = [
    ("POST", "/api/v2/runs", b"{not json", 400, "VALIDATION_ERROR", "body"),
    ("POST", "/api/v2/runs", b"", 400, "VALIDATION_ERROR", "body"),
    ("POST", "/api/v2/runs", [1, 2], 400, "VALIDATION_ERROR", "body"),
    ("POST", "/api/v2/runs", {}, 400, "VALIDATION_ERROR", "prompt"),
    ("POST", "/api/v2/runs", {"prompt": 5}, 400, "VALIDATION_ERROR", "prompt"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "colour": "red"}, 400, "VALIDATION_ERROR",
     "colour"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "thread_id": "nope"}, 400, "VALIDATION_ERROR",
     "thread_id"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "run_id": 7}, 400, "VALIDATION_ERROR", "run_id"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "reasoning_effort": "max"}, 400,
     "VALIDATION_ERROR", "reasoning_effort"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "thinking_budget": 0}, 400, "VALIDATION_ERROR",
     "thinking_budget"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "tools": "read_file"}, 400, "VALIDATION_ERROR",
     "tools"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "tools": ["rm_rf"]}, 400, "VALIDATION_ERROR",
     "tools"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "model": "gpt-2"}, 400, "INVALID_MODEL", "model"),
    ("POST", "/api/v2/runs", {"prompt": "hi", "provider_id": "x"}, 400, "UNKNOWN_PROVIDER",
     "provider_id"),
    ("POST", "/api/v2/runs", {"prompt": BIG}, 413, "PAYLOAD_TOO_LARGE", None),
    ("POST", "/api/v2/submit", {"prompt": ""}, 400, "VALIDATION_ERROR", "prompt"),
    ("GET", f"/api/v2/runs/{RUN}", None, 404, "NOT_FOUND", None),
    ("GET", "/api/v2/runs/not-a-uuid", None, 400, "VALIDATION_ERROR", "run_id"),
    ("GET", f"/api/v2/runs/{RUN}/events", None, 404, "NOT_FOUND", None),
    ("POST", f"/api/v2/runs/{RUN}/cancel", None, 404, "NOT_FOUND", None),
    ("POST", "/api/v2/threads", {"title": 3}, 400, "VALIDATION_ERROR", "title"),
    ("POST", "/api/v2/threads", {"title": "t", "extra": 1}, 400, "VALIDATION_ERROR", "extra"),
    ("POST", "/api/v2/threads", b"[", 400, "VALIDATION_ERROR", "body"),
    ("POST", "/api/v2/threads", {"title": BIG}, 413, "PAYLOAD_TOO_LARGE", None),
    ("GET", f"/api/v2/threads/{THREAD}", None, 404, "NOT_FOUND", None),
    ("GET", "/api/v2/threads/xyz", None, 400, "VALIDATION_ERROR", "thread_id"),
    ("GET", "/api/v2/threads?limit=abc", None, 400, "VALIDATION_ERROR", "limit"),
    ("PATCH", f"/api/v2/threads/{THREAD}", {"title": "x"}, 404, "NOT_FOUND", None),
    ("PATCH", f"/api/v2/threads/{THREAD}", {"settings": []}, 400, "VALIDATION_ERROR",
     "settings"),
    ("PATCH", f"/api/v2/threads/{THREAD}", b"{", 400, "VALIDATION_ERROR", "body"),
    ("PATCH", f"/api/v2/threads/{THREAD}", {"nope": 1}, 400, "VALIDATION_ERROR", "nope"),
    ("PATCH", f"/api/v2/threads/{THREAD}", {"title": BIG}, 413, "PAYLOAD_TOO_LARGE", None),
    ("PATCH", f"/api/v2/threads/{THREAD}", b"", 400, "VALIDATION_ERROR", "body"),
    ("DELETE", f"/api/v2/threads/{THREAD}", None, 404, "NOT_FOUND", None),
    ("POST", f"/api/v2/runs/{RUN}/cancel", b"{}", 404, "NOT_FOUND", None),
    ("PUT", "/api/v2/runs", {"prompt": "hi"}, 405, "METHOD_NOT_ALLOWED", None),
    ("GET", "/api/v2/nothing-here", None, 404, "NOT_FOUND", None),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code", "field"), CASES,
                         ids=[f"{c[0]} {c[1][:40]} {c[3]} {c[5]}" for c in CASES])
async def test_bad_input_gets_a_clear_4xx(server: ServerProcess, method: str, path: str,
                                          body: object, status: int, code: str,
                                          field: str | None) -> None:
    with trio.fail_after(20):
        async with make_client(server.base_url) as client:
            kwargs: dict[str, object] = {}
            if isinstance(body, bytes):
                kwargs = {"content": body, "headers": {"Content-Type": "application/json"}}
            elif body is not None:
                kwargs = {"json": body}
            r = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
            assert r.status_code == status, r.text
            error = r.json()["error"]
            assert error["code"] == code
            assert error["message"]
            if field is not None:
                assert error["details"]["field"] == field, error
            # and the server keeps serving
            assert (await client.get("/api/v2/health")).status_code == 200


async def test_bad_cursor_and_openapi(start_server: StartServer) -> None:
    server = start_server()
    with trio.fail_after(20):
        async with make_client(server.base_url) as client:
            accepted = (await client.post("/api/v2/runs", json={"prompt": "hi"})).json()
            r = await client.get(f"/api/v2/runs/{accepted['run_id']}/events",
                                 headers={"Last-Event-ID": "garbage"})
            assert r.status_code == 400
            assert r.json()["error"]["details"]["field"] == "Last-Event-ID"
            r = await client.post("/api/v2/runs", json={"prompt": "hi",
                                                        "run_id": accepted["run_id"]})
            assert r.status_code == 409
            doc = (await client.get("/openapi.json")).json()
            assert {"/api/v2/runs", "/api/v2/runs/{run_id}/events", "/api/v2/threads/{thread_id}",
                    "/api/v2/runs/{run_id}/cancel", "/api/v2/ready"} <= set(doc["paths"])
            for name in ("TurnRequest", "Response", "StreamEvent", "Thread", "ErrorBody"):
                assert name in doc["components"]["schemas"]
