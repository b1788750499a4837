"""Retransmission and deduplication through a lossy, duplicating UDP relay on loopback.

Whatever the relay does, every request must reach its handler exactly once and every
response must reach the client.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from grouposcore.coap import Code, Message
from grouposcore.transport import Endpoint, Resource, Site, TransmissionParams

PARAMS = TransmissionParams(ack_timeout=0.05, max_retransmit=8, empty_ack_delay=0.02)


def run(coro: Any) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 60)

    return asyncio.run(guarded())


class Relay(asyncio.DatagramProtocol):
    """Forwards client↔server datagrams, dropping and duplicating them as told.

    ``drop_to_server`` / ``drop_to_client`` list the indexes (0-based, per direction) of
    datagrams to drop; ``loss`` and ``dup`` are probabilities drawn from a seeded RNG.
    """

    def __init__(
        self,
        server: tuple[str, int],
        *,
        seed: int = 0,
        loss: float = 0.0,
        dup: float = 0.0,
        drop_to_server: tuple[int, ...] = (),
        drop_to_client: tuple[int, ...] = (),
    ) -> None:
        self.server = server
        self.client: tuple[str, int] | None = None
        self.rng = random.Random(seed)
        self.loss, self.dup = loss, dup
        self.drops = {True: set(drop_to_server), False: set(drop_to_client)}
        self.seen = {True: 0, False: 0}
        self.dropped = 0
        self.duplicated = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        to_server = addr != self.server
        if to_server:
            self.client = addr
        dest = self.server if to_server else self.client
        index = self.seen[to_server]
        self.seen[to_server] += 1
        if dest is None or self.transport is None:
            return
        if index in self.drops[to_server] or self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.transport.sendto(data, dest)
        if self.rng.random() < self.dup:
            self.duplicated += 1
            self.transport.sendto(data, dest)


class Counter(Resource):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.runs = 0
        self.delay = delay

    async def render_post(self, request: Message) -> Message:
        self.runs += 1
        n = self.runs
        if self.delay:
            await asyncio.sleep(self.delay)
        return Message(Code.CHANGED, payload=str(n).encode())


async def setup(**relay_kw: Any) -> tuple[Endpoint, Endpoint, Relay, Any, Counter, Counter]:
    site = Site()
    fast = site.add("fast", Counter())
    slow = site.add("slow", Counter(delay=0.06))  # slower than empty_ack_delay
    server = await Endpoint.create(("127.0.0.1", 0), site=site, params=PARAMS)
    loop = asyncio.get_running_loop()
    transport, relay = await loop.create_datagram_endpoint(
        lambda: Relay(server.address, **relay_kw), local_addr=("127.0.0.1", 0)
    )
    client = await Endpoint.create(("127.0.0.1", 0), params=PARAMS)
    return server, client, relay, transport, fast, slow  # type: ignore[return-value]


def post(path: str) -> Message:
    m = Message(Code.POST)
    m.options.uri_path = [path]
    return m


@pytest.mark.parametrize(
    ("path", "drops"),
    [
        ("fast", {"drop_to_server": (0,)}),  # the request is lost once
        ("fast", {"drop_to_client": (0,)}),  # the piggybacked response is lost once
        ("fast", {"drop_to_server": (0, 1, 2), "drop_to_client": (0, 1)}),
        ("slow", {"drop_to_client": (0, 1)}),  # empty ACK and the CON response lost
        ("slow", {"drop_to_server": (1,)}),  # the client's ACK of the response lost
    ],
)
def test_deterministic_losses(path: str, drops: dict[str, tuple[int, ...]]) -> None:
    async def main() -> None:
        server, client, relay, transport, fast, slow = await setup(**drops)
        try:
            relay_addr = transport.get_extra_info("sockname")[:2]
            r = await client.request(post(path), relay_addr)
            assert r.code == Code.CHANGED and r.payload == b"1"
            for _ in range(400):  # until every retransmission of the response was ACKed
                if server.message_layer.pending_confirmables() == 0 and relay.dropped == sum(
                    len(v) for v in drops.values()
                ):
                    break
                await asyncio.sleep(0.025)
            assert (fast.runs, slow.runs) == ((1, 0) if path == "fast" else (0, 1))
            assert relay.dropped == sum(len(v) for v in drops.values())
            assert server.message_layer.pending_confirmables() == 0
        finally:
            transport.close()
            await client.close()
            await server.close()

    run(main())


def test_every_datagram_duplicated() -> None:
    async def main() -> None:
        server, client, relay, transport, fast, slow = await setup(dup=1.0)
        try:
            relay_addr = transport.get_extra_info("sockname")[:2]
            for i in range(1, 4):
                r = await client.request(post("fast"), relay_addr)
                assert r.payload == str(i).encode()
            r = await client.request(post("slow"), relay_addr)
            assert r.payload == b"1"
            assert (fast.runs, slow.runs) == (3, 1)
            assert relay.duplicated >= 8
        finally:
            transport.close()
            await client.close()
            await server.close()

    run(main())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_loss_and_duplication(seed: int) -> None:
    async def main() -> None:
        server, client, relay, transport, fast, slow = await setup(seed=seed, loss=0.2, dup=0.2)
        try:
            relay_addr = transport.get_extra_info("sockname")[:2]
            answers = []
            for i in range(12):
                path = "slow" if i % 3 == 2 else "fast"
                r = await client.request(post(path), relay_addr)
                answers.append((path, int(r.payload)))
            assert [n for p, n in answers if p == "fast"] == list(range(1, 9))
            assert [n for p, n in answers if p == "slow"] == list(range(1, 5))
            assert (fast.runs, slow.runs) == (8, 4)
            assert relay.dropped > 0 and relay.duplicated > 0
        finally:
            transport.close()
            await client.close()
            await server.close()

    run(main())
