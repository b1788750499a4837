"""The store interface of the Group Manager: :class:`Store`, the typed access to its database.

The store is split along its seams: :mod:`.schema` (the tables), :mod:`.records` (the
records and their rows), :mod:`.txn` (backend primitives and transactions: why every change
is one serialised transaction is told there), :mod:`.nodes` (per-node state: channels,
EDHOC, sequence numbers, challenges) and this module, the group state (GM keys, groups,
members, Sender IDs, stale sets, the access list and administrators).
"""

from __future__ import annotations

from typing import Any

import cbor2

from grouposcore.cose import Credential, public_key_bytes
from grouposcore.manager.store.nodes import NodeStore
from grouposcore.manager.store.records import (
    GROUP_COLS,
    MEMBER_COLS,
    AccessEntry,
    ChannelMaterial,
    GroupRecord,
    MemberRecord,
    group_from_row,
)
from grouposcore.manager.store.schema import SCHEMA_VERSION, schema_statements

__all__ = [
    "SCHEMA_VERSION",
    "AccessEntry",
    "ChannelMaterial",
    "GroupRecord",
    "MemberRecord",
    "Store",
    "schema_statements",
]


def credential_key(credential: bytes) -> bytes:
    """The public key a stored credential holds (the identity of a member, digest §8.3)."""
    return public_key_bytes(Credential.from_ccs(credential).public_key)


class Store(NodeStore):
    """Typed access to the GM database. Mutations must run inside :meth:`transaction`.

    A backend implements the connection-level primitives (``_execute``, ``_begin``,
    ``_commit``, ``_rollback``) of :class:`~grouposcore.manager.store.txn.StoreCore`;
    everything else is shared. ``failures`` are the backend's exception types that mean "the
    database failed" (the GM answers 5.00 to a request that hits one and changes nothing).
    """

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
        row = self._one(f"SELECT {GROUP_COLS} FROM groups WHERE name=?", (name,))
        return None if row is None else group_from_row(row)

    def groups(self) -> list[GroupRecord]:
        """All groups, by name."""
        rows = self._all(f"SELECT {GROUP_COLS} FROM groups ORDER BY name")
        return [group_from_row(r) for r in rows]

    def group_by_gid(self, gid: bytes) -> GroupRecord | None:
        """The group whose current Gid is ``gid``."""
        row = self._one(f"SELECT {GROUP_COLS} FROM groups WHERE gid=?", (gid,))
        return None if row is None else group_from_row(row)

    def gid_prefixes(self) -> set[bytes]:
        """Every Gid prefix in use (each group owns one, which keeps Gids unique per GM)."""
        return {r[0] for r in self._all("SELECT gid_prefix FROM groups")}

    def insert_group(self, g: GroupRecord) -> None:
        """Create a group row."""
        self._announce()
        self._write(
            f"INSERT INTO groups({GROUP_COLS}) VALUES ({','.join('?' * 22)})",
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
        for table in ("member_keys", "members", "sid_allocations", "sid_cursors",
                      "evicted_elders", "stale_sets", "access", "group_info"):  # fmt: skip
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
        row = self._one(f"SELECT {MEMBER_COLS} FROM members WHERE grp=? AND node=?", (group, node))
        return None if row is None else MemberRecord(*row)

    def members(self, group: str) -> list[MemberRecord]:
        """Current members of ``group``, by node name."""
        rows = self._all(f"SELECT {MEMBER_COLS} FROM members WHERE grp=? ORDER BY node", (group,))
        return [MemberRecord(*r) for r in rows]

    def upsert_member(self, m: MemberRecord) -> None:
        """Insert or replace one membership."""
        self._upsert(
            "members", MEMBER_COLS, "grp, node",
            (
                m.group, m.node, m.roles, m.credential, m.sender_id, m.birth_gid, m.scope,
                m.client_nonce, m.joined_at,
            ),
        )  # fmt: skip
        self._set_member_key(m.group, m.node, m.credential)

    def delete_member(self, group: str, node: str) -> None:
        """End a membership."""
        self._announce()
        self._write("DELETE FROM members WHERE grp=? AND node=?", (group, node))
        self._write("DELETE FROM member_keys WHERE grp=? AND node=?", (group, node))

    def set_member_credential(self, group: str, node: str, credential: bytes) -> None:
        """Replace a member's authentication credential."""
        self._write(
            "UPDATE members SET credential=? WHERE grp=? AND node=?", (credential, group, node)
        )
        self._set_member_key(group, node, credential)

    def nodes_with_key(self, group: str, public_key: bytes) -> list[str]:
        """The members of ``group`` whose credential holds ``public_key`` (one index lookup,
        so a join's "is this key someone else's" check does not grow with the group)."""
        rows = self._all("SELECT node FROM member_keys WHERE grp=? AND public_key=? "
                         "ORDER BY node", (group, public_key))  # fmt: skip
        return [str(r[0]) for r in rows]

    def _set_member_key(self, group: str, node: str, credential: bytes | None) -> None:
        """Keep the member_keys index in step with the member's credential."""
        if credential is None:
            self._write("DELETE FROM member_keys WHERE grp=? AND node=?", (group, node))
            return
        self._upsert("member_keys", "grp, node, public_key", "grp, node",
                     (group, node, credential_key(credential)))  # fmt: skip

    def _migrate_from_2(self) -> None:
        """Schema 3 adds the member_keys index: (re)fill it from the stored credentials."""
        self._execute("DELETE FROM member_keys", ())
        rows = self._all("SELECT grp, node, credential FROM members "
                         "WHERE credential IS NOT NULL")  # fmt: skip
        for grp, node, credential in rows:
            self._execute(
                "INSERT INTO member_keys(grp, node, public_key) VALUES (?, ?, ?)",
                (grp, node, credential_key(bytes(credential))),
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

    def carry_allocations(self, group: str, gid: bytes) -> None:
        """Record every current member's Sender ID as taken under ``gid`` (a rekeying keeps
        them), in one statement however large the group."""
        self._write(
            "INSERT INTO sid_allocations(grp, gid, sender_id, node) "
            "SELECT grp, ?, sender_id, node FROM members WHERE grp=? AND sender_id IS NOT NULL",
            (gid, group),
        )

    def drop_allocations(self, group: str, except_gid: bytes) -> None:
        """Forget allocations of Gids that are no longer current."""
        self._write("DELETE FROM sid_allocations WHERE grp=? AND gid<>?", (group, except_gid))

    def sid_allocated(self, group: str, gid: bytes, sender_id: bytes) -> bool:
        """Whether ``sender_id`` was handed out under ``gid`` (one index lookup)."""
        return (
            self._one(
                "SELECT 1 FROM sid_allocations WHERE grp=? AND gid=? AND sender_id=?",
                (group, gid, sender_id),
            )
            is not None
        )

    def allocations_of(self, group: str, gid: bytes, node: str) -> int:
        """How many Sender IDs ``node`` was given under ``gid`` (join, re-joins, renewals)."""
        row = self._one(
            "SELECT COUNT(*) FROM sid_allocations WHERE grp=? AND gid=? AND node=?",
            (group, gid, node),
        )
        return 0 if row is None else int(row[0])

    def sid_cursor(self, group: str, gid: bytes) -> tuple[int, int]:
        """(next candidate index, IDs relinquished) under ``gid``; (0, 0) for a fresh Gid."""
        row = self._one(
            "SELECT gid, next_index, relinquished FROM sid_cursors WHERE grp=?", (group,)
        )
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
            "stale_sets",
            "grp, num, sender_ids",
            "grp, num",
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

    # --- whole-state view ---------------------------------------------------------------

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows in a stable order: what 'same state after restart' compares."""
        tables = ("meta", "gm_keys", "groups", "members", "member_keys", "sid_allocations",
                  "sid_cursors", "evicted_elders", "stale_sets", "access", "channels",
                  "edhoc_peers", "edhoc_identity", "admins", "group_info",
                  "sequence_numbers")  # fmt: skip
        return {t: self._all(f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
