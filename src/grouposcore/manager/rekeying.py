"""Sender ID allocation, stale Sender IDs and the Point-to-Point rekeying of a group.

Rules (digest §8.2-§8.3, profile "Stale OSCORE Sender IDs"):

* under one Gid a Sender ID is handed out at most once; allocation walks a persistent cursor
  over the shortest-first ID space, so it costs O(1) amortised (a rekeying starts the new
  Gid's cursor at the first ID no kept member holds);
* a Sender ID given up (re-join, renewal, leave, eviction, elder eviction) enters the stale
  set of the *current* version at once, so /stale-sids already reports it; a rekeying
  distributes that set, opens an empty one for the new version and keeps the newest N;
* one node gets at most ``per_node`` Sender IDs under one Gid, and a group whose ID space
  is getting crowded (too many IDs given up, or the cursor deep into the space) is rekeyed
  before the next allocation, which resets the space and bounds every stale set.

Everything here runs inside the caller's store transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from grouposcore.manager.material import rekeying_body
from grouposcore.manager.params import CF_ACE_GROUPCOMM, Code, ErrorId, dumps, loads_strict
from grouposcore.manager.responses import Notification, eviction_notice, reject
from grouposcore.manager.store import GroupRecord, Store

__all__ = [
    "SidPolicy",
    "allocate_sid",
    "crowded",
    "rekey",
    "relinquish",
    "sid_at",
    "sid_index",
    "sid_space",
]


@dataclass(frozen=True)
class SidPolicy:
    """Bounds on Sender ID consumption under one Gid."""

    per_node: int = 8
    max_relinquished: int = 256


def sid_space(max_len: int) -> int:
    """How many non-empty Sender IDs of at most ``max_len`` bytes exist."""
    return sum(1 << (8 * n) for n in range(1, max_len + 1))


def sid_at(index: int, max_len: int) -> bytes | None:
    """The ``index``-th Sender ID, shortest first (0x00..0xff, 0x0000..), or None past the end."""
    for length in range(1, max_len + 1):
        size = 1 << (8 * length)
        if index < size:
            return index.to_bytes(length, "big")
        index -= size
    return None


#: where the IDs of each length begin in the shortest-first order (index = length)
_LENGTH_OFFSETS = tuple(sid_space(n) for n in range(0, 9))


def sid_index(sid: bytes) -> int:
    """The position of ``sid`` in the shortest-first order of :func:`sid_at`."""
    return _LENGTH_OFFSETS[len(sid) - 1] + int.from_bytes(sid, "big")


def crowded(store: Store, g: GroupRecord, policy: SidPolicy) -> bool:
    """Whether the next allocation should wait for a rekeying to reset the ID space."""
    index, relinquished = store.sid_cursor(g.name, g.gid)
    return relinquished >= policy.max_relinquished or 4 * index >= 3 * sid_space(g.max_sid_len)


def allocate_sid(store: Store, g: GroupRecord, node: str, policy: SidPolicy) -> bytes:
    """The next Sender ID never handed out under the current Gid, recorded for ``node``."""
    if store.allocations_of(g.name, g.gid, node) >= policy.per_node:
        raise reject(
            "this node has used up its Sender IDs under the current Gid; "
            "try again after a rekeying",
            ErrorId.NO_NODE_IDS,
            Code.SERVICE_UNAVAILABLE,
        )
    index, relinquished = store.sid_cursor(g.name, g.gid)
    while True:
        sid = sid_at(index, g.max_sid_len)
        if sid is None:
            raise reject(
                "no available node identifiers; try again after a rekeying",
                ErrorId.NO_NODE_IDS,
                Code.SERVICE_UNAVAILABLE,
            )
        index += 1
        if not store.sid_allocated(g.name, g.gid, sid):
            break
    store.record_allocation(g.name, g.gid, sid, node)
    store.set_sid_cursor(g.name, g.gid, index, relinquished)
    return sid


def relinquish(store: Store, g: GroupRecord, sender_ids: list[bytes]) -> None:
    """Sender IDs given up now: into the current version's stale set, and counted."""
    if not sender_ids:
        return
    store.add_stale_ids(g.name, g.num, sender_ids)
    index, relinquished = store.sid_cursor(g.name, g.gid)
    store.set_sid_cursor(g.name, g.gid, index, relinquished + len(sender_ids))


def rekey(
    store: Store,
    g: GroupRecord,
    *,
    random_bytes: Callable[[int], bytes],
    now: float,
    skip_node: str | None = None,
) -> tuple[GroupRecord, list[Notification], bytes]:
    """New Master Secret, Salt and Gid, num + 1; the current stale set goes out with it.

    Returns the new record, the notifications and the rekeying message itself.

    Remaining members keep their Sender IDs (re-recorded under the new Gid). A recycled Gid
    evicts every member born under it ("elders"), whose IDs join the stale set first; they
    are remembered until the next rekeying so that their re-joining triggers none.
    ``skip_node`` (a joiner, or a renewing member) gets its copy in its response instead.
    """
    epoch = (g.epoch + 1) % (1 << (8 * g.epoch_len))
    gid = g.gid_prefix + epoch.to_bytes(g.epoch_len, "big")
    everyone = store.members(g.name)
    elders = [m for m in everyone if m.birth_gid == gid]
    for m in elders:
        store.delete_member(g.name, m.node)
    relinquish(store, g, [m.sender_id for m in elders if m.sender_id is not None])
    stale_set = store.stale_sets(g.name).get(g.num)
    stale: list[bytes] = (
        [] if stale_set is None else list(loads_strict(stale_set, "stored stale set"))
    )
    remaining = [m for m in everyone if m.birth_gid != gid]
    new = replace(
        g,
        epoch=epoch,
        gid=gid,
        master_secret=random_bytes(16),
        master_salt=random_bytes(8),
        num=g.num + 1,
        exp=int(now) + g.lifetime,
    )
    store.update_keying(
        g.name,
        epoch=new.epoch,
        gid=new.gid,
        master_secret=new.master_secret,
        master_salt=new.master_salt,
        num=new.num,
        exp=new.exp,
    )
    store.drop_allocations(g.name, except_gid=new.gid)
    store.carry_allocations(g.name, new.gid)
    # The cursor starts at the first ID no remaining member holds, where a walk from 0
    # would stop: rekeying on every join then costs each join no walk over the group.
    held = {sid_index(m.sender_id) for m in remaining if m.sender_id is not None}
    first_free = 0
    while first_free in held:
        first_free += 1
    store.set_sid_cursor(g.name, new.gid, first_free, 0)
    store.add_stale_set(g.name, new.num, dumps([]), g.stale_sets_kept)
    store.set_evicted_elders(g.name, {m.node for m in elders})
    payload = dumps(rekeying_body(new, stale, now))
    notes = [
        Notification(m.node, g.name, ("ace-group", g.name), Code.CONTENT, payload,
                     CF_ACE_GROUPCOMM)
        for m in remaining
        if m.node != skip_node
    ]  # fmt: skip
    notes += [eviction_notice(g.name, m.node) for m in elders]
    return new, notes, payload
