"""Bearer authentication and tenants on the API side (README, Security; runtime/auth.py).

With ``CODY_API_KEYS`` set, every ``/api/`` route except the health and readiness probes,
and ``/metrics``, needs ``Authorization: Bearer <token>``; the token's tenant is the request's
(``g.tenant``), and the routes pass it to the services, so another tenant's run or thread is
``404``. ``GET /api/v2/runs/{id}/events`` also takes ``?token=`` (the signed events token of
that run's ``events_url``); no other route does. A missing or wrong token is ``401
UNAUTHORIZED`` with ``WWW-Authenticate: Bearer realm="cody"``. Without keys every request is
tenant ``default``. ``/health``, ``/ready``, ``/openapi.json`` and the console's static files
stay open: they show nothing of any tenant.
"""

from __future__ import annotations

import time

from quart import g, request
from quart_trio import QuartTrio

from runtime import DEFAULT_TENANT, Security, Unauthorized, canonical_uuid

OPEN_PATHS = frozenset({"/api/v2/health", "/api/v2/ready"})
EVENTS_ENDPOINT = "run_events"
WWW_AUTHENTICATE = 'Bearer realm="cody"'


def needs_token(path: str) -> bool:
    return (path.startswith("/api/") and path not in OPEN_PATHS) or path == "/metrics"


def current_tenant() -> str:
    tenant: str = g.get("tenant", DEFAULT_TENANT)
    return tenant


def events_url(security: Security, run_id: str, tenant: str) -> str:
    """The submit response's ``events_url``: signed for this run when keys are on."""
    url = f"/api/v2/runs/{run_id}/events"
    if not security.enabled:
        return url
    return f"{url}?token={security.sign_events(run_id, tenant, int(time.time()))}"


def install_auth(app: QuartTrio, security: Security) -> None:
    @app.before_request
    async def authenticate() -> None:
        g.tenant = DEFAULT_TENANT
        if not security.enabled or request.method == "OPTIONS" or \
                not needs_token(request.path):
            return
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if header:
            tenant = security.tenant_for(token.strip()) if scheme.lower() == "bearer" else None
            if tenant is None:
                raise Unauthorized("Authorization: the bearer token is not valid",
                                   details={"field": "Authorization"})
            g.tenant = tenant
            return
        query_token = request.args.get("token")
        if query_token is not None and request.url_rule is not None and \
                request.url_rule.endpoint == EVENTS_ENDPOINT and request.method == "GET":
            run_id = canonical_uuid((request.view_args or {}).get("run_id"))
            tenant = None if run_id is None else security.verify_events(
                query_token, run_id, int(time.time()))
            if tenant is None:
                raise Unauthorized("token: not a valid events token for this run (it may "
                                   "have expired)", details={"field": "token"})
            g.tenant = tenant
            return
        raise Unauthorized("Authorization: a bearer token is required",
                           details={"field": "Authorization"})
