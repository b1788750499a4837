"""A member's state file: the keying material, keys and join parameters of one membership,
kept on disk (0600) so that a restarted member resumes without a new join.

Split from :mod:`grouposcore.manager.member` (the GM messages a member builds and parses),
along the seam between the wire format and the file format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from grouposcore._files import exclusive_file
from grouposcore.cose import (
    Credential,
    private_key_from_bytes,
    private_key_to_bytes,
    signature_by_id,
)
from grouposcore.errors import GroupOscoreError, ManagerError, ManagerMessageError
from grouposcore.manager.member import (
    _MAX_SID,
    GroupKeyingMaterial,
    PeerInfo,
    group_context,
)
from grouposcore.manager.params import (
    Role,
    dumps,
    expect_array,
    expect_bytes,
    expect_int,
    expect_map,
    expect_text,
    loads_strict,
    roles_from_tperm,
)
from grouposcore.manager.secretfile import read_private_file, write_private_file
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.sequence import (
    MAX_SEQUENCE_NUMBER,
    FileSequenceStore,
    SenderSequence,
    SequenceNumberStore,
)

__all__ = [
    "MemberKeys",
    "MemberState",
    "context_from_state_file",
    "decode_state",
    "encode_state",
    "load_member_state",
    "load_state",
    "member_sequence",
    "save_state",
    "sequence_key",
]

_STATE_VERSION = 1


@dataclass(frozen=True)
class MemberState:
    """What a member needs to come back into its group after a restart without re-joining.

    ``private_key`` is the private COSE_Key bytes (cose ``private_key_to_bytes``);
    ``ssn_reserved`` is the first Sender Sequence Number not yet reserved, so a restarted
    member never reuses a nonce.
    """

    node: str
    material: GroupKeyingMaterial
    private_key: bytes | None
    credential: bytes | None
    scope: bytes
    client_nonce: bytes
    ssn_reserved: int = 0


@dataclass
class MemberKeys:
    """The member's own part of its state: key pair (a key object and its credential) and
    the join's scope and client nonce, with where each comes from (a join, the state file)."""

    private_key: Any = None
    credential: bytes | None = None
    scope: bytes = b""
    client_nonce: bytes = b""

    def keep_key(self, state: MemberState) -> None:
        """A re-join (other roles, or after the GM forgot the member) keeps the key pair of
        the state file, unless one was given."""
        if state.private_key is not None and self.private_key is None:
            self.private_key = private_key_from_bytes(state.private_key)
            self.credential = state.credential

    def resume(self, state: MemberState) -> None:
        """Take over everything the state file kept (the membership goes on)."""
        self.scope, self.client_nonce = state.scope, state.client_nonce
        if state.private_key is not None:
            self.private_key = private_key_from_bytes(state.private_key)
        self.credential = state.credential

    def for_join(self, roles: int, sign_alg: int, node: str) -> None:
        """Before a join: a monitor has no key pair; anyone else keeps its key or gets a
        new one of ``sign_alg``, with a CCS naming ``node``."""
        if roles_from_tperm(roles) == frozenset({Role.MONITOR}):
            self.private_key, self.credential = None, None
        elif self.private_key is None:
            alg = signature_by_id(sign_alg)
            self.private_key = alg.generate_private_key()
            self.credential = Credential.build_ccs(self.private_key.public_key(), alg.id, node).raw

    def state(self, node: str, material: GroupKeyingMaterial, reserved: int) -> MemberState:
        """The state file's contents for ``material``; ``reserved``: see MemberState."""
        key = None if self.private_key is None else private_key_to_bytes(self.private_key)
        return MemberState(
            node=node, material=material, private_key=key, credential=self.credential,
            scope=self.scope or b"\x80", client_nonce=self.client_nonce,
            ssn_reserved=reserved,
        )  # fmt: skip


_MATERIAL_KEYS = (
    "group", "master_secret", "master_salt", "gid", "hkdf_alg", "aead_alg", "group_enc_alg",
    "sign_alg", "sign_params", "ecdh_alg", "ecdh_params", "cred_fmt", "gm_credential",
    "sender_id", "roles", "num", "exp",
)  # fmt: skip


def encode_state(state: MemberState) -> bytes:
    """CBOR form of the state file."""
    m = state.material
    material = {k: getattr(m, k) for k in _MATERIAL_KEYS}
    material["peers"] = [[sid, p.credential, p.roles] for sid, p in sorted(m.peers.items())]
    return dumps(
        {
            "version": _STATE_VERSION,
            "node": state.node,
            "material": material,
            "private_key": state.private_key,
            "credential": state.credential,
            "scope": state.scope,
            "client_nonce": state.client_nonce,
            "ssn_reserved": state.ssn_reserved,
        }
    )


def _opt(value: Any, check: Any, *args: Any, **kwargs: Any) -> Any:
    return None if value is None else check(value, *args, **kwargs)


def decode_state(data: bytes) -> MemberState:
    """Inverse of :func:`encode_state`; ManagerMessageError on anything unexpected."""
    top = expect_map(loads_strict(data, "member state"), "member state")
    if top.get("version") != _STATE_VERSION:
        raise ManagerMessageError("unknown member state version")
    raw = expect_map(top.get("material"), "'material'")
    alg = (-(1 << 31), 1 << 31)
    material = GroupKeyingMaterial(
        group=expect_text(raw.get("group"), "'group'", max_len=64),
        master_secret=expect_bytes(raw.get("master_secret"), "'master_secret'", min_len=1),
        master_salt=expect_bytes(raw.get("master_salt"), "'master_salt'"),
        gid=expect_bytes(raw.get("gid"), "'gid'", max_len=16),
        hkdf_alg=expect_int(raw.get("hkdf_alg"), "'hkdf_alg'", lo=alg[0], hi=alg[1]),
        aead_alg=_opt(raw.get("aead_alg"), expect_int, "'aead_alg'", lo=alg[0], hi=alg[1]),
        group_enc_alg=_opt(raw.get("group_enc_alg"), expect_int, "'group_enc_alg'"),
        sign_alg=_opt(raw.get("sign_alg"), expect_int, "'sign_alg'", lo=alg[0], hi=alg[1]),
        sign_params=_opt(raw.get("sign_params"), expect_array, "'sign_params'"),
        ecdh_alg=_opt(raw.get("ecdh_alg"), expect_int, "'ecdh_alg'", lo=alg[0], hi=alg[1]),
        ecdh_params=_opt(raw.get("ecdh_params"), expect_array, "'ecdh_params'"),
        cred_fmt=expect_int(raw.get("cred_fmt"), "'cred_fmt'", lo=0),
        gm_credential=expect_bytes(raw.get("gm_credential"), "'gm_credential'", min_len=1),
        sender_id=_opt(raw.get("sender_id"), expect_bytes, "'sender_id'", max_len=_MAX_SID),
        roles=expect_int(raw.get("roles"), "'roles'", lo=0),
        num=expect_int(raw.get("num"), "'num'", lo=0),
        exp=_opt(raw.get("exp"), expect_int, "'exp'", lo=0),
        peers={},
    )
    peers: dict[bytes, PeerInfo] = {}
    for entry in expect_array(raw.get("peers"), "'peers'"):
        item = expect_array(entry, "peer entry", max_len=3)
        if len(item) != 3:
            raise ManagerMessageError("peer entries are [sid, credential, roles]")
        sid = expect_bytes(item[0], "peer Sender ID", max_len=_MAX_SID)
        peers[sid] = PeerInfo(
            expect_bytes(item[1], "peer credential", min_len=1),
            expect_int(item[2], "peer roles", lo=0),
        )
    return MemberState(
        node=expect_text(top.get("node"), "'node'", max_len=64),
        material=replace(material, peers=peers),
        private_key=_opt(top.get("private_key"), expect_bytes, "'private_key'"),
        credential=_opt(top.get("credential"), expect_bytes, "'credential'"),
        scope=expect_bytes(top.get("scope"), "'scope'", min_len=1),
        client_nonce=expect_bytes(top.get("client_nonce"), "'client_nonce'"),
        ssn_reserved=expect_int(top.get("ssn_reserved"), "'ssn_reserved'", lo=0),
    )


def save_state(path: str | os.PathLike[str], state: MemberState) -> bool:
    """Write the state file atomically, mode 0600 (it holds the Master Secret and own key),
    unless it holds newer keying material of the same node and group; whether it wrote.

    Two processes may share one state file (``serve``, and a one-shot ``get --security``
    of the same member): the one that caught up with the Group Manager last must not have
    its keys overwritten by the other's older ones. The check and the write hold the
    file's lock (``PATH.lock``), so two writers cannot interleave between them."""
    target = Path(path)
    with exclusive_file(target):
        if target.exists():
            try:
                stored = load_state(target)
            except (GroupOscoreError, OSError):
                stored = None  # unreadable: ours replaces it
            if (
                stored is not None
                and stored.node == state.node
                and stored.material.group == state.material.group
                and stored.material.num > state.material.num
            ):
                return False
        write_private_file(target, encode_state(state), prefix=".member-")
    return True


def load_state(path: str | os.PathLike[str]) -> MemberState:
    """Read a state file written by :func:`save_state`; ManagerMessageError if it is
    missing or unreadable, or if other users can read or write it (its secrets are no
    longer the member's: the message names the chmod to run)."""
    return decode_state(read_private_file(path, "member state file"))


def load_member_state(path: str | os.PathLike[str], node: str, group: str) -> MemberState | None:
    """The state file of ``node``'s membership in ``group``, or None if there is none;
    ManagerError if the file belongs to another node or group."""
    if not os.path.exists(path):
        return None
    state = load_state(path)
    if state.node != node or state.material.group != group:
        raise ManagerError(f"{path} belongs to {state.node!r} in {state.material.group!r}")
    return state


def member_sequence(
    material: GroupKeyingMaterial,
    store: SequenceNumberStore,
    step: int = 256,
    *,
    limit: int = MAX_SEQUENCE_NUMBER,
) -> SenderSequence | None:
    """The member's Sender Sequence Number for this material, reserved in ``store`` (one
    key per group, Gid and Sender ID, so numbers restart only with new keys); ``limit`` is
    the last number it may use."""
    key = sequence_key(material)
    if key is None:
        return None
    return SenderSequence(store=store, key=key, step=step, limit_max=limit)


def sequence_key(material: GroupKeyingMaterial) -> str | None:
    """The member's key in its sequence store (None: a monitor, which never sends)."""
    if material.sender_id is None:
        return None
    return f"group/{material.group}/{material.gid.hex()}/{material.sender_id.hex()}"


def context_from_state_file(
    path: str | os.PathLike[str], *, replay_windows_valid: bool = False, **overrides: Any
) -> GroupContext:
    """The group context a member's state file (``grouposcore join --state``) describes,
    for one-shot tools that do not follow the Group Manager: the sequence numbers continue
    from the same reservation file a :class:`GroupMember` uses (``PATH.seq``), so the two
    never reuse a nonce between them.

    The file keeps no replay state, so the windows start invalid (a peer's first request
    goes through Echo) unless the caller says otherwise: valid windows at 0 would deliver
    every request recorded earlier under these keys once more (RFC 10021 §2.6.1.2)."""
    state = load_state(path)  # refuses a file other users can read or write
    sequence = member_sequence(state.material, FileSequenceStore(str(path) + ".seq"))
    return group_context(
        state.material,
        private_key=state.private_key,
        credential=state.credential,
        sequence=sequence,
        replay_windows_valid=replay_windows_valid,
        **overrides,
    )
