"""Tenants and tokens over real HTTP (issue 14, item 2): bearer keys, 401s, another tenant's
ids are 404, signed short-lived events tokens, the bind rule, the CLI's key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trio

from runtime.auth import Security, check_bind
from runtime.config import RuntimeConfig, parse_api_keys
from runtime.errors import ValidationFailed
from tests.e2e.server import ROOT
from tests.serving import serving

ACME, GLOBEX = "tok-acme-0123456789abcdef", "tok-globex-0123456789abcdef"
KEYS = (("acme", ACME), ("globex", GLOBEX))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_keys_from_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# who may call\nacme:{ACME}\n")
    config = RuntimeConfig.from_env({"CODY_API_KEYS_FILE": str(keys),
                                     "CODY_API_KEYS": f"globex:{GLOBEX}"})
    assert set(config.api_keys) == set(KEYS)
    with pytest.raises(ValidationFailed, match="CODY_API_KEYS_FILE: cannot read"):
        RuntimeConfig.from_env({"CODY_API_KEYS_FILE": str(tmp_path / "missing")})
    with pytest.raises(ValidationFailed, match="is a secret"):
        RuntimeConfig.from_env({"CODY_EXEC_ENV_ALLOW": "CODY_EVENTS_SECRET"})


def test_keys_parse_and_tokens_compare() -> None:
    assert parse_api_keys(f"acme:{ACME}, globex:{GLOBEX}", "X") == KEYS
    assert parse_api_keys(f"# tenants\nacme:{ACME}\n\nglobex:{GLOBEX}\n", "X") == KEYS
    for bad in ("acme", f":{ACME}", "acme:short", f"a:{ACME},b:{ACME}", f"a{{b}}:{ACME}",
                f"a b:{ACME}"):
        with pytest.raises(ValidationFailed) as info:
            parse_api_keys(bad, "CODY_API_KEYS")
        assert ACME not in info.value.message
    config = RuntimeConfig.from_env({"CODY_API_KEYS": f"acme:{ACME}"})
    assert config.api_keys == (("acme", ACME),) and ACME not in repr(config)
    security = Security(keys=KEYS, events_secret=b"s" * 32, events_ttl_s=60)
    assert security.tenant_for(GLOBEX) == "globex"
    assert security.tenant_for(GLOBEX[:-1]) is None and security.tenant_for("") is None
    run = str(uuid.uuid4())
    token = security.sign_events(run, "acme", now_s=1000)
    assert security.verify_events(token, run, now_s=1060) == "acme"
    assert security.verify_events(token, run, now_s=1061) is None  # expired
    assert security.verify_events(token, str(uuid.uuid4()), now_s=1000) is None
    assert Security(keys=KEYS, events_secret=b"t" * 32).verify_events(token, run, 1000) is None
    head, tail = token.split(".")
    assert security.verify_events(f"{head}A.{tail}", run, now_s=1000) is None
    assert security.verify_events("garbage", run, 1000) is None
    assert ACME not in token


def test_bind_rule() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_bind(host, has_keys=False, insecure=False)
    for host in ("0.0.0.0", "::", "10.1.2.3", "example.com"):
        with pytest.raises(ValidationFailed, match="CODY_API_KEYS"):
            check_bind(host, has_keys=False, insecure=False)
        check_bind(host, has_keys=True, insecure=False)
        check_bind(host, has_keys=False, insecure=True)


def test_serve_refuses_a_public_bind_without_keys(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODY_DATA_DIR": str(tmp_path),
           "CODY_REDIS_URL": "redis://127.0.0.1:6379/0"}
    done = subprocess.run([sys.executable, "-m", "api.cli", "serve", "--host", "0.0.0.0",
                           "--port", "1"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr
    assert "--insecure" in done.stderr


async def test_tenants_and_tokens(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with serving(tmp_path / "data", api_keys=KEYS, replay_delay_s=0.01,
                           events_token_ttl_s=30) as served, \
                served.client() as anon, served.client(headers=bearer(ACME)) as acme, \
                served.client(headers=bearer(GLOBEX)) as globex:
            # open: health, readiness, the document
            for path in ("/health", "/api/v2/health", "/ready", "/api/v2/ready",
                         "/openapi.json"):
                assert (await anon.get(path)).status_code == 200, path
            # everything else needs a valid bearer token
            run_path = f"/api/v2/runs/{uuid.uuid4()}"
            for method, path in (("POST", "/api/v2/runs"), ("GET", run_path),
                                 ("GET", "/api/v2/threads"), ("POST", "/api/v2/threads"),
                                 ("GET", run_path + "/events"), ("POST", run_path + "/cancel"),
                                 ("GET", "/metrics")):
                for headers in ({}, bearer("nope-nope-nope-nope"), {"Authorization": ACME},
                                {"Authorization": f"Basic {ACME}"}):
                    r = await anon.request(method, path, headers=headers,
                                           json={"prompt": "hi"} if method == "POST" else None)
                    assert r.status_code == 401, (method, path, headers, r.text)
                    assert r.headers["www-authenticate"] == 'Bearer realm="cody"'
                    assert r.json()["error"]["code"] == "UNAUTHORIZED"
                    assert ACME not in r.text

            r = await acme.post("/api/v2/runs", json={"prompt": "hi"})
            assert r.status_code == 202, r.text
            accepted = r.json()
            run_id, thread_id = accepted["run_id"], accepted["thread_id"]
            url = urlsplit(accepted["events_url"])
            assert url.path == f"/api/v2/runs/{run_id}/events"
            token = parse_qs(url.query)["token"][0]
            assert ACME not in token
            # the signed URL alone streams the run, as a browser's EventSource would
            async with anon.stream("GET", accepted["events_url"]) as stream:
                assert stream.status_code == 200
                body = b"".join([c async for c in stream.aiter_bytes()])
            assert b"event: response_done" in body
            # ... on that run's events only
            assert (await anon.get(f"/api/v2/runs/{run_id}?token={token}")).status_code == 401
            other = (await acme.post("/api/v2/runs", json={"prompt": "hi"})).json()
            r = await anon.get(f"/api/v2/runs/{other['run_id']}/events?token={token}")
            assert r.status_code == 401
            r = await anon.get(f"/api/v2/runs/{run_id}/events?token={token[:-2]}xx")
            assert r.status_code == 401
            expired = served.runtime.security.sign_events(run_id, "acme",
                                                          int(time.time()) - 31)
            r = await anon.get(f"/api/v2/runs/{run_id}/events?token={expired}")
            assert r.status_code == 401

            # the owner sees its run and thread; another tenant gets 404 for every id
            assert (await acme.get(f"/api/v2/runs/{run_id}")).status_code == 200
            assert (await acme.get(f"/api/v2/threads/{thread_id}")).status_code == 200
            live = (await acme.post("/api/v2/runs", json={
                "prompt": "Write a very long essay about streams."})).json()
            for rid in (run_id, live["run_id"]):  # ended (Redis/store) and live (the actor)
                for method, path in (("GET", f"/api/v2/runs/{rid}"),
                                     ("GET", f"/api/v2/runs/{rid}/events"),
                                     ("POST", f"/api/v2/runs/{rid}/cancel")):
                    r = await globex.request(method, path)
                    assert r.status_code == 404, (method, path, r.text)
                    assert r.json()["error"]["code"] == "NOT_FOUND"
            r = await anon.get(f"/api/v2/runs/{live['run_id']}/events?token=" +
                               served.runtime.security.sign_events(live["run_id"], "globex",
                                                                   int(time.time())))
            assert r.status_code == 404  # a token signed for the wrong tenant shows nothing
            assert (await acme.get(f"/api/v2/runs/{live['run_id']}")).json()["status"] == \
                "in_progress"
            for method in ("GET", "PATCH", "DELETE"):
                r = await globex.request(method, f"/api/v2/threads/{thread_id}",
                                         json={"title": "mine"} if method == "PATCH" else None)
                assert r.status_code == 404, (method, r.text)
            r = await globex.post("/api/v2/runs", json={"prompt": "hi", "thread_id": thread_id})
            assert r.status_code == 404
            r = await globex.post("/api/v2/runs", json={"prompt": "hi", "run_id": run_id})
            assert r.status_code == 409  # taken, whoever's it is; nothing of it shown
            assert run_id not in r.text or "already exists" in r.text
            listed = (await globex.get("/api/v2/threads")).json()["threads"]
            assert thread_id not in {t["id"] for t in listed}
            assert thread_id in {t["id"] for t in (await acme.get("/api/v2/threads")).json()[
                "threads"]}
            # the owner's cancel works, and a thread of its own takes a second turn
            r = await acme.post(f"/api/v2/runs/{live['run_id']}/cancel")
            assert r.status_code == 200 and r.json()["status"] == "aborted"
            r = await acme.post("/api/v2/runs", json={"prompt": "hi", "thread_id": thread_id})
            assert r.status_code == 202

            # the CLI sends CODY_API_KEY as its bearer token
            env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CODY_API_KEY": GLOBEX}
            done = await trio.run_process(
                [sys.executable, "-m", "api.cli", "run", "hi", "--server", served.base_url],
                cwd=ROOT, env=env, capture_stdout=True, capture_stderr=True, check=False)
            assert done.returncode == 0, done.stderr


async def test_workers_on_one_data_dir_share_the_events_secret(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with serving(tmp_path / "data", api_keys=KEYS) as one, \
                serving(tmp_path / "data", api_keys=KEYS, prefix=None) as two:
            assert one.runtime.security.events_secret == two.runtime.security.events_secret
            assert len(one.runtime.security.events_secret) >= 32
        async with serving(tmp_path / "other", api_keys=KEYS) as three:
            assert three.runtime.security.events_secret != one.runtime.security.events_secret
        async with serving(tmp_path / "set", api_keys=KEYS, events_secret="x" * 40) as four:
            assert four.runtime.security.events_secret == b"x" * 40
            assert not (tmp_path / "set" / "events-secret").exists()
            async with httpx.AsyncClient(base_url=four.base_url) as c:
                assert (await c.get("/health")).status_code == 200


def test_openapi_describes_the_security() -> None:
    from api.openapi import openapi_document

    doc = openapi_document()
    assert doc["components"]["securitySchemes"]["bearer"] == {
        **doc["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    submit = doc["paths"]["/api/v2/runs"]["post"]["responses"]
    assert {"401", "403", "415", "429"} <= set(submit)
    events = doc["paths"]["/api/v2/runs/{run_id}/events"]["get"]
    assert {"bearer": []} in events["security"] and {"eventsToken": []} in events["security"]
    assert "token" in {p["name"] for p in events["parameters"]}
    assert doc["paths"]["/api/v2/health"]["get"]["security"] == []
    assert "401" in doc["paths"]["/api/v2/threads/{thread_id}"]["delete"]["responses"]
