"""Firmware-push scenarios over real multicast on ``lo``; run inside ``unshare -n``.

``python -m tests.push.net SCENARIO...`` prints one JSON object with what each scenario saw.
Scenarios: ``direct`` (members share the group port and have a unicast endpoint for
repairs), ``lossy`` (every datagram through the lossy fan-out, PUSH_LOSS dropped, default
5 %), ``burst`` (200 datagrams in a row lost during the first pass), ``tamper`` (one block
to one member altered on the way), ``junk`` (200 datagrams spoofed with the sender's
address and its next Message IDs injected to one member). Sizes and member counts come
from the environment (PUSH_SIZE, PUSH_MEMBERS) so the tests can keep them small or large.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.coap import Message
from grouposcore.coap.constants import ALL_COAP_NODES_V4
from grouposcore.oscore import GroupContext
from grouposcore.oscore.config import provision_static_group
from grouposcore.oscore.security import ServerSecurity
from grouposcore.push.protocol import PushReceiver
from grouposcore.push.relay import LossyFanout
from grouposcore.push.runner import FirmwareResource, SenderTagging, block_size_for, push_file
from grouposcore.push.suit import parse_envelope, sign_envelope
from grouposcore.transport import Endpoint, Site
from tests.oscore.helpers import fresh_context

GROUP_PORT = 5683
LEISURE = 0.05


class Recording(ServerSecurity):
    """Counts requests that failed verification, by exception name."""

    def __init__(self, contexts: Any = ()) -> None:
        super().__init__(contexts)
        self.failures: list[str] = []

    def unprotect_request(self, request: Any) -> Any:
        try:
            return super().unprotect_request(request)
        except Exception as exc:
            self.failures.append(type(exc).__name__)
            raise


@dataclass
class Member:
    ctx: GroupContext
    security: Recording
    resource: FirmwareResource
    endpoints: list[Endpoint]
    files: dict[bytes, bytes]


AUTHOR = Ed25519PrivateKey.generate()


async def start_member(ctx: GroupContext, port: int, *, unicast: bool) -> Member:
    security = Recording([ctx])
    files: dict[bytes, bytes] = {}
    resource = FirmwareResource(
        PushReceiver([AUTHOR.public_key()]),
        on_complete=lambda tid, data: files.__setitem__(tid, data),
    )
    site = Site()
    site.add("fw", resource)
    hook = SenderTagging(security)
    group_ep = await Endpoint.create(
        ("0.0.0.0", port), site=site, server_security=hook, leisure=LEISURE, reuse_address=unicast
    )
    group_ep.join_group(ALL_COAP_NODES_V4, "lo")
    endpoints = [group_ep]
    if unicast:
        uni = await Endpoint.create(("127.0.0.1", 0), site=site, server_security=hook)
        resource.receiver.port = uni.address[1]
        endpoints.append(uni)
    return Member(ctx, security, resource, endpoints, files)


async def scenario(kind: str, n: int, size: int, seed: int = 7) -> dict[str, Any]:
    names = ["sender", *(f"m{i}" for i in range(n))]
    docs = provision_static_group(names)
    ctxs = {name: fresh_context(doc) for name, doc in docs.items()}
    data = random.Random(seed).randbytes(size)
    relay = None
    members: list[Member] = []
    sender_ep = await Endpoint.create(("0.0.0.0", 0), multicast_interface="lo")
    try:
        if kind == "direct":
            for i in range(n):
                members.append(await start_member(ctxs[f"m{i}"], GROUP_PORT, unicast=True))
        else:
            ports = []
            for i in range(n):
                m = await start_member(ctxs[f"m{i}"], 0, unicast=False)
                members.append(m)
                ports.append(m.endpoints[0].address[1])
            mangle = None
            if kind == "tamper":

                def mangle(member: int, number: int, datagram: bytes) -> bytes:
                    if member == 0 and number == 3:
                        flipped = bytearray(datagram)
                        flipped[-20] ^= 0x40
                        return bytes(flipped)
                    return datagram

            loss = float(os.environ.get("PUSH_LOSS", "0.05")) if kind == "lossy" else 0.0
            if kind == "junk":

                def mangle(member: int, number: int, datagram: bytes) -> bytes | list[bytes]:
                    if member != 0 or number != 20:
                        return datagram
                    real = Message.decode(datagram)
                    junk = []
                    for k in range(1, 201):  # short, so the socket buffer takes them all
                        fake = real.copy(mid=(real.mid + k) & 0xFFFF)
                        fake.payload = b"not what the sender signed"
                        junk.append(fake.encode())
                    return [*junk, datagram]

            relay = await LossyFanout.start(
                (ALL_COAP_NODES_V4, GROUP_PORT), ports, loss=loss, seed=seed, mangle=mangle,
                burst=(40, 200) if kind == "burst" else None,
            )  # fmt: skip
        envelope = sign_envelope(
            data,
            sequence=1,
            block_size=block_size_for(size),
            key=AUTHOR,
            distributors=[ctxs["sender"].sender_id],
        )
        start = time.perf_counter()
        result = await push_file(
            sender_ep, ctxs["sender"], data, (ALL_COAP_NODES_V4, GROUP_PORT),
            manifest=parse_envelope(envelope, [AUTHOR.public_key()]),
            interface="lo", status_timeout=1.0,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        digest = hashlib.sha256(data).hexdigest()
        return {
            "ok": result.ok,
            "seconds": round(seconds, 2),
            "sha256": digest,
            "result": result.as_dict(),
            "member_hashes": [
                hashlib.sha256(m.files[result.sender.tid]).hexdigest()
                if result.sender.tid in m.files
                else None
                for m in members
            ],
            "stored": [m.resource.receiver.stored_blocks for m in members],
            "bad_blocks": [m.resource.receiver.bad_blocks for m in members],
            "rejected_by_resource": [m.resource.rejected for m in members],
            "oscore_failures": [m.security.failures for m in members],
            "relay": None
            if relay is None
            else {
                "forwarded": relay.forwarded,
                "dropped": relay.dropped,
            },
        }
    finally:
        await sender_ep.close()
        if relay is not None:
            await relay.close()
        for m in members:
            for ep in m.endpoints:
                await ep.close()


async def main(kinds: list[str]) -> dict[str, Any]:
    n = int(os.environ.get("PUSH_MEMBERS", "20"))
    size = int(os.environ.get("PUSH_SIZE", str(1 << 20)))
    out: dict[str, Any] = {}
    for kind in kinds:
        try:
            out[kind] = await asyncio.wait_for(scenario(kind, n, size), 120)
        except Exception as exc:  # reported to the test, which fails on it
            out[kind] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
