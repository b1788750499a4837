"""The transactional core of the GM store: backend primitives, transactions, the schema check.

Why this shape: a Group Manager that forgets a Sender ID allocation after a crash could hand
the same ID out twice under one Gid, which breaks nonce uniqueness for the whole group. So
every state change (a join, a rekeying, a credential update) is one transaction, and write
transactions are serialised: SQLite's ``BEGIN IMMEDIATE`` takes the database's write lock,
PostgreSQL's transaction takes one advisory lock first. A transaction therefore reads the
state every earlier one committed and nobody else writes until it ends, which is the
isolation a read-then-allocate step (Sender IDs, Gid prefixes, channel IDs) needs; several
GM processes on one database behave like one. A response leaves the GM only after its
commit, so a GM killed at any point leaves the state of the last committed change.

Reads outside a transaction see committed state only, never a half-written group.
The SQL is written once with ``?`` parameters and upserts (``ON CONFLICT ... DO UPDATE``),
which both SQLite and PostgreSQL accept; a backend supplies the connection, the column
types, the locking and the error types.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from grouposcore.errors import ManagerStoreError
from grouposcore.manager.store.schema import SCHEMA_VERSION

__all__ = ["StoreCore"]


class StoreCore(ABC):
    """Transactions over a backend's connection; the tables' API builds on it.

    A backend implements the connection-level primitives (``_execute``, ``_begin``,
    ``_commit``, ``_rollback``, ``close``, ``_schema``). ``failures`` are the backend's
    exception types that mean "the database failed" (the GM answers 5.00 to a request that
    hits one and changes nothing).
    """

    failures: tuple[type[BaseException], ...] = ()
    url: str

    def __init__(self) -> None:
        self._depth = 0
        self._changed = False

    # --- backend primitives ----------------------------------------------------------------

    @abstractmethod
    def _execute(self, sql: str, args: tuple[Any, ...]) -> Any:
        """Run one statement (``?`` parameters); return something with fetchone/fetchall."""

    @abstractmethod
    def _begin(self) -> None:
        """Start a write transaction holding the store's write lock."""

    @abstractmethod
    def _commit(self, changed: bool) -> None:
        """Commit; ``changed`` says whether other GM processes should hear about it."""

    @abstractmethod
    def _rollback(self) -> None:
        """Abandon the transaction."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection (committed state is already durable)."""

    @abstractmethod
    def change_marker(self) -> object:
        """An opaque value that moves once another connection (another GM process, an
        offline command) has committed a change other processes must hear about (keying
        material, groups, evictions, channels: what :meth:`_announce` marks; a backend may
        move it for other commits too), and stays put otherwise; compare it with ``==``.
        This connection's own commits leave it alone: whoever made them knows them already.
        One cheap query, so a server can ask before every request whether it must re-read
        groups and channels."""

    @property
    def shared(self) -> bool:
        """Whether other GM processes may serve the same database at the same time (and
        hear of each other's changes through :meth:`watch`)."""
        return False

    # --- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic state change: everything inside commits together or not at all.

        Nested calls join the outer transaction.
        """
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._begin()
        self._depth = 1
        self._changed = False
        try:
            yield
        except BaseException:
            self._depth = 0
            self._rollback()
            raise
        self._depth = 0
        self._commit(self._changed)

    def _write(self, sql: str, args: tuple[Any, ...] = (), *, visible: bool = False) -> Any:
        """A statement that changes state; ``visible`` marks the transaction as one other GM
        processes must learn about (what their observers or channels see: keying material,
        group flags, evictions, deletions, channels), so it ends with a notification."""
        if not self._depth:
            raise ManagerStoreError("state changes must run inside Store.transaction()")
        if visible:
            self._changed = True
        return self._execute(sql, args)

    def _announce(self) -> None:
        """Mark the running transaction as one other GM processes must hear about."""
        if not self._depth:
            raise ManagerStoreError("state changes must run inside Store.transaction()")
        self._changed = True

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._execute(sql, args).fetchone()
        return row

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self._execute(sql, args).fetchall()]

    def _upsert(
        self, table: str, cols: str, keys: str, values: tuple[Any, ...], *, visible: bool = False
    ) -> None:
        """Insert a row or replace the one with the same ``keys``."""
        names = [c.strip() for c in cols.split(",")]
        key_names = {k.strip() for k in keys.split(",")}
        updates = ", ".join(f"{c}=excluded.{c}" for c in names if c not in key_names)
        self._write(
            f"INSERT INTO {table}({cols}) VALUES ({','.join('?' * len(names))}) "
            f"ON CONFLICT ({keys}) DO UPDATE SET {updates}",
            values,
            visible=visible,
        )

    def _create_schema(self) -> None:
        """Inside the caller's transaction: create missing tables, check the schema version."""
        for statement in self._schema():
            self._execute(statement, ())
        row = self._one("SELECT value FROM meta WHERE key='schema'")
        if row is None:
            self._execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            return
        version = row[0]
        if version == 1:
            self._migrate_from_1()
            version = 2
        if version == 2:
            self._migrate_from_2()
            version = 3
        if version != SCHEMA_VERSION:
            raise ManagerStoreError(f"database schema {row[0]!r} is not {SCHEMA_VERSION}")
        if row[0] != version:
            self._execute("UPDATE meta SET value=? WHERE key='schema'", (version,))

    @abstractmethod
    def _schema(self) -> list[str]:
        """The backend's CREATE statements."""

    def _migrate_from_1(self) -> None:
        raise ManagerStoreError("database schema 1 exists only in SQLite files")

    @abstractmethod
    def _migrate_from_2(self) -> None:
        """Schema 2 -> 3, inside the caller's transaction."""

    async def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever another GM process commits a visible change; runs until
        cancelled. A store that no other process writes never calls it."""
        await asyncio.Event().wait()
