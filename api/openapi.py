"""The OpenAPI 3.1 document, with schemas generated from the pydantic models themselves."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.models import ErrorBody, ThreadCreate, ThreadPatch
from runtime.schema import Response, StreamEvent
from runtime.store import Thread
from runtime.turns import TurnAccepted, TurnRequest


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Validation error (names the field)", 404: "Not found", 410: "Stream expired",
            413: "Payload too large", 409: "Conflict",
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
                                     ThreadCreate, ThreadPatch, ErrorBody]
    _, defs = models_json_schema([(m, "validation") for m in models],
                                 ref_template="#/components/schemas/{model}")
    schemas = defs.get("$defs", {})
    run_id = {"name": "run_id", "in": "path", "required": True,
              "schema": {"type": "string", "format": "uuid"}}
    thread_id = {"name": "thread_id", "in": "path", "required": True,
                 "schema": {"type": "string", "format": "uuid"}}
    submit = {
        "summary": "Submit a turn",
        "requestBody": {"required": True, "content": _json_content(_ref("TurnRequest"))},
        "responses": {"202": {"description": "Accepted",
                              "content": _json_content(_ref("TurnAccepted"))},
                      **_errors(400, 409, 413, 503)},
    }
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
                                               "maximum": 2**63 - 1}}],
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
        "/api/v2/health": {"get": {"summary": "Liveness",
                                   "responses": {"200": {"description": "alive"}}}},
        "/api/v2/ready": {"get": {"summary": "Readiness (Redis and store reachable)",
                                  "responses": {"200": {"description": "ready"},
                                                **_errors(503)}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "Cody Core", "version": "0.1.0"},
            "paths": paths,
            "components": {"schemas": schemas}}
