"""``manager serve`` twice (and three times) on one PostgreSQL database, members on loopback.

The serve processes poll the database only every 60 s here, so a rekeying that reaches a
member observing one process after another process (or an offline command) performed it
came through LISTEN/NOTIFY. A process killed with SIGKILL in the middle of joins leaves the
database consistent, and its members carry on with another process.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

from grouposcore.manager.core import GroupManager
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.store import ChannelMaterial
from tests.cli.conftest import REPO, grouposcore_cmd
from tests.manager.helpers import RS, check_invariants

SLOW_POLL = "60"  # seconds: far longer than any wait below
MEMBERS = 24


def serve(url: str) -> tuple[subprocess.Popen[str], tuple[str, int]]:
    proc = subprocess.Popen(
        grouposcore_cmd("manager", "serve", "--db", url, "--bind", "127.0.0.1", "--port", "0",
                        "--sync", SLOW_POLL),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on 127.0.0.1:"):
        proc.kill()
        proc.wait()
        raise AssertionError(f"manager serve did not start: {line!r}")
    return proc, ("127.0.0.1", int(line.rsplit(":", 1)[1]))


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def setup(url: str, nodes: list[str]) -> dict[str, ChannelMaterial]:
    gm = GroupManager(url)
    gm.create_group("g")  # backward security: every join rekeys
    channels = {}
    for n in nodes:
        channels[n] = gm.commission_node(n)
        gm.allow(n, "g", RS)
    gm.close()
    return channels


async def open_member(
    tmp: Path, channel: ChannelMaterial, address: tuple[str, int], timeout: float = 10.0
) -> GroupMember:
    return await GroupMember.open(None, address, channel, "g", RS, tmp / f"{channel.node}.state",
                                  timeout=timeout, follow=True)  # fmt: skip


def current_num(url: str) -> int:
    gm = GroupManager(url)
    try:
        g = gm.group("g")
        assert g is not None
        check_invariants(gm)
        return g.num
    finally:
        gm.close()


def test_rekeyings_reach_observers_of_every_gm_process(pg_url: str, tmp_path: Path) -> None:
    nodes = [f"m{i}" for i in range(MEMBERS)]
    channels = setup(pg_url, nodes)
    procs: list[subprocess.Popen[str]] = []
    try:
        addresses = []
        for _ in range(3):
            p, address = serve(pg_url)
            procs.append(p)
            addresses.append(address)

        async def scenario() -> dict[str, float]:
            members: dict[str, GroupMember] = {}
            started = time.perf_counter()
            # Joins spread over the three processes, concurrently within each round; every
            # join rekeys, so each process keeps pushing the others' rekeyings meanwhile.
            for round_ in range(0, MEMBERS, 6):
                batch = nodes[round_ : round_ + 6]
                opened = await asyncio.gather(*(
                    open_member(tmp_path, channels[n], addresses[i % 3])
                    for i, n in enumerate(batch)
                ))  # fmt: skip
                members.update(zip(batch, opened, strict=True))
            joined = time.perf_counter() - started
            # Rekey and evict offline (a fourth writer on the database), and let a member
            # leave through one of the processes.
            gm = GroupManager(pg_url)
            gm.rekey("g")
            gm.evict("g", "m4")
            gm.evict("g", "m9")
            gm.close()
            await members["m7"].leave()
            gone = {"m4", "m9", "m7"}
            num = current_num(pg_url)
            await asyncio.gather(members["m4"].wait_terminated(timeout=20),
                                 members["m9"].wait_terminated(timeout=20))  # fmt: skip
            await asyncio.gather(*(
                m.wait_for(num, timeout=20) for n, m in members.items() if n not in gone
            ))  # fmt: skip
            converged = time.perf_counter() - started - joined
            for n, m in members.items():
                if n not in gone:
                    assert m.material.num == num, n
                await m.close()
            return {"joined": joined, "converged": converged}

        figures = asyncio.run(asyncio.wait_for(scenario(), 120))
        print(
            f"\n{MEMBERS} joins over 3 GM processes in {figures['joined']:.2f} s; two "
            f"evictions, a leave and a rekey reached all {MEMBERS - 3} observers in "
            f"{figures['converged']:.2f} s"
        )
    finally:
        stop(procs)


def test_gm_killed_mid_joins_leaves_consistent_state(pg_url: str, tmp_path: Path) -> None:
    nodes = [f"k{i}" for i in range(8)]
    channels = setup(pg_url, nodes)
    procs: list[subprocess.Popen[str]] = []
    try:
        addresses = []
        for _ in range(2):
            p, address = serve(pg_url)
            procs.append(p)
            addresses.append(address)
        victim_addr, survivor_addr = addresses

        async def scenario() -> None:
            members: dict[str, GroupMember] = {}
            members["k0"] = await open_member(tmp_path, channels["k0"], survivor_addr)
            members["k1"] = await open_member(tmp_path, channels["k1"], victim_addr)
            # Joins in flight at the victim (and one rekey through the survivor) when the
            # victim is killed.
            racing = [
                asyncio.ensure_future(open_member(tmp_path, channels[n], victim_addr, 3.0))
                for n in nodes[2:6]
            ]
            await asyncio.sleep(0.05)
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait()
            results = await asyncio.gather(*racing, return_exceptions=True)
            for n, r in zip(nodes[2:6], results, strict=True):
                if isinstance(r, GroupMember):
                    members[n] = r
                    await r.close()  # its observation died with the victim
                # The member retries on the survivor: resumes if its join was committed
                # (and answered), joins (again) otherwise.
                members[n] = await open_member(tmp_path, channels[n], survivor_addr)
            await members["k1"].close()
            members["k1"] = await open_member(tmp_path, channels["k1"], survivor_addr)
            for n in nodes[6:]:
                members[n] = await open_member(tmp_path, channels[n], survivor_addr)
            num = current_num(pg_url)
            await asyncio.gather(*(m.wait_for(num, timeout=15) for m in members.values()))
            sids = [m.material.sender_id for m in members.values()]
            assert len(set(sids)) == len(sids)
            for m in members.values():
                await m.close()

        asyncio.run(asyncio.wait_for(scenario(), 90))
        gm = GroupManager(pg_url)
        check_invariants(gm)
        assert {m.node for m in gm.members("g")} == set(nodes)
        gm.close()
    finally:
        stop(procs)
