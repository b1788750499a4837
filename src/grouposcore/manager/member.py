"""The joining node's side of the Group Manager interface, sans-I/O.

Builds Join Requests (scope, cnonce, credential and the PoP signature), checks the GM's own
proof of possession, and turns the GM's answers (join response, rekeying notifications,
/creds, /stale-sids, key renewal) into a :class:`GroupKeyingMaterial` that holds everything a
Group OSCORE Common Context needs. The member's persistent state file is also defined here.

Flow against :class:`~grouposcore.manager.core.GroupManager` (digest §15.3 variant):

1. ``build_join_request(..., challenge=None)`` → POST → 4.00 with ``kdcchallenge``
   (:func:`parse_challenge`); monitors skip this, they need no credential;
2. ``build_join_request(..., challenge=N_S)`` → POST → 2.01 → :func:`parse_join_response`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from grouposcore.cose import (
    Credential,
    aead_by_id,
    hkdf_by_id,
    key_agreement_by_id,
    private_key_from_bytes,
    signature_by_id,
)
from grouposcore.errors import (
    CoseError,
    GroupManagerRequestError,
    ManagerMessageError,
    MembershipTerminated,
)
from grouposcore.manager.params import (
    CF_PROBLEM_DETAILS,
    GKTY_GROUP_OSCORE,
    PROFILE_COAP_GROUP_OSCORE,
    Code,
    ErrorId,
    KeyParam,
    Param,
    Role,
    bstr_cbor,
    decode_problem_details,
    dumps,
    encode_scope,
    expect_array,
    expect_bytes,
    expect_int,
    expect_map,
    loads_strict,
    roles_from_tperm,
    tperm,
)
from grouposcore.oscore.group import CredentialProvider, GroupContext
from grouposcore.oscore.sequence import (
    SenderSequence,
)

__all__ = [
    "Challenge",
    "GroupKeyingMaterial",
    "PeerInfo",
    "PendingJoin",
    "VerificationData",
    "apply_stale",
    "build_cred_update",
    "build_creds_fetch",
    "build_join_request",
    "build_kdc_cred_fetch",
    "build_stale_sids_request",
    "group_context",
    "handle_notification",
    "parse_challenge",
    "parse_creds",
    "parse_error",
    "parse_join_response",
    "parse_kdc_cred",
    "parse_key_renewal",
    "parse_material",
    "parse_stale_sids",
    "parse_verif_data",
]

_MAX_SID = 7


@dataclass(frozen=True)
class PeerInfo:
    """Another member as the GM describes it: exact credential bytes and its role bitmap."""

    credential: bytes
    roles: int


@dataclass(frozen=True)
class GroupKeyingMaterial:
    """Everything the GM provides for one group: the Common Context and the known peers.

    ``peers`` maps Sender ID -> :class:`PeerInfo`; ``sender_id`` is None for a monitor.
    """

    group: str
    master_secret: bytes
    master_salt: bytes
    gid: bytes
    hkdf_alg: int
    aead_alg: int | None
    group_enc_alg: int | None
    sign_alg: int | None
    sign_params: Any
    ecdh_alg: int | None
    ecdh_params: Any
    cred_fmt: int
    gm_credential: bytes
    sender_id: bytes | None
    roles: int
    num: int
    exp: int | None
    peers: Mapping[bytes, PeerInfo] = field(default_factory=dict)


@dataclass(frozen=True)
class Challenge:
    """The GM's N_S and the group's signature / ECDH information from its 4.00 answer."""

    kdcchallenge: bytes
    sign_alg: int | None
    ecdh_alg: int | None


@dataclass(frozen=True)
class PendingJoin:
    """A Join Request on its way: what is needed to check the answer."""

    group: str
    roles: int
    scope: bytes
    cnonce: bytes
    payload: bytes


def _roles_value(roles: Iterable[Role | int] | int) -> int:
    return roles if isinstance(roles, int) else tperm(roles)


def _sign(private_key: bytes | Any, sign_alg: int, data: bytes) -> bytes:
    key = private_key_from_bytes(private_key) if isinstance(private_key, bytes) else private_key
    return signature_by_id(sign_alg).sign(key, data)


def _alg_of(credential: bytes, sign_alg: int | None) -> int:
    if sign_alg is not None:
        return sign_alg
    alg = Credential.from_ccs(credential).alg
    if alg is None:
        raise ManagerMessageError("credential names no algorithm; pass sign_alg")
    return alg


def build_join_request(
    group: str,
    roles: Iterable[Role | int] | int,
    *,
    credential: bytes | None = None,
    private_key: bytes | Any = None,
    challenge: bytes | None = None,
    sign_alg: int | None = None,
    get_creds: bool = True,
    cnonce: bytes | None = None,
) -> PendingJoin:
    """A Join Request; with ``challenge`` (N_S) it carries the PoP signature too.

    The PoP input is bstr(scope) | bstr(N_S) | bstr(N_C), signed with the group's signature
    algorithm (``sign_alg``, default: the one named in ``credential``).
    """
    perm = _roles_value(roles)
    scope = encode_scope([(group, perm)])
    nonce = cnonce if cnonce is not None else secrets.token_bytes(16)
    body: dict[int, Any] = {Param.SCOPE: scope, Param.CNONCE: nonce}
    if get_creds:
        body[Param.GET_CREDS] = None
    if credential is not None:
        body[Param.CLIENT_CRED] = credential
        if challenge is not None:
            if private_key is None:
                raise ManagerMessageError("a private key is needed for the PoP signature")
            pop_input = bstr_cbor(scope) + bstr_cbor(challenge) + bstr_cbor(nonce)
            body[Param.CLIENT_CRED_VERIFY] = _sign(
                private_key, _alg_of(credential, sign_alg), pop_input
            )
    return PendingJoin(group, perm, scope, nonce, dumps(body))


def build_cred_update(
    scope: bytes,
    challenge: bytes,
    credential: bytes,
    private_key: bytes | Any,
    sign_alg: int | None = None,
    cnonce: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(payload, N_C) of POST /nodes/NODENAME/cred, PoP over the scope of the join."""
    nonce = cnonce if cnonce is not None else secrets.token_bytes(16)
    pop_input = bstr_cbor(scope) + bstr_cbor(challenge) + bstr_cbor(nonce)
    body = {
        Param.CLIENT_CRED: credential,
        Param.CNONCE: nonce,
        Param.CLIENT_CRED_VERIFY: _sign(private_key, _alg_of(credential, sign_alg), pop_input),
    }
    return dumps(body), nonce


def build_stale_sids_request(num: int) -> bytes:
    """FETCH /stale-sids body: the last version the member knows."""
    return dumps(int(num))


def build_kdc_cred_fetch(cnonce: bytes | None = None) -> tuple[bytes, bytes]:
    """(payload, N_C) of FETCH /kdc-cred: a non-member (signature verifier) has no join
    nonce, so it sends the N_C the GM's proof of possession must cover."""
    nonce = cnonce if cnonce is not None else secrets.token_bytes(16)
    return dumps({Param.CNONCE: nonce}), nonce


def build_creds_fetch(
    inclusion: bool, roles: Iterable[int] = (), sender_ids: Iterable[bytes] = ()
) -> bytes:
    """FETCH /creds body: [inclusion_flag, role_filter (Tperm values), id_filter]."""
    return dumps({Param.GET_CREDS: [bool(inclusion), list(roles), list(sender_ids)]})


# --- parsing -----------------------------------------------------------------------------


def _body(payload: bytes, what: str) -> dict[Any, Any]:
    return expect_map(loads_strict(payload, what), what)


def parse_error(
    code: int, payload: bytes, content_format: int | None, max_age: int | None = None
) -> GroupManagerRequestError:
    """The GM's error answer as an exception (to raise or inspect). A 5.03's Max-Age says
    when to try again (RFC 7252 §5.9.3.4): it becomes ``retry_after`` and part of the text."""
    error_id: int | None = None
    detail = f"Group Manager answered {code >> 5}.{code & 31:02d}"
    if content_format == CF_PROBLEM_DETAILS and payload:
        try:
            error_id, text = decode_problem_details(payload)
        except ManagerMessageError:
            text = None
        if text:
            detail += f": {text}"
    retry_after = max_age if code == Code.SERVICE_UNAVAILABLE else None
    if retry_after is not None:
        detail += f" (try again in {retry_after} s)"
    return GroupManagerRequestError(detail, code=code, error_id=error_id, retry_after=retry_after)


def parse_challenge(payload: bytes) -> Challenge:
    """N_S (and the group's algorithms) from the GM's 4.00 ace-groupcomm+cbor answer."""
    body = _body(payload, "challenge answer")
    n_s = expect_bytes(body.get(Param.KDCCHALLENGE), "'kdcchallenge'", min_len=8, max_len=64)

    def first_alg(label: int) -> int | None:
        info = body.get(label)
        if info is None:
            return None
        entries = expect_array(info, "info array", max_len=16)
        if not entries:
            return None
        entry = expect_array(entries[0], "info entry", max_len=8)
        if len(entry) < 2:
            raise ManagerMessageError("info entry too short")
        return expect_int(entry[1], "info algorithm", lo=-(1 << 31), hi=1 << 31)

    return Challenge(n_s, first_alg(Param.SIGN_INFO), first_alg(Param.ECDH_INFO))


def _opt_alg(key: Mapping[Any, Any], label: int, lookup: Any, what: str) -> int | None:
    value = key.get(label)
    if value is None:
        return None
    alg = expect_int(value, what, lo=-(1 << 31), hi=1 << 31)
    try:
        lookup(alg)
    except CoseError:
        raise ManagerMessageError(f"unsupported {what} {alg}") from None
    return alg


def _parse_peers(body: Mapping[Any, Any], sign_alg: int | None) -> dict[bytes, PeerInfo]:
    """Peers from creds/peer_identifiers/peer_roles; credentials must fit ``sign_alg``."""
    creds = body.get(Param.CREDS)
    if creds is None:
        return {}
    creds = expect_array(creds, "'creds'")
    ids = expect_array(body.get(Param.PEER_IDENTIFIERS), "'peer_identifiers'")
    roles = body.get(Param.PEER_ROLES)
    roles = [0] * len(creds) if roles is None else expect_array(roles, "'peer_roles'")
    if not len(creds) == len(ids) == len(roles):
        raise ManagerMessageError("'creds', 'peer_identifiers' and 'peer_roles' differ in length")
    peers: dict[bytes, PeerInfo] = {}
    for c, i, r in zip(creds, ids, roles, strict=True):
        sid = expect_bytes(i, "peer identifier", max_len=_MAX_SID)
        if sid in peers:
            raise ManagerMessageError("duplicate peer identifier")
        if r:
            roles_from_tperm(r)
        raw = expect_bytes(c, "peer credential", min_len=1, max_len=2048)
        if sign_alg is not None:
            try:
                fits = Credential.from_ccs(raw).fits_signature(signature_by_id(sign_alg))
            except CoseError as e:
                raise ManagerMessageError(f"peer credential unusable: {e}") from None
            if not fits:
                raise ManagerMessageError("peer credential does not fit the group")
        peers[sid] = PeerInfo(raw, r)
    return peers


def _stale_from(body: Mapping[Any, Any]) -> list[bytes] | None:
    value = body.get(Param.STALE_NODE_IDS)
    if value is None:
        return None
    return [
        expect_bytes(s, "stale Sender ID", max_len=_MAX_SID)
        for s in expect_array(value, "'stale_node_ids'")
    ]


def _material_fields(
    body: Mapping[Any, Any], previous: GroupKeyingMaterial | None
) -> dict[str, Any]:
    """Key-object and version fields; absent optional ones fall back to ``previous``."""
    gkty = body.get(Param.GKTY)
    if gkty != GKTY_GROUP_OSCORE or isinstance(gkty, bool):
        raise ManagerMessageError("'gkty' is not Group_OSCORE_Input_Material")
    profile = body.get(Param.ACE_GROUPCOMM_PROFILE, PROFILE_COAP_GROUP_OSCORE)
    if profile != PROFILE_COAP_GROUP_OSCORE or isinstance(profile, bool):
        raise ManagerMessageError("unknown 'ace_groupcomm_profile'")
    key = expect_map(body.get(Param.KEY), "'key'")
    out: dict[str, Any] = {
        "master_secret": expect_bytes(key.get(KeyParam.MS), "'ms'", min_len=1, max_len=64),
        "gid": expect_bytes(key.get(KeyParam.CONTEXT_ID), "'contextId'", max_len=16),
        "master_salt": expect_bytes(key.get(KeyParam.SALT, b""), "'salt'", max_len=64),
        "num": expect_int(body.get(Param.NUM), "'num'", lo=0),
    }
    exp = body.get(Param.EXP)
    out["exp"] = None if exp is None else expect_int(exp, "'exp'", lo=0)
    optional = {
        "hkdf_alg": (KeyParam.HKDF, hkdf_by_id, "'hkdf'"),
        "aead_alg": (KeyParam.ALG, aead_by_id, "'alg'"),
        "group_enc_alg": (KeyParam.GP_ENC_ALG, aead_by_id, "'gp_enc_alg'"),
        "sign_alg": (KeyParam.SIGN_ALG, signature_by_id, "'sign_alg'"),
        "ecdh_alg": (KeyParam.ECDH_ALG, key_agreement_by_id, "'ecdh_alg'"),
    }
    for name, (label, lookup, what) in optional.items():
        value = _opt_alg(key, label, lookup, what)
        if value is None and previous is not None:
            value = getattr(previous, name)
        out[name] = value
    if out["hkdf_alg"] is None:
        out["hkdf_alg"] = 5
    if KeyParam.CRED_FMT in key:
        out["cred_fmt"] = expect_int(key[KeyParam.CRED_FMT], "'cred_fmt'", lo=0, hi=1 << 16)
    else:
        out["cred_fmt"] = previous.cred_fmt if previous is not None else 14
    for name, label in (
        ("sign_params", KeyParam.SIGN_PARAMS),
        ("ecdh_params", KeyParam.ECDH_PARAMS),
    ):
        if label in key:
            out[name] = expect_array(key[label], f"'{name}'", max_len=8)
        else:
            out[name] = getattr(previous, name) if previous is not None else None
    if KeyParam.GROUP_SENDER_ID in key:
        out["sender_id"] = expect_bytes(
            key[KeyParam.GROUP_SENDER_ID], "'group_SenderId'", max_len=_MAX_SID
        )
    return out


def _verify_kdc_pop(body: Mapping[Any, Any], client_nonce: bytes, sign_alg: int) -> bytes:
    """Check kdc_cred_verify over bstr(N_C) | bstr(N_KDC); return kdc_cred."""
    kdc_cred = expect_bytes(body.get(Param.KDC_CRED), "'kdc_cred'", min_len=1, max_len=2048)
    n_kdc = expect_bytes(body.get(Param.KDC_NONCE), "'kdc_nonce'", min_len=8, max_len=64)
    signature = expect_bytes(body.get(Param.KDC_CRED_VERIFY), "'kdc_cred_verify'", max_len=512)
    alg = signature_by_id(sign_alg)
    try:
        cred = Credential.from_ccs(kdc_cred)
        if not cred.fits_signature(alg):
            raise ManagerMessageError("the GM credential does not fit the group's algorithm")
        alg.verify(cred.public_key, signature, bstr_cbor(client_nonce) + bstr_cbor(n_kdc))
    except CoseError as e:
        raise ManagerMessageError(f"the GM's proof of possession failed: {e}") from None
    return kdc_cred


def parse_join_response(
    payload: bytes, pending: PendingJoin, *, gm_credential: bytes | None = None
) -> GroupKeyingMaterial:
    """Verify the GM's PoP and build the material; ``gm_credential`` pins the expected GM."""
    body = _body(payload, "Join Response")
    fields = _material_fields(body, None)
    if fields["sign_alg"] is None:
        raise ManagerMessageError("group without a signature algorithm: GM PoP not checkable")
    kdc_cred = _verify_kdc_pop(body, pending.cnonce, fields["sign_alg"])
    if gm_credential is not None and kdc_cred != gm_credential:
        raise ManagerMessageError("the GM credential is not the expected one")
    monitor = roles_from_tperm(pending.roles) == frozenset({Role.MONITOR})
    sender_id = fields.pop("sender_id", None)
    if sender_id is None and not monitor:
        raise ManagerMessageError("Join Response lacks the assigned Sender ID")
    if sender_id is not None and monitor:
        raise ManagerMessageError("a monitor must not get a Sender ID")
    peers = _parse_peers(body, fields["sign_alg"])
    if sender_id is not None and sender_id in peers:
        raise ManagerMessageError("own Sender ID listed as a peer")
    return GroupKeyingMaterial(
        group=pending.group,
        gm_credential=kdc_cred,
        sender_id=sender_id,
        roles=pending.roles,
        peers=peers,
        **fields,
    )


def apply_stale(material: GroupKeyingMaterial, stale: list[bytes] | None) -> GroupKeyingMaterial:
    """Drop stale peers; ``None`` means the GM could not tell, so every peer is dropped."""
    if stale is None:
        return replace(material, peers={})
    if material.sender_id is not None and material.sender_id in stale:
        raise MembershipTerminated("own Sender ID is stale: the membership ended")
    gone = set(stale)
    return replace(material, peers={k: v for k, v in material.peers.items() if k not in gone})


def parse_material(payload: bytes, previous: GroupKeyingMaterial) -> GroupKeyingMaterial:
    """Install a rekeying message or a GET /ace-group/GROUPNAME (or /nodes/NODENAME) answer.

    Stale Sender IDs in the message are purged, peers it announces (joiners) are added. An
    older version than ``previous`` is refused; the same version must carry the same Gid.
    """
    body = _body(payload, "group keying material")
    fields = _material_fields(body, previous)
    if fields["num"] < previous.num:
        raise ManagerMessageError("keying material older than the installed one")
    if fields["num"] == previous.num and fields["gid"] != previous.gid:
        raise ManagerMessageError("same version number with a different Gid")
    sender_id = fields.pop("sender_id", previous.sender_id)
    stale = _stale_from(body)
    updated = replace(previous, sender_id=sender_id, **fields)
    if stale is not None:
        updated = apply_stale(updated, stale)
    peers = dict(updated.peers)
    peers.update(_parse_peers(body, updated.sign_alg))
    if sender_id is not None:
        peers.pop(sender_id, None)
    return replace(updated, peers=peers)


def handle_notification(
    previous: GroupKeyingMaterial, code: int, payload: bytes, content_format: int | None
) -> GroupKeyingMaterial:
    """An Observe notification from the GM: new material, or the end of the membership
    (4.04 on the group resource, or an error saying membership ended or is required)."""
    if code != Code.CONTENT:
        err = parse_error(code, payload, content_format)
        if code == Code.NOT_FOUND or err.error_id in (
            ErrorId.MEMBERSHIP_TERMINATED,
            ErrorId.ONLY_MEMBERS,
        ):
            raise MembershipTerminated(str(err))
        raise err
    return parse_material(payload, previous)


def parse_creds(payload: bytes, sign_alg: int | None = None) -> dict[bytes, PeerInfo]:
    """Peers from a /creds answer (an empty byte string means: none matched).

    With ``sign_alg`` every credential must fit the group's signature algorithm.
    """
    value = loads_strict(payload, "credentials response")
    if value == b"":
        return {}
    return _parse_peers(expect_map(value, "credentials response"), sign_alg)


def parse_stale_sids(payload: bytes) -> list[bytes] | None:
    """Stale IDs from /stale-sids; None (empty payload) means 'purge every peer'."""
    if not payload:
        return None
    return [
        expect_bytes(s, "stale Sender ID", max_len=_MAX_SID)
        for s in expect_array(loads_strict(payload, "stale-sids response"), "stale-sids response")
    ]


def parse_key_renewal(payload: bytes, material: GroupKeyingMaterial) -> GroupKeyingMaterial:
    """Install a key-renewal answer: a new Sender ID, or a rekeying message when the GM chose
    to rekey the group instead (the Sender ID then stays, under a new Gid)."""
    body = _body(payload, "key renewal response")
    if Param.GROUP_SENDER_ID not in body and Param.KEY in body:
        renewed = parse_material(payload, material)
        if renewed.num <= material.num:
            raise ManagerMessageError("a rekeying answer must carry a newer version")
        return renewed
    sid = expect_bytes(body.get(Param.GROUP_SENDER_ID), "'group_SenderId'", max_len=_MAX_SID)
    if sid == material.sender_id:
        raise ManagerMessageError("key renewal returned the Sender ID already held")
    return replace(material, sender_id=sid)


def parse_kdc_cred(payload: bytes, client_nonce: bytes, sign_alg: int) -> bytes:
    """The GM credential from /kdc-cred, after checking its PoP over ``client_nonce`` (our
    join's N_C for GET, the N_C we sent for FETCH)."""
    return _verify_kdc_pop(_body(payload, "kdc-cred response"), client_nonce, sign_alg)


@dataclass(frozen=True)
class VerificationData:
    """What a signature verifier learns from /verif-data: no key that decrypts, but the
    Signature Encryption Key that unmasks countersignatures, and the algorithms."""

    gid: bytes
    num: int
    exp: int | None
    hkdf_alg: int
    cred_fmt: int
    group_enc_alg: int
    sign_alg: int
    sign_params: Any
    aead_alg: int | None
    ecdh_alg: int | None
    sign_enc_key: bytes


def parse_verif_data(payload: bytes) -> VerificationData:
    """A /verif-data answer; material that would let a verifier decrypt is refused."""
    body = _body(payload, "verification data")
    gkty = body.get(Param.GKTY)
    if gkty != GKTY_GROUP_OSCORE or isinstance(gkty, bool):
        raise ManagerMessageError("'gkty' is not Group_OSCORE_Input_Material")
    key = expect_map(body.get(Param.KEY), "'key'")
    if KeyParam.MS in key or KeyParam.SALT in key:
        raise ManagerMessageError("verification data must not carry the Master Secret or Salt")
    group_enc = _opt_alg(key, KeyParam.GP_ENC_ALG, aead_by_id, "'gp_enc_alg'")
    sign_alg = _opt_alg(key, KeyParam.SIGN_ALG, signature_by_id, "'sign_alg'")
    if group_enc is None or sign_alg is None:
        raise ManagerMessageError("verification data without group-mode algorithms")
    exp = body.get(Param.EXP)
    return VerificationData(
        gid=expect_bytes(key.get(KeyParam.CONTEXT_ID), "'contextId'", max_len=16),
        num=expect_int(body.get(Param.NUM), "'num'", lo=0),
        exp=None if exp is None else expect_int(exp, "'exp'", lo=0),
        hkdf_alg=_opt_alg(key, KeyParam.HKDF, hkdf_by_id, "'hkdf'") or 5,
        cred_fmt=expect_int(key.get(KeyParam.CRED_FMT), "'cred_fmt'", lo=0, hi=1 << 16),
        group_enc_alg=group_enc,
        sign_alg=sign_alg,
        sign_params=expect_array(key.get(KeyParam.SIGN_PARAMS), "'sign_params'", max_len=8),
        aead_alg=_opt_alg(key, KeyParam.ALG, aead_by_id, "'alg'"),
        ecdh_alg=_opt_alg(key, KeyParam.ECDH_ALG, key_agreement_by_id, "'ecdh_alg'"),
        sign_enc_key=expect_bytes(
            body.get(Param.SIGN_ENC_KEY), "'sign_enc_key'", min_len=16, max_len=64
        ),
    )


def group_context(
    material: GroupKeyingMaterial,
    *,
    private_key: Any = None,
    credential: bytes | None = None,
    sequence: SenderSequence | None = None,
    credential_provider: CredentialProvider | None = None,
    replay_windows_valid: bool = True,
    **extra: Any,
) -> GroupContext:
    """The Group OSCORE context this material describes, with the known peers preloaded.

    ``private_key`` may be the private COSE_Key bytes of the state file or a key object.
    Monitors pass neither key nor credential.
    """
    key = private_key_from_bytes(private_key) if isinstance(private_key, bytes) else private_key
    return GroupContext(
        material.master_secret,
        material.gid,
        sender_id=material.sender_id,
        private_key=key,
        credential=credential,
        master_salt=material.master_salt,
        hkdf=hkdf_by_id(material.hkdf_alg),
        aead=material.aead_alg,
        group_enc=material.group_enc_alg,
        signature=material.sign_alg,
        key_agreement=material.ecdh_alg,
        gm_cred=material.gm_credential,
        peers={sid: p.credential for sid, p in material.peers.items()},
        credential_provider=credential_provider,
        replay_windows_valid=replay_windows_valid,
        **extra,
        sequence=sequence,
    )
