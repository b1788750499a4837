"""The store interface of the Group Manager: records, schema and the SQL both backends share.

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
from dataclasses import dataclass
from typing import Any

import cbor2

from grouposcore.cose import hkdf_by_id
from grouposcore.errors import ManagerStoreError
from grouposcore.oscore import SecurityContext, SenderSequence

__all__ = [
    "SCHEMA_VERSION",
    "AccessEntry",
    "ChannelMaterial",
    "GroupRecord",
    "MemberRecord",
    "Store",
    "schema_statements",
]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS gm_keys (
    sign_alg {int} PRIMARY KEY,
    private_key {blob} NOT NULL,
    credential {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    gid_prefix {blob} NOT NULL UNIQUE,
    epoch {int} NOT NULL,
    epoch_len {int} NOT NULL,
    gid {blob} NOT NULL UNIQUE,
    master_secret {blob} NOT NULL,
    master_salt {blob} NOT NULL,
    num {int} NOT NULL,
    exp {int} NOT NULL,
    lifetime {int} NOT NULL,
    hkdf_alg {int} NOT NULL,
    aead_alg {int},
    group_enc_alg {int} NOT NULL,
    sign_alg {int} NOT NULL,
    ecdh_alg {int},
    cred_fmt {int} NOT NULL,
    max_sid_len {int} NOT NULL,
    policies {blob} NOT NULL,
    backward_security {int} NOT NULL,
    active {int} NOT NULL,
    stale_sets_kept {int} NOT NULL,
    created_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    roles {int} NOT NULL,
    credential {blob},
    sender_id {blob},
    birth_gid {blob} NOT NULL,
    scope {blob} NOT NULL,
    client_nonce {blob} NOT NULL,
    joined_at {real} NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE UNIQUE INDEX IF NOT EXISTS members_sid ON members (grp, sender_id)
    WHERE sender_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS sid_allocations (
    grp TEXT NOT NULL REFERENCES groups(name),
    gid {blob} NOT NULL,
    sender_id {blob} NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (grp, gid, sender_id)
);
CREATE INDEX IF NOT EXISTS sid_allocations_node ON sid_allocations (grp, gid, node);
CREATE TABLE IF NOT EXISTS sid_cursors (
    grp TEXT PRIMARY KEY REFERENCES groups(name),
    gid {blob} NOT NULL,
    next_index {int} NOT NULL,
    relinquished {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS evicted_elders (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE TABLE IF NOT EXISTS stale_sets (
    grp TEXT NOT NULL REFERENCES groups(name),
    num {int} NOT NULL,
    sender_ids {blob} NOT NULL,
    PRIMARY KEY (grp, num)
);
CREATE TABLE IF NOT EXISTS access (
    node TEXT NOT NULL,
    grp TEXT NOT NULL,
    roles {int} NOT NULL,
    PRIMARY KEY (node, grp)
);
CREATE TABLE IF NOT EXISTS admins (
    node TEXT NOT NULL,
    pattern TEXT NOT NULL,
    perms {int} NOT NULL,
    PRIMARY KEY (node, pattern)
);
CREATE TABLE IF NOT EXISTS group_info (
    grp TEXT PRIMARY KEY REFERENCES groups(name),
    info {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS challenges (
    node TEXT PRIMARY KEY,
    challenge {blob} NOT NULL,
    expires {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS request_pivs (
    key TEXT NOT NULL,
    piv {int} NOT NULL,
    PRIMARY KEY (key, piv)
);
CREATE TABLE IF NOT EXISTS sequence_numbers (
    key TEXT PRIMARY KEY,
    upto {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    node TEXT PRIMARY KEY,
    master_secret {blob} NOT NULL,
    master_salt {blob} NOT NULL,
    gm_sender_id {blob} NOT NULL,
    node_sender_id {blob} NOT NULL UNIQUE,
    id_context {blob},
    aead_alg {int} NOT NULL,
    hkdf_alg {int} NOT NULL
);
CREATE TABLE IF NOT EXISTS edhoc_peers (
    node TEXT PRIMARY KEY,
    credential {blob} NOT NULL UNIQUE,
    kid {blob}
);
CREATE TABLE IF NOT EXISTS edhoc_identity (
    one {int} PRIMARY KEY CHECK (one = 1),
    private_key {blob} NOT NULL,
    credential {blob} NOT NULL
);
"""


def schema_statements(*, blob: str, real: str, integer: str) -> list[str]:
    """The CREATE statements with a backend's column types filled in."""
    text = _SCHEMA.format(blob=blob, real=real, int=integer)
    return [s.strip() for s in text.split(";") if s.strip()]


@dataclass(frozen=True)
class GroupRecord:
    """One OSCORE group as stored: its current Common Context and its policies."""

    name: str
    gid_prefix: bytes
    epoch: int
    epoch_len: int
    gid: bytes
    master_secret: bytes
    master_salt: bytes
    num: int
    exp: int
    lifetime: int
    hkdf_alg: int
    aead_alg: int | None
    group_enc_alg: int
    sign_alg: int
    ecdh_alg: int | None
    cred_fmt: int
    max_sid_len: int
    policies: bytes
    backward_security: bool
    active: bool
    stale_sets_kept: int
    created_at: float


@dataclass(frozen=True)
class MemberRecord:
    """A current member: roles, credential (None for monitors), Sender ID and join data."""

    group: str
    node: str
    roles: int
    credential: bytes | None
    sender_id: bytes | None
    birth_gid: bytes
    scope: bytes
    client_nonce: bytes
    joined_at: float


@dataclass(frozen=True)
class AccessEntry:
    """Access-list entry: ``node`` may join ``group`` with a subset of the ``roles`` bitmap."""

    node: str
    group: str
    roles: int


@dataclass(frozen=True)
class ChannelMaterial:
    """Commissioning material of the pairwise OSCORE (RFC 8613) context between GM and node."""

    node: str
    master_secret: bytes
    master_salt: bytes
    gm_sender_id: bytes
    node_sender_id: bytes
    id_context: bytes | None
    aead_alg: int
    hkdf_alg: int

    def context(
        self, *, as_gm: bool, sequence: SenderSequence | None = None,
        replay_window_valid: bool = True,
    ) -> SecurityContext:
        """The channel's OSCORE context as the GM (``as_gm``) or as the node sees it: the
        same material, with Sender and Recipient ID swapped."""
        own, peer = ((self.gm_sender_id, self.node_sender_id) if as_gm
                     else (self.node_sender_id, self.gm_sender_id))
        return SecurityContext(
            self.master_secret,
            sender_id=own,
            recipient_id=peer,
            master_salt=self.master_salt,
            id_context=self.id_context,
            aead=self.aead_alg,
            hkdf=hkdf_by_id(self.hkdf_alg),
            sequence=sequence,
            replay_window_valid=replay_window_valid,
        )


_GROUP_COLS = (
    "name, gid_prefix, epoch, epoch_len, gid, master_secret, master_salt, num, exp, lifetime, "
    "hkdf_alg, aead_alg, group_enc_alg, sign_alg, ecdh_alg, cred_fmt, max_sid_len, policies, "
    "backward_security, active, stale_sets_kept, created_at"
)
_MEMBER_COLS = "grp, node, roles, credential, sender_id, birth_gid, scope, client_nonce, joined_at"
_CHANNEL_COLS = (
    "node, master_secret, master_salt, gm_sender_id, node_sender_id, id_context, aead_alg, hkdf_alg"
)


def _group(row: tuple[Any, ...]) -> GroupRecord:
    r = list(row)
    r[18] = bool(r[18])
    r[19] = bool(r[19])
    return GroupRecord(*r)


class Store(ABC):
    """Typed access to the GM database. Mutations must run inside :meth:`transaction`.

    A backend implements the connection-level primitives (``_execute``, ``_begin``,
    ``_commit``, ``_rollback``) and the sequence-number blocks; everything else is shared.
    ``failures`` are the backend's exception types that mean "the database failed" (the GM
    answers 5.00 to a request that hits one and changes nothing).
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
        elif row[0] == 1:
            self._migrate_from_1()
        elif row[0] != SCHEMA_VERSION:
            raise ManagerStoreError(f"database schema {row[0]!r} is not {SCHEMA_VERSION}")

    @abstractmethod
    def _schema(self) -> list[str]:
        """The backend's CREATE statements."""

    def _migrate_from_1(self) -> None:
        raise ManagerStoreError("database schema 1 exists only in SQLite files")

    async def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` whenever another GM process commits a visible change; runs until
        cancelled. A store that no other process writes never calls it."""
        await asyncio.Event().wait()

    # --- GM keys ------------------------------------------------------------------------

    def gm_key(self, sign_alg: int) -> tuple[bytes, bytes] | None:
        """(private key bytes, credential) of the GM for one signature algorithm."""
        row = self._one("SELECT private_key, credential FROM gm_keys WHERE sign_alg=?", (sign_alg,))
        return None if row is None else (row[0], row[1])

    def put_gm_key(self, sign_alg: int, private_key: bytes, credential: bytes) -> None:
        """Store the GM's signing key and credential for ``sign_alg`` (first one wins)."""
        self._write(
            "INSERT INTO gm_keys(sign_alg, private_key, credential) VALUES (?, ?, ?)",
            (sign_alg, private_key, credential),
        )

    # --- groups -------------------------------------------------------------------------

    def group(self, name: str) -> GroupRecord | None:
        """The group called ``name``, or None."""
        row = self._one(f"SELECT {_GROUP_COLS} FROM groups WHERE name=?", (name,))
        return None if row is None else _group(row)

    def groups(self) -> list[GroupRecord]:
        """All groups, by name."""
        return [_group(r) for r in self._all(f"SELECT {_GROUP_COLS} FROM groups ORDER BY name")]

    def group_by_gid(self, gid: bytes) -> GroupRecord | None:
        """The group whose current Gid is ``gid``."""
        row = self._one(f"SELECT {_GROUP_COLS} FROM groups WHERE gid=?", (gid,))
        return None if row is None else _group(row)

    def gid_prefixes(self) -> set[bytes]:
        """Every Gid prefix in use (each group owns one, which keeps Gids unique per GM)."""
        return {r[0] for r in self._all("SELECT gid_prefix FROM groups")}

    def insert_group(self, g: GroupRecord) -> None:
        """Create a group row."""
        self._announce()
        self._write(
            f"INSERT INTO groups({_GROUP_COLS}) VALUES ({','.join('?' * 22)})",
            (
                g.name, g.gid_prefix, g.epoch, g.epoch_len, g.gid, g.master_secret,
                g.master_salt, g.num, g.exp, g.lifetime, g.hkdf_alg, g.aead_alg,
                g.group_enc_alg, g.sign_alg, g.ecdh_alg, g.cred_fmt, g.max_sid_len,
                g.policies, int(g.backward_security), int(g.active), g.stale_sets_kept,
                g.created_at,
            ),
        )  # fmt: skip

    def update_keying(
        self,
        name: str,
        *,
        epoch: int,
        gid: bytes,
        master_secret: bytes,
        master_salt: bytes,
        num: int,
        exp: int,
    ) -> None:
        """Install a rekeying's new Common Context values."""
        self._announce()
        self._write(
            "UPDATE groups SET epoch=?, gid=?, master_secret=?, master_salt=?, num=?, exp=? "
            "WHERE name=?",
            (epoch, gid, master_secret, master_salt, num, exp, name),
        )

    def set_group_flags(
        self, name: str, *, active: bool | None = None, backward_security: bool | None = None
    ) -> None:
        """Change the active / backward-security switches of a group."""
        self._announce()
        if active is not None:
            self._write("UPDATE groups SET active=? WHERE name=?", (int(active), name))
        if backward_security is not None:
            self._write(
                "UPDATE groups SET backward_security=? WHERE name=?",
                (int(backward_security), name),
            )

    def set_group_settings(
        self, name: str, *, stale_sets_kept: int, exp: int, lifetime: int
    ) -> None:
        """Change how many stale-ID sets are kept and when the material expires; sets beyond
        the new ``stale_sets_kept`` go at once."""
        self._announce()
        self._write(
            "UPDATE groups SET stale_sets_kept=?, exp=?, lifetime=? WHERE name=?",
            (stale_sets_kept, exp, lifetime, name),
        )
        self._write(
            "DELETE FROM stale_sets WHERE grp=? AND num NOT IN "
            "(SELECT num FROM stale_sets WHERE grp=? ORDER BY num DESC LIMIT ?)",
            (name, name, stale_sets_kept),
        )

    def delete_group(self, name: str) -> None:
        """Remove a group with everything kept about it (members, IDs, access entries)."""
        self._announce()
        for table in ("members", "sid_allocations", "sid_cursors", "evicted_elders",
                      "stale_sets", "access", "group_info"):  # fmt: skip
            self._write(f"DELETE FROM {table} WHERE grp=?", (name,))
        self._write("DELETE FROM groups WHERE name=?", (name,))

    def group_info(self, name: str) -> bytes | None:
        """The administrator-given description of a group (a CBOR map), if any."""
        row = self._one("SELECT info FROM group_info WHERE grp=?", (name,))
        return None if row is None else bytes(row[0])

    def set_group_info(self, name: str, info: bytes) -> None:
        """Replace the administrator-given description of a group."""
        self._announce()
        self._upsert("group_info", "grp, info", "grp", (name, info))

    # --- administrators ---------------------------------------------------------------------

    def admin_entries(self, node: str) -> list[tuple[str, int]]:
        """(group name pattern, permission bitmap) entries of administrator ``node``; the
        pattern is a group name, or ``*`` for any group."""
        rows = self._all("SELECT pattern, perms FROM admins WHERE node=? ORDER BY pattern",
                         (node,))  # fmt: skip
        return [(str(r[0]), int(r[1])) for r in rows]

    def set_admin(self, node: str, pattern: str, perms: int) -> None:
        """Grant ``node`` the admin permissions ``perms`` on groups matching ``pattern``;
        0 removes the entry."""
        if perms:
            self._upsert("admins", "node, pattern, perms", "node, pattern", (node, pattern, perms))
        else:
            self._write("DELETE FROM admins WHERE node=? AND pattern=?", (node, pattern))

    def set_policies(self, name: str, policies: bytes) -> None:
        """Replace the CBOR-encoded group policies."""
        self._announce()
        self._write("UPDATE groups SET policies=? WHERE name=?", (policies, name))

    # --- members ------------------------------------------------------------------------

    def member(self, group: str, node: str) -> MemberRecord | None:
        """The membership of ``node`` in ``group``, or None."""
        row = self._one(f"SELECT {_MEMBER_COLS} FROM members WHERE grp=? AND node=?", (group, node))
        return None if row is None else MemberRecord(*row)

    def members(self, group: str) -> list[MemberRecord]:
        """Current members of ``group``, by node name."""
        rows = self._all(f"SELECT {_MEMBER_COLS} FROM members WHERE grp=? ORDER BY node", (group,))
        return [MemberRecord(*r) for r in rows]

    def upsert_member(self, m: MemberRecord) -> None:
        """Insert or replace one membership."""
        self._upsert(
            "members", _MEMBER_COLS, "grp, node",
            (
                m.group, m.node, m.roles, m.credential, m.sender_id, m.birth_gid, m.scope,
                m.client_nonce, m.joined_at,
            ),
        )  # fmt: skip

    def delete_member(self, group: str, node: str) -> None:
        """End a membership."""
        self._announce()
        self._write("DELETE FROM members WHERE grp=? AND node=?", (group, node))

    def set_member_credential(self, group: str, node: str, credential: bytes) -> None:
        """Replace a member's authentication credential."""
        self._write(
            "UPDATE members SET credential=? WHERE grp=? AND node=?", (credential, group, node)
        )

    def set_member_sender_id(self, group: str, node: str, sender_id: bytes) -> None:
        """Give a member a new Sender ID (the allocation must already be recorded)."""
        self._write(
            "UPDATE members SET sender_id=? WHERE grp=? AND node=?", (sender_id, group, node)
        )

    # --- Sender ID allocations ----------------------------------------------------------

    def allocated_sids(self, group: str, gid: bytes) -> set[bytes]:
        """Every Sender ID handed out in ``group`` while ``gid`` is (was) current."""
        rows = self._all(
            "SELECT sender_id FROM sid_allocations WHERE grp=? AND gid=?", (group, gid)
        )
        return {r[0] for r in rows}

    def allocations(self, group: str) -> list[tuple[bytes, bytes, str]]:
        """(gid, sender_id, node) rows of ``group``."""
        return [
            (r[0], r[1], r[2])
            for r in self._all(
                "SELECT gid, sender_id, node FROM sid_allocations WHERE grp=? "
                "ORDER BY gid, sender_id",
                (group,),
            )
        ]

    def record_allocation(self, group: str, gid: bytes, sender_id: bytes, node: str) -> None:
        """Record that ``sender_id`` is taken under ``gid``; a duplicate is an integrity error."""
        self._write(
            "INSERT INTO sid_allocations(grp, gid, sender_id, node) VALUES (?, ?, ?, ?)",
            (group, gid, sender_id, node),
        )

    def drop_allocations(self, group: str, except_gid: bytes) -> None:
        """Forget allocations of Gids that are no longer current."""
        self._write("DELETE FROM sid_allocations WHERE grp=? AND gid<>?", (group, except_gid))

    def sid_allocated(self, group: str, gid: bytes, sender_id: bytes) -> bool:
        """Whether ``sender_id`` was handed out under ``gid`` (one index lookup)."""
        return self._one(
            "SELECT 1 FROM sid_allocations WHERE grp=? AND gid=? AND sender_id=?",
            (group, gid, sender_id),
        ) is not None

    def allocations_of(self, group: str, gid: bytes, node: str) -> int:
        """How many Sender IDs ``node`` was given under ``gid`` (join, re-joins, renewals)."""
        row = self._one(
            "SELECT COUNT(*) FROM sid_allocations WHERE grp=? AND gid=? AND node=?",
            (group, gid, node),
        )
        return 0 if row is None else int(row[0])

    def sid_cursor(self, group: str, gid: bytes) -> tuple[int, int]:
        """(next candidate index, IDs relinquished) under ``gid``; (0, 0) for a fresh Gid."""
        row = self._one("SELECT gid, next_index, relinquished FROM sid_cursors WHERE grp=?",
                        (group,))
        if row is None or row[0] != gid:
            return 0, 0
        return int(row[1]), int(row[2])

    def set_sid_cursor(self, group: str, gid: bytes, next_index: int, relinquished: int) -> None:
        """Persist the allocation cursor of ``group`` under ``gid``."""
        self._upsert(
            "sid_cursors", "grp, gid, next_index, relinquished", "grp",
            (group, gid, next_index, relinquished),
        )  # fmt: skip

    # --- elders evicted by Gid reuse ------------------------------------------------------

    def evicted_elders(self, group: str) -> set[str]:
        """Nodes evicted as elders by the latest rekeying (forgotten at the next one)."""
        return {r[0] for r in self._all("SELECT node FROM evicted_elders WHERE grp=?", (group,))}

    def set_evicted_elders(self, group: str, nodes: set[str]) -> None:
        """Replace the list of latest-evicted elders of ``group``."""
        self._write("DELETE FROM evicted_elders WHERE grp=?", (group,))
        for node in sorted(nodes):
            self._write("INSERT INTO evicted_elders(grp, node) VALUES (?, ?)", (group, node))

    # --- stale Sender IDs ---------------------------------------------------------------

    def add_stale_set(self, group: str, num: int, sender_ids: bytes, keep: int) -> None:
        """Open the stale-ID set (CBOR array) of version ``num``; keep the ``keep`` newest."""
        self._write(
            "INSERT INTO stale_sets(grp, num, sender_ids) VALUES (?, ?, ?)",
            (group, num, sender_ids),
        )
        self._write(
            "DELETE FROM stale_sets WHERE grp=? AND num NOT IN "
            "(SELECT num FROM stale_sets WHERE grp=? ORDER BY num DESC LIMIT ?)",
            (group, group, keep),
        )

    def add_stale_ids(self, group: str, num: int, sender_ids: list[bytes]) -> None:
        """Add Sender IDs given up while version ``num`` is current to that version's set."""
        row = self._one("SELECT sender_ids FROM stale_sets WHERE grp=? AND num=?", (group, num))
        current = set() if row is None else set(cbor2.loads(row[0]))
        current.update(sender_ids)
        self._upsert(
            "stale_sets", "grp, num, sender_ids", "grp, num",
            (group, num, cbor2.dumps(sorted(current))),
        )

    def stale_sets(self, group: str) -> dict[int, bytes]:
        """num -> CBOR array of the Sender IDs given up while version ``num`` was current."""
        rows = self._all("SELECT num, sender_ids FROM stale_sets WHERE grp=?", (group,))
        return {r[0]: r[1] for r in rows}

    # --- access list --------------------------------------------------------------------

    def allowed_roles(self, node: str, group: str) -> int:
        """The roles bitmap ``node`` may take in ``group`` (0 = none)."""
        row = self._one("SELECT roles FROM access WHERE node=? AND grp=?", (node, group))
        return 0 if row is None else int(row[0])

    def set_access(self, node: str, group: str, roles: int) -> None:
        """Allow ``node`` into ``group`` with ``roles``; 0 removes the entry."""
        if roles:
            self._upsert("access", "node, grp, roles", "node, grp", (node, group, roles))
        else:
            self._write("DELETE FROM access WHERE node=? AND grp=?", (node, group))

    def access_list(self) -> list[AccessEntry]:
        """The whole access list."""
        rows = self._all("SELECT node, grp, roles FROM access ORDER BY node, grp")
        return [AccessEntry(*r) for r in rows]

    # --- channels -----------------------------------------------------------------------

    def channel(self, node: str) -> ChannelMaterial | None:
        """The commissioned OSCORE channel material of ``node``."""
        row = self._one(f"SELECT {_CHANNEL_COLS} FROM channels WHERE node=?", (node,))
        return None if row is None else ChannelMaterial(*row)

    def channel_by_sender_id(self, node_sender_id: bytes) -> ChannelMaterial | None:
        """The channel whose node uses ``node_sender_id`` (the kid the GM receives)."""
        row = self._one(
            f"SELECT {_CHANNEL_COLS} FROM channels WHERE node_sender_id=?", (node_sender_id,)
        )
        return None if row is None else ChannelMaterial(*row)

    def channels(self) -> list[ChannelMaterial]:
        """Every commissioned channel."""
        return [
            ChannelMaterial(*r)
            for r in self._all(f"SELECT {_CHANNEL_COLS} FROM channels ORDER BY node")
        ]

    def put_channel(self, c: ChannelMaterial) -> None:
        """Insert or replace a node's channel material."""
        self._announce()
        self._upsert(
            "channels", _CHANNEL_COLS, "node",
            (
                c.node, c.master_secret, c.master_salt, c.gm_sender_id, c.node_sender_id,
                c.id_context, c.aead_alg, c.hkdf_alg,
            ),
        )  # fmt: skip

    # --- EDHOC (the GM's identity in meta, the nodes' credentials) -----------------------

    def edhoc_identity(self) -> tuple[bytes, bytes] | None:
        """(private key d, CCS credential) of the GM's EDHOC identity, if made yet."""
        row = self._one("SELECT private_key, credential FROM edhoc_identity WHERE one=1")
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def put_edhoc_identity(self, d: bytes, credential: bytes) -> None:
        """Store the GM's EDHOC key and credential (first one wins: a second GM process
        racing to make one keeps the stored identity)."""
        self._write("INSERT INTO edhoc_identity(one, private_key, credential) VALUES (1, ?, ?) "
                    "ON CONFLICT (one) DO NOTHING", (d, credential))

    def edhoc_peers(self) -> list[tuple[str, bytes, bytes | None]]:
        """Every (node, CCS credential, kid) registered for EDHOC."""
        return [
            (r[0], bytes(r[1]), None if r[2] is None else bytes(r[2]))
            for r in self._all("SELECT node, credential, kid FROM edhoc_peers ORDER BY node")
        ]

    def put_edhoc_peer(self, node: str, credential: bytes, kid: bytes | None) -> None:
        """Register (or replace) ``node``'s EDHOC credential."""
        self._upsert("edhoc_peers", "node, credential, kid", "node", (node, credential, kid))

    def delete_edhoc_peer(self, node: str) -> None:
        """Forget ``node``'s EDHOC credential."""
        self._write("DELETE FROM edhoc_peers WHERE node=?", (node,))

    # --- sender sequence numbers (the oscore SequenceNumberStore protocol) ---------------

    def load(self, key: str) -> int | None:
        """First sequence number usable after a restart for sender ``key`` (None: never)."""
        row = self._one("SELECT upto FROM sequence_numbers WHERE key=?", (key,))
        return None if row is None else int(row[0])

    def reserve(self, key: str, upto: int) -> None:
        """Durably record that numbers below ``upto`` may have been used (own transaction)."""
        with self.transaction():
            self._upsert("sequence_numbers", "key, upto", "key", (key, upto), visible=False)

    def claim(self, key: str, count: int) -> int:
        """Take ``count`` fresh numbers for sender ``key``: return the first of a block that
        no earlier claim or reservation (of any GM process on this database) covers."""
        with self.transaction():
            first = self.load(key) or 0
            self._upsert("sequence_numbers", "key, upto", "key", (key, first + count),
                         visible=False)  # fmt: skip
        return first

    def challenge(self, node: str) -> tuple[bytes, float] | None:
        """(N_S, expiry time) of the node's outstanding challenge, if any."""
        row = self._one("SELECT challenge, expires FROM challenges WHERE node=?", (node,))
        return None if row is None else (bytes(row[0]), float(row[1]))

    def put_challenge(self, node: str, challenge: bytes, expires: float) -> None:
        """Replace the node's outstanding challenge (own transaction)."""
        with self.transaction():
            self._upsert("challenges", "node, challenge, expires", "node",
                         (node, challenge, expires), visible=False)  # fmt: skip

    def drop_challenge(self, node: str) -> None:
        """Forget the node's challenge (own transaction, or the caller's)."""
        with self.transaction():
            self._write("DELETE FROM challenges WHERE node=?", (node,), visible=False)

    def fresh_request(self, key: str, piv: int, window: int) -> bool:
        """Record that a request with Partial IV ``piv`` arrived on the channel ``key``, for
        every GM process on this database. False (a replay) if any of them saw that number
        before, or if it lies ``window`` or more below the highest one seen. Only the latest
        ``window`` numbers per channel are kept."""
        with self.transaction():
            row = self._one("SELECT MAX(piv) FROM request_pivs WHERE key=?", (key,))
            top = None if row is None or row[0] is None else int(row[0])
            if top is not None and piv <= top - window:
                return False
            if self._one("SELECT 1 FROM request_pivs WHERE key=? AND piv=?", (key, piv)):
                return False
            self._write("INSERT INTO request_pivs(key, piv) VALUES (?, ?)", (key, piv),
                        visible=False)  # fmt: skip
            self._write("DELETE FROM request_pivs WHERE key=? AND piv<=?",
                        (key, max(piv, top or 0) - window), visible=False)  # fmt: skip
        return True

    def forget_sequence(self, key: str) -> None:
        """Drop the reservation of a sender whose keys are gone for good (they never come
        back, so neither can a nonce reuse)."""
        self._write("DELETE FROM sequence_numbers WHERE key=?", (key,))

    # --- whole-state view ---------------------------------------------------------------

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows in a stable order: what 'same state after restart' compares."""
        tables = ("meta", "gm_keys", "groups", "members", "sid_allocations", "sid_cursors",
                  "evicted_elders", "stale_sets", "access", "channels", "edhoc_peers",
                  "edhoc_identity", "admins", "group_info", "sequence_numbers")  # fmt: skip
        return {t: self._all(f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
