"""Persistent state of the Group Manager behind one interface, :class:`Store`.

Two backends: :class:`SqliteStore` (one file, the embedded default) and ``PostgresStore``
(a shared server, for several GM processes; needs psycopg 3, imported only when used).
:func:`open_store` picks one from a URL: ``sqlite:///path``, ``postgresql://...`` (or
``postgres://...``); anything else is a path to an SQLite file.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from grouposcore.errors import ManagerStoreError
from grouposcore.manager.store.base import (
    SCHEMA_VERSION,
    AccessEntry,
    ChannelMaterial,
    GroupRecord,
    MemberRecord,
    Store,
)
from grouposcore.manager.store.sqlite import SqliteStore

__all__ = [
    "SCHEMA_VERSION",
    "AccessEntry",
    "ChannelMaterial",
    "GroupRecord",
    "MemberRecord",
    "SqliteStore",
    "Store",
    "open_store",
]


def sqlite_path(location: str | os.PathLike[str]) -> Path | None:
    """The SQLite file a ``--db`` value names, or None for a server URL (PostgreSQL)."""
    text = os.fspath(location)
    if text.startswith(("postgresql://", "postgres://")):
        return None
    if text.startswith("sqlite://"):
        path = unquote(text[len("sqlite://") :])
        if not path.startswith("/"):
            raise ManagerStoreError("an SQLite URL is sqlite:///relative or sqlite:////absolute")
        path = path[1:]  # sqlite:///gm.db is gm.db; sqlite:////var/gm.db is /var/gm.db
        if not path:
            raise ManagerStoreError("the SQLite URL names no file")
        return Path(path)
    return Path(text)


def open_store(location: str | os.PathLike[str]) -> Store:
    """Open the store a ``--db`` value names (a URL, or a plain path meaning SQLite)."""
    path = sqlite_path(location)
    if path is not None:
        return SqliteStore(path)
    try:
        from grouposcore.manager.store.postgres import PostgresStore
    except ImportError:
        raise ManagerStoreError(
            "a postgresql:// database needs psycopg 3 (pip install 'psycopg[binary]')"
        ) from None
    return PostgresStore(os.fspath(location))
