"""The one place where errors become HTTP responses (SPEC §7 error model).

Every error is a :class:`~runtime.errors.CodyError` by the time it gets here, or is made one:
the HTTP layer's own refusals (werkzeug's 404, 405, 413, ...) map to ours by status, and
anything else is a bug, logged and answered ``500 INTERNAL_ERROR`` with nothing of its text.
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from quart import Response
from werkzeug.exceptions import HTTPException

from runtime import (
    CodyError,
    HttpError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)

log = logging.getLogger(__name__)

_BY_STATUS: dict[int, type[CodyError]] = {
    400: ValidationFailed, 401: Unauthorized, 404: NotFound, 405: MethodNotAllowed,
    408: RequestTimeout, 413: PayloadTooLarge, 415: UnsupportedMediaType}


def error_response(exc: CodyError) -> Response:
    response = Response(json.dumps(exc.to_json()), status=exc.status,
                        mimetype="application/json")
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def from_cody(exc: CodyError) -> Response:
    response = error_response(exc)
    if isinstance(exc, PayloadTooLarge):
        # the body was not read: close the connection rather than leave the client blocked
        # writing it (httpx then reads this response after its write fails)
        response.headers["Connection"] = "close"
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="cody"'
    return response


def from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 413:
        return from_cody(PayloadTooLarge("request body is too large"))
    message = exc.description or exc.name
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return from_cody(cls(message))
    return from_cody(HttpError(message, status=status))


def from_unexpected(exc: BaseException) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(CodyError("internal error"))


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
