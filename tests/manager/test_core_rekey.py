"""Rekeying (leave, eviction, backward security), stale Sender IDs and the other resources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest

from grouposcore.cose import EDDSA, Credential
from grouposcore.errors import MembershipTerminated
from grouposcore.manager import member as mb
from grouposcore.manager.core import GmResponse, GroupManager
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    KeyParam,
    Param,
    Role,
    decode_problem_details,
)
from tests.manager.helpers import RS, Harness, check_invariants


@pytest.fixture
def trio(harness: Harness) -> Harness:
    harness.gm.create_group("g", backward_security=False)
    for n in ("a", "b", "c"):
        harness.join(n, "g")
    return harness


def _count_sid_lookups(gm: GroupManager) -> Callable[[], int]:
    """Count the store's Sender ID lookups from now on (allocation must not rescan)."""
    count = 0
    original = gm.store.sid_allocated

    def counting(*args: object) -> bool:
        nonlocal count
        count += 1
        return original(*args)  # type: ignore[arg-type]

    gm.store.sid_allocated = counting  # type: ignore[method-assign]
    return lambda: count


def test_leave_rekeys_and_reports_the_leaver_as_stale(trio: Harness) -> None:
    old = trio.gm.group("g")
    assert old is not None
    a_sid = trio.nodes["a"].material.sender_id  # type: ignore[union-attr]
    r = trio.request("a", "DELETE", "ace-group/g/nodes/a")
    assert r.code == Code.DELETED
    new = trio.gm.group("g")
    assert new is not None
    assert new.num == old.num + 1
    assert new.gid != old.gid and new.master_secret != old.master_secret
    assert {n.node for n in r.notifications} == {"b", "c"}
    for note in r.notifications:
        body = cbor2.loads(note.payload)
        assert body[Param.STALE_NODE_IDS] == [a_sid]
        assert note.path == ("ace-group", "g") and note.content_format == CF_ACE_GROUPCOMM
    trio.deliver(r)
    for name in ("b", "c"):
        m = trio.nodes[name].material
        assert m is not None
        assert (m.gid, m.master_secret, m.num) == (new.gid, new.master_secret, new.num)
        assert a_sid not in m.peers
    # Remaining members keep their Sender IDs across the rekeying.
    assert trio.gm.store.member("g", "b").sender_id == b"\x01"  # type: ignore[union-attr]
    assert trio.request("a", "GET", "ace-group/g").code == Code.FORBIDDEN
    check_invariants(trio.gm)


def test_evict_rekeys_and_notifies_the_evicted(trio: Harness) -> None:
    before = trio.gm.group("g")
    notes = trio.gm.evict("g", "b")
    after = trio.gm.group("g")
    assert before is not None and after is not None
    assert after.num == before.num + 1 and after.gid != before.gid
    evicted = [n for n in notes if n.node == "b"]
    assert len(evicted) == 1 and evicted[0].code == Code.NOT_FOUND
    assert evicted[0].path == ("ace-group", "g", "nodes", "b")
    assert decode_problem_details(evicted[0].payload)[0] == ErrorId.MEMBERSHIP_TERMINATED
    with pytest.raises(MembershipTerminated):
        mb.handle_notification(
            trio.nodes["b"].material,  # type: ignore[arg-type]
            evicted[0].code,
            evicted[0].payload,
            evicted[0].content_format,
        )
    # Access is revoked by default: b cannot simply come back.
    p = mb.build_join_request("g", RS, credential=trio.nodes["b"].credential)
    assert trio.request("b", "POST", "ace-group/g", p.payload, 261).code == Code.FORBIDDEN
    check_invariants(trio.gm)


def test_evicted_sender_id_seen_as_stale_by_the_evicted_member(trio: Harness) -> None:
    b = trio.nodes["b"].material
    assert b is not None
    note = next(n for n in trio.gm.evict("g", "b") if n.node == "a")
    # Even the ordinary rekeying message tells b that its own ID is stale.
    with pytest.raises(MembershipTerminated):
        mb.parse_material(note.payload, b)


def test_backward_security_rekeys_on_join(harness: Harness) -> None:
    harness.gm.create_group("g")  # backward security is the default
    a = harness.join("a", "g")
    g1 = harness.gm.group("g")
    b = harness.join("b", "g")
    g2 = harness.gm.group("g")
    assert g1 is not None and g2 is not None
    assert g2.num == g1.num + 1 and g2.gid != g1.gid and g2.master_secret != g1.master_secret
    assert b.material is not None and b.material.gid == g2.gid
    # a was told, and learnt b's credential from the rekeying message itself.
    assert a.material is not None and a.material.gid == g2.gid
    assert a.material.peers[b.material.sender_id].credential == b.credential  # type: ignore[index]


def test_no_rekey_on_join_without_backward_security(trio: Harness) -> None:
    g = trio.gm.group("g")
    assert g is not None and g.num == 0


def test_member_catches_up_after_missing_two_rekeyings(trio: Harness) -> None:
    stale_c = trio.nodes["c"].material
    assert stale_c is not None
    trio.gm.rekey("g")  # c misses both notifications
    trio.request("a", "DELETE", "ace-group/g/nodes/a")
    num = cbor2.loads(trio.request("c", "GET", "ace-group/g/num").payload)
    assert num == stale_c.num + 2
    r = trio.request("c", "FETCH", "ace-group/g/stale-sids",
                     mb.build_stale_sids_request(stale_c.num))  # fmt: skip
    assert r.code == Code.CONTENT
    stale = mb.parse_stale_sids(r.payload)
    assert stale == [b"\x00"]
    current = trio.request("c", "GET", "ace-group/g")
    m = mb.apply_stale(mb.parse_material(current.payload, stale_c), stale)
    g = trio.gm.group("g")
    assert g is not None and (m.gid, m.num, m.master_secret) == (g.gid, g.num, g.master_secret)
    assert set(m.peers) == {b"\x01"} and m.sender_id == b"\x02"


def test_stale_sets_beyond_retention_mean_purge_all(trio: Harness) -> None:
    for _ in range(4):
        trio.gm.rekey("g")
    assert len(trio.gm.store.stale_sets("g")) == 3
    r = trio.request("a", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(0))
    assert r.code == Code.CONTENT and r.payload == b""
    assert mb.parse_stale_sids(r.payload) is None
    # N = 3 sets are kept, the current version's included: V' = 4 answers V = 2 and 3 only.
    r = trio.request("a", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(1))
    assert mb.parse_stale_sids(r.payload) is None
    r = trio.request("a", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(2))
    assert mb.parse_stale_sids(r.payload) == []
    r = trio.request("a", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(9))
    assert r.code == Code.BAD_REQUEST


def test_stale_sids_for_the_current_or_a_newer_version_is_bad_request(trio: Harness) -> None:
    trio.gm.rekey("g")
    g = trio.gm.group("g")
    assert g is not None and g.num == 1
    for v in (g.num, g.num + 1):
        r = trio.request("a", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(v))
        assert r.code == Code.BAD_REQUEST and r.content_format == CF_PROBLEM_DETAILS
    r = trio.request("a", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(0))
    assert r.code == Code.CONTENT and mb.parse_stale_sids(r.payload) == []


def test_relinquished_sender_id_is_stale_at_once_not_only_at_rekeying(trio: Harness) -> None:
    trio.gm.rekey("g")  # version 1; b and c stay at 1
    a = trio.nodes["a"].material
    assert a is not None
    r = trio.request("a", "POST", "ace-group/g/nodes/a")
    assert r.code == Code.CONTENT
    # No rekeying yet: b, asking about version 0, already learns that 0x00 is stale.
    r = trio.request("b", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(0))
    assert mb.parse_stale_sids(r.payload) == [a.sender_id]
    assert cbor2.loads(trio.gm.store.stale_sets("g")[1]) == [a.sender_id]
    # A second renewal gives up the renewed ID the same way.
    renewed = trio.gm.store.member("g", "a").sender_id  # type: ignore[union-attr]
    assert trio.request("a", "POST", "ace-group/g/nodes/a").code == Code.CONTENT
    r = trio.request("b", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(0))
    assert set(mb.parse_stale_sids(r.payload) or []) == {a.sender_id, renewed}
    # The next rekeying distributes exactly that set, and opens an empty one.
    notes = trio.gm.rekey("g")
    stale = cbor2.loads(notes[0].payload)[Param.STALE_NODE_IDS]
    assert set(stale) == {a.sender_id, renewed}
    assert cbor2.loads(trio.gm.store.stale_sets("g")[2]) == []
    # A re-join gives up the ID too; it rekeys the group, whose message carries that ID.
    rejoined = trio.gm.store.member("g", "a").sender_id  # type: ignore[union-attr]
    p = mb.build_join_request("g", RS)
    r = trio.request("a", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
    assert r.code == Code.CHANGED
    assert cbor2.loads(trio.gm.store.stale_sets("g")[2]) == [rejoined]
    for note in r.notifications:
        assert cbor2.loads(note.payload)[Param.STALE_NODE_IDS] == [rejoined]
    check_invariants(trio.gm)


def test_key_renewal_gives_a_new_sid_that_becomes_stale_later(trio: Harness) -> None:
    a = trio.nodes["a"]
    assert a.material is not None
    r = trio.request("a", "POST", "ace-group/g/nodes/a")
    assert r.code == Code.CONTENT  # RFC 9594 §4.8.2: 2.05
    renewed = mb.parse_key_renewal(r.payload, a.material)
    assert renewed.sender_id == b"\x03"
    assert trio.request("a", "PUT", "ace-group/g/nodes/a").code == Code.CONTENT
    notes = trio.gm.rekey("g")
    stale = cbor2.loads(notes[0].payload)[Param.STALE_NODE_IDS]
    assert stale == [b"\x00", b"\x03"]
    check_invariants(trio.gm)


def test_credential_update_with_pop(trio: Harness) -> None:
    a = trio.nodes["a"]
    rec = trio.gm.store.member("g", "a")
    assert rec is not None
    key = EDDSA.generate_private_key()
    cred = Credential.build_ccs(key.public_key(), -8, "a2").raw
    payload, _ = mb.build_cred_update(rec.scope, b"x" * 16, cred, key)
    r = trio.request("a", "POST", "ace-group/g/nodes/a/cred", payload, 261)
    assert r.code == Code.BAD_REQUEST and r.content_format == CF_ACE_GROUPCOMM
    challenge = mb.parse_challenge(r.payload).kdcchallenge
    payload, _ = mb.build_cred_update(rec.scope, challenge, cred, a.private_key)  # wrong key
    before = trio.gm.snapshot()
    r = trio.request("a", "POST", "ace-group/g/nodes/a/cred", payload, 261)
    assert r.code == Code.BAD_REQUEST and r.content_format == CF_PROBLEM_DETAILS
    assert decode_problem_details(r.payload)[0] == ErrorId.INVALID_POP
    assert trio.gm.snapshot() == before
    payload, _ = mb.build_cred_update(rec.scope, challenge, cred, key)
    assert trio.request("a", "POST", "ace-group/g/nodes/a/cred", payload, 261).code == 68
    assert trio.gm.store.member("g", "a").credential == cred  # type: ignore[union-attr]
    # Single use: the same update again needs a fresh challenge.
    r = trio.request("a", "POST", "ace-group/g/nodes/a/cred", payload, 261)
    assert r.code == Code.BAD_REQUEST and r.content_format == CF_ACE_GROUPCOMM


def test_kdc_cred_pop_uses_the_join_nonce(trio: Harness) -> None:
    a = trio.nodes["a"]
    assert a.pending is not None and a.material is not None
    r = trio.request("a", "GET", "ace-group/g/kdc-cred")
    assert r.code == Code.CONTENT
    assert mb.parse_kdc_cred(r.payload, a.pending.cnonce, -8) == a.material.gm_credential
    with pytest.raises(Exception, match="proof of possession"):
        mb.parse_kdc_cred(r.payload, b"another nonce!", -8)


def test_small_resources(trio: Harness) -> None:
    assert cbor2.loads(trio.request("a", "GET", "ace-group/g/num").payload) == 0
    assert cbor2.loads(trio.request("a", "GET", "ace-group/g/active").payload) is True
    r = trio.request("a", "GET", "ace-group/g/policies")
    assert cbor2.loads(r.payload) == {Param.GROUP_POLICIES: {1: 3600, 2: 0}}
    r = trio.request("a", "GET", "ace-group/g")
    assert r.observable and mb.parse_material(r.payload, trio.nodes["a"].material).sender_id
    own = trio.request("a", "GET", "ace-group/g/nodes/a")
    assert cbor2.loads(own.payload)[Param.KEY][7] == b"\x00"
    assert 7 not in cbor2.loads(r.payload)[Param.KEY]


def test_access_control_and_routing(trio: Harness) -> None:
    trio.gm.allow("d", "g", RS)  # allowed, not a member
    err = trio.request("d", "GET", "ace-group/g/num")
    assert err.code == Code.FORBIDDEN
    assert decode_problem_details(err.payload)[0] == ErrorId.ONLY_MEMBERS
    assert trio.request("a", "GET", "ace-group/g/nodes/b").code == Code.FORBIDDEN
    assert trio.request("a", "DELETE", "ace-group/g/nodes/b").code == Code.FORBIDDEN
    assert trio.request("d", "GET", "ace-group/g/nodes/d").code == Code.NOT_FOUND
    assert trio.request("a", "PUT", "ace-group/g").code == Code.METHOD_NOT_ALLOWED
    assert trio.request("a", "GET", "ace-group/g/nonsense").code == Code.NOT_FOUND
    assert trio.request("a", "GET", "other/g").code == Code.NOT_FOUND
    assert trio.request("a", "PATCH", "ace-group/g").code == Code.METHOD_NOT_ALLOWED
    assert trio.request("a", 99, "ace-group/g").code == Code.METHOD_NOT_ALLOWED
    assert trio.request("a", "GET", "ace-group/g/nodes/a/x").code == Code.NOT_FOUND
    assert trio.request("bad name!", "GET", "ace-group/g").code == Code.UNAUTHORIZED
    trio.gm.allow("e", "missing", RS)
    assert trio.request("e", "GET", "ace-group/missing").code == Code.NOT_FOUND
    r = trio.request("a", "POST", "ace-group/g", b"\xa0", 0)
    assert r.code == Code.UNSUPPORTED_CONTENT_FORMAT


def test_verifier_may_read_credentials_only(trio: Harness) -> None:
    trio.gm.allow("v", "g", [Role.VERIFIER])
    r = trio.request("v", "GET", "ace-group/g/creds")
    assert r.code == Code.CONTENT and len(mb.parse_creds(r.payload)) == 3
    assert trio.request("v", "GET", "ace-group/g").code == Code.FORBIDDEN
    body = mb.build_join_request("g", [Role.VERIFIER]).payload
    assert trio.request("v", "POST", "ace-group/g", body, 261).code == Code.BAD_REQUEST


def test_creds_fetch_filters(trio: Harness) -> None:
    trio.join("r", "g", [Role.REQUESTER])

    def fetch(inclusion: bool, roles: list[int], ids: list[bytes]) -> set[bytes]:
        r = trio.request("a", "FETCH", "ace-group/g/creds",
                         mb.build_creds_fetch(inclusion, roles, ids), 261)  # fmt: skip
        assert r.code == Code.CONTENT
        return set(mb.parse_creds(r.payload))

    everyone = {b"\x00", b"\x01", b"\x02", b"\x03"}
    assert fetch(True, [], [b"\x01"]) == {b"\x01"}
    assert fetch(True, [1 << Role.RESPONDER], []) == everyone - {b"\x03"}
    assert fetch(True, [1 << Role.REQUESTER], [b"\x00"]) == everyone
    assert fetch(True, [6], []) == everyone - {b"\x03"}
    assert fetch(False, [], [b"\x00"]) == everyone - {b"\x00"}
    assert fetch(False, [1 << Role.RESPONDER], [b"\x00"]) == {b"\x01", b"\x02"}
    assert fetch(True, [], [b"\x77"]) == set()
    r = trio.request("a", "FETCH", "ace-group/g/creds", mb.build_creds_fetch(True), 261)
    assert r.code == Code.BAD_REQUEST  # both filters empty is malformed
    r = trio.request("a", "GET", "ace-group/g/creds")
    assert cbor2.loads(r.payload)[Param.NUM] == 0


def test_gid_lookup(trio: Harness) -> None:
    g = trio.gm.group("g")
    assert g is not None
    body = cbor2.dumps({Param.GID: [g.gid, b"\xff\xff\xff"]})
    r = trio.request("a", "FETCH", "ace-group", body, 261)
    out = cbor2.loads(r.payload)
    assert out == {Param.GID: [g.gid], Param.GNAME: ["g"], Param.GURI: ["/ace-group/g"]}
    r = trio.request("stranger", "FETCH", "ace-group", body, 261)
    assert cbor2.loads(r.payload) == b""


def test_gid_recycling_evicts_elders(harness: Harness) -> None:
    harness.gm.create_group("g", epoch_len=1, backward_security=False)
    elder = harness.join("elder", "g")
    harness.join("young", "g")
    for _ in range(255):
        harness.gm.rekey("g")
    assert harness.gm.store.member("g", "elder") is not None
    notes = harness.gm.rekey("g")  # epoch wraps to the elder's birth Gid
    g = harness.gm.group("g")
    assert g is not None and elder.material is not None and g.gid == elder.material.gid
    assert harness.gm.store.member("g", "elder") is None
    assert ("elder", Code.NOT_FOUND) in [(n.node, n.code) for n in notes]
    check_invariants(harness.gm)


def test_set_active_and_unknown_groups(harness: Harness) -> None:
    from grouposcore.errors import ManagerError

    with pytest.raises(ManagerError):
        harness.gm.rekey("nope")
    with pytest.raises(ManagerError):
        harness.gm.evict("nope", "x")
    harness.gm.create_group("g")
    with pytest.raises(ManagerError):
        harness.gm.create_group("g")
    with pytest.raises(ManagerError):
        harness.gm.evict("g", "nobody")
    with pytest.raises(ManagerError):
        harness.gm.create_group("bad/name")
    with pytest.raises(ManagerError):
        harness.gm.allow("x", "g", 1)  # bit 0 is reserved


def test_rekeying_message_carries_only_the_changed_material_and_stale_ids(
    trio: Harness,
) -> None:
    notes = trio.gm.rekey("g")
    body = cbor2.loads(notes[0].payload)
    assert set(body) == {Param.GKTY, Param.KEY, Param.NUM, Param.EXP, Param.EXI,
                         Param.ACE_GROUPCOMM_PROFILE, Param.STALE_NODE_IDS}  # fmt: skip
    assert set(body[Param.KEY]) == {KeyParam.MS, KeyParam.CONTEXT_ID, KeyParam.SALT}
    # A rekeying caused by a join adds exactly the joiner's creds triple.
    trio.gm.set_backward_security("g", True)
    r = trio.request("a", "DELETE", "ace-group/g/nodes/a")
    trio.deliver(r)
    d = trio.join("d", "g")
    assert d.material is not None
    note = next(n for n in trio.gm.rekey("g") if n.node == "b")  # plain rekeying again
    assert Param.CREDS not in cbor2.loads(note.payload)
    trio.gm.allow("e", "g", RS)
    e = trio.node("e")
    ch = trio.challenge("e", "g")
    p = mb.build_join_request("g", RS, credential=e.credential, private_key=e.private_key,
                              challenge=ch)  # fmt: skip
    r = trio.request("e", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
    body = cbor2.loads(next(n for n in r.notifications if n.node == "b").payload)
    assert set(body) == {Param.GKTY, Param.KEY, Param.NUM, Param.EXP, Param.EXI,
                         Param.ACE_GROUPCOMM_PROFILE, Param.STALE_NODE_IDS, Param.CREDS,
                         Param.PEER_ROLES, Param.PEER_IDENTIFIERS}  # fmt: skip
    assert body[Param.CREDS] == [e.credential]
    # The members still install it: algorithms and policies stay as learnt at joining.
    trio.deliver(r)
    b = trio.nodes["b"].material
    g = trio.gm.group("g")
    assert b is not None and g is not None
    assert (b.gid, b.num, b.master_secret, b.sign_alg, b.ecdh_alg) == (
        g.gid, g.num, g.master_secret, -8, -27)  # fmt: skip


def test_key_renewal_is_answered_2_05_content(trio: Harness) -> None:
    r = trio.request("b", "PUT", "ace-group/g/nodes/b")
    assert r.code == Code.CONTENT and r.content_format == CF_ACE_GROUPCOMM
    assert set(cbor2.loads(r.payload)) == {Param.GROUP_SENDER_ID}


def _renew(h: Harness, node: str) -> GmResponse:
    return h.request(node, "POST", f"ace-group/g/nodes/{node}")


def test_one_node_cannot_hold_unbounded_sender_ids_under_one_gid(tmp_path: Path) -> None:
    gm = GroupManager(tmp_path / "gm.db", max_sender_ids_per_node=4)
    try:
        h = Harness(gm)
        gm.create_group("g", backward_security=False)
        h.join("a", "g")
        h.join("b", "g")
        for _ in range(3):  # the join's ID plus three renewals
            assert _renew(h, "a").code == Code.CONTENT
        before = gm.snapshot()
        r = _renew(h, "a")
        assert r.code == Code.SERVICE_UNAVAILABLE
        assert decode_problem_details(r.payload)[0] == ErrorId.NO_NODE_IDS
        assert gm.snapshot() == before
        assert _renew(h, "b").code == Code.CONTENT  # the bound is per node
        gm.rekey("g")  # a new Gid: a fresh budget, the kept ID counts as one
        for _ in range(3):
            assert _renew(h, "a").code == Code.CONTENT
        assert _renew(h, "a").code == Code.SERVICE_UNAVAILABLE
        # A re-join no longer allocates under the Gid in use: it rekeys the group (the node
        # lost its state), so it cannot collect IDs under one Gid either; its own loop is
        # bounded by the re-join budget (test_rejoining_in_a_loop_is_refused_5_03_...).
        g = gm.group("g")
        p = mb.build_join_request("g", RS)
        assert h.request("a", "POST", "ace-group/g", p.payload, 261).code == Code.CHANGED
        g2 = gm.group("g")
        assert g is not None and g2 is not None and g2.gid != g.gid
        assert gm.store.allocations_of("g", g2.gid, "a") == 1
        check_invariants(gm)
    finally:
        gm.close()


def test_crowded_sender_id_space_rekeys_instead_of_allocating(tmp_path: Path) -> None:
    gm = GroupManager(tmp_path / "gm.db", max_relinquished_sender_ids=3)
    try:
        h = Harness(gm)
        gm.create_group("g", backward_security=False)
        for n in ("a", "b"):
            h.join(n, "g")
        for _ in range(3):
            r = _renew(h, "a")
            h.nodes["a"].material = mb.parse_key_renewal(
                r.payload,
                h.nodes["a"].material,  # type: ignore[arg-type]
            )
        g = gm.group("g")
        a = h.nodes["a"].material
        assert g is not None and a is not None and g.num == 0
        r = _renew(h, "b")  # three IDs given up under this Gid: rekey first
        assert r.code == Code.CONTENT
        b = mb.parse_key_renewal(r.payload, h.nodes["b"].material)  # type: ignore[arg-type]
        g2 = gm.group("g")
        assert g2 is not None and g2.num == 1 and b.gid == g2.gid
        assert b.sender_id == h.nodes["b"].material.sender_id  # type: ignore[union-attr]
        # The others got the rekeying, with the IDs a gave up as stale.
        h.deliver(r)
        assert h.nodes["a"].material is not None and h.nodes["a"].material.gid == g2.gid
        assert len(cbor2.loads(r.notifications[0].payload)[Param.STALE_NODE_IDS]) == 3
        check_invariants(gm)
    finally:
        gm.close()


def test_small_sender_id_space_is_rekeyed_before_it_runs_out(tmp_path: Path) -> None:
    # 1-byte Sender IDs (7-byte nonce): once 3/4 of the 256 IDs were handed out, rekey.
    gm = GroupManager(tmp_path / "gm.db", max_sender_ids_per_node=1000,
                      max_relinquished_sender_ids=1000)  # fmt: skip
    try:
        h = Harness(gm)
        gm.create_group("g", group_enc_alg=12, aead_alg=12, backward_security=False)
        h.join("a", "g")
        codes = set()
        for _ in range(191):
            r = _renew(h, "a")
            codes.add(Param.GROUP_SENDER_ID in cbor2.loads(r.payload))
        g = gm.group("g")
        assert g is not None and g.num == 0 and codes == {True}
        r = _renew(h, "a")
        assert Param.KEY in cbor2.loads(r.payload)
        g = gm.group("g")
        assert g is not None and g.num == 1
        check_invariants(gm)
    finally:
        gm.close()


def test_sender_id_allocation_does_not_rescan_taken_ids(tmp_path: Path) -> None:
    gm = GroupManager(tmp_path / "gm.db", max_sender_ids_per_node=10_000,
                      max_relinquished_sender_ids=10_000)  # fmt: skip
    try:
        h = Harness(gm)
        gm.create_group("g", backward_security=False)
        for n in ("a", "b", "c"):
            h.join(n, "g")
        gm.rekey("g")  # the kept IDs 0x00-0x02 now sit at the start of the new space
        lookups = _count_sid_lookups(gm)
        gm.store.allocated_sids = None  # type: ignore[assignment,method-assign]  # no full scans
        renewals = 200
        for _ in range(renewals):
            assert _renew(h, "a").code == Code.CONTENT
        # Each allocation checks one candidate: the cursor of the new Gid starts past the
        # three kept IDs, so not even they are looked at again.
        assert lookups() == renewals
    finally:
        gm.close()


def test_evicted_elders_rejoin_without_rekeying_until_the_next_rekeying(
    harness: Harness,
) -> None:
    gm = harness.gm
    gm.create_group("g", epoch_len=1)  # backward security: every other join rekeys
    elder = harness.join("elder", "g")
    assert elder.material is not None
    birth = elder.material.gid
    harness.join("young", "g")
    g = gm.group("g")
    assert g is not None
    while g.epoch != (birth[-1] - 1) % 256:
        gm.rekey("g")
        g = gm.group("g")
        assert g is not None
    notes = gm.rekey("g")  # the Gid comes back to the elder's Birth Gid: evicted
    assert ("elder", Code.NOT_FOUND) in [(n.node, n.code) for n in notes]
    stale = cbor2.loads(next(n for n in notes if n.node == "young").payload)
    assert elder.material.sender_id in stale[Param.STALE_NODE_IDS]
    num = gm.group("g").num  # type: ignore[union-attr]
    harness.join("elder", "g", allow=False)  # remembered: no rekeying for its re-join
    assert gm.group("g").num == num  # type: ignore[union-attr]
    # Forgotten at the next rekeying: a later re-join rekeys as usual.
    assert harness.request("elder", "DELETE", "ace-group/g/nodes/elder").code == Code.DELETED
    harness.join("elder", "g", allow=False)
    assert gm.group("g").num == num + 2  # type: ignore[union-attr]
    check_invariants(gm)


def test_inactive_group_refuses_key_renewal_and_credential_update(trio: Harness) -> None:
    trio.gm.set_active("g", False)
    before = trio.gm.snapshot()
    r = trio.request("a", "POST", "ace-group/g/nodes/a")
    assert r.code == Code.SERVICE_UNAVAILABLE
    assert decode_problem_details(r.payload)[0] == ErrorId.GROUP_INACTIVE
    r = trio.request("a", "POST", "ace-group/g/nodes/a/cred", b"\xa0", CF_ACE_GROUPCOMM)
    assert r.code == Code.SERVICE_UNAVAILABLE
    assert decode_problem_details(r.payload)[0] == ErrorId.GROUP_INACTIVE
    assert trio.gm.snapshot() == before
    trio.gm.set_active("g", True)
    assert trio.request("a", "POST", "ace-group/g/nodes/a").code == Code.CONTENT


def test_rekey_on_join_allocation_does_not_walk_over_the_members(tmp_path: Path) -> None:
    """With backward security every join rekeys, and a rekeying keeps the members' Sender
    IDs: the joiner's allocation must start at the first ID nobody holds instead of
    checking every kept ID again (which made each join O(N)); it gets the same ID a walk
    from the start would give."""
    gm = GroupManager(tmp_path / "gm.db")
    try:
        h = Harness(gm)
        gm.create_group("g")  # backward security: each join rekeys
        for i in range(12):
            h.join(f"n{i}", "g")
        h.request("n3", "DELETE", "ace-group/g/nodes/n3")  # a hole at 0x03
        lookups = _count_sid_lookups(gm)
        late = h.join("late", "g")
        assert late.material is not None and late.material.sender_id == b"\x03"
        assert lookups() == 1
        after = h.join("later", "g")
        assert after.material is not None and after.material.sender_id == b"\x0c"
        assert lookups() == 2
        check_invariants(gm)
    finally:
        gm.close()
