"""Cross-origin requests (README, Security): closed unless ``CODY_CORS_ORIGINS`` lists them.

A browser page of another origin can still *send* a simple request (a form ``POST``, or a
``fetch`` with ``Content-Type: text/plain``) without asking first; only reading the answer
is blocked. So besides answering CORS properly for the listed origins:

- every JSON body must be ``application/json`` (api/bodies.py, 415 otherwise), which a
  browser never sends cross-site without a preflight, and
- a state-changing request (anything but GET, HEAD, OPTIONS) whose ``Origin`` is neither the
  server's own (same host and port) nor listed is refused ``403 ORIGIN_NOT_ALLOWED`` before
  its route runs: that covers ``POST /runs/{id}/cancel``, which has no body to check.

Requests without ``Origin`` (curl, SDKs, the CLI) are not affected. A preflight from a listed
origin is answered ``204`` with the methods and headers the API uses; one from any other
origin gets no CORS headers, so the browser does not send the request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import Response, request
from quart_trio import QuartTrio

from runtime import OriginNotAllowed

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, Idempotency-Key"
EXPOSE_HEADERS = "Retry-After, WWW-Authenticate"
PREFLIGHT_MAX_AGE_S = 600


def _same_origin(origin: str) -> bool:
    try:
        return urlsplit(origin).netloc.lower() == request.host.lower()
    except ValueError:
        return False


def install_cors(app: QuartTrio, origins: tuple[str, ...]) -> None:
    allowed = frozenset(o.rstrip("/") for o in origins)

    @app.before_request
    async def check_origin() -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if origin in allowed:
            if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
                response = Response("", status=204)
                response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
                return response  # the after_request hook adds the origin headers
            return None
        if request.method in SAFE_METHODS or _same_origin(origin):
            return None
        raise OriginNotAllowed(f"Origin: {origin[:200]} may not change anything here (set "
                               "CODY_CORS_ORIGINS to allow it)", details={"field": "Origin"})

    @app.after_request
    async def cors_headers(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if origin is not None and origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            response.vary.add("Origin")
        return response
