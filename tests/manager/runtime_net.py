"""A Group Manager service and GroupMembers with their own endpoints, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from grouposcore.coap import Code, Message
from grouposcore.manager.core import GroupManager
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.service import GroupManagerService
from grouposcore.manager.store import ChannelMaterial
from grouposcore.transport import Endpoint, Protection, Resource, Site
from tests.manager.helpers import RS

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], limit: float = 40) -> T:
    async def guarded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(guarded())


class Light(Resource):
    """A group resource answering with its member's name; remembers what it ran for."""

    protection = Protection(oscore=True, group=True)

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.requests: list[Message] = []

    async def render_get(self, request: Message) -> Message:
        self.requests.append(request)
        return Message(Code.CONTENT, payload=self.name.encode())

    async def render_post(self, request: Message) -> Message:
        self.requests.append(request)
        return Message(Code.CHANGED, payload=self.name.encode() + b":" + request.payload)


@dataclass
class Peer:
    name: str
    member: GroupMember
    endpoint: Endpoint
    light: Light

    @property
    def address(self) -> tuple[str, int]:
        return self.endpoint.address


@dataclass
class Net:
    """The GM service plus the members started so far."""

    tmp: Path
    gm: GroupManager
    svc: GroupManagerService
    channels: dict[str, ChannelMaterial] = field(default_factory=dict)
    peers: dict[str, Peer] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def gm_address(self) -> tuple[str, int]:
        assert self.svc.endpoint is not None
        return self.svc.endpoint.address

    def channel(self, name: str) -> ChannelMaterial:
        if name not in self.channels:
            self.channels[name] = self.svc.commission(name)
        return self.channels[name]

    async def member(
        self, name: str, roles: Any = RS, *, group: str = "g", allow: bool = True, **kw: Any
    ) -> Peer:
        """Start (or restart) ``name``: new endpoint serving /light, same channel and state."""
        if allow and not self.gm.store.allowed_roles(name, group):
            self.gm.allow(name, group, roles)
        site = Site()
        light = Light(name)
        site.add("light", light)
        ep = await Endpoint.create(("127.0.0.1", 0), site=site)
        self.endpoints.append(ep)
        member = await GroupMember.open(
            ep, self.gm_address, self.channel(name), group, roles, self.state(name), **kw
        )
        ep.server_security = member.server_security()
        peer = Peer(name, member, ep, light)
        self.peers[name] = peer
        return peer

    def state(self, name: str) -> Path:
        return self.tmp / f"{name}.state"

    async def close(self) -> None:
        for p in self.peers.values():
            await p.member.close()
        for ep in self.endpoints:
            await ep.close()
        await self.svc.close()
        self.gm.close()


async def start_net(tmp: Path, **group_kw: Any) -> Net:
    gm = GroupManager(tmp / "gm.db")
    svc = GroupManagerService(gm)
    svc.create_group("g", **group_kw)
    await svc.start(("127.0.0.1", 0))
    return Net(tmp, gm, svc)


def get(path: str = "light", payload: bytes = b"", code: int = Code.GET) -> Message:
    msg = Message(code, payload=payload)
    msg.options.uri_path = [s for s in path.split("/") if s]
    return msg
