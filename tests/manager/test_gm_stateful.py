"""Stateful property test of the Group Manager's sans-I/O core.

Hypothesis drives one :class:`GroupManager` (SQLite in a temporary directory) through
random joins, re-joins, leaves, evictions, rekeyings, Sender ID renewals and the passing of
time (the per-node join budget) for a few nodes, the way members reach it
(:class:`tests.manager.helpers.Harness`, no network), and after every step checks what the
group's security rests on:

* the store's own invariants (:func:`tests.manager.helpers.check_invariants`: Sender IDs
  unique among current members and allocated to their holder, Gids distinct, stale sets
  bounded and current);
* the members are exactly the nodes that joined and did not leave or get evicted;
* the key version never goes back, and every rekeying (explicit, or by eviction) moves it
  on by one with a new Gid and Master Secret;
* a Sender ID that was given up (leave, eviction, renewal, re-join) is in the stale set of
  the version under which it was given up, for as long as that set is kept.

tests/model drives the same GM together with real members and an attacker; this machine
is the smaller, direct check of the GM's own bookkeeping.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cbor2
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from grouposcore.manager import member as mb
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import CF_ACE_GROUPCOMM, Code
from tests.manager.helpers import RS, Harness, check_invariants

NODES = st.sampled_from(("n0", "n1", "n2", "n3"))
#: picks one of the current members
PICK = st.integers(0, 3)


def _has_members(machine: GroupManagerMachine) -> bool:
    return bool(machine.members)


class GroupManagerMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.now = 1000.0
        self.gm = GroupManager(Path(self.tmp.name) / "gm.db", max_sender_ids_per_node=4,
                               max_relinquished_sender_ids=6, clock=lambda: self.now,
                               rejoin_burst=3, rejoin_interval=60)  # fmt: skip
        self.h = Harness(self.gm)
        self.gm.create_group("g", backward_security=False)
        for node in ("n0", "n1", "n2", "n3"):
            self.gm.allow(node, "g", RS)
        self.members: set[str] = set()
        #: (version, Sender ID) given up while that version was current
        self.given_up: set[tuple[int, bytes]] = set()
        self.version = 0

    def teardown(self) -> None:
        if hasattr(self, "gm"):
            self.gm.close()
            self.tmp.cleanup()

    def _group(self) -> tuple[int, bytes, bytes]:
        g = self.gm.group("g")
        assert g is not None
        return g.num, g.gid, g.master_secret

    def _sid(self, node: str) -> bytes | None:
        m = self.gm.store.member("g", node)
        return None if m is None else m.sender_id

    def _member(self, pick: int) -> str:
        members = sorted(self.members)
        return members[pick % len(members)]

    def _given_up(self, version: int, sid: bytes | None) -> None:
        if sid is not None:
            self.given_up.add((version, sid))

    def _expect_rekeyed(self, before: tuple[int, bytes, bytes]) -> None:
        num, gid, secret = self._group()
        assert num == before[0] + 1, "a rekeying moves the version on by exactly one"
        assert gid != before[1] and secret != before[2]

    # --- rules ------------------------------------------------------------------------

    @rule(node=NODES)
    def join(self, node: str) -> None:
        before, held = self._group(), self._sid(node)
        if node not in self.members:
            ask = mb.build_join_request("g", RS, credential=self.h.node(node).credential)
            r = self.h.request(node, "POST", "ace-group/g", ask.payload, CF_ACE_GROUPCOMM)
            if r.code == Code.SERVICE_UNAVAILABLE:
                # the node joined (and left) too often lately: nothing changed
                assert r.max_age is not None and self._group() == before
                return
            self.h.join(node, "g", allow=False)
            self.members.add(node)
            return
        payload = mb.build_join_request("g", RS).payload
        r = self.h.request(node, "POST", "ace-group/g", payload, CF_ACE_GROUPCOMM)
        if r.code == Code.CHANGED and self._sid(node) != held:
            self._given_up(before[0], held)

    @precondition(_has_members)
    @rule(pick=PICK)
    def renew_sender_id(self, pick: int) -> None:
        node = self._member(pick)
        before, held = self._group(), self._sid(node)
        self.h.request(node, "POST", f"ace-group/g/nodes/{node}")
        if self._sid(node) != held:
            self._given_up(before[0], held)

    @precondition(_has_members)
    @rule(pick=PICK)
    def leave(self, pick: int) -> None:
        node = self._member(pick)
        before, held = self._group(), self._sid(node)
        r = self.h.request(node, "DELETE", f"ace-group/g/nodes/{node}")
        assert r.code == Code.DELETED
        self.members.discard(node)
        self._given_up(before[0], held)

    @precondition(_has_members)
    @rule(pick=PICK)
    def evict(self, pick: int) -> None:
        node = self._member(pick)
        before, held = self._group(), self._sid(node)
        self.gm.evict("g", node, revoke=False)
        self.members.discard(node)
        self._given_up(before[0], held)
        self._expect_rekeyed(before)
        assert (before[0], held) in self._stale()

    @rule()
    def time_passes(self) -> None:
        """A minute: every node may join once more (the join budget, 1 per 60 s)."""
        self.now += 60.0

    @rule()
    def rekey(self) -> None:
        before = self._group()
        self.gm.rekey("g")
        self._expect_rekeyed(before)

    # --- invariants -------------------------------------------------------------------

    def _stale(self) -> set[tuple[int, bytes]]:
        return {
            (version, sid)
            for version, raw in self.gm.store.stale_sets("g").items()
            for sid in cbor2.loads(raw)
        }

    @invariant()
    def store_invariants_hold(self) -> None:
        check_invariants(self.gm)

    @invariant()
    def members_are_who_joined_and_stayed(self) -> None:
        assert {m.node for m in self.gm.members("g")} == self.members

    @invariant()
    def version_never_goes_back(self) -> None:
        num = self._group()[0]
        assert num >= self.version
        self.version = num

    @invariant()
    def given_up_sender_ids_are_stale(self) -> None:
        kept = set(self.gm.store.stale_sets("g"))
        stale = self._stale()
        for version, sid in self.given_up:
            if version in kept:
                assert (version, sid) in stale, (version, sid.hex())
        current = {m.sender_id for m in self.gm.members("g")}
        num = self._group()[0]
        assert not any(sid in current for v, sid in stale if v == num), (
            "a current member's Sender ID is stale under the current version"
        )


GroupManagerMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None
)
TestGroupManagerStateful = GroupManagerMachine.TestCase
