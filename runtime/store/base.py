"""The :class:`~runtime.store.protocol.Store` methods, once for both engines.

An engine supplies how one operation reaches its database — ``_read`` and ``_write`` run a
synchronous function of a transaction (:mod:`runtime.store.sql`) in a worker thread and
translate the driver's errors — and this class turns each store method into one such call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from runtime.clock import WallClock
from runtime.schema import Response
from runtime.store import sql
from runtime.store.migrations import Tx
from runtime.store.protocol import DEFAULT_TENANT, RunQuery, Thread

T = TypeVar("T")


class SQLStoreBase(ABC):
    dialect: sql.Dialect

    def __init__(self, *, clock: WallClock) -> None:
        self._clock = clock

    @abstractmethod
    async def _read(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` on a connection: one consistent read."""

    @abstractmethod
    async def _write(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in one write transaction: all of it or nothing."""

    async def ping(self) -> None:
        await self._read(lambda tx: tx.rows("SELECT 1"))

    # ------------------------------------------------------------------ responses

    async def upsert_response(self, response: Response, seq: int) -> bool:
        return (await self.upsert_responses([(response, seq)]))[0]

    async def upsert_responses(self, items: Sequence[tuple[Response, int]]) -> list[bool]:
        if not items:
            return []
        bodies = [(resp, resp.model_dump_json(), seq) for resp, seq in items]
        return await self._write(lambda tx: sql.upsert_responses(tx, self.dialect, bodies))

    async def get_response(self, run_id: str, *, tenant: str = DEFAULT_TENANT
                           ) -> Response | None:
        return await self._read(lambda tx: sql.get_response(tx, run_id, tenant))

    async def get_response_seq(self, run_id: str, *, tenant: str = DEFAULT_TENANT
                               ) -> int | None:
        return await self._read(lambda tx: sql.get_response_seq(tx, run_id, tenant))

    async def response_tenant(self, run_id: str) -> str | None:
        return await self._read(lambda tx: sql.response_tenant(tx, run_id))

    async def list_thread_responses(self, thread_id: str, *, tenant: str = DEFAULT_TENANT
                                    ) -> list[Response]:
        return await self._read(
            lambda tx: sql.list_thread_responses(tx, self.dialect, thread_id, tenant))

    async def list_runs(self, tenant: str = DEFAULT_TENANT, *,
                        status: str | Collection[str] | None = None,
                        thread_id: str | None = None, model: str | None = None,
                        since_ms: int | None = None, limit: int = 50,
                        cursor: str | None = None) -> tuple[list[Response], str | None]:
        query = RunQuery.build(tenant, status=status, thread_id=thread_id, model=model,
                               since_ms=since_ms, limit=limit, cursor=cursor)
        return await self._read(lambda tx: sql.list_runs(tx, query))

    # ------------------------------------------------------------------ threads

    async def create_thread(self, thread_id: str, title: str | None = None,
                            settings: dict[str, Any] | None = None, *,
                            tenant: str = DEFAULT_TENANT) -> Thread:
        now = self._clock.now_ms()
        return await self._write(lambda tx: sql.insert_thread(
            tx, thread_id, tenant, title, settings or {}, now, exist_ok=False))

    async def ensure_thread(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> Thread:
        now = self._clock.now_ms()
        return await self._write(lambda tx: sql.insert_thread(
            tx, thread_id, tenant, None, {}, now, exist_ok=True))

    async def get_thread(self, thread_id: str, *, tenant: str = DEFAULT_TENANT
                         ) -> Thread | None:
        return await self._read(lambda tx: sql.get_thread(tx, thread_id, tenant))

    async def list_threads(self, limit: int = 50, offset: int = 0, *,
                           tenant: str = DEFAULT_TENANT) -> list[Thread]:
        return await self._read(lambda tx: sql.list_threads(tx, tenant, limit, offset))

    async def update_thread(self, thread_id: str, *, title: str | None = None,
                            settings: dict[str, Any] | None = None,
                            tenant: str = DEFAULT_TENANT) -> Thread:
        now = self._clock.now_ms()
        return await self._write(lambda tx: sql.update_thread(
            tx, thread_id, tenant, title, settings, now))

    async def delete_thread(self, thread_id: str, *, tenant: str = DEFAULT_TENANT) -> None:
        now = self._clock.now_ms()
        await self._write(lambda tx: sql.delete_thread(tx, thread_id, tenant, now))
