"""A client under attack by single datagrams, and Observe ordered by Partial IV.

The "server" here is a raw UDP socket on 127.0.0.1 driven by the test with a real group
context, so the test decides exactly which datagrams reach the client and in which order:
a recorded response re-sent from the responder's address before the real one, a real
answer that never comes, notifications whose inner Observe is empty (RFC 8613 §4.1.3.5.2)
delivered out of order.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from grouposcore.coap import Code, Message, OptionNumber, Type
from grouposcore.errors import RequestTimeout, ResponseEndsExchange
from grouposcore.oscore import GroupContext
from grouposcore.oscore.config import provision_static_group
from grouposcore.oscore.security import ClientSecurity, VerifiedMessage
from grouposcore.transport import Endpoint, TransmissionParams
from tests.oscore.helpers import fresh_context

FAST = TransmissionParams(ack_timeout=0.2, max_retransmit=2, empty_ack_delay=0.05)


def run(coro: Awaitable[Any]) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


def _group() -> tuple[GroupContext, GroupContext]:
    docs = provision_static_group(["client", "server"])
    return fresh_context(docs["client"]), fresh_context(docs["server"])


def _get(observe: int | None = None) -> Message:
    msg = Message(Code.GET)
    msg.options.uri_path = ["x"]
    if observe is not None:
        msg.options.observe = observe
    return msg


class RawServer:
    """A UDP socket the test answers from by hand, with the server's group context."""

    def __init__(self, ctx: GroupContext) -> None:
        self.ctx = ctx
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.received: list[Message] = []

    async def receive(self) -> tuple[Message, Any]:
        loop = asyncio.get_running_loop()
        while True:
            data, remote = await loop.sock_recvfrom(self.sock, 65536)
            msg = Message.decode(data)
            self.received.append(msg)
            if msg.code != Code.EMPTY:
                return msg, remote

    async def drain(self, count: int) -> list[Message]:
        """The next ``count`` datagrams, empty ones included."""
        loop = asyncio.get_running_loop()
        out = []
        for _ in range(count):
            data, _remote = await asyncio.wait_for(loop.sock_recvfrom(self.sock, 65536), 5)
            out.append(Message.decode(data))
        return out

    async def send(self, msg: Message, remote: Any) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, msg.encode(), remote)

    def answer(self, request: Message, payload: bytes, **kw: Any) -> tuple[Message, Any]:
        """Verify ``request`` and return the protected 2.05 (as an ACK) and the binding."""
        _plain, binding = self.ctx.unprotect_request(request)
        resp = Message(Code.CONTENT, payload=payload)
        for number, value in kw.items():
            resp.options.set(getattr(OptionNumber, number.upper()), value)
        protected = self.ctx.protect_response(resp, binding)
        return protected.copy(mtype=Type.ACK, mid=request.mid, token=request.token), binding

    def close(self) -> None:
        self.sock.close()


async def _with(
    body: Callable[[Endpoint, RawServer, ClientSecurity, bytes], Awaitable[None]],
    pairwise: bool = True,
) -> None:
    client_ctx, server_ctx = _group()
    server_id = server_ctx.sender_id
    assert server_id is not None
    sec = ClientSecurity(client_ctx, pairwise_with=server_id if pairwise else None)
    server = RawServer(server_ctx)
    client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
    try:
        await body(client, server, sec, server_id)
    finally:
        await client.close()
        server.close()


@pytest.mark.parametrize("pairwise", [True, False], ids=["pairwise", "group-mode"])
def test_recorded_response_sent_first_does_not_kill_the_exchange(pairwise: bool) -> None:
    """RFC 8613 §8.4: the replayed old response (same MID and token as the real piggybacked
    answer, from the responder's address) fails verification and is discarded; the real
    answer that follows is returned."""

    async def body(client: Endpoint, server: RawServer, sec: ClientSecurity, _: bytes) -> None:
        first = asyncio.ensure_future(
            client.request(_get(), server.address, security=sec, timeout=5)
        )
        req, remote = await server.receive()
        recorded, _b = server.answer(req, b"old")
        await server.send(recorded, remote)
        assert (await first).payload == b"old"

        second = asyncio.ensure_future(
            client.request(_get(), server.address, security=sec, timeout=5)
        )
        req, remote = await server.receive()
        forged = recorded.copy(mid=req.mid, token=req.token)
        await server.send(forged, remote)
        real, _b = server.answer(req, b"fresh")
        await asyncio.sleep(0.05)  # the forged datagram is surely processed first
        await server.send(real, remote)
        resp = await second
        assert resp.payload == b"fresh" and isinstance(resp, VerifiedMessage)

    run(_with(body, pairwise))


def test_forged_separate_response_is_acknowledged_and_discarded() -> None:
    """With separate CON responses both datagrams are acknowledged (an ACK only confirms
    receipt, before any verification); only the verified one is returned."""

    async def body(client: Endpoint, server: RawServer, sec: ClientSecurity, _: bytes) -> None:
        task = asyncio.ensure_future(
            client.request(_get(), server.address, security=sec, timeout=5)
        )
        req, remote = await server.receive()
        await server.send(Message(Code.EMPTY, Type.ACK, req.mid), remote)
        real, _b = server.answer(req, b"real")
        forged = real.copy(mtype=Type.CON, mid=0x1000, payload=real.payload[:-1] + b"\x00")
        await server.send(forged, remote)
        await asyncio.sleep(0.05)
        await server.send(real.copy(mtype=Type.CON, mid=0x1001), remote)
        resp = await task
        assert resp.payload == b"real"
        acks = await server.drain(2)
        assert sorted((m.mtype, m.mid) for m in acks) == [(Type.ACK, 0x1000), (Type.ACK, 0x1001)]

    run(_with(body))


def test_timeout_reports_responses_that_failed_verification() -> None:
    """Nothing valid arrives: the timeout says how many responses were discarded and why."""

    async def body(client: Endpoint, server: RawServer, sec: ClientSecurity, _: bytes) -> None:
        task = asyncio.ensure_future(
            client.request(_get(), server.address, security=sec, timeout=1)
        )
        req, remote = await server.receive()
        real, _b = server.answer(req, b"real")
        for mid in (1, 2):
            bad = real.copy(mtype=Type.NON, mid=mid, payload=real.payload[:-1] + b"\x00")
            await server.send(bad, remote)
        with pytest.raises(RequestTimeout) as info:
            await task
        assert "2 responses failed verification: pairwise decryption failed (2)" in str(info.value)

    run(_with(body))


def test_group_request_tallies_responses_that_failed_verification() -> None:
    """group_request skips unverifiable responses and counts them for the caller."""
    from grouposcore.transport import VerificationFailures

    client_ctx, _server_ctx = _group()
    sec = ClientSecurity(client_ctx)

    async def main() -> tuple[list[Message], VerificationFailures]:
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        failures = VerificationFailures()
        got: list[Message] = []

        def send_and_forge(msg: Message, remote: Any) -> int:
            # nothing leaves the host: the group request stays here (network rule), and
            # an answer that does not verify arrives "from" a member right away
            forged = Message(Code.CHANGED, Type.NON, 7, msg.token, payload=b"\x00" * 80)
            forged.options.oscore = b"\x29\x01\x05"
            client._process(client._ml.receive(forged.encode(), ("127.0.0.1", 9), client._now()))
            return msg.mid

        client._send = send_and_forge  # type: ignore[method-assign]
        try:
            async for resp in client.group_request(
                _get(), ("224.0.1.187", 5683), timeout=0.5, security=sec, failures=failures
            ):
                got.append(resp)
        finally:
            await client.close()
        return got, failures

    got, failures = run(main())
    assert got == [] and failures.count == 1


def _notification(
    server: RawServer, binding: Any, token: bytes, outer_observe: int, payload: bytes, mid: int
) -> Message:
    """A notification as a conforming server sends it: the inner Observe is empty
    (RFC 8613 §4.1.3.5.2), the outer one carries the value, a fresh Partial IV."""
    note = Message(Code.CONTENT, payload=payload)
    note.options.observe = 0  # encoded empty: this is what goes inside
    protected = server.ctx.protect_response(note, binding)
    protected.options.observe = outer_observe  # outer options are not integrity-protected
    return protected.copy(mtype=Type.NON, mid=mid, token=token)


async def _registered(
    client: Endpoint, server: RawServer, sec: ClientSecurity
) -> tuple[Any, Message, Any, Any]:
    """An Observe registration the server answered (piggybacked, "reg"): the observation,
    the registration request, its source and the server's binding for notifications."""
    obs = client.observe(_get(observe=0), server.address, security=sec, timeout=5)
    first = asyncio.ensure_future(obs.__anext__())
    req, remote = await server.receive()
    _plain, binding = server.ctx.unprotect_request(req)
    reg = Message(Code.CONTENT, payload=b"reg")
    reg.options.observe = 0
    await server.send(
        server.ctx.protect_response(reg, binding).copy(
            mtype=Type.ACK, mid=req.mid, token=req.token
        ),
        remote,
    )
    assert (await first).payload == b"reg"
    return obs, req, remote, binding


def test_notifications_are_ordered_by_partial_iv_not_by_observe() -> None:
    """With an empty inner Observe every notification used to look like the first one and
    was dropped; and an attacker's outer Observe value must not reorder them either."""

    async def body(client: Endpoint, server: RawServer, sec: ClientSecurity, _: bytes) -> None:
        obs, req, remote, binding = await _registered(client, server, sec)
        n1 = _notification(server, binding, req.token, 10, b"n1", 500)
        n2 = _notification(server, binding, req.token, 11, b"n2", 501)
        n3 = _notification(server, binding, req.token, 5, b"n3", 502)  # lying outer Observe
        for note in (n1, n3, n2):  # n2 overtaken by n3: older, dropped
            await server.send(note, remote)
        got = [(await asyncio.wait_for(obs.__anext__(), 5)).payload for _ in range(2)]
        assert got == [b"n1", b"n3"]
        n4 = _notification(server, binding, req.token, 12, b"n4", 503)
        await server.send(n2, remote)  # older again, and a replay
        await server.send(n4, remote)
        assert (await asyncio.wait_for(obs.__anext__(), 5)).payload == b"n4"
        obs._end()

    run(_with(body))


def test_forged_notification_does_not_end_the_observation() -> None:
    """A notification that fails verification is dropped; the next real one is delivered."""

    async def body(client: Endpoint, server: RawServer, sec: ClientSecurity, _: bytes) -> None:
        obs, req, remote, binding = await _registered(client, server, sec)
        real = _notification(server, binding, req.token, 3, b"real", 600)
        forged = real.copy(mid=601, payload=real.payload[:-1] + b"\x00")
        await server.send(forged, remote)
        await server.send(real, remote)
        assert (await asyncio.wait_for(obs.__anext__(), 5)).payload == b"real"
        assert obs.failures.count == 1
        obs._end()

    run(_with(body))


def test_a_security_layer_may_end_the_exchange_on_an_answer_it_chose_to_act_on() -> None:
    """ResponseEndsExchange is the one way out of "discard and keep waiting": a security
    layer that acts on an unverified answer (a GM's unprotected 4.01, after which a node makes
    its channel again) ends the request at once instead of at the timeout."""

    class ActsOnUnprotected401(ClientSecurity):
        def unprotect_response(self, response: Message, binding: Any) -> VerifiedMessage:
            if response.options.get(9) is None and response.code == Code.UNAUTHORIZED:
                raise ResponseEndsExchange("the server has no context for us")
            return super().unprotect_response(response, binding)

    async def body(client: Endpoint, server: RawServer, sec: ClientSecurity, _: bytes) -> None:
        acting = ActsOnUnprotected401(sec.context)
        task = asyncio.ensure_future(
            client.request(_get(), server.address, security=acting, timeout=30)
        )
        req, remote = await server.receive()
        await server.send(Message(Code.UNAUTHORIZED, Type.ACK, req.mid, token=req.token), remote)
        with pytest.raises(ResponseEndsExchange):
            await asyncio.wait_for(task, 5)  # not the 30 s timeout
        plain = asyncio.ensure_future(
            client.request(_get(), server.address, security=sec, timeout=0.5)
        )
        req, remote = await server.receive()
        await server.send(Message(Code.UNAUTHORIZED, Type.ACK, req.mid, token=req.token), remote)
        with pytest.raises(RequestTimeout, match="failed verification"):
            await plain  # an ordinary security layer discards it and keeps waiting

    run(_with(body, True))


def test_group_request_answers_no_second_echo_challenge_from_a_server_that_answered() -> None:
    """A server that answered a group request and then (after losing its state to a restart,
    or by a copy of a challenge) challenges the same request with Echo gets no retry: a
    retry would make it execute the request twice (found by the group model)."""
    client_ctx, server_ctx = _group()
    sec = ClientSecurity(client_ctx)
    server_addr = ("127.0.0.1", 9)

    async def main() -> tuple[list[Message], list[Any]]:
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        sent: list[Any] = []
        got: list[Message] = []

        def inject(msg: Message) -> None:
            client._process(client._ml.receive(msg.encode(), server_addr, client._now()))

        def send_here(msg: Message, remote: Any) -> int:
            sent.append(remote)  # nothing leaves the host
            if len(sent) == 1:  # the group request: an answer, then a challenge of it
                _, binding = server_ctx.unprotect_request(msg)
                answer = server_ctx.protect_response(
                    Message(Code.CONTENT, Type.NON, 7, msg.token, payload=b"done"), binding
                )
                inject(answer)
                challenge = Message(Code.UNAUTHORIZED, Type.NON, 8, msg.token)
                challenge.options.echo = b"\x01" * 8
                inject(server_ctx.protect_response(challenge, binding, fresh_piv=True))
            return msg.mid

        client._send = send_here  # type: ignore[method-assign]
        try:
            async for resp in client.group_request(
                _get(), ("224.0.1.187", 5683), timeout=0.5, security=sec
            ):
                got.append(resp)
        finally:
            await client.close()
        return got, sent

    got, sent = run(main())
    assert [r.payload for r in got] == [b"done"]
    assert sent == [("224.0.1.187", 5683)]  # no unicast retry to the server
