"""How the endpoint carries out the server pipeline's actions, on loopback: render tasks
that clean up after themselves, and responses to multicast requests held under the one
leisure timer (a multicast request is simulated by handing the endpoint an exchange
flagged ``multicast``, as the message layer would for a datagram sent to a group)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from grouposcore.coap import Code, Message, Type
from grouposcore.errors import CredentialNotFound
from grouposcore.transport import Endpoint, Resource, Site
from grouposcore.transport.endpoint import MAX_PARKED
from grouposcore.transport.messagelayer import ServerExchange
from grouposcore.transport.params import TransmissionParams


class Hello(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=b"hello")


class Slow(Resource):
    """Suspends while rendering, so its task is still running when the test looks."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def render_get(self, request: Message) -> Message:
        await self.release.wait()
        return Message(Code.CONTENT, payload=b"late")


def run(coro: Any) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


def get(path: str, mid: int, token: bytes) -> Message:
    msg = Message(Code.GET, Type.NON, mid, token)
    msg.options.uri_path = [path]
    return msg


async def server(leisure: float, seed: int = 1) -> Endpoint:
    site = Site()
    site.add("hello", Hello())
    site.add("slow", Slow())
    return await Endpoint.create(
        ("127.0.0.1", 0), site=site, leisure=leisure, rng=random.Random(seed)
    )


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


async def receive(sock: socket.socket, timeout: float) -> Message | None:
    loop = asyncio.get_running_loop()
    try:
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), timeout)
    except TimeoutError:
        return None
    return Message.decode(data)


def test_render_tasks_leave_the_task_set_when_done() -> None:
    async def main() -> None:
        ep = await server(leisure=0.0)
        client = await Endpoint.create(("127.0.0.1", 0))
        try:
            slow = ep.site.lookup(["slow"]) if ep.site else None
            assert isinstance(slow, Slow)
            pending = asyncio.ensure_future(client.request(get("slow", 0, b""), ep.address))
            for _ in range(3):
                r = await client.request(get("hello", 0, b""), ep.address, timeout=5)
                assert r.payload == b"hello"
            assert len(ep._tasks) == 1  # only the slow render is still running
            slow.release.set()
            assert (await pending).payload == b"late"
            await asyncio.sleep(0)
            assert not ep._tasks
        finally:
            await client.close()
            await ep.close()

    run(main())


def test_multicast_responses_wait_out_their_leisure_under_one_timer() -> None:
    async def main() -> None:
        ep = await server(leisure=0.3, seed=4)
        sock = listener()
        remote = sock.getsockname()
        try:
            for i in range(3):
                ep._on_request(ServerExchange(get("hello", i, bytes([i])), remote, True))
            await asyncio.sleep(0)  # the render tasks run; the answers wait for the leisure
            assert len(ep._leisure) == 3
            timer = ep._leisure_timer
            assert timer is not None and timer.when() == ep._leisure.next_due()
            tokens = set()
            for _ in range(3):
                msg = await receive(sock, 5.0)
                assert msg is not None and msg.payload == b"hello" and msg.mtype == Type.NON
                tokens.add(msg.token)
            assert tokens == {b"\x00", b"\x01", b"\x02"}
            assert len(ep._leisure) == 0 and ep._leisure_timer is None
        finally:
            sock.close()
            await ep.close()

    run(main())


def test_close_drops_responses_still_waiting_out_their_leisure() -> None:
    async def main() -> None:
        ep = await server(leisure=30.0)
        sock = listener()
        try:
            ep._on_request(ServerExchange(get("hello", 1, b"\x01"), sock.getsockname(), True))
            await asyncio.sleep(0)
            assert len(ep._leisure) == 1
            timer = ep._leisure_timer
            await ep.close()
            assert len(ep._leisure) == 0 and timer is not None and timer.cancelled()
            assert await receive(sock, 0.2) is None
        finally:
            sock.close()

    run(main())


def test_two_endpoints_of_one_process_send_their_leisure_answers_on_one_grid() -> None:
    """The leisure grid is the loop's clock divided into ``leisure_slots`` per leisure:
    every endpoint of a process shares it (so their answers leave in a few loop turns),
    a changed leisure moves it, and ``leisure_slots=0`` turns it off."""

    async def main() -> None:
        params = TransmissionParams(leisure_slots=4)
        a = await Endpoint.create(("127.0.0.1", 0), site=Site(), leisure=0.4, params=params)
        b = await Endpoint.create(("127.0.0.1", 0), site=Site(), leisure=0.4, params=params)
        off = await Endpoint.create(
            ("127.0.0.1", 0), leisure=0.4, params=TransmissionParams(leisure_slots=0)
        )
        try:
            assert a._leisure.slot == b._leisure.slot == 0.1 and off._leisure.slot == 0.0
            a.leisure = 2.0
            assert a._leisure.slot == 0.5
        finally:
            for ep in (a, b, off):
                await ep.close()

    run(main())
    with pytest.raises(ValueError):
        TransmissionParams(leisure_slots=-1)


class Fetching:
    """Server security whose senders' credentials are "fetched": a request fails with
    CredentialNotFound (a fetch under way) until ``known`` is set, then verifies."""

    def __init__(self, fetch: asyncio.Future[bool]) -> None:
        self.fetch = fetch
        self.known = False
        self.calls = 0

    def unprotect_request(self, request: Message) -> tuple[Message, Any] | None:
        self.calls += 1
        if not self.known:
            err = CredentialNotFound("no credential for Sender ID 05", kid=b"\x05")
            err.pending = self.fetch if not self.fetch.done() else None
            raise err
        return request, None

    def protect_response(self, response: Message, binding: Any) -> Message:
        return response


def _protected_get(mid: int) -> Message:
    msg = get("hello", mid, bytes([mid]))
    msg.options.set(9, b"\x09\x05\x42")  # an OSCORE option: one-to-one, kid 05
    return msg


@contextlib.asynccontextmanager
async def _fetching_server() -> AsyncIterator[tuple[Endpoint, Fetching, socket.socket]]:
    """A server whose security is :class:`Fetching`, and a client socket to answer to."""
    sec = Fetching(asyncio.get_running_loop().create_future())
    ep = await server(leisure=0.0)
    ep.server_security = sec  # type: ignore[assignment]
    sock = listener()
    try:
        yield ep, sec, sock
    finally:
        sock.close()
        await ep.close()


def test_a_request_is_held_while_its_senders_credential_is_fetched_then_answered() -> None:
    async def main() -> None:
        async with _fetching_server() as (ep, sec, sock):
            ep._on_request(ServerExchange(_protected_get(1), sock.getsockname(), False))
            assert len(ep._parked) == 1 and sec.calls == 1
            assert await receive(sock, 0.3) is None  # held, not refused
            sec.known = True
            sec.fetch.set_result(True)
            answer = await receive(sock, 5.0)
            assert answer is not None and answer.payload == b"hello" and answer.token == b"\x01"
            assert sec.calls == 2 and not ep._parked
            assert ep.rejections.total == 0  # answered in the end: never counted as refused

    run(main())


def test_a_held_request_is_refused_if_the_fetch_found_nothing_and_holding_is_bounded() -> None:
    async def main() -> None:
        async with _fetching_server() as (ep, sec, sock):
            for mid in range(MAX_PARKED + 1):
                ep._on_request(ServerExchange(_protected_get(mid), sock.getsockname(), False))
            assert len(ep._parked) == MAX_PARKED
            refused = await receive(sock, 5.0)  # the one beyond the bound: 5.03 at once
            assert refused is not None and refused.code == Code.SERVICE_UNAVAILABLE
            sec.fetch.set_result(False)  # nothing found: each held request is refused now
            codes = []
            for _ in range(MAX_PARKED):
                msg = await receive(sock, 5.0)
                assert msg is not None
                codes.append(msg.code)
            assert codes == [Code.SERVICE_UNAVAILABLE] * MAX_PARKED and not ep._parked
            assert ep.rejections.total == MAX_PARKED + 1  # each refusal counted once

    run(main())
