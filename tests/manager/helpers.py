"""Test helpers for the Group Manager: joining nodes driven without a network, invariants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grouposcore.cose import EDDSA, Credential, SignatureAlgorithm
from grouposcore.manager import member as mb
from grouposcore.manager.core import GmResponse, GroupManager
from grouposcore.manager.params import CF_ACE_GROUPCOMM, Code, Role

RS = (Role.REQUESTER, Role.RESPONDER)


@dataclass
class Node:
    """A joining node: its key pair and CCS, and what it learnt from the GM."""

    name: str
    private_key: Any
    credential: bytes
    material: mb.GroupKeyingMaterial | None = None
    pending: mb.PendingJoin | None = None


class Harness:
    """Drives a GroupManager the way a member would, without any network."""

    def __init__(self, gm: GroupManager) -> None:
        self.gm = gm
        self.nodes: dict[str, Node] = {}

    def node(self, name: str, alg: SignatureAlgorithm = EDDSA) -> Node:
        if name not in self.nodes:
            key = alg.generate_private_key()
            cred = Credential.build_ccs(key.public_key(), alg.id, name).raw
            self.nodes[name] = Node(name, key, cred)
        return self.nodes[name]

    def request(
        self, name: str, method: str, path: str, payload: bytes = b"", cf: int | None = None
    ) -> GmResponse:
        return self.gm.handle(name, method, path.strip("/").split("/"), payload, cf)

    def challenge(self, name: str, group: str, roles: Any = RS) -> bytes:
        n = self.node(name)
        p = mb.build_join_request(group, roles, credential=n.credential)
        r = self.request(name, "POST", f"ace-group/{group}", p.payload, CF_ACE_GROUPCOMM)
        assert r.code == Code.BAD_REQUEST and r.content_format == CF_ACE_GROUPCOMM
        return mb.parse_challenge(r.payload).kdcchallenge

    def join(self, name: str, group: str, roles: Any = RS, *, allow: bool = True) -> Node:
        """Allow (optionally), get a challenge, join, check the 2.01, apply notifications."""
        n = self.node(name)
        if allow:
            self.gm.allow(name, group, roles)
        monitor = set(roles) == {Role.MONITOR}
        if monitor:
            p = mb.build_join_request(group, roles)
        else:
            ch = self.challenge(name, group, roles)
            p = mb.build_join_request(
                group, roles, credential=n.credential, private_key=n.private_key, challenge=ch
            )
        r = self.request(name, "POST", f"ace-group/{group}", p.payload, CF_ACE_GROUPCOMM)
        assert r.code in (Code.CREATED, Code.CHANGED), r
        n.pending = p
        gm_cred = self.gm.gm_credential(group)
        n.material = mb.parse_join_response(r.payload, p, gm_credential=gm_cred)
        self.deliver(r)
        return n

    def deliver(self, r: GmResponse) -> None:
        """Hand every notification to its node, as the edge would."""
        for note in r.notifications:
            target = self.nodes[note.node]
            assert target.material is not None
            target.material = mb.handle_notification(
                target.material, note.code, note.payload, note.content_format
            )


def check_invariants(gm: GroupManager) -> None:
    """What must hold in every committed state, whatever happened before."""
    gids = [g.gid for g in gm.store.groups()]
    assert len(gids) == len(set(gids))
    for g in gm.store.groups():
        members = gm.store.members(g.name)
        sids = [m.sender_id for m in members if m.sender_id is not None]
        assert len(sids) == len(set(sids))
        alloc = gm.store.allocations(g.name)
        assert all(gid == g.gid for gid, _, _ in alloc)
        allocated = {sid: node for _, sid, node in alloc}
        for m in members:
            if m.sender_id is not None:
                assert allocated[m.sender_id] == m.node
            assert (m.sender_id is None) == (m.roles == 1 << Role.MONITOR)
        stale = gm.store.stale_sets(g.name)
        assert len(stale) <= g.stale_sets_kept
        assert all(0 <= n <= g.num for n in stale) and g.num in stale
        assert g.gid == g.gid_prefix + g.epoch.to_bytes(g.epoch_len, "big")
