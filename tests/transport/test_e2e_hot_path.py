"""What the end-to-end hot path (issue 14, target 2) must keep while doing less per request:
the OSCORE option decoded once, one copy per response, the option check's fast pass equal
to the full check, and responses due now sent in the next loop turn without a timer."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import BlockOption, Code, Message, Options, Type
from grouposcore.errors import OscoreDecodeError
from grouposcore.oscore import option as option_module
from grouposcore.oscore.security import ServerSecurity
from grouposcore.transport import Endpoint, Resource, Site
from grouposcore.transport import server as server_module
from grouposcore.transport.blockwise import BlockwiseLimits
from grouposcore.transport.messagelayer import MessageLayer, ServerExchange, Transmit
from grouposcore.transport.params import TransmissionParams
from grouposcore.transport.serverflow import Render, ServerFlow
from grouposcore.transport.sockets import Datagram
from tests.oscore.helpers import Member, get

A, B = Member(b"\x0a", "a"), Member(b"\x0b", "b")


def test_server_security_decodes_the_oscore_option_once(monkeypatch: pytest.MonkeyPatch) -> None:
    client, server = A.context([B]), B.context([A])
    request, _ = client.protect_request(get())
    calls = []
    real = option_module.decode_option

    def counting(value: bytes) -> Any:
        calls.append(value)
        return real(value)

    monkeypatch.setattr("grouposcore.oscore.security.decode_option", counting)
    monkeypatch.setattr("grouposcore.oscore.common.decode_option", counting)
    plain, _ = ServerSecurity([server]).unprotect_request(request)  # type: ignore[misc]
    assert plain.options.uri_path == ["light"] and len(calls) == 1


def test_group_context_given_a_decoded_option_still_refuses_an_empty_payload() -> None:
    client, server = A.context([B]), B.context([A])
    request, _ = client.protect_request(get())
    value = request.options.oscore
    assert value is not None
    empty = request.copy(payload=b"")
    with pytest.raises(OscoreDecodeError, match="without payload"):
        server.unprotect_request(empty, option=(value, option_module.decode_option(value)))


def test_non_response_is_copied_once_and_the_original_is_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ml = MessageLayer(rng=random.Random(1))
    request = Message(Code.GET, Type.NON, 7, b"\x01")
    ex = ServerExchange(request, ("127.0.0.1", 5683), False)
    ml.receive(request.encode(), ("127.0.0.1", 5683), 0.0)
    response = Message(Code.CONTENT, Type.CON, 0, b"", Options(), b"x")
    copies = []
    real = Message.copy

    def counting(self: Message, **changes: Any) -> Message:
        copies.append(self)
        return real(self, **changes)

    monkeypatch.setattr(Message, "copy", counting)
    outs = ml.respond(ex, response, 0.0)
    assert len(copies) == 1
    assert response.mtype == Type.CON and response.token == b"" and response.mid == 0
    tx = outs[0]
    assert isinstance(tx, Transmit)
    sent = Message.decode(tx.data)
    assert sent.mtype == Type.NON and sent.token == b"\x01" and sent.payload == b"x"
    assert tx.message.mid == sent.mid and tx.message.remote == ("127.0.0.1", 5683)


_NUMBERS = st.sampled_from(
    [
        1,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        11,
        12,
        14,
        15,
        17,
        20,
        23,
        27,
        28,
        35,
        39,
        60,
        65,
        252,
        258,
        292,
        2049,
        2053,
    ]
)
_VALUES = st.one_of(st.binary(max_size=6), st.sampled_from([b"\xff", b"\xc3\x28", b"a" * 260]))


@settings(deadline=None, max_examples=300)
@given(st.lists(st.tuples(_NUMBERS, _VALUES), max_size=6))
def test_option_check_fast_pass_agrees_with_the_full_check(
    items: list[tuple[int, bytes]],
) -> None:
    items = sorted(items, key=lambda item: item[0])
    fast = Message(Code.GET, options=Options._from_sorted(list(items)))
    slow = Message(Code.GET, options=Options._from_sorted(list(items)))
    original = server_module._well_formed
    try:
        server_module._well_formed = lambda _items: False  # type: ignore[assignment]
        expected = server_module.bad_option_response(slow)
    finally:
        server_module._well_formed = original  # type: ignore[assignment]
    got = server_module.bad_option_response(fast)
    assert (got is None) == (expected is None)
    if got is not None and expected is not None:
        assert (got.code, got.payload) == (expected.code, expected.payload)
    assert fast.options == slow.options


class _Hello(Resource):
    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=b"hello")


def test_multicast_answer_decided_while_reading_waits_for_the_next_turn_not_a_timer() -> None:
    async def main() -> None:
        ep = await Endpoint.create(("127.0.0.1", 0), site=Site(), leisure=0.0)
        loop = asyncio.get_running_loop()
        timers: list[Any] = []
        real_call_at = loop.call_at

        def call_at(when: float, callback: Any, *args: Any) -> Any:
            if getattr(callback, "__func__", None) is Endpoint._on_leisure:
                timers.append(when)
            return real_call_at(when, callback, *args)

        loop.call_at = call_at  # type: ignore[method-assign]
        try:
            msg = Message(Code.GET, Type.NON, 1, b"\x01")
            msg.options.no_response = 0  # the 4.04 of an unknown path is not suppressed
            ep._on_request(ServerExchange(msg, ("127.0.0.1", 9), True))
            assert len(ep._leisure) == 1 and ep._leisure_timer is not None
            await asyncio.sleep(0)
            assert len(ep._leisure) == 0 and ep._leisure_timer is None
            assert timers == []
        finally:
            del loop.call_at
            await ep.close()

    asyncio.run(main())


def test_a_wakeup_reads_one_multicast_datagram_and_every_unicast_one() -> None:
    async def main() -> None:
        ep = await Endpoint.create(("127.0.0.1", 0), site=Site())
        real = ep._sock
        queue: list[Datagram] = []
        reads = []

        class Fake:
            def receive(self) -> Datagram | None:
                reads.append(1)
                return queue.pop(0) if queue else None

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        ping = Message(Code.EMPTY, Type.NON, 1).encode()  # ignored by the message layer
        ep._sock = Fake()  # type: ignore[assignment]
        try:
            queue[:] = [Datagram(ping, ("127.0.0.1", 9), "224.0.1.187", True)] * 2
            ep._on_readable()
            assert len(reads) == 1 and len(queue) == 1  # the second waits for the next call
            queue[:] = [Datagram(ping, ("127.0.0.1", 9), "127.0.0.1", False)] * 2
            reads.clear()
            ep._on_readable()
            assert len(reads) == 3 and not queue  # unicast: read until the socket is empty
        finally:
            ep._sock = real
            await ep.close()

    asyncio.run(main())


def _flow() -> ServerFlow:
    site = Site()
    site.add("hello", _Hello())
    return ServerFlow(
        site=site,
        security=None,
        limits=BlockwiseLimits(szx=6),
        leisure=0.0,
        rng=random.Random(1),
        notify=lambda r, o: None,
    )


def test_plain_request_skips_the_blockwise_cache_and_a_block2_request_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    f = _flow()
    looked: list[Message] = []
    real = f._block2.cached
    monkeypatch.setattr(f._block2, "cached", lambda m, o, n: looked.append(m) or real(m, o, n))
    plain = Message(Code.GET, Type.CON, 1, b"\x01")
    plain.options.uri_path = ["hello"]
    step = f.receive(ServerExchange(plain, ("127.0.0.1", 9), False), 0.0)
    assert isinstance(step, Render) and step.request is plain and step.observe is None
    assert looked == []
    later = Message(Code.GET, Type.CON, 2, b"\x02")
    later.options.uri_path = ["hello"]
    later.options.block2 = BlockOption(0, False, 2)
    later.options.observe = 0
    step = f.receive(ServerExchange(later, ("127.0.0.1", 9), False), 0.0)
    assert looked == [later]
    assert isinstance(step, Render) and step.observe == 0
    assert step.request.options.block2 is None and step.whole.options.block2 is not None


def test_message_lifetimes_follow_the_transmission_parameters() -> None:
    base = TransmissionParams()
    slow = dataclasses.replace(base, max_latency=base.max_latency + 10)
    assert base.non_lifetime == base.max_transmit_span + base.max_latency
    assert slow.non_lifetime == base.non_lifetime + 10
    assert slow.exchange_lifetime == base.exchange_lifetime + 20
