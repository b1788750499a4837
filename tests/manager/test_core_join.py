"""Joining: PoP both ways, access list, roles, Sender IDs, and rejected joins leaving no trace."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest

from grouposcore.cose import ES256, Credential, signature_by_id
from grouposcore.manager import member as mb
from grouposcore.manager.core import GmResponse, GroupManager
from grouposcore.manager.membership import RejoinBudget
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    KeyParam,
    Param,
    Role,
    bstr_cbor,
    decode_problem_details,
    encode_scope,
)
from grouposcore.manager.service import GroupManagerService
from tests.manager.helpers import RS, Harness, check_invariants


def _error_id(r: object) -> int | None:
    assert r.content_format == CF_PROBLEM_DETAILS  # type: ignore[attr-defined]
    return decode_problem_details(r.payload)[0]  # type: ignore[attr-defined]


def test_three_members_join_with_unique_sids_and_full_material(harness: Harness) -> None:
    gm = harness.gm
    gm.create_group("gp1", backward_security=False)
    nodes = [harness.join(n, "gp1") for n in ("alice", "bob", "carol")]
    mats = [n.material for n in nodes]
    assert all(m is not None for m in mats)
    sids = [m.sender_id for m in mats if m]
    assert len(set(sids)) == 3 and all(sids)
    g = gm.group("gp1")
    assert g is not None
    for m in mats:
        assert m is not None
        assert (m.master_secret, m.master_salt, m.gid, m.num) == (
            g.master_secret,
            g.master_salt,
            g.gid,
            0,
        )
        assert (m.hkdf_alg, m.aead_alg, m.group_enc_alg, m.sign_alg, m.ecdh_alg) == (
            5,
            10,
            10,
            -8,
            -27,
        )
        assert m.cred_fmt == 14 and m.sign_params == [[1], [1, 6]]
        assert m.ecdh_params == [[1], [1, 4]]
        assert m.gm_credential == gm.gm_credential("gp1")
    # Carol asked for credentials and got Alice's and Bob's, exact bytes, with roles.
    carol = mats[2]
    assert carol is not None
    assert {sid: p.credential for sid, p in carol.peers.items()} == {
        mats[0].sender_id: harness.nodes["alice"].credential,  # type: ignore[union-attr]
        mats[1].sender_id: harness.nodes["bob"].credential,  # type: ignore[union-attr]
    }
    assert {p.roles for p in carol.peers.values()} == {6}
    check_invariants(gm)


def test_join_response_fields_and_location(harness: Harness) -> None:
    harness.gm.create_group("g")
    harness.gm.allow("n1", "g", RS)
    n = harness.node("n1")
    ch = harness.challenge("n1", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    r = harness.request("n1", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
    assert r.code == Code.CREATED and r.content_format == CF_ACE_GROUPCOMM
    assert r.location_path == ("ace-group", "g", "nodes", "n1")
    body = cbor2.loads(r.payload)
    assert body[Param.GKTY] == 1 and body[Param.ACE_GROUPCOMM_PROFILE] == 1
    assert body[Param.EXI] > 0 and body[Param.EXP] > 0
    assert body[Param.GROUP_POLICIES] == {1: 3600, 2: 0}
    key = body[Param.KEY]
    assert len(key[KeyParam.MS]) == 16 and key[KeyParam.GROUP_SENDER_ID] == b"\x00"
    assert key[KeyParam.HKDF] == 5 and key[KeyParam.CRED_FMT] == 14
    # The GM's PoP: its signature over bstr(N_C) | bstr(N_KDC), checked independently.
    gm_cred = Credential.from_ccs(body[Param.KDC_CRED])
    signature_by_id(-8).verify(
        gm_cred.public_key,
        body[Param.KDC_CRED_VERIFY],
        bstr_cbor(p.cnonce) + bstr_cbor(body[Param.KDC_NONCE]),
    )
    assert body[Param.CREDS] == [] and body[Param.PEER_IDENTIFIERS] == []


def test_challenge_answer_carries_sign_info(harness: Harness) -> None:
    harness.gm.create_group("g", sign_alg=-7)
    harness.gm.allow("n", "g", RS)
    n = harness.node("n", ES256)
    p = mb.build_join_request("g", RS, credential=n.credential)
    r = harness.request("n", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
    ch = mb.parse_challenge(r.payload)
    assert r.code == Code.BAD_REQUEST and len(ch.kdcchallenge) >= 8
    assert (ch.sign_alg, ch.ecdh_alg) == (-7, -27)


def test_es256_group_join(harness: Harness) -> None:
    harness.gm.create_group("g", sign_alg=-7)
    harness.node("n", ES256)
    n = harness.join("n", "g")
    assert n.material is not None and n.material.sign_params == [[2], [2, 1]]


def _rejected(harness: Harness, payload: bytes, node: str = "eve") -> object:
    before = harness.gm.snapshot()
    r = harness.request(node, "POST", "ace-group/g", payload, CF_ACE_GROUPCOMM)
    assert r.code == Code.BAD_REQUEST
    assert harness.gm.snapshot() == before
    assert harness.gm.store.member("g", node) is None
    return r


@pytest.fixture
def eve(harness: Harness) -> Harness:
    harness.gm.create_group("g")
    harness.join("alice", "g")
    harness.gm.allow("eve", "g", RS)
    harness.node("eve")
    return harness


def test_wrong_pop_is_rejected_without_state(eve: Harness) -> None:
    n = eve.nodes["eve"]
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    body = cbor2.loads(p.payload)
    sig = bytearray(body[Param.CLIENT_CRED_VERIFY])
    sig[5] ^= 1
    body[Param.CLIENT_CRED_VERIFY] = bytes(sig)
    assert _error_id(_rejected(eve, cbor2.dumps(body))) == ErrorId.INVALID_POP
    # The challenge survives a failed attempt: the honest retry still works.
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    assert eve.request("eve", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM).code == 65


def test_pop_over_another_scope_or_nonce_fails(eve: Harness) -> None:
    n = eve.nodes["eve"]
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    body = cbor2.loads(p.payload)
    body[Param.CNONCE] = b"\x01" * 16  # signature was over another N_C
    assert _error_id(_rejected(eve, cbor2.dumps(body))) == ErrorId.INVALID_POP


def test_replayed_challenge_is_rejected(eve: Harness) -> None:
    n = eve.nodes["eve"]
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    assert eve.request("eve", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM).code == 65
    # Leave, then replay the recorded join: the challenge was consumed.
    assert eve.request("eve", "DELETE", "ace-group/g/nodes/eve").code == Code.DELETED
    r = _rejected(eve, p.payload)
    assert r.content_format == CF_ACE_GROUPCOMM  # a fresh challenge, not a membership
    # Even after a new challenge exists, the old PoP does not fit it.
    assert _error_id(_rejected(eve, p.payload)) == ErrorId.INVALID_POP


def test_credential_for_another_key_is_rejected(eve: Harness) -> None:
    n = eve.nodes["eve"]
    other = eve.node("mallory")
    ch = eve.challenge("eve", "g")
    # Eve presents Mallory's credential but can only sign with her own key.
    p = mb.build_join_request("g", RS, credential=other.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    assert _error_id(_rejected(eve, p.payload)) == ErrorId.INVALID_POP


def test_credential_not_fitting_the_group_is_rejected(eve: Harness) -> None:
    key = ES256.generate_private_key()
    cred = Credential.build_ccs(key.public_key(), -7, "eve").raw
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=cred, private_key=key, challenge=ch)
    assert _error_id(_rejected(eve, p.payload)) == ErrorId.CRED_INCOMPATIBLE
    p = mb.build_join_request("g", RS, credential=b"\xa1\x01\x02", private_key=key,
                              challenge=ch, sign_alg=-7)  # fmt: skip
    assert _error_id(_rejected(eve, p.payload)) == ErrorId.CRED_INCOMPATIBLE


def test_credential_of_another_member_is_rejected(eve: Harness) -> None:
    alice = eve.nodes["alice"]
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=alice.credential,
                              private_key=alice.private_key, challenge=ch)  # fmt: skip
    assert _error_id(_rejected(eve, p.payload)) == ErrorId.CRED_INCOMPATIBLE


def test_not_on_access_list_is_forbidden(harness: Harness) -> None:
    harness.gm.create_group("g")
    n = harness.node("x")
    before = harness.gm.snapshot()
    p = mb.build_join_request("g", RS, credential=n.credential)
    assert harness.request("x", "POST", "ace-group/g", p.payload, 261).code == Code.FORBIDDEN
    assert harness.request("x", "GET", "ace-group/g").code == Code.FORBIDDEN
    assert harness.request("x", "GET", "ace-group/nope").code == Code.FORBIDDEN
    assert harness.gm.snapshot() == before


def test_roles_beyond_the_access_list_are_forbidden(harness: Harness) -> None:
    harness.gm.create_group("g")
    harness.gm.allow("x", "g", [Role.REQUESTER])
    p = mb.build_join_request("g", RS, credential=harness.node("x").credential)
    assert harness.request("x", "POST", "ace-group/g", p.payload, 261).code == Code.FORBIDDEN


@pytest.mark.parametrize("perm", [1 << 1 | 1 << 3, 1 << 2 | 1 << 3, 1 << 4, 1, 1 << 5])
def test_inconsistent_roles_are_rejected(harness: Harness, perm: int) -> None:
    harness.gm.create_group("g")
    harness.gm.allow("x", "g", 0b11110)
    body = {Param.SCOPE: cbor2.dumps([["g", perm]]), Param.CNONCE: b"n" * 8}
    before = harness.gm.snapshot()
    r = harness.request("x", "POST", "ace-group/g", cbor2.dumps(body), 261)
    assert r.code == Code.BAD_REQUEST
    if perm not in (1, 1 << 5):
        assert _error_id(r) == ErrorId.ROLES_INCONSISTENT
    assert harness.gm.snapshot() == before


def test_scope_for_another_group_is_rejected(harness: Harness) -> None:
    harness.gm.create_group("g")
    harness.gm.allow("x", "g", RS)
    body = {Param.SCOPE: encode_scope([("h", 6)]), Param.CNONCE: b"n" * 8}
    r = harness.request("x", "POST", "ace-group/g", cbor2.dumps(body), 261)
    assert r.code == Code.BAD_REQUEST


def test_monitor_gets_no_sender_id_and_no_challenge(harness: Harness) -> None:
    harness.gm.create_group("g", backward_security=False)
    harness.join("a", "g")
    mon = harness.join("mon", "g", [Role.MONITOR])
    assert mon.material is not None and mon.material.sender_id is None
    assert list(mon.material.peers) == [b"\x00"]
    rec = harness.gm.store.member("g", "mon")
    assert rec is not None and rec.sender_id is None and rec.credential is None
    # A monitor neither asks for a new Sender ID nor uploads a credential.
    assert harness.request("mon", "POST", "ace-group/g/nodes/mon").code == Code.BAD_REQUEST
    assert harness.request("mon", "POST", "ace-group/g/nodes/mon/cred", b"\xa0").code == 132
    # Monitors are not offered as credential holders to others.
    r = harness.request("a", "GET", "ace-group/g/creds")
    assert list(mb.parse_creds(r.payload)) == [b"\x00"]
    check_invariants(harness.gm)


def test_fifty_joins_get_fifty_unique_sids(harness: Harness) -> None:
    harness.gm.create_group("big", backward_security=False)
    sids = []
    for i in range(50):
        n = harness.join(f"n{i}", "big")
        assert n.material is not None
        sids.append(n.material.sender_id)
    assert len(set(sids)) == 50
    check_invariants(harness.gm)


def test_rejoin_of_a_current_member_rekeys_the_group(harness: Harness) -> None:
    """A current member that joins again lost its state (or changed roles): without new
    keys it would start with empty replay windows under the keys it had, and deliver again
    what it delivered before. The GM rekeys as part of admitting it, even without backward
    security; its old Sender ID is stale in that very rekeying (digest §7.3 (c), §7.4)."""
    harness.gm.create_group("g", backward_security=False)
    first = harness.join("a", "g").material
    harness.join("b", "g")
    before = harness.gm.group("g")
    assert first is not None and before is not None and before.gid == first.gid
    again = harness.join("a", "g", allow=False).material
    g = harness.gm.group("g")
    assert again is not None and g is not None
    assert g.num == before.num + 1 and g.gid != before.gid
    assert g.master_secret != before.master_secret
    assert (again.gid, again.master_secret, again.num) == (g.gid, g.master_secret, g.num)
    # b was told (harness.join delivers the notifications): new keys, a's old ID stale,
    # a's credential under its new Sender ID.
    b = harness.nodes["b"].material
    assert b is not None and (b.gid, b.num) == (g.gid, g.num)
    assert again.sender_id in b.peers
    assert b.peers[again.sender_id].credential == harness.nodes["a"].credential
    stale = cbor2.loads(harness.gm.store.stale_sets("g")[before.num])
    assert stale == [first.sender_id]
    # A join of a node that is not a member rekeys nothing (no backward security).
    harness.join("c", "g")
    assert harness.gm.group("g").num == g.num  # type: ignore[union-attr]
    check_invariants(harness.gm)


def test_rejoining_in_a_loop_is_refused_5_03_with_max_age_after_the_burst(
    tmp_path: Path,
) -> None:
    """Every re-join of a current member rekeys the whole group, so a member re-joining in
    a loop could make the GM rekey without end: after ``rejoin_burst`` joins (its first
    join included) it waits ``rejoin_interval`` per join, refused with 5.03 and Max-Age,
    nothing changed."""
    now = [1000.0]
    gm = GroupManager(tmp_path / "gm.db", clock=lambda: now[0], rejoin_burst=2,
                      rejoin_interval=60)  # fmt: skip
    try:
        h = Harness(gm)
        gm.create_group("g", backward_security=False)
        h.join("a", "g")
        h.join("b", "g")
        h.join("c", "g")  # each first join takes one of its own node's budget only
        p = mb.build_join_request("g", RS)

        def rejoin(node: str) -> GmResponse:
            return h.request(node, "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)

        num = gm.group("g").num  # type: ignore[union-attr]
        assert rejoin("a").code == Code.CHANGED  # its second join of the burst of 2
        assert gm.group("g").num == num + 1  # type: ignore[union-attr]
        before = gm.snapshot()
        r = rejoin("a")
        assert r.code == Code.SERVICE_UNAVAILABLE and r.content_format == CF_PROBLEM_DETAILS
        assert r.max_age == 60 and not r.notifications
        assert gm.snapshot() == before
        now[0] += 20
        assert rejoin("a").max_age == 40
        assert rejoin("b").code == Code.CHANGED  # the budget is per node
        now[0] += 40
        assert rejoin("a").code == Code.CHANGED  # one more per interval
        assert rejoin("a").code == Code.SERVICE_UNAVAILABLE
        wire = GroupManagerService._message(rejoin("a"))
        assert wire.code == Code.SERVICE_UNAVAILABLE and wire.options.max_age == 60
        check_invariants(gm)
    finally:
        gm.close()


@pytest.mark.parametrize("backward_security", [False, True])
def test_leaving_and_joining_in_a_loop_is_refused_5_03_after_the_burst(
    tmp_path: Path, backward_security: bool
) -> None:
    """A leave always rekeys (forward security), and with backward security so does the
    join after it: a node leaving and joining in a loop would make the GM rekey without
    end. The node's joins share the re-join budget, so the loop stops at the burst; its
    leaves are never refused, and other nodes still join at once."""
    now = [1000.0]
    gm = GroupManager(tmp_path / "gm.db", clock=lambda: now[0], rejoin_burst=3,
                      rejoin_interval=60)  # fmt: skip
    try:
        h = Harness(gm)
        gm.create_group("g", backward_security=backward_security)
        h.join("b", "g")
        num = gm.group("g").num  # type: ignore[union-attr]
        for _ in range(3):
            h.join("a", "g")
            assert h.request("a", "DELETE", "ace-group/g/nodes/a").code == Code.DELETED
        rekeys = gm.group("g").num - num  # type: ignore[union-attr]
        assert rekeys == (6 if backward_security else 3)
        p = mb.build_join_request("g", RS, credential=h.node("a").credential)
        before = gm.snapshot()
        r = h.request("a", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
        assert r.code == Code.SERVICE_UNAVAILABLE and r.max_age == 60 and not r.notifications
        assert gm.snapshot() == before  # not even a challenge was handed out
        h.join("c", "g")  # another node is not held up
        now[0] += 60
        h.join("a", "g")  # one more per interval
        check_invariants(gm)
    finally:
        gm.close()


def test_rejoin_budget_forgets_nodes_whose_budget_is_full_again() -> None:
    budget = RejoinBudget(1, 10.0, max_entries=2)
    assert budget.take("g", "a", 0.0) == 0.0 and budget.take("g", "b", 0.0) == 0.0
    assert budget.wait("g", "a", 5.0) == 5.0
    assert budget.take("g", "c", 20.0) == 0.0  # over the bound: a and b are full again
    assert budget.wait("g", "c", 20.0) == 10.0
    assert len(budget._full_at) == 1


def test_rejoin_with_stored_credential_needs_no_new_pop(harness: Harness) -> None:
    harness.gm.create_group("g", backward_security=False)
    first = harness.join("a", "g").material
    assert first is not None
    p = mb.build_join_request("g", RS)  # no client_cred: "use the one you have"
    r = harness.request("a", "POST", "ace-group/g", p.payload, 261)
    assert r.code == Code.CHANGED
    m = mb.parse_join_response(r.payload, p)
    assert m.gid != first.gid  # admitted: a re-join of a current member rekeys
    stored = harness.gm.store.member("g", "a")
    assert stored is not None and stored.credential == harness.nodes["a"].credential


def test_sender_id_length_follows_the_nonce(harness: Harness) -> None:
    # AES-CCM-64-64-128 has a 7-byte nonce: Sender IDs of at most 1 byte, 256 of them.
    g = harness.gm.create_group("small", group_enc_alg=12, aead_alg=12, backward_security=False)
    assert g.max_sid_len == 1
    for i in range(256):
        with harness.gm.store.transaction():
            harness.gm.store.record_allocation("small", g.gid, bytes([i]), f"x{i}")
    harness.gm.allow("late", "small", RS)
    n = harness.node("late")
    ch = harness.challenge("late", "small")
    p = mb.build_join_request("small", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    r = harness.request("late", "POST", "ace-group/small", p.payload, 261)
    assert r.code == Code.SERVICE_UNAVAILABLE and _error_id(r) == ErrorId.NO_NODE_IDS


def test_inactive_group_refuses_joins(harness: Harness) -> None:
    harness.gm.create_group("g")
    harness.join("a", "g")
    notes = harness.gm.set_active("g", False)
    assert [(n.node, cbor2.loads(n.payload)) for n in notes] == [("a", False)]
    harness.gm.allow("b", "g", RS)
    p = mb.build_join_request("g", RS, credential=harness.node("b").credential)
    r = harness.request("b", "POST", "ace-group/g", p.payload, 261)
    assert r.code == Code.SERVICE_UNAVAILABLE and _error_id(r) == ErrorId.GROUP_INACTIVE
    assert cbor2.loads(harness.request("a", "GET", "ace-group/g/active").payload) is False


def test_join_get_creds_role_filter(harness: Harness) -> None:
    harness.gm.create_group("g", backward_security=False)
    harness.join("req", "g", [Role.REQUESTER])
    harness.join("rsp", "g", [Role.RESPONDER])
    harness.gm.allow("c", "g", RS)
    n = harness.node("c")
    ch = harness.challenge("c", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch, get_creds=False)  # fmt: skip
    body = cbor2.loads(p.payload)
    body[Param.GET_CREDS] = [True, [1 << Role.RESPONDER], []]
    sig = signature_by_id(-8).sign(
        n.private_key, bstr_cbor(p.scope) + bstr_cbor(ch) + bstr_cbor(p.cnonce)
    )
    body[Param.CLIENT_CRED_VERIFY] = sig
    r = harness.request("c", "POST", "ace-group/g", cbor2.dumps(body), 261)
    assert r.code == Code.CREATED
    m = mb.parse_join_response(r.payload, p)
    assert [p.credential for p in m.peers.values()] == [harness.nodes["rsp"].credential]


def test_gm_keys_are_per_signature_algorithm(gm: GroupManager) -> None:
    gm.create_group("a")
    gm.create_group("b")
    gm.create_group("c", sign_alg=-7)
    assert gm.gm_credential("a") == gm.gm_credential("b") != gm.gm_credential("c")
    assert Credential.from_ccs(gm.gm_credential("c")).alg == -7


def test_empty_pop_without_earlier_proof_is_invalid_pop_error_3(eve: Harness) -> None:
    n = eve.nodes["eve"]
    eve.challenge("eve", "g")  # even with a live challenge, empty evidence proves nothing
    body = cbor2.loads(mb.build_join_request("g", RS, credential=n.credential).payload)
    body[Param.CLIENT_CRED_VERIFY] = b""
    r = _rejected(eve, cbor2.dumps(body))
    assert _error_id(r) == ErrorId.INVALID_POP
    # A member that proved possession of this very credential may re-join with empty evidence.
    alice = eve.nodes["alice"]
    body = cbor2.loads(mb.build_join_request("g", RS, credential=alice.credential).payload)
    body[Param.CLIENT_CRED_VERIFY] = b""
    r = eve.request("alice", "POST", "ace-group/g", cbor2.dumps(body), CF_ACE_GROUPCOMM)
    assert r.code == Code.CHANGED
    # A credential update always needs real evidence.
    rec = eve.gm.store.member("g", "alice")
    assert rec is not None
    upd = {Param.CLIENT_CRED: alice.credential, Param.CNONCE: b"c" * 8,
           Param.CLIENT_CRED_VERIFY: b""}  # fmt: skip
    before = eve.gm.snapshot()
    r = eve.request("alice", "POST", "ace-group/g/nodes/alice/cred", cbor2.dumps(upd), 261)
    assert r.code == Code.BAD_REQUEST and _error_id(r) == ErrorId.INVALID_POP
    assert eve.gm.snapshot() == before


def test_responder_only_node_cannot_take_the_requester_role(harness: Harness) -> None:
    harness.gm.create_group("g")
    harness.gm.allow("x", "g", [Role.RESPONDER])
    n = harness.node("x")
    for roles in ([Role.REQUESTER], RS):
        p = mb.build_join_request("g", roles, credential=n.credential)
        r = harness.request("x", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
        assert r.code == Code.FORBIDDEN
    assert harness.gm.store.member("g", "x") is None
    joined = harness.join("x", "g", [Role.RESPONDER], allow=False)
    assert joined.material is not None and joined.material.roles == 1 << Role.RESPONDER


def test_creds_refused_to_allowed_node_that_is_neither_member_nor_verifier(
    harness: Harness,
) -> None:
    harness.gm.create_group("g", backward_security=False)
    harness.join("a", "g")
    harness.gm.allow("d", "g", RS)  # on the access list, never joined
    r = harness.request("d", "GET", "ace-group/g/creds")
    assert r.code == Code.FORBIDDEN and _error_id(r) == ErrorId.ONLY_MEMBERS
    body = mb.build_creds_fetch(True, [], [b"\x00"])
    r = harness.request("d", "FETCH", "ace-group/g/creds", body, CF_ACE_GROUPCOMM)
    assert r.code == Code.FORBIDDEN and _error_id(r) == ErrorId.ONLY_MEMBERS


def test_gm_challenge_expires_on_the_injected_clock(tmp_path: Path) -> None:
    now = [1000.0]
    gm = GroupManager(tmp_path / "gm.db", clock=lambda: now[0], challenge_ttl=10.0)
    try:
        h = Harness(gm)
        gm.create_group("g")
        for name, wait, expired in (("early", 9.0, False), ("late", 11.0, True)):
            gm.allow(name, "g", RS)
            n = h.node(name)
            ch = h.challenge(name, "g")
            now[0] += wait
            p = mb.build_join_request("g", RS, credential=n.credential,
                                      private_key=n.private_key, challenge=ch)  # fmt: skip
            r = h.request(name, "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
            if expired:  # answered with a new challenge, not a membership
                assert r.code == Code.BAD_REQUEST and r.content_format == CF_ACE_GROUPCOMM
                assert mb.parse_challenge(r.payload).kdcchallenge != ch
                assert gm.store.member("g", name) is None
            else:
                assert r.code == Code.CREATED
    finally:
        gm.close()


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([Role.REQUESTER], {"rsp", "both"}),
        ([Role.RESPONDER], {"req", "both"}),
        (RS, {"req", "rsp", "both"}),
        ([Role.MONITOR], {"req", "both"}),
    ],
)
def test_get_creds_null_returns_only_the_members_relevant_to_the_joiner(
    harness: Harness, roles: list[Role], expected: set[str]
) -> None:
    harness.gm.create_group("g", backward_security=False)
    harness.join("req", "g", [Role.REQUESTER])
    harness.join("rsp", "g", [Role.RESPONDER])
    harness.join("both", "g", RS)
    harness.join("mon", "g", [Role.MONITOR])
    joined = harness.join("new", "g", roles)  # get_creds: null
    assert joined.material is not None
    by_sid = {m.sender_id: m.node for m in harness.gm.members("g")}
    assert {by_sid[sid] for sid in joined.material.peers} == expected


def test_join_without_get_creds_reads_no_member_list(harness: Harness) -> None:
    """Admission cost must not grow with the group: a joiner that asks for no credentials is
    checked for a duplicate public key by an index lookup, never by reading every member."""
    harness.gm.create_group("g", backward_security=False)
    for name in ("alice", "bob"):
        harness.join(name, "g")
    store = harness.gm.store
    read = store.members
    calls: list[str] = []

    def counting(group: str) -> list[object]:
        calls.append(group)
        return read(group)  # type: ignore[return-value]

    store.members = counting  # type: ignore[method-assign, assignment]
    n = harness.node("carol")
    harness.gm.allow("carol", "g", RS)
    ch = harness.challenge("carol", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch, get_creds=False)  # fmt: skip
    assert (
        harness.request("carol", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM).code
        == Code.CREATED
    )
    assert calls == []


def test_key_of_a_member_that_changed_its_credential_is_free_again(eve: Harness) -> None:
    """The public-key index follows credential updates: Alice's old key no longer blocks a
    joiner, her new key does."""
    alice = eve.nodes["alice"]
    old = eve.node("old-alice")
    old.private_key, old.credential = alice.private_key, alice.credential
    fresh = signature_by_id(-8).generate_private_key()
    new_cred = Credential.build_ccs(fresh.public_key(), -8, "alice").raw
    r = eve.request("alice", "POST", "ace-group/g/nodes/alice/cred",
                    cbor2.dumps({Param.CLIENT_CRED: new_cred, Param.CNONCE: b"\x02" * 8}),
                    CF_ACE_GROUPCOMM)  # fmt: skip
    ch = mb.parse_challenge(r.payload).kdcchallenge
    scope = eve.gm.store.member("g", "alice").scope  # type: ignore[union-attr]
    pop = signature_by_id(-8).sign(fresh, bstr_cbor(scope) + bstr_cbor(ch)
                                   + bstr_cbor(b"\x02" * 8))  # fmt: skip
    r = eve.request("alice", "POST", "ace-group/g/nodes/alice/cred",
                    cbor2.dumps({Param.CLIENT_CRED: new_cred, Param.CNONCE: b"\x02" * 8,
                                 Param.CLIENT_CRED_VERIFY: pop}), CF_ACE_GROUPCOMM)  # fmt: skip
    assert r.code == Code.CHANGED
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=new_cred, private_key=fresh, challenge=ch)
    assert _error_id(_rejected(eve, p.payload)) == ErrorId.CRED_INCOMPATIBLE
    ch = eve.challenge("eve", "g")
    p = mb.build_join_request("g", RS, credential=alice.credential,
                              private_key=alice.private_key, challenge=ch)  # fmt: skip
    assert (
        eve.request("eve", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM).code == Code.CREATED
    )
