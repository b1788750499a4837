"""The PostgreSQL backend (psycopg 3): one database shared by any number of GM processes.

Write transactions are serialised by one transaction-scoped advisory lock taken right after
``BEGIN``: under READ COMMITTED every later statement of the transaction sees what all
earlier writers committed, and no other writer runs until the lock is released by ``COMMIT``
or ``ROLLBACK`` (or by the server, when a GM process dies mid-transaction and its connection
drops). That is the same serial order SQLite's ``BEGIN IMMEDIATE`` gives, so a Sender ID
allocation, a rekeying (version bump, new material, stale set) and an access-list change
each read and write one consistent state. Reads outside a transaction run in autocommit and
see committed state only.

A transaction that changed groups, members or channels sends ``NOTIFY`` on a channel in the
same transaction, so it is delivered exactly when the change is visible; :meth:`watch`
LISTENs on its own connection and tells the serving edge to push what changed. The same
transaction bumps the one-row ``change_counter`` table, so :meth:`change_marker` can tell in
one query, without waiting for a notification to arrive, whether anybody else committed such
a change since it last looked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import psycopg

from grouposcore.errors import ManagerStoreError
from grouposcore.manager.store.base import Store, schema_statements

__all__ = ["NOTIFY_CHANNEL", "PostgresStore"]

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "grouposcore_gm"
_WRITE_LOCK = 0x47524F5550474D  # "GROUPGM": one advisory lock per database
_RECONNECT_DELAY = 0.5


class PostgresStore(Store):
    """The GM database in PostgreSQL; ``url`` is a libpq connection URI."""

    failures = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._instance = secrets.token_hex(8)  # tells our own notifications apart
        self._own_bumps = 0  # change_counter increments this connection committed
        self._unsure = 0  # commits that may or may not have happened (the connection failed)
        self._conn = self._connect()
        try:
            with self.transaction():
                self._create_schema()
        except psycopg.Error as e:
            self._conn.close()
            raise ManagerStoreError(f"cannot use database {_redacted(url)}: {e}") from None

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True)
        except psycopg.Error as e:
            raise ManagerStoreError(f"cannot connect to {_redacted(self.url)}: {e}") from None

    @property
    def shared(self) -> bool:
        return True

    def _schema(self) -> list[str]:
        return [
            *schema_statements(blob="BYTEA", real="DOUBLE PRECISION", integer="BIGINT"),
            # Not part of the GM's state (dump() leaves it out): how many visible changes
            # have been committed, for change_marker().
            "CREATE TABLE IF NOT EXISTS change_counter "
            "(id INTEGER PRIMARY KEY CHECK (id = 0), n BIGINT NOT NULL)",
            "INSERT INTO change_counter(id, n) VALUES (0, 0) ON CONFLICT (id) DO NOTHING",
        ]

    def change_marker(self) -> object:
        """The other processes' share of ``change_counter``: every visible commit bumps it
        and this connection subtracts its own. A commit whose outcome is unknown (the
        connection failed during COMMIT) makes every later marker differ from the earlier
        ones, so the caller looks once more rather than miss a change."""
        row = self._one("SELECT n FROM change_counter WHERE id=0")
        if row is None:
            raise ManagerStoreError("the change_counter row is missing")
        return (self._unsure, int(row[0]) - self._own_bumps)

    def _execute(self, sql: str, args: tuple[Any, ...]) -> psycopg.Cursor[Any]:
        if self._conn.closed and not self._depth:
            self._conn = self._connect()  # the server restarted or dropped us: start over
        return self._conn.execute(sql.replace("?", "%s"), args)

    def _begin(self) -> None:
        self._execute("BEGIN", ())
        self._execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK,))

    def _commit(self, changed: bool) -> None:
        if changed:
            try:
                self._execute("UPDATE change_counter SET n=n+1 WHERE id=0", ())
                self._execute("SELECT pg_notify(?, ?)", (NOTIFY_CHANNEL, self._instance))
            except BaseException:
                with contextlib.suppress(psycopg.Error):
                    self._rollback()  # nothing was committed; the connection stays usable
                raise
        try:
            self._execute("COMMIT", ())
        except BaseException:
            if changed:
                self._unsure += 1
            raise
        if changed:
            self._own_bumps += 1

    def _rollback(self) -> None:
        if not self._conn.closed:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection (committed state is already durable)."""
        self._conn.close()

    async def watch(self, changed: Callable[[], None]) -> None:
        """LISTEN for other GM processes' commits; reconnects (and reports a change, as
        something may have been missed) when the connection drops. Runs until cancelled."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            except psycopg.Error as e:
                log.warning("cannot listen for changes: %s", e)
                await asyncio.sleep(_RECONNECT_DELAY)
                continue
            try:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                changed()  # whatever happened before LISTEN took effect
                async for note in conn.notifies():
                    if note.payload != self._instance:
                        changed()
            except psycopg.Error as e:
                log.warning("change notifications interrupted: %s", e)
                await asyncio.sleep(_RECONNECT_DELAY)
            finally:
                await conn.close()


def _redacted(url: str) -> str:
    """The URL without a password (it ends up in error messages and logs)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "the PostgreSQL server"
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **info)
