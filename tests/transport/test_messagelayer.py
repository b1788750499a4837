"""Sans-I/O tests of the message layer: timings on a fake clock, dedup, ACK/RST, matching."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.transport.messagelayer import (
    DeliveryConfirmed,
    MessageLayer,
    Rejected,
    RequestReceived,
    ResponseReceived,
    TransmissionFailed,
    Transmit,
)
from grouposcore.transport.params import TransmissionParams

A = ("192.0.2.1", 5683)
B = ("192.0.2.2", 5683)


def layer(seed: int = 1, **kw: float) -> MessageLayer:
    return MessageLayer(TransmissionParams(**kw), rng=random.Random(seed))


def sends(out: list) -> list[Transmit]:
    return [o for o in out if isinstance(o, Transmit)]


def events(out: list, kind: type) -> list:
    return [o for o in out if isinstance(o, kind)]


def get(token: bytes = b"\x01\x02", mtype: Type = Type.CON, mid: int = 7) -> Message:
    opts = Options()
    opts.uri_path = ["x"]
    return Message(Code.GET, mtype, mid, token, opts)


def run_until(ml: MessageLayer, end: float) -> list[tuple[float, object]]:
    """Tick through every deadline up to ``end``; returns (time, output) pairs."""
    seen = []
    while (d := ml.next_deadline()) is not None and d <= end:
        seen.extend((d, o) for o in ml.tick(d))
    return seen


def test_con_retransmission_schedule_doubles_and_gives_up() -> None:
    ml = layer(ack_timeout=2.0, ack_random_factor=1.5, max_retransmit=4)
    ml.expect(b"\x01\x02", A)
    [tx] = ml.send(get(), A, now=100.0)
    timeline = run_until(ml, 1000.0)
    retrans = [t for t, o in timeline if isinstance(o, Transmit)]
    failed = [(t, o) for t, o in timeline if isinstance(o, TransmissionFailed)]
    assert len(retrans) == 4
    first = retrans[0] - 100.0
    assert 2.0 <= first <= 3.0
    gaps = [b - a for a, b in zip([100.0, *retrans], retrans, strict=False)]
    assert gaps == pytest.approx([first, 2 * first, 4 * first, 8 * first])
    assert len(failed) == 1
    t_fail, ev = failed[0]
    assert t_fail - 100.0 == pytest.approx(31 * first)  # 1+2+4+8+16 initial timeouts
    assert t_fail - 100.0 <= ml.params.max_transmit_wait + 1e-9
    assert ev.token == b"\x01\x02" and ev.mid == tx.message.mid
    assert all(o.data == tx.data for _, o in timeline if isinstance(o, Transmit))
    assert ml.next_deadline() is None or ml.pending_confirmables() == 0


@pytest.mark.parametrize("max_retransmit", [0, 1, 7])
def test_max_retransmit_configurable(max_retransmit: int) -> None:
    ml = layer(max_retransmit=max_retransmit, ack_timeout=0.5)
    ml.send(get(), A, now=0.0)
    timeline = run_until(ml, 10_000.0)
    assert len([o for _, o in timeline if isinstance(o, Transmit)]) == max_retransmit
    assert len([o for _, o in timeline if isinstance(o, TransmissionFailed)]) == 1


def test_empty_ack_stops_retransmission_separate_response_is_acked() -> None:
    ml = layer()
    token = b"\xaa" * 8
    ml.expect(token, A)
    [tx] = ml.send(get(token), A, now=0.0)
    mid = tx.message.mid
    out = ml.receive(Message(Code.EMPTY, Type.ACK, mid).encode(), A, now=0.5)
    assert events(out, DeliveryConfirmed) == [DeliveryConfirmed(A, mid, token)]
    assert ml.pending_confirmables() == 0
    assert [o for _, o in run_until(ml, 50.0) if isinstance(o, Transmit)] == []
    # The separate response arrives as CON: we ACK it with its own MID and report it once.
    resp = Message(Code.CONTENT, Type.CON, 4242, token, payload=b"late")
    out = ml.receive(resp.encode(), A, now=3.0)
    [ack] = sends(out)
    assert ack.message.mtype == Type.ACK and ack.message.mid == 4242
    assert ack.message.code == Code.EMPTY
    [r] = events(out, ResponseReceived)
    assert r.message.payload == b"late" and r.remote == A
    # A retransmitted copy of the separate response gets the same ACK, no second event.
    out2 = ml.receive(resp.encode(), A, now=4.0)
    assert sends(out2)[0].data == ack.data and events(out2, ResponseReceived) == []


def test_piggybacked_response_matched_by_mid_and_token() -> None:
    ml = layer()
    token = b"\x05"
    ml.expect(token, A)
    [tx] = ml.send(get(token), A, now=0.0)
    ack = Message(Code.CONTENT, Type.ACK, tx.message.mid, token, payload=b"hi")
    out = ml.receive(ack.encode(), A, now=0.1)
    assert [type(o) for o in out] == [DeliveryConfirmed, ResponseReceived]
    # Same ACK again: the exchange is over, nothing happens.
    assert ml.receive(ack.encode(), A, now=0.2) == []


def test_another_piggybacked_response_for_an_answered_con_is_still_delivered() -> None:
    """The first ACK carrying our MID may have been forged: while the token is awaited, a
    *different* response in a later ACK for that MID reaches the layer above (which
    verifies); a byte-identical copy (a retransmitted ACK) does not, nor anything once the
    token is forgotten or from another peer."""
    ml = layer()
    token = b"\x05"
    ml.expect(token, A)
    [tx] = ml.send(get(token), A, now=0.0)
    forged = Message(Code.CONTENT, Type.ACK, tx.message.mid, token, payload=b"forged")
    real = Message(Code.CONTENT, Type.ACK, tx.message.mid, token, payload=b"real")
    assert [type(o) for o in ml.receive(forged.encode(), A, now=0.1)] == [
        DeliveryConfirmed,
        ResponseReceived,
    ]
    assert ml.receive(forged.encode(), A, now=0.2) == []
    [got] = ml.receive(real.encode(), A, now=0.3)
    assert isinstance(got, ResponseReceived) and got.message.payload == b"real"
    assert ml.receive(real.encode(), A, now=0.35) == []  # its retransmission
    assert ml.receive(real.encode(), B, now=0.4) == []
    ml.forget(token)
    assert ml.receive(real.encode(), A, now=0.5) == []


def test_response_from_wrong_remote_or_unknown_token_is_rejected() -> None:
    ml = layer()
    ml.expect(b"\x01", A)
    notif = Message(Code.CONTENT, Type.NON, 9, b"\x01", payload=b"x")
    out = ml.receive(notif.encode(), B, now=0.0)
    assert [s.message.mtype for s in sends(out)] == [Type.RST]
    out = ml.receive(Message(Code.CONTENT, Type.CON, 10, b"\x99").encode(), A, now=0.0)
    [rst] = sends(out)
    assert rst.message.mtype == Type.RST and rst.message.mid == 10
    assert events(out, ResponseReceived) == []
    # From anyone (group request): accepted from both.
    ml.expect(b"\x02", None)
    for i, r in enumerate((A, B)):
        m = Message(Code.CONTENT, Type.NON, 20 + i, b"\x02")
        assert len(events(ml.receive(m.encode(), r, now=1.0), ResponseReceived)) == 1


def test_rst_to_con_and_to_non_reported_with_token() -> None:
    ml = layer()
    [tx] = ml.send(get(b"\x0c"), A, now=0.0)
    out = ml.receive(Message(Code.EMPTY, Type.RST, tx.message.mid).encode(), A, now=0.1)
    assert out == [Rejected(A, tx.message.mid, b"\x0c")]
    assert ml.pending_confirmables() == 0
    notif = Message(Code.CONTENT, Type.NON, 0, b"\x0d", payload=b"n")
    [tx2] = ml.send(notif, A, now=0.0)
    out = ml.receive(Message(Code.EMPTY, Type.RST, tx2.message.mid).encode(), A, now=0.2)
    assert out == [Rejected(A, tx2.message.mid, b"\x0d")]
    # An RST from another remote with the same MID matches nothing.
    [tx3] = ml.send(get(b"\x0e"), A, now=0.0)
    assert ml.receive(Message(Code.EMPTY, Type.RST, tx3.message.mid).encode(), B, 0.3) == []


def test_ping_gets_rst_and_client_ping_completes() -> None:
    server, client = layer(1), layer(2)
    [ping] = client.send(Message(Code.EMPTY, Type.CON), A, now=0.0)
    [pong] = sends(server.receive(ping.data, B, now=0.0))
    assert pong.message.mtype == Type.RST and pong.message.mid == ping.message.mid
    out = client.receive(pong.data, A, now=0.01)
    assert out == [Rejected(A, ping.message.mid, b"")]


def test_piggybacked_when_fast_and_duplicate_gets_cached_reply() -> None:
    ml = layer()
    req = get(b"\x01", mid=300)
    out = ml.receive(req.encode(), A, now=0.0)
    [ev] = events(out, RequestReceived)
    [tx] = ml.respond(ev.exchange, Message(Code.CONTENT, payload=b"v"), now=0.05)
    assert tx.message.mtype == Type.ACK and tx.message.mid == 300
    assert tx.message.token == b"\x01"
    # Duplicate CON: the identical cached ACK, no new request event.
    dup = ml.receive(req.encode(), A, now=2.5)
    assert dup == [tx]
    # Same MID from another remote is a different message.
    assert len(events(ml.receive(req.encode(), B, now=2.6), RequestReceived)) == 1


def test_slow_handler_gets_empty_ack_then_con_response() -> None:
    ml = layer(empty_ack_delay=0.2)
    req = get(b"\x07", mid=55)
    [ev] = events(ml.receive(req.encode(), A, now=0.0), RequestReceived)
    assert ml.tick(0.1) == []
    [ack] = sends(ml.tick(0.2))
    assert ack.message.mtype == Type.ACK and ack.message.code == Code.EMPTY
    assert ack.message.mid == 55
    [resp] = ml.respond(ev.exchange, Message(Code.CONTENT, payload=b"v"), now=5.0)
    assert resp.message.mtype == Type.CON and resp.message.mid != 55
    assert resp.message.token == b"\x07"
    # Retransmitted until the client ACKs it.
    again = [o for _, o in run_until(ml, 8.0) if isinstance(o, Transmit)]
    assert again and all(o.data == resp.data for o in again)
    out = ml.receive(Message(Code.EMPTY, Type.ACK, resp.message.mid).encode(), A, now=8.5)
    assert events(out, DeliveryConfirmed)
    assert ml.pending_confirmables() == 0
    # A late duplicate of the request gets the empty ACK again, never a second event.
    assert ml.receive(req.encode(), A, now=9.0) == [ack]


def test_duplicate_before_response_triggers_empty_ack_once() -> None:
    ml = layer(empty_ack_delay=1.0)
    req = get(b"\x08", mid=56)
    [ev] = events(ml.receive(req.encode(), A, now=0.0), RequestReceived)
    [ack] = ml.receive(req.encode(), A, now=0.5)
    assert ack.message.mtype == Type.ACK and ack.message.code == Code.EMPTY
    assert ml.tick(1.0) == []  # the delayed empty ACK is not sent twice
    [resp] = ml.respond(ev.exchange, Message(Code.CONTENT), now=1.5)
    assert resp.message.mtype == Type.CON


def test_duplicate_non_is_ignored_until_non_lifetime() -> None:
    ml = layer(ack_timeout=1.0, max_retransmit=1)
    req = get(b"\x09", mtype=Type.NON, mid=77)
    assert len(events(ml.receive(req.encode(), A, now=0.0), RequestReceived)) == 1
    assert ml.receive(req.encode(), A, now=1.0) == []
    life = ml.params.non_lifetime
    ml.tick(life + 0.01)
    assert len(events(ml.receive(req.encode(), A, now=life + 0.02), RequestReceived)) == 1


def test_spoofed_junk_with_the_next_message_ids_does_not_evict_oscore_requests() -> None:
    """Issue 11, finding 4: a NON request under OSCORE is not deduplicated by (address,
    Message ID), which anyone can spoof; OSCORE's replay window does it after verification.
    Junk with the same address and IDs neither hides the real request nor is it cached."""
    ml = layer()
    for mid in range(100, 110):
        junk = get(b"\x0b", mtype=Type.NON, mid=mid)
        junk.options.oscore = b"\x09\x05"
        junk.payload = b"junk"
        assert len(events(ml.receive(junk.encode(), A, now=0.0), RequestReceived)) == 1
    for mid in range(100, 110):
        real = get(b"\x0c", mtype=Type.NON, mid=mid)
        real.options.oscore = b"\x09\x06"
        real.payload = b"real"
        [ev] = events(ml.receive(real.encode(), A, now=0.1), RequestReceived)
        assert ev.exchange.request.payload == b"real"
    assert ml.cached_ids() == 0
    # without OSCORE, message-layer deduplication stays as it was
    plain = get(b"\x0d", mtype=Type.NON, mid=200)
    assert events(ml.receive(plain.encode(), A, now=0.2), RequestReceived)
    assert ml.receive(plain.encode(), A, now=0.3) == []


def test_duplicate_cache_expires_after_exchange_lifetime() -> None:
    ml = layer(ack_timeout=1.0, max_retransmit=2)
    req = get(b"\x0a", mid=78)
    [ev] = events(ml.receive(req.encode(), A, now=0.0), RequestReceived)
    ml.respond(ev.exchange, Message(Code.CONTENT), now=0.0)
    life = ml.params.exchange_lifetime
    assert sends(ml.receive(req.encode(), A, now=life - 0.01))
    ml.tick(life + 0.01)
    assert ml.cached_ids() == 0
    assert events(ml.receive(req.encode(), A, now=life + 0.02), RequestReceived)


def test_non_and_multicast_requests_get_non_responses() -> None:
    ml = layer()
    [ev] = events(ml.receive(get(b"\x0b", Type.NON).encode(), A, 0.0), RequestReceived)
    [tx] = ml.respond(ev.exchange, Message(Code.CONTENT), 0.0)
    assert tx.message.mtype == Type.NON and tx.message.token == b"\x0b"
    [ev] = events(
        ml.receive(get(b"\x0c", Type.NON, 8).encode(), A, 0.0, multicast=True), RequestReceived
    )
    assert ev.exchange.multicast
    assert ml.tick(10.0) == []  # no empty ACK for multicast
    [tx] = ml.respond(ev.exchange, Message(Code.CONTENT), 0.0)
    assert tx.message.mtype == Type.NON


def test_suppressed_response_to_con_still_acks() -> None:
    ml = layer()
    [ev] = events(ml.receive(get().encode(), A, 0.0), RequestReceived)
    [ack] = ml.respond(ev.exchange, None, 0.0)
    assert ack.message.mtype == Type.ACK and ack.message.code == Code.EMPTY
    assert ml.respond(ev.exchange, Message(Code.CONTENT), 0.0) == []


def test_malformed_con_rejected_non_ignored() -> None:
    ml = layer()
    bad_con = bytes([0x40 | 9, 1, 0x12, 0x34])  # token length 9: format error
    [rst] = ml.receive(bad_con, A, 0.0)
    assert rst.message.mtype == Type.RST and rst.message.mid == 0x1234
    assert ml.receive(bytes([0x50 | 9, 1, 0, 1]), A, 0.0) == []
    assert ml.receive(b"\x40", A, 0.0) == []
    assert ml.cached_ids() == 0


def test_message_ids_increment_and_wrap() -> None:
    ml = layer()
    first = ml.new_mid()
    assert [ml.new_mid() for _ in range(3)] == [(first + i) % 65536 for i in (1, 2, 3)]
    for _ in range(70000):
        ml.new_mid()
    assert 0 <= ml.new_mid() < 65536


def test_tokens_random_and_unique() -> None:
    ml = MessageLayer()
    tokens = {ml.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(len(t) == 8 for t in tokens)
    short = MessageLayer(token_length=2)
    assert len(short.new_token()) == 2


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.booleans())
def test_random_datagrams_never_raise(data: bytes, multicast: bool) -> None:
    ml = layer()
    ml.expect(b"\x01", None)
    out = ml.receive(data, A, 0.0, multicast=multicast)
    for o in out:
        if isinstance(o, Transmit):
            assert o.message.mtype in (Type.ACK, Type.RST)
