"""The Group Manager, sans-I/O: RFC 9594's /ace-group resources for Group OSCORE groups.

:meth:`GroupManager.handle` takes one already-decoded request from an already-authenticated
node (the edge has verified the node's pairwise OSCORE channel) and returns the response plus
the notifications (rekeying, eviction) the edge has to deliver. Nothing here does I/O except
through the :class:`~grouposcore.manager.store.Store`; every state change is one store
transaction, committed before the response exists.

Authorisation is the "pre-authorised" variant of digest §15.3: an access list (node -> group ->
allowed roles) replaces the ACE access token, and the challenge N_S, which ACE delivers with
the token, is obtained in-band: a Join Request that carries ``client_cred`` but no
``client_cred_verify`` (or that finds no outstanding challenge for the node) is answered with
4.00 and an application/ace-groupcomm+cbor body ``{kdcchallenge: N_S, sign_info: [...]}``, the
path RFC 9594 §4.3.1 already defines. A challenge is single-use: it is consumed by the
successful join or credential update that proves possession with it. Challenges live in memory
only: a restarted GM has none outstanding, which merely costs the node one more round trip.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from grouposcore.cose import (
    Credential,
    aead_by_id,
    hkdf_by_id,
    key_agreement_by_id,
    private_key_from_bytes,
    private_key_to_bytes,
    public_key_bytes,
    signature_by_id,
)
from grouposcore.errors import (
    CoseError,
    GroupManagerRequestError,
    ManagerError,
    ManagerMessageError,
    SignatureError,
)
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    GKTY_GROUP_OSCORE,
    PROFILE_COAP_GROUP_OSCORE,
    Code,
    ErrorId,
    KeyParam,
    Method,
    Param,
    Policy,
    Role,
    bstr_cbor,
    decode_scope,
    dumps,
    encode_problem_details,
    expect_array,
    expect_bool,
    expect_bytes,
    expect_int,
    expect_map,
    loads_strict,
    method_from,
    roles_from_tperm,
    tperm,
    validate_member_roles,
)
from grouposcore.manager.store import ChannelMaterial, GroupRecord, MemberRecord, Store

__all__ = [
    "CRED_FMT_KCCS",
    "GmResponse",
    "GroupManager",
    "Notification",
    "sign_params_for",
]

log = logging.getLogger(__name__)

CRED_FMT_KCCS = 14
_NAME_RE = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_NONCE_MIN, _NONCE_MAX = 8, 64
_CHALLENGE_LEN = 16
_MAX_SID_BYTES = 7  # 13-byte AEAD nonce - 6; shorter nonces lower it further
_CF_CBOR = 60  # application/cbor, accepted for bare CBOR request bodies


@dataclass(frozen=True)
class Notification:
    """Something the edge must deliver to ``node``: an Observe notification on ``path``.

    Rekeying messages go out as 2.05 notifications of /ace-group/GROUPNAME (or are picked up by
    polling); an eviction as an unsolicited 4.04 on /ace-group/GROUPNAME/nodes/NODENAME.
    """

    node: str
    group: str
    path: tuple[str, ...]
    code: int
    payload: bytes
    content_format: int | None


@dataclass(frozen=True)
class GmResponse:
    """The answer to one request, plus the notifications that request caused."""

    code: int
    payload: bytes = b""
    content_format: int | None = None
    location_path: tuple[str, ...] = ()
    observable: bool = False
    notifications: tuple[Notification, ...] = ()


def sign_params_for(sign_alg: int) -> list[list[int]]:
    """'sign_params' of the Group_OSCORE_Input_Material: [[kty], [kty, crv]]."""
    alg = signature_by_id(sign_alg)
    return [[alg.kty], [alg.kty, alg.crv]]


def _ecdh_params_for(sign_alg: int) -> list[list[int]]:
    # Group members use their signing key for ECDH too: Ed25519 maps to X25519 (crv 4),
    # P-256 is used as is.
    alg = signature_by_id(sign_alg)
    return [[1], [1, 4]] if alg.kty == 1 else [[alg.kty], [alg.kty, alg.crv]]


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ManagerError(f"{what} {name!r} must be 1-64 URI-unreserved characters")
    return name


def _reject(
    detail: str, error_id: int | None = None, code: int = Code.BAD_REQUEST
) -> GroupManagerRequestError:
    return GroupManagerRequestError(detail, code=code, error_id=error_id)


def _forbidden(detail: str) -> GroupManagerRequestError:
    return GroupManagerRequestError(detail, code=Code.FORBIDDEN)


def _only_members() -> GroupManagerRequestError:
    return GroupManagerRequestError(
        "operation permitted only to group members",
        code=Code.FORBIDDEN,
        error_id=ErrorId.ONLY_MEMBERS,
    )


class _ChallengeAnswer(Exception):
    """Internal: answer 4.00 with a fresh kdcchallenge (not an error of the caller's data)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)


@dataclass(frozen=True)
class _GetCreds:
    inclusion: bool
    role_filter: tuple[int, ...]
    id_filter: frozenset[bytes]


class GroupManager:
    """A Group Manager for Group OSCORE groups over a persistent :class:`Store`."""

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        challenge_ttl: float = 300.0,
        subject: str = "group-manager",
    ) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self._clock = clock
        self._random = random_bytes
        self._challenge_ttl = challenge_ttl
        self._subject = subject
        self._challenges: dict[str, tuple[bytes, float]] = {}

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # --- administration (local, trusted callers) -----------------------------------------

    def create_group(
        self,
        name: str,
        *,
        group_enc_alg: int = 10,
        aead_alg: int | None = 10,
        hkdf_alg: int = 5,
        sign_alg: int = -8,
        ecdh_alg: int | None = -27,
        backward_security: bool = True,
        lifetime: int = 30 * 24 * 3600,
        key_update_check_interval: int = 3600,
        expiration_delta: int = 0,
        stale_sets_kept: int = 3,
        epoch_len: int = 2,
    ) -> GroupRecord:
        """Create a group with a fresh Master Secret, Master Salt and a GM-unique Gid.

        The Gid is a per-group prefix followed by an ``epoch_len``-byte epoch that counts
        rekeyings (digest §8.3); prefixes are distinct and of one length per size class, so
        Gids never collide across groups.
        """
        _check_name(name, "group name")
        group_alg = aead_by_id(group_enc_alg)
        nonce_lens = [group_alg.nonce_len]
        if aead_alg is not None:
            nonce_lens.append(aead_by_id(aead_alg).nonce_len)
        hkdf_by_id(hkdf_alg)
        signature_by_id(sign_alg)
        if ecdh_alg is not None:
            key_agreement_by_id(ecdh_alg)
        if not 1 <= epoch_len <= 4 or stale_sets_kept < 1 or lifetime < 1:
            raise ManagerError("epoch_len 1..4, stale_sets_kept >= 1 and lifetime >= 1 needed")
        max_sid = min(_MAX_SID_BYTES, min(nonce_lens) - 6)
        policies = dumps(
            {
                Policy.KEY_UPDATE_CHECK_INTERVAL: key_update_check_interval,
                Policy.EXPIRATION_DELTA: expiration_delta,
            }
        )
        with self.store.transaction():
            if self.store.group(name) is not None:
                raise ManagerError(f"group {name!r} already exists")
            self._ensure_gm_key(sign_alg)
            prefix = self._new_prefix()
            epoch = 0
            now = self._clock()
            record = GroupRecord(
                name=name,
                gid_prefix=prefix,
                epoch=epoch,
                epoch_len=epoch_len,
                gid=prefix + epoch.to_bytes(epoch_len, "big"),
                master_secret=self._random(16),
                master_salt=self._random(8),
                num=0,
                exp=int(now) + lifetime,
                lifetime=lifetime,
                hkdf_alg=hkdf_alg,
                aead_alg=aead_alg,
                group_enc_alg=group_enc_alg,
                sign_alg=sign_alg,
                ecdh_alg=ecdh_alg,
                cred_fmt=CRED_FMT_KCCS,
                max_sid_len=max_sid,
                policies=policies,
                backward_security=backward_security,
                active=True,
                stale_sets_kept=stale_sets_kept,
                created_at=now,
            )
            self.store.insert_group(record)
        return record

    def allow(self, node: str, group: str, roles: Iterable[Role | int] | int) -> None:
        """Put ``node`` on the access list of ``group`` (roles: Role values or a Tperm)."""
        _check_name(node, "node name")
        _check_name(group, "group name")
        value = roles if isinstance(roles, int) else tperm(roles)
        try:
            roles_from_tperm(value)
        except ManagerMessageError as e:
            raise ManagerError(str(e)) from None
        with self.store.transaction():
            self.store.set_access(node, group, value)

    def disallow(self, node: str, group: str) -> None:
        """Remove ``node``'s access-list entry for ``group`` (membership is kept; see evict)."""
        with self.store.transaction():
            self.store.set_access(node, group, 0)

    def evict(self, group: str, node: str, *, revoke: bool = True) -> list[Notification]:
        """Remove a member and rekey the group (forward security).

        With ``revoke`` the access-list entry goes too, so the node cannot simply join again.
        Returns the notifications: 4.04 for the evicted node, the rekeying for everyone else.
        """
        with self.store.transaction():
            g = self._group(group)
            if self.store.member(group, node) is None:
                raise ManagerError(f"{node!r} is not a member of {group!r}")
            self.store.delete_member(group, node)
            if revoke:
                self.store.set_access(node, group, 0)
            _, notes = self._rekey(g)
        return [self._eviction_notice(group, node), *notes]

    def rekey(self, group: str) -> list[Notification]:
        """Rekey ``group`` now (e.g. periodically, or before the material expires)."""
        with self.store.transaction():
            _, notes = self._rekey(self._group(group))
        return notes

    def set_active(self, group: str, active: bool) -> list[Notification]:
        """Mark the group (in)active; members observing /active are notified."""
        with self.store.transaction():
            self._group(group)
            self.store.set_group_flags(group, active=active)
            members = self.store.members(group)
        payload = dumps(bool(active))
        return [
            Notification(m.node, group, ("ace-group", group, "active"), Code.CONTENT, payload,
                         None)
            for m in members
        ]  # fmt: skip

    def set_backward_security(self, group: str, enabled: bool) -> None:
        """Switch rekeying on join on or off for ``group``."""
        with self.store.transaction():
            self._group(group)
            self.store.set_group_flags(group, backward_security=enabled)

    def commission_node(
        self, node: str, *, aead_alg: int = 10, hkdf_alg: int = 5
    ) -> ChannelMaterial:
        """Generate the pairwise OSCORE channel material for ``node`` (replacing older material).

        The GM's Sender ID is empty; every node gets a distinct non-empty Sender ID, which is
        the kid the GM looks the node up by.
        """
        _check_name(node, "node name")
        aead_by_id(aead_alg)
        hkdf_by_id(hkdf_alg)
        with self.store.transaction():
            old = self.store.channel(node)
            if old is not None:
                sid = old.node_sender_id
            else:
                taken = {c.node_sender_id for c in self.store.channels()}
                sid = next(_sid_candidates(4, taken))
            material = ChannelMaterial(
                node=node,
                master_secret=self._random(16),
                master_salt=self._random(8),
                gm_sender_id=b"",
                node_sender_id=sid,
                id_context=None,
                aead_alg=aead_alg,
                hkdf_alg=hkdf_alg,
            )
            self.store.put_channel(material)
        return material

    def gm_credential(self, group: str) -> bytes:
        """The GM's credential for ``group`` (its 'kdc_cred', the members' gm_cred)."""
        g = self._group(group)
        key = self.store.gm_key(g.sign_alg)
        if key is None:
            raise ManagerError(f"no GM key for signature algorithm {g.sign_alg}")
        return key[1]

    def group(self, name: str) -> GroupRecord | None:
        """The stored group record."""
        return self.store.group(name)

    def members(self, group: str) -> list[MemberRecord]:
        """The current members of ``group``."""
        return self.store.members(group)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """All persistent state (for 'show' and for restart-consistency checks)."""
        return self.store.dump()

    # --- request handling --------------------------------------------------------------

    def handle(
        self,
        node: str,
        method: str | int,
        path: Iterable[str],
        payload: bytes = b"",
        content_format: int | None = None,
    ) -> GmResponse:
        """Serve one request of the authenticated ``node``; never raises for bad input."""
        parts = tuple(path)
        try:
            return self._dispatch(node, method, parts, bytes(payload), content_format)
        except GroupManagerRequestError as e:
            return self._error_response(e)
        except ManagerMessageError as e:
            return GmResponse(
                Code.BAD_REQUEST, encode_problem_details(None, str(e)), CF_PROBLEM_DETAILS
            )
        except _ChallengeAnswer:
            return self._challenge_response(node, parts)
        except sqlite3.Error:
            log.exception("store failure while serving %s %r", method, parts)
            return GmResponse(Code.INTERNAL_SERVER_ERROR)

    def _error_response(self, e: GroupManagerRequestError) -> GmResponse:
        if e.error_id is None and e.code != Code.BAD_REQUEST:
            return GmResponse(e.code, str(e).encode()[:200])
        return GmResponse(e.code, encode_problem_details(e.error_id, str(e)), CF_PROBLEM_DETAILS)

    def _dispatch(
        self,
        node: str,
        method_raw: str | int,
        path: tuple[str, ...],
        payload: bytes,
        cf: int | None,
    ) -> GmResponse:
        method = method_from(method_raw)
        if not isinstance(node, str) or not _NAME_RE.fullmatch(node):
            raise GroupManagerRequestError("unknown requester", code=Code.UNAUTHORIZED)
        if not path or path[0] != "ace-group" or not all(isinstance(p, str) for p in path):
            raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
        if method is None:
            raise GroupManagerRequestError("method not allowed", code=Code.METHOD_NOT_ALLOWED)
        if len(path) == 1:
            self._allow_methods(method, Method.FETCH)
            return self._gid_lookup(node, self._body(payload, cf))
        name = path[1]
        rest = path[2:]
        allowed = self.store.allowed_roles(node, name) if _NAME_RE.fullmatch(name) else 0
        g = self.store.group(name) if _NAME_RE.fullmatch(name) else None
        member = self.store.member(name, node) if g is not None else None
        if not allowed and member is None:
            raise _forbidden(f"{node} is not authorised for group {name}")
        if g is None:
            raise GroupManagerRequestError("no such group", code=Code.NOT_FOUND)
        if not rest:
            self._allow_methods(method, Method.GET, Method.POST)
            if method == Method.POST:
                return self._join(node, g, member, self._body(payload, cf))
            return self._get_material(g, self._require_member(member))
        head, tail = rest[0], rest[1:]
        if head == "nodes" and len(tail) in (1, 2):
            if tail[0] != node:
                raise _forbidden("a node may only access its own node resource")
            if member is None:
                raise GroupManagerRequestError("not a member", code=Code.NOT_FOUND)
            if len(tail) == 2:
                if tail[1] != "cred":
                    raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
                self._allow_methods(method, Method.POST)
                return self._update_cred(g, member, self._body(payload, cf))
            self._allow_methods(method, Method.GET, Method.POST, Method.PUT, Method.DELETE)
            if method == Method.GET:
                return self._get_material(g, member, own=True)
            if method == Method.DELETE:
                return self._leave(g, member)
            return self._renew_sender_id(g, member)
        if tail:
            raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
        if head == "creds":
            self._allow_methods(method, Method.GET, Method.FETCH)
            if member is None and not allowed & (1 << Role.VERIFIER):
                raise _only_members()
            if method == Method.GET:
                return self._creds(g, None, exclude=None)
            return self._creds(g, self._fetch_filter(self._body(payload, cf)), exclude=None)
        if head == "kdc-cred":
            self._allow_methods(method, Method.GET)
            return self._kdc_cred(g, self._require_member(member))
        if head == "num":
            self._allow_methods(method, Method.GET)
            self._require_member(member)
            return GmResponse(Code.CONTENT, dumps(g.num), None, observable=True)
        if head == "active":
            self._allow_methods(method, Method.GET)
            self._require_member(member)
            return GmResponse(Code.CONTENT, dumps(g.active), None, observable=True)
        if head == "policies":
            self._allow_methods(method, Method.GET)
            self._require_member(member)
            body = {Param.GROUP_POLICIES: loads_strict(g.policies, "stored policies")}
            return GmResponse(Code.CONTENT, dumps(body), CF_ACE_GROUPCOMM)
        if head == "stale-sids":
            self._allow_methods(method, Method.FETCH)
            self._require_member(member)
            return self._stale_sids(g, self._body(payload, cf))
        raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)

    @staticmethod
    def _allow_methods(method: Method, *allowed: Method) -> None:
        if method not in allowed:
            raise GroupManagerRequestError("method not allowed", code=Code.METHOD_NOT_ALLOWED)

    @staticmethod
    def _body(payload: bytes, cf: int | None) -> Any:
        if cf not in (None, CF_ACE_GROUPCOMM, _CF_CBOR):
            raise GroupManagerRequestError(
                "expected application/ace-groupcomm+cbor",
                code=Code.UNSUPPORTED_CONTENT_FORMAT,
            )
        return loads_strict(payload, "request payload")

    @staticmethod
    def _require_member(member: MemberRecord | None) -> MemberRecord:
        if member is None:
            raise _only_members()
        return member

    def _group(self, name: str) -> GroupRecord:
        g = self.store.group(name)
        if g is None:
            raise ManagerError(f"no group {name!r}")
        return g

    # --- join ---------------------------------------------------------------------------

    def _join(
        self, node: str, g: GroupRecord, existing: MemberRecord | None, body: Any
    ) -> GmResponse:
        req = expect_map(body, "Join Request")
        scope = expect_bytes(req.get(Param.SCOPE), "'scope'", min_len=1, max_len=512)
        entries = decode_scope(scope)
        if len(entries) != 1 or entries[0][0] != g.name:
            raise _reject("'scope' must name exactly this group")
        perm = entries[0][1]
        roles = validate_member_roles(perm)
        if perm & ~self.store.allowed_roles(node, g.name):
            raise _forbidden(f"{node} may not take these roles in {g.name}")
        cnonce = expect_bytes(
            req.get(Param.CNONCE), "'cnonce'", min_len=_NONCE_MIN, max_len=_NONCE_MAX
        )
        get_creds = self._join_filter(req[Param.GET_CREDS]) if Param.GET_CREDS in req else None
        client_cred = req.get(Param.CLIENT_CRED)
        if client_cred is not None:
            client_cred = expect_bytes(client_cred, "'client_cred'", max_len=2048)
        pop = req.get(Param.CLIENT_CRED_VERIFY)
        if pop is not None:
            pop = expect_bytes(pop, "'client_cred_verify'", max_len=512)
        if not g.active:
            raise _reject(
                "group currently not active", ErrorId.GROUP_INACTIVE, Code.SERVICE_UNAVAILABLE
            )
        monitor = roles == frozenset({Role.MONITOR})
        credential: bytes | None = None
        used_challenge: bytes | None = None
        if not monitor:
            if client_cred:
                cred = self._check_credential(g, client_cred)
                used_challenge = self._verify_pop(node, cred, g.sign_alg, scope, cnonce, pop)
                credential = client_cred
            elif existing is not None and existing.credential:
                credential = existing.credential  # re-join with the credential already proven
            else:
                raise _ChallengeAnswer("a credential and proof of possession are needed")
            self._check_unique_key(g, node, credential)

        notes: list[Notification] = []
        with self.store.transaction():
            g = self._group(g.name)
            if existing is not None:
                # A re-joiner gives up its Sender ID; it stays allocated under this Gid, so it is
                # never handed out again before the next rekeying, which reports it as stale.
                self.store.delete_member(g.name, node)
            if g.backward_security:
                g, notes = self._rekey(g, joined_node=node)
            sid = None if monitor else self._allocate_sid(g, node)
            member = MemberRecord(
                group=g.name,
                node=node,
                roles=perm,
                credential=credential,
                sender_id=sid,
                birth_gid=g.gid,
                scope=scope,
                client_nonce=cnonce,
                joined_at=self._clock(),
            )
            self.store.upsert_member(member)
            if notes:
                extra = self._creds_fields([member], g.num)
                notes = [self._with_fields(n, extra) for n in notes]
        if used_challenge is not None:
            self._challenges.pop(node, None)
        body_out = self._material(g, member)
        body_out.update(self._kdc_pop(g, cnonce))
        if get_creds is not None:
            peers = [m for m in self.store.members(g.name) if m.node != node]
            body_out.update(self._creds_fields(self._select(peers, get_creds), None))
        return GmResponse(
            Code.CHANGED if existing is not None else Code.CREATED,
            dumps(body_out),
            CF_ACE_GROUPCOMM,
            location_path=("ace-group", g.name, "nodes", node),
            notifications=tuple(notes),
        )

    def _check_credential(self, g: GroupRecord, raw: bytes) -> Credential:
        """The credential parsed, or 4.00 error-id 2 if it does not fit the group."""
        try:
            cred = Credential.from_ccs(raw)
        except CoseError as e:
            raise _reject(f"credential unusable: {e}", ErrorId.CRED_INCOMPATIBLE) from None
        if not cred.fits_signature(signature_by_id(g.sign_alg)):
            raise _reject(
                "credential does not fit the group's signature algorithm",
                ErrorId.CRED_INCOMPATIBLE,
            )
        return cred

    def _check_unique_key(self, g: GroupRecord, node: str, credential: bytes) -> None:
        mine = public_key_bytes(Credential.from_ccs(credential).public_key)
        for m in self.store.members(g.name):
            if m.node != node and m.credential is not None:
                if public_key_bytes(Credential.from_ccs(m.credential).public_key) == mine:
                    raise _reject(
                        "this public key belongs to another member", ErrorId.CRED_INCOMPATIBLE
                    )

    def _current_challenge(self, node: str) -> bytes | None:
        entry = self._challenges.get(node)
        if entry is None or entry[1] < self._clock():
            return None
        return entry[0]

    def _verify_pop(
        self,
        node: str,
        cred: Credential,
        sign_alg: int,
        scope: bytes,
        cnonce: bytes,
        pop: bytes | None,
    ) -> bytes:
        """Check the joiner's signature over bstr(scope) | bstr(N_S) | bstr(N_C)."""
        challenge = self._current_challenge(node)
        if challenge is None or not pop:
            raise _ChallengeAnswer("no valid kdcchallenge; use the one in this response")
        data = bstr_cbor(scope) + bstr_cbor(challenge) + bstr_cbor(cnonce)
        try:
            signature_by_id(sign_alg).verify(cred.public_key, pop, data)
        except (SignatureError, CoseError):
            raise _reject("invalid proof-of-possession evidence", ErrorId.INVALID_POP) from None
        return challenge

    def _challenge_response(self, node: str, parts: tuple[str, ...]) -> GmResponse:
        """4.00 carrying a fresh N_S (stored for ``node``) and the group's signature info."""
        challenge = self._random(_CHALLENGE_LEN)
        self._challenges[node] = (challenge, self._clock() + self._challenge_ttl)
        body: dict[int, Any] = {Param.KDCCHALLENGE: challenge}
        g = self.store.group(parts[1]) if len(parts) > 1 else None
        if g is not None:
            sp = sign_params_for(g.sign_alg)
            body[Param.SIGN_INFO] = [[g.name, g.sign_alg, sp, sp[1], g.cred_fmt]]
            if g.ecdh_alg is not None:
                ep = _ecdh_params_for(g.sign_alg)
                body[Param.ECDH_INFO] = [[g.name, g.ecdh_alg, ep, ep[1], g.cred_fmt]]
        return GmResponse(Code.BAD_REQUEST, dumps(body), CF_ACE_GROUPCOMM)

    def _allocate_sid(self, g: GroupRecord, node: str) -> bytes:
        """The shortest Sender ID never handed out under the current Gid."""
        taken = self.store.allocated_sids(g.name, g.gid)
        sid = next(_sid_candidates(g.max_sid_len, taken), None)
        if sid is None:
            raise _reject(
                "no available node identifiers; try again after a rekeying",
                ErrorId.NO_NODE_IDS,
                Code.SERVICE_UNAVAILABLE,
            )
        self.store.record_allocation(g.name, g.gid, sid, node)
        return sid

    # --- rekeying -----------------------------------------------------------------------

    def _rekey(
        self, g: GroupRecord, joined_node: str | None = None
    ) -> tuple[GroupRecord, list[Notification]]:
        """New Master Secret, Salt and Gid, num + 1, stale IDs recorded; inside a transaction.

        Stale IDs are everything allocated under the old Gid that no remaining member holds:
        leavers, evicted nodes, relinquished IDs. Remaining members keep their Sender IDs.
        """
        modulus = 1 << (8 * g.epoch_len)
        epoch = (g.epoch + 1) % modulus
        gid = g.gid_prefix + epoch.to_bytes(g.epoch_len, "big")
        elders = [m for m in self.store.members(g.name) if m.birth_gid == gid]
        for m in elders:  # digest §8.3: a recycled Gid evicts whoever was born under it
            self.store.delete_member(g.name, m.node)
        remaining = self.store.members(g.name)
        kept = {m.sender_id for m in remaining if m.sender_id is not None}
        stale = sorted(self.store.allocated_sids(g.name, g.gid) - kept)
        new = replace(
            g,
            epoch=epoch,
            gid=gid,
            master_secret=self._random(16),
            master_salt=self._random(8),
            num=g.num + 1,
            exp=int(self._clock()) + g.lifetime,
        )
        self.store.update_keying(
            g.name,
            epoch=new.epoch,
            gid=new.gid,
            master_secret=new.master_secret,
            master_salt=new.master_salt,
            num=new.num,
            exp=new.exp,
        )
        self.store.drop_allocations(g.name, except_gid=new.gid)
        for m in remaining:
            if m.sender_id is not None:
                self.store.record_allocation(g.name, new.gid, m.sender_id, m.node)
        self.store.add_stale_set(g.name, new.num, dumps(stale), g.stale_sets_kept)
        message = self._material(new, None)
        message[Param.STALE_NODE_IDS] = stale
        payload = dumps(message)
        notes = [
            Notification(m.node, g.name, ("ace-group", g.name), Code.CONTENT, payload,
                         CF_ACE_GROUPCOMM)
            for m in remaining
            if m.node != joined_node
        ]  # fmt: skip
        notes += [self._eviction_notice(g.name, m.node) for m in elders]
        return new, notes

    @staticmethod
    def _with_fields(n: Notification, extra: dict[int, Any]) -> Notification:
        body = loads_strict(n.payload, "notification")
        body.update(extra)
        return replace(n, payload=dumps(body))

    @staticmethod
    def _eviction_notice(group: str, node: str) -> Notification:
        return Notification(
            node,
            group,
            ("ace-group", group, "nodes", node),
            Code.NOT_FOUND,
            encode_problem_details(ErrorId.MEMBERSHIP_TERMINATED, "membership terminated"),
            CF_PROBLEM_DETAILS,
        )

    # --- material and credentials -------------------------------------------------------

    def _material(self, g: GroupRecord, member: MemberRecord | None) -> dict[int, Any]:
        """gkty/key/num/exp/exi/profile; the key object carries the Sender ID of ``member``."""
        key: dict[int, Any] = {
            KeyParam.MS: g.master_secret,
            KeyParam.HKDF: g.hkdf_alg,
            KeyParam.SALT: g.master_salt,
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
            key[KeyParam.ECDH_PARAMS] = _ecdh_params_for(g.sign_alg)
        if member is not None and member.sender_id is not None:
            key[KeyParam.GROUP_SENDER_ID] = member.sender_id
        return {
            Param.GKTY: GKTY_GROUP_OSCORE,
            Param.KEY: dict(sorted(key.items())),
            Param.NUM: g.num,
            Param.EXP: g.exp,
            Param.EXI: max(0, g.exp - int(self._clock())),
            Param.ACE_GROUPCOMM_PROFILE: PROFILE_COAP_GROUP_OSCORE,
            Param.GROUP_POLICIES: loads_strict(g.policies, "stored policies"),
        }

    def _get_material(self, g: GroupRecord, member: MemberRecord, own: bool = False) -> GmResponse:
        body = self._material(g, member if own else None)
        return GmResponse(Code.CONTENT, dumps(body), CF_ACE_GROUPCOMM, observable=not own)

    def _kdc_pop(self, g: GroupRecord, client_nonce: bytes) -> dict[int, Any]:
        """kdc_cred, kdc_nonce and the GM's signature over bstr(N_C) | bstr(N_KDC)."""
        key = self.store.gm_key(g.sign_alg)
        if key is None:
            raise ManagerError(f"no GM key for signature algorithm {g.sign_alg}")
        n_kdc = self._random(_CHALLENGE_LEN)
        alg = signature_by_id(g.sign_alg)
        pop_input = bstr_cbor(client_nonce) + bstr_cbor(n_kdc)
        signature = alg.sign(private_key_from_bytes(key[0]), pop_input)
        return {Param.KDC_CRED: key[1], Param.KDC_NONCE: n_kdc, Param.KDC_CRED_VERIFY: signature}

    def _kdc_cred(self, g: GroupRecord, member: MemberRecord) -> GmResponse:
        return GmResponse(
            Code.CONTENT, dumps(self._kdc_pop(g, member.client_nonce)), CF_ACE_GROUPCOMM
        )

    @staticmethod
    def _creds_fields(members: list[MemberRecord], num: int | None) -> dict[int, Any]:
        chosen = [m for m in members if m.credential is not None and m.sender_id is not None]
        out: dict[int, Any] = {
            Param.CREDS: [m.credential for m in chosen],
            Param.PEER_ROLES: [m.roles for m in chosen],
            Param.PEER_IDENTIFIERS: [m.sender_id for m in chosen],
        }
        if num is not None:
            out[Param.NUM] = num
        return out

    @staticmethod
    def _select(members: list[MemberRecord], f: _GetCreds) -> list[MemberRecord]:
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

    def _creds(self, g: GroupRecord, f: _GetCreds | None, exclude: str | None) -> GmResponse:
        members = [m for m in self.store.members(g.name) if m.node != exclude]
        chosen = members if f is None else self._select(members, f)
        fields = self._creds_fields(chosen, g.num)
        if not fields[Param.CREDS] and f is not None:
            return GmResponse(Code.CONTENT, dumps(b""), CF_ACE_GROUPCOMM)
        return GmResponse(Code.CONTENT, dumps(fields), CF_ACE_GROUPCOMM)

    @staticmethod
    def _parse_get_creds(value: Any) -> _GetCreds:
        triple = expect_array(value, "'get_creds'", max_len=3)
        if len(triple) != 3:
            raise ManagerMessageError("'get_creds' must be [inclusion_flag, roles, ids]")
        inclusion = expect_bool(triple[0], "'inclusion_flag'")
        roles = []
        for t in expect_array(triple[1], "'role_filter'", max_len=16):
            roles_from_tperm(expect_int(t, "role filter entry", lo=1, hi=1 << 16))
            roles.append(t)
        ids = frozenset(
            expect_bytes(i, "'id_filter' entry", max_len=_MAX_SID_BYTES)
            for i in expect_array(triple[2], "'id_filter'", max_len=1024)
        )
        return _GetCreds(inclusion, tuple(roles), ids)

    def _join_filter(self, value: Any) -> _GetCreds:
        if value is None:
            return _GetCreds(False, (), frozenset())  # null: every current member
        return self._parse_get_creds(value)

    def _fetch_filter(self, body: Any) -> _GetCreds:
        req = expect_map(body, "credentials request")
        f = self._parse_get_creds(req.get(Param.GET_CREDS))
        if not f.role_filter and not f.id_filter:
            raise ManagerMessageError("'role_filter' and 'id_filter' cannot both be empty")
        return f

    # --- other member operations ---------------------------------------------------------

    def _leave(self, g: GroupRecord, member: MemberRecord) -> GmResponse:
        with self.store.transaction():
            g = self._group(g.name)
            self.store.delete_member(g.name, member.node)
            _, notes = self._rekey(g)
        self._challenges.pop(member.node, None)
        return GmResponse(Code.DELETED, notifications=tuple(notes))

    def _renew_sender_id(self, g: GroupRecord, member: MemberRecord) -> GmResponse:
        if member.sender_id is None:
            raise _reject("a monitor holds no Sender ID", ErrorId.ROLES_INCONSISTENT)
        with self.store.transaction():
            g = self._group(g.name)
            sid = self._allocate_sid(g, member.node)
            self.store.set_member_sender_id(g.name, member.node, sid)
        return GmResponse(Code.CHANGED, dumps({Param.GROUP_SENDER_ID: sid}), CF_ACE_GROUPCOMM)

    def _update_cred(self, g: GroupRecord, member: MemberRecord, body: Any) -> GmResponse:
        if member.credential is None:
            raise GroupManagerRequestError("monitors hold no credential", code=Code.NOT_FOUND)
        req = expect_map(body, "credential update")
        raw = expect_bytes(req.get(Param.CLIENT_CRED), "'client_cred'", min_len=1, max_len=2048)
        cnonce = expect_bytes(
            req.get(Param.CNONCE), "'cnonce'", min_len=_NONCE_MIN, max_len=_NONCE_MAX
        )
        pop = req.get(Param.CLIENT_CRED_VERIFY)
        if pop is not None:
            pop = expect_bytes(pop, "'client_cred_verify'", max_len=512)
        cred = self._check_credential(g, raw)
        self._verify_pop(member.node, cred, g.sign_alg, member.scope, cnonce, pop)
        self._check_unique_key(g, member.node, raw)
        with self.store.transaction():
            self.store.set_member_credential(g.name, member.node, raw)
        self._challenges.pop(member.node, None)
        return GmResponse(Code.CHANGED)

    def _stale_sids(self, g: GroupRecord, body: Any) -> GmResponse:
        old = expect_int(body, "stale-sids request", lo=0, hi=1 << 32)
        if old > g.num:
            raise _reject("that version number is in the future")
        sets = self.store.stale_sets(g.name)
        wanted = range(old + 1, g.num + 1)
        if any(n not in sets for n in wanted):
            # Not all sets are kept any more: an empty payload tells the member to purge all.
            return GmResponse(Code.CONTENT, b"", None)
        stale: set[bytes] = set()
        for n in wanted:
            stale.update(loads_strict(sets[n], "stored stale set"))
        return GmResponse(Code.CONTENT, dumps(sorted(stale)), None)

    def _gid_lookup(self, node: str, body: Any) -> GmResponse:
        req = expect_map(body, "group name request")
        gids = [
            expect_bytes(x, "'gid' entry", max_len=16)
            for x in expect_array(req.get(Param.GID), "'gid'", max_len=256)
        ]
        found: list[GroupRecord] = []
        for gid in gids:
            g = self.store.group_by_gid(gid)
            if g is not None and (
                self.store.allowed_roles(node, g.name) or self.store.member(g.name, node)
            ):
                found.append(g)
        if not found:
            return GmResponse(Code.CONTENT, dumps(b""), CF_ACE_GROUPCOMM)
        body_out = {
            Param.GID: [g.gid for g in found],
            Param.GNAME: [g.name for g in found],
            Param.GURI: [f"/ace-group/{g.name}" for g in found],
        }
        return GmResponse(Code.CONTENT, dumps(body_out), CF_ACE_GROUPCOMM)

    # --- helpers ------------------------------------------------------------------------

    def _ensure_gm_key(self, sign_alg: int) -> None:
        if self.store.gm_key(sign_alg) is not None:
            return
        alg = signature_by_id(sign_alg)
        private = alg.generate_private_key()
        cred = Credential.build_ccs(private.public_key(), sign_alg, self._subject)
        self.store.put_gm_key(sign_alg, private_key_to_bytes(private), cred.raw)

    def _new_prefix(self) -> bytes:
        """A Gid prefix no other group has, drawn from a prefix-free code.

        One-byte prefixes 0x00-0xef first, then two-byte prefixes 0xf0xx-0xffxx. Because no
        prefix begins another, two groups' Gids differ even when their epochs line up.
        """
        used = self.store.gid_prefixes()
        for pool in (
            [bytes([i]) for i in range(0xF0)],
            [bytes([i, j]) for i in range(0xF0, 0x100) for j in range(0x100)],
        ):
            free = [p for p in pool if p not in used]
            if free:
                return free[secrets.randbelow(len(free))]
        raise ManagerError("no Gid prefix available")


def _sid_candidates(max_len: int, taken: set[bytes]) -> Iterable[bytes]:
    """Non-empty IDs, shortest first, skipping ``taken``."""
    for length in range(1, max_len + 1):
        for i in range(1 << (8 * length)):
            sid = i.to_bytes(length, "big")
            if sid not in taken:
                yield sid
