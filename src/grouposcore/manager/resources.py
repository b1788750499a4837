"""Read-only resources of a group: /creds, /kdc-cred, /verif-data, /stale-sids, and the
Gid lookup at /ace-group.

Who may call what has been decided by the dispatcher in :mod:`grouposcore.manager.core`
(members, Verifiers, neither); these handlers only read the store and build the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from grouposcore.manager.material import (
    N_KDC_LEN,
    GetCreds,
    creds_fields,
    kdc_pop,
    select,
    verif_data_body,
)
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    Code,
    Param,
    dumps,
    expect_array,
    expect_bytes,
    expect_int,
    expect_map,
    loads_strict,
)
from grouposcore.manager.responses import GmResponse, reject
from grouposcore.manager.store import GroupRecord, MemberRecord, Store

__all__ = ["creds", "gid_lookup", "kdc_cred", "kdc_cred_fetch", "stale_sids", "verif_data"]

_NONCE_MIN, _NONCE_MAX = 8, 64


def creds(store: Store, g: GroupRecord, f: GetCreds | None) -> GmResponse:
    """GET (``f`` None: every member holding a credential) or FETCH /creds."""
    members = store.members(g.name)
    chosen = members if f is None else select(members, f)
    fields = creds_fields(chosen, g.num)
    if not fields[Param.CREDS] and f is not None:
        return GmResponse(Code.CONTENT, dumps(b""), CF_ACE_GROUPCOMM)
    return GmResponse(Code.CONTENT, dumps(fields), CF_ACE_GROUPCOMM)


def kdc_cred(
    store: Store, g: GroupRecord, member: MemberRecord, random_bytes: Callable[[int], bytes]
) -> GmResponse:
    """GET /kdc-cred for a member: the GM's PoP over the N_C of the member's join."""
    body = kdc_pop(store, g, member.client_nonce, random_bytes(N_KDC_LEN))
    return GmResponse(Code.CONTENT, dumps(body), CF_ACE_GROUPCOMM)


def kdc_cred_fetch(
    store: Store, g: GroupRecord, body: Any, random_bytes: Callable[[int], bytes]
) -> GmResponse:
    """FETCH /kdc-cred: the GM's PoP over the N_C in the request ({cnonce: N_C}), for nodes
    (signature verifiers) that have no join nonce."""
    req = expect_map(body, "KDC credential request")
    cnonce = expect_bytes(req.get(Param.CNONCE), "'cnonce'", min_len=_NONCE_MIN, max_len=_NONCE_MAX)
    pop = kdc_pop(store, g, cnonce, random_bytes(N_KDC_LEN))
    return GmResponse(Code.CONTENT, dumps(pop), CF_ACE_GROUPCOMM)


def verif_data(g: GroupRecord, now: float) -> GmResponse:
    """GET /verif-data (signature verifiers only; checked by the caller)."""
    return GmResponse(Code.CONTENT, dumps(verif_data_body(g, now)), CF_ACE_GROUPCOMM)


def stale_sids(store: Store, g: GroupRecord, body: Any) -> GmResponse:
    """FETCH /stale-sids: the union of the stale sets of versions V .. V' (SKEW = V'-V+1).

    V must be older than the current V' (4.00 otherwise). When fewer than SKEW sets are
    still kept, the answer has no payload: the member then purges every peer.
    """
    old = expect_int(body, "stale-sids request", lo=0, hi=1 << 32)
    if old >= g.num:
        raise reject("the version number must be older than the current one")
    sets = store.stale_sets(g.name)
    wanted = range(old, g.num + 1)
    if any(n not in sets for n in wanted):
        return GmResponse(Code.CONTENT, b"", None)
    stale: set[bytes] = set()
    for n in wanted:
        stale.update(loads_strict(sets[n], "stored stale set"))
    return GmResponse(Code.CONTENT, dumps(sorted(stale)), None)


def gid_lookup(store: Store, node: str, body: Any) -> GmResponse:
    """FETCH /ace-group: which of these Gids are current groups the node may know about."""
    req = expect_map(body, "group name request")
    gids = [
        expect_bytes(x, "'gid' entry", max_len=16)
        for x in expect_array(req.get(Param.GID), "'gid'", max_len=256)
    ]
    found: list[GroupRecord] = []
    for gid in gids:
        g = store.group_by_gid(gid)
        if g is not None and (store.allowed_roles(node, g.name) or store.member(g.name, node)):
            found.append(g)
    if not found:
        return GmResponse(Code.CONTENT, dumps(b""), CF_ACE_GROUPCOMM)
    body_out = {
        Param.GID: [g.gid for g in found],
        Param.GNAME: [g.name for g in found],
        Param.GURI: [f"/ace-group/{g.name}" for g in found],
    }
    return GmResponse(Code.CONTENT, dumps(body_out), CF_ACE_GROUPCOMM)
