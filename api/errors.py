"""The one place where errors become HTTP responses (SPEC §7 error model)."""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from quart import Response
from werkzeug.exceptions import HTTPException

from runtime.errors import CodyError, PayloadTooLarge, ValidationFailed

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
               400: "VALIDATION_ERROR", 415: "UNSUPPORTED_MEDIA_TYPE", 408: "REQUEST_TIMEOUT"}


def error_response(status: int, code: str, message: str,
                   details: dict[str, Any] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return Response(json.dumps({"error": body}), status=status, mimetype="application/json")


def from_cody(exc: CodyError) -> Response:
    response = error_response(exc.status, exc.code, exc.message, exc.details)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, PayloadTooLarge):
        # the body was not read: close the connection rather than leave the client blocked
        # writing it (httpx then reads this response after its write fails)
        response.headers["Connection"] = "close"
    return response


def from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        return from_cody(PayloadTooLarge("request body is too large"))
    return error_response(status, _HTTP_CODES.get(status, "HTTP_ERROR"),
                          exc.description or exc.name)


def from_unexpected(exc: BaseException) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error")


def validation_failed(exc: ValidationError, *, prefix: str = "") -> ValidationFailed:
    """A pydantic error as our 400, naming the first offending field."""
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": "invalid"}
    field = ".".join(str(p) for p in first["loc"]) or prefix.rstrip(".") or "body"
    if first.get("type") == "extra_forbidden":
        message = f"{field}: unknown field"
    else:
        message = f"{field}: {first['msg']}"
    return ValidationFailed(message, details={
        "field": field,
        "errors": [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                   for e in errors],
    })
