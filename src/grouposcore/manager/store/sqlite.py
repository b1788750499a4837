"""The SQLite backend: one file, WAL, ``BEGIN IMMEDIATE`` ... ``COMMIT`` per change.

``synchronous=FULL`` makes each commit durable before the GM answers. The file holds keys
(Master Secrets, the GM's private keys, channel secrets), so it is created 0600 before SQLite
opens it, and tightened to 0600 if it already exists; SQLite gives its -wal and -shm files
the permissions of the database file. Several processes may open one file (SQLite's write
lock serialises them), but they do not hear of each other's changes: a second process on
the same file is for offline administration, and a replicated GM uses PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import cbor2

from grouposcore.errors import ManagerStoreError
from grouposcore.manager.store.base import Store, schema_statements

__all__ = ["SqliteStore"]


def _prepare_file(path: Path) -> None:
    """Create the database file 0600 (or tighten an existing one) before SQLite touches it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as e:
        raise ManagerStoreError(f"cannot open database {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ManagerStoreError(f"database {path} is not a regular file")
        if stat.S_IMODE(st.st_mode) != 0o600:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists() and stat.S_IMODE(side.stat().st_mode) != 0o600:
            os.chmod(side, 0o600)


class SqliteStore(Store):
    """The GM database in one SQLite file."""

    failures = (sqlite3.Error,)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        _prepare_file(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self.transaction():
                self._create_schema()
        except sqlite3.DatabaseError as e:
            raise ManagerStoreError(f"cannot use database {self.path}: {e}") from None

    def _schema(self) -> list[str]:
        return schema_statements(blob="BLOB", real="REAL", integer="INTEGER")

    def _execute(self, sql: str, args: tuple[Any, ...]) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def change_marker(self) -> object:
        """SQLite's ``data_version``: it changes when another connection commits, never for
        this connection's own commits."""
        row = self._one("PRAGMA data_version")
        assert row is not None
        return int(row[0])

    def _begin(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def _commit(self, changed: bool) -> None:
        self._db.execute("COMMIT")

    def _rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection (committed state is already on disk)."""
        self._db.close()

    def _migrate_from_1(self) -> None:
        """Schema 1 keyed a stale set by the version that *distributed* it and filled it only
        at rekeying time; schema 2 keys it by the version under which the IDs were given up
        and fills it at once. Shift the old sets down by one and open the current set with
        what was relinquished under the current Gid so far."""
        old = self._all("SELECT grp, num, sender_ids FROM stale_sets")
        self._db.execute("DELETE FROM stale_sets")
        for grp, num, ids in old:
            if num >= 1:
                self._db.execute(
                    "INSERT INTO stale_sets(grp, num, sender_ids) VALUES (?, ?, ?)",
                    (grp, num - 1, ids),
                )
        for grp, num, gid in self._all("SELECT name, num, gid FROM groups"):
            held = {
                r[0]
                for r in self._all(
                    "SELECT sender_id FROM members WHERE grp=? AND sender_id IS NOT NULL", (grp,)
                )
            }
            gone = sorted(
                {
                    r[0]
                    for r in self._all(
                        "SELECT sender_id FROM sid_allocations WHERE grp=? AND gid=?", (grp, gid)
                    )
                }
                - held
            )
            self._db.execute(
                "INSERT OR REPLACE INTO stale_sets(grp, num, sender_ids) VALUES (?, ?, ?)",
                (grp, num, cbor2.dumps(gone)),
            )
