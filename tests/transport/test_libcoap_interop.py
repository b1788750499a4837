"""Plain-CoAP interop with libcoap (Debian's libcoap3-bin) on 127.0.0.1, both directions.

CI runs as root and installs the package (see .ci/run), so these tests only skip for a
non-root developer without the binaries; as root a missing binary is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from grouposcore.coap import Code, Message
from grouposcore.transport import Endpoint, Resource, Site, TransmissionParams

CLIENT = shutil.which("coap-client-notls")
SERVER = shutil.which("coap-server-notls")

if (CLIENT is None or SERVER is None) and os.geteuid() != 0:
    pytest.skip(
        "libcoap3-bin (coap-client-notls, coap-server-notls) not installed and not root",
        allow_module_level=True,
    )

BODY = bytes((i * 7 + 3) % 251 for i in range(10 * 1024))
PARAMS = TransmissionParams(ack_timeout=0.5, max_retransmit=3)


def binary(path: str | None, name: str) -> str:
    if path is None:
        raise AssertionError(f"{name} missing: install libcoap3-bin (.ci/run does as root)")
    return path


def run(coro: Any) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(guarded())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def libcoap_server() -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        binary(SERVER, "coap-server-notls"),
        "-A",
        "127.0.0.1",
        "-p",
        str(port),
        "-d",
        "10",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = await Endpoint.create(("127.0.0.1", 0), params=PARAMS)
        try:
            for _ in range(50):
                with contextlib.suppress(Exception):
                    await probe.ping(("127.0.0.1", port), timeout=0.2)
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("coap-server-notls did not come up")
        finally:
            await probe.close()
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        await proc.wait()


def path_msg(code: int, path: str, payload: bytes = b"") -> Message:
    m = Message(code, payload=payload)
    m.options.uri_path = [s for s in path.split("/") if s]
    return m


# --- grouposcore client → libcoap server ------------------------------------------------


def test_client_get_put_and_discovery() -> None:
    async def main() -> None:
        async with libcoap_server() as addr:
            ep = await Endpoint.create(("127.0.0.1", 0), params=PARAMS)
            try:
                r = await ep.request(path_msg(Code.GET, "time"), addr, timeout=10)
                assert r.code == Code.CONTENT and r.payload
                r = await ep.request(path_msg(Code.PUT, "greeting", b"hello"), addr, timeout=10)
                assert r.code in (Code.CREATED, Code.CHANGED)
                r = await ep.request(path_msg(Code.GET, "greeting"), addr, timeout=10)
                assert r.payload == b"hello"
                r = await ep.request(path_msg(Code.GET, ".well-known/core"), addr, timeout=10)
                assert r.options.content_format == 40 and b"</time>" in r.payload
                r = await ep.request(path_msg(Code.GET, "no/such/thing"), addr, timeout=10)
                assert r.code == Code.NOT_FOUND
            finally:
                await ep.close()

    run(main())


def test_client_blockwise_10k_both_directions() -> None:
    async def main() -> None:
        async with libcoap_server() as addr:
            ep = await Endpoint.create(("127.0.0.1", 0), params=PARAMS)
            try:
                r = await ep.request(path_msg(Code.PUT, "example_data", BODY), addr, timeout=20)
                assert r.code in (Code.CHANGED, Code.CREATED), r
                r = await ep.request(path_msg(Code.GET, "example_data"), addr, timeout=20)
                assert r.code == Code.CONTENT and r.payload == BODY
            finally:
                await ep.close()

    run(main())


def test_client_observe_three_notifications() -> None:
    async def main() -> None:
        async with libcoap_server() as addr:
            ep = await Endpoint.create(("127.0.0.1", 0), params=PARAMS)
            try:
                obs = ep.observe(path_msg(Code.GET, "time"), addr, timeout=10)
                first = await obs.__anext__()
                assert first.code == Code.CONTENT and first.options.observe is not None
                numbers = []
                for _ in range(3):  # libcoap's clock resource changes every second
                    n = await asyncio.wait_for(obs.__anext__(), 5)
                    assert n.code == Code.CONTENT and n.payload
                    numbers.append(n.options.observe)
                assert len(set(numbers)) == 3
                await obs.cancel(timeout=5)
            finally:
                await ep.close()

    run(main())


# --- libcoap client → grouposcore server ------------------------------------------------


class Store(Resource):
    rt = "store"
    observable = True

    def __init__(self, value: bytes = b"stored") -> None:
        super().__init__()
        self.value = value

    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=self.value)

    async def render_put(self, request: Message) -> Message:
        self.value = request.payload
        return Message(Code.CHANGED)


async def coap_client(*args: str, timeout: float = 20) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        binary(CLIENT, "coap-client-notls"),
        "-B",
        str(int(timeout)),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout + 5)
    assert proc.returncode == 0, f"coap-client {args}: rc={proc.returncode} {err.decode()}"
    # coap-client ends what it prints to a terminal-like stdout with one newline.
    return out[:-1] if out.endswith(b"\n") else out


async def our_server() -> tuple[Endpoint, Site]:
    site = Site()
    site.add("store", Store())
    site.add("big", Store(BODY))
    server = await Endpoint.create(("127.0.0.1", 0), site=site, params=PARAMS)
    return server, site


def test_libcoap_client_get_put_discovery() -> None:
    async def main() -> None:
        server, site = await our_server()
        base = f"coap://127.0.0.1:{server.address[1]}"
        try:
            assert await coap_client("-m", "get", f"{base}/store") == b"stored"
            await coap_client("-m", "put", "-e", "changed", f"{base}/store")
            store = site.lookup(["store"])
            assert isinstance(store, Store) and store.value == b"changed"
            links = await coap_client("-m", "get", f"{base}/.well-known/core")
            assert b'</store>;rt="store";obs' in links
        finally:
            await server.close()

    run(main())


def test_libcoap_client_blockwise_10k_both_directions() -> None:
    async def main() -> None:
        server, site = await our_server()
        base = f"coap://127.0.0.1:{server.address[1]}"
        with tempfile.TemporaryDirectory() as d:
            src, dst = Path(d) / "in.bin", Path(d) / "out.bin"
            src.write_bytes(BODY[::-1])
            try:
                await coap_client("-m", "put", "-b", "512", "-f", str(src), f"{base}/store")
                store = site.lookup(["store"])
                assert isinstance(store, Store) and store.value == BODY[::-1]
                await coap_client("-m", "get", "-o", str(dst), f"{base}/big")
                assert dst.read_bytes() == BODY
            finally:
                await server.close()

    run(main())


def test_libcoap_client_observes_three_notifications() -> None:
    async def main() -> None:
        server, site = await our_server()
        store = site.lookup(["store"])
        assert isinstance(store, Store)
        store.value = b"v0;"
        base = f"coap://127.0.0.1:{server.address[1]}"
        try:
            client = asyncio.create_task(coap_client("-s", "3", f"{base}/store", timeout=10))
            for _ in range(100):
                if store.observers:
                    break
                await asyncio.sleep(0.05)
            assert store.observers, "coap-client did not register"
            for i in range(1, 4):
                await asyncio.sleep(0.3)
                store.value = f"v{i};".encode()
                store.notify()
            out = await client
            assert out == b"v0;v1;v2;v3;"
        finally:
            await server.close()

    run(main())
