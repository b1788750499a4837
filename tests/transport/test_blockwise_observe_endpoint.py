"""Block-wise transfers and Observe between two endpoints on loopback."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from grouposcore.coap import BlockOption, Code, Message
from grouposcore.errors import ResponseTooLarge
from grouposcore.transport import (
    BlockwiseLimits,
    Endpoint,
    NotificationPolicy,
    Resource,
    Site,
    TransmissionParams,
)

FAST = TransmissionParams(ack_timeout=0.1, max_retransmit=3, empty_ack_delay=0.05)
BODY = os.urandom(10 * 1024)


def run(coro: Any) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(guarded())


class Blob(Resource):
    observable = True

    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.puts = 0
        self.gets = 0

    async def render_get(self, request: Message) -> Message:
        self.gets += 1
        return Message(Code.CONTENT, payload=self.data)

    async def render_put(self, request: Message) -> Message:
        self.puts += 1
        self.data = request.payload
        return Message(Code.CHANGED)

    async def render_post(self, request: Message) -> Message:
        # Echoes the body back: a large request and a large response in one exchange.
        return Message(Code.CONTENT, payload=request.payload[::-1])


async def pair(
    limits: BlockwiseLimits | None = None, client_limits: BlockwiseLimits | None = None
) -> tuple[Endpoint, Endpoint, Blob]:
    site = Site()
    blob = site.add("blob", Blob())
    server = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST, blockwise=limits)
    client = await Endpoint.create(("127.0.0.1", 0), params=FAST, blockwise=client_limits)
    return server, client, blob  # type: ignore[return-value]


def msg(code: int, payload: bytes = b"") -> Message:
    m = Message(code, payload=payload)
    m.options.uri_path = ["blob"]
    return m


def test_10k_both_directions_and_combined() -> None:
    async def main() -> None:
        server, client, blob = await pair()
        try:
            r = await client.request(msg(Code.PUT, BODY), server.address)
            assert r.code == Code.CHANGED and blob.data == BODY and blob.puts == 1
            r = await client.request(msg(Code.GET), server.address)
            assert r.code == Code.CONTENT and r.payload == BODY
            assert r.options.block2 is None
            assert blob.gets == 1  # later blocks come from the server's copy
            r = await client.request(msg(Code.POST, BODY), server.address)
            assert r.payload == BODY[::-1]
        finally:
            await client.close()
            await server.close()

    run(main())


def test_small_blocks_negotiated_by_server() -> None:
    async def main() -> None:
        server, client, blob = await pair(limits=BlockwiseLimits(szx=2))
        try:
            r = await client.request(msg(Code.PUT, BODY[:3000]), server.address)
            assert r.code == Code.CHANGED and blob.data == BODY[:3000]
            r = await client.request(msg(Code.GET), server.address)
            assert r.payload == BODY[:3000]
        finally:
            await client.close()
            await server.close()

    run(main())


def test_early_block2_negotiation_by_client() -> None:
    async def main() -> None:
        server, client, blob = await pair()
        try:
            blob.data = BODY[:1000]
            m = msg(Code.GET)
            m.options.block2 = BlockOption(0, False, 1)  # 32-byte blocks, please
            r = await client.request(m, server.address)
            assert r.payload == BODY[:1000]
        finally:
            await client.close()
            await server.close()

    run(main())


def test_request_too_large_413_and_response_too_large() -> None:
    async def main() -> None:
        server, client, blob = await pair(
            limits=BlockwiseLimits(max_body=4096), client_limits=BlockwiseLimits(max_body=2048)
        )
        try:
            r = await client.request(msg(Code.PUT, BODY), server.address)
            assert r.code == Code.REQUEST_ENTITY_TOO_LARGE
            assert r.options.size1 == 4096
            assert blob.puts == 0
            blob.data = BODY[:3000]
            try:
                await client.request(msg(Code.GET), server.address)
            except ResponseTooLarge:
                pass
            else:
                raise AssertionError("a 3000-byte body passed a 2048-byte limit")
        finally:
            await client.close()
            await server.close()

    run(main())


def test_concurrent_uploads_to_one_resource_get_request_tags() -> None:
    class Sink(Resource):
        def __init__(self) -> None:
            super().__init__()
            self.bodies: list[bytes] = []

        async def render_post(self, request: Message) -> Message:
            self.bodies.append(request.payload)
            return Message(Code.CHANGED)

    async def main() -> None:
        site = Site()
        sink = site.add("sink", Sink())
        server = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST)
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            bodies = [bytes([i]) * 5000 for i in range(3)]

            def post(b: bytes) -> Message:
                m = Message(Code.POST, payload=b)
                m.options.uri_path = ["sink"]
                return m

            rs = await asyncio.gather(*(client.request(post(b), server.address) for b in bodies))
            assert all(r.code == Code.CHANGED for r in rs)
            assert sorted(sink.bodies) == sorted(bodies)  # never mixed
        finally:
            await client.close()
            await server.close()

    run(main())


def test_observe_three_notifications_and_cancel() -> None:
    async def main() -> None:
        server, client, blob = await pair()
        try:
            blob.data = b"n0"
            obs = client.observe(msg(Code.GET), server.address)
            first = await obs.__anext__()
            assert first.payload == b"n0" and first.options.observe is not None
            values = [first.options.observe]
            for i in range(1, 4):
                blob.data = f"n{i}".encode()
                blob.notify()
                n = await obs.__anext__()
                assert n.payload == blob.data
                values.append(n.options.observe)
            assert values == sorted(values) and len(set(values)) == 4
            assert len(blob.observers) == 1
            await obs.cancel()
            assert blob.observers == []
            blob.notify()  # nobody left to notify
            assert [x async for x in obs] == []
        finally:
            await client.close()
            await server.close()

    run(main())


def test_observe_large_notification_fetched_blockwise() -> None:
    async def main() -> None:
        server, client, blob = await pair()
        try:
            blob.data = b"small"
            obs = client.observe(msg(Code.GET), server.address)
            assert (await obs.__anext__()).payload == b"small"
            blob.data = BODY[:5000]
            blob.notify()
            n = await obs.__anext__()
            assert n.payload == BODY[:5000] and n.options.observe is not None
            await obs.cancel()
        finally:
            await client.close()
            await server.close()

    run(main())


def test_observer_that_forgets_is_removed_by_rst() -> None:
    async def main() -> None:
        server, client, blob = await pair()
        try:
            blob.notification_policy = NotificationPolicy(confirmable=True)
            obs = client.observe(msg(Code.GET), server.address)
            await obs.__anext__()
            # The client forgets the token without telling the server.
            obs._end()
            blob.notify()  # CON notification → the client answers RST
            for _ in range(500):
                if not blob.observers:
                    break
                await asyncio.sleep(0.02)
            assert blob.observers == []
        finally:
            await client.close()
            await server.close()

    run(main())


def test_error_notification_ends_observation() -> None:
    class Flaky(Resource):
        observable = True
        broken = False

        async def render_get(self, request: Message) -> Message:
            if self.broken:
                return Message(Code.NOT_FOUND)
            return Message(Code.CONTENT, payload=b"ok")

    async def main() -> None:
        site = Site()
        flaky = site.add("f", Flaky())
        server = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST)
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            m = Message(Code.GET)
            m.options.uri_path = ["f"]
            obs = client.observe(m, server.address)
            items = [await obs.__anext__()]
            flaky.broken = True
            flaky.notify()
            items += [x async for x in obs]
            assert [i.code for i in items] == [Code.CONTENT, Code.NOT_FOUND]
            assert items[1].options.observe is None
            assert flaky.observers == []
        finally:
            await client.close()
            await server.close()

    run(main())


def test_non_observable_resource_answers_once() -> None:
    class Plain(Resource):
        async def render_get(self, request: Message) -> Message:
            return Message(Code.CONTENT, payload=b"p")

    async def main() -> None:
        site = Site()
        site.add("p", Plain())
        server = await Endpoint.create(("127.0.0.1", 0), site=site, params=FAST)
        client = await Endpoint.create(("127.0.0.1", 0), params=FAST)
        try:
            m = Message(Code.GET)
            m.options.uri_path = ["p"]
            items = [x async for x in client.observe(m, server.address)]
            assert [(i.payload, i.options.observe) for i in items] == [(b"p", None)]
        finally:
            await client.close()
            await server.close()

    run(main())
