"""Multicast scenarios, run inside a private network namespace by test_multicast_wire.py.

``python3 -m tests.wire.mcast_scenarios DIR [NAME...]`` expects a namespace whose ``lo`` is up
with a route for 224.0.0.0/4, runs the scenarios and prints their findings as one JSON object.
All members share port 5683 on 0.0.0.0 (each socket with address reuse) and join
224.0.1.187 on ``lo``; responses are told apart by their verified Sender ID.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grouposcore.coap import Message, Type
from grouposcore.coap.constants import ALL_COAP_NODES_V4, COAP_PORT
from grouposcore.cose import private_key_from_bytes
from grouposcore.oscore.config import read_secret_file
from grouposcore.oscore.security import ClientSecurity, VerifiedMessage
from grouposcore.transport import Endpoint
from tests.wire.groupnet import SERVERS, Server, get, load_group, provision, start_server

GROUP = (ALL_COAP_NODES_V4, COAP_PORT)
LEISURE = 0.3
COLLECT = 1.5


def describe(resp: Any) -> dict[str, Any]:
    sec = resp.security if isinstance(resp, VerifiedMessage) else None
    return {
        "code": int(resp.code),
        "payload": resp.payload.decode("utf-8", "replace"),
        "remote": list(resp.remote) if resp.remote is not None else None,
        "sender_id": None if sec is None else sec.sender_id.hex(),
        "group_mode": None if sec is None else sec.group_mode,
    }


async def gos_servers(paths: dict[str, Path], *, pairwise_answers: bool = False) -> list[Server]:
    servers = []
    for name in SERVERS:
        server = await start_server(
            name,
            paths[name],
            bind=("0.0.0.0", COAP_PORT),
            reuse_address=True,
            leisure=LEISURE,
            pairwise_answers=pairwise_answers,
        )
        server.endpoint.join_group(ALL_COAP_NODES_V4, "lo")
        servers.append(server)
    return servers


async def gos_group_request(
    client_path: Path, msg: Message, *, secured: bool = True
) -> list[dict[str, Any]]:
    client = await Endpoint.create(("0.0.0.0", 0), multicast_interface="lo")
    try:
        security = ClientSecurity(load_group(client_path)) if secured else None
        return [
            describe(r)
            async for r in client.group_request(msg, GROUP, timeout=COLLECT, security=security)
        ]
    finally:
        await client.close()


def server_ids(servers: list[Server]) -> dict[str, str]:
    return {s.name: s.sender_id.hex() for s in servers}


async def close_all(servers: list[Server]) -> None:
    for s in servers:
        await s.endpoint.close()


# -- grouposcore client, grouposcore servers --------------------------------------------


async def gos_to_gos(directory: Path, pairwise_answers: bool) -> dict[str, Any]:
    paths = provision(directory, name="mcast")
    servers = await gos_servers(paths, pairwise_answers=pairwise_answers)
    try:
        responses = await gos_group_request(paths["client"], get("light"))
        return {
            "servers": server_ids(servers),
            "responses": responses,
            "runs": [s.light.runs for s in servers],
        }
    finally:
        await close_all(servers)


async def group_mode(directory: Path) -> dict[str, Any]:
    return await gos_to_gos(directory, False)


async def pairwise_responses(directory: Path) -> dict[str, Any]:
    return await gos_to_gos(directory, True)


async def late_joiner(directory: Path) -> dict[str, Any]:
    """s3 starts with invalid replay windows: it answers the multicast request with a
    protected 4.01+Echo, the client repeats the request by unicast to s3 within the same
    collection, and s1/s2 answer right away.

    On one host all members share 127.0.0.1:5683, and unicast to that address reaches the
    socket bound last, so the late joiner is the last server started.
    """
    paths = provision(directory, name="mcast", late=("s3",))
    servers = await gos_servers(paths)
    try:
        responses = await gos_group_request(paths["client"], get("light"))
        return {
            "servers": server_ids(servers),
            "responses": responses,
            "runs": [s.light.runs for s in servers],
            "failures": [getattr(s.security, "failures", []) for s in servers],
        }
    finally:
        await close_all(servers)


async def unprotected(directory: Path) -> dict[str, Any]:
    """A plain multicast request: silence from a secured resource, answers from a plain one."""
    paths = provision(directory, name="mcast")
    servers = await gos_servers(paths)
    try:
        secured = await gos_group_request(paths["client"], get("light"), secured=False)
        plain = await gos_group_request(paths["client"], get("plain"), secured=False)
        return {"secured": secured, "plain": plain, "runs": [s.light.runs for s in servers]}
    finally:
        await close_all(servers)


def _collect(sock: socket.socket, seconds: float) -> list[tuple[bytes, tuple[str, int]]]:
    out = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recvfrom(65536))
        except TimeoutError:
            break
    return out


def _mcast_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    return sock


async def replay(directory: Path) -> dict[str, Any]:
    """The exact bytes of a protected multicast request, sent again from another socket:
    every server stays silent and no handler runs twice."""
    paths = provision(directory, name="mcast")
    servers = await gos_servers(paths)
    try:
        sec = ClientSecurity(load_group(paths["client"]))
        wire, binding = sec.protect_request(get("light").copy(token=b"\x0a\x0b", mid=77))
        data = wire.copy(mtype=Type.NON, token=b"\x0a\x0b", mid=77).encode()
        first, again = _mcast_socket(), _mcast_socket()
        with first, again:
            first.sendto(data, GROUP)
            answers = await asyncio.to_thread(_collect, first, COLLECT)
            again.sendto(data, GROUP)
            replayed = await asyncio.to_thread(_collect, again, COLLECT)
        verified = []
        for raw, _addr in answers:
            plain = sec.unprotect_response(Message.decode(raw), binding)
            verified.append(describe(plain))
        return {
            "servers": server_ids(servers),
            "responses": verified,
            "replayed": [Message.decode(raw).code for raw, _ in replayed],
            "runs": [s.light.runs for s in servers],
            "failures": [getattr(s.security, "failures", []) for s in servers],
        }
    finally:
        await close_all(servers)


# -- interop with aiocoap 0.4.17 -------------------------------------------------------


def aio_group_context(path: Path) -> Any:
    """aiocoap's SimpleGroupContext for the member described by a grouposcore group file."""
    from aiocoap import oscore

    doc = read_secret_file(path)
    aead = {a.value: a for a in oscore.algorithms.values()}
    key = private_key_from_bytes(bytes.fromhex(doc["private_key"]))
    return oscore.SimpleGroupContext(
        aead[doc["aead"]],
        oscore.hashfunctions["sha256"],
        oscore.algorithms_countersign["EdDSA on Ed25519"],
        aead[doc["group_enc"]],
        oscore.algorithms_staticstatic["ECDH-SS + HKDF-256"],
        bytes.fromhex(doc["gid"]),
        bytes.fromhex(doc["master_secret"]),
        bytes.fromhex(doc["master_salt"]),
        bytes.fromhex(doc["sender_id"]),
        key.private_bytes_raw(),
        bytes.fromhex(doc["credential"]),
        {bytes.fromhex(m["sender_id"]): bytes.fromhex(m["credential"]) for m in doc["members"]},
        bytes.fromhex(doc.get("gm_cred", "")),  # provision leaves it out for h''
    )


async def aiocoap_servers(directory: Path) -> dict[str, Any]:
    """A grouposcore group request answered by three aiocoap servers (pairwise responses,
    the only kind aiocoap's group server sends)."""
    import aiocoap
    import aiocoap.resource
    from aiocoap.credentials import CredentialsMap
    from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

    paths = provision(directory, name="mcast")
    runs = dict.fromkeys(SERVERS, 0)

    class Light(aiocoap.resource.Resource):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
            runs[self.name] += 1
            return aiocoap.Message(code=aiocoap.CONTENT, payload=self.name.encode())

    contexts = []
    ids = {}
    try:
        for name in SERVERS:
            group = aio_group_context(paths[name])
            ids[name] = group.sender_id.hex()
            creds = CredentialsMap()
            creds[":" + name] = group
            site = aiocoap.resource.Site()
            site.add_resource(["light"], Light(name))
            contexts.append(
                await aiocoap.Context.create_server_context(
                    OscoreSiteWrapper(site, creds),
                    bind=("::", COAP_PORT),
                    multicast=[(ALL_COAP_NODES_V4, "lo")],
                    server_credentials=creds,
                    transports=["udp6"],
                )
            )
        responses = await gos_group_request(paths["client"], get("light"))
        return {"servers": ids, "responses": responses, "runs": list(runs.values())}
    finally:
        for ctx in contexts:
            await ctx.shutdown()


async def aiocoap_client(directory: Path, pairwise_answers: bool) -> dict[str, Any]:
    """An aiocoap-protected group-mode request to 224.0.1.187, answered by three grouposcore
    servers; aiocoap verifies every response and names its sender."""
    import aiocoap
    from aiocoap import oscore

    paths = provision(directory, name="mcast")
    servers = await gos_servers(paths, pairwise_answers=pairwise_answers)
    try:
        ctx = aio_group_context(paths["client"])
        request = aiocoap.Message(code=aiocoap.GET, uri_path=["light"])
        request.direction = aiocoap.message.Direction.OUTGOING
        protected, request_id = ctx.protect(request)
        protected.mtype = aiocoap.NON
        protected.mid = 99
        protected.token = b"\x99\x01"
        with _mcast_socket() as sock:
            sock.sendto(protected.encode(), GROUP)
            answers = await asyncio.to_thread(_collect, sock, COLLECT)
        verified = []
        for raw, addr in answers:
            msg = aiocoap.Message.decode(raw)
            bag = oscore.verify_start(msg)
            responder = ctx.context_from_response(bag)
            plain, _ = responder.unprotect(msg, request_id)
            verified.append(
                {
                    "code": int(plain.code),
                    "payload": plain.payload.decode(),
                    "remote": list(addr),
                    "sender_id": responder.recipient_id.hex(),
                    "group_mode": oscore.COSE_COUNTERSIGNATURE0 in bag,
                }
            )
        return {
            "servers": server_ids(servers),
            "responses": verified,
            "runs": [s.light.runs for s in servers],
        }
    finally:
        await close_all(servers)


async def aiocoap_client_group_responses(directory: Path) -> dict[str, Any]:
    return await aiocoap_client(directory, False)


async def aiocoap_client_pairwise_responses(directory: Path) -> dict[str, Any]:
    return await aiocoap_client(directory, True)


SCENARIOS: dict[str, Callable[[Path], Awaitable[dict[str, Any]]]] = {
    f.__name__: f
    for f in (
        group_mode,
        pairwise_responses,
        late_joiner,
        unprotected,
        replay,
        aiocoap_servers,
        aiocoap_client_group_responses,
        aiocoap_client_pairwise_responses,
    )
}


async def run_all(names: list[str], directory: Path) -> dict[str, Any]:
    """Each scenario in turn (they share port 5683); a failure is reported, not raised."""
    results: dict[str, Any] = {}
    for name in names:
        sub = directory / name
        sub.mkdir()
        try:
            results[name] = await asyncio.wait_for(SCENARIOS[name](sub), 60)
        except Exception:
            results[name] = {"error": traceback.format_exc()}
    return results


def main(argv: list[str]) -> int:
    directory, *names = argv
    print(json.dumps(asyncio.run(run_all(names or list(SCENARIOS), Path(directory)))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
