"""SQLite only: WAL, a file made before schema versions existed, several worker processes on
one file, unusable files, the ``sqlite:`` URL forms."""

from __future__ import annotations

import json
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest
import trio

from runtime.config import RuntimeConfig
from runtime.errors import StoreUnavailable, ValidationFailed
from runtime.store import SQLiteStore, open_store
from runtime.store.factory import sqlite_path
from runtime.store.migrations import LATEST
from tests.integration.test_store import response, schema_versions

ROOT = Path(__file__).resolve().parents[2]

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS threads (
    id         TEXT PRIMARY KEY,
    title      TEXT,
    settings   TEXT    NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS responses (
    run_id     TEXT PRIMARY KEY,
    thread_id  TEXT    NOT NULL,
    turn_id    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_by_thread ON responses (thread_id, created_at);
CREATE INDEX IF NOT EXISTS responses_by_turn ON responses (turn_id);
CREATE INDEX IF NOT EXISTS threads_by_update ON threads (deleted, updated_at);
"""
"""runtime/store.py's SCHEMA before versioned migrations, verbatim."""


def make_old_file(path: Path) -> list[str]:
    """A store file as the code before migrations left it: two threads (one deleted), three
    Responses. Returns the run ids, oldest first."""
    runs = ["11111111-0000-0000-0000-000000000001", "11111111-0000-0000-0000-000000000002",
            "11111111-0000-0000-0000-000000000003"]
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(OLD_SCHEMA)
        conn.execute("INSERT INTO threads VALUES ('t1', 'old', '{\"model\": \"x\"}', 10, 20, 0)")
        conn.execute("INSERT INTO threads VALUES ('gone', NULL, '{}', 10, 30, 1)")
        for i, run in enumerate(runs):
            resp = response(run, created_at=100 + i, text=f"turn {i}", status="complete",
                            model_id="claude-haiku-4.5" if i == 1 else "gpt-5-mini",
                            provider_id="anthropic" if i == 1 else "openai")
            conn.execute("INSERT INTO responses VALUES (?, 't1', ?, ?, 'complete', ?, ?, ?)",
                         (run, resp.turn_id, 7, resp.created_at, resp.updated_at,
                          resp.model_dump_json()))
    return runs


async def test_a_file_from_before_schema_versions_is_migrated_in_place(data_dir: Path) -> None:
    path = data_dir / "cody.db"
    runs = make_old_file(path)
    with trio.fail_after(15):
        async with SQLiteStore.open(path) as store:
            thread = await store.get_thread("t1")
            assert thread is not None and (thread.title, thread.settings) == ("old", {"model": "x"})
            assert await store.get_thread("gone") is None  # the tombstone stays one
            assert [r.id for r in await store.list_thread_responses("t1")] == runs
            assert await store.get_response_seq(runs[0]) == 7
            page, _ = await store.list_runs()
            assert [r.id for r in page] == runs[::-1]
            # model and provider were filled in from each row's body, for filtering
            assert [r.id for r in (await store.list_runs(model="claude-haiku-4.5"))[0]] == [
                runs[1]]
            assert await store.response_tenant(runs[0]) == "default"
            assert not await store.upsert_response(response(runs[0], text="older"), 6)
            assert await store.upsert_response(response(runs[0], created_at=100,
                                                        text="newer"), 8)
            assert not await store.upsert_response(response("r9", thread_id="gone"), 1)
        async with SQLiteStore.open(path) as store:  # a second start finds nothing to do
            assert len(await store.list_thread_responses("t1")) == 3
    url = f"sqlite://{path}"
    assert schema_versions(url) == list(range(1, LATEST + 1))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                              "WHERE type = 'index'")}
        assert {"runs_by_tenant", "runs_by_tenant_status", "threads_by_tenant"} <= indexes
        assert "threads_by_update" not in indexes


WORKER = textwrap.dedent("""
    import json, random, sys, trio
    from pathlib import Path
    from runtime.store import SQLiteStore
    from tests.integration.test_store import response

    async def main(path, worker, runs):
        rng = random.Random(worker)
        work = [(run, seq) for run in runs for seq in range(1, 21)]
        rng.shuffle(work)
        async with SQLiteStore.open(Path(path)) as store:
            await store.ensure_thread("t1")
            for i in range(0, len(work), 5):
                await store.upsert_responses(
                    [(response(run, text=str(seq)), seq) for run, seq in work[i:i + 5]])

    trio.run(main, sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
""")


async def test_worker_processes_share_one_file(data_dir: Path) -> None:
    """``cody serve --workers N``: N processes open one fresh file at once (each migrates, or
    finds it done) and upsert the same runs concurrently; rows only ever move forward."""
    path = data_dir / "cody.db"
    runs = [f"run-{i}" for i in range(8)]
    async def worker(n: int) -> None:
        await trio.run_process([sys.executable, "-c", WORKER, str(path), str(n),
                                json.dumps(runs)], cwd=ROOT, capture_stderr=True)

    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            for n in range(3):
                nursery.start_soon(worker, n)
        async with SQLiteStore.open(path) as store:
            for run in runs:
                assert await store.get_response_seq(run) == 20
    assert schema_versions(f"sqlite://{path}") == list(range(1, LATEST + 1))


async def test_unusable_file_is_store_unavailable(data_dir: Path) -> None:
    garbage = data_dir / "garbage.db"
    garbage.write_bytes(b"this is not a database, just text. " * 200)
    with trio.fail_after(10), pytest.raises(StoreUnavailable) as info:
        async with SQLiteStore.open(garbage):
            pass
    assert info.value.status == 503


async def test_in_memory_store_works(data_dir: Path) -> None:
    with trio.fail_after(10):
        async with SQLiteStore.open(Path(":memory:")) as store:
            assert await store.upsert_response(response("r1"), 1)
            assert (await store.list_runs())[0][0].id == "r1"


async def test_store_url_forms(data_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "my.db"
    cases = [(None, data_dir / "cody.db"), (f"sqlite://{elsewhere}", elsewhere),
             ("sqlite:relative.db", data_dir / "relative.db")]
    with trio.fail_after(20):
        for url, path in cases:
            async with open_store(RuntimeConfig(data_dir=data_dir, store_url=url)) as store:
                assert isinstance(store, SQLiteStore)
                await store.ensure_thread("t1")
            assert path.exists(), url
        with pytest.raises(ValidationFailed):
            async with open_store(RuntimeConfig(data_dir=data_dir, store_url="mysql://x/y")):
                pass
    with pytest.raises(ValidationFailed):
        sqlite_path("sqlite://", data_dir)


def test_store_url_from_the_environment_never_shows_the_password() -> None:
    config = RuntimeConfig.from_env({"CODY_STORE_URL": "sqlite:///var/lib/cody/cody.db"})
    assert config.store_url == "sqlite:///var/lib/cody/cody.db"
    assert RuntimeConfig.from_env({}).store_url is None
    with pytest.raises(ValidationFailed) as info:
        RuntimeConfig.from_env({"CODY_STORE_URL": "postgresq://cody:hunter2@db/cody"})
    assert info.value.details == {"field": "CODY_STORE_URL"}
    assert "hunter2" not in info.value.message and "postgresq" in info.value.message
