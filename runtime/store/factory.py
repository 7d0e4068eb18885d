"""``open_store(config)``: the one place that picks the engine from the config.

``store_url`` unset: SQLite at ``store_path`` (default ``<data dir>/cody.db``).
``sqlite:///abs/path.db`` (or ``sqlite:relative.db``, under the data dir): SQLite there.
``postgresql://…`` or ``postgres://…``: PostgreSQL (:mod:`runtime.store.postgres`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from runtime.clock import WallClock
from runtime.config import RuntimeConfig
from runtime.errors import ValidationFailed
from runtime.store.protocol import Store

POSTGRES_SCHEMES = ("postgresql", "postgres")


def sqlite_path(url: str, data_dir: Path) -> Path:
    """The file a ``sqlite:`` URL names; a relative path is under the data dir."""
    path = unquote(urlsplit(url).path)
    if not path or path == "/":
        raise ValidationFailed("CODY_STORE_URL: a sqlite URL needs a path, "
                               "e.g. sqlite:///var/lib/cody/cody.db",
                               details={"field": "CODY_STORE_URL"})
    return data_dir / path  # an absolute path stays as it is


@asynccontextmanager
async def open_store(config: RuntimeConfig, *, clock: WallClock | None = None
                     ) -> AsyncIterator[Store]:
    url = config.store_url
    scheme = urlsplit(url).scheme.lower() if url else ""
    if url is not None and scheme in POSTGRES_SCHEMES:
        from runtime.store.postgres import PostgresStore

        async with PostgresStore.open(url, clock=clock, pool_size=config.store_pool_size,
                                      timeout_s=config.store_timeout_s) as pg:
            yield pg
        return
    from runtime.store.sqlite import SQLiteStore

    if url is None:
        path = config.effective_store_path
    elif scheme == "sqlite":
        path = sqlite_path(url, config.data_dir)
    else:
        raise ValidationFailed(f"CODY_STORE_URL: unknown scheme {scheme!r}; use sqlite:///path "
                               "or postgresql://…", details={"field": "CODY_STORE_URL"})
    async with SQLiteStore.open(path, clock=clock) as lite:
        yield lite
