"""Persistent state of the Group Manager: one SQLite file, WAL, one transaction per change.

Why this shape: a Group Manager that forgets a Sender ID allocation after a crash could hand
the same ID out twice under one Gid, which breaks nonce uniqueness for the whole group. So
every state change (a join, a rekeying, a credential update) is one ``BEGIN IMMEDIATE`` ...
``COMMIT`` with ``synchronous=FULL``; a response leaves the GM only after its commit, and a
GM killed at any point reopens into the state of the last committed change.

The file holds keys (Master Secrets, the GM's private keys, channel secrets), so it is
created 0600 before SQLite opens it, and tightened to 0600 if it already exists. SQLite
gives its -wal and -shm files the permissions of the database file.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS gm_keys (
    sign_alg INTEGER PRIMARY KEY,
    private_key BLOB NOT NULL,
    credential BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY,
    gid_prefix BLOB NOT NULL UNIQUE,
    epoch INTEGER NOT NULL,
    epoch_len INTEGER NOT NULL,
    gid BLOB NOT NULL UNIQUE,
    master_secret BLOB NOT NULL,
    master_salt BLOB NOT NULL,
    num INTEGER NOT NULL,
    exp INTEGER NOT NULL,
    lifetime INTEGER NOT NULL,
    hkdf_alg INTEGER NOT NULL,
    aead_alg INTEGER,
    group_enc_alg INTEGER NOT NULL,
    sign_alg INTEGER NOT NULL,
    ecdh_alg INTEGER,
    cred_fmt INTEGER NOT NULL,
    max_sid_len INTEGER NOT NULL,
    policies BLOB NOT NULL,
    backward_security INTEGER NOT NULL,
    active INTEGER NOT NULL,
    stale_sets_kept INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    roles INTEGER NOT NULL,
    credential BLOB,
    sender_id BLOB,
    birth_gid BLOB NOT NULL,
    scope BLOB NOT NULL,
    client_nonce BLOB NOT NULL,
    joined_at REAL NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE UNIQUE INDEX IF NOT EXISTS members_sid ON members (grp, sender_id)
    WHERE sender_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS sid_allocations (
    grp TEXT NOT NULL REFERENCES groups(name),
    gid BLOB NOT NULL,
    sender_id BLOB NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (grp, gid, sender_id)
);
CREATE INDEX IF NOT EXISTS sid_allocations_node ON sid_allocations (grp, gid, node);
CREATE TABLE IF NOT EXISTS sid_cursors (
    grp TEXT PRIMARY KEY REFERENCES groups(name),
    gid BLOB NOT NULL,
    next_index INTEGER NOT NULL,
    relinquished INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS evicted_elders (
    grp TEXT NOT NULL REFERENCES groups(name),
    node TEXT NOT NULL,
    PRIMARY KEY (grp, node)
);
CREATE TABLE IF NOT EXISTS stale_sets (
    grp TEXT NOT NULL REFERENCES groups(name),
    num INTEGER NOT NULL,
    sender_ids BLOB NOT NULL,
    PRIMARY KEY (grp, num)
);
CREATE TABLE IF NOT EXISTS access (
    node TEXT NOT NULL,
    grp TEXT NOT NULL,
    roles INTEGER NOT NULL,
    PRIMARY KEY (node, grp)
);
CREATE TABLE IF NOT EXISTS sequence_numbers (
    key TEXT PRIMARY KEY,
    upto INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS channels (
    node TEXT PRIMARY KEY,
    master_secret BLOB NOT NULL,
    master_salt BLOB NOT NULL,
    gm_sender_id BLOB NOT NULL,
    node_sender_id BLOB NOT NULL UNIQUE,
    id_context BLOB,
    aead_alg INTEGER NOT NULL,
    hkdf_alg INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS edhoc_peers (
    node TEXT PRIMARY KEY,
    credential BLOB NOT NULL UNIQUE,
    kid BLOB
);
"""


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


class Store:
    """Typed access to the GM database. Mutations must run inside :meth:`transaction`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        _prepare_file(self.path)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._init_schema()
        except sqlite3.DatabaseError as e:
            raise ManagerStoreError(f"cannot use database {self.path}: {e}") from None
        self._depth = 0

    def _init_schema(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,)
                )
            elif row[0] == 1:
                self._migrate_from_1()
            elif row[0] != SCHEMA_VERSION:
                raise ManagerStoreError(f"database schema {row[0]!r} is not {SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

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
            held = {r[0] for r in self._all(
                "SELECT sender_id FROM members WHERE grp=? AND sender_id IS NOT NULL", (grp,))}
            gone = sorted({r[0] for r in self._all(
                "SELECT sender_id FROM sid_allocations WHERE grp=? AND gid=?", (grp, gid)
            )} - held)
            self._db.execute(
                "INSERT OR REPLACE INTO stale_sets(grp, num, sender_ids) VALUES (?, ?, ?)",
                (grp, num, cbor2.dumps(gone)),
            )
        self._db.execute("UPDATE meta SET value=? WHERE key='schema'", (SCHEMA_VERSION,))

    def close(self) -> None:
        """Close the connection (committed state is already on disk)."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic state change: everything inside commits together or not at all."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    def _write(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        if not self._depth:
            raise ManagerStoreError("state changes must run inside Store.transaction()")
        return self._db.execute(sql, args)

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
        return row

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return list(self._db.execute(sql, args).fetchall())

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
        self._write(
            "UPDATE groups SET epoch=?, gid=?, master_secret=?, master_salt=?, num=?, exp=? "
            "WHERE name=?",
            (epoch, gid, master_secret, master_salt, num, exp, name),
        )

    def set_group_flags(
        self, name: str, *, active: bool | None = None, backward_security: bool | None = None
    ) -> None:
        """Change the active / backward-security switches of a group."""
        if active is not None:
            self._write("UPDATE groups SET active=? WHERE name=?", (int(active), name))
        if backward_security is not None:
            self._write(
                "UPDATE groups SET backward_security=? WHERE name=?",
                (int(backward_security), name),
            )

    def set_policies(self, name: str, policies: bytes) -> None:
        """Replace the CBOR-encoded group policies."""
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
        self._write(
            f"INSERT OR REPLACE INTO members({_MEMBER_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                m.group, m.node, m.roles, m.credential, m.sender_id, m.birth_gid, m.scope,
                m.client_nonce, m.joined_at,
            ),
        )  # fmt: skip

    def delete_member(self, group: str, node: str) -> None:
        """End a membership."""
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
        self._write(
            "INSERT OR REPLACE INTO sid_cursors(grp, gid, next_index, relinquished) "
            "VALUES (?, ?, ?, ?)",
            (group, gid, next_index, relinquished),
        )

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
        self._write(
            "INSERT OR REPLACE INTO stale_sets(grp, num, sender_ids) VALUES (?, ?, ?)",
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
            self._write(
                "INSERT OR REPLACE INTO access(node, grp, roles) VALUES (?, ?, ?)",
                (node, group, roles),
            )
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
        self._write(
            f"INSERT OR REPLACE INTO channels({_CHANNEL_COLS}) VALUES (?,?,?,?,?,?,?,?)",
            (
                c.node, c.master_secret, c.master_salt, c.gm_sender_id, c.node_sender_id,
                c.id_context, c.aead_alg, c.hkdf_alg,
            ),
        )  # fmt: skip

    # --- EDHOC (the GM's identity in meta, the nodes' credentials) -----------------------

    def edhoc_identity(self) -> tuple[bytes, bytes] | None:
        """(private key d, CCS credential) of the GM's EDHOC identity, if made yet."""
        d = self._one("SELECT value FROM meta WHERE key='edhoc_private_key'")
        cred = self._one("SELECT value FROM meta WHERE key='edhoc_credential'")
        return None if d is None or cred is None else (d[0], cred[0])

    def put_edhoc_identity(self, d: bytes, credential: bytes) -> None:
        """Store the GM's EDHOC key and credential (first one wins)."""
        self._write("INSERT INTO meta(key, value) VALUES ('edhoc_private_key', ?)", (d,))
        self._write("INSERT INTO meta(key, value) VALUES ('edhoc_credential', ?)", (credential,))

    def edhoc_peers(self) -> list[tuple[str, bytes, bytes | None]]:
        """Every (node, CCS credential, kid) registered for EDHOC."""
        return [
            (r[0], r[1], r[2])
            for r in self._all("SELECT node, credential, kid FROM edhoc_peers ORDER BY node")
        ]

    def put_edhoc_peer(self, node: str, credential: bytes, kid: bytes | None) -> None:
        """Register (or replace) ``node``'s EDHOC credential."""
        self._write(
            "INSERT OR REPLACE INTO edhoc_peers(node, credential, kid) VALUES (?, ?, ?)",
            (node, credential, kid),
        )

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
            self._write(
                "INSERT OR REPLACE INTO sequence_numbers(key, upto) VALUES (?, ?)", (key, upto)
            )

    def forget_sequence(self, key: str) -> None:
        """Drop the reservation of a sender whose keys are gone for good (they never come
        back, so neither can a nonce reuse)."""
        self._write("DELETE FROM sequence_numbers WHERE key=?", (key,))

    # --- whole-state view ---------------------------------------------------------------

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows in a stable order: what 'same state after restart' compares."""
        tables = ("meta", "gm_keys", "groups", "members", "sid_allocations", "sid_cursors",
                  "evicted_elders", "stale_sets", "access", "channels",
                  "edhoc_peers", "sequence_numbers")  # fmt: skip
        return {t: self._all(f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
