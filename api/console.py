"""The console's routes: the web console's static files at ``/``, the runs listing
``GET /api/v2/runs`` and the Prometheus metrics at ``/metrics``.

The console is plain HTML, JS and CSS in ``api/static`` (package data: a wheel ships it; no
build step). The files are read once when the app is built and served from memory, each with
its content type and ``no-cache`` (a server upgrade must not leave an old console running
against a new API). ``/`` and its files stay open when API keys are on (api/auth.py): the page
asks for a key and sends it itself (``Authorization: Bearer``; never in a URL); the listing and
``/metrics`` need the key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio

from actors import Services
from api.auth import current_tenant
from runtime import NotFound, ValidationFailed, is_uuid

STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def static_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type) of every console file shipped in the package."""
    out: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files("api").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in STATIC_TYPES:
            out[entry.name] = (entry.read_bytes(), STATIC_TYPES[suffix])
    return out


def parse_since(value: str) -> int:
    """``since``: epoch milliseconds, or an ISO 8601 time (with a zone; UTC if none)."""
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValidationFailed("since: epoch milliseconds or an ISO 8601 time",
                               details={"field": "since"}) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def list_query() -> dict[str, Any]:
    """The listing's query string, checked; each bad value names its field."""
    args = request.args
    out: dict[str, Any] = {}
    statuses = [s for v in args.getlist("status") for s in v.split(",") if s]
    if statuses:
        out["status"] = statuses
    thread_id = args.get("thread_id")
    if thread_id:
        if not is_uuid(thread_id):
            raise ValidationFailed("thread_id: must be a uuid", details={"field": "thread_id"})
        out["thread_id"] = thread_id.lower()
    if args.get("model"):
        out["model"] = args["model"]
    if args.get("since"):
        out["since_ms"] = parse_since(args["since"])
    if args.get("limit"):
        try:
            out["limit"] = int(args["limit"])
        except ValueError as exc:
            raise ValidationFailed("limit: must be an integer",
                                   details={"field": "limit"}) from exc
    if args.get("cursor"):
        out["cursor"] = args["cursor"]
    return out


def register_console(app: QuartTrio, services: Services) -> None:
    files = static_files()
    listing, observability = services.listing, services.observability

    def serve(name: str) -> Response:
        found = files.get(name)
        if found is None:
            raise NotFound(f"no console file {name}", details={"path": name})
        body, content_type = found
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-cache"})

    @app.get("/")
    async def console_index() -> Response:
        return serve("index.html")

    @app.get("/console/<name>")
    async def console_file(name: str) -> Response:
        return serve(name)

    @app.get("/api/v2/runs")
    async def list_runs() -> Response:
        page = await listing.list_runs(tenant=current_tenant(), **list_query())
        return Response(page.model_dump_json(), mimetype="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(await observability.render(), content_type=observability.content_type)


def console_paths() -> dict[str, Any]:
    """The OpenAPI paths of these routes (``api/openapi.py`` adds them)."""
    def query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": text}

    error = {"content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/ErrorBody"}}}}
    return {
        "/api/v2/runs": {"get": {
            "summary": "List runs, newest first, live runs included (keyset pagination)",
            "parameters": [
                query("status", {"type": "string"},
                      "queued|in_progress|complete|error|aborted; several comma-separated"),
                query("thread_id", {"type": "string", "format": "uuid"}, "one thread's runs"),
                query("model", {"type": "string"}, "runs of this model id"),
                query("since", {"type": "string"},
                      "created at or after: epoch ms or ISO 8601"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                      "page size (default 50)"),
                query("cursor", {"type": "string"}, "next_cursor of the previous page"),
            ],
            "responses": {
                "200": {"description": "A page of runs", "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/RunPage"}}}},
                "400": {"description": "Validation error (names the field)", **error},
                "503": {"description": "Redis or the store unavailable (Retry-After)",
                        **error}}}},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text format)",
            "responses": {"200": {"description": "metrics", "content": {
                "text/plain": {"schema": {"type": "string"}}}}}}},
        "/": {"get": {"summary": "The web console (HTML)",
                      "responses": {"200": {"description": "the console page"}}}},
    }
