"""The security hook slot, exercised with a toy (insecure) protection scheme on loopback.

The toy hides the inner code, options and payload in an outer POST with an OSCORE option,
like OSCORE does, so the test sees what the endpoint does around a real security layer:
inner block-wise, bindings per exchange, Observe notifications, 4.01 and Echo handling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from grouposcore.coap import Code, Message, Options, decode_options, encode_options
from grouposcore.errors import (
    ContextNotFound,
    FreshnessRequired,
    ProtectionError,
    ReplayError,
    RequestTimeout,
)
from grouposcore.transport import Endpoint, Protection, Resource, Site, TransmissionParams

FAST = TransmissionParams(ack_timeout=0.1, max_retransmit=2, empty_ack_delay=0.05)


def run(coro: Any) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


@dataclass(slots=True, repr=False)
class Verified(Message):
    """What the toy reports about a verified message (a Message subclass)."""

    sender: bytes = b""


def seal(code: int, options: Options, payload: bytes, key: int) -> bytes:
    inner = bytes([code]) + encode_options(options) + (b"\xff" + payload if payload else b"")
    return bytes(b ^ key for b in inner)


def unseal(data: bytes, key: int) -> tuple[int, Options, bytes]:
    plain = bytes(b ^ key for b in data)
    if not plain:
        raise ProtectionError("empty ciphertext")
    opts, payload = decode_options(plain[1:])
    return plain[0], opts, payload


@dataclass
class Binding:
    kid: bytes
    request_no: int

    @property
    def identity(self) -> bytes:
        return self.kid


class ToyClient:
    def __init__(self, kid: bytes, key: int) -> None:
        self.kid, self.key, self.count = kid, key, 0

    def protect_request(self, request: Message) -> tuple[Message, Any]:
        self.count += 1
        outer = Message(Code.POST, request.mtype, request.mid, request.token)
        outer.options.oscore = b"\x08" + self.kid
        if request.options.observe is not None:
            outer.options.observe = request.options.observe
            outer.code = Code.FETCH
        outer.payload = seal(request.code, request.options, request.payload, self.key)
        return outer, Binding(self.kid, self.count)

    def unprotect_response(self, response: Message, binding: Any) -> Message:
        if response.options.oscore is None:
            raise ProtectionError("unprotected response")
        code, opts, payload = unseal(response.payload, self.key)
        return Verified(
            code, response.mtype, response.mid, response.token, opts, payload, sender=binding.kid
        )


class ToyServer:
    def __init__(self, keys: dict[bytes, int], fresh: set[bytes] | None = None) -> None:
        self.keys = keys
        self.need_echo = fresh if fresh is not None else set()
        self.replayed: set[bytes] = set()
        self.protected = 0

    def unprotect_request(self, request: Message) -> tuple[Message, Any] | None:
        opt = request.options.oscore
        if opt is None:
            return None
        kid = opt[1:]
        if kid not in self.keys:
            raise ContextNotFound("unknown kid")
        code, opts, payload = unseal(request.payload, self.keys[kid])
        plain = Verified(code, request.mtype, request.mid, request.token, opts, payload, sender=kid)
        binding = Binding(kid, 0)
        if kid in self.replayed:
            err = ReplayError("replay")
            err.binding = binding  # type: ignore[attr-defined]
            raise err
        if kid in self.need_echo:
            if opts.echo != b"echo-" + kid:
                raise FreshnessRequired("window not valid", binding, b"echo-" + kid)
            self.need_echo.discard(kid)
        return plain, binding

    def protect_response(self, response: Message, binding: Any) -> Message:
        self.protected += 1
        outer = Message(Code.CHANGED, response.mtype, response.mid, response.token)
        outer.options.oscore = b""
        if response.options.observe is not None:
            outer.options.observe = response.options.observe
            outer.code = Code.CONTENT
        outer.payload = seal(
            response.code, response.options, response.payload, self.keys[binding.kid]
        )
        return outer


class Secret(Resource):
    protection = Protection(accept=lambda b: b.kid == b"A")
    observable = True

    def __init__(self) -> None:
        super().__init__()
        self.senders: list[bytes] = []
        self.body = b"s" * 3000

    async def render_get(self, request: Message) -> Message:
        self.senders.append(getattr(request, "sender", b"?"))
        return Message(Code.CONTENT, payload=self.body)

    async def render_put(self, request: Message) -> Message:
        self.body = request.payload
        return Message(Code.CHANGED)


class Open(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=b"open")

    async def render_post(self, request: Message) -> Message:
        raise RuntimeError("handler bug")


def setup(server_sec: ToyServer) -> tuple[Site, Secret]:
    site = Site()
    secret = site.add("secret", Secret())
    site.add("open", Open())
    return site, secret  # type: ignore[return-value]


def get(*path: str, code: int = Code.GET, payload: bytes = b"") -> Message:
    m = Message(code, payload=payload)
    m.options.uri_path = list(path)
    return m


def test_protected_requests_blockwise_and_authorization() -> None:
    async def main() -> None:
        sec = ToyServer({b"A": 0x5A, b"B": 0x33})
        site, secret = setup(sec)
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, params=FAST, server_security=sec
        )
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            addr = server.address
            a = ToyClient(b"A", 0x5A)
            r = await client.request(get("secret"), addr, security=a)
            # Inner block-wise: 3000 bytes arrive in 3 separately protected blocks.
            assert r.code == Code.CONTENT and r.payload == b"s" * 3000
            assert isinstance(r, Verified) and r.sender == b"A" and r.remote == addr
            assert a.count == 3 and secret.senders == [b"A"]
            # Block1 upload of 5000 bytes under protection.
            r = await client.request(
                get("secret", code=Code.PUT, payload=b"u" * 5000), addr, security=a
            )
            assert r.code == Code.CHANGED and secret.body == b"u" * 5000
            # Unprotected: plain 4.01.
            r = await client.request(get("secret"), addr)
            assert r.code == Code.UNAUTHORIZED and r.options.oscore is None
            # Protected, but with a context the resource does not accept: protected 4.01.
            b = ToyClient(b"B", 0x33)
            r = await client.request(get("secret"), addr, security=b)
            assert r.code == Code.UNAUTHORIZED and isinstance(r, Verified)
            # An open resource answers protected requests (protected) and plain ones.
            r = await client.request(get("open"), addr, security=b)
            assert r.payload == b"open" and isinstance(r, Verified)
            r = await client.request(get("open"), addr)
            assert r.payload == b"open" and not isinstance(r, Verified)
            # A failing handler: the 5.00 to a protected request is protected too.
            r = await client.request(get("open", code=Code.POST), addr, security=b)
            assert r.code == Code.INTERNAL_SERVER_ERROR and isinstance(r, Verified)
            # Unknown kid: the server answers a plain 4.01, which does not verify: it is
            # discarded (it might be forged), and the timeout says so.
            with pytest.raises(RequestTimeout, match="1 response failed verification"):
                await client.request(get("open"), addr, security=ToyClient(b"Z", 1), timeout=1)
        finally:
            await client.close()
            await server.close()

    run(main())


def test_unknown_context_answers_plain_401() -> None:
    async def main() -> None:
        sec = ToyServer({b"A": 0x5A})
        site, _ = setup(sec)
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, params=FAST, server_security=sec
        )
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            z = ToyClient(b"Z", 1)
            wire, _ = z.protect_request(get("open"))
            r = await client.request(wire, server.address)  # sent as is, read raw
            assert r.code == Code.UNAUTHORIZED
            assert r.payload == b"Security context not found"
        finally:
            await client.close()
            await server.close()

    run(main())


def test_echo_challenge_is_retried_transparently() -> None:
    async def main() -> None:
        sec = ToyServer({b"A": 0x5A}, fresh={b"A"})
        site, secret = setup(sec)
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, params=FAST, server_security=sec
        )
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            a = ToyClient(b"A", 0x5A)
            secret.body = b"small"
            r = await client.request(get("secret"), server.address, security=a)
            assert r.code == Code.CONTENT and r.payload == b"small"
            assert a.count == 2  # the challenged request and its retry with Echo
            assert secret.senders == [b"A"]  # the handler ran once
        finally:
            await client.close()
            await server.close()

    run(main())


def test_observe_under_protection_and_cancel() -> None:
    async def main() -> None:
        sec = ToyServer({b"A": 0x5A})
        site, secret = setup(sec)
        secret.body = b"v0"
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, params=FAST, server_security=sec
        )
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            a = ToyClient(b"A", 0x5A)
            obs = client.observe(get("secret"), server.address, security=a)
            first = await obs.__anext__()
            assert first.payload == b"v0" and first.options.observe is not None
            assert isinstance(first, Verified)
            seen = []
            for i in range(1, 4):
                secret.body = f"v{i}".encode()
                secret.notify()
                n = await obs.__anext__()
                seen.append((n.payload, n.options.observe))
            assert [p for p, _ in seen] == [b"v1", b"v2", b"v3"]
            numbers = [first.options.observe] + [o for _, o in seen]
            assert numbers == sorted(numbers)
            assert len(secret.observers) == 1
            await obs.cancel()
            assert secret.observers == []
            assert [x async for x in obs] == []
        finally:
            await client.close()
            await server.close()

    run(main())


def test_replay_is_answered_with_protected_401() -> None:
    async def main() -> None:
        sec = ToyServer({b"A": 0x5A})
        sec.replayed.add(b"A")
        site, secret = setup(sec)
        server = await Endpoint.create(
            ("127.0.0.1", 0), site=site, params=FAST, server_security=sec
        )
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            r = await client.request(get("open"), server.address, security=ToyClient(b"A", 0x5A))
            assert r.code == Code.UNAUTHORIZED and isinstance(r, Verified)
            assert r.payload == b"Replay detected" and secret.senders == []
        finally:
            await client.close()
            await server.close()

    run(main())
