"""GroupMembers over IPv4 multicast, run inside a private network namespace.

``python3 -m tests.manager.mcast_members DIR`` expects a namespace whose ``lo`` is up with a
route for 224.0.0.0/4 (test_runtime_multicast.py sets that up). A Group Manager on
127.0.0.1, three Responders and a Monitor serving /light on 0.0.0.0:5683 (address reuse,
joined to 224.0.1.187 on ``lo``), and a Requester that sends group requests with its
member's security object. Each member talks to the GM from its own ephemeral port.
Prints what the Requester saw as one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from pathlib import Path
from typing import Any

from grouposcore.coap import Code, Message
from grouposcore.coap.constants import ALL_COAP_NODES_V4, COAP_PORT
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import Role
from grouposcore.manager.runtime import GroupMember
from grouposcore.manager.service import GroupManagerService
from grouposcore.oscore.security import VerifiedMessage
from grouposcore.transport import Endpoint, Site
from tests.manager.runtime_net import Light

GROUP = (ALL_COAP_NODES_V4, COAP_PORT)
RS = [Role.REQUESTER, Role.RESPONDER]


def _light() -> Message:
    msg = Message(Code.GET)
    msg.options.uri_path = ["light"]
    return msg


async def scenario(directory: Path) -> dict[str, Any]:
    gm = GroupManager(directory / "gm.db")
    svc = GroupManagerService(gm)
    svc.create_group("g")
    gm_ep = await svc.start(("127.0.0.1", 0))
    members: dict[str, GroupMember] = {}
    lights: dict[str, Light] = {}
    endpoints: list[Endpoint] = []

    async def start(name: str, roles: list[Role], serve: bool) -> GroupMember:
        gm.allow(name, "g", roles)
        member = await GroupMember.open(
            None, gm_ep.address, svc.commission(name), "g", roles, directory / f"{name}.state"
        )
        members[name] = member
        if serve:
            site = Site()
            lights[name] = Light(name)
            site.add("light", lights[name])
            ep = await Endpoint.create(
                ("0.0.0.0", COAP_PORT), site=site, server_security=member.server_security(),
                reuse_address=True, leisure=0.2,
            )  # fmt: skip
            ep.join_group(ALL_COAP_NODES_V4, "lo")
            endpoints.append(ep)
        return member

    async def ask(client: Endpoint, member: GroupMember) -> list[dict[str, Any]]:
        out = []
        async for r in client.group_request(
            _light(), GROUP, timeout=1.2, security=member.client_security()
        ):
            assert isinstance(r, VerifiedMessage) and r.security is not None
            out.append({"code": int(r.code), "payload": r.payload.decode(),
                        "sender_id": r.security.sender_id.hex(),
                        "group_mode": r.security.group_mode})  # fmt: skip
        return sorted(out, key=lambda r: r["payload"])

    try:
        for name in ("r1", "r2", "r3"):
            await start(name, RS, serve=True)
        await start("m", [Role.MONITOR], serve=True)
        c = await start("c", [Role.REQUESTER], serve=False)
        num = c.material.num
        for m in members.values():
            await m.wait_for(num)
        client = await Endpoint.create(("0.0.0.0", 0), multicast_interface="lo")
        endpoints.append(client)
        found: dict[str, Any] = {
            "sids": {n: (m.sender_id or b"").hex() for n, m in members.items()},
            "before": await ask(client, c),
        }
        svc.evict("g", "r3")
        for name in ("r1", "r2", "m", "c"):
            await members[name].wait_for(num + 1)
        await members["r3"].wait_terminated()
        found["after"] = await ask(client, c)
        found["runs"] = {n: len(light.requests) for n, light in lights.items()}
        return found
    finally:
        for m in members.values():
            await m.close()
        for ep in endpoints:
            await ep.close()
        await svc.close()
        gm.close()


def main() -> None:
    directory = Path(sys.argv[1])
    try:
        result = asyncio.run(asyncio.wait_for(scenario(directory), 60))
    except Exception:  # the parent test shows the traceback
        result = {"error": traceback.format_exc()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
