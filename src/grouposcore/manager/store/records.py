"""The records the GM store hands out, and how they map to table rows.

Frozen dataclasses, so a record read in one transaction cannot be changed behind the store's
back; the column lists name the columns in the order of the fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grouposcore.cose import hkdf_by_id
from grouposcore.oscore import SecurityContext, SenderSequence

__all__ = [
    "CHANNEL_COLS",
    "GROUP_COLS",
    "MEMBER_COLS",
    "AccessEntry",
    "ChannelMaterial",
    "GroupRecord",
    "MemberRecord",
    "group_from_row",
]


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
        self,
        *,
        as_gm: bool,
        sequence: SenderSequence | None = None,
        replay_window_valid: bool = True,
    ) -> SecurityContext:
        """The channel's OSCORE context as the GM (``as_gm``) or as the node sees it: the
        same material, with Sender and Recipient ID swapped."""
        own, peer = (
            (self.gm_sender_id, self.node_sender_id)
            if as_gm
            else (self.node_sender_id, self.gm_sender_id)
        )
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


GROUP_COLS = (
    "name, gid_prefix, epoch, epoch_len, gid, master_secret, master_salt, num, exp, lifetime, "
    "hkdf_alg, aead_alg, group_enc_alg, sign_alg, ecdh_alg, cred_fmt, max_sid_len, policies, "
    "backward_security, active, stale_sets_kept, created_at"
)
MEMBER_COLS = "grp, node, roles, credential, sender_id, birth_gid, scope, client_nonce, joined_at"
CHANNEL_COLS = (
    "node, master_secret, master_salt, gm_sender_id, node_sender_id, id_context, aead_alg, hkdf_alg"
)


def group_from_row(row: tuple[Any, ...]) -> GroupRecord:
    """A groups row (GROUP_COLS order) as a record; the flags are stored as integers."""
    r = list(row)
    r[18] = bool(r[18])
    r[19] = bool(r[19])
    return GroupRecord(*r)
