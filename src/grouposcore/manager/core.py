"""The Group Manager, sans-I/O: RFC 9594's /ace-group resources for Group OSCORE groups.

:meth:`GroupManager.handle` takes one already-decoded request from an already-authenticated
node (the edge has verified the node's pairwise OSCORE channel) and returns the response plus
the notifications (rekeying, eviction) the edge has to deliver. Nothing here does I/O except
through the :class:`~grouposcore.manager.store.Store`; every state change is one store
transaction, committed before the response exists.

Authorisation is the "pre-authorised" variant of digest §15.3: an access list (node -> group ->
allowed roles) replaces the ACE access token, and the challenge N_S is obtained in-band
(:mod:`grouposcore.manager.pop`).

This module holds the administration API and the request dispatcher (who may do what).
The rest lives beside it, split along its seams: :mod:`.membership` (join, leave, Sender ID
renewal, credential update), :mod:`.resources` (the read-only resources), :mod:`.rekeying`
(Sender IDs, stale sets, rekeying), :mod:`.pop` (challenges and proof of possession),
:mod:`.material` (message bodies) and :mod:`.responses` (what goes back to the edge).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

from grouposcore.cose import (
    Credential,
    aead_by_id,
    hkdf_by_id,
    key_agreement_by_id,
    private_key_to_bytes,
    signature_by_id,
)
from grouposcore.errors import (
    GroupManagerRequestError,
    ManagerError,
    ManagerMessageError,
)
from grouposcore.manager import admin, resources
from grouposcore.manager.material import (
    MAX_SID_BYTES,
    fetch_filter,
    material_body,
    sign_params_for,
)
from grouposcore.manager.membership import Membership, RejoinBudget
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    Method,
    Param,
    Policy,
    Role,
    dumps,
    encode_problem_details,
    loads_strict,
    method_from,
    roles_from_tperm,
    tperm,
)
from grouposcore.manager.pop import ChallengeAnswer, Challenges, challenge_body
from grouposcore.manager.rekeying import SidPolicy
from grouposcore.manager.responses import (
    GmResponse,
    Notification,
    error_response,
    eviction_notice,
    forbidden,
    only_members,
)
from grouposcore.manager.store import (
    ChannelMaterial,
    GroupRecord,
    MemberRecord,
    Store,
    open_store,
)

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
_CF_CBOR = 60  # application/cbor, accepted for bare CBOR request bodies
_VERIFIER = 1 << Role.VERIFIER


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ManagerError(f"{what} {name!r} must be 1-64 URI-unreserved characters")
    return name


class GroupManager(Membership):
    """A Group Manager for Group OSCORE groups over a persistent :class:`Store`.

    ``store`` is a Store, or a ``--db`` value for :func:`open_store` (a path or a URL).

    ``max_sender_ids_per_node`` bounds how many Sender IDs one node obtains under one Gid
    (its join and renewals together); ``max_relinquished_sender_ids`` is how many given-up
    IDs a Gid may accumulate before the next allocation rekeys the group first.

    A current member that joins again has lost its state (or asks for other roles): the
    group is rekeyed as part of admitting it, so it cannot start on the old keys with empty
    replay windows. So that a node joining in a loop (re-joining, or leaving and joining
    again) cannot make the GM rekey without end, a node may join a group ``rejoin_burst``
    times at once, then once per ``rejoin_interval`` seconds; a join beyond that gets 5.03
    with Max-Age. Distinct nodes do not share a budget.
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        challenge_ttl: float = 300.0,
        subject: str = "group-manager",
        max_sender_ids_per_node: int = 8,
        max_relinquished_sender_ids: int = 256,
        rejoin_burst: int = 3,
        rejoin_interval: float = 60.0,
    ) -> None:
        if max_sender_ids_per_node < 1 or max_relinquished_sender_ids < 1:
            raise ManagerError("the Sender ID bounds must be at least 1")
        self.store = store if isinstance(store, Store) else open_store(store)
        self._clock = clock
        self._random = random_bytes
        self._subject = subject
        self._challenges = Challenges(clock, random_bytes, challenge_ttl, self.store)
        self._sid_policy = SidPolicy(max_sender_ids_per_node, max_relinquished_sender_ids)
        self._rejoins = RejoinBudget(rejoin_burst, rejoin_interval)
        #: the GM's own URI ("coap://host:port"), for the admin interface's 'joining_uri'
        self.base_uri = ""

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
        Gids never collide across groups. ``stale_sets_kept`` (N > 1) counts the current
        version's set of stale Sender IDs too.
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
        if not 1 <= epoch_len <= 4 or stale_sets_kept < 2 or lifetime < 1:
            raise ManagerError("epoch_len 1..4, stale_sets_kept >= 2 and lifetime >= 1 needed")
        max_sid = min(MAX_SID_BYTES, min(nonce_lens) - 6)
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
            self.store.add_stale_set(name, 0, dumps([]), stale_sets_kept)
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

    def allow_admin(self, node: str, pattern: str, perms: Iterable[admin.AdminPerm] | int) -> None:
        """Make ``node`` an administrator of the groups matching ``pattern`` (a group name, or
        ``*`` for all) with ``perms`` (AdminPerm values or their bitmap; 0 revokes)."""
        _check_name(node, "node name")
        if pattern != admin.WILDCARD:
            _check_name(pattern, "group name pattern")
        value = perms if isinstance(perms, int) else sum(1 << p for p in set(perms))
        if not 0 <= value < 1 << len(admin.AdminPerm):
            raise ManagerError(f"admin permissions {value} out of range")
        with self.store.transaction():
            self.store.set_admin(node, pattern, value)

    def administer(
        self,
        method: str | int,
        path: Iterable[str],
        payload: bytes = b"",
        content_format: int | None = None,
    ) -> GmResponse:
        """One admin-interface request (/manage...) from the local operator, who holds the
        database and so every permission; same semantics as over the network."""
        try:
            m = method_from(method)
            if m is None:
                raise GroupManagerRequestError("method not allowed",
                                               code=Code.METHOD_NOT_ALLOWED)  # fmt: skip
            return admin.dispatch(self, None, m, tuple(path), bytes(payload), content_format,
                                  self.base_uri)  # fmt: skip
        except GroupManagerRequestError as e:
            return error_response(e)
        except ManagerMessageError as e:
            return GmResponse(
                Code.BAD_REQUEST, encode_problem_details(None, str(e)), CF_PROBLEM_DETAILS
            )

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
            m = self.store.member(group, node)
            if m is None:
                raise ManagerError(f"{node!r} is not a member of {group!r}")
            self._remove_member(g, m)
            if revoke:
                self.store.set_access(node, group, 0)
            _, notes, _ = self._rekey(g)
        self._challenges.consume(node)
        return [eviction_notice(group, node), *notes]

    def rekey(self, group: str) -> list[Notification]:
        """Rekey ``group`` now (e.g. periodically, or before the material expires)."""
        with self.store.transaction():
            _, notes, _ = self._rekey(self._group(group))
        return notes

    def rekey_if_expired(self, group: str, now: float) -> list[Notification]:
        """Rekey ``group`` if its material has expired by ``now``; nothing otherwise. The
        check is inside the rekeying transaction, so when several GM processes notice the
        same expiry only the first rekeys."""
        with self.store.transaction():
            g = self._group(group)
            if g.exp > now:
                return []
            _, notes, _ = self._rekey(g)
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
                sid = _free_channel_id(self.store)
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
            return error_response(e)
        except ManagerMessageError as e:
            return GmResponse(
                Code.BAD_REQUEST, encode_problem_details(None, str(e)), CF_PROBLEM_DETAILS
            )
        except ChallengeAnswer:
            g = self.store.group(parts[1]) if len(parts) > 1 else None
            body = challenge_body(self._challenges.issue(node), g)
            return GmResponse(Code.BAD_REQUEST, dumps(body), CF_ACE_GROUPCOMM)
        except self.store.failures:
            log.exception("store failure while serving %s %r", method, parts)
            return GmResponse(Code.INTERNAL_SERVER_ERROR)

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
        if (
            not path
            or path[0] not in ("ace-group", "manage")
            or not all(isinstance(p, str) for p in path)
        ):
            raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
        if method is None:
            raise GroupManagerRequestError("method not allowed", code=Code.METHOD_NOT_ALLOWED)
        if path[0] == "manage":
            return admin.dispatch(self, node, method, path, payload, cf, self.base_uri)
        if len(path) == 1:
            _allow_methods(method, Method.FETCH)
            return resources.gid_lookup(self.store, node, _body(payload, cf))
        name = path[1]
        rest = path[2:]
        allowed = self.store.allowed_roles(node, name) if _NAME_RE.fullmatch(name) else 0
        g = self.store.group(name) if _NAME_RE.fullmatch(name) else None
        member = self.store.member(name, node) if g is not None else None
        if not allowed and member is None:
            raise forbidden(f"{node} is not authorised for group {name}")
        if g is None:
            raise GroupManagerRequestError("no such group", code=Code.NOT_FOUND)
        verifier = member is None and bool(allowed & _VERIFIER)
        if not rest:
            _allow_methods(method, Method.GET, Method.POST)
            if method == Method.POST:
                return self._join(node, g, member, _body(payload, cf))
            return self._get_material(g, _require_member(member))
        head, tail = rest[0], rest[1:]
        if head == "nodes" and len(tail) in (1, 2):
            return self._node_resource(node, method, g, member, tail, payload, cf)
        if tail:
            raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
        if head == "creds":
            _allow_methods(method, Method.GET, Method.FETCH)
            if not verifier:
                _require_member(member)
            f = None if method == Method.GET else fetch_filter(_body(payload, cf))
            return resources.creds(self.store, g, f)
        if head == "kdc-cred":
            _allow_methods(method, Method.GET, Method.FETCH)
            if method == Method.FETCH:
                if not verifier:
                    _require_member(member)
                return resources.kdc_cred_fetch(self.store, g, _body(payload, cf), self._random)
            return resources.kdc_cred(self.store, g, _require_member(member), self._random)
        if head == "verif-data":
            _allow_methods(method, Method.GET)
            if not verifier:
                raise forbidden("operation permitted only to signature verifiers",
                                ErrorId.VERIFIERS_ONLY)  # fmt: skip
            return resources.verif_data(g, self._clock())
        if head in ("num", "active", "policies", "stale-sids"):
            _require_member(member)
            if head == "stale-sids":
                _allow_methods(method, Method.FETCH)
                return resources.stale_sids(self.store, g, _body(payload, cf))
            _allow_methods(method, Method.GET)
            if head == "policies":
                body = {Param.GROUP_POLICIES: loads_strict(g.policies, "stored policies")}
                return GmResponse(Code.CONTENT, dumps(body), CF_ACE_GROUPCOMM)
            value = g.num if head == "num" else g.active
            return GmResponse(Code.CONTENT, dumps(value), None, observable=True)
        raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)

    def _node_resource(
        self,
        node: str,
        method: Method,
        g: GroupRecord,
        member: MemberRecord | None,
        tail: tuple[str, ...],
        payload: bytes,
        cf: int | None,
    ) -> GmResponse:
        """/nodes/NODENAME and /nodes/NODENAME/cred, for the node itself only."""
        if tail[0] != node:
            raise forbidden("a node may only access its own node resource")
        if member is None:
            raise GroupManagerRequestError("not a member", code=Code.NOT_FOUND)
        if len(tail) == 2:
            if tail[1] != "cred":
                raise GroupManagerRequestError("no such resource", code=Code.NOT_FOUND)
            _allow_methods(method, Method.POST)
            return self._update_cred(g, member, _body(payload, cf))
        _allow_methods(method, Method.GET, Method.POST, Method.PUT, Method.DELETE)
        if method == Method.GET:
            return self._get_material(g, member, own=True)
        if method == Method.DELETE:
            return self._leave(g, member)
        return self._renew_sender_id(g, member)

    def _get_material(self, g: GroupRecord, member: MemberRecord, own: bool = False) -> GmResponse:
        body = material_body(g, member if own else None, self._clock())
        return GmResponse(Code.CONTENT, dumps(body), CF_ACE_GROUPCOMM, observable=not own)

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


def _allow_methods(method: Method, *allowed: Method) -> None:
    if method not in allowed:
        raise GroupManagerRequestError("method not allowed", code=Code.METHOD_NOT_ALLOWED)


def _body(payload: bytes, cf: int | None) -> Any:
    if cf not in (None, CF_ACE_GROUPCOMM, _CF_CBOR):
        raise GroupManagerRequestError(
            "expected application/ace-groupcomm+cbor", code=Code.UNSUPPORTED_CONTENT_FORMAT
        )
    return loads_strict(payload, "request payload")


def _require_member(member: MemberRecord | None) -> MemberRecord:
    if member is None:
        raise only_members()
    return member


def _channel_id(index: int) -> bytes:
    """The ``index``-th non-empty channel Sender ID, shortest first (0 -> 00, 256 -> 0000)."""
    length = 1
    while index >= 1 << (8 * length):
        index -= 1 << (8 * length)
        length += 1
    return index.to_bytes(length, "big")


_CHANNEL_IDS = sum(1 << (8 * length) for length in range(1, 5))  # up to 4 bytes


def _free_channel_id(store: Store) -> bytes:
    """A channel Sender ID no node uses, in a few index lookups (not a read of every
    channel): IDs go out in order, shortest first, and a re-commissioned node keeps its
    own, so with N channels the first N are taken and the probe starts at the N-th. An ID
    an EDHOC channel took out of order only moves the probe on; gaps below it are used
    once the space above runs out."""
    start = store.channel_count()
    for index in itertools.chain(range(start, _CHANNEL_IDS), range(min(start, _CHANNEL_IDS))):
        sid = _channel_id(index)
        if store.channel_by_sender_id(sid) is None:
            return sid
    raise ManagerError("every channel Sender ID is taken")
