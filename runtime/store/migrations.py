"""Numbered schema migrations, one list for both engines, applied at start-up.

A ``schema_version`` table records each applied version once. ``apply`` runs inside one
transaction that the engine opens and serialises: SQLite's ``BEGIN IMMEDIATE`` (one writer per
file, so several worker processes starting at once wait their turn), PostgreSQL's
``pg_advisory_xact_lock`` keyed on the schema (several nodes starting at once: one migrates,
the others then find nothing to do). DDL is transactional on both, so a migration that fails
leaves the schema as it was.

Version 1 is the schema the store had before versions existed (``CREATE … IF NOT EXISTS``), so
a SQLite file made by that code, which has the tables but no ``schema_version``, goes through
version 1 unchanged and is then migrated in place like any other.

Rules for new migrations: append, never edit one that has shipped; keep them additive (new
columns with defaults, new indexes) so that nodes still running the previous build keep working
during a rolling upgrade. A store whose schema is newer than this build warns and carries on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

log = logging.getLogger(__name__)

Engine = Literal["sqlite", "postgres"]


class Tx(Protocol):
    """One open transaction of either engine; ``?`` placeholders on both."""

    def rows(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]: ...

    def run(self, sql: str, params: tuple[object, ...] = ()) -> int:
        """Execute; the number of rows changed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, engine: Engine) -> tuple[str, ...]:
        return self.sqlite if engine == "sqlite" else self.postgres


_V1_INDEXES = (
    "CREATE INDEX IF NOT EXISTS responses_by_thread ON responses (thread_id, created_at)",
    "CREATE INDEX IF NOT EXISTS responses_by_turn ON responses (turn_id)",
    "CREATE INDEX IF NOT EXISTS threads_by_update ON threads (deleted, updated_at)",
)

_V2_COMMON = (
    "ALTER TABLE threads ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
    "ALTER TABLE responses ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default'",
    "ALTER TABLE responses ADD COLUMN model_id TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE responses ADD COLUMN provider_id TEXT NOT NULL DEFAULT ''",
)
_V2_INDEXES = (
    "DROP INDEX IF EXISTS threads_by_update",
    "CREATE INDEX threads_by_tenant ON threads (tenant, deleted, updated_at)",
    "CREATE INDEX runs_by_tenant ON responses (tenant, created_at, run_id)",
    "CREATE INDEX runs_by_tenant_status ON responses (tenant, status, created_at, run_id)",
    "CREATE INDEX runs_by_tenant_model ON responses (tenant, model_id, created_at, run_id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "threads and responses",
        sqlite=(
            "CREATE TABLE IF NOT EXISTS threads ("
            " id TEXT PRIMARY KEY, title TEXT, settings TEXT NOT NULL DEFAULT '{}',"
            " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
            " deleted INTEGER NOT NULL DEFAULT 0)",
            # the rowid (implicit) is the insertion order of a thread's turns
            "CREATE TABLE IF NOT EXISTS responses ("
            " run_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, turn_id TEXT NOT NULL,"
            " seq INTEGER NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,"
            " updated_at INTEGER NOT NULL, body TEXT NOT NULL)",
            *_V1_INDEXES,
        ),
        postgres=(
            "CREATE TABLE IF NOT EXISTS threads ("
            " id TEXT PRIMARY KEY, title TEXT, settings TEXT NOT NULL DEFAULT '{}',"
            " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,"
            " deleted SMALLINT NOT NULL DEFAULT 0)",
            # body stays TEXT (the exact JSON the projector wrote; jsonb rejects \u0000)
            "CREATE TABLE IF NOT EXISTS responses ("
            " run_id TEXT PRIMARY KEY, row_order BIGINT GENERATED ALWAYS AS IDENTITY,"
            " thread_id TEXT NOT NULL, turn_id TEXT NOT NULL,"
            " seq BIGINT NOT NULL, status TEXT NOT NULL, created_at BIGINT NOT NULL,"
            " updated_at BIGINT NOT NULL, body TEXT NOT NULL)",
            *_V1_INDEXES,
        ),
    ),
    Migration(
        2, "tenants; model, provider and status for listing runs",
        sqlite=(
            *_V2_COMMON,
            "UPDATE responses SET model_id = coalesce(json_extract(body, '$.model_id'), ''),"
            " provider_id = coalesce(json_extract(body, '$.provider_id'), '')",
            *_V2_INDEXES,
        ),
        postgres=(
            *_V2_COMMON,
            "UPDATE responses SET model_id = coalesce(body::json ->> 'model_id', ''),"
            " provider_id = coalesce(body::json ->> 'provider_id', '')",
            *_V2_INDEXES,
        ),
    ),
)

LATEST = MIGRATIONS[-1].version

_VERSION_TABLE = ("CREATE TABLE IF NOT EXISTS schema_version ("
                  " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                  " applied_at BIGINT NOT NULL)")


def _check_list(migrations: tuple[Migration, ...]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migrations must be numbered 1..n in order, got {versions}")


_check_list(MIGRATIONS)


def apply(tx: Tx, engine: Engine, now_ms: int,
          migrations: tuple[Migration, ...] = MIGRATIONS) -> list[int]:
    """Apply what is missing, in order, inside the caller's (serialised) transaction.
    Returns the versions applied now (empty: the schema was up to date)."""
    tx.run(_VERSION_TABLE)
    applied = {int(str(row[0])) for row in tx.rows("SELECT version FROM schema_version")}
    known = {m.version for m in migrations}
    if applied - known:
        log.warning("store schema is at version %d, newer than this build knows (%d); "
                    "carrying on, migrations are additive", max(applied), max(known))
    done: list[int] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements(engine):
            tx.run(statement)
        tx.run("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
               (migration.version, migration.name, now_ms))
        done.append(migration.version)
    if done:
        log.info("store schema migrated to version %d (%s)", done[-1], engine)
    return done
