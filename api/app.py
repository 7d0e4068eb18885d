"""The Quart-Trio app (SPEC §7), built by one factory from the runtime's services.

Routes parse and validate HTTP (ids, bodies, query strings) and call a service; they never
touch the store, the event log or an actor (``Services`` has none of them to offer).

Bodies are read whole (bounded by ``max_body_bytes`` and ``max_json_depth``, and only as
``application/json``: api/bodies.py), parsed as JSON and validated by pydantic models that
reject unknown fields; every error goes through ``api/errors.py``. Ids are canonicalised
(``{u}``, ``urn:uuid:u`` and ``U`` are ``u``). Auth, tenants and CORS are hooks installed
first (api/auth.py, api/cors.py); each route passes ``current_tenant()`` to its service.

SSE responses have no app-level timeout; the generator pulls from a ``RunReader`` with a
deadline so that keep-alive comments go out while a run is quiet, and its cleanup is shielded
(it runs under cancellation when the client goes away). A client that reads nothing is
dropped by the kernel (``CODY_SSE_SEND_TIMEOUT_S``, api/server.py) and may resume.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors import Services
from api.auth import current_tenant, events_url, install_auth
from api.bodies import read_json
from api.console import register_console
from api.cors import install_cors
from api.errors import from_cody, from_http, from_unexpected
from api.models import ThreadCreate, ThreadPatch
from api.openapi import openapi_document
from runtime import HEADER as IDEMPOTENCY_HEADER
from runtime import (
    KEEP_ALIVE,
    STREAM_OPEN,
    CodyError,
    TurnRequest,
    ValidationFailed,
    canonical_uuid,
)
from runtime import check_key as check_idempotency_key

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
               "Connection": "keep-alive"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _model_json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


def _check_id(value: str, field: str) -> str:
    canonical = canonical_uuid(value)
    if canonical is None:
        raise ValidationFailed(f"{field}: must be a uuid", details={"field": field})
    return canonical


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("cody")
    app.config["RESPONSE_TIMEOUT"] = None  # SSE streams live as long as their run
    config = services.config
    submission, reading = services.submission, services.reading
    threads, lifecycle, models = services.threads, services.lifecycle, services.models
    observability = services.observability
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    max_body = config.max_body_bytes
    keepalive = config.keepalive_s
    admission, security = services.admission, services.security

    def _body(model: type[Any], *, allow_empty: bool = False) -> Any:
        return read_json(model, max_bytes=max_body, max_depth=config.max_json_depth,
                         allow_empty=allow_empty)

    app.register_error_handler(CodyError, from_cody)
    app.register_error_handler(HTTPException, from_http)
    app.register_error_handler(Exception, from_unexpected)
    install_cors(app, config.cors_origins)  # first: a refused origin never reaches a route
    install_auth(app, security)

    # ------------------------------------------------------------------ runs

    async def submit() -> Response:
        tenant = current_tenant()
        # -- policies: Idempotency-Key (runtime/idempotency.py): a replay answers 200, with
        # the original response (its events_url signed afresh)
        key = check_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
        body: TurnRequest = await _body(TurnRequest)
        accepted, replayed = await submission.submit_idempotent(
            body, key, tenant=tenant, traceparent=request.headers.get("traceparent"))
        if security.enabled:
            accepted = accepted.model_copy(
                update={"events_url": events_url(security, accepted.run_id, tenant)})
        return _model_json(accepted, 200 if replayed else 202)

    app.add_url_rule("/api/v2/runs", "submit", submit, methods=["POST"])
    app.add_url_rule("/api/v2/submit", "submit_alias", submit, methods=["POST"])

    @app.get("/api/v2/runs/<run_id>")
    async def get_run(run_id: str) -> Response:
        return _model_json(await reading.get_response(_check_id(run_id, "run_id"),
                                                      tenant=current_tenant()))

    @app.post("/api/v2/runs/<run_id>/cancel")
    async def cancel_run(run_id: str) -> Response:
        return _model_json(await submission.cancel(_check_id(run_id, "run_id"),
                                                   tenant=current_tenant()))

    @app.get("/api/v2/runs/<run_id>/events")
    async def run_events(run_id: str) -> Response | tuple[str, int]:
        run_id = _check_id(run_id, "run_id")
        cursor, field = request.headers.get("Last-Event-ID"), "Last-Event-ID"
        if not cursor:
            cursor, field = request.args.get("after") or None, "after"
        slot = admission.open_sse()  # 429 past CODY_MAX_SSE_CLIENTS
        try:
            reader = await reading.open_reader(run_id, cursor, tenant=current_tenant(),
                                               cursor_field=field)
        except BaseException:
            slot.release()
            raise
        if reader is None:
            slot.release()
            return "", 204

        async def frames() -> AsyncIterator[bytes]:
            observability.sse_client_opened()
            try:
                yield STREAM_OPEN
                while True:
                    batch = await reader.next_batch(keepalive)
                    if batch is None:
                        yield KEEP_ALIVE
                    elif batch:
                        yield b"".join(e.frame for e in batch)
                    if reader.done:
                        return
            finally:
                reader.close()  # unsubscribes at once, cancelled or not: no await needed
                slot.release()
                observability.sse_client_closed()

        body = frames()
        slot.tie_to(body)  # released even if the generator never runs
        response = Response(body, mimetype="text/event-stream", headers=SSE_HEADERS)
        response.timeout = None
        return response

    # ------------------------------------------------------------------ threads

    @app.post("/api/v2/threads")
    async def create_thread() -> Response:
        body: ThreadCreate = await _body(ThreadCreate, allow_empty=True)
        thread = await threads.create(body.title, body.settings or {}, tenant=current_tenant())
        return _model_json(thread, 201)

    @app.get("/api/v2/threads")
    async def list_threads() -> Response:
        try:
            limit = int(request.args.get("limit", "50"))
            offset = int(request.args.get("offset", "0"))
        except ValueError as exc:
            raise ValidationFailed("limit/offset: must be integers",
                                   details={"field": "limit"}) from exc
        listed = await threads.list_threads(limit=limit, offset=offset,
                                            tenant=current_tenant())
        return _json({"threads": [t.model_dump(mode="json") for t in listed]})

    @app.get("/api/v2/threads/<thread_id>")
    async def get_thread(thread_id: str) -> Response:
        thread, runs = await threads.with_runs(_check_id(thread_id, "thread_id"),
                                               tenant=current_tenant())
        return _json({"thread": thread.model_dump(mode="json"),
                      "runs": [r.model_dump(mode="json") for r in runs]})

    @app.patch("/api/v2/threads/<thread_id>")
    async def patch_thread(thread_id: str) -> Response:
        thread_id = _check_id(thread_id, "thread_id")
        body: ThreadPatch = await _body(ThreadPatch)
        thread = await threads.update(thread_id, title=body.title, settings=body.settings,
                                      tenant=current_tenant())
        return _model_json(thread)

    @app.delete("/api/v2/threads/<thread_id>")
    async def delete_thread(thread_id: str) -> tuple[str, int]:
        await threads.delete(_check_id(thread_id, "thread_id"), tenant=current_tenant())
        return "", 204

    # ------------------------------------------------------------------ models

    @app.get("/api/v2/models")
    async def list_models() -> Response:
        return _json({"data": [m.model_dump(mode="json") for m in models.list_models()]})

    # ------------------------------------------------------------------ health

    @app.get("/api/v2/health")
    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/api/v2/ready")
    @app.get("/ready")
    async def ready() -> Response:
        readiness = await lifecycle.ready()
        readiness.raise_unless_ready()
        return _json({"status": "ready", **readiness.as_dict()})

    register_console(app, services)  # /, /console/*, GET /api/v2/runs, /metrics

    @app.get("/openapi.json")
    async def openapi() -> Response:
        return _json(openapi_document())

    return app
