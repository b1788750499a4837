"""The explicit state of the message layer: the server exchange's transition table, checked
over every (state, input) pair, and the timer kinds."""

from __future__ import annotations

import itertools
import random

import pytest

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.transport.messagelayer import (
    ExchangeInput,
    ExchangeState,
    MessageLayer,
    RequestReceived,
    ServerExchange,
    Transmit,
    exchange_transition,
)
from grouposcore.transport.params import TransmissionParams

A = ("192.0.2.1", 5683)

P, K, R = ExchangeState.PENDING, ExchangeState.ACKED, ExchangeState.RESPONDED
#: the life cycle, written out independently of the module's table
EXPECTED = {
    (P, ExchangeInput.EMPTY_ACK): K,
    (P, ExchangeInput.RESPOND): R,
    (K, ExchangeInput.RESPOND): R,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ExchangeState, ExchangeInput)))
def test_exchange_transition_table_is_exhaustive(
    state: ExchangeState, event: ExchangeInput
) -> None:
    if (state, event) in EXPECTED:
        assert exchange_transition(state, event) is EXPECTED[state, event]
    else:
        with pytest.raises(ValueError, match="illegal exchange transition"):
            exchange_transition(state, event)


def test_responded_is_terminal_and_acked_only_from_pending() -> None:
    assert all((R, e) not in EXPECTED for e in ExchangeInput)
    assert [s for s in ExchangeState if (s, ExchangeInput.EMPTY_ACK) in EXPECTED] == [P]


def _request(mtype: Type = Type.CON) -> Message:
    opts = Options()
    opts.uri_path = ["x"]
    return Message(Code.GET, mtype, 7, b"\x01", opts)


def _received(ml: MessageLayer, now: float = 0.0) -> ServerExchange:
    [ev] = ml.receive(_request().encode(), A, now)
    assert isinstance(ev, RequestReceived)
    return ev.exchange


def test_exchange_states_follow_the_wire() -> None:
    ml = MessageLayer(TransmissionParams(), rng=random.Random(1))
    ex = _received(ml)
    assert ex.state is P and not ex.acked and not ex.responded
    [ack] = ml.receive(_request().encode(), A, 0.5)  # a retransmission: slow, ACK now
    assert isinstance(ack, Transmit) and ack.message.mtype == Type.ACK
    assert ex.state is K and ex.acked and not ex.responded
    [resp] = ml.respond(ex, Message(Code.CONTENT, payload=b"x"), 1.0)
    assert resp.message.mtype == Type.CON
    assert ex.state is R and ex.responded
    assert ml.respond(ex, Message(Code.CONTENT), 1.0) == []  # answering twice: nothing


def test_responded_exchange_ignores_its_empty_ack_timer() -> None:
    ml = MessageLayer(TransmissionParams(), rng=random.Random(1))
    ex = _received(ml)
    [piggy] = ml.respond(ex, Message(Code.CONTENT), 0.1)
    assert piggy.message.mtype == Type.ACK
    # the empty-ACK timer is dead now: the next deadline is the duplicate cache's expiry
    assert ml.next_deadline() == pytest.approx(ml.params.exchange_lifetime)
    assert ml.tick(ml.params.empty_ack_delay) == []


def test_responded_cannot_be_assigned() -> None:
    ex = ServerExchange(_request(), A, False)
    with pytest.raises(AttributeError):
        ex.responded = True  # type: ignore[misc]


@pytest.mark.parametrize("multicast", [False, True])
def test_con_reusing_the_mid_of_a_non_or_multicast_request_gets_no_ack(multicast: bool) -> None:
    """Found by the stateful test: the CON hit the NON's duplicate entry and was answered
    with an empty ACK on the NON exchange's behalf, leaving it ACKED though no ACK was due."""
    ml = MessageLayer(TransmissionParams(), rng=random.Random(1))
    mtype = Type.CON if multicast else Type.NON
    [ev] = ml.receive(_request(mtype).encode(), A, 0.0, multicast=multicast)
    assert isinstance(ev, RequestReceived)
    assert ml.receive(_request(Type.CON).encode(), A, 0.5) == []
    assert ev.exchange.state is P
    [resp] = ml.respond(ev.exchange, Message(Code.CONTENT), 1.0)
    assert resp.message.mtype == Type.NON


def test_message_layer_events_are_exported_and_say_when_they_are_emitted() -> None:
    import grouposcore.transport as transport

    names = [
        "Transmit",
        "RequestReceived",
        "ResponseReceived",
        "DeliveryConfirmed",
        "Rejected",
        "TransmissionFailed",
        "ServerExchange",
        "MessageLayer",
    ]
    assert set(names) <= set(transport.__all__)
    for name in names[:6]:
        doc = getattr(transport, name).__doc__
        assert doc and "Emitted by" in doc, name
