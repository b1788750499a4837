"""Several GM processes on one PostgreSQL database racing each other.

Two or three processes join members concurrently (every join rekeys: backward security),
while one also rekeys and another evicts. Each process reports every Sender ID it handed
out; none may repeat under one Gid, every join must succeed (a lost race would surface as a
5.00 from a uniqueness violation), and the final state must satisfy the GM's invariants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import cbor2
import pytest

from grouposcore.coap import Code as CoapCode
from grouposcore.coap import Message
from grouposcore.errors import ReplayError
from grouposcore.manager import member as mb
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import CF_ACE_GROUPCOMM, Code
from grouposcore.manager.service import ClaimedSequence, GroupManagerService
from grouposcore.manager.store import open_store
from grouposcore.oscore.security import ClientSecurity
from tests.manager.helpers import RS, Harness, check_invariants

REPO = Path(__file__).resolve().parents[2]


def race(url: str, plan: list[tuple[str, int, str]]) -> tuple[list[list[str]], float]:
    """Run one racing process per (prefix, count, mode); return their output lines and the
    seconds from the common start signal to the last ``done``."""
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.manager.gm_race", url, prefix, str(count), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
            text=True,
        )
        for prefix, count, mode in plan
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        started = time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=120)[0].splitlines() for p in procs]
        elapsed = time.perf_counter() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
    return outputs, elapsed


def test_racing_gm_processes_never_hand_out_a_sender_id_twice(pg_url: str) -> None:
    gm = GroupManager(pg_url)
    gm.create_group("g")
    gm.close()
    plan = [("a", 70, "rekey"), ("b", 70, "evict"), ("c", 60, "join")]
    outputs, elapsed = race(pg_url, plan)
    per_gid: dict[str, list[str]] = defaultdict(list)
    joins = 0
    for lines in outputs:
        assert lines[-1] == "done"
        for line in lines:
            if line.startswith("J "):
                _, gid, sid, _node, _num = line.split()
                per_gid[gid].append(sid)
                joins += 1
    assert joins == 200
    for gid, sids in per_gid.items():
        assert len(sids) == len(set(sids)), f"Sender ID handed out twice under Gid {gid}"
    gm = GroupManager(pg_url)
    check_invariants(gm)
    g = gm.group("g")
    assert g is not None
    evicted = 70 // 7
    assert len(gm.members("g")) == 200 - evicted
    # every join rekeyed (backward security), plus the explicit rekeys and evictions
    assert g.num == 200 + 70 // 5 + evicted
    gm.close()
    print(f"\n200 joins over 3 GM processes on PostgreSQL in {elapsed:.2f} s")


def test_gm_processes_never_share_a_channel_partial_iv(db_url: str) -> None:
    """Two GM processes serving one node's channel number their notifications from blocks
    claimed in the store, so no Partial IV (nonce) is used twice, not even after a restart."""
    a, b = open_store(db_url), open_store(db_url)
    seq_a = ClaimedSequence(a, "channel/n/k", step=4)
    seq_b = ClaimedSequence(b, "channel/n/k", step=4)
    used = [seq_a.next(), seq_b.next(), seq_b.next(), seq_a.next()]
    used += [s.next() for s in (seq_a, seq_b) for _ in range(9)]
    restarted = ClaimedSequence(open_store(db_url), "channel/n/k", step=4)
    used += [restarted.next() for _ in range(3)]
    assert len(used) == len(set(used))
    for s in (a, b, restarted._claims):
        s.close()


def test_request_accepted_by_one_gm_process_is_a_replay_at_another(pg_url: str) -> None:
    """Each GM process keeps its own replay windows; the Partial IVs they accepted are shared
    through the database, so a request captured at one process is refused by the other."""
    gm_a, gm_b = GroupManager(pg_url), GroupManager(pg_url)
    svc_a = GroupManagerService(gm_a)
    material = svc_a.commission("n")
    svc_b = GroupManagerService(gm_b)
    svc_b._install(material, restarted=False)  # as 'manager serve' installs a new channel
    client = ClientSecurity(material.context(as_gm=False))

    def protected() -> Message:
        msg = Message(CoapCode.GET)
        msg.options.uri_path = ["ace-group"]
        return client.protect_request(msg)[0]

    first = protected()
    assert svc_a.server_security.unprotect_request(first) is not None
    with pytest.raises(ReplayError):
        svc_b.server_security.unprotect_request(first)
    assert svc_b.server_security.unprotect_request(protected()) is not None
    old = [protected() for _ in range(40)]
    assert svc_a.server_security.unprotect_request(old[-1]) is not None
    with pytest.raises(ReplayError):  # below the shared window
        svc_b.server_security.unprotect_request(old[0])
    gm_a.close()
    gm_b.close()


def test_challenge_from_one_gm_process_is_honoured_by_another(pg_url: str) -> None:
    """The in-band N_S a joining node got from one GM process proves possession at any other
    process on the same database, once."""
    a, b = GroupManager(pg_url), GroupManager(pg_url)
    a.create_group("g")
    ha, hb = Harness(a), Harness(b)
    hb.nodes = ha.nodes
    a.allow("n", "g", RS)
    n = ha.node("n")
    challenge = ha.challenge("n", "g")  # at process a
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=challenge)  # fmt: skip
    r = hb.request("n", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)  # at process b
    assert r.code == Code.CREATED
    again = ha.request("n", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
    assert again.code == Code.BAD_REQUEST  # used up: a fresh challenge comes back
    assert mb.parse_challenge(again.payload).kdcchallenge != challenge
    a.close()
    b.close()


def test_expired_material_is_rekeyed_once_whichever_processes_notice(db_url: str) -> None:
    now = [1_000_000.0]
    a = GroupManager(db_url, clock=lambda: now[0])
    b = GroupManager(db_url, clock=lambda: now[0])
    g = a.create_group("g", lifetime=10)
    assert a.rekey_if_expired("g", now[0]) == []  # not expired yet
    now[0] = g.exp + 1.0
    a.rekey_if_expired("g", now[0])
    assert b.rekey_if_expired("g", now[0]) == []  # a already did it: nothing more
    after = b.group("g")
    assert after is not None and after.num == g.num + 1 and after.exp > now[0]
    a.close()
    b.close()


def test_join_racing_an_earlier_join_of_the_same_node_relinquishes_that_sender_id(
    db_url: str,
) -> None:
    """Two GM processes handle joins of one node at once: the second read the membership
    before the first committed. Its transaction reads again, so the first join's Sender ID
    becomes stale instead of staying allocated to nobody, and the second join is the re-join
    of a current member, which rekeys the group (that stale set goes out with it)."""
    gm = GroupManager(db_url)
    gm.create_group("g", backward_security=False)
    h = Harness(gm)
    h.join("other", "g")
    first = h.join("n", "g")
    assert first.material is not None and first.material.sender_id is not None
    g = gm.group("g")
    assert g is not None
    ch = h.challenge("n", "g")
    p = mb.build_join_request("g", RS, credential=first.credential,
                              private_key=first.private_key, challenge=ch)  # fmt: skip
    r = gm._join("n", g, None, cbor2.loads(p.payload))  # as if read before the first join
    assert r.code == Code.CREATED
    m = gm.store.member("g", "n")
    g2 = gm.group("g")
    assert m is not None and g2 is not None and m.birth_gid == g2.gid != g.gid
    stale = cbor2.loads(gm.store.stale_sets("g")[g.num])
    assert first.material.sender_id in stale
    assert {n.node for n in r.notifications} == {"other"}
    check_invariants(gm)
    gm.close()


def test_renewal_racing_another_renewal_relinquishes_the_sender_id_in_use(db_url: str) -> None:
    """A Sender ID renewal that read the membership before another GM process renewed it
    gives up the Sender ID the member holds now, not the one it read."""
    gm = GroupManager(db_url)
    gm.create_group("g", backward_security=False)
    h = Harness(gm)
    h.join("n", "g")
    before = gm.store.member("g", "n")
    assert before is not None and before.sender_id is not None
    assert h.request("n", "PUT", "ace-group/g/nodes/n").code == Code.CONTENT  # renewal 1
    between = gm.store.member("g", "n")
    assert between is not None and between.sender_id not in (None, before.sender_id)
    g = gm.group("g")
    assert g is not None
    r = gm._renew_sender_id(g, before)  # renewal 2, read before renewal 1 committed
    assert r.code == Code.CONTENT
    stale = cbor2.loads(gm.store.stale_sets("g")[g.num])
    assert between.sender_id in stale and before.sender_id in stale
    check_invariants(gm)
    gm.close()


def test_other_processes_hear_of_visible_changes_only(pg_url: str) -> None:
    """LISTEN/NOTIFY: a rekeying committed through one store reaches another store's watch
    at once; a transaction announces itself only when it changed what other processes push
    (keying material, flags, evictions, channels), not for an access-list entry or a join
    that does not rekey."""

    async def scenario() -> None:
        writer, watcher = open_store(pg_url), open_store(pg_url)
        heard = asyncio.Queue[int]()
        task = asyncio.create_task(watcher.watch(lambda: heard.put_nowait(1)))
        await asyncio.wait_for(heard.get(), 10)  # the catch-up call once LISTEN is in place
        announced: list[bool] = []
        commit = writer._commit

        def spy(changed: bool) -> None:
            announced.append(changed)
            commit(changed)

        writer._commit = spy  # type: ignore[method-assign]
        gm = GroupManager(writer)
        gm.create_group("g", backward_security=False)
        await asyncio.wait_for(heard.get(), 10)
        h = Harness(gm)
        del announced[:]
        gm.allow("n", "g", RS)
        assert announced == [False]
        h.join("n", "g", allow=False)  # no rekeying: nothing for others to push
        assert not any(announced)
        del announced[:]
        gm.rekey("g")
        assert True in announced
        await asyncio.wait_for(heard.get(), 10)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.close()
        watcher.close()

    asyncio.run(scenario())
