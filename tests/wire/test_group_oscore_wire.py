"""Group OSCORE over real UDP on 127.0.0.1: one client, three servers, each on its own port.

The group comes from static group files (``provision_static_group``). Every response is
checked to be verified with the Sender ID of the server that was asked.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from grouposcore.coap import Code, Type
from grouposcore.errors import OscoreError, RequestTimeout
from grouposcore.oscore.security import ClientSecurity, VerifiedMessage
from grouposcore.transport import Endpoint
from tests.wire.groupnet import (
    SERVERS,
    Recording,
    Server,
    exchange_raw,
    get,
    load_group,
    provision,
    start_server,
    udp_socket,
)


def run(coro: Awaitable[Any]) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


class Net:
    """A started client endpoint and three servers."""

    def __init__(self, client: Endpoint, client_path: Path, servers: list[Server]) -> None:
        self.client = client
        self.ctx = load_group(client_path)
        self.servers = servers

    def security(self, pairwise_with: bytes | None = None) -> ClientSecurity:
        return ClientSecurity(self.ctx, pairwise_with=pairwise_with)


async def _net(tmp: Path, *, late: tuple[str, ...] = (), **kw: Any) -> AsyncIterator[Net]:
    paths = provision(tmp, late=late, name="wire", **kw)
    servers = [await start_server(name, paths[name]) for name in SERVERS]
    client = await Endpoint.create(("127.0.0.1", 0))
    try:
        yield Net(client, paths["client"], servers)
    finally:
        await client.close()
        for s in servers:
            await s.endpoint.close()


def with_net(tmp: Path, body: Any, **kw: Any) -> None:
    async def main() -> None:
        gen = _net(tmp, **kw)
        net = await gen.__anext__()
        try:
            await body(net)
        finally:
            await gen.aclose()

    run(main())


def verified_from(resp: Any, server: Server, *, group_mode: bool) -> VerifiedMessage:
    assert isinstance(resp, VerifiedMessage)
    assert resp.security is not None
    assert resp.security.sender_id == server.sender_id
    assert resp.security.group_mode is group_mode
    return resp


def test_group_files_are_private(tmp_path: Path) -> None:
    paths = provision(tmp_path, name="wire")
    for path in paths.values():
        assert os.stat(path).st_mode & 0o777 == 0o600


def test_group_mode_unicast_to_each_server(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        for server in net.servers:
            resp = await net.client.request(
                get("light"), server.endpoint.address, timeout=5, security=net.security()
            )
            assert resp.code == Code.CONTENT
            assert resp.payload == server.name.encode()
            verified_from(resp, server, group_mode=True)
            assert resp.remote == server.endpoint.address
            assert server.light.runs == 1

    with_net(tmp_path, body)


def test_pairwise_mode_unicast_to_each_server(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        for server in net.servers:
            sec = net.security(pairwise_with=server.sender_id)
            resp = await net.client.request(
                get("light", b"on", Code.POST), server.endpoint.address, timeout=5, security=sec
            )
            assert resp.code == Code.CHANGED
            assert resp.payload == server.name.encode() + b":on"
            verified_from(resp, server, group_mode=False)

    with_net(tmp_path, body)


def test_pairwise_request_to_the_wrong_server_is_refused(tmp_path: Path) -> None:
    """s2 cannot decrypt a pairwise request meant for s1 and answers a plain 4.00 (unicast,
    pairwise: an error response is allowed); the client discards that unverifiable answer
    and its timeout says why."""

    async def body(net: Net) -> None:
        s1, s2 = net.servers[0], net.servers[1]
        sec = net.security(pairwise_with=s1.sender_id)
        with pytest.raises(RequestTimeout, match=r"1 response failed verification: .*4\.00"):
            await net.client.request(get("light"), s2.endpoint.address, timeout=1, security=sec)
        assert s2.light.runs == 0
        assert s2.endpoint.rejections.counts == {"verification-failed": 1}
        assert s2.endpoint.rejections.last is not None
        assert s2.endpoint.rejections.last.answered

    with_net(tmp_path, body)


def test_secured_resource_refuses_unprotected_requests_with_401(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        for server in net.servers:
            resp = await net.client.request(get("light"), server.endpoint.address, timeout=5)
            assert resp.code == Code.UNAUTHORIZED
            assert not isinstance(resp, VerifiedMessage)
            assert server.light.runs == 0
            plain = await net.client.request(get("plain"), server.endpoint.address, timeout=5)
            assert (plain.code, plain.payload) == (Code.CONTENT, b"plain")

    with_net(tmp_path, body)


def test_group_mode_request_for_an_unknown_group_gets_no_error_response(
    tmp_path: Path,
) -> None:
    """RFC 10021 §7: a group-mode request may be a group request even when it arrives by
    unicast, so a failure is not answered (no error storm); the operator sees it counted."""
    other = provision(tmp_path / "other", ("client", "x"), name="other")

    async def body(net: Net) -> None:
        stranger = ClientSecurity(load_group(other["client"]))
        server = net.servers[0]
        with pytest.raises(RequestTimeout) as info:
            await net.client.request(
                get("light"), server.endpoint.address, timeout=1, security=stranger
            )
        assert "failed verification" not in str(info.value)  # nothing came back at all
        assert server.light.runs == 0
        assert isinstance(server.security, Recording)
        assert server.security.failures == ["ContextNotFound"]
        assert server.endpoint.rejections.counts == {"unknown-context": 1}
        last = server.endpoint.rejections.last
        assert last is not None and last.mode == "group" and not last.answered

    with_net(tmp_path, body)


def test_pairwise_request_for_an_unknown_group_gets_plain_401(tmp_path: Path) -> None:
    """A pairwise request is meant for one server: its failure may be answered (4.01,
    unprotected), which the client cannot verify and so reports at its timeout."""
    other = provision(tmp_path / "other", ("client", "x"), name="other")

    async def body(net: Net) -> None:
        ctx = load_group(other["client"])
        x = next(iter(ctx.recipients))
        stranger = ClientSecurity(ctx, pairwise_with=x)
        server = net.servers[0]
        with pytest.raises(RequestTimeout, match=r"unprotected 4\.01 response"):
            await net.client.request(
                get("light"), server.endpoint.address, timeout=1, security=stranger
            )
        assert server.endpoint.rejections.counts == {"unknown-context": 1}
        last = server.endpoint.rejections.last
        assert last is not None and last.mode == "oscore" and last.answered

    with_net(tmp_path, body)


def test_echo_late_joiner_over_the_wire(tmp_path: Path) -> None:
    """s2 starts with invalid replay windows: its first request is challenged with a
    protected 4.01+Echo, the client repeats it with Echo, and later requests go through."""

    async def body(net: Net) -> None:
        s2 = net.servers[1]
        assert not s2.ctx.replay_windows_valid
        for pairwise in (None, s2.sender_id):
            resp = await net.client.request(
                get("light"),
                s2.endpoint.address,
                timeout=5,
                security=net.security(pairwise_with=pairwise),
            )
            assert resp.code == Code.CONTENT
            # the repeated request answering Echo is pairwise (RFC 10021 §9), so is its answer
            verified_from(resp, s2, group_mode=False)
        assert isinstance(s2.security, Recording)
        assert s2.security.failures == ["FreshnessRequired"]  # challenged exactly once
        assert s2.light.runs == 2
        assert s2.light.requests[0].options.echo is not None  # the repeated request
        assert s2.light.requests[1].options.echo is None

    with_net(tmp_path, body, late=("s2",))


def test_echo_challenge_is_a_protected_401_from_the_server(tmp_path: Path) -> None:
    """The challenge itself, seen on a raw socket: protected, verified as s1's 4.01 + Echo."""

    async def body(net: Net) -> None:
        s1 = net.servers[0]
        sec = net.security()
        request = get("light").copy(mtype=Type.CON, mid=0x4242, token=b"\x07\x07")
        wire, binding = sec.protect_request(request)
        wire = wire.copy(mtype=Type.CON, mid=0x4242, token=b"\x07\x07")
        with udp_socket() as sock:
            raw = await asyncio.to_thread(exchange_raw, sock, wire.encode(), s1.endpoint.address)
        assert raw.options.oscore is not None  # protected: the outer code is 2.04
        assert raw.code == Code.CHANGED
        challenge = sec.unprotect_response(raw, binding)
        assert challenge.code == Code.UNAUTHORIZED
        assert challenge.options.echo is not None
        assert challenge.security is not None and challenge.security.sender_id == s1.sender_id
        retry = sec.echo_retry(challenge, request)
        assert retry is not None
        again, retry_sec = retry
        resp = await net.client.request(again, s1.endpoint.address, timeout=5, security=retry_sec)
        assert resp.code == Code.CONTENT
        verified_from(resp, s1, group_mode=False)  # the retry goes in pairwise mode
        assert s1.light.runs == 1

    with_net(tmp_path, body, late=("s1",))


@pytest.mark.parametrize("pairwise", [False, True], ids=["group-mode", "pairwise"])
def test_replayed_datagram_is_rejected(tmp_path: Path, pairwise: bool) -> None:
    """The exact protected bytes again: from the same socket it is a CoAP duplicate (the same
    response, no second handler run); from another socket it is an OSCORE replay: 4.01 to
    a pairwise request, silence to a group-mode one (it may be a group request)."""

    async def body(net: Net) -> None:
        server = net.servers[2]
        sec = net.security(pairwise_with=server.sender_id if pairwise else None)
        request = get("light").copy(mtype=Type.CON, mid=0x1234, token=b"\x01\x02\x03")
        wire, binding = sec.protect_request(request)
        data = wire.copy(mtype=Type.CON, mid=0x1234, token=b"\x01\x02\x03").encode()
        remote = server.endpoint.address
        with udp_socket() as sock, udp_socket(timeout=1.0) as other:
            first_raw = await asyncio.to_thread(exchange_raw, sock, data, remote)
            first = sec.unprotect_response(first_raw, binding)
            assert first.code == Code.CONTENT
            verified_from(first, server, group_mode=not pairwise)
            duplicate = await asyncio.to_thread(exchange_raw, sock, data, remote)
            assert duplicate.encode() == first_raw.encode()
            try:
                replay = await asyncio.to_thread(exchange_raw, other, data, remote)
            except TimeoutError:
                replay = None
        assert server.light.runs == 1
        if not pairwise:
            assert replay is None
        elif replay.options.oscore is not None:
            assert sec.unprotect_response(replay, binding).code == Code.UNAUTHORIZED
        else:
            assert replay.code == Code.UNAUTHORIZED  # never 5.00
            assert replay.payload == b"Replay detected"
        assert isinstance(server.security, Recording)
        assert server.security.failures == ["ReplayError"]
        assert server.endpoint.rejections.counts == {"replay": 1}

    with_net(tmp_path, body)


def test_responses_are_bound_to_their_request(tmp_path: Path) -> None:
    """A response verified against another request's binding fails: no cross-matching."""

    async def body(net: Net) -> None:
        server = net.servers[0]
        sec = net.security()
        one, b1 = sec.protect_request(get("light").copy(mid=1, token=b"\x01"))
        _two, b2 = sec.protect_request(get("light").copy(mid=2, token=b"\x02"))
        with udp_socket() as sock:
            r1 = await asyncio.to_thread(exchange_raw, sock, one.encode(), server.endpoint.address)
        with pytest.raises(OscoreError):
            sec.unprotect_response(r1, b2)
        assert sec.unprotect_response(r1, b1).code == Code.CONTENT

    with_net(tmp_path, body)


@pytest.mark.parametrize(
    ("pairwise", "late"),
    [(False, False), (True, False), (True, True)],
    ids=["group-mode", "pairwise", "pairwise-late-joiner"],
)
def test_aiocoap_client_context_over_udp(tmp_path: Path, pairwise: bool, late: bool) -> None:
    """aiocoap 0.4.17's own client (its OSCORE transport and UDP stack) with a static group
    context from the same group file: requests to each grouposcore server verify, and a
    server with invalid replay windows is satisfied by aiocoap's Echo repeat.

    Not covered: aiocoap's Echo repeat after a *group-mode* challenge fails inside aiocoap
    (it tries to protect with the receive-only group aspect of its context), so the late
    joiner is exercised with aiocoap requesting in pairwise mode.
    """
    import aiocoap
    from aiocoap.transports.oscore import OSCOREAddress

    from tests.wire.mcast_scenarios import aio_group_context

    async def body(net: Net) -> None:
        aio = await aiocoap.Context.create_client_context()
        try:
            group = aio_group_context(tmp_path / "client.json")
            for server in net.servers:
                host, port = server.endpoint.address
                ctx = group.pairwise_for(server.sender_id) if pairwise else group
                aio.client_credentials[f"coap://{host}:{port}/*"] = ctx
                req = aiocoap.Message(code=aiocoap.GET, uri=f"coap://{host}:{port}/light")
                resp = await asyncio.wait_for(aio.request(req).response, 10)
                assert (resp.code, resp.payload) == (aiocoap.CONTENT, server.name.encode())
                assert isinstance(resp.remote, OSCOREAddress)
                verifier = resp.remote.security_context
                assert verifier.recipient_id == server.sender_id
                # the response came in the request's mode
                aspect = "_PairwiseContextAspect" if pairwise else "_GroupContextAspect"
                assert type(verifier).__name__ == aspect
                assert server.light.runs == 1
                assert isinstance(server.security, Recording)
                challenged = ["FreshnessRequired"] if late and server.name == "s1" else []
                assert server.security.failures == challenged
        finally:
            await aio.shutdown()

    with_net(tmp_path, body, late=("s1",) if late else ())
