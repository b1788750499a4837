"""Loss and duplication between two message layers, without sockets: the in-memory
:class:`tests.transport.pump.Pump` drops and duplicates datagrams deterministically and
runs both layers on one fake clock."""

from __future__ import annotations

import pytest

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.transport.messagelayer import (
    DeliveryConfirmed,
    RequestReceived,
    ResponseReceived,
    TransmissionFailed,
)
from grouposcore.transport.params import TransmissionParams
from tests.transport.pump import Pump

TOKEN = b"\x42\x42"


def get(mtype: Type = Type.CON, token: bytes = TOKEN) -> Message:
    opts = Options()
    opts.uri_path = ["x"]
    return Message(Code.GET, mtype, 0, token, opts)


def responses(p: Pump) -> list[Message]:
    return [e.message for e in p.client.of(ResponseReceived)]  # type: ignore[union-attr]


def test_lost_con_request_is_retransmitted_and_delivered_once() -> None:
    p = Pump(drop={"to_server": (0,)})
    tx = p.request(get())
    p.run(60.0)
    assert len(p.dropped) == 1 and p.dropped[0].data == tx.data
    assert [s.data for s in p.client.sent] == [tx.data, tx.data]
    assert len(p.server.of(RequestReceived)) == 1
    assert [r.payload for r in responses(p)] == [b"ok"]
    assert len(p.client.of(DeliveryConfirmed)) == 1


def test_lost_piggybacked_ack_is_answered_again_from_the_dedup_cache() -> None:
    p = Pump(drop={"to_client": (0,)})
    p.request(get())
    p.run(60.0)
    # the retransmitted CON is a duplicate: the cached ACK goes out again, byte for byte
    assert len(p.server.of(RequestReceived)) == 1
    assert len(p.server.sent) == 2 and p.server.sent[0].data == p.server.sent[1].data
    assert len(responses(p)) == 1 and len(p.client.of(DeliveryConfirmed)) == 1


def test_duplicated_con_is_answered_from_the_cache_and_delivered_once() -> None:
    p = Pump(duplicate={"to_server": (0,)})
    p.request(get())
    p.run(60.0)
    assert len(p.duplicated) == 1
    assert len(p.server.of(RequestReceived)) == 1
    assert [s.message.mtype for s in p.server.sent] == [Type.ACK, Type.ACK]
    assert p.server.sent[0].data == p.server.sent[1].data
    # the second ACK is stale for the client: one response, one confirmation
    assert len(responses(p)) == 1 and len(p.client.of(DeliveryConfirmed)) == 1
    assert len(p.client.sent) == 1  # no retransmission was needed


def test_lost_non_request_is_not_retried() -> None:
    p = Pump(drop={"to_server": (0,)})
    p.request(get(Type.NON))
    p.run(300.0)
    assert len(p.client.sent) == 1
    assert p.server.of(RequestReceived) == [] and responses(p) == []
    assert p.client.layer.next_deadline() is None  # nothing left to do for it


def test_slow_answer_lost_separate_response_is_retransmitted_and_delivered_once() -> None:
    params = TransmissionParams()
    slow = 3 * params.empty_ack_delay
    # to_client: 0 is the empty ACK, 1 the separate CON response (dropped once)
    p = Pump(
        params=params,
        drop={"to_client": (1,)},
        answer=lambda ex: (Message(Code.CONTENT, payload=b"late"), slow),
    )
    p.request(get())
    p.run(120.0)
    server_sent = [s.message.mtype for s in p.server.sent]
    assert server_sent[:3] == [Type.ACK, Type.CON, Type.CON]
    assert [r.payload for r in responses(p)] == [b"late"]
    assert len(p.server.of(DeliveryConfirmed)) == 1  # the client's ACK of the response


def test_request_never_acknowledged_fails_after_max_retransmit() -> None:
    p = Pump(loss=1.0, params=TransmissionParams(max_retransmit=3))
    p.request(get())
    p.run(1000.0)
    assert len(p.client.sent) == 4
    assert len(p.client.of(TransmissionFailed)) == 1


@pytest.mark.parametrize("seed", range(12))
def test_random_loss_and_duplication_deliver_at_most_once(seed: int) -> None:
    """A lossy, duplicating link with a fixed seed: every request reaches the server at most
    once, and the client ends with exactly one of: its response, or a give-up."""
    p = Pump(seed=seed, loss=0.3, dup=0.3)
    tokens = [bytes([seed, i]) for i in range(4)]
    for token in tokens:
        p.request(get(token=token))
    p.run(1000.0)
    delivered = [e.exchange.request.token for e in p.server.of(RequestReceived)]  # type: ignore[union-attr]
    assert len(delivered) == len(set(delivered))
    answered = {m.token for m in responses(p)}
    failed = {e.token for e in p.client.of(TransmissionFailed)}  # type: ignore[union-attr]
    assert len(responses(p)) == len(answered)  # each response reached the client once
    assert not answered & failed and answered | failed == set(tokens)
    assert p.dropped and p.duplicated  # the seed did exercise the link


def test_pump_is_deterministic_by_seed() -> None:
    def trace(seed: int) -> list[bytes]:
        p = Pump(seed=seed, loss=0.3, dup=0.3)
        p.request(get())
        p.run(300.0)
        return [t.data for t in p.client.sent + p.server.sent + p.dropped + p.duplicated]

    assert trace(5) == trace(5)
