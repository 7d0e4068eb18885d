"""The Quart-Trio app (SPEC §7), built by one factory from the runtime's services.

Routes parse and validate HTTP (ids, bodies, query strings) and call a service; they never
touch the store, the event log or an actor (``Services`` has none of them to offer).

Bodies are read whole (bounded by ``max_body_bytes``), parsed as JSON and validated by pydantic
models that reject unknown fields; every error goes through ``api/errors.py``. SSE responses
have no timeout; the generator pulls from a ``RunReader`` with a deadline so that keep-alive
comments go out while a run is quiet, and its cleanup is shielded (it runs under cancellation
when the client goes away).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors.system import Services
from api.console import register_console
from api.errors import from_cody, from_http, from_unexpected, validation_failed
from api.models import ThreadCreate, ThreadPatch
from api.openapi import openapi_document
from runtime.errors import CodyError, PayloadTooLarge, ValidationFailed
from runtime.ids import is_uuid
from runtime.sse import KEEP_ALIVE, STREAM_OPEN
from runtime.turns import TurnRequest

M = TypeVar("M", bound=BaseModel)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no",
               "Connection": "keep-alive"}


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def _model_json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


def _check_id(value: str, field: str) -> str:
    if not is_uuid(value):
        raise ValidationFailed(f"{field}: must be a uuid", details={"field": field})
    return value.lower()


async def _body(model: type[M], max_bytes: int, *, allow_empty: bool = False) -> M:
    length = request.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {max_bytes}",
                              details={"limit": max_bytes})
    raw = await request.get_data(cache=False, as_text=False)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body is over {max_bytes} bytes",
                              details={"limit": max_bytes})
    if not raw.strip():
        if allow_empty:
            return model.model_validate({})
        raise ValidationFailed("body: a JSON object is required", details={"field": "body"})
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"body: malformed JSON ({exc})", details={"field": "body"}) from exc
    if not isinstance(data, dict):
        raise ValidationFailed("body: must be a JSON object", details={"field": "body"})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc) from exc


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("cody")
    app.config["RESPONSE_TIMEOUT"] = None  # SSE streams live as long as their run
    config = services.config
    submission, reading = services.submission, services.reading
    threads, lifecycle = services.threads, services.lifecycle
    observability = services.observability
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.config["BODY_TIMEOUT"] = 30
    max_body = config.max_body_bytes
    keepalive = config.keepalive_s

    app.register_error_handler(CodyError, from_cody)
    app.register_error_handler(HTTPException, from_http)
    app.register_error_handler(Exception, from_unexpected)

    # ------------------------------------------------------------------ runs

    async def submit() -> Response:
        accepted = await submission.submit(await _body(TurnRequest, max_body),
                                           traceparent=request.headers.get("traceparent"))
        return _model_json(accepted, 202)

    app.add_url_rule("/api/v2/runs", "submit", submit, methods=["POST"])
    app.add_url_rule("/api/v2/submit", "submit_alias", submit, methods=["POST"])

    @app.get("/api/v2/runs/<run_id>")
    async def get_run(run_id: str) -> Response:
        return _model_json(await reading.get_response(_check_id(run_id, "run_id")))

    @app.post("/api/v2/runs/<run_id>/cancel")
    async def cancel_run(run_id: str) -> Response:
        return _model_json(await submission.cancel(_check_id(run_id, "run_id")))

    @app.get("/api/v2/runs/<run_id>/events")
    async def run_events(run_id: str) -> Response | tuple[str, int]:
        run_id = _check_id(run_id, "run_id")
        cursor = request.headers.get("Last-Event-ID") or request.args.get("after") or None
        reader = await reading.open_reader(run_id, cursor)
        if reader is None:
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
                observability.sse_client_closed()

        response = Response(frames(), mimetype="text/event-stream", headers=SSE_HEADERS)
        response.timeout = None
        return response

    # ------------------------------------------------------------------ threads

    @app.post("/api/v2/threads")
    async def create_thread() -> Response:
        body = await _body(ThreadCreate, max_body, allow_empty=True)
        thread = await threads.create(body.title, body.settings or {})
        return _model_json(thread, 201)

    @app.get("/api/v2/threads")
    async def list_threads() -> Response:
        try:
            limit = int(request.args.get("limit", "50"))
            offset = int(request.args.get("offset", "0"))
        except ValueError as exc:
            raise ValidationFailed("limit/offset: must be integers",
                                   details={"field": "limit"}) from exc
        listed = await threads.list_threads(limit=limit, offset=offset)
        return _json({"threads": [t.model_dump(mode="json") for t in listed]})

    @app.get("/api/v2/threads/<thread_id>")
    async def get_thread(thread_id: str) -> Response:
        thread, runs = await threads.with_runs(_check_id(thread_id, "thread_id"))
        return _json({"thread": thread.model_dump(mode="json"),
                      "runs": [r.model_dump(mode="json") for r in runs]})

    @app.patch("/api/v2/threads/<thread_id>")
    async def patch_thread(thread_id: str) -> Response:
        thread_id = _check_id(thread_id, "thread_id")
        body = await _body(ThreadPatch, max_body)
        thread = await threads.update(thread_id, title=body.title, settings=body.settings)
        return _model_json(thread)

    @app.delete("/api/v2/threads/<thread_id>")
    async def delete_thread(thread_id: str) -> tuple[str, int]:
        await threads.delete(_check_id(thread_id, "thread_id"))
        return "", 204

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
