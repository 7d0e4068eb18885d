"""schemathesis against the served ``/openapi.json``: every route, a few hundred generated
requests (valid and invalid by the document), sent over loopback to a real ``cody serve``.

Asserted on every answer: never a 5xx, the status is one the document lists for that
operation, and the body matches the schema it documents for that status (so the document
says what the server really does).
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import openapi_document
from tests.e2e.conftest import _drop_keys
from tests.e2e.server import ServerProcess, base_env

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
SEEN: defaultdict[str, Counter[int]] = defaultdict(Counter)
"""Operation -> statuses answered, over the whole module."""
EXAMPLES_PER_OPERATION = 25
"""Every operation of the document (13 now), valid and invalid requests: ~700 calls in all
(the figure line counts them)."""


@pytest.fixture(scope="module")
def cody_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    prefix = f"fuzz-{uuid.uuid4().hex[:12]}"
    data_dir: Path = tmp_path_factory.mktemp("fuzz-server")
    server = ServerProcess(data_dir, base_env(
        CODY_REDIS_URL="redis://127.0.0.1:6379/0", CODY_KEY_PREFIX=prefix, CODY_REPLAY="1",
        CODY_RETENTION_S="60", CODY_LOG_LEVEL="warning"))
    server.start(timeout=60)
    try:
        yield server
    finally:
        code = server.stop()
        _drop_keys(prefix)
    assert code == 0, server.log()[-4000:]


def new_thread(server: ServerProcess) -> str:
    r = httpx.post(f"{server.base_url}/api/v2/threads", json={"title": "fuzz"}, timeout=5)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


FINISHED: dict[int, str] = {}


def finished_run(server: ServerProcess) -> str:
    """One replayed run, finished (its events, Response and cancel are then all 200)."""
    if server.port in FINISHED:
        return FINISHED[server.port]
    r = httpx.post(f"{server.base_url}/api/v2/runs", json={"prompt": "fuzz"}, timeout=5)
    assert r.status_code == 202, r.text
    run_id = str(r.json()["run_id"])
    with httpx.stream("GET", f"{server.base_url}/api/v2/runs/{run_id}/events", timeout=10) as s:
        for _ in s.iter_bytes():
            pass
    FINISHED[server.port] = run_id
    return run_id


schema = schemathesis.openapi.from_dict(openapi_document())
"""The document built in-process; the first test checks that it is what the server serves."""
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


def test_the_served_document_is_the_one_fuzzed(cody_server: ServerProcess) -> None:
    served = httpx.get(f"{cody_server.base_url}/openapi.json", timeout=5).json()
    assert served == openapi_document()


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_documented(case: schemathesis.Case,
                                           cody_server: ServerProcess) -> None:
    if case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE:
        # half the valid ids name a thread / run that exists, so the 2xx answers are fuzzed
        # too (a random uuid is a 404)
        params = case.path_parameters
        if "thread_id" in params and int(str(params["thread_id"])[0], 16) % 2 == 0:
            params["thread_id"] = new_thread(cody_server)
        if "run_id" in params and int(str(params["run_id"])[0], 16) % 2 == 0:
            params["run_id"] = finished_run(cody_server)
    response = case.call_and_validate(base_url=cody_server.base_url, checks=CHECKS, timeout=10)
    SEEN[f"{case.operation.method.upper()} {case.operation.path}"][response.status_code] += 1


def test_zz_every_operation_was_fuzzed() -> None:
    """Runs after the fuzzing (file order): every documented operation was called, the
    submit and thread routes got both accepted and refused requests; prints the figures."""
    operations = {f"{method.upper()} {path}" for path, item in openapi_document()["paths"].items()
                  for method in item}
    assert set(SEEN) == operations, operations ^ set(SEEN)
    for op in ("POST /api/v2/runs", "POST /api/v2/threads", "PATCH /api/v2/threads/{thread_id}"):
        assert any(s < 300 for s in SEEN[op]) and any(400 <= s < 500 for s in SEEN[op]), SEEN[op]
    total = sum(sum(c.values()) for c in SEEN.values())
    fives = sum(n for c in SEEN.values() for s, n in c.items() if s >= 500)
    statuses = sorted({s for c in SEEN.values() for s in c})
    print(f"FAULT openapi_fuzz cases={total} operations={len(SEEN)} 5xx={fives} "
          f"statuses={','.join(map(str, statuses))}")
    for op, c in sorted(SEEN.items()):
        print(f"  {op}: {dict(sorted(c.items()))}")
