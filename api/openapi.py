"""The OpenAPI 3.1 document, with schemas generated from the pydantic models themselves.

Security (README, Security): every route needs the ``bearer`` scheme when the server has
API keys (``CODY_API_KEYS``), except the health and readiness probes; the events route also
takes the signed ``token`` query parameter of the submit response's ``events_url``. Without
keys the server answers without auth (and binds to loopback only).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.console import console_paths
from api.models import ErrorBody, ThreadCreate, ThreadPatch
from runtime import ModelInfo, Response, RunPage, StreamEvent, Thread, TurnAccepted, TurnRequest


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Validation error (names the field)", 404: "Not found", 410: "Stream expired",
            413: "Payload too large", 409: "Conflict",
            422: "IDEMPOTENCY_MISMATCH: the Idempotency-Key was used for another body",
            401: "Missing or invalid bearer token (WWW-Authenticate: Bearer realm=\"cody\")",
            403: "A state-changing request from an origin not in CODY_CORS_ORIGINS",
            415: "The body is not application/json",
            429: "An admission limit is reached (Retry-After)",
            503: "Redis or the store unavailable, or the server shutting down (Retry-After)"}
    return {str(c): {"description": text[c], "content": _json_content(_ref("ErrorBody"))}
            for c in codes}


_SSE_EVENT: dict[str, Any] = {
    "description": "One SSE event (comments, such as keep-alives, are not events): `id` the "
                   "Redis entry id (resume after it with Last-Event-ID or ?after=), `event` the "
                   "StreamEvent's type, `data` the StreamEvent as JSON",
    "type": "object", "required": ["id", "event", "data"],
    "properties": {"id": {"type": "string", "pattern": "^[0-9]+-[0-9]+$"},
                   "event": {"type": "string"},
                   "data": {"type": "string", "contentMediaType": "application/json",
                            "contentSchema": _ref("StreamEvent")}}}
"""Each event of the stream, as OpenAPI describes ``text/event-stream`` items: the envelope's
fields, with the JSON inside ``data`` (it used to say the whole event was a StreamEvent, which
schemathesis rightly refused)."""


@cache
def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [TurnRequest, TurnAccepted, Response, StreamEvent, Thread,
                                     ThreadCreate, ThreadPatch, ErrorBody, ModelInfo,
                                     RunPage]
    _, defs = models_json_schema([(m, "validation") for m in models],
                                 ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    run_id = {"name": "run_id", "in": "path", "required": True,
              "schema": {"type": "string", "format": "uuid"}}
    thread_id = {"name": "thread_id", "in": "path", "required": True,
                 "schema": {"type": "string", "format": "uuid"}}
    # -- policies: Idempotency-Key, multitask_strategy (in TurnRequest), THREAD_BUSY
    idempotency_key = {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "Makes the submit safe to retry: the same key and body within "
                       "CODY_IDEMPOTENCY_TTL_S (24 h) answer 200 with the original response "
                       "(same run_id); another body answers 422 IDEMPOTENCY_MISMATCH. Per "
                       "tenant. 1-255 printable ASCII characters, no spaces.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                   "pattern": "^[\\x21-\\x7e]+$"}}
    submit: dict[str, Any] = {
        "summary": "Submit a turn",
        "description": "multitask_strategy says what a turn sent to a busy thread does: "
                       "parallel (start now), reject (409 THREAD_BUSY), enqueue (202, status "
                       "queued: starts when the running turn ends), interrupt (the running "
                       "turn ends aborted, then this one starts); default "
                       "CODY_MULTITASK_STRATEGY (parallel).",
        "parameters": [idempotency_key],
        "requestBody": {"required": True, "content": _json_content(_ref("TurnRequest"))},
        "responses": {"202": {"description": "Accepted (status in_progress, or queued)",
                              "content": _json_content(_ref("TurnAccepted"))},
                      "200": {"description": "A replay: this Idempotency-Key and body were "
                                             "accepted before; the original response",
                              "content": _json_content(_ref("TurnAccepted"))},
                      **_errors(400, 404, 409, 413, 422, 503)},
    }
    submit["responses"]["409"] = {
        "description": "CONFLICT (run_id exists), THREAD_BUSY (multitask_strategy reject, the "
                       "thread has a turn running), or IDEMPOTENCY_IN_PROGRESS (the key's "
                       "first submit is still running; Retry-After)",
        "content": _json_content(_ref("ErrorBody"))}
    # -- security: who may call what (the descriptions above; README, Security)
    open_routes = {"/api/v2/health", "/api/v2/ready"}
    paths: dict[str, Any] = {
        "/api/v2/runs": {"post": submit},
        "/api/v2/submit": {"post": {**submit, "summary": "Submit a turn (alias)"}},
        "/api/v2/runs/{run_id}": {"get": {
            "summary": "The Response (live while running, from the store after)",
            "parameters": [run_id],
            "responses": {"200": {"description": "OK", "content": _json_content(_ref("Response"))},
                          **_errors(400, 404, 503)}}},
        "/api/v2/runs/{run_id}/events": {"get": {
            "summary": "Server-Sent Events: id = Redis entry id, event = type, "
                       "data = StreamEvent JSON",
            "parameters": [run_id,
                           {"name": "Last-Event-ID", "in": "header", "required": False,
                            "schema": {"type": "string"}},
                           {"name": "after", "in": "query", "required": False,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The event stream",
                                  "content": {"text/event-stream": {
                                      "schema": _SSE_EVENT}}},
                          "204": {"description": "The cursor is past the terminal event"},
                          **_errors(400, 404, 410, 503)}}},
        "/api/v2/runs/{run_id}/cancel": {"post": {
            "summary": "Cancel a run (idempotent)", "parameters": [run_id],
            "responses": {"200": {"description": "The Response after cancellation",
                                  "content": _json_content(_ref("Response"))},
                          **_errors(400, 404, 503)}}},
        "/api/v2/threads": {
            "post": {"summary": "Create a thread",
                     "requestBody": {"required": False,
                                     "content": _json_content(_ref("ThreadCreate"))},
                     "responses": {"201": {"description": "Created",
                                           "content": _json_content(_ref("Thread"))},
                                   **_errors(400, 413)}},
            "get": {"summary": "List threads",
                    "parameters": [{"name": "limit", "in": "query",
                                    "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                                   {"name": "offset", "in": "query",
                                    "schema": {"type": "integer", "minimum": 0,
                                               "maximum": 1_000_000_000}}],  # MAX_OFFSET
                    "responses": {"200": {"description": "Threads", "content": _json_content(
                        {"type": "object", "properties": {
                            "threads": {"type": "array", "items": _ref("Thread")}}})},
                        **_errors(400)}}},
        "/api/v2/threads/{thread_id}": {
            "get": {"summary": "A thread and its runs in order", "parameters": [thread_id],
                    "responses": {"200": {"description": "OK", "content": _json_content(
                        {"type": "object", "properties": {
                            "thread": _ref("Thread"),
                            "runs": {"type": "array", "items": _ref("Response")}}})},
                        **_errors(400, 404)}},
            "patch": {"summary": "Update a thread", "parameters": [thread_id],
                      "requestBody": {"required": True,
                                      "content": _json_content(_ref("ThreadPatch"))},
                      "responses": {"200": {"description": "OK",
                                            "content": _json_content(_ref("Thread"))},
                                    **_errors(400, 404, 413)}},
            "delete": {"summary": "Delete a thread and its runs", "parameters": [thread_id],
                       "responses": {"204": {"description": "Deleted"}, **_errors(400, 404)}}},
        "/api/v2/models": {"get": {
            "summary": "The models this server serves (the catalogue: built-ins and "
                       "CODY_CONFIG), each with its provider's protocol and whether the "
                       "server has the provider's key",
            "responses": {"200": {"description": "Models", "content": _json_content(
                {"type": "object", "required": ["data"], "properties": {
                    "data": {"type": "array", "items": _ref("ModelInfo")}}})}}}},
        "/api/v2/health": {"get": {"summary": "Liveness",
                                   "responses": {"200": {"description": "alive"}}}},
        "/api/v2/ready": {"get": {"summary": "Readiness (Redis and store reachable)",
                                  "responses": {"200": {"description": "ready"},
                                                **_errors(503)}}},
    }
    for path, ops in console_paths().items():  # -- console
        paths.setdefault(path, {}).update(ops)
    open_routes.add("/")  # the console's page: it asks for a key itself
    _secure(paths, open_routes)
    paths["/api/v2/runs/{run_id}/events"]["get"]["parameters"].append(
        {"name": "token", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "The signed, short-lived token of the submit response's events_url "
                        "(for EventSource, which cannot send headers); this run only"})
    paths["/api/v2/runs/{run_id}/events"]["get"]["security"] = [{"bearer": []},
                                                                 {"eventsToken": []}]
    return {"openapi": "3.1.0",
            "info": {"title": "Cody Core", "version": "0.1.0"},
            "paths": paths,
            "security": [{"bearer": []}],
            "components": {"schemas": schemas, "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A token of CODY_API_KEYS (tenant:token); needed "
                                          "when the server has keys"},
                "eventsToken": {"type": "apiKey", "in": "query", "name": "token",
                                "description": "The signed token in events_url"}}}}


def _secure(paths: dict[str, Any], open_routes: set[str]) -> None:
    """401 on every route that needs a token, the open ones marked open; 403 and 415 on
    those taking a body or changing state; 429 where admission limits apply."""
    for path, methods in paths.items():
        for method, op in methods.items():
            responses = op["responses"]
            if path in open_routes:
                op["security"] = []
                continue
            responses.update(_errors(401))
            if method in ("post", "patch", "delete"):
                responses.update(_errors(403))
            if "requestBody" in op:
                responses.update(_errors(415))
            if path in ("/api/v2/runs", "/api/v2/submit") or path.endswith("/events"):
                responses.update(_errors(429))
