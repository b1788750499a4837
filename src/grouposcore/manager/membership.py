"""Membership changes at the Group Manager: join, leave, Sender ID renewal, credential update.

These are the operations that write: each runs in one store transaction and may rekey the
group. They are a mixin of :class:`~grouposcore.manager.core.GroupManager` (which supplies
the store, the clock, the randomness, the challenges and the Sender ID bounds) so that the
manager module keeps only administration and request dispatch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from grouposcore.cose import Credential, signature_by_id
from grouposcore.errors import CoseError, GroupManagerRequestError, ManagerError
from grouposcore.manager.material import (
    N_KDC_LEN,
    creds_fields,
    kdc_pop,
    material_body,
    parse_get_creds,
    rekeying_body,
    relevant_peers,
    select,
)
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    Param,
    Role,
    decode_scope,
    dumps,
    encode_problem_details,
    expect_bytes,
    expect_map,
    loads_strict,
    validate_member_roles,
)
from grouposcore.manager.pop import ChallengeAnswer, Challenges
from grouposcore.manager.rekeying import SidPolicy, allocate_sid, crowded, rekey, relinquish
from grouposcore.manager.responses import (
    GmResponse,
    Notification,
    forbidden,
    reject,
)
from grouposcore.manager.store import GroupRecord, MemberRecord, Store
from grouposcore.manager.store.base import credential_key

__all__ = ["Membership", "RejoinBudget"]

_NONCE_MIN, _NONCE_MAX = 8, 64


class RejoinBudget:
    """How often one node may join a group: every join can cost the group a rekeying.

    A current member joining again forces one (it lost its state); a join after a leave
    costs one at the leave (forward security) and, with backward security, one at the join.
    Counting every join of the node bounds all of these loops, while distinct nodes never
    wait for each other and a node's first join always goes through.

    A generic cell rate algorithm per (group, node): ``burst`` joins at once, then one per
    ``interval`` seconds. It keeps one number per node that joined recently (the time
    its budget is full again) and forgets the ones whose budget is full. It is this
    process's count: GM processes sharing one database each grant their own budget.
    """

    def __init__(self, burst: int, interval: float, max_entries: int = 4096) -> None:
        if burst < 1 or not interval >= 0:
            raise ManagerError("rejoin_burst must be >= 1 and rejoin_interval >= 0")
        self.burst = burst
        self.interval = float(interval)
        self._max_entries = max_entries
        self._full_at: dict[tuple[str, str], float] = {}

    def wait(self, group: str, node: str, now: float) -> float:
        """Seconds until ``node`` may join (0.0: now); nothing is taken."""
        due = max(self._full_at.get((group, node), now), now)
        return max(0.0, due - now - (self.burst - 1) * self.interval)

    def take(self, group: str, node: str, now: float) -> float:
        """Like :meth:`wait`, and when that is 0.0 the join is counted."""
        wait = self.wait(group, node, now)
        if wait:
            return wait
        key = (group, node)
        self._full_at[key] = max(self._full_at.get(key, now), now) + self.interval
        if len(self._full_at) > self._max_entries:
            self._full_at = {k: t for k, t in self._full_at.items() if t > now}
        return 0.0


class Membership:
    """The writing operations of the Group Manager (mixed into GroupManager)."""

    store: Store
    _clock: Callable[[], float]
    _random: Callable[[int], bytes]
    _challenges: Challenges
    _sid_policy: SidPolicy
    _rejoins: RejoinBudget

    def _group(self, name: str) -> GroupRecord:
        g = self.store.group(name)
        if g is None:
            raise ManagerError(f"no group {name!r}")
        return g

    def rekeying_message(self, group: str) -> bytes:
        """The rekeying message that installed the current version (for a late push).

        Its stale IDs are the previous version's set; empty if that set is no longer kept.
        """
        g = self._group(group)
        encoded = self.store.stale_sets(group).get(g.num - 1)
        stale = [] if encoded is None else loads_strict(encoded, "stored stale set")
        return dumps(rekeying_body(g, stale, self._clock()))

    # --- membership changes (each inside one transaction) ---------------------------------

    def _rekey(
        self, g: GroupRecord, skip_node: str | None = None
    ) -> tuple[GroupRecord, list[Notification], bytes]:
        return rekey(self.store, g, random_bytes=self._random, now=self._clock(),
                     skip_node=skip_node)  # fmt: skip

    def _remove_member(self, g: GroupRecord, m: MemberRecord) -> None:
        """End a membership; its Sender ID becomes stale under the current version at once."""
        self.store.delete_member(g.name, m.node)
        relinquish(self.store, g, [m.sender_id] if m.sender_id is not None else [])

    def _join(
        self, node: str, g: GroupRecord, existing: MemberRecord | None, body: Any
    ) -> GmResponse:
        req = expect_map(body, "Join Request")
        scope = expect_bytes(req.get(Param.SCOPE), "'scope'", min_len=1, max_len=512)
        entries = decode_scope(scope)
        if len(entries) != 1 or entries[0][0] != g.name:
            raise reject("'scope' must name exactly this group")
        perm = entries[0][1]
        roles = validate_member_roles(perm)
        if perm & ~self.store.allowed_roles(node, g.name):
            raise forbidden(f"{node} may not take these roles in {g.name}")
        cnonce = expect_bytes(
            req.get(Param.CNONCE), "'cnonce'", min_len=_NONCE_MIN, max_len=_NONCE_MAX
        )
        get_creds = req.get(Param.GET_CREDS)
        creds_filter = None if get_creds is None else parse_get_creds(get_creds)
        client_cred = req.get(Param.CLIENT_CRED)
        if client_cred is not None:
            client_cred = expect_bytes(client_cred, "'client_cred'", max_len=2048)
        pop = req.get(Param.CLIENT_CRED_VERIFY)
        if pop is not None:
            pop = expect_bytes(pop, "'client_cred_verify'", max_len=512)
        _require_active(g)
        wait = self._rejoins.wait(g.name, node, self._clock())
        if wait:  # before any proof-of-possession work
            return _retry_later(wait)
        monitor = roles == frozenset({Role.MONITOR})
        credential: bytes | None = None
        used_challenge = False
        if not monitor:
            if client_cred:
                cred = self._check_credential(g, client_cred)
                proven = existing is not None and existing.credential == client_cred
                if not (proven and pop == b""):  # empty evidence: "proven before"
                    self._challenges.verify(node, cred, g.sign_alg, scope, cnonce, pop)
                    used_challenge = True
                credential = client_cred
            elif existing is not None and existing.credential:
                credential = existing.credential  # re-join with the credential already proven
            else:
                raise ChallengeAnswer("a credential and proof of possession are needed")
            self._check_unique_key(g, node, credential)

        notes: list[Notification] = []
        with self.store.transaction():
            g = self._group(g.name)
            # Read again under the write lock: another GM process may have joined (or
            # removed) this node since the request was read.
            current = self.store.member(g.name, node)
            wait = self._rejoins.take(g.name, node, self._clock())
            if wait:
                return _retry_later(wait)
            if current is not None:
                # A re-joiner gives up its Sender ID: stale at once, never handed out again
                # under this Gid.
                self._remove_member(g, current)
            elder = node in self.store.evicted_elders(g.name)
            # A current member joining again lost its state (or changed roles, which the
            # GM cannot tell apart): with the same keys its replay windows would start
            # valid and it would deliver again what it delivered before. New keys make every
            # window new (digest §7.3 (c), §7.4).
            if (
                current is not None
                or (g.backward_security and not elder)
                or (not monitor and crowded(self.store, g, self._sid_policy))
            ):
                g, notes, _ = self._rekey(g, skip_node=node)
            sid = None if monitor else allocate_sid(self.store, g, node, self._sid_policy)
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
                extra = creds_fields([member], g.num)
                added: dict[bytes, bytes] = {}  # the rekeying payload is one for everybody
                notes = [_with_fields(n, extra, added) if n.code == Code.CONTENT else n
                         for n in notes]  # fmt: skip
        if used_challenge:
            self._challenges.consume(node)
        body_out = material_body(g, member, self._clock())
        body_out.update(kdc_pop(self.store, g, cnonce, self._random(N_KDC_LEN)))
        if Param.GET_CREDS in req:
            peers = [m for m in self.store.members(g.name) if m.node != node]
            chosen = (
                relevant_peers(peers, perm) if creds_filter is None else select(peers, creds_filter)
            )
            body_out.update(creds_fields(chosen, None))
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
            raise reject(f"credential unusable: {e}", ErrorId.CRED_INCOMPATIBLE) from None
        if not cred.fits_signature(signature_by_id(g.sign_alg)):
            raise reject(
                "credential does not fit the group's signature algorithm",
                ErrorId.CRED_INCOMPATIBLE,
            )
        return cred

    def _check_unique_key(self, g: GroupRecord, node: str, credential: bytes) -> None:
        """4.00 error-id 2 if another member holds the same public key (an index lookup)."""
        if any(n != node for n in self.store.nodes_with_key(g.name, credential_key(credential))):
            raise reject("this public key belongs to another member", ErrorId.CRED_INCOMPATIBLE)

    def _leave(self, g: GroupRecord, member: MemberRecord) -> GmResponse:
        with self.store.transaction():
            g = self._group(g.name)
            member = self._current_member(g, member.node)
            self._remove_member(g, member)
            _, notes, _ = self._rekey(g)
        self._challenges.consume(member.node)
        return GmResponse(Code.DELETED, notifications=tuple(notes))

    def _renew_sender_id(self, g: GroupRecord, member: MemberRecord) -> GmResponse:
        """Key renewal (RFC 9594 §4.8.2): 2.05 with a new Sender ID, or, when the Gid's ID
        space is crowded, a rekeying (the member keeps its Sender ID under the new Gid) whose
        message is the answer."""
        _require_active(g)
        if member.sender_id is None:
            raise reject("a monitor holds no Sender ID", ErrorId.ROLES_INCONSISTENT)
        with self.store.transaction():
            g = self._group(g.name)
            member = self._current_member(g, member.node)
            if member.sender_id is None:
                raise reject("a monitor holds no Sender ID", ErrorId.ROLES_INCONSISTENT)
            if crowded(self.store, g, self._sid_policy):
                _, notes, message = self._rekey(g, skip_node=member.node)
                return GmResponse(Code.CONTENT, message, CF_ACE_GROUPCOMM,
                                  notifications=tuple(notes))  # fmt: skip
            sid = allocate_sid(self.store, g, member.node, self._sid_policy)
            self.store.set_member_sender_id(g.name, member.node, sid)
            relinquish(self.store, g, [member.sender_id])
        return GmResponse(Code.CONTENT, dumps({Param.GROUP_SENDER_ID: sid}), CF_ACE_GROUPCOMM)

    def _current_member(self, g: GroupRecord, node: str) -> MemberRecord:
        """The membership as committed now (inside the caller's write transaction): another
        GM process may have changed it since the request was read."""
        member = self.store.member(g.name, node)
        if member is None:
            raise GroupManagerRequestError("not a member", code=Code.NOT_FOUND)
        return member

    def _update_cred(self, g: GroupRecord, member: MemberRecord, body: Any) -> GmResponse:
        _require_active(g)
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
        self._challenges.verify(member.node, cred, g.sign_alg, member.scope, cnonce, pop)
        self._check_unique_key(g, member.node, raw)
        with self.store.transaction():
            self.store.set_member_credential(g.name, member.node, raw)
        self._challenges.consume(member.node)
        return GmResponse(Code.CHANGED)


def _with_fields(n: Notification, extra: dict[int, Any], done: dict[bytes, bytes]) -> Notification:
    """``n`` with ``extra`` added to its body; ``done`` remembers each payload's result, so
    the notifications of one rekeying share one new payload (one CBOR round per join)."""
    payload = done.get(n.payload)
    if payload is None:
        body = loads_strict(n.payload, "notification")
        body.update(extra)
        payload = done[n.payload] = dumps(body)
    return Notification(n.node, n.group, n.path, n.code, payload, n.content_format)


def _retry_later(wait: float) -> GmResponse:
    """5.03 for a join that came too soon after this node's last ones; Max-Age says when it
    will be admitted."""
    detail = "joined too often recently: each join may rekey the group; try again later"
    return GmResponse(Code.SERVICE_UNAVAILABLE, encode_problem_details(None, detail),
                      CF_PROBLEM_DETAILS, max_age=math.ceil(wait))  # fmt: skip


def _require_active(g: GroupRecord) -> None:
    """Joins, renewals and credential updates wait while the group is inactive (5.03, 9)."""
    if not g.active:
        raise reject("group currently not active", ErrorId.GROUP_INACTIVE, Code.SERVICE_UNAVAILABLE)
