"""The durable store (SPEC §10): threads and their Responses, on SQLite or PostgreSQL.

Everything above the store uses :class:`Store` (the contract, :mod:`.protocol`) and
:func:`open_store` (the engine chosen by ``CODY_STORE_URL``). The engines share their queries
(:mod:`.sql`), their method layer (:mod:`.base`) and one list of numbered migrations
(:mod:`.migrations`); :mod:`.sqlite` and :mod:`.postgres` only connect, run calls in worker
threads and translate their driver's errors into :class:`~runtime.errors.StoreUnavailable`.
"""

from runtime.store.factory import open_store
from runtime.store.protocol import DEFAULT_TENANT, MAX_LIST_LIMIT, Store, Thread
from runtime.store.sqlite import SQLiteStore

__all__ = ["DEFAULT_TENANT", "MAX_LIST_LIMIT", "SQLiteStore", "Store", "Thread", "open_store"]
