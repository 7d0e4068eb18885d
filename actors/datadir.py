"""The data dir: created 0700, every file in it 0600 (README, Security).

It holds prompts and answers (``cody.db``, the Redis AOF, ``replay-requests.jsonl``) and the
events secret, so nobody but the server's user may read it. The dir is created (or
tightened) 0700, and what the server keeps in it (:data:`OWN_NAMES`, the AOF folder with
everything in it) is tightened to 0600 (0700 for folders), which also fixes a data dir made
by an older version. Other files are left alone: a data dir pointed at a folder that holds
anything else must not have it all chmodded. Files the server creates later are created 0600
by :func:`private_open` (and the embedded redis-server runs under umask 077). The server
never changes the process-wide umask itself: other code in the process is not its business.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700
EVENTS_SECRET_NAME = "events-secret"
OWN_NAMES = frozenset({"cody.db", "cody.db-wal", "cody.db-shm", "cody.db-journal",
                       "appendonlydir", "appendonly.aof", "dump.rdb", "redis.log",
                       "replay-requests.jsonl", EVENTS_SECRET_NAME})
"""What the server keeps in its data dir (runtime/redis_server.py, runtime/store/sqlite.py)."""


def secure_data_dir(path: Path, *, precreate: tuple[Path, ...] = ()) -> None:
    """Create ``path`` 0700 (parents as usual), tighten what is in it, and create each of
    ``precreate`` (files inside it that others create later, e.g. SQLite's database) empty
    and 0600 if missing: SQLite gives its -wal and -shm files the database file's mode."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    for name in OWN_NAMES:
        own = path / name
        if own.is_dir() and not own.is_symlink():
            _chmod(own, DIR_MODE)
            for root, dirs, files in os.walk(own):
                for d in dirs:
                    _chmod(Path(root, d), DIR_MODE)
                for f in files:
                    _chmod(Path(root, f), FILE_MODE)
        else:
            _chmod(own, FILE_MODE)
    for file in precreate:
        os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         FILE_MODE))


def _chmod(p: Path, mode: int) -> None:
    try:
        st = os.lstat(p)
        if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != mode:
            os.chmod(p, mode)
    except FileNotFoundError:  # gone meanwhile (a -shm file)
        pass


def private_open(path: Path, mode: str = "a", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)``, a new file being created 0600 whatever the umask."""
    return open(path, mode, opener=lambda p, flags: os.open(p, flags, FILE_MODE), **kwargs)


def events_secret(data_dir: Path, configured: str | None) -> bytes:
    """The events-token secret: ``CODY_EVENTS_SECRET``, or ``data_dir/events-secret``,
    created once (32 random bytes, 0600, ``O_EXCL`` so that workers starting together on one
    data dir agree on it)."""
    if configured:
        return configured.encode()
    path = data_dir / EVENTS_SECRET_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        for _ in range(100):  # another worker may be writing it right now
            value = path.read_bytes().strip()
            if value:
                return value
            time.sleep(0.01)
        raise RuntimeError(f"{path} is empty; delete it to have a new secret made") from None
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()
