"""The bodies the Group Manager sends: keying material, rekeying messages, verifier data,
credential lists, and its own proof of possession.

Each message carries exactly the fields its specification lists (digest §15.2), so the
builders live together and the differences between them stay visible: a Join Response and
GET /ace-group/GROUPNAME carry the full Group_OSCORE_Input_Material; a rekeying message only
what changes (ms, contextId, salt) plus the stale Sender IDs; /verif-data everything a
signature verifier needs except the keys that decrypt.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from grouposcore.cose import aead_by_id, hkdf_by_id, private_key_from_bytes, signature_by_id
from grouposcore.errors import ManagerError, ManagerMessageError
from grouposcore.manager.params import (
    GKTY_GROUP_OSCORE,
    PROFILE_COAP_GROUP_OSCORE,
    KeyParam,
    Param,
    Role,
    bstr_cbor,
    expect_array,
    expect_bool,
    expect_bytes,
    expect_int,
    expect_map,
    loads_strict,
    roles_from_tperm,
)
from grouposcore.manager.store import GroupRecord, MemberRecord, Store
from grouposcore.oscore.common import derive

__all__ = [
    "MAX_SID_BYTES",
    "N_KDC_LEN",
    "GetCreds",
    "creds_fields",
    "ecdh_params_for",
    "fetch_filter",
    "kdc_pop",
    "material_body",
    "parse_get_creds",
    "rekeying_body",
    "relevant_peers",
    "select",
    "sign_params_for",
    "verif_data_body",
]

MAX_SID_BYTES = 7  # 13-byte AEAD nonce - 6; shorter nonces lower it further
N_KDC_LEN = 16


def sign_params_for(sign_alg: int) -> list[list[int]]:
    """'sign_params' of the Group_OSCORE_Input_Material: [[kty], [kty, crv]]."""
    alg = signature_by_id(sign_alg)
    return [[alg.kty], [alg.kty, alg.crv]]


def ecdh_params_for(sign_alg: int) -> list[list[int]]:
    """'ecdh_params': members use their signing key for ECDH too (Ed25519 -> X25519)."""
    alg = signature_by_id(sign_alg)
    return [[1], [1, 4]] if alg.kty == 1 else [[alg.kty], [alg.kty, alg.crv]]


def _envelope(g: GroupRecord, key: Mapping[int, Any], now: float) -> dict[int, Any]:
    return {
        Param.GKTY: GKTY_GROUP_OSCORE,
        Param.KEY: dict(sorted(key.items())),
        Param.NUM: g.num,
        Param.EXP: g.exp,
        Param.EXI: max(0, g.exp - int(now)),
        Param.ACE_GROUPCOMM_PROFILE: PROFILE_COAP_GROUP_OSCORE,
    }


def _algorithms(g: GroupRecord) -> dict[int, Any]:
    key: dict[int, Any] = {
        KeyParam.HKDF: g.hkdf_alg,
        KeyParam.CONTEXT_ID: g.gid,
        KeyParam.CRED_FMT: g.cred_fmt,
        KeyParam.GP_ENC_ALG: g.group_enc_alg,
        KeyParam.SIGN_ALG: g.sign_alg,
        KeyParam.SIGN_PARAMS: sign_params_for(g.sign_alg),
    }
    if g.aead_alg is not None:
        key[KeyParam.ALG] = g.aead_alg
    if g.ecdh_alg is not None:
        key[KeyParam.ECDH_ALG] = g.ecdh_alg
    return key


def material_body(g: GroupRecord, member: MemberRecord | None, now: float) -> dict[int, Any]:
    """Join Response / key distribution: the full material; with ``member``, its Sender ID."""
    key = _algorithms(g)
    key[KeyParam.MS] = g.master_secret
    key[KeyParam.SALT] = g.master_salt
    if g.ecdh_alg is not None:
        key[KeyParam.ECDH_PARAMS] = ecdh_params_for(g.sign_alg)
    if member is not None and member.sender_id is not None:
        key[KeyParam.GROUP_SENDER_ID] = member.sender_id
    body = _envelope(g, key, now)
    body[Param.GROUP_POLICIES] = loads_strict(g.policies, "stored policies")
    return body


def rekeying_body(g: GroupRecord, stale: Iterable[bytes], now: float) -> dict[int, Any]:
    """A Point-to-Point rekeying message: only what changed, and the stale Sender IDs.

    gkty, key {ms, contextId, salt}, num, exp, exi, ace_groupcomm_profile, stale_node_ids;
    the algorithms and policies stay as the member learnt them when it joined.
    """
    key: dict[int, Any] = {
        KeyParam.MS: g.master_secret,
        KeyParam.CONTEXT_ID: g.gid,
        KeyParam.SALT: g.master_salt,
    }
    body = _envelope(g, key, now)
    body[Param.STALE_NODE_IDS] = sorted(stale)
    return body


def verif_data_body(g: GroupRecord, now: float) -> dict[int, Any]:
    """GET /verif-data: what checks group-mode signatures, nothing that decrypts.

    The key object has no Master Secret, no Salt and no Sender ID; 'sign_enc_key' carries the
    Signature Encryption Key, which only unmasks the countersignature.
    """
    body = _envelope(g, _algorithms(g), now)
    enc = aead_by_id(g.group_enc_alg)
    body[Param.SIGN_ENC_KEY] = derive(
        hkdf_by_id(g.hkdf_alg),
        g.master_secret,
        g.master_salt,
        b"",
        g.gid,
        enc.id,
        "SEKey",
        enc.key_len,
    )
    return body


def kdc_pop(store: Store, g: GroupRecord, client_nonce: bytes, n_kdc: bytes) -> dict[int, Any]:
    """kdc_cred, kdc_nonce and the GM's signature over bstr(N_C) | bstr(N_KDC)."""
    if len(n_kdc) < 8:
        raise ManagerError("N_KDC must be at least 8 bytes")
    key = store.gm_key(g.sign_alg)
    if key is None:
        raise ManagerError(f"no GM key for signature algorithm {g.sign_alg}")
    alg = signature_by_id(g.sign_alg)
    signature = alg.sign(private_key_from_bytes(key[0]), bstr_cbor(client_nonce) + bstr_cbor(n_kdc))
    return {Param.KDC_CRED: key[1], Param.KDC_NONCE: n_kdc, Param.KDC_CRED_VERIFY: signature}


# --- credential selection ------------------------------------------------------------------


@dataclass(frozen=True)
class GetCreds:
    """A parsed 'get_creds' filter: [inclusion_flag, role_filter, id_filter]."""

    inclusion: bool
    role_filter: tuple[int, ...]
    id_filter: frozenset[bytes]


def parse_get_creds(value: Any) -> GetCreds:
    """The 'get_creds' triple (not null), bounded and type-checked."""
    triple = expect_array(value, "'get_creds'", max_len=3)
    if len(triple) != 3:
        raise ManagerMessageError("'get_creds' must be [inclusion_flag, roles, ids]")
    inclusion = expect_bool(triple[0], "'inclusion_flag'")
    roles = []
    for t in expect_array(triple[1], "'role_filter'", max_len=16):
        roles_from_tperm(expect_int(t, "role filter entry", lo=1, hi=1 << 16))
        roles.append(t)
    ids = frozenset(
        expect_bytes(i, "'id_filter' entry", max_len=MAX_SID_BYTES)
        for i in expect_array(triple[2], "'id_filter'", max_len=1024)
    )
    return GetCreds(inclusion, tuple(roles), ids)


def fetch_filter(body: Any) -> GetCreds:
    """The body of FETCH /creds: a map whose 'get_creds' has at least one non-empty filter."""
    req = expect_map(body, "credentials request")
    f = parse_get_creds(req.get(Param.GET_CREDS))
    if not f.role_filter and not f.id_filter:
        raise ManagerMessageError("'role_filter' and 'id_filter' cannot both be empty")
    return f


def select(members: list[MemberRecord], f: GetCreds) -> list[MemberRecord]:
    """RFC 9594 §4.4.1 selection: role match (all roles of one entry) and/or id match."""

    def role_match(m: MemberRecord) -> bool:
        return any(m.roles & t == t for t in f.role_filter)

    out = []
    for m in members:
        if m.sender_id is None:
            continue
        in_ids = m.sender_id in f.id_filter
        if f.inclusion:
            ok = (bool(f.role_filter) and role_match(m)) or in_ids
        else:
            ok = (not f.role_filter or role_match(m)) and not in_ids
        if ok:
            out.append(m)
    return out


def relevant_peers(members: list[MemberRecord], joiner_roles: int) -> list[MemberRecord]:
    """'get_creds' null in a Join Request: the members this joiner will hear from.

    A Requester gets the Responders' credentials (it verifies their responses); a Responder
    or a Monitor gets the Requesters' (it verifies their requests).
    """
    wanted = 0
    if joiner_roles & (1 << Role.REQUESTER):
        wanted |= 1 << Role.RESPONDER
    if joiner_roles & ((1 << Role.RESPONDER) | (1 << Role.MONITOR)):
        wanted |= 1 << Role.REQUESTER
    return [m for m in members if m.sender_id is not None and m.roles & wanted]


def creds_fields(members: list[MemberRecord], num: int | None) -> dict[int, Any]:
    """creds / peer_roles / peer_identifiers of ``members`` (with 'num' when given)."""
    chosen = [m for m in members if m.credential is not None and m.sender_id is not None]
    out: dict[int, Any] = {
        Param.CREDS: [m.credential for m in chosen],
        Param.PEER_ROLES: [m.roles for m in chosen],
        Param.PEER_IDENTIFIERS: [m.sender_id for m in chosen],
    }
    if num is not None:
        out[Param.NUM] = num
    return out
