"""The demo's story on real pieces: a Group Manager, a switch and N lights, all joined over
OSCORE channels with proof of possession, commanding the lights with Group OSCORE multicast.

Every node is a :class:`~grouposcore.manager.runtime.GroupMember` with real UDP endpoints:
one unicast endpoint (its GM channel, unicast repairs of a firmware push, and the
``--unicast`` fallback) and, for lights, one endpoint on the group port that joined the
multicast group. Lights live in this process or, with ``processes`` > 1, in worker
processes (:mod:`grouposcore.demo.worker`) behind the same interface. Each step checks
what it claims and ends in a :class:`StepResult`; the views (``grouposcore.demo.view``)
only display.

Why the joining order: with backward security every join rekeys, and only the rekeying
message tells existing members the joiner's credential. So the lights join first with
rekey-on-join off (none of them needs the others), then it is switched on and the switch
joins: one rekeying tells every light the switch's credential, and the switch got all the
lights' credentials in its join response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.coap import Code, Message, Type
from grouposcore.demo.nodes import GROUP, LightNode, LightSettings, LightStatus
from grouposcore.demo.report import (
    DemoConfig,
    DemoReport,
    DemoView,
    LightRow,
    RoundSummary,
    StepResult,
)
from grouposcore.demo.switch import Capture, Switch
from grouposcore.demo.worker import RemoteLight, WorkerClient
from grouposcore.edhoc import EdhocKey
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.core import GroupManager
from grouposcore.manager.edhoc_client import EdhocIdentity
from grouposcore.manager.params import Role
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.service import GroupManagerService
from grouposcore.manager.store import ChannelMaterial
from grouposcore.push.protocol import PushSender
from grouposcore.push.runner import block_size_for, payload_limit, push_file
from grouposcore.push.suit import parse_envelope, sign_envelope
from grouposcore.transport import Endpoint
from grouposcore.transport.sockets import UdpSocket, format_address

__all__ = [
    "DemoConfig",
    "DemoReport",
    "DemoView",
    "LightRow",
    "RoundSummary",
    "StepResult",
    "run_demo",
]

LightHandle = LightNode | RemoteLight


# --- the demo --------------------------------------------------------------------------


class Demo:
    def __init__(self, config: DemoConfig, view: DemoView) -> None:
        self.cfg = config
        self.view = view
        self.steps: list[StepResult] = []
        self.handles: dict[str, LightHandle] = {}
        self.evicted: set[str] = set()
        self.workers: list[WorkerClient] = []
        self.rng = random.Random(config.seed)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.gm: GroupManager | None = None
        self.svc: GroupManagerService | None = None
        self.switch: Switch | None = None
        self._next_worker = 0
        #: the firmware author: signs the SUIT manifest the switch distributes
        self.author = Ed25519PrivateKey.generate()

    @property
    def settings(self) -> LightSettings:
        c = self.cfg
        return LightSettings(
            c.group_address,
            c.port,
            c.interface,
            c.ipv6,
            c.unicast,
            c.leisure,
            self.author.public_key().public_bytes_raw().hex(),
        )

    @property
    def state_dir(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name)

    @property
    def gm_address(self) -> tuple[str, int]:
        assert self.svc is not None and self.svc.endpoint is not None
        return self.svc.endpoint.address

    # --- setup ---------------------------------------------------------------------------

    def _commission(self, name: str, roles: list[Role]) -> ChannelMaterial | EdhocIdentity:
        """Admit ``name``: by its EDHOC credential (it makes its own key pair), or with
        commissioned channel material."""
        assert self.svc is not None
        self.svc.gm.allow(name, GROUP, roles)
        if not self.cfg.edhoc:
            return self.svc.commission(name)
        key = EdhocKey.generate()
        credential = key.credential(len(self.svc.edhoc.registered()).to_bytes(2, "big"), name)
        self.svc.edhoc.register(name, credential)
        return EdhocIdentity(key, credential, self.svc.edhoc.credential)

    async def _start_lights(self, names: list[str]) -> None:
        """Start lights here, or spread over the workers (round robin)."""
        channels = [(n, self._commission(n, [Role.RESPONDER])) for n in names]
        if not self.workers:
            gate = asyncio.Semaphore(16)

            async def local(name: str, channel: ChannelMaterial | EdhocIdentity) -> LightNode:
                async with gate:
                    return await LightNode.start(
                        name, channel, self.gm_address, self.settings, self.state_dir
                    )

            for node in await asyncio.gather(*(local(n, c) for n, c in channels)):
                self.handles[node.name] = node
            return
        shares: list[list[tuple[str, ChannelMaterial | EdhocIdentity]]] = [[] for _ in self.workers]
        for entry in channels:
            shares[self._next_worker % len(self.workers)].append(entry)
            self._next_worker += 1
        started = await asyncio.gather(
            *(w.start(share) for w, share in zip(self.workers, shares, strict=True) if share)
        )
        for group in started:
            for remote in group:
                self.handles[remote.name] = remote
        # keep the demo's order: light1, light2, ...
        self.handles = dict(
            sorted(self.handles.items(), key=lambda kv: int(kv[0].removeprefix("light")))
        )

    async def setup(self) -> None:
        start = time.perf_counter()
        self._tmp = tempfile.TemporaryDirectory(prefix="grouposcore-demo-")
        db = self.cfg.db if self.cfg.db is not None else self.state_dir / "gm.db"
        self.gm = GroupManager(db)
        self.svc = GroupManagerService(self.gm)
        if self.gm.group(GROUP) is not None:
            raise GroupOscoreError(f"the database {db} already has a group {GROUP!r}")
        self.svc.create_group(GROUP, backward_security=False)
        await self.svc.start(("127.0.0.1", 0))
        where = "" if self.cfg.processes <= 1 else f", lights in {self.cfg.processes} processes"
        self.view.step(
            "join",
            f"Group Manager on {format_address(self.gm_address)}: "
            f"group '{GROUP}', 1 switch and {self.cfg.lights} lights join "
            f"with proof of possession"
            f"{' over EDHOC channels' if self.cfg.edhoc else ''}{where}",
        )
        if self.cfg.processes > 1:
            self.workers = list(
                await asyncio.gather(*(WorkerClient.spawn() for _ in range(self.cfg.processes)))
            )
            await asyncio.gather(
                *(
                    w.call(
                        "configure",
                        settings=dataclasses.asdict(self.settings),
                        gm=list(self.gm_address),
                        state_dir=str(self.state_dir),
                    )
                    for w in self.workers
                )
            )
        await self._start_lights([f"light{i}" for i in range(1, self.cfg.lights + 1)])
        # Rekey-on-join from now on; the switch's join tells every light its credential.
        self.gm.set_backward_security(GROUP, True)
        channel = self._commission("switch", [Role.REQUESTER])
        endpoint = await Endpoint.create(
            ("::" if self.cfg.ipv6 else "127.0.0.1", 0), multicast_interface=self.cfg.interface
        )
        member = await GroupMember.open(
            endpoint,
            self.gm_address,
            channel,
            GROUP,
            [Role.REQUESTER],
            self.state_dir / "switch.state",
            timeout=10.0,
        )
        self.switch = Switch(member, endpoint, Capture(member.client_security()))
        num = member.material.num
        await self.wait_all(num)
        lights = self.lights()
        sids = {h.sid for h in lights} | {member.material.sender_id}
        peers = set(member.material.peers)
        ok = len(sids) == len(lights) + 1 and peers == {h.sid for h in lights}
        self._result("join", ok,
                     f"{len(lights) + 1} members joined, distinct Sender IDs, switch knows "
                     f"{len(peers)} lights, group version {num}", start,
                     members=len(lights) + 1, num=num)  # fmt: skip

    def lights(self, *, include_evicted: bool = False) -> list[LightHandle]:
        return [h for n, h in self.handles.items() if include_evicted or n not in self.evicted]

    async def wait_all(self, num: int) -> None:
        """Every current light (and the switch) on keying material version ``num``."""
        assert self.switch is not None
        current = self.lights()
        local = [h for h in current if isinstance(h, LightNode)]
        waits = [h.wait_for(num) for h in local]
        for w in self.workers:
            names = [h.name for h in current if isinstance(h, RemoteLight) and h.worker is w]
            if names:
                waits.append(w.call("wait_for", num=num, names=names))
        await asyncio.gather(self.switch.member.wait_for(num, 10.0), *waits)

    async def statuses(self) -> dict[str, LightStatus]:
        """What every light (evicted ones too) reports about itself right now."""
        found: dict[str, LightStatus] = {}
        for h in self.handles.values():
            if isinstance(h, LightNode):
                found[h.name] = h.status_now()
        asked = await asyncio.gather(*(w.statuses(w.names) for w in self.workers if w.names))
        for part in asked:
            found.update(part)
        return found

    # --- commands ------------------------------------------------------------------------

    async def command(
        self, text: str, *, expect_silent: tuple[LightHandle, ...] = ()
    ) -> RoundSummary:
        """One command to the group; verified when every current light answered, verified,
        with the state asked for (the answer, and the light's own state afterwards)."""
        assert self.switch is not None
        switch = self.switch
        current = self.lights()
        by_sid = {h.sid: h for h in current}
        rows = {h.name: LightRow(h.name, h.sid.hex()) for h in current}
        before = await self.statuses() if expect_silent else {}
        for h in expect_silent:
            rows[h.name] = LightRow(h.name, h.sid.hex(), note="evicted")
        self.view.round_start(text, list(rows.values()))
        msg = Message(Code.POST, payload=text.encode())
        msg.options.uri_path = ["light"]
        want = _expected_state(text)
        start = time.perf_counter()
        waiting = set(by_sid)

        def answer(resp: Message, sent_at: float) -> None:
            info = getattr(resp, "security", None)
            if info is None:
                return
            handle = by_sid.get(info.sender_id)
            if handle is None:
                return
            row = rows[handle.name]
            row.rtt_ms = (time.perf_counter() - sent_at) * 1000
            row.state = resp.payload.decode("utf-8", "replace")
            row.verified = "group" if info.group_mode else "pairwise"
            row.ok = resp.code == Code.CHANGED and row.state == want
            if not row.ok:
                row.note = f"unexpected {resp.code >> 5}.{resp.code & 31:02d}"
            waiting.discard(handle.sid)
            self.view.round_update(row)

        if self.cfg.unicast:

            async def one(handle: LightHandle, timeout: float) -> None:
                sent_at = time.perf_counter()
                with contextlib.suppress(GroupOscoreError, OSError):
                    resp = await switch.endpoint.request(
                        msg, handle.unicast_address, timeout=timeout, confirmable=False,
                        security=switch.capture,
                    )  # fmt: skip
                    answer(resp, sent_at)

            silent_wait = min(self.cfg.timeout, 0.5)
            await asyncio.gather(
                *(one(h, self.cfg.timeout) for h in current),
                *(one(h, silent_wait) for h in expect_silent),
            )
        else:
            gen = switch.endpoint.group_request(
                msg, (self.cfg.group_address, self.cfg.port), timeout=self.cfg.timeout,
                security=switch.capture, interface=self.cfg.interface,
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
        after = await self.statuses()
        for h in current:
            row = rows[h.name]
            if row.ok and after[h.name].shown != want:
                row.ok, row.note = False, f"answered, but is {after[h.name].shown}"
            if not row.ok and not row.note:
                row.note = "no answer"
        for h in expect_silent:
            seen = after[h.name].failures[len(before[h.name].failures) :]
            acted = after[h.name].runs != before[h.name].runs
            rows[h.name].note = (
                "evicted: ACTED ON IT"
                if acted
                else f"evicted: rejected it ({', '.join(seen)})"
                if seen
                else "evicted: never received it"
            )
        verified = sum(rows[h.name].ok for h in current)
        summary = RoundSummary(text, len(current), verified, seconds, list(rows.values()))
        self.view.round_end(summary)
        return summary

    async def command_step(self, name: str, text: str) -> RoundSummary:
        self.view.step(
            name,
            f"switch → group (multicast, group mode): {text}"
            if not self.cfg.unicast
            else f"switch → each light (unicast): {text}",
        )
        summary = await self.command(text)
        ok = summary.verified == summary.expected
        self.steps.append(
            StepResult(
                name,
                ok,
                summary.line,
                summary.seconds,
                {"command": text, "expected": summary.expected, "verified": summary.verified},
            )
        )
        self.view.result(self.steps[-1])
        return summary

    # --- membership changes --------------------------------------------------------------

    async def new_light(self) -> None:
        assert self.switch is not None
        start = time.perf_counter()
        name = f"light{self.cfg.lights + 1}"
        self.view.step("join-rekey", f"{name} joins: the group is rekeyed (backward security)")
        old_gid = self.switch.member.context.gid
        num = self.switch.member.material.num
        old_command = self.switch.capture.sent[-1][1]  # sent before the join: old keys
        await self._start_lights([name])
        newcomer = self.handles[name]
        await self.wait_all(num + 1)
        new_gid = self.switch.member.context.gid
        readable = await newcomer.can_read(old_command.encode())
        knows = newcomer.sid in self.switch.member.material.peers
        ok = new_gid != old_gid and readable is not None and knows
        self._result(
            "join-rekey", ok,
            f"Gid {old_gid.hex()} → {new_gid.hex()}, all {len(self.lights()) + 1} members on "
            f"version {num + 1}; {name} cannot read the command sent before it joined "
            f"({readable or 'it could!'})", start, old_gid=old_gid.hex(), new_gid=new_gid.hex(),
        )  # fmt: skip
        summary = await self.command("on")
        self.steps.append(
            StepResult(
                "after-join",
                summary.verified == summary.expected,
                summary.line + f" (incl. {name})",
                summary.seconds,
                {"expected": summary.expected, "verified": summary.verified},
            )
        )
        self.view.result(self.steps[-1])

    async def evict(self) -> None:
        assert self.switch is not None and self.svc is not None
        start = time.perf_counter()
        victim = self.lights()[max(0, self.cfg.lights // 2 - 1)]
        self.view.step(
            "evict",
            f"{victim.name} is evicted: the group is rekeyed "
            "(forward security); it keeps its old keys and keeps listening",
        )
        await victim.snapshot()
        num = self.switch.member.material.num
        self.svc.evict(GROUP, victim.name)
        self.evicted.add(victim.name)
        await victim.wait_terminated()
        await self.wait_all(num + 1)
        # A compromised device would ignore the eviction: it listens with its old context.
        await victim.keep_old_keys()
        terminated = (await self.statuses())[victim.name].terminated
        self._result(
            "evict",
            terminated,
            f"{victim.name} got its eviction notice; the others are on version {num + 1}",
            start,
        )
        before = (await self.statuses())[victim.name]
        summary = await self.command("dim 40", expect_silent=(victim,))
        after = (await self.statuses())[victim.name]
        rejected = after.failures[len(before.failures) :]
        new_command = self.switch.capture.sent[-1][1]
        readable = await victim.can_read(new_command.encode(), old=True)
        ok = (
            summary.verified == summary.expected
            and after.runs == before.runs
            and after.shown == before.shown
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

    async def replay(self) -> None:
        assert self.switch is not None
        capture = self.switch.capture
        start = time.perf_counter()
        self.view.step("replay", "an attacker replays recorded commands to the group")
        everyone = self.lights(include_evicted=True)
        outcomes = []
        for label, index in (("latest", -1), ("first", 0)):
            sent = capture.commands(index)
            remotes = {tuple(r) for _, r in sent}
            # multicast reaches every light; a unicast round only the lights it went to
            targets = (
                everyone
                if not self.cfg.unicast
                else [h for h in everyone if tuple(h.unicast_address) in remotes]
            )
            before = await self.statuses()
            answers = await self._replay_round(sent)
            after = await self.statuses()
            errors = {}
            for h in targets:
                errors[h.name] = after[h.name].failures[len(before[h.name].failures) :]
                if after[h.name].runs != before[h.name].runs or not errors[h.name]:
                    outcomes.append(f"{label}: {h.name} accepted it")
            kinds = sorted({e for v in errors.values() for e in v})
            accepted = [code for code in answers if code >> 5 == 2]
            if accepted:
                outcomes.append(f"{label}: {len(accepted)} success answers came back")
            what = "no answers" if not answers else f"{len(answers)} error answers (unicast)"
            self.view.note(
                f"replayed the {label} command: rejected by "
                f"{sum(bool(v) for v in errors.values())} of {len(targets)} "
                f"lights ({', '.join(kinds)}), {what}"
            )
        self._result(
            "replay",
            not outcomes,
            "both replays rejected by every light; no light acted, none confirmed"
            if not outcomes
            else "; ".join(outcomes),
            start,
        )

    async def _replay_round(self, sent: list[tuple[Message, Any]]) -> list[int]:
        """Send the recorded requests again, each to where it went (new message IDs, as an
        attacker may choose); the codes of whatever answers come back."""
        sock = UdpSocket(("::" if self.cfg.ipv6 else "127.0.0.1", 0))
        try:
            for wire, remote in sent:
                data = wire.copy(
                    mid=self.rng.randrange(1 << 16), mtype=Type.NON, token=os.urandom(4)
                ).encode()
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
        self.view.step(
            "firmware",
            f"firmware push: {size} bytes to {len(targets)} lights "
            "(multicast blocks, unicast pairwise repairs)",
        )
        if self.cfg.unicast:
            self._result(
                "firmware", False, "firmware push needs multicast (not with --unicast)", start
            )
            return
        data = self.rng.randbytes(size)
        digest = hashlib.sha256(data).hexdigest()
        switch_sid = self.switch.member.context.sender_id
        assert switch_sid is not None  # a member that joins as a responder has one
        envelope = sign_envelope(
            data, sequence=1, key=self.author,
            block_size=block_size_for(size, payload_limit(self.switch.endpoint)),
            distributors=[switch_sid],
        )  # fmt: skip
        manifest = parse_envelope(envelope, [self.author.public_key()])
        self.view.push_start(size, manifest.nblocks, len(targets))

        def progress(phase: str, sender: PushSender, sent: int, repairs: int) -> None:
            self.view.push_progress(
                sent, sender.nblocks, sender.completed(), len(sender.expected), repairs
            )

        result = await push_file(
            self.switch.endpoint, self.switch.member, data,
            (self.cfg.group_address, self.cfg.port), members=[h.sid for h in targets],
            manifest=manifest, interface=self.cfg.interface, on_progress=progress,
            names={h.sid: h.name for h in targets},
            status_timeout=max(1.0, 4 * self.cfg.leisure),
        )  # fmt: skip
        self.view.push_end(result)
        status = await self.statuses()
        tid = result.sender.tid.hex()
        good = [h for h in targets if status[h.name].files.get(tid) == digest]
        ok = result.ok and len(good) == len(targets)
        self._result(
            "firmware", ok,
            f"{len(good)} of {len(targets)} lights hold the exact file (SHA-256 "
            f"{digest[:16]}…, SUIT manifest sequence 1 signed by the author), "
            f"{result.repairs_sent} repairs, {result.rounds} rounds, "
            f"{result.seconds:.2f} s", start, push=result.as_dict(),
        )  # fmt: skip

    # --- bookkeeping ---------------------------------------------------------------------

    def _result(self, name: str, ok: bool, detail: str, start: float, **data: Any) -> None:
        step = StepResult(name, ok, detail, time.perf_counter() - start, data)
        self.steps.append(step)
        self.view.result(step)

    async def close(self) -> None:
        if self.switch is not None:
            with contextlib.suppress(Exception):
                await self.switch.member.close()
            await self.switch.endpoint.close()
        for h in self.handles.values():
            with contextlib.suppress(Exception):
                await h.close()
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)
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
    if config.processes > 1:
        mode += f", lights in {config.processes} processes"
    return DemoReport(demo.steps, time.perf_counter() - start, mode)
