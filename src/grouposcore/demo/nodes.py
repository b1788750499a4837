"""One light of the demo: a GroupMember with real endpoints, a ``/light`` and a ``/fw``.

A light runs in the demo's process or in a worker process (``--processes``); either way it
is a :class:`LightNode`, and the demo talks to it through the same small async interface
(:class:`LightNode` itself, or :class:`grouposcore.demo.worker.RemoteLight`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from grouposcore.coap import Code, Message
from grouposcore.edhoc import EdhocCredential, EdhocKey
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.edhoc_client import EdhocIdentity
from grouposcore.manager.params import Role
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.store import ChannelMaterial
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import ServerSecurity
from grouposcore.push.protocol import PushReceiver
from grouposcore.push.runner import FirmwareResource, SenderTagging
from grouposcore.transport import Endpoint, Protection, Resource, Site
from grouposcore.transport.security import ServerSecurity as ServerSecurityHook

__all__ = [
    "FailureLog",
    "Light",
    "LightNode",
    "LightSettings",
    "LightStatus",
    "can_read",
    "channel_from_json",
    "channel_to_json",
]

GROUP = "lights"
#: the most lights a demo runs (each gets a Message ID range of 64 on the shared port)
MAX_LIGHTS = 1001


class FailureLog:
    """Delegating server security that notes every request it rejected (by error name)."""

    def __init__(self, inner: ServerSecurityHook) -> None:
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
        elif (
            len(words) == 2
            and words[0] == "dim"
            and words[1].isdigit()
            and 0 <= int(words[1]) <= 100
        ):
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

    def randrange(self, *args: Any, **kwargs: Any) -> int:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return super().randrange(*args, **kwargs)


@dataclass(frozen=True)
class LightSettings:
    """What every light needs to know about the demo's network."""

    group_address: str
    port: int
    interface: str
    ipv6: bool
    unicast: bool
    leisure: float
    #: the firmware author's Ed25519 public key (hex): lights install only what it signed
    author: str = ""


@dataclass
class LightStatus:
    shown: str
    runs: int
    failures: list[str]
    terminated: bool
    #: transfer id (hex) -> SHA-256 (hex) of every complete file
    files: dict[str, str] = field(default_factory=dict)


def channel_to_json(channel: ChannelMaterial | EdhocIdentity) -> dict[str, Any]:
    if isinstance(channel, EdhocIdentity):
        return {
            "edhoc": {
                "key": channel.key.d.hex(),
                "cred": channel.credential.value.hex(),
                "gm_cred": channel.gm_credential.value.hex(),
            }
        }
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in asdict(channel).items()}


def channel_from_json(data: dict[str, Any]) -> ChannelMaterial | EdhocIdentity:
    if "edhoc" in data:
        e = data["edhoc"]
        return EdhocIdentity(
            EdhocKey(bytes.fromhex(e["key"])),
            EdhocCredential.from_bytes(bytes.fromhex(e["cred"])),
            EdhocCredential.from_bytes(bytes.fromhex(e["gm_cred"])),
        )
    raw = dict(data)
    for key in ("master_secret", "master_salt", "gm_sender_id", "node_sender_id"):
        raw[key] = bytes.fromhex(raw[key])
    if raw.get("id_context") is not None:
        raw["id_context"] = bytes.fromhex(raw["id_context"])
    return ChannelMaterial(**raw)


def _isolated_copy(context: GroupContext) -> GroupContext:
    """A receive-only context with the same keys, whose replay state is its own."""
    return GroupContext(
        context.master_secret, context.gid, sender_id=None, master_salt=context.master_salt,
        hkdf=context.hkdf, aead=context.aead, group_enc=context.group_enc,
        signature=context.signature, key_agreement=context.key_agreement,
        gm_cred=context.gm_cred,
        peers={rid: rc.credential for rid, rc in context.recipients.items()},
    )  # fmt: skip


def can_read(context: GroupContext, wire: bytes) -> str | None:
    """None if ``context`` verifies the protected request ``wire``, else the error's name.
    Works on a copy, so the real context's replay state stays untouched."""
    probe = ServerSecurity([_isolated_copy(context)])
    try:
        probe.unprotect_request(Message.decode(wire))
    except GroupOscoreError as exc:
        return type(exc).__name__
    return None


class LightNode:
    """A light in this process."""

    def __init__(
        self,
        name: str,
        member: GroupMember,
        unicast: Endpoint,
        settings: LightSettings,
        state_dir: Path,
    ) -> None:
        self.name = name
        self.member = member
        self.unicast = unicast
        self.group_ep: Endpoint | None = None
        self.light = Light()
        self.log = FailureLog(member.server_security())
        self.files: dict[bytes, bytes] = {}
        self.firmware = FirmwareResource(
            PushReceiver(
                [Ed25519PublicKey.from_public_bytes(bytes.fromhex(settings.author))],
                port=unicast.address[1],
                store=state_dir / f"{name}.firmware",
            ),
            on_complete=lambda tid, data: self.files.__setitem__(tid, data),
        )
        self._old: GroupContext | None = None

    @classmethod
    async def start(
        cls,
        name: str,
        channel: ChannelMaterial | EdhocIdentity,
        gm: tuple[str, int],
        settings: LightSettings,
        state_dir: Path,
    ) -> LightNode:
        site = Site()
        host = "::" if settings.ipv6 else "127.0.0.1"
        uni = await Endpoint.create((host, 0), site=site, multicast_interface=settings.interface)
        try:
            member = await GroupMember.open(
                uni, gm, channel, GROUP, [Role.RESPONDER], state_dir / f"{name}.state", timeout=10.0
            )
        except BaseException:
            await uni.close()
            raise
        node = cls(name, member, uni, settings, state_dir)
        hook = SenderTagging(node.log)
        uni.server_security = hook
        site.add("light", node.light)
        site.add("fw", node.firmware)
        if not settings.unicast:
            index = int(name.removeprefix("light"))
            node.group_ep = await Endpoint.create(
                ("::" if settings.ipv6 else "0.0.0.0", settings.port), site=site,
                server_security=hook, leisure=settings.leisure, reuse_address=True,
                multicast_interface=settings.interface,
                rng=_SpreadMids((index * 0x10000 // MAX_LIGHTS) & 0xFFFF),
            )  # fmt: skip
            node.group_ep.join_group(settings.group_address, settings.interface)
        return node

    # --- what the demo asks a light (same interface in a worker) -----------------------

    @property
    def sid(self) -> bytes:
        sid = self.member.material.sender_id
        assert sid is not None
        return sid

    @property
    def unicast_address(self) -> tuple[str, int]:
        return self.unicast.address

    async def status(self) -> LightStatus:
        return self.status_now()

    def status_now(self) -> LightStatus:
        return LightStatus(
            self.light.shown, self.light.runs, list(self.log.failures), self.member.terminated,
            {tid.hex(): hashlib.sha256(data).hexdigest() for tid, data in self.files.items()},
        )  # fmt: skip

    async def wait_for(self, num: int) -> None:
        await self.member.wait_for(num, 10.0)

    async def wait_terminated(self) -> None:
        await self.member.wait_terminated(10.0)

    async def snapshot(self) -> None:
        """Keep the current context (before an eviction: what a compromised device keeps)."""
        self._old = self.member.context

    async def keep_old_keys(self) -> None:
        """Listen with the kept context, as a device that ignores its eviction would."""
        assert self._old is not None
        self.log = FailureLog(ServerSecurity([self._old]))
        hook = SenderTagging(self.log)
        self.unicast.server_security = hook
        if self.group_ep is not None:
            self.group_ep.server_security = hook

    async def can_read(self, wire: bytes, *, old: bool = False) -> str | None:
        context = self._old if old and self._old is not None else self.member.context
        return can_read(context, wire)

    async def close(self) -> None:
        await self.member.close()
        if self.group_ep is not None:
            await self.group_ep.close()
        await self.unicast.close()
