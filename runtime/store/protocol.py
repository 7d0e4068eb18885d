"""The store contract (SPEC §10, §13, §15, §16): what every engine does, and the values it deals in.

Everything above the store (the projector, the runtime, the API) sees only :class:`Store`;
:mod:`runtime.store.sqlite` and :mod:`runtime.store.postgres` implement it, and one suite of
contract tests runs on both.

Tenants. Every thread and every Response belongs to one tenant (``DEFAULT_TENANT`` until API
keys map tokens to tenants). Ids are global, not per tenant: a thread or run id names one row,
owned by one tenant, and to any other tenant that row does not exist (reads give ``None`` or
``[]``, changes raise :class:`~runtime.errors.NotFound`; only ``create_thread`` on a taken id
says :class:`~runtime.errors.Conflict`, as it would for the owner). A Response belongs to the
tenant of its thread, which submit creates (``ensure_thread``) before the run starts, so the
projector writes Responses knowing nothing of tenants; a Response whose thread row is missing
belongs to ``DEFAULT_TENANT``. An upsert never touches a row of another tenant.

Listing (``GET /api/v2/runs``): newest first by ``(created_at, run_id)``, paged by keyset, so
every row that exists while a client pages is seen exactly once, however many are inserted
meanwhile (a row's ``created_at`` never changes once stored). The cursor is opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import ValidationFailed
from runtime.schema import Response, ResponseStatus

DEFAULT_TENANT = "default"
MAX_LIST_LIMIT = 1000
"""The most rows one page of ``list_runs`` returns."""

_STATUSES: frozenset[str] = frozenset(get_args(ResponseStatus))
_CURSOR_PREFIX = "r1."


class Thread(BaseModel):
    """A conversation: its turns are the Responses that name it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    title: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    """Model settings for the thread (free-form: model, provider_id, reasoning_effort, ...)."""
    created_at: int
    updated_at: int
    """Last change of the thread itself or, later, of any of its persisted Responses."""


class Store(Protocol):
    """What the runtime needs from durable storage. Every method may raise
    :class:`~runtime.errors.StoreUnavailable` (503, infrastructure: retry later)."""

    async def ping(self) -> None:
        """Cheap round trip: ``/ready``."""

    # responses
    async def upsert_response(self, response: Response, seq: int) -> bool:
        """Store ``response`` as folded up to ``seq`` unless the stored one is at ``seq`` or
        later, its thread was deleted, or the run id is another tenant's. Whether it wrote."""

    async def upsert_responses(self, items: Sequence[tuple[Response, int]]) -> list[bool]:
        """Many upserts (each as :meth:`upsert_response`) in one transaction."""

    async def get_response(self, run_id: str, *, tenant: str = DEFAULT_TENANT
                           ) -> Response | None: ...

    async def get_response_seq(self, run_id: str, *, tenant: str = DEFAULT_TENANT
                               ) -> int | None:
        """The seq the stored Response was folded up to."""

    async def response_tenant(self, run_id: str) -> str | None:
        """The tenant owning a run id, whoever asks: for submit's duplicate-id check (an id
        another tenant used must not start a second run on the same Redis keys). Never for
        showing anything."""

    async def list_thread_responses(self, thread_id: str, *, tenant: str = DEFAULT_TENANT
                                    ) -> list[Response]:
        """The thread's Responses in turn order (created_at, then insertion)."""

    async def list_runs(self, tenant: str = DEFAULT_TENANT, *,
                        status: str | Collection[str] | None = None,
                        thread_id: str | None = None, model: str | None = None,
                        since_ms: int | None = None, limit: int = 50,
                        cursor: str | None = None) -> tuple[list[Response], str | None]:
        """A page of the tenant's Responses, newest first, and the cursor of the next page
        (``None``: this was the last). ``status`` is one status or several; ``since_ms`` keeps
        those created at or after it. Bad arguments raise ValidationFailed naming the field."""

    # threads
    async def create_thread(self, thread_id: str, title: str | None = None,
                            settings: dict[str, Any] | None = None, *,
                            tenant: str = DEFAULT_TENANT) -> Thread:
        """Raises Conflict if a thread with this id exists."""

    async def ensure_thread(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> Thread:
        """The thread, created (untitled) if it does not exist: what submit uses. Raises
        NotFound if the id is another tenant's."""

    async def get_thread(self, thread_id: str, *, tenant: str = DEFAULT_TENANT
                         ) -> Thread | None: ...

    async def list_threads(self, limit: int = 50, offset: int = 0, *,
                           tenant: str = DEFAULT_TENANT) -> list[Thread]:
        """Most recently updated first."""

    async def update_thread(self, thread_id: str, *, title: str | None = None,
                            settings: dict[str, Any] | None = None,
                            tenant: str = DEFAULT_TENANT) -> Thread:
        """Change what is given (``None``: unchanged). Raises NotFound."""

    async def delete_thread(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> None:
        """Delete the thread and its Responses (a tombstone stays). Raises NotFound."""


# ---------------------------------------------------------------------- listing (pure)


@dataclass(frozen=True, slots=True)
class RunQuery:
    """The arguments of ``list_runs``, checked: what the SQL of both engines is built from."""

    tenant: str
    statuses: tuple[str, ...] | None
    thread_id: str | None
    model: str | None
    since_ms: int | None
    limit: int
    after: tuple[int, str] | None
    """The last ``(created_at, run_id)`` of the previous page."""

    @classmethod
    def build(cls, tenant: str, *, status: str | Collection[str] | None,
              thread_id: str | None, model: str | None, since_ms: int | None, limit: int,
              cursor: str | None) -> RunQuery:
        statuses: tuple[str, ...] | None = None
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            unknown = sorted(set(statuses) - _STATUSES)
            if unknown or not statuses:
                raise ValidationFailed(
                    f"status: unknown {', '.join(map(repr, unknown)) or 'empty'}; one of "
                    f"{', '.join(sorted(_STATUSES))}", details={"field": "status"})
        if isinstance(limit, bool) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValidationFailed(f"limit: must be between 1 and {MAX_LIST_LIMIT}",
                                   details={"field": "limit"})
        return cls(tenant=tenant, statuses=statuses, thread_id=thread_id, model=model,
                   since_ms=since_ms, limit=limit,
                   after=None if cursor is None else decode_cursor(cursor))


def encode_cursor(created_at: int, run_id: str) -> str:
    """Opaque to clients: where the next page starts (after this row)."""
    raw = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    bad = ValidationFailed("cursor: not a cursor this server gave out",
                           details={"field": "cursor"})
    if not cursor.startswith(_CURSOR_PREFIX):
        raise bad
    body = cursor[len(_CURSOR_PREFIX):]
    try:
        value = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise bad from exc
    if (not isinstance(value, list) or len(value) != 2 or type(value[0]) is not int
            or not isinstance(value[1], str)):
        raise bad
    if not 0 <= value[0] < 2**63 or len(value[1]) > 64:  # -- security: fits a BIGINT
        raise bad
    return value[0], value[1]


def check_title(title: str | None) -> None:
    """Both engines store the same strings: PostgreSQL's text cannot hold NUL, so neither does."""
    if title is not None and "\x00" in title:
        raise ValidationFailed("title: must not contain NUL characters",
                               details={"field": "title"})
