"""The demo's story on real pieces: a Group Manager, a switch and N lights, all joined over
OSCORE channels with proof of possession, commanding the lights with Group OSCORE multicast.

Every node is a :class:`~grouposcore.manager.runtime.GroupMember` with real UDP endpoints
in this process: one unicast endpoint (its GM channel, unicast repairs of a firmware push,
and the ``--unicast`` fallback) and, for lights, one endpoint on the group port that joined
the multicast group. Each step checks what it claims and ends in a :class:`StepResult`;
the views (``grouposcore.demo.view``) only display.

Why the joining order: with backward security every join rekeys, and only the rekeying
message tells existing members the joiner's credential. So the lights join first with
rekey-on-join off (none of them needs the others), then it is switched on and the switch
joins: one rekeying tells every light the switch's credential, and the switch got all the
lights' credentials in its join response.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from grouposcore.coap import Code, Message, Type
from grouposcore.coap.constants import ALL_COAP_NODES_V4, ALL_COAP_NODES_V6_LINK
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import Role
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.service import GroupManagerService
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import ServerSecurity
from grouposcore.push.protocol import PushReceiver, PushSender
from grouposcore.push.runner import (
    FirmwareResource,
    PushResult,
    SenderTagging,
    default_block_size,
    push_file,
)
from grouposcore.transport import Endpoint, Protection, Resource, Site
from grouposcore.transport.sockets import UdpSocket

__all__ = [
    "DemoConfig",
    "DemoReport",
    "DemoView",
    "LightRow",
    "RoundSummary",
    "StepResult",
    "run_demo",
]

GROUP = "lights"
DEFAULT_V4_GROUP = ALL_COAP_NODES_V4  # 224.0.1.187
#: the most lights a demo runs (each gets a Message ID range of 64 on the shared port)
MAX_LIGHTS = 1001


@dataclass
class DemoConfig:
    lights: int = 8
    db: Path | None = None
    interface: str = "lo"
    ipv6: bool = False
    port: int = 5683
    #: no multicast: the switch sends the group-mode request to each light in turn
    unicast: bool = False
    firmware: int | None = None
    #: how long a command round waits for answers at most (it ends when all answered)
    timeout: float = 3.0
    seed: int | None = None

    @property
    def group_address(self) -> str:
        return ALL_COAP_NODES_V6_LINK if self.ipv6 else DEFAULT_V4_GROUP

    @property
    def leisure(self) -> float:
        """Spread of the lights' answers to a multicast command: grows with the group."""
        return min(0.2, 0.002 * (self.lights + 1))


@dataclass
class LightRow:
    name: str
    sender_id: str
    state: str = "-"
    verified: str = "-"
    rtt_ms: float | None = None
    note: str = ""
    ok: bool = False


@dataclass
class RoundSummary:
    command: str
    expected: int
    verified: int
    seconds: float
    rows: list[LightRow]

    @property
    def line(self) -> str:
        return (f"{self.verified} of {self.expected} verified, whole group in "
                f"{self.seconds * 1000:.1f} ms")


@dataclass
class StepResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoReport:
    steps: list[StepResult]
    seconds: float
    mode: str

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if not s.ok]


class DemoView(Protocol):
    """What the demo shows; the CLI picks a rich, plain or JSON implementation."""

    def step(self, name: str, title: str) -> None: ...
    def note(self, text: str) -> None: ...
    def round_start(self, command: str, rows: list[LightRow]) -> None: ...
    def round_update(self, row: LightRow) -> None: ...
    def round_end(self, summary: RoundSummary) -> None: ...
    def push_start(self, size: int, blocks: int, members: int) -> None: ...
    def push_progress(self, blocks_sent: int, blocks: int, complete: int, members: int,
                      repairs: int) -> None: ...
    def push_end(self, result: PushResult) -> None: ...
    def result(self, step: StepResult) -> None: ...


# --- the pieces on each node -----------------------------------------------------------


class FailureLog:
    """Delegating server security that notes every request it rejected (by error name)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failures: list[str] = []

    def unprotect_request(self, request: Message) -> tuple[Message, Any] | None:
        try:
            return self.inner.unprotect_request(request)
        except Exception as exc:
            self.failures.append(type(exc).__name__)
            raise

    def protect_response(self, response: Message, binding: Any) -> Message:
        return self.inner.protect_response(response, binding)


class Light(Resource):
    """``/light``: POST ``on``, ``off`` or ``dim N`` (0..100); answers its new state."""

    protection = Protection(oscore=True, group=True)

    def __init__(self) -> None:
        super().__init__()
        self.state = "off"
        self.level = 0
        self.runs = 0

    @property
    def shown(self) -> str:
        return "off" if self.state == "off" else f"{self.state} {self.level}"

    async def render_post(self, request: Message) -> Message:
        words = request.payload.decode("utf-8", "replace").split()
        if words == ["on"]:
            self.state, self.level = "on", 100
        elif words == ["off"]:
            self.state, self.level = "off", 0
        elif len(words) == 2 and words[0] == "dim" and words[1].isdigit() \
                and 0 <= int(words[1]) <= 100:
            self.state, self.level = "dim", int(words[1])
        else:
            return Message(Code.BAD_REQUEST, payload=b"on, off or dim 0..100")
        self.runs += 1
        return Message(Code.CHANGED, payload=self.shown.encode())

    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=self.shown.encode())


class _SpreadMids(random.Random):
    """A light's endpoint RNG whose first ``randrange`` (the message layer's initial Message
    ID) is a chosen one.

    On one host all lights answer from the same address and port (they share the group
    port), and the switch's message layer deduplicates by (address, Message ID): two lights
    with the same Message ID would look like one answer sent twice. Real devices have their
    own addresses; here the lights get Message ID ranges far apart instead.
    """

    def __init__(self, first: int) -> None:
        super().__init__()
        self._first: int | None = first

    def randrange(self, *args: Any, **kwargs: Any) -> int:  # type: ignore[override]
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return super().randrange(*args, **kwargs)


class Capture:
    """The switch's client security, keeping each protected command as it went out (what
    an eavesdropper on the group would record, for the replay step)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        #: (command, protected request, destination) in the order sent
        self.sent: list[tuple[str, Message, Any]] = []

    def protect_request(self, request: Message) -> tuple[Message, Any]:
        wire, binding = self.inner.protect_request(request)
        if request.options.uri_path == ["light"]:
            self.sent.append((request.payload.decode("utf-8", "replace"), wire, request.remote))
        return wire, binding

    def commands(self, round_index: int) -> list[tuple[Message, Any]]:
        """The protected requests of one command round (-1: the latest, 0: the first)."""
        rounds: list[list[tuple[Message, Any]]] = []
        last_text = None
        for text, wire, remote in self.sent:
            if text != last_text or not rounds or any(r == remote for _, r in rounds[-1]):
                rounds.append([])
            rounds[-1].append((wire, remote))
            last_text = text
        return rounds[round_index] if rounds else []

    def unprotect_response(self, response: Message, binding: Any) -> Message:
        return self.inner.unprotect_response(response, binding)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@dataclass
class Node:
    name: str
    member: GroupMember
    unicast: Endpoint
    group_ep: Endpoint | None = None
    light: Light | None = None
    firmware: FirmwareResource | None = None
    log: FailureLog | None = None
    evicted: bool = False
    files: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def sid(self) -> bytes:
        sid = self.member.material.sender_id
        assert sid is not None
        return sid


# --- the demo --------------------------------------------------------------------------


class Demo:
    def __init__(self, config: DemoConfig, view: DemoView) -> None:
        self.cfg = config
        self.view = view
        self.steps: list[StepResult] = []
        self.nodes: dict[str, Node] = {}
        self.endpoints: list[Endpoint] = []
        self.rng = random.Random(config.seed)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.gm: GroupManager | None = None
        self.svc: GroupManagerService | None = None
        self.switch: Node | None = None
        self.capture: Capture | None = None

    # --- setup ---------------------------------------------------------------------------

    @property
    def bind_host(self) -> str:
        if self.cfg.ipv6:
            return "::"
        return "0.0.0.0" if not self.cfg.unicast else "127.0.0.1"

    async def _node(self, name: str, roles: list[Role], *, light: bool) -> Node:
        assert self.svc is not None and self.svc.endpoint is not None and self._tmp
        self.svc.gm.allow(name, GROUP, roles)
        channel = self.svc.commission(name)
        host = "::" if self.cfg.ipv6 else "127.0.0.1"
        site = Site()
        uni = await Endpoint.create((host, 0), site=site, multicast_interface=self.cfg.interface)
        self.endpoints.append(uni)
        member = await GroupMember.open(
            uni, self.svc.endpoint.address, channel, GROUP, roles,
            Path(self._tmp.name) / f"{name}.state", timeout=10.0,
        )  # fmt: skip
        node = Node(name, member, uni)
        node.log = FailureLog(member.server_security())
        hook = SenderTagging(node.log)
        uni.server_security = hook
        if light:
            node.light = Light()
            node.firmware = FirmwareResource(
                PushReceiver(port=uni.address[1]),
                on_complete=lambda tid, data: node.files.__setitem__(tid, data),
            )
            site.add("light", node.light)
            site.add("fw", node.firmware)
            if not self.cfg.unicast:
                index = int(name.removeprefix("light"))
                gep = await Endpoint.create(
                    (self.bind_host, self.cfg.port), site=site, server_security=hook,
                    leisure=self.cfg.leisure, reuse_address=True,
                    multicast_interface=self.cfg.interface,
                    rng=_SpreadMids((index * 0x10000 // MAX_LIGHTS) & 0xFFFF),
                )  # fmt: skip
                gep.join_group(self.cfg.group_address, self.cfg.interface)
                node.group_ep = gep
                self.endpoints.append(gep)
        self.nodes[name] = node
        return node

    async def setup(self) -> None:
        start = time.perf_counter()
        self._tmp = tempfile.TemporaryDirectory(prefix="grouposcore-demo-")
        db = self.cfg.db if self.cfg.db is not None else Path(self._tmp.name) / "gm.db"
        self.gm = GroupManager(db)
        self.svc = GroupManagerService(self.gm)
        if self.gm.group(GROUP) is not None:
            raise GroupOscoreError(f"the database {db} already has a group {GROUP!r}")
        self.svc.create_group(GROUP, backward_security=False)
        await self.svc.start(("127.0.0.1", 0))
        self.view.step("join", f"Group Manager on {_addr(self.svc.endpoint.address)}: "
                       f"group '{GROUP}', 1 switch and {self.cfg.lights} lights join "
                       "with proof of possession")
        gate = asyncio.Semaphore(16)

        async def join_light(i: int) -> None:
            async with gate:
                await self._node(f"light{i}", [Role.RESPONDER], light=True)

        await asyncio.gather(*(join_light(i) for i in range(1, self.cfg.lights + 1)))
        self.gm.set_backward_security(GROUP, True)
        switch = await self._node("switch", [Role.REQUESTER], light=False)
        self.switch = switch
        self.capture = Capture(switch.member.client_security())
        num = switch.member.material.num
        await asyncio.gather(*(n.member.wait_for(num, 10.0) for n in self.lights()))
        sids = {n.sid for n in self.nodes.values()}
        peers = set(switch.member.material.peers)
        ok = len(sids) == len(self.nodes) and peers == {n.sid for n in self.lights()}
        self._result("join", ok,
                     f"{len(self.nodes)} members joined, distinct Sender IDs, switch knows "
                     f"{len(peers)} lights, group version {num}", start,
                     members=len(self.nodes), num=num)  # fmt: skip

    def lights(self, *, include_evicted: bool = False) -> list[Node]:
        found = [n for n in self.nodes.values() if n.light is not None]
        return [n for n in found if include_evicted or not n.evicted]

    # --- commands ------------------------------------------------------------------------

    async def command(self, text: str, *, expect_silent: tuple[Node, ...] = ()) -> RoundSummary:
        """One command to the group; verified when every current light answered, verified,
        with the state asked for, and every ``expect_silent`` light stayed silent."""
        assert self.switch is not None and self.capture is not None
        current = self.lights()
        by_sid = {n.sid: n for n in current}
        rows = {n.name: LightRow(n.name, n.sid.hex()) for n in current}
        silent_before = {}
        for n in expect_silent:
            rows[n.name] = LightRow(n.name, n.sid.hex(), note="evicted")
            silent_before[n.name] = len(n.log.failures) if n.log is not None else 0
        self.view.round_start(text, list(rows.values()))
        msg = Message(Code.POST, payload=text.encode())
        msg.options.uri_path = ["light"]
        want = _expected_state(text)
        start = time.perf_counter()
        waiting = set(by_sid)

        def answer(resp: Message, sent_at: float) -> None:
            info = getattr(resp, "security", None)
            node = by_sid.get(info.sender_id) if info is not None else None
            if node is None:
                return
            row = rows[node.name]
            row.rtt_ms = (time.perf_counter() - sent_at) * 1000
            row.state = resp.payload.decode("utf-8", "replace")
            row.verified = "group" if info.group_mode else "pairwise"
            row.ok = resp.code == Code.CHANGED and row.state == want
            if not row.ok:
                row.note = f"unexpected {resp.code >> 5}.{resp.code & 31:02d}"
            waiting.discard(node.sid)
            self.view.round_update(row)

        if self.cfg.unicast:
            async def one(node: Node, timeout: float) -> None:
                sent_at = time.perf_counter()
                with contextlib.suppress(GroupOscoreError, OSError):
                    resp = await self.switch.unicast.request(  # type: ignore[union-attr]
                        msg, node.unicast.address, timeout=timeout,
                        confirmable=False, security=self.capture,
                    )  # fmt: skip
                    answer(resp, sent_at)
            silent_wait = min(self.cfg.timeout, 0.5)
            await asyncio.gather(*(one(n, self.cfg.timeout) for n in current),
                                 *(one(n, silent_wait) for n in expect_silent))
        else:
            gen = self.switch.unicast.group_request(
                msg, (self.cfg.group_address, self.cfg.port), timeout=self.cfg.timeout,
                security=self.capture, interface=self.cfg.interface,
            )  # fmt: skip
            async with contextlib.aclosing(gen):
                async for resp in gen:
                    answer(resp, start)
                    if not waiting:
                        break
            if expect_silent:
                # a silent light would answer within the leisure: give it that long
                await asyncio.sleep(self.cfg.leisure + 0.05)
        seconds = time.perf_counter() - start
        for n in current:
            row = rows[n.name]
            if not row.ok and not row.note:
                row.note = "no answer"
        for n in expect_silent:
            seen = n.log.failures[silent_before[n.name]:] if n.log is not None else []
            rows[n.name].note = (f"evicted: rejected it ({', '.join(seen)})" if seen
                                 else "evicted: never received it")
        verified = sum(rows[n.name].ok for n in current)
        summary = RoundSummary(text, len(current), verified, seconds, list(rows.values()))
        self.view.round_end(summary)
        return summary

    async def command_step(self, name: str, text: str) -> RoundSummary:
        self.view.step(name, f"switch → group (multicast, group mode): {text}"
                       if not self.cfg.unicast else f"switch → each light (unicast): {text}")
        summary = await self.command(text)
        ok = summary.verified == summary.expected and all(
            n.light is not None and n.light.shown == _expected_state(text) for n in self.lights()
        )
        self.steps.append(StepResult(name, ok, summary.line, summary.seconds,
                                     {"command": text, "expected": summary.expected,
                                      "verified": summary.verified}))
        self.view.result(self.steps[-1])
        return summary

    # --- membership changes --------------------------------------------------------------

    async def new_light(self) -> None:
        assert self.switch is not None and self.capture is not None
        start = time.perf_counter()
        name = f"light{self.cfg.lights + 1}"
        self.view.step("join-rekey", f"{name} joins: the group is rekeyed (backward security)")
        old_gid = self.switch.member.context.gid
        num = self.switch.member.material.num
        old_command = self.capture.sent[-1][1]  # sent before the join, under the old keys
        node = await self._node(name, [Role.RESPONDER], light=True)
        await asyncio.gather(*(n.member.wait_for(num + 1, 10.0)
                               for n in [self.switch, *self.lights()]))
        new_gid = self.switch.member.context.gid
        readable = _can_read(node.member.context, old_command)
        knows = node.sid in self.switch.member.material.peers
        ok = new_gid != old_gid and readable is not None and knows
        self._result(
            "join-rekey", ok,
            f"Gid {old_gid.hex()} → {new_gid.hex()}, all {len(self.lights()) + 1} members on "
            f"version {num + 1}; {name} cannot read the command sent before it joined "
            f"({readable or 'it could!'})", start, old_gid=old_gid.hex(), new_gid=new_gid.hex(),
        )  # fmt: skip
        summary = await self.command("on")
        self.steps.append(StepResult("after-join", summary.verified == summary.expected,
                                     summary.line + f" (incl. {name})", summary.seconds,
                                     {"expected": summary.expected,
                                      "verified": summary.verified}))
        self.view.result(self.steps[-1])

    async def evict(self) -> Node:
        assert self.switch is not None and self.svc is not None
        start = time.perf_counter()
        victim = self.lights()[max(0, self.cfg.lights // 2 - 1)]
        self.view.step("evict", f"{victim.name} is evicted: the group is rekeyed "
                       "(forward security); it keeps its old keys and keeps listening")
        old_ctx = victim.member.context
        num = self.switch.member.material.num
        self.svc.evict(GROUP, victim.name)
        victim.evicted = True
        await victim.member.wait_terminated(10.0)
        await asyncio.gather(*(n.member.wait_for(num + 1, 10.0)
                               for n in [self.switch, *self.lights()]))
        # A compromised device would ignore the eviction: give it its old context back.
        victim.log = FailureLog(ServerSecurity([old_ctx]))
        hook = SenderTagging(victim.log)
        victim.unicast.server_security = hook
        if victim.group_ep is not None:
            victim.group_ep.server_security = hook
        self._result("evict", victim.member.terminated,
                     f"{victim.name} got its eviction notice; the others are on version "
                     f"{num + 1}", start)
        assert victim.light is not None
        before_state, before_runs, before_fail = victim.light.shown, victim.light.runs, \
            len(victim.log.failures)
        summary = await self.command("dim 40", expect_silent=(victim,))
        assert self.capture is not None
        new_command = self.capture.sent[-1][1]
        rejected = victim.log.failures[before_fail:]
        readable = _can_read(old_ctx, new_command)
        ok = (
            summary.verified == summary.expected
            and victim.light.runs == before_runs
            and victim.light.shown == before_state
            and bool(rejected)
            and readable is not None
        )
        self.steps.append(StepResult(
            "after-evict", ok,
            f"{summary.line}; {victim.name} could not read it "
            f"({', '.join(rejected) or 'never received'}) and did not answer",
            summary.seconds,
            {"expected": summary.expected, "verified": summary.verified,
             "evicted": victim.name, "evicted_rejections": rejected},
        ))  # fmt: skip
        self.view.result(self.steps[-1])
        return victim

    async def replay(self) -> None:
        assert self.capture is not None
        start = time.perf_counter()
        self.view.step("replay", "an attacker replays recorded commands to the group")
        everyone = self.lights(include_evicted=True)
        outcomes = []
        for label, index in (("latest", -1), ("first", 0)):
            sent = self.capture.commands(index)
            remotes = {tuple(r) for _, r in sent}
            # multicast reaches every light; a unicast round only the lights it went to
            targets = everyone if not self.cfg.unicast else [
                n for n in everyone if tuple(n.unicast.address) in remotes]
            before = {n.name: (len(n.log.failures) if n.log else 0,
                               n.light.runs if n.light else 0) for n in targets}
            answers = await self._replay_round(sent)
            errors = {}
            for n in targets:
                fails, runs = before[n.name]
                assert n.log is not None and n.light is not None
                errors[n.name] = n.log.failures[fails:]
                if n.light.runs != runs or not errors[n.name]:
                    outcomes.append(f"{label}: {n.name} accepted it")
            kinds = sorted({e for v in errors.values() for e in v})
            accepted = [code for code in answers if code >> 5 == 2]
            if accepted:
                outcomes.append(f"{label}: {len(accepted)} success answers came back")
            what = "no answers" if not answers else f"{len(answers)} error answers (unicast)"
            self.view.note(f"replayed the {label} command: rejected by "
                           f"{sum(bool(v) for v in errors.values())} of {len(targets)} "
                           f"lights ({', '.join(kinds)}), {what}")
        self._result("replay", not outcomes,
                     "both replays rejected by every light; no light acted, none confirmed"
                     if not outcomes else "; ".join(outcomes), start)

    async def _replay_round(self, sent: list[tuple[Message, Any]]) -> list[int]:
        """Send the recorded requests again, each to where it went (new message IDs, as an
        attacker may choose); the codes of whatever answers come back."""
        sock = UdpSocket(("::" if self.cfg.ipv6 else "127.0.0.1", 0))
        try:
            for wire, remote in sent:
                data = wire.copy(mid=self.rng.randrange(1 << 16), mtype=Type.NON,
                                 token=os.urandom(4)).encode()
                if not self.cfg.unicast:
                    sock.set_multicast_interface(self.cfg.group_address, self.cfg.interface)
                sock.send(data, tuple(remote))
            await asyncio.sleep(self.cfg.leisure + 0.3)
            codes = []
            while (dgram := sock.receive()) is not None:
                with contextlib.suppress(GroupOscoreError):
                    codes.append(Message.decode(dgram.data).code)
            return codes
        finally:
            sock.close()

    # --- firmware ------------------------------------------------------------------------

    async def firmware(self, size: int) -> None:
        assert self.switch is not None
        start = time.perf_counter()
        targets = self.lights()
        self.view.step("firmware", f"firmware push: {size} bytes to {len(targets)} lights "
                       "(multicast blocks, unicast pairwise repairs)")
        if self.cfg.unicast:
            self._result("firmware", False, "firmware push needs multicast (not with --unicast)",
                         start)
            return
        data = self.rng.randbytes(size)
        digest = hashlib.sha256(data).digest()
        blocks = -(-size // default_block_size(self.switch.unicast))
        self.view.push_start(size, blocks, len(targets))

        def progress(phase: str, sender: PushSender, sent: int, repairs: int) -> None:
            self.view.push_progress(sent, sender.nblocks, sender.completed(),
                                    len(sender.expected), repairs)

        result = await push_file(
            self.switch.unicast, self.switch.member, data,
            (self.cfg.group_address, self.cfg.port), members=[n.sid for n in targets],
            interface=self.cfg.interface, on_progress=progress,
            status_timeout=max(1.0, 4 * self.cfg.leisure),
        )  # fmt: skip
        self.view.push_end(result)
        good = [n for n in targets if n.files.get(result.sender.tid) is not None
                and hashlib.sha256(n.files[result.sender.tid]).digest() == digest]
        ok = result.ok and len(good) == len(targets)
        self._result(
            "firmware", ok,
            f"{len(good)} of {len(targets)} lights hold the exact file (SHA-256 "
            f"{digest.hex()[:16]}…), {result.repairs_sent} repairs, {result.rounds} rounds, "
            f"{result.seconds:.2f} s", start, push=result.as_dict(),
        )  # fmt: skip

    # --- bookkeeping ---------------------------------------------------------------------

    def _result(self, name: str, ok: bool, detail: str, start: float, **data: Any) -> None:
        step = StepResult(name, ok, detail, time.perf_counter() - start, data)
        self.steps.append(step)
        self.view.result(step)

    async def close(self) -> None:
        for n in self.nodes.values():
            with contextlib.suppress(Exception):
                await n.member.close()
        for ep in self.endpoints:
            with contextlib.suppress(Exception):
                await ep.close()
        if self.svc is not None:
            await self.svc.close()
        if self.gm is not None:
            self.gm.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _expected_state(command: str) -> str:
    words = command.split()
    if words == ["on"]:
        return "on 100"
    if words[:1] == ["dim"]:
        return f"dim {int(words[1])}"
    return "off"


def _can_read(context: GroupContext, wire: Message) -> str | None:
    """None if ``context`` verifies the request ``wire``, else the name of the error.
    Works on a copy: the real context's replay state stays untouched."""
    probe = ServerSecurity([_isolated_copy(context)])
    try:
        probe.unprotect_request(wire.copy())
    except GroupOscoreError as exc:
        return type(exc).__name__
    return None


def _isolated_copy(context: GroupContext) -> GroupContext:
    """A context with the same keys whose replay windows and recipients are its own."""
    copy = GroupContext(
        context.master_secret, context.gid, sender_id=None, master_salt=context.master_salt,
        hkdf=context.hkdf, aead=context.aead, group_enc=context.group_enc,
        signature=context.signature, key_agreement=context.key_agreement,
        gm_cred=context.gm_cred,
        peers={rid: rc.credential for rid, rc in context.recipients.items()},
    )  # fmt: skip
    return copy


def _addr(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def run_demo(config: DemoConfig, view: DemoView) -> DemoReport:
    """Run the whole story; every step's verdict is in the report (never raises for a
    failed check, only for a broken setup)."""
    demo = Demo(config, view)
    start = time.perf_counter()
    try:
        await demo.setup()
        if demo.steps[-1].ok:
            for name, text in (("on", "on"), ("dim", "dim 40"), ("off", "off")):
                await demo.command_step(name, text)
            await demo.new_light()
            await demo.evict()
            await demo.replay()
            if config.firmware is not None:
                await demo.firmware(config.firmware)
    finally:
        await demo.close()
    mode = "unicast" if config.unicast else ("ipv6" if config.ipv6 else "ipv4") + " multicast"
    return DemoReport(demo.steps, time.perf_counter() - start, mode)
