"""The one error hierarchy of Cody Core, and every error code it uses.

Each error carries its API ``code``, its HTTP ``status`` and its ``kind``, so that ``api/`` maps
errors to responses in one place and a caller knows what to do with one without knowing the
class. Foreign errors (coredis, httpx, sqlite3) are translated at the boundary where they occur,
so the rest of the code sees only these::

    CodyError                     500 INTERNAL_ERROR          internal
    ├── ValidationFailed          400 VALIDATION_ERROR        client (names the field)
    ├── UnknownProvider           400 UNKNOWN_PROVIDER        client
    ├── InvalidModel              400 INVALID_MODEL           client
    ├── ProviderNotConfigured     400 PROVIDER_NOT_CONFIGURED client
    ├── NotFound                  404 NOT_FOUND               client
    ├── MethodNotAllowed          405 METHOD_NOT_ALLOWED      client
    ├── RequestTimeout            408 REQUEST_TIMEOUT         client (the body came too slowly)
    ├── Conflict                  409 CONFLICT                client
    ├── RunFenced                 409 RUN_FENCED              client (another node ended the run)
    ├── StreamExpired             410 STREAM_EXPIRED          client
    ├── PayloadTooLarge           413 PAYLOAD_TOO_LARGE       client
    ├── IdempotencyMismatch       422 IDEMPOTENCY_MISMATCH    client (key reused, other body)
    ├── IdempotencyInProgress     409 IDEMPOTENCY_IN_PROGRESS client (its first submit runs)
    ├── ThreadBusy                409 THREAD_BUSY             client (multitask_strategy reject)
    ├── UnsupportedMediaType      415 UNSUPPORTED_MEDIA_TYPE  client
    ├── HttpError                 4xx HTTP_ERROR              client (other HTTP refusals)
    ├── Unauthorized              401 UNAUTHORIZED            client (no or a wrong token)
    ├── OriginNotAllowed          403 ORIGIN_NOT_ALLOWED      client (a cross-site write)
    ├── Overloaded                429 OVERLOADED              client (back off: Retry-After)
    ├── RedisUnavailable          503 REDIS_UNAVAILABLE       infrastructure
    ├── StoreUnavailable          503 STORE_UNAVAILABLE       infrastructure
    ├── ShuttingDown              503 SHUTTING_DOWN           infrastructure (draining)
    ├── SupervisorGaveUp          500 SUPERVISOR_GAVE_UP      internal (ends the process)
    ├── EventOrderError           500 EVENT_ORDER_ERROR       internal (before response_start)
    ├── CorruptStream             500 CORRUPT_STREAM          internal (a poison run)
    ├── TurnProtocolError         500 TURN_PROTOCOL_ERROR     internal (a turn machine misused)
    ├── ProviderError             502 PROVIDER_ERROR          provider (or the provider's code)
    └── ToolError                 500 TOOL_ERROR              internal (a success=false output)

The codes that the runtime writes into events (``response_error`` / ``item_error``) without
raising are the constants at the end of this module. :data:`CODES` holds every code and its kind;
``tests/unit/test_errors.py`` checks that no other module spells a code of its own.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


class ErrorKind(enum.Enum):
    """What an error means for whoever meets it."""

    CLIENT = "client"
    """The request is wrong (4xx): the caller must change it; retrying it as is never helps."""
    INFRASTRUCTURE = "infrastructure"
    """This server cannot serve now (Redis or the store is down, or it is draining): 503 with
    ``Retry-After``; workers wait it out, and it never counts as a crash."""
    PROVIDER = "provider"
    """The model provider refused, broke or never delivered the turn: the run ends with the
    code (the provider's own when it gave one)."""
    INTERNAL = "internal"
    """A bug or corrupt data: 500, logged with its traceback."""


CODES: dict[str, ErrorKind] = {}
"""Every error code Cody Core itself uses, and its kind (providers' own codes are not ours)."""


def _code(code: str, kind: ErrorKind) -> str:
    if CODES.setdefault(code, kind) is not kind:
        raise ValueError(f"error code {code} registered twice with different kinds")
    return code


class CodyError(Exception):
    code: str = "INTERNAL_ERROR"
    status: int = 500
    kind: ClassVar[ErrorKind] = ErrorKind.INTERNAL
    retry_after_s: int | None = None
    """For a 503: the ``Retry-After`` the API sends."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:  # a class that names its own code registers it
            _code(cls.code, cls.kind)

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details

    @property
    def infrastructure(self) -> bool:
        """A dependency is down (or the server is draining): retry later; never a crash."""
        return self.kind is ErrorKind.INFRASTRUCTURE

    @property
    def client(self) -> bool:
        """The request itself is wrong: a 4xx that names what to change."""
        return self.kind is ErrorKind.CLIENT

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


_code(CodyError.code, CodyError.kind)


# ---------------------------------------------------------------------- client errors (4xx)


class ValidationFailed(CodyError):
    code = "VALIDATION_ERROR"
    status = 400
    kind = ErrorKind.CLIENT


class UnknownProvider(CodyError):
    code = "UNKNOWN_PROVIDER"
    status = 400
    kind = ErrorKind.CLIENT


class InvalidModel(CodyError):
    code = "INVALID_MODEL"
    status = 400
    kind = ErrorKind.CLIENT


class ProviderNotConfigured(CodyError):
    code = "PROVIDER_NOT_CONFIGURED"
    status = 400
    kind = ErrorKind.CLIENT


class NotFound(CodyError):
    code = "NOT_FOUND"
    status = 404
    kind = ErrorKind.CLIENT


class MethodNotAllowed(CodyError):
    code = "METHOD_NOT_ALLOWED"
    status = 405
    kind = ErrorKind.CLIENT


class RequestTimeout(CodyError):
    code = "REQUEST_TIMEOUT"
    status = 408
    kind = ErrorKind.CLIENT


class Conflict(CodyError):
    code = "CONFLICT"
    status = 409
    kind = ErrorKind.CLIENT


class RunFenced(CodyError):
    """An append (or a status) refused by Redis because the run was ended by someone else: a
    janitor wrote its ``RUN_ORPHANED`` ending while this node was stalled past its lease
    (``ended_by`` in the run's metadata names that janitor's node). Retrying never helps: the
    run's stream already has its terminal event, so its actor stops and writes nothing more
    (issue 12, node loss). Never sent to an HTTP client; a 409 like ``Conflict`` if it were."""

    code = "RUN_FENCED"
    status = 409
    kind = ErrorKind.CLIENT

    def __init__(self, run_id: str, ended_by: str = "") -> None:
        super().__init__(f"run {run_id} was ended by node {ended_by or '(unknown)'}: its "
                         f"appends are refused",
                         details={"run_id": run_id, "ended_by": ended_by})
        self.run_id = run_id
        self.ended_by = ended_by


class StreamExpired(CodyError):
    code = "STREAM_EXPIRED"
    status = 410
    kind = ErrorKind.CLIENT


class PayloadTooLarge(CodyError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413
    kind = ErrorKind.CLIENT


class UnsupportedMediaType(CodyError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415
    kind = ErrorKind.CLIENT


class HttpError(CodyError):
    """Any other status the HTTP layer answers with by itself (a 4xx in practice);
    ``status`` is the one it gave."""

    code = "HTTP_ERROR"
    status = 400
    kind = ErrorKind.CLIENT

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- policies


class IdempotencyMismatch(CodyError):
    """An ``Idempotency-Key`` already names a submit of another body."""

    code = "IDEMPOTENCY_MISMATCH"
    status = 422
    kind = ErrorKind.CLIENT


class IdempotencyInProgress(CodyError):
    """The first submit with this key and body is still under way: retry in a moment."""

    code = "IDEMPOTENCY_IN_PROGRESS"
    status = 409
    kind = ErrorKind.CLIENT
    retry_after_s = 1


class ThreadBusy(CodyError):
    """``multitask_strategy`` ``reject``: the thread has a turn running (or queued)."""

    code = "THREAD_BUSY"
    status = 409
    kind = ErrorKind.CLIENT


# -- security


class Unauthorized(CodyError):
    """No bearer token, or one that is not configured (or an events token that is expired,
    forged, or for another run). The API adds ``WWW-Authenticate: Bearer realm="cody"``."""

    code = "UNAUTHORIZED"
    status = 401
    kind = ErrorKind.CLIENT


class OriginNotAllowed(CodyError):
    """A state-changing request from a browser page of another origin that CODY_CORS_ORIGINS
    does not list: refused before anything runs, so no cross-site form can start or cancel a
    run (README, Security)."""

    code = "ORIGIN_NOT_ALLOWED"
    status = 403
    kind = ErrorKind.CLIENT


class Overloaded(CodyError):
    """An admission limit is reached (live runs on this node, SSE clients, a tenant's
    concurrent runs): 429 with ``Retry-After``; the same request succeeds once load drops."""

    code = "OVERLOADED"
    status = 429
    kind = ErrorKind.CLIENT  # INFRASTRUCTURE means 503; this one is the caller's to back off
    retry_after_s = 1


# ---------------------------------------------------------------------- infrastructure (503)


class RedisUnavailable(CodyError):
    code = "REDIS_UNAVAILABLE"
    status = 503
    kind = ErrorKind.INFRASTRUCTURE
    retry_after_s = 2


class StoreUnavailable(CodyError):
    code = "STORE_UNAVAILABLE"
    status = 503
    kind = ErrorKind.INFRASTRUCTURE
    retry_after_s = 2


class ShuttingDown(CodyError):
    """The server is draining: a new run would be aborted at once, so none is accepted."""

    code = "SHUTTING_DOWN"
    status = 503
    kind = ErrorKind.INFRASTRUCTURE
    retry_after_s = 5


# ---------------------------------------------------------------------- internal and provider


class SupervisorGaveUp(CodyError):
    """A worker crashed more than ``max_restarts`` times within ``period_s``."""

    code = "SUPERVISOR_GAVE_UP"
    status = 500


class EventOrderError(CodyError):
    code = "EVENT_ORDER_ERROR"
    status = 500


class CorruptStream(CodyError):
    """A run's stream holds an event that cannot be folded (undecodable, or before
    ``response_start``): the run is poison. The projector skips it; nothing else stops."""

    code = "CORRUPT_STREAM"
    status = 500


class TurnProtocolError(CodyError):
    """The turn machine (runtime/turn_machine.py) was told something its state does not allow,
    e.g. tool results while no tools run: a bug in its driver, like h11's LocalProtocolError."""

    code = "TURN_PROTOCOL_ERROR"
    status = 500


class ProviderError(CodyError):
    """A provider failed; ``code`` is the provider's own code when it gave one."""

    code = "PROVIDER_ERROR"
    status = 502
    kind = ErrorKind.PROVIDER

    def __init__(self, message: str, *, code: str | None = None,
                 details: dict[str, Any] | None = None, retryable: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, code=code, details=details)
        self.retryable = retryable
        self.retry_after = retry_after


class ToolError(CodyError):
    code = "TOOL_ERROR"
    status = 500


# ---------------------------------------------------------------------- codes in events

STREAM_SEQUENCE_ERROR = _code("STREAM_SEQUENCE_ERROR", ErrorKind.INTERNAL)
"""The reducer met an event that breaks the stream's rules (a second start, a delta for an
item that is not open): the Response ends ``error``."""
RUN_FAILED = _code("RUN_FAILED", ErrorKind.INTERNAL)
"""A run actor failed with an unexpected exception (its class is in the details)."""
RUN_ORPHANED = _code("RUN_ORPHANED", ErrorKind.INFRASTRUCTURE)
"""A run whose actor is gone (its node died, or it gave up on a Redis outage)."""
REDIS_ERROR = _code("REDIS_ERROR", ErrorKind.INTERNAL)
"""A Redis error that is a bug (wrong type, syntax), not an outage: never retried."""
MALFORMED_CHUNK = _code("MALFORMED_CHUNK", ErrorKind.PROVIDER)
"""A provider's SSE data is not JSON."""
SCHEMA_VIOLATION = _code("SCHEMA_VIOLATION", ErrorKind.PROVIDER)
"""A provider's event is JSON but not the shape its API documents."""
STREAM_TRUNCATED = _code("STREAM_TRUNCATED", ErrorKind.PROVIDER)
"""A provider's body ended before its final event."""
PROVIDER_UNREACHABLE = _code("PROVIDER_UNREACHABLE", ErrorKind.PROVIDER)
"""The provider could not be connected to, after the retries."""
PROVIDER_CONNECTION_LOST = _code("PROVIDER_CONNECTION_LOST", ErrorKind.PROVIDER)
"""The provider's connection dropped mid-stream."""
PROVIDER_IDLE_TIMEOUT = _code("PROVIDER_IDLE_TIMEOUT", ErrorKind.PROVIDER)
"""The provider sent nothing for ``provider_idle_timeout_s``."""
REPLAY_NO_FIXTURE = _code("REPLAY_NO_FIXTURE", ErrorKind.PROVIDER)
"""Replay mode has no recording for this provider and model."""
REPLAY_EXHAUSTED = _code("REPLAY_EXHAUSTED", ErrorKind.PROVIDER)
"""The turn made more model requests than its recording holds."""
PROVIDER_AUTH = _code("PROVIDER_AUTH", ErrorKind.PROVIDER)
"""The provider refused the key (HTTP 401/403); the message names the key's variable.
(This and the next two are the provider failures a user can act on;
actors/providers/provider_errors.py classifies them.)"""
MODEL_NOT_FOUND = _code("MODEL_NOT_FOUND", ErrorKind.PROVIDER)
"""The provider does not serve the model named on the wire."""
CONTEXT_TOO_LONG = _code("CONTEXT_TOO_LONG", ErrorKind.PROVIDER)
"""The conversation does not fit the model's context window."""


def is_infrastructure(exc: BaseException) -> bool:
    """Whether ``exc`` means "a dependency is down" (retry later) rather than a bug."""
    return isinstance(exc, CodyError) and exc.infrastructure
