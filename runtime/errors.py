"""The one error hierarchy of Cody Core.

Each error carries its API ``code`` and HTTP ``status`` so that ``api/`` maps errors to
responses in one place. Foreign errors (coredis, httpx, sqlite3) are translated at the
boundary where they occur, so the rest of the code sees only these::

    CodyError                         500 INTERNAL_ERROR
    ├── ValidationFailed              400 VALIDATION_ERROR   (names the field)
    ├── UnknownProvider               400 UNKNOWN_PROVIDER
    ├── InvalidModel                  400 INVALID_MODEL
    ├── ProviderNotConfigured         400 PROVIDER_NOT_CONFIGURED
    ├── NotFound                      404 NOT_FOUND
    ├── Conflict                      409 CONFLICT
    ├── StreamExpired                 410 STREAM_EXPIRED
    ├── PayloadTooLarge               413 PAYLOAD_TOO_LARGE
    ├── RedisUnavailable              503 REDIS_UNAVAILABLE  (infrastructure)
    ├── StoreUnavailable              503 STORE_UNAVAILABLE  (infrastructure)
    ├── ShuttingDown                  503 SHUTTING_DOWN
    ├── SupervisorGaveUp              500 SUPERVISOR_GAVE_UP (takes the process down)
    ├── EventOrderError               500 EVENT_ORDER_ERROR  (event before response_start)
    ├── ProviderError                 502 PROVIDER_ERROR     (code: the provider's own)
    └── ToolError                     500 TOOL_ERROR         (becomes success=false output)
"""

from __future__ import annotations

from typing import Any


class CodyError(Exception):
    code: str = "INTERNAL_ERROR"
    status: int = 500
    infrastructure: bool = False
    """A dependency (Redis, the store) is down: retry later; never counted as a crash."""
    retry_after_s: int | None = None
    """For a 503: the ``Retry-After`` the API sends."""

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ValidationFailed(CodyError):
    code = "VALIDATION_ERROR"
    status = 400


class UnknownProvider(CodyError):
    code = "UNKNOWN_PROVIDER"
    status = 400


class InvalidModel(CodyError):
    code = "INVALID_MODEL"
    status = 400


class ProviderNotConfigured(CodyError):
    code = "PROVIDER_NOT_CONFIGURED"
    status = 400


class NotFound(CodyError):
    code = "NOT_FOUND"
    status = 404


class Conflict(CodyError):
    code = "CONFLICT"
    status = 409


class StreamExpired(CodyError):
    code = "STREAM_EXPIRED"
    status = 410


class PayloadTooLarge(CodyError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class RedisUnavailable(CodyError):
    code = "REDIS_UNAVAILABLE"
    status = 503
    infrastructure = True
    retry_after_s = 2


class StoreUnavailable(CodyError):
    code = "STORE_UNAVAILABLE"
    status = 503
    infrastructure = True
    retry_after_s = 2


class ShuttingDown(CodyError):
    """The server is draining: a new run would be aborted at once, so none is accepted."""

    code = "SHUTTING_DOWN"
    status = 503
    retry_after_s = 5


class SupervisorGaveUp(CodyError):
    """A worker crashed more than ``max_restarts`` times within ``period_s``."""

    code = "SUPERVISOR_GAVE_UP"
    status = 500


class EventOrderError(CodyError):
    code = "EVENT_ORDER_ERROR"
    status = 500


class ProviderError(CodyError):
    """A provider failed; ``code`` is the provider's own code when it gave one."""

    code = "PROVIDER_ERROR"
    status = 502

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code, details=details)
        self.retryable = retryable
        self.retry_after = retry_after


class ToolError(CodyError):
    code = "TOOL_ERROR"
    status = 500


#: Canonical error codes that the runtime itself puts into events.
STREAM_SEQUENCE_ERROR = "STREAM_SEQUENCE_ERROR"
RUN_FAILED = "RUN_FAILED"
MALFORMED_CHUNK = "MALFORMED_CHUNK"
SCHEMA_VIOLATION = "SCHEMA_VIOLATION"
STREAM_TRUNCATED = "STREAM_TRUNCATED"
RUN_ORPHANED = "RUN_ORPHANED"
"""A run whose actor is gone (its node died, or it gave up on a Redis outage)."""
REDIS_ERROR = "REDIS_ERROR"
"""A Redis error that is a bug (wrong type, syntax), not an outage: never retried."""


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` means "a dependency is down" (retry later) rather than a bug."""
    return isinstance(exc, CodyError) and exc.infrastructure

#: Provider failures a user can act on (actors/providers/provider_errors.py classifies them).
PROVIDER_AUTH = "PROVIDER_AUTH"
"""The provider refused the key (HTTP 401/403); the message names the key's variable."""
MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
"""The provider does not serve the model named on the wire."""
CONTEXT_TOO_LONG = "CONTEXT_TOO_LONG"
"""The conversation does not fit the model's context window."""
