"""Tenants, bearer tokens and signed event-stream tokens (README, Security). Pure: no I/O.

Bearer tokens. ``CODY_API_KEYS`` maps each token to a tenant. A presented token is compared
with every configured one by ``hmac.compare_digest`` and the loop never exits early, so the
time taken says nothing about which token (or how much of one) matched.

Events tokens. Browsers' ``EventSource`` cannot send headers, so the submit response's
``events_url`` carries ``?token=``: ``base64url(expiry || tenant) "." base64url(HMAC-SHA256(
secret, "events\\0" run_id "\\0" expiry || tenant))``. It names one run and one tenant and
expires after ``CODY_EVENTS_TOKEN_TTL_S``; it is accepted on that run's events route only and
never is the API key. Any node with the same secret accepts it.

The bind rule. Without keys anyone who can reach the port can read every run and start runs
on the operator's provider keys, so the server binds to loopback only unless ``--insecure``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import struct
from dataclasses import dataclass, field

from runtime.errors import ValidationFailed

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Security:
    """What the API needs to authenticate a request: the token table and the events signer."""

    keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """``(tenant, token)`` pairs; empty: auth is off."""
    events_secret: bytes = field(default=b"", repr=False)
    events_ttl_s: int = 900

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def tenant_for(self, token: str) -> str | None:
        """The tenant of a bearer token, or ``None``; constant time over all tokens."""
        presented = token.encode("utf-8", "surrogatepass")
        found: str | None = None
        for tenant, known in self.keys:
            if hmac.compare_digest(presented, known.encode("utf-8", "surrogatepass")):
                found = tenant
        return found

    def _mac(self, run_id: str, payload: bytes) -> bytes:
        msg = b"events\0" + run_id.encode() + b"\0" + payload
        return hmac.new(self.events_secret, msg, hashlib.sha256).digest()

    def sign_events(self, run_id: str, tenant: str, now_s: int) -> str:
        """A token for ``run_id``'s events, valid until ``now_s + events_ttl_s``."""
        payload = struct.pack(">Q", now_s + self.events_ttl_s) + tenant.encode()
        return f"{_b64(payload)}.{_b64(self._mac(run_id, payload))}"

    def verify_events(self, token: str, run_id: str, now_s: int) -> str | None:
        """The tenant an events token was signed for, if it is this run's and not expired."""
        if not self.events_secret or len(token) > 512:
            return None
        head, sep, tail = token.partition(".")
        if not sep:
            return None
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except (binascii.Error, ValueError):
            return None
        if len(payload) < 8 or not hmac.compare_digest(mac, self._mac(run_id, payload)):
            return None
        (expires,) = struct.unpack(">Q", payload[:8])
        if expires < now_s:
            return None
        try:
            return payload[8:].decode()
        except UnicodeDecodeError:
            return None


def is_loopback(host: str) -> bool:
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, *, has_keys: bool, insecure: bool) -> None:
    """Raises:
        ValidationFailed: a non-loopback bind without API keys and without ``--insecure``.
    """
    if has_keys or insecure or is_loopback(host):
        return
    raise ValidationFailed(
        f"refusing to serve on {host} without API keys: anyone who can reach the port could "
        "read every run and start runs on your provider keys. Set CODY_API_KEYS (tenant:token,"
        "...) or CODY_API_KEYS_FILE, bind to 127.0.0.1, or pass --insecure (CODY_INSECURE=1) "
        "if something in front of the server authenticates", details={"field": "host"})
