#!/usr/bin/env python3
"""Group Manager scale: joins by group size, a rekey delivered to 1,000 members, rekey-on-join.

Run: ``python3 bench/bench_gm.py [--sizes 10,100,500,1000] [--members 1000] [--json]``

Why: issue 14 asks for a Group Manager whose join cost does not grow with the group when the
joiner asks for no credentials (>= 200 joins/s at 1,000 members through the sans-I/O core),
that delivers a rekeying to 1,000 members over the network within 2 s, and that does not
send N-1 messages one at a time per join when it rekeys on every join.

What is measured:

* joins (sans-I/O): ``GroupManager.handle`` for the challenge round trip and the Join
  Request (PoP verification, Sender ID allocation, the GM's own PoP signature, the store
  transaction), timed with the thread CPU clock, at each group size, for joiners asking
  for no credentials and for joiners asking for all of them. The group does not rekey on
  join here (backward security off), so the figure is the admission itself; the filler
  members are written through the store API. Only the GM's calls are timed (the joiner's
  PoP signature is made beforehand).
* rekey delivery (network): a :class:`GroupManagerService` on 127.0.0.1 and ``--members``
  members, each with its own OSCORE channel, observing /ace-group/GROUPNAME from
  lightweight receivers (raw UDP sockets, several members per socket) in ``--procs`` helper
  processes. Time from ``service.rekey`` until the last member has received its
  notification (receive times on CLOCK_MONOTONIC, which every process shares; the
  receivers verify each notification afterwards and check its 'num'), plus the GM
  thread's CPU time for the whole delivery.
* rekey-on-join (network): the same members, backward security on; ``--joins`` joins
  handled back to back (each as its own task, as requests arriving together are). Reports
  the GM's CPU per join, the notifications the members received per join, and the time
  until every member holds the final keys.
* manager serve request (no network): what ``grouposcore manager serve`` spends on one
  verified request (a member's GET of /ace-group/GROUPNAME) at ``--serve-members`` members,
  each with its channel, through ``SyncedService.serve`` itself. "before" is what it did
  until the store's change marker: re-read every group and channel (``sync``) before each
  request; "after" is ``serve`` as it is, which asks the marker only. Interleaved, thread
  CPU clock, ``--serve-rounds`` requests each.

The last line holds the key ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import cbor2  # noqa: E402

from grouposcore.cli.manager_serve import SyncedService  # noqa: E402
from grouposcore.coap import Code, Message, Type  # noqa: E402
from grouposcore.cose import EDDSA, Credential  # noqa: E402
from grouposcore.errors import OscoreError  # noqa: E402
from grouposcore.manager import member as mb  # noqa: E402
from grouposcore.manager.core import GroupManager  # noqa: E402
from grouposcore.manager.params import CF_ACE_GROUPCOMM, Param, Role  # noqa: E402
from grouposcore.manager.rekeying import allocate_sid  # noqa: E402
from grouposcore.manager.service import GroupManagerService, NodeRequest  # noqa: E402
from grouposcore.manager.store import ChannelMaterial, MemberRecord, open_store  # noqa: E402

GROUP = "g"
RS = (Role.REQUESTER, Role.RESPONDER)
_TARGET_JOINS = 200.0
_TARGET_REKEY_S = 2.0


# --- sans-I/O joins -------------------------------------------------------------------------


class _Joiner:
    """A node with its key pair, ready to join (its PoP is signed before timing starts)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key = EDDSA.generate_private_key()
        self.cred = Credential.build_ccs(self.key.public_key(), EDDSA.id, name).raw


def _fill(gm: GroupManager, start: int, count: int) -> None:
    """Add ``count`` members through the store API (Sender ID allocation included)."""
    g = gm.store.group(GROUP)
    assert g is not None
    policy = gm._sid_policy
    with gm.store.transaction():
        for i in range(start, start + count):
            node = f"f{i}"
            j = _Joiner(node)
            gm.store.set_access(node, GROUP, sum(1 << r for r in RS))
            sid = allocate_sid(gm.store, g, node, policy)
            gm.store.upsert_member(
                MemberRecord(
                    group=GROUP,
                    node=node,
                    roles=sum(1 << r for r in RS),
                    credential=j.cred,
                    sender_id=sid,
                    birth_gid=g.gid,
                    scope=b"",
                    client_nonce=b"0" * 8,
                    joined_at=time.time(),
                )
            )


def _timed_join(gm: GroupManager, j: _Joiner, get_creds: bool) -> int:
    """Thread CPU ns the GM spends admitting ``j`` (challenge round trip + Join Request)."""
    gm.allow(j.name, GROUP, RS)
    path = ("ace-group", GROUP)
    first = mb.build_join_request(GROUP, RS, credential=j.cred, get_creds=get_creds)
    t0 = time.thread_time_ns()
    r = gm.handle(j.name, "POST", path, first.payload, CF_ACE_GROUPCOMM)
    t1 = time.thread_time_ns()
    challenge = mb.parse_challenge(r.payload).kdcchallenge
    p = mb.build_join_request(
        GROUP, RS, credential=j.cred, private_key=j.key, challenge=challenge, get_creds=get_creds
    )
    t2 = time.thread_time_ns()
    r = gm.handle(j.name, "POST", path, p.payload, CF_ACE_GROUPCOMM)
    t3 = time.thread_time_ns()
    if r.code != Code.CREATED:
        raise RuntimeError(f"join failed: {r.code} {r.payload[:80]!r}")
    return (t1 - t0) + (t3 - t2)


def bench_joins(sizes: list[int], batch: int, workdir: Path) -> list[dict[str, Any]]:
    """Per-join CPU at each group size, without and with 'get_creds'."""
    gm = GroupManager(open_store(workdir / "joins.db"))
    gm.create_group(GROUP, backward_security=False)
    rows: list[dict[str, Any]] = []
    size = 0
    counter = 0
    gc.collect()
    for target in sizes:
        if target > size:
            _fill(gm, size, target - size)
            size = target
        for get_creds in (False, True):
            samples = []
            gc.disable()
            try:
                for _ in range(batch):
                    counter += 1
                    samples.append(_timed_join(gm, _Joiner(f"j{counter}"), get_creds))
                    size += 1
            finally:
                gc.enable()
            rows.append(
                {
                    "part": "join",
                    "size": target,
                    "get_creds": "all" if get_creds else "none",
                    "min_us": min(samples) / 1e3,
                    "median_us": statistics.median(samples) / 1e3,
                }
            )
    gm.close()
    return rows


# --- manager serve: the per-request check of the database --------------------------------


def bench_serve(members: int, rounds: int, workdir: Path) -> dict[str, Any]:
    """CPU per request of ``SyncedService.serve``: before (a full sync first) and after."""
    gm = GroupManager(open_store(workdir / "serve.db"))
    gm.create_group(GROUP, backward_security=False)
    _fill(gm, 0, members)
    with gm.store.transaction():  # one commit for all the channels
        for i in range(members):
            gm.commission_node(f"f{i}")
    svc = SyncedService(gm)
    path = ("ace-group", GROUP)

    def before(request: NodeRequest) -> Message:
        svc.sync()  # what serve did before every request
        return GroupManagerService.serve(svc, path, request)

    def after(request: NodeRequest) -> Message:
        return svc.serve(path, request)

    samples: dict[str, list[int]] = {"before": [], "after": []}
    gc.collect()
    gc.disable()
    try:
        for k in range(rounds):
            node = f"f{k % members}"
            for name, call in (("before", before), ("after", after)):
                request = NodeRequest(code=Code.GET, token=b"t", node=node)
                t0 = time.thread_time_ns()
                response = call(request)
                samples[name].append(time.thread_time_ns() - t0)
                if response.code != Code.CONTENT:
                    raise RuntimeError(f"serve answered {response.code}")
    finally:
        gc.enable()
        gm.close()
    row: dict[str, Any] = {"part": "serve", "members": members, "rounds": rounds}
    for name, values in samples.items():
        row[f"{name}_min_us"] = min(values) / 1e3
        row[f"{name}_median_us"] = statistics.median(values) / 1e3
    return row


# --- the network: receivers -----------------------------------------------------------------


def _ack(data: bytes) -> bytes | None:
    """An empty ACK for a CON datagram, else None."""
    if len(data) >= 4 and (data[0] >> 4) & 3 == 0:
        return bytes([0x60, 0]) + data[2:4]
    return None


def receiver_main(spec_path: str) -> None:
    """Helper process: register the members' observations, then report notifications."""
    spec = json.loads(Path(spec_path).read_text())
    gm_addr = (spec["gm"][0], spec["gm"][1])
    per_socket = spec["per_socket"]
    members = spec["members"]
    socks: list[socket.socket] = []
    # member state: [context, binding, socket, num reached, receive time]
    by_token: dict[bytes, list[Any]] = {}
    for i, m in enumerate(members):
        if i % per_socket == 0:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            s.bind(("127.0.0.1", 0))
            s.setblocking(False)
            socks.append(s)
        material = ChannelMaterial(
            m[0],
            bytes.fromhex(m[1]),
            bytes.fromhex(m[2]),
            bytes.fromhex(m[3]),
            bytes.fromhex(m[4]),
            None,
            m[5],
            m[6],
        )
        token = i.to_bytes(4, "big")
        by_token[token] = [material.context(as_gm=False), None, socks[-1], -1, 0.0]
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    by_fd = {s.fileno(): s for s in socks}
    inbox: deque[tuple[float, bytes]] = deque()

    def pump(timeout: float) -> None:
        for fd, _ in poller.poll(timeout):
            s = by_fd[fd]
            while True:
                try:
                    data = s.recv(2048)
                except BlockingIOError:
                    break
                inbox.append((time.monotonic(), data))
                ack = _ack(data)
                if ack is not None:
                    s.sendto(ack, gm_addr)

    def process() -> int:
        """Verify what arrived; returns how many datagrams were notifications of ours."""
        count = 0
        while inbox:
            when, data = inbox.popleft()
            msg = Message.decode(data)
            state = by_token.get(msg.token)
            if state is None or msg.code == 0 or state[1] is None:
                continue
            count += 1
            try:
                plain, _ = state[0].unprotect_response(msg, state[1])
            except OscoreError:  # e.g. an older notification overtaken by a newer one
                continue
            if plain.code != Code.CONTENT:
                continue
            num = cbor2.loads(plain.payload).get(Param.NUM, -1)
            if num > state[3]:
                state[3] = num
                state[4] = when
        return count

    # registration, ``window`` outstanding at a time
    tokens = list(by_token)
    window = 32
    pending: dict[bytes, float] = {}
    registered = 0
    mid = 1
    while registered < len(by_token):
        while tokens and len(pending) < window:
            token = tokens.pop()
            state = by_token[token]
            req = Message(Code.GET, Type.CON, mid, token)
            mid += 1
            req.options.uri_path = ["ace-group", spec["group"]]
            req.options.observe = 0
            protected, state[1] = state[0].protect_request(req)
            state[2].sendto(protected.encode(), gm_addr)
            pending[token] = time.monotonic()
        pump(0.05)
        while inbox:
            _, data = inbox.popleft()
            msg = Message.decode(data)
            if msg.token in pending and msg.code == Code.CONTENT:
                state = by_token[msg.token]
                plain, _ = state[0].unprotect_response(msg, state[1])
                state[3] = cbor2.loads(plain.payload)[Param.NUM]
                del pending[msg.token]
                registered += 1
        for token, sent in list(pending.items()):
            if time.monotonic() - sent > 5.0:
                raise SystemExit(f"registration of token {token.hex()} timed out")
    print(json.dumps({"ready": registered}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            return
        target = cmd["num"]
        pump(0)
        process()  # what arrived before this command (late retransmissions) is not counted
        print(json.dumps({"armed": True}), flush=True)
        deadline = time.monotonic() + cmd.get("timeout", 30.0)
        datagrams = 0
        while time.monotonic() < deadline:
            pump(0.02)
            datagrams += process()
            if all(s[3] >= target for s in by_token.values()):
                break
        # let stragglers (superseded notifications) arrive, so they are counted
        end = time.monotonic() + cmd.get("settle", 0.0)
        while time.monotonic() < end:
            pump(0.02)
            datagrams += process()
        reached = [s[4] for s in by_token.values() if s[3] >= target]
        print(
            json.dumps(
                {"reached": len(reached), "last": max(reached, default=0.0), "datagrams": datagrams}
            ),
            flush=True,
        )


# --- the network: the GM side ---------------------------------------------------------------


class _Receivers:
    """The helper processes, driven over their stdin/stdout."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    async def line(self, p: asyncio.subprocess.Process) -> dict[str, Any]:
        assert p.stdout is not None
        raw = await p.stdout.readline()
        if not raw:
            raise RuntimeError("a receiver process ended early")
        return dict(json.loads(raw))

    async def expect(self, num: int, settle: float = 0.0) -> list[dict[str, Any]]:
        """Arm every receiver for version ``num``; returns their acknowledgements (the
        reports follow, see :meth:`reports`)."""
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(
                (json.dumps({"cmd": "expect", "num": num, "settle": settle}) + "\n").encode()
            )
            await p.stdin.drain()
        return [await self.line(p) for p in self.procs]

    async def reports(self) -> list[dict[str, Any]]:
        return [await self.line(p) for p in self.procs]

    async def close(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(b'{"cmd": "quit"}\n')
            await p.stdin.drain()
            p.stdin.close()
            await p.wait()


async def _start_receivers(
    service: GroupManagerService,
    materials: list[ChannelMaterial],
    procs: int,
    per_socket: int,
    workdir: Path,
) -> _Receivers:
    assert service.endpoint is not None
    port = service.endpoint.address[1]
    started = []
    for k in range(procs):
        mine = materials[k::procs]
        spec = {
            "gm": ["127.0.0.1", port],
            "group": GROUP,
            "per_socket": per_socket,
            "members": [
                [
                    c.node,
                    c.master_secret.hex(),
                    c.master_salt.hex(),
                    c.gm_sender_id.hex(),
                    c.node_sender_id.hex(),
                    c.aead_alg,
                    c.hkdf_alg,
                ]
                for c in mine
            ],
        }
        path = workdir / f"receivers{k}.json"
        path.write_text(json.dumps(spec))
        started.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--receiver",
                str(path),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        )
    receivers = _Receivers(started)
    for p in started:
        ready = await receivers.line(p)
        if "ready" not in ready:
            raise RuntimeError(f"receiver not ready: {ready}")
    return receivers


async def bench_network(
    members: int,
    joins: int,
    procs: int,
    per_socket: int,
    spacing: float,
    rounds: int,
    workdir: Path,
) -> list[dict[str, Any]]:
    gm = GroupManager(open_store(workdir / "net.db"))
    service = GroupManagerService(gm)
    await service.start(("127.0.0.1", 0))
    rows: list[dict[str, Any]] = []
    try:
        service.create_group(GROUP, backward_security=False)
        _fill(gm, 0, members)
        materials = [service.commission(f"f{i}") for i in range(members)]
        receivers = await _start_receivers(service, materials, procs, per_socket, workdir)
        try:
            rows.append(await _rekey_delivery(service, receivers, members, rounds))
            rows.append(await _rekey_on_join(service, receivers, members, joins, 0.0, "r"))
            if spacing:
                rows.append(await _rekey_on_join(service, receivers, members, joins, spacing, "s"))
        finally:
            # the GM first: no retransmission may go to a receiver that has gone
            await service.close()
            await receivers.close()
    finally:
        await service.close()
        gm.close()
    return rows


def _merge(reports: list[dict[str, Any]], t0: float) -> tuple[int, float, int]:
    reached = sum(r["reached"] for r in reports)
    last = max(r["last"] for r in reports) - t0
    datagrams = sum(r["datagrams"] for r in reports)
    return reached, last, datagrams


async def _rekey_delivery(
    service: GroupManagerService, receivers: _Receivers, members: int, rounds: int
) -> dict[str, Any]:
    seconds, cpus, reached_all, datagrams_all = [], [], [], []
    for _ in range(rounds):
        g = service.gm.group(GROUP)
        assert g is not None
        await receivers.expect(g.num + 1)
        t0 = time.monotonic()
        c0 = time.thread_time_ns()
        service.rekey(GROUP)
        reports = await receivers.reports()
        cpus.append((time.thread_time_ns() - c0) / 1e6)
        reached, last, datagrams = _merge(reports, t0)
        seconds.append(last)
        reached_all.append(reached)
        datagrams_all.append(datagrams)
    return {
        "part": "rekey",
        "members": members,
        "rounds": rounds,
        "reached": min(reached_all),
        "seconds": statistics.median(seconds),
        "seconds_min": min(seconds),
        "gm_cpu_ms": statistics.median(cpus),
        "gm_cpu_ms_min": min(cpus),
        "datagrams": max(datagrams_all),
    }


async def _rekey_on_join(
    service: GroupManagerService,
    receivers: _Receivers,
    members: int,
    joins: int,
    spacing: float,
    tag: str,
) -> dict[str, Any]:
    gm = service.gm
    gm.set_backward_security(GROUP, True)
    joiners = []
    for i in range(joins):
        j = _Joiner(f"{tag}{i}")
        gm.allow(j.name, GROUP, RS)
        challenge = gm._challenges.issue(j.name)
        p = mb.build_join_request(
            GROUP, RS, credential=j.cred, private_key=j.key, challenge=challenge, get_creds=False
        )
        joiners.append((j, p))
    g = gm.group(GROUP)
    assert g is not None
    await receivers.expect(g.num + joins, settle=0.3)
    loop = asyncio.get_running_loop()

    async def one(j: _Joiner, payload: bytes) -> None:
        r = gm.handle(j.name, "POST", ("ace-group", GROUP), payload, CF_ACE_GROUPCOMM)
        if r.code != Code.CREATED:
            raise RuntimeError(f"join failed: {r.code}")
        service.deliver(r.notifications)

    t0 = time.monotonic()
    c0 = time.thread_time_ns()
    if spacing:
        for j, p in joiners:
            await one(j, p.payload)
            await asyncio.sleep(spacing)
    else:
        await asyncio.gather(*[loop.create_task(one(j, p.payload)) for j, p in joiners])
    reports = await receivers.reports()
    cpu = time.thread_time_ns() - c0
    reached, last, datagrams = _merge(reports, t0)
    return {
        "part": "rekey_on_join",
        "members": members,
        "joins": joins,
        "spacing": spacing,
        "reached": reached,
        "seconds": last,
        "gm_cpu_ms_per_join": cpu / 1e6 / joins,
        "messages_per_join": datagrams / joins,
    }


# --- report ---------------------------------------------------------------------------------


def _table(rows: list[dict[str, Any]]) -> str:
    out = []
    joins = [r for r in rows if r["part"] == "join"]
    if joins:
        out.append(
            f"{'join (sans-I/O, sqlite)':<26}{'size':>6}{'get_creds':>11}"
            f"{'min us':>10}{'median us':>11}{'joins/s':>9}"
        )
        for r in joins:
            out.append(
                f"{'':<26}{r['size']:>6}{r['get_creds']:>11}{r['min_us']:>10.0f}"
                f"{r['median_us']:>11.0f}{1e6 / r['median_us']:>9.0f}"
            )
    for r in rows:
        if r["part"] == "rekey":
            out.append(
                f"rekey to {r['members']} members over UDP ({r['rounds']} rounds, "
                f"min/median): all {r['reached']} reached in {r['seconds_min']:.3f}/"
                f"{r['seconds']:.3f} s, GM CPU {r['gm_cpu_ms_min']:.0f}/"
                f"{r['gm_cpu_ms']:.0f} ms, {r['datagrams']} notifications"
            )
        if r["part"] == "rekey_on_join":
            how = f"{r['spacing'] * 1e3:.0f} ms apart" if r["spacing"] else "back to back"
            out.append(
                f"rekey-on-join at {r['members']} members, {r['joins']} joins {how}: "
                f"GM CPU {r['gm_cpu_ms_per_join']:.1f} ms/join, "
                f"{r['messages_per_join']:.0f} messages/join, all {r['reached']} "
                f"members on the final keys after {r['seconds']:.3f} s"
            )
        if r["part"] == "serve":
            out.append(
                f"manager serve request at {r['members']} members ({r['rounds']} "
                f"requests, min/median): CPU per request before "
                f"{r['before_min_us']:.0f}/{r['before_median_us']:.0f} us, after "
                f"{r['after_min_us']:.0f}/{r['after_median_us']:.0f} us"
            )
    return "\n".join(out)


def _ratios(rows: list[dict[str, Any]], sizes: list[int]) -> str:
    parts = []
    none = {
        r["size"]: r["median_us"] for r in rows if r["part"] == "join" and r["get_creds"] == "none"
    }
    if none:
        big, small = max(none), min(none)
        rate = 1e6 / none[big]
        parts.append(
            f"joins/s@{big}={rate:.0f} (target {_TARGET_JOINS:.0f}: {rate / _TARGET_JOINS:.2f}x)"
        )
        parts.append(f"join cost {big}/{small} members={none[big] / none[small]:.2f}x")
    for r in rows:
        if r["part"] == "rekey":
            parts.append(
                f"rekey {r['members']} delivery={r['seconds']:.2f}s "
                f"({r['seconds'] / _TARGET_REKEY_S:.2f}x of the 2 s target)"
            )
        if r["part"] == "rekey_on_join":
            how = f"{r['spacing'] * 1e3:.0f}ms-apart" if r["spacing"] else "burst"
            parts.append(
                f"rekey-on-join ({how}) messages/join={r['messages_per_join']:.0f} "
                f"(N-1={r['members']}), {r['gm_cpu_ms_per_join']:.1f} ms CPU/join"
            )
        if r["part"] == "serve":
            parts.append(
                f"serve request@{r['members']} before/after="
                f"{r['before_median_us']:.0f}/{r['after_median_us']:.0f} us "
                f"({r['before_median_us'] / r['after_median_us']:.1f}x)"
            )
    return "ratios: " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,100,500,1000")
    ap.add_argument("--batch", type=int, default=10, help="timed joins per size and kind")
    ap.add_argument("--members", type=int, default=1000, help="members for the network parts")
    ap.add_argument("--joins", type=int, default=20, help="joins for rekey-on-join")
    ap.add_argument("--procs", type=int, default=2, help="receiver processes")
    ap.add_argument("--per-socket", type=int, default=25, help="members per receiver socket")
    ap.add_argument("--rounds", type=int, default=3, help="rekeyings timed (min, median)")
    ap.add_argument(
        "--spacing",
        type=float,
        default=0.02,
        help="seconds between joins in the spaced rekey-on-join run (0: none)",
    )
    ap.add_argument(
        "--serve-members",
        type=int,
        default=1000,
        help="members (with channels) for the manager serve request part",
    )
    ap.add_argument(
        "--serve-rounds",
        type=int,
        default=50,
        help="requests timed each way in the manager serve part",
    )
    ap.add_argument("--no-net", action="store_true", help="skip the network parts")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--receiver", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main(args.receiver)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-gm-") as tmp:
        workdir = Path(tmp)
        rows = bench_joins(sizes, args.batch, workdir)
        rows.append(bench_serve(args.serve_members, args.serve_rounds, workdir))
        if not args.no_net:
            rows += asyncio.run(
                bench_network(
                    args.members,
                    args.joins,
                    args.procs,
                    args.per_socket,
                    args.spacing,
                    args.rounds,
                    workdir,
                )
            )
    if args.json:
        print(json.dumps({"rows": rows, "ratios": _ratios(rows, sizes)}))
        return
    print(_table(rows))
    print(_ratios(rows, sizes))


if __name__ == "__main__":
    main()
