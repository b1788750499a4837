"""The per-node tables of the GM store: OSCORE channels, EDHOC credentials, sender
sequence numbers, proof-of-possession challenges and the request Partial IVs that GM
processes on one database share.

None of this belongs to a group; it is what the GM keeps about the nodes it talks to.
"""

from __future__ import annotations

from grouposcore.manager.store.records import CHANNEL_COLS, ChannelMaterial
from grouposcore.manager.store.txn import StoreCore

__all__ = ["NodeStore"]


class NodeStore(StoreCore):
    """Channels, EDHOC peers, sequence numbers, challenges and request replay state."""

    # --- channels -----------------------------------------------------------------------

    def channel(self, node: str) -> ChannelMaterial | None:
        """The commissioned OSCORE channel material of ``node``."""
        row = self._one(f"SELECT {CHANNEL_COLS} FROM channels WHERE node=?", (node,))
        return None if row is None else ChannelMaterial(*row)

    def channel_by_sender_id(self, node_sender_id: bytes) -> ChannelMaterial | None:
        """The channel whose node uses ``node_sender_id`` (the kid the GM receives)."""
        row = self._one(
            f"SELECT {CHANNEL_COLS} FROM channels WHERE node_sender_id=?", (node_sender_id,)
        )
        return None if row is None else ChannelMaterial(*row)

    def channel_count(self) -> int:
        """How many nodes have a channel (one COUNT over the table)."""
        row = self._one("SELECT COUNT(*) FROM channels")
        return 0 if row is None else int(row[0])

    def channels(self) -> list[ChannelMaterial]:
        """Every commissioned channel."""
        return [
            ChannelMaterial(*r)
            for r in self._all(f"SELECT {CHANNEL_COLS} FROM channels ORDER BY node")
        ]

    def put_channel(self, c: ChannelMaterial) -> None:
        """Insert or replace a node's channel material."""
        self._announce()
        self._upsert(
            "channels", CHANNEL_COLS, "node",
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
        self._write(
            "INSERT INTO edhoc_identity(one, private_key, credential) VALUES (1, ?, ?) "
            "ON CONFLICT (one) DO NOTHING",
            (d, credential),
        )

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

    def claim_many(self, keys: list[str], count: int) -> dict[str, int]:
        """:meth:`claim` for several senders in one transaction (one commit for a whole
        batch of notifications instead of one per member)."""
        firsts: dict[str, int] = {}
        with self.transaction():
            for key in keys:
                first = firsts[key] = self.load(key) or 0
                self._upsert("sequence_numbers", "key, upto", "key", (key, first + count),
                             visible=False)  # fmt: skip
        return firsts

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
