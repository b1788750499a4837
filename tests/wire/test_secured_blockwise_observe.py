"""Block-wise (inner, RFC 8613 §4.1.3.4) and Observe under real OSCORE / Group OSCORE on UDP."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from grouposcore.coap import Code, Message
from grouposcore.oscore import SecurityContext
from grouposcore.oscore.config import provision_static_group
from grouposcore.oscore.security import ClientSecurity, ServerSecurity, VerifiedMessage
from grouposcore.transport import Endpoint, Protection, Resource, Site
from tests.oscore.helpers import fresh_context

BIG = os.urandom(10 * 1024)


class Blob(Resource):
    """10 KiB to read, and whatever is written (block-wise both ways)."""

    observable = True
    protection = Protection(oscore=True, group=True)

    def __init__(self) -> None:
        super().__init__()
        self.body = BIG
        self.counter = 0

    async def render_get(self, request: Message) -> Message:
        if 6 in request.options:  # observed: a small, changing representation
            return Message(code=Code.CONTENT, payload=str(self.counter).encode())
        return Message(code=Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.body = request.payload
        return Message(code=Code.CHANGED)


def _get(path: str = "blob", observe: int | None = None) -> Message:
    msg = Message(code=Code.GET)
    msg.options.uri_path = [path]
    if observe is not None:
        msg.options.observe = observe
    return msg


async def _scenario(client_sec: ClientSecurity, server_sec: ServerSecurity) -> dict[str, Any]:
    blob = Blob()
    site = Site()
    site.add("blob", blob)
    server = await Endpoint.create(("127.0.0.1", 0), site=site, server_security=server_sec)
    client = await Endpoint.create(("127.0.0.1", 0))
    out: dict[str, Any] = {}
    try:
        got = await client.request(_get(), server.address, timeout=10, security=client_sec)
        out["get"] = got
        put = Message(code=Code.PUT, payload=BIG[::-1])
        put.options.uri_path = ["blob"]
        out["put"] = await client.request(put, server.address, timeout=10, security=client_sec)
        out["stored"] = blob.body
        obs = client.observe(_get(observe=0), server.address, security=client_sec, timeout=5)
        notes: list[Message] = []

        async def collect() -> None:
            async for note in obs:
                notes.append(note)
                if len(notes) == 4:
                    return

        task = asyncio.create_task(collect())
        for i in range(3):
            for _ in range(400):  # notify again only once the previous one arrived
                if len(notes) > i or task.done():
                    break
                await asyncio.sleep(0.025)
            blob.counter += 1
            blob.notify()
        await asyncio.wait_for(task, 5)
        await obs.cancel(timeout=5)
        out["notes"] = notes
    finally:
        await client.close()
        await server.close()
    return out


def _check(out: dict[str, Any], sender_id: bytes) -> None:
    assert out["get"].code == Code.CONTENT and out["get"].payload == BIG
    assert out["put"].code == Code.CHANGED and out["stored"] == BIG[::-1]
    payloads = [n.payload for n in out["notes"]]
    assert payloads == [b"0", b"1", b"2", b"3"]
    for message in [out["get"], out["put"], *out["notes"]]:
        assert isinstance(message, VerifiedMessage) and message.security is not None
        assert message.security.sender_id == sender_id
    # every notification after the first carries the server's own, increasing Partial IV
    pivs = [n.security.piv for n in out["notes"][1:]]
    assert all(p is not None for p in pivs)
    assert [int.from_bytes(p, "big") for p in pivs] == sorted(
        int.from_bytes(p, "big") for p in pivs
    )


def test_group_oscore_blockwise_and_observe() -> None:
    docs = provision_static_group(["client", "server"])
    client = fresh_context(docs["client"])
    server = fresh_context(docs["server"])
    for pairwise in (None, server.sender_id):
        out = asyncio.run(
            _scenario(ClientSecurity(client, pairwise_with=pairwise), ServerSecurity([server]))
        )
        _check(out, server.sender_id)


def test_oscore_blockwise_and_observe() -> None:
    client = SecurityContext(b"k" * 16, b"\x01", b"\x02")
    server = SecurityContext(b"k" * 16, b"\x02", b"\x01")
    out = asyncio.run(_scenario(ClientSecurity(client), ServerSecurity([server])))
    _check(out, b"\x02")


def test_unverifiable_answer_to_a_registration_is_discarded_until_the_timeout() -> None:
    """A registration answered with an unprotected 4.01 (which anyone could forge) is not
    accepted and does not end the wait (RFC 8613 §8.4); the timeout then says why."""
    from grouposcore.errors import RequestTimeout

    async def main() -> None:
        site = Site()
        site.add("blob", Blob())
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, server_security=ServerSecurity([])
        )
        client = await Endpoint.create(("127.0.0.1", 0))
        ctx = SecurityContext(b"k" * 16, b"\x01", b"\x02")
        try:
            obs = client.observe(
                _get(observe=0), server.address, security=ClientSecurity(ctx), timeout=1
            )
            try:
                await asyncio.wait_for(obs.__anext__(), 5)
            except RequestTimeout as exc:
                assert "1 response failed verification: unprotected 4.01" in str(exc)
            else:
                raise AssertionError("an unverifiable registration answer was accepted")
            assert obs.failures.count == 1
        finally:
            await client.close()
            await server.close()

    asyncio.run(main())


def test_outer_block1_fragments_of_a_protected_request_are_reassembled() -> None:
    """A protected request cut into outer Block1 fragments (as a proxy may do, RFC 8613
    §4.1.3.4.2) is reassembled before it is verified, then answered protected."""
    import socket

    from grouposcore.coap import BlockOption, Type

    client_ctx = SecurityContext(b"k" * 16, b"\x01", b"\x02")
    server_ctx = SecurityContext(b"k" * 16, b"\x02", b"\x01")

    async def main() -> None:
        blob = Blob()
        site = Site()
        site.add("blob", blob)
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, server_security=ServerSecurity([server_ctx])
        )
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(server.address)
        try:
            put = Message(code=Code.PUT, mtype=Type.CON, token=b"\x07", payload=BIG[:3000])
            put.options.uri_path = ["blob"]
            protected, binding = client_ctx.protect_request(put)
            body = protected.payload
            size = 1024
            answers = []
            for num, start in enumerate(range(0, len(body), size)):
                frag = protected.copy(mid=100 + num, payload=body[start : start + size])
                frag.options.block1 = BlockOption.from_size(num, start + size < len(body), size)
                await loop.sock_sendall(sock, frag.encode())
                answers.append(
                    Message.decode(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
                )
            assert [a.code for a in answers[:-1]] == [Code.CONTINUE] * (len(answers) - 1)
            final = answers[-1]
            assert final.options.block1 is not None and not final.options.block1.more
            plain, _ = client_ctx.unprotect_response(final, binding)
            assert plain.code == Code.CHANGED and blob.body == BIG[:3000]
        finally:
            sock.close()
            await server.close()

    asyncio.run(main())


def _unknown_sender(pairwise: bool) -> tuple[Message | None, dict[str, int]]:
    """A request from a member the server has no credential for, sent as is (read raw)."""
    docs = provision_static_group(["client", "server"])
    client = fresh_context(docs["client"])
    server = fresh_context(
        docs["server"] | {"members": []}, credential_provider=lambda kid, gid: None
    )
    server_id = next(iter(client.recipients))

    async def main() -> tuple[Message | None, dict[str, int]]:
        from grouposcore.errors import RequestTimeout

        site = Site()
        site.add("blob", Blob())
        ep = await Endpoint.create(
            ("127.0.0.1", 0), site=site, server_security=ServerSecurity([server])
        )
        cl = await Endpoint.create(("127.0.0.1", 0))
        try:
            protected, _ = client.protect_request(
                _get(), pairwise_with=server_id if pairwise else None
            )
            try:
                answer: Message | None = await cl.request(protected, ep.address, timeout=1)
            except RequestTimeout:
                answer = None
            return answer, dict(ep.rejections.counts)
        finally:
            await cl.close()
            await ep.close()

    return asyncio.run(main())


def test_unknown_sender_gets_503_with_max_age() -> None:
    """RFC 10021 §7.2: no credential for the sender of a pairwise request yet -> 5.03 with
    Max-Age (retry later)."""
    answer, counts = _unknown_sender(pairwise=True)
    assert answer is not None
    assert answer.code == Code.SERVICE_UNAVAILABLE and answer.options.max_age == 60
    assert counts == {"no-credential": 1}


def test_unknown_sender_of_a_group_mode_request_gets_no_503() -> None:
    """The same refusal of a group-mode request (by unicast) is silent: it may be a group
    request (RFC 10021 §7)."""
    answer, counts = _unknown_sender(pairwise=False)
    assert answer is None
    assert counts == {"no-credential": 1}
