#!/usr/bin/env python3
"""End to end: one multicast GET to N Group OSCORE members, CPU per verified response
against the crypto it needs, all measured in the same run.

Run (as root; it re-executes itself in a private network namespace):
``python3 bench/bench_e2e.py [--sizes 10,100,500] [--modes group,pairwise]
[--leisure 0,0.5] [--rounds 5] [--loop asyncio|uvloop|both]``

Setup. Inside a fresh ``unshare -n`` namespace (``lo`` up, 224.0.0.0/4 routed to it, so
no datagram can reach another network), two member processes host N/2 members each, one
:class:`~grouposcore.transport.Endpoint` per member, all joined to 224.0.1.187 on ``lo``
(``SO_REUSEADDR`` on port 5683, so each member's socket gets its own copy of a request).
Like ``grouposcore serve`` with several members on one host, each member reads the shared
group port (``cli.server.GroupPortSocket``) and answers from a unicast socket of its own,
so every member has its own source address, as on a real network (sharing one would make
two members' equal Message IDs look like one duplicated response). This process is the
client: it sends a group-mode GET with ``Endpoint.group_request`` and
IP_MULTICAST_IF 127.0.0.1 and verifies every response. Members answer in group mode
(signature) or pairwise mode (AEAD only), right away (leisure 0) or after the RFC 7252
leisure delay. The group is built with the library's own ``GroupContext`` from keys
derived from a seed, without a Group Manager: each member knows the client's credential,
the client knows every member's. A warm-up round (pairwise keys, caches) is not counted.

What is timed. Each process reads its event-loop thread's CPU clock
(``time.thread_time_ns``) around a round: the client from sending the request to the last
response, each member between the driver's start and stop commands (which arrive while the
member is idle). The thread clock and not ``getrusage``: on a shared, noisy machine it
counts only this thread's user and kernel time (``recvmsg``/``sendto`` and the loopback
delivery that runs in the sender's system call), not other processes or threads, and it is
the same clock the crypto floor is read with. Total CPU of a round = client + both
members; per verified response = total / responses the client verified.

Crypto floor, measured in the same processes right after each round (interleaved, the
``cryptography`` primitives called directly on keys and sizes like the real ones):
member = 1 Ed25519 verify (the request) + 1 Ed25519 sign (group-mode response) or
1 AES-CCM-16-64-128 encryption (pairwise response); client = 1 verify (group) or 1 AES-CCM
decryption (pairwise) per response. The ratio per round is CPU per verified response over
floor per response; the table gives min and median over the rounds. (The real messages
also need an AEAD call and, in group mode, the keystream HKDF that encrypts the signature;
that is protocol cost the floor deliberately leaves out, as issue 14 defines it.)

Losses. ``expected`` is N per round, ``received`` what the client verified, ``drops`` the
namespace's kernel counters of datagrams dropped for a full buffer (/proc/net/snmp
``RcvbufErrors`` + ``SndbufErrors``).

Output: a table (one row per loop, N, mode, leisure) and last one line of key ratios.
``--profile DIR`` profiles every process during the measured rounds and writes
``DIR/{client,member0,member1}-N-mode-leisure-loop.{json,prof}``: with ``--profiler
sample`` (default) a statistical profile on the process CPU clock (``SIGPROF``, a few
percent of overhead; what a C function such as a signature check costs is charged to the
Python line that called it), with ``--profiler cprofile`` cProfile on the thread CPU clock
(exact call counts, but it inflates Python-heavy code about 2.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from grouposcore.cli.server import GroupPortSocket  # noqa: E402
from grouposcore.coap import Code, Message  # noqa: E402
from grouposcore.cose import Credential  # noqa: E402
from grouposcore.oscore import GroupContext  # noqa: E402
from grouposcore.oscore.security import ClientSecurity, ServerSecurity  # noqa: E402
from grouposcore.transport import Endpoint, Protection, Resource, Site  # noqa: E402
from grouposcore.transport.params import TransmissionParams  # noqa: E402
from grouposcore.transport.sockets import UdpSocket  # noqa: E402

NETNS_ENV = "GROUPOSCORE_BENCH_E2E_NETNS"
GROUP = ("224.0.1.187", 5683)
INTERFACE = "127.0.0.1"
SECRET = bytes(range(1, 17))
SALT = bytes.fromhex("9e7ca92223786340")
GID = bytes.fromhex("b3e2e0")
CLIENT_SID = b"\xc1\x1e"
MEMBER_PROCESSES = 2
COLUMNS = (
    "loop",
    "N",
    "mode",
    "leisure",
    "expected",
    "received",
    "lost",
    "drops",
    "cpu_us_min",
    "cpu_us_med",
    "crypto_us_min",
    "crypto_us_med",
    "ratio_min",
    "ratio_med",
    "member_us",
    "member_crypto_us",
    "client_us",
    "client_crypto_us",
)


# --- the group, from a seed --------------------------------------------------------------


def member_sid(index: int) -> bytes:
    return index.to_bytes(2, "big")


def identity(sid: bytes) -> tuple[Ed25519PrivateKey, Credential]:
    """Key pair and CCS of a member, the same in every process (derived from its ID)."""
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench-e2e" + sid).digest())
    return key, Credential.build_ccs(key.public_key(), -8, sid.hex())


def context(sid: bytes, peers: dict[bytes, bytes]) -> GroupContext:
    key, cred = identity(sid)
    return GroupContext(
        SECRET, GID, master_salt=SALT, sender_id=sid, private_key=key, credential=cred, peers=peers
    )


class PairwiseResponses(ServerSecurity):
    """Answers group-mode requests in pairwise mode (RFC 10021 lets the server choose)."""

    def protect_response(self, response: Message, binding: Any) -> Message:
        protected: Message = binding.context.protect_response(response, binding, pairwise=True)
        return protected


# --- the crypto floor --------------------------------------------------------------------


class Floor:
    """The bare primitives on message-sized inputs, per call, in ns of thread CPU."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.pub = self.key.public_key()
        self.signed = os.urandom(96)  # about a Countersign_structure of a small GET/2.05
        self.sig = self.key.sign(self.signed)
        self.ccm = AESCCM(os.urandom(16), tag_length=8)
        self.nonce = os.urandom(13)
        self.plain = os.urandom(12)
        self.aad = os.urandom(24)
        self.ct = self.ccm.encrypt(self.nonce, self.plain, self.aad)

    def measure(self, signatures: int = 60, aeads: int = 400) -> dict[str, float]:
        t = time.thread_time_ns
        key, pub, signed, sig = self.key, self.pub, self.signed, self.sig
        ccm, nonce, plain, aad, ct = self.ccm, self.nonce, self.plain, self.aad, self.ct
        t0 = t()
        for _ in range(signatures):
            key.sign(signed)
        t1 = t()
        for _ in range(signatures):
            pub.verify(sig, signed)
        t2 = t()
        for _ in range(aeads):
            ccm.encrypt(nonce, plain, aad)
        t3 = t()
        for _ in range(aeads):
            ccm.decrypt(nonce, ct, aad)
        t4 = t()
        return {
            "sign": (t1 - t0) / signatures,
            "verify": (t2 - t1) / signatures,
            "encrypt": (t3 - t2) / aeads,
            "decrypt": (t4 - t3) / aeads,
        }


def wakeup_cost(idle: float = 0.1, wakes: int = 15) -> tuple[float, float]:
    """One group-mode exchange's protocol work without the network (request protected,
    verified and decrypted, response protected, verified and decrypted: 2 signatures and
    2 verifications), in µs of thread CPU (median): back to back, and as the first work
    after ``idle`` seconds asleep, as a member or client answering within the leisure
    does. The difference is what a wake-up costs on this machine (cold caches after the
    core ran something else): no code in the process can save it, only avoid it."""
    member = member_sid(0)
    _, client_cred = identity(CLIENT_SID)
    _, member_cred = identity(member)
    client = ClientSecurity(context(CLIENT_SID, {member: member_cred.raw}))
    server = ServerSecurity([context(member, {CLIENT_SID: client_cred.raw})])

    def once() -> float:
        t0 = time.thread_time_ns()
        wire, binding = client.protect_request(Message(Code.GET, payload=b"", token=b"t"))
        got = server.unprotect_request(Message.decode(wire.encode()))
        assert got is not None
        response = server.protect_response(Message(Code.CONTENT, payload=b"21.5"), got[1])
        client.unprotect_response(Message.decode(response.encode()), binding)
        return (time.thread_time_ns() - t0) / 1000

    hot = statistics.median(once() for _ in range(wakes * 4))
    cold = []
    for _ in range(wakes):
        time.sleep(idle)
        cold.append(once())
    return hot, statistics.median(cold)


def member_floor(f: dict[str, float], mode: str) -> float:
    return f["verify"] + (f["sign"] if mode == "group" else f["encrypt"])


def client_floor(f: dict[str, float], mode: str) -> float:
    return f["verify"] if mode == "group" else f["decrypt"]


# --- profiling ---------------------------------------------------------------------------


def _where(code: Any) -> str:
    name = code.co_filename
    for marker in ("/src/", "/lib/python3"):
        if marker in name:
            name = name.split(marker, 1)[1]
    return f"{name}:{code.co_name}"


class Sampler:
    """A statistical profiler: every ``interval`` seconds of this process's CPU time
    (``ITIMER_PROF``: user and kernel; Linux delivers it at the scheduler tick, so the
    real interval is longer) the signal handler notes the running function and line (own
    time) and every function on the stack (cumulative time). Counts are turned into time
    with the thread CPU measured while the sampler ran."""

    suffix = "json"

    def __init__(self, interval: float = 0.0005) -> None:
        self.interval = interval
        self.samples = 0
        self.own: collections.Counter[str] = collections.Counter()
        self.own_lines: collections.Counter[str] = collections.Counter()
        self.cum: collections.Counter[str] = collections.Counter()
        self.cpu_ns = 0
        self._since = 0

    def _tick(self, signum: int, frame: Any) -> None:
        self.samples += 1
        if frame is None:
            return
        where = _where(frame.f_code)
        self.own[where] += 1
        self.own_lines[f"{where}:{frame.f_lineno}"] += 1
        seen = set()
        while frame is not None:
            key = _where(frame.f_code)
            if key not in seen:
                seen.add(key)
                self.cum[key] += 1
            frame = frame.f_back

    def enable(self) -> None:
        signal.signal(signal.SIGPROF, self._tick)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        self._since = time.thread_time_ns()

    def disable(self) -> None:
        self.cpu_ns += time.thread_time_ns() - self._since
        signal.setitimer(signal.ITIMER_PROF, 0, 0)

    def dump(self, path: str, units: int) -> None:
        """Write µs per unit (request served, response received) of each function."""
        per = self.cpu_ns / 1e3 / max(self.samples, 1) / max(units, 1)

        def top(counter: collections.Counter[str]) -> dict[str, float]:
            return {k: round(v * per, 1) for k, v in counter.most_common(60)}

        with open(path, "w") as f:
            json.dump(
                {
                    "units": units,
                    "samples": self.samples,
                    "us_per_unit": round(self.samples * per, 1),
                    "own": top(self.own),
                    "own_lines": top(self.own_lines),
                    "cum": top(self.cum),
                },
                f,
                indent=1,
            )


class CProfiler:
    suffix = "prof"

    def __init__(self) -> None:
        self.profile = cProfile.Profile(time.thread_time)

    def enable(self) -> None:
        self.profile.enable()

    def disable(self) -> None:
        self.profile.disable()

    def dump(self, path: str, units: int) -> None:
        self.profile.dump_stats(path)


def profiler(kind: str) -> Sampler | CProfiler:
    return Sampler() if kind == "sample" else CProfiler()


# --- member process ----------------------------------------------------------------------


class Answer(Resource):
    protection = Protection(group=True)

    def __init__(self, host: MemberHost) -> None:
        super().__init__()
        self.host = host

    async def render_get(self, request: Message) -> Message:
        self.host.served += 1
        return Message(Code.CONTENT, payload=b"21.5 C")


class MemberHost:
    """The members of one process, driven by JSON lines on stdin."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self.unicast: list[UdpSocket] = []
        self.served = 0
        self.started = 0
        self.floor = Floor()
        self.profile: Sampler | CProfiler | None = None
        self.units = 0

    async def setup(self, first: int, count: int, mode: str, leisure: float, slots: int) -> None:
        await self.close()
        _, client_cred = identity(CLIENT_SID)
        peers = {CLIENT_SID: client_cred.raw}
        security_class = PairwiseResponses if mode == "pairwise" else ServerSecurity
        for index in range(first, first + count):
            sid = member_sid(index)
            site = Site()
            site.add("temp", Answer(self))
            unicast = UdpSocket(("127.0.0.1", 0))
            self.unicast.append(unicast)
            ep = Endpoint(
                GroupPortSocket(("0.0.0.0", GROUP[1]), unicast),
                site=site,
                leisure=leisure,
                params=TransmissionParams(leisure_slots=slots),
                server_security=security_class([context(sid, peers)]),
                multicast_interface=INTERFACE,
            )
            ep.join_group(GROUP[0], INTERFACE)
            self.endpoints.append(ep)

    async def close(self) -> None:
        for ep in self.endpoints:
            await ep.close()
        for sock in self.unicast:
            sock.close()
        self.endpoints, self.unicast = [], []

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        what = cmd["cmd"]
        if what == "setup":
            await self.setup(cmd["first"], cmd["count"], cmd["mode"], cmd["leisure"], cmd["slots"])
            return {}
        if what == "start":
            self.served = 0
            if cmd.get("profile"):
                self.profile = self.profile or profiler(cmd["profile"])
                self.profile.enable()
            self.started = time.thread_time_ns()
            return {}
        if what == "stop":
            cpu = time.thread_time_ns() - self.started
            if self.profile is not None:
                self.profile.disable()
            self.units += self.served
            return {"cpu_ns": cpu, "served": self.served}
        if what == "floor":
            return {"floor": self.floor.measure()}
        if what == "dump":
            if self.profile is not None:
                self.profile.dump(f"{cmd['path']}.{self.profile.suffix}", self.units)
                self.profile = None
            self.units = 0
            return {}
        if what == "quit":
            await self.close()
            return {}
        raise ValueError(f"unknown command {what!r}")


async def member_main() -> None:
    host = MemberHost()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[bytes] = asyncio.Queue()
    pending = b""

    def readable() -> None:
        nonlocal pending
        chunk = os.read(0, 65536)
        if not chunk:
            lines.put_nowait(b'{"cmd": "quit"}')
            loop.remove_reader(0)
            return
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            lines.put_nowait(line)

    loop.add_reader(0, readable)
    while True:
        cmd = json.loads(await lines.get())
        try:
            reply = await host.command(cmd)
        except Exception as exc:  # reported to the driver, which stops
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(1, json.dumps(reply).encode() + b"\n")
        if cmd["cmd"] == "quit":
            return


class Member:
    """The driver's handle on one member process (blocking request/reply over pipes)."""

    def __init__(self, loop_kind: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", "member", "--loop", loop_kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"member process ended (exit {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"member: {reply['error']}")
        return reply

    def quit(self) -> None:
        with contextlib.suppress(Exception):
            self.call(cmd="quit")
        self.proc.wait(timeout=30)


# --- client / driver ---------------------------------------------------------------------


def kernel_drops() -> int:
    """Datagrams this namespace dropped for a full socket buffer (receive or send)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    counters = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return int(counters.get("RcvbufErrors", 0)) + int(counters.get("SndbufErrors", 0))


@dataclass
class Round:
    received: int
    served: int
    cpu_ns: int
    member_ns: int
    client_ns: int
    member_floor_ns: float
    client_floor_ns: float

    @property
    def per_response(self) -> float:
        return self.cpu_ns / max(self.received, 1)

    @property
    def floor(self) -> float:
        return self.member_floor_ns + self.client_floor_ns

    @property
    def ratio(self) -> float:
        return self.per_response / self.floor


@dataclass
class Config:
    loop: str
    n: int
    mode: str
    leisure: float
    rounds: list[Round] = field(default_factory=list)
    drops: int = 0

    def row(self) -> dict[str, Any]:
        r = self.rounds
        med = statistics.median
        return {
            "loop": self.loop,
            "N": self.n,
            "mode": self.mode,
            "leisure": self.leisure,
            "expected": self.n * len(r),
            "received": sum(x.received for x in r),
            "lost": self.n * len(r) - sum(x.received for x in r),
            "drops": self.drops,
            "cpu_us_min": min(x.per_response for x in r) / 1e3,
            "cpu_us_med": med(x.per_response for x in r) / 1e3,
            "crypto_us_min": min(x.floor for x in r) / 1e3,
            "crypto_us_med": med(x.floor for x in r) / 1e3,
            "ratio_min": min(x.ratio for x in r),
            "ratio_med": med(x.ratio for x in r),
            "member_us": med(x.member_ns / max(x.served, 1) for x in r) / 1e3,
            "member_crypto_us": med(x.member_floor_ns for x in r) / 1e3,
            "client_us": med(x.client_ns / max(x.received, 1) for x in r) / 1e3,
            "client_crypto_us": med(x.client_floor_ns for x in r) / 1e3,
        }


async def one_round(ep: Endpoint, security: ClientSecurity, n: int, timeout: float) -> int:
    """Send the group request; the number of distinct members whose response verified."""
    request = Message(Code.GET)
    request.options.uri_path = ["temp"]
    senders: set[bytes] = set()
    responses = ep.group_request(
        request, GROUP, timeout=timeout, security=security, interface=INTERFACE
    )
    async with contextlib.aclosing(responses):
        async for response in responses:
            info = getattr(response, "security", None)
            if response.code == Code.CONTENT and info is not None:
                senders.add(info.sender_id)
                if len(senders) == n:
                    break
    return len(senders)


async def run_config(
    cfg: Config,
    members: list[Member],
    rounds: int,
    warmup: int,
    profile: Path | None,
    profiler_kind: str,
    slots: int,
) -> Config:
    per = -(-cfg.n // len(members))
    first = 1
    for m in members:
        count = min(per, cfg.n - first + 1)
        m.call(
            cmd="setup", first=first, count=count, mode=cfg.mode, leisure=cfg.leisure, slots=slots
        )
        first += count
    peers = {member_sid(i): identity(member_sid(i))[1].raw for i in range(1, cfg.n + 1)}
    security = ClientSecurity(context(CLIENT_SID, peers))
    floor = Floor()
    timeout = cfg.leisure + 10.0
    client_profile = profiler(profiler_kind) if profile else None
    ep = await Endpoint.create(("0.0.0.0", 0), multicast_interface=INTERFACE)
    try:
        for _ in range(warmup):
            await one_round(ep, security, cfg.n, timeout)
        drops = kernel_drops()
        for _ in range(rounds):
            # the driver's pipe I/O blocks the loop here, between rounds, never during one
            for m in members:
                m.call(cmd="start", profile=profiler_kind if profile else None)
            if client_profile is not None:
                client_profile.enable()
            t0 = time.thread_time_ns()
            received = await one_round(ep, security, cfg.n, timeout)
            client_ns = time.thread_time_ns() - t0
            if client_profile is not None:
                client_profile.disable()
            stops = [m.call(cmd="stop") for m in members]
            floors = [m.call(cmd="floor")["floor"] for m in members]
            mine = floor.measure()
            served = sum(s["served"] for s in stops)
            member_ns = sum(s["cpu_ns"] for s in stops)
            cfg.rounds.append(
                Round(
                    received=received,
                    served=served,
                    cpu_ns=member_ns + client_ns,
                    member_ns=member_ns,
                    client_ns=client_ns,
                    member_floor_ns=statistics.fmean(member_floor(f, cfg.mode) for f in floors),
                    client_floor_ns=client_floor(mine, cfg.mode),
                )
            )
        cfg.drops = kernel_drops() - drops
    finally:
        await ep.close()
    if profile is not None and client_profile is not None:
        tag = f"{cfg.n}-{cfg.mode}-{cfg.leisure:g}-{cfg.loop}"
        received = sum(r.received for r in cfg.rounds)
        client_profile.dump(str(profile / f"client-{tag}.{client_profile.suffix}"), received)
        for i, m in enumerate(members):
            m.call(cmd="dump", path=str(profile / f"member{i}-{tag}"))
    return cfg


def run_loop(kind: str, coro: Coroutine[Any, Any, Any]) -> Any:
    if kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def driver(args: argparse.Namespace, loop_kind: str) -> list[dict[str, Any]]:
    members = [Member(loop_kind) for _ in range(MEMBER_PROCESSES)]
    rows = []
    try:
        for n in args.sizes:
            for mode in args.modes:
                for leisure in args.leisure:
                    cfg = Config(loop_kind, n, mode, leisure)
                    run_loop(
                        loop_kind,
                        run_config(
                            cfg,
                            members,
                            args.rounds,
                            args.warmup,
                            args.profile,
                            args.profiler,
                            args.slots,
                        ),
                    )
                    row = cfg.row()
                    rows.append(row)
                    print(format_row(row), flush=True)
    finally:
        for m in members:
            m.quit()
    return rows


def header() -> str:
    return (
        "loop     N    mode     leisure expected received lost drops | cpu_us_min cpu_us_med"
        " | crypto_us_min crypto_us_med | ratio_min ratio_med | member_us (member_crypto_us)"
        " client_us (client_crypto_us)"
    )


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['loop']:<8} {r['N']:<4} {r['mode']:<8} {r['leisure']:<7g} {r['expected']:<8} "
        f"{r['received']:<8} {r['lost']:<4} {r['drops']:<5} | {r['cpu_us_min']:10.0f} "
        f"{r['cpu_us_med']:10.0f} | {r['crypto_us_min']:13.0f} {r['crypto_us_med']:13.0f} | "
        f"{r['ratio_min']:9.2f} {r['ratio_med']:9.2f} | {r['member_us']:9.0f} "
        f"({r['member_crypto_us']:.0f}) {r['client_us']:9.0f} ({r['client_crypto_us']:.0f})"
    )


def key_ratios(rows: list[dict[str, Any]], target: float) -> str:
    parts = []
    for kind in dict.fromkeys(r["loop"] for r in rows):
        mine = [r for r in rows if r["loop"] == kind]
        held = sum(r["ratio_med"] <= target for r in mine)
        parts.append(
            f"{kind}: median ratio {min(r['ratio_med'] for r in mine):.2f}-"
            f"{max(r['ratio_med'] for r in mine):.2f}x, {held}/{len(mine)} rows "
            f"<= {target}x"
        )
    loops = list(dict.fromkeys(r["loop"] for r in rows))
    if len(loops) == 2:
        base = {(r["N"], r["mode"], r["leisure"]): r for r in rows if r["loop"] == loops[0]}
        speed = [
            base[k]["cpu_us_med"] / r["cpu_us_med"]
            for r in rows
            if r["loop"] == loops[1]
            for k in [(r["N"], r["mode"], r["leisure"])]
            if k in base
        ]
        parts.append(f"{loops[0]}/{loops[1]} CPU per response {statistics.median(speed):.2f}x")
    lost = sum(r["lost"] for r in rows)
    expected = sum(r["expected"] for r in rows)
    parts.append(f"lost {lost}/{expected}, kernel drops {sum(r['drops'] for r in rows)}")
    return "key ratios: " + "; ".join(parts)


def in_namespace(argv: list[str]) -> int:
    """Re-run this script in a new network namespace (as root), with lo set up there."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        print(
            "bench_e2e needs root, unshare and ip (it runs in a private network namespace)",
            file=sys.stderr,
        )
        return 2
    setup = 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$0" "$@"'
    env = dict(os.environ, **{NETNS_ENV: "1"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    cmd = ["unshare", "-n", "sh", "-c", setup, sys.executable, __file__, *argv]
    return subprocess.run(cmd, env=env, check=False).returncode


def csv(kind: type) -> Any:
    return lambda text: [kind(x) for x in text.split(",") if x]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=csv(int), default=[10, 100, 500])
    ap.add_argument("--modes", type=csv(str), default=["group", "pairwise"])
    ap.add_argument(
        "--leisure",
        type=csv(float),
        default=[0.0, 0.5],
        help="seconds of leisure delay to run with (0: answer at once)",
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="both",
        help="both: asyncio, and uvloop when it is installed",
    )
    ap.add_argument("--target", type=float, default=1.5)
    ap.add_argument(
        "--slots",
        type=int,
        default=TransmissionParams().leisure_slots,
        help="the members' TransmissionParams.leisure_slots (default %(default)s; 0: every "
        "response leaves at its own moment)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a profile of every process to this directory",
    )
    ap.add_argument("--profiler", choices=("sample", "cprofile"), default="sample")
    ap.add_argument(
        "--role", choices=("driver", "member"), default="driver", help=argparse.SUPPRESS
    )
    args = ap.parse_args()
    if args.role == "member":
        run_loop(args.loop, member_main())
        return 0
    if not os.environ.get(NETNS_ENV):
        return in_namespace(sys.argv[1:])
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if "uvloop" in loops:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            if args.loop == "uvloop":
                ap.error("uvloop is not installed (pip install 'grouposcore[fast]')")
            loops = ["asyncio"]
            print("uvloop is not installed (pip install 'grouposcore[fast]'): asyncio only")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.rounds} rounds after {args.warmup} warm-up, CPU per verified response "
        f"against crypto (member: verify + sign|AEAD, client: verify|AEAD); leisure slots "
        f"{args.slots}"
    )
    hot, cold = wakeup_cost()
    print(
        f"wake-up cost on this machine: one group exchange's protocol work {hot:.0f} µs back "
        f"to back, {cold:.0f} µs as the first work after 0.1 s asleep (+{cold - hot:.0f} µs "
        f"per wake-up)"
    )
    print(header(), flush=True)
    rows = []
    for kind in loops:
        rows += driver(args, kind)
    print(key_ratios(rows, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
