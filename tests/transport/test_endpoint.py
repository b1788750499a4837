"""The asyncio endpoint on loopback (127.0.0.1 and ::1): methods, errors, ping, timeouts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from grouposcore.coap import Code, Message, Type
from grouposcore.errors import EndpointClosed, RequestTimeout
from grouposcore.transport import (
    Endpoint,
    Protection,
    Resource,
    Site,
    TransmissionParams,
    link_format,
)

FAST = TransmissionParams(ack_timeout=0.1, max_retransmit=2, empty_ack_delay=0.05)


def run(coro: Awaitable[Any]) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


def have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not have_ipv6(), reason="no ::1")),
]


class Store(Resource):
    """A value with GET/PUT/POST/DELETE; counts handler runs."""

    rt = "store"
    if_ = "core.rp"
    ct = 0
    title = "Value store"

    def __init__(self) -> None:
        super().__init__()
        self.value = b"initial"
        self.runs = 0

    async def render_get(self, request: Message) -> Message:
        self.runs += 1
        return Message(Code.CONTENT, payload=self.value)

    async def render_put(self, request: Message) -> Message:
        self.runs += 1
        self.value = request.payload
        return Message(Code.CHANGED)

    async def render_post(self, request: Message) -> Message:
        self.runs += 1
        self.value += request.payload
        return Message(Code.CREATED, payload=str(len(self.value)).encode())

    async def render_delete(self, request: Message) -> Message:
        self.runs += 1
        self.value = b""
        return Message(Code.DELETED)


class Slow(Resource):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.runs = 0

    async def render_get(self, request: Message) -> Message:
        self.runs += 1
        await asyncio.sleep(self.delay)
        return Message(Code.CONTENT, payload=b"slow")


class Secret(Resource):
    protection = Protection(oscore=True, group=True)
    observable = True

    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=b"secret")


def make_site() -> tuple[Site, Store, Slow]:
    site = Site()
    store = site.add("store", Store())
    slow = site.add(("slow",), Slow(0.4))
    site.add("secret", Secret())
    return site, store, slow  # type: ignore[return-value]


async def pair(host: str, **server_kw: Any) -> tuple[Endpoint, Endpoint, Site, Store, Slow]:
    site, store, slow = make_site()
    server = await Endpoint.create((host, 0), site=site, params=FAST, **server_kw)
    client = await Endpoint.create((host, 0), params=FAST)
    return server, client, site, store, slow


def with_pair(host: str, body: Callable[..., Awaitable[None]], **server_kw: Any) -> None:
    async def main() -> None:
        server, client, site, store, slow = await pair(host, **server_kw)
        try:
            await body(server, client, site, store, slow)
        finally:
            await client.close()
            await server.close()

    run(main())


def req(code: int, *path: str, payload: bytes = b"") -> Message:
    m = Message(code, payload=payload)
    m.options.uri_path = list(path)
    return m


@pytest.mark.parametrize("host", HOSTS)
def test_methods(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, site: Site, store: Store, _s: Any) -> None:
        addr = server.address
        r = await client.request(req(Code.GET, "store"), addr)
        assert (r.code, r.payload) == (Code.CONTENT, b"initial")
        assert r.mtype == Type.ACK and r.remote == addr
        r = await client.request(req(Code.PUT, "store", payload=b"new"), addr)
        assert r.code == Code.CHANGED and store.value == b"new"
        r = await client.request(req(Code.POST, "store", payload=b"+1"), addr)
        assert (r.code, r.payload) == (Code.CREATED, b"5")
        r = await client.request(req(Code.DELETE, "store"), addr)
        assert r.code == Code.DELETED and store.value == b""
        assert store.runs == 4

    with_pair(host, body)


@pytest.mark.parametrize("host", HOSTS)
def test_not_found_and_method_not_allowed(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, *_: Any) -> None:
        r = await client.request(req(Code.GET, "nope"), server.address)
        assert r.code == Code.NOT_FOUND
        r = await client.request(req(Code.POST, "slow"), server.address)
        assert r.code == Code.METHOD_NOT_ALLOWED
        r = await client.request(req(Code.FETCH, ".well-known", "core"), server.address)
        assert r.code == Code.METHOD_NOT_ALLOWED

    with_pair(host, body)


@pytest.mark.parametrize("host", HOSTS)
def test_separate_response(host: str) -> None:
    async def body(
        server: Endpoint, client: Endpoint, site: Site, store: Store, slow: Slow
    ) -> None:
        r = await client.request(req(Code.GET, "slow"), server.address)
        # Slower than empty_ack_delay: an empty ACK first, then the response as its own CON.
        assert r.code == Code.CONTENT and r.payload == b"slow"
        assert r.mtype == Type.CON
        assert slow.runs == 1
        for _ in range(400):  # until the client's ACK arrived
            if server.message_layer.pending_confirmables() == 0:
                break
            await asyncio.sleep(0.025)
        assert server.message_layer.pending_confirmables() == 0  # the client ACKed it

    with_pair(host, body)


@pytest.mark.parametrize("host", HOSTS)
def test_non_request_gets_non_response(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, *_: Any) -> None:
        r = await client.request(req(Code.GET, "store"), server.address, confirmable=False)
        assert r.mtype == Type.NON and r.payload == b"initial"

    with_pair(host, body)


@pytest.mark.parametrize("host", HOSTS)
def test_ping(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, *_: Any) -> None:
        rtt = await client.ping(server.address)
        assert 0 <= rtt < 10  # seconds; generous for a loaded machine

    with_pair(host, body)


def test_timeouts_against_a_silent_peer() -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        silent.setblocking(False)
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            addr = silent.getsockname()
            # User deadline.
            with pytest.raises(RequestTimeout):
                await client.request(req(Code.GET, "x"), addr, timeout=0.15)
            # Retransmissions exhausted: 1 + MAX_RETRANSMIT copies, then a clear error.
            drain(silent)
            with pytest.raises(RequestTimeout, match="retransmissions"):
                await client.request(req(Code.GET, "x"), addr)
            assert len(drain(silent)) == 1 + FAST.max_retransmit
            with pytest.raises(RequestTimeout):
                await client.ping(addr)
            with pytest.raises(RequestTimeout):
                await client.request(req(Code.GET, "x"), addr, confirmable=False, timeout=0.2)
        finally:
            await client.close()
            silent.close()

    run(main())


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(2048))
        except BlockingIOError:
            return out


@pytest.mark.parametrize("host", HOSTS)
def test_well_known_core(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, site: Site, *_: Any) -> None:
        r = await client.request(req(Code.GET, ".well-known", "core"), server.address)
        assert r.code == Code.CONTENT and r.options.content_format == 40
        links = r.payload.decode().split(",")
        assert '</store>;rt="store";if="core.rp";ct=0;title="Value store"' in links
        assert "</secret>;obs;osc;gosc" in links
        assert "</slow>" in links
        assert not any(".well-known" in link for link in links)
        q = req(Code.GET, ".well-known", "core")
        q.options.uri_query = ["rt=sto*"]
        r = await client.request(q, server.address)
        assert r.payload == b'</store>;rt="store";if="core.rp";ct=0;title="Value store"'

    with_pair(host, body)


def test_link_format_filters_and_escaping() -> None:
    site = Site()
    site.add(("a b", "c"), Resource(rt=["x", "y"], ct=[0, 60]))
    site.add("obs", Resource(observable=True, title='say "hi"'))
    assert link_format(site) == ('</a%20b/c>;rt="x y";ct="0 60",</obs>;title="say \\"hi\\"";obs')
    assert link_format(site, ["rt=y"]) == '</a%20b/c>;rt="x y";ct="0 60"'
    assert link_format(site, ["obs"]) == '</obs>;title="say \\"hi\\"";obs'
    assert link_format(site, ["href=/obs"]) == '</obs>;title="say \\"hi\\"";obs'
    assert link_format(site, ["rt=z"]) == ""
    with pytest.raises(TypeError):
        Resource(colour="red")


@pytest.mark.parametrize("host", HOSTS)
def test_secured_resource_refuses_plain_requests(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, *_: Any) -> None:
        r = await client.request(req(Code.GET, "secret"), server.address)
        assert r.code == Code.UNAUTHORIZED
        # An OSCORE-protected request to a server without security: 4.02 Bad Option.
        m = req(Code.POST)
        m.options.oscore = b"\x09\x00"
        r = await client.request(m, server.address)
        assert r.code == Code.BAD_OPTION

    with_pair(host, body)


@pytest.mark.parametrize("host", HOSTS)
def test_unknown_critical_option_is_bad_option(host: str) -> None:
    async def body(server: Endpoint, client: Endpoint, *_: Any) -> None:
        m = req(Code.GET, "store")
        m.options.add(65001, b"?")  # odd: critical, unregistered
        r = await client.request(m, server.address)
        assert r.code == Code.BAD_OPTION
        m = req(Code.GET, "store")
        m.options.add(65000, b"?")  # even: elective, ignored
        r = await client.request(m, server.address)
        assert r.code == Code.CONTENT

    with_pair(host, body)


def test_dual_stack_endpoint_serves_both_families() -> None:
    if not have_ipv6():
        pytest.skip("no IPv6 loopback")

    async def main() -> None:
        site, _store, _ = make_site()
        server = await Endpoint.create(("::", 0), site=site, params=FAST)
        c4 = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        c6 = await Endpoint.create(("::1", 0), params=FAST)
        try:
            port = server.address[1]
            r4 = await c4.request_uri(f"coap://127.0.0.1:{port}/store")
            r6 = await c6.request_uri(f"coap://[::1]:{port}/store")
            assert r4.payload == r6.payload == b"initial"
            assert r4.remote == ("127.0.0.1", port) and r6.remote == ("::1", port)
            # The dual-stack endpoint as a client, to an IPv4 server.
            srv4 = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST)
            try:
                r = await server.request(req(Code.GET, "store"), srv4.address)
                assert r.code == Code.CONTENT and r.remote == srv4.address
            finally:
                await srv4.close()
        finally:
            await c4.close()
            await c6.close()
            await server.close()

    run(main())


def test_request_uri_and_uri_host_option() -> None:
    async def main() -> None:
        site, store, _ = make_site()
        server = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST)
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            port = server.address[1]
            r = await client.request_uri(f"coap://localhost:{port}/store", Code.PUT, b"v")
            assert r.code == Code.CHANGED and store.value == b"v"
            m = req(Code.GET, "store")
            m.options.uri_host = "127.0.0.1"
            m.options.uri_port = port
            r = await client.request(m)  # destination from Uri-Host / Uri-Port
            assert r.payload == b"v"
            with pytest.raises(ValueError):
                await client.request(req(Code.GET, "store"))
        finally:
            await client.close()
            await server.close()

    run(main())


def test_handler_exception_gives_500() -> None:
    class Broken(Resource):
        async def render_get(self, request: Message) -> Message:
            raise RuntimeError("boom")

    async def main() -> None:
        site = Site()
        site.add("broken", Broken())
        server = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST)
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            r = await client.request(req(Code.GET, "broken"), server.address)
            assert r.code == Code.INTERNAL_SERVER_ERROR
        finally:
            await client.close()
            await server.close()

    run(main())


def test_close_fails_pending_requests() -> None:
    async def main() -> None:
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            task = asyncio.create_task(client.request(req(Code.GET, "x"), silent.getsockname()))
            await asyncio.sleep(0.05)
            await client.close()
            with pytest.raises(EndpointClosed):
                await task
            with pytest.raises(EndpointClosed):
                await client.request(req(Code.GET, "x"), silent.getsockname())
        finally:
            silent.close()

    run(main())
