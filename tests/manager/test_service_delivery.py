"""How the GM service hands notifications to observers: batched, paced, coalesced, O(N).

The observers here are registrations without a network (their trigger records the call),
so what is checked is the service's scheduling, not the transport's sending.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from grouposcore.coap import Code as CoapCode
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import Param, loads_strict
from grouposcore.manager.rekeying import allocate_sid
from grouposcore.manager.service import ClaimedSequence, GroupManagerService, NodeRequest
from grouposcore.manager.store import MemberRecord
from grouposcore.transport.observe import Observer
from tests.manager.helpers import RS

PATH = ("ace-group", "g")


def _service(tmp_path: Path, members: int, **kw: Any) -> GroupManagerService:
    gm = GroupManager(tmp_path / "gm.db")
    svc = GroupManagerService(gm, **kw)
    svc.create_group("g", backward_security=False)
    g = gm.group("g")
    assert g is not None
    with gm.store.transaction():
        for i in range(members):
            node = f"n{i:03}"
            sid = allocate_sid(gm.store, g, node, gm._sid_policy)
            gm.store.upsert_member(MemberRecord("g", node, sum(1 << r for r in RS), None, sid,
                                                g.gid, b"", b"0" * 8, 0.0))  # fmt: skip
    return svc


def _observe(svc: GroupManagerService, woken: list[str]) -> None:
    """One registration per member on the group resource; a trigger renders at once."""
    resource = svc.site.lookup(PATH)
    assert resource is not None
    for m in svc.gm.members("g"):
        request = NodeRequest(code=CoapCode.GET, token=m.node.encode(), node=m.node)
        request.options.observe = 0

        def trigger(obs: Observer) -> None:
            woken.append(obs.request.node)
            svc.serve(PATH, obs.request)  # takes the queued notification, as a render does

        resource.add_observer(Observer(("::1", 1), m.node.encode(), request, trigger=trigger))


def test_rekey_wakes_one_batch_at_once_and_the_rest_paced(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = _service(tmp_path, 10, notify_batch=4)
        woken: list[str] = []
        _observe(svc, woken)
        svc.rekey("g")
        assert len(woken) == 4  # before the caller's response could leave
        await asyncio.sleep(0)
        assert len(woken) == 4  # the flush wakes the next batch one iteration later
        await asyncio.sleep(0)
        assert len(woken) == 8
        while svc._flush_task is not None:
            await asyncio.sleep(0)
        assert sorted(woken) == [m.node for m in svc.gm.members("g")]
        svc.gm.close()

    asyncio.run(scenario())


def test_back_to_back_rekeyings_coalesce_to_the_newest_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = _service(tmp_path, 10, notify_batch=2)
        woken: list[str] = []
        _observe(svc, woken)
        svc.rekey("g")
        svc.rekey("g")  # while the first one's flush is still going
        svc.rekey("g")
        g = svc.gm.group("g")
        assert g is not None
        late = [m.node for m in svc.gm.members("g")][2:]
        for node in late:  # only the newest rekeying waits for them
            note, num = svc._pending[(node, PATH)]
            assert num == g.num and loads_strict(note.payload, "")[Param.NUM] == g.num
        while svc._flush_task is not None:
            await asyncio.sleep(0)
        # The first batch heard of the first rekeying at once and of the newest later; the
        # others hear once, of the newest only (not three times).
        first = [m.node for m in svc.gm.members("g")][:2]
        assert sorted(woken) == sorted(first + [m.node for m in svc.gm.members("g")])
        assert svc._pending == {}
        svc.gm.close()

    asyncio.run(scenario())


def test_delivery_reads_the_observer_list_once_per_batch(tmp_path: Path) -> None:
    """Waking N members' observers must not scan all N observers once per member."""
    svc = _service(tmp_path, 50)
    woken: list[str] = []
    _observe(svc, woken)
    resource = svc.site.lookup(PATH)
    reads = 0
    original = type(resource).observers

    class Counting(type(resource)):  # type: ignore[misc]
        @property
        def observers(self) -> list[Observer]:
            nonlocal reads
            reads += 1
            return original.fget(self)  # type: ignore[no-any-return,attr-defined]

    resource.__class__ = Counting
    svc.rekey("g")  # no running loop: everything at once
    assert len(woken) == 50
    assert reads == 1
    svc.gm.close()


def test_a_rekeying_claims_the_members_sequence_blocks_in_one_transaction(
    tmp_path: Path,
) -> None:
    svc = _service(tmp_path, 12)
    for m in svc.gm.members("g"):
        svc.commission(m.node)
    store = svc.gm.store
    single: list[str] = []
    original = store.claim

    def claim(key: str, count: int) -> int:
        single.append(key)
        return original(key, count)

    store.claim = claim  # type: ignore[method-assign]
    woken: list[str] = []
    _observe(svc, woken)
    svc.rekey("g")
    assert len(woken) == 12
    for node in woken:
        sequence = svc._contexts[node].sequence
        assert isinstance(sequence, ClaimedSequence) and not sequence.exhausted
        first = sequence.next()
        assert store.load(sequence.key) == first + 64  # the block is durably claimed
    assert single == []
    svc.gm.close()


def test_eviction_is_still_delivered_to_the_evicted_node(tmp_path: Path) -> None:
    svc = _service(tmp_path, 3)
    woken: list[str] = []
    _observe(svc, woken)
    svc.evict("g", "n001")
    assert sorted(woken) == ["n000", "n001", "n002"]
    assert svc.gm.store.member("g", "n001") is None
    svc.gm.close()
