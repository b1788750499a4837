"""Sender ID rules under random histories: never handed out twice under one Gid, stale at
once when given up, and every given-up ID announced by the rekeying that ends its Gid."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.manager import member as mb
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import Code, Param
from grouposcore.manager.rekeying import sid_at, sid_space
from tests.manager.helpers import RS, Harness, check_invariants

NODES = ("n0", "n1", "n2", "n3")
OPS = st.lists(
    st.tuples(st.sampled_from(("join", "renew", "leave", "evict", "rekey")),
              st.sampled_from(NODES)),
    min_size=1, max_size=25,
)  # fmt: skip


def test_sid_enumeration_is_shortest_first_and_exhaustive() -> None:
    assert sid_space(1) == 256 and sid_space(2) == 256 + 65536
    ids = [sid_at(i, 2) for i in range(sid_space(2))]
    assert ids[0] == b"\x00" and ids[255] == b"\xff" and ids[256] == b"\x00\x00"
    assert len(set(ids)) == len(ids) and sid_at(sid_space(2), 2) is None


@settings(max_examples=25, deadline=None)
@given(OPS)
def test_sender_ids_are_never_reused_under_one_gid_and_always_reported_stale(
    ops: list[tuple[str, str]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # no join budget here (tested in test_core_join): any sequence of joins goes through
        gm = GroupManager(Path(tmp) / "gm.db", max_sender_ids_per_node=3,
                          max_relinquished_sender_ids=4, rejoin_burst=10_000)  # fmt: skip
        try:
            _run(gm, ops)
        finally:
            gm.close()


def _run(gm: GroupManager, ops: list[tuple[str, str]]) -> None:
    h = Harness(gm)
    gm.create_group("g", backward_security=False)
    for n in NODES:
        gm.allow(n, "g", RS)
    owner: dict[tuple[bytes, bytes], str] = {}  # (Gid, Sender ID) -> the one holder ever
    given_up: dict[int, set[bytes]] = {}  # version -> IDs given up while it was current

    def observe() -> None:
        g = gm.group("g")
        assert g is not None
        for m in gm.members("g"):
            if m.sender_id is not None:
                assert owner.setdefault((g.gid, m.sender_id), m.node) == m.node

    def check_rekey(notes: list[object], old_num: int) -> None:
        for note in notes:
            if note.code == Code.CONTENT:  # type: ignore[attr-defined]
                stale = set(cbor2.loads(note.payload)[Param.STALE_NODE_IDS])  # type: ignore[attr-defined]
                assert stale == given_up.get(old_num, set())

    for op, node in ops:
        g = gm.group("g")
        assert g is not None
        m = gm.store.member("g", node)
        held = m.sender_id if m is not None else None
        if op == "join":
            if m is None:
                h.join(node, "g", allow=False)
            else:
                r = h.request(node, "POST", "ace-group/g", mb.build_join_request("g", RS).payload,
                              261)  # fmt: skip
                if r.code == Code.CHANGED and held is not None:
                    given_up.setdefault(g.num, set()).add(held)
                check_rekey(list(r.notifications), g.num)
        elif op == "renew" and m is not None:
            r = h.request(node, "POST", f"ace-group/g/nodes/{node}")
            if r.code == Code.CONTENT and Param.GROUP_SENDER_ID in cbor2.loads(r.payload):
                given_up.setdefault(g.num, set()).add(held)  # type: ignore[arg-type]
            else:
                check_rekey(list(r.notifications), g.num)
        elif op == "leave" and m is not None:
            given_up.setdefault(g.num, set()).add(held)  # type: ignore[arg-type]
            check_rekey(list(h.request(node, "DELETE", f"ace-group/g/nodes/{node}")
                             .notifications), g.num)  # fmt: skip
        elif op == "evict" and m is not None:
            given_up.setdefault(g.num, set()).add(held)  # type: ignore[arg-type]
            check_rekey(gm.evict("g", node, revoke=False), g.num)  # type: ignore[arg-type]
        elif op == "rekey":
            check_rekey(gm.rekey("g"), g.num)  # type: ignore[arg-type]
        observe()
        check_invariants(gm)
        # What was given up under the current version is already reported as stale.
        g = gm.group("g")
        assert g is not None
        current = gm.store.stale_sets("g").get(g.num)
        assert current is not None
        assert set(cbor2.loads(current)) == given_up.get(g.num, set())
