"""What the sans-I/O message layer emits, and the state of a request it received.

:class:`~grouposcore.transport.messagelayer.MessageLayer` returns lists of :data:`Output`:
datagrams to send (:class:`Transmit`) and :data:`Event` values for the layers above. A
received request reaches the application as a :class:`ServerExchange`, whose
:class:`ExchangeState` only moves along :func:`exchange_transition`. Kept apart from the
layer itself so the vocabulary can be read (and imported) on its own; see
docs/messagelayer.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from grouposcore.coap import Message, Type

__all__ = [
    "Address",
    "DeliveryConfirmed",
    "Event",
    "ExchangeInput",
    "ExchangeState",
    "Output",
    "Rejected",
    "RequestReceived",
    "ResponseReceived",
    "ServerExchange",
    "TransmissionFailed",
    "Transmit",
    "exchange_transition",
]

#: A peer as ``(host, port)``; the endpoint normalises hosts (no IPv4-mapped IPv6 forms).
Address = tuple[Any, ...]


class ExchangeState(Enum):
    """Where the answer to a received request stands."""

    #: Nothing sent yet: a CON can still be answered in a piggybacked ACK.
    PENDING = "pending"
    #: An empty ACK went out (the answer was slow), so the response must be a CON of its own.
    ACKED = "acked"
    #: The application answered (or declined to); nothing more goes out for this request.
    RESPONDED = "responded"


class ExchangeInput(Enum):
    """What can happen to a :class:`ServerExchange`."""

    #: The layer acknowledges the CON with an empty ACK (timer, or a retransmitted request).
    EMPTY_ACK = "empty_ack"
    #: The application responds, or says there is no response.
    RESPOND = "respond"


#: The exchange life cycle: (state, input) -> next state. Pairs not listed are illegal.
_EXCHANGE_TRANSITIONS: dict[tuple[ExchangeState, ExchangeInput], ExchangeState] = {
    (ExchangeState.PENDING, ExchangeInput.EMPTY_ACK): ExchangeState.ACKED,
    (ExchangeState.PENDING, ExchangeInput.RESPOND): ExchangeState.RESPONDED,
    (ExchangeState.ACKED, ExchangeInput.RESPOND): ExchangeState.RESPONDED,
}


def exchange_transition(state: ExchangeState, event: ExchangeInput) -> ExchangeState:
    """The state after ``event``; ValueError for a pair the life cycle does not allow (an
    ACK twice, anything after the response), which would mean a bug in this module."""
    try:
        return _EXCHANGE_TRANSITIONS[state, event]
    except KeyError:
        raise ValueError(f"illegal exchange transition: {event.name} in {state.name}") from None


@dataclass
class ServerExchange:
    """A request this endpoint received and has not finished answering.

    Handed to the application in :class:`RequestReceived`; the application answers it with
    :meth:`MessageLayer.respond`. Its :attr:`state` is changed only by the message layer.
    """

    request: Message
    remote: Address
    multicast: bool
    state: ExchangeState = ExchangeState.PENDING

    @property
    def confirmable(self) -> bool:
        return self.request.mtype == Type.CON

    @property
    def acked(self) -> bool:
        """An empty ACK already went out, so a response must be a separate message."""
        return self.state is ExchangeState.ACKED

    @property
    def responded(self) -> bool:
        """The request has been answered (or declined); a further respond() does nothing."""
        return self.state is ExchangeState.RESPONDED

    def _advance(self, event: ExchangeInput) -> None:
        self.state = exchange_transition(self.state, event)


@dataclass(frozen=True)
class Transmit:
    """Send ``data`` (the encoding of ``message``) to ``remote``.

    Emitted by every method that puts something on the wire: :meth:`MessageLayer.send`
    (the first transmission), :meth:`MessageLayer.tick` (retransmissions, delayed empty
    ACKs), :meth:`MessageLayer.respond` (piggybacked ACK, separate CON or NON response) and
    :meth:`MessageLayer.receive` (ACK/RST replies, cached replies to duplicates).
    """

    data: bytes
    remote: Address
    message: Message


@dataclass(frozen=True)
class RequestReceived:
    """A new (non-duplicate) request for the application.

    Emitted by :meth:`MessageLayer.receive` for the first copy of a request per (peer, MID)
    within its lifetime; the application answers ``exchange`` with
    :meth:`MessageLayer.respond`. NON requests carrying an OSCORE option are always
    emitted: their replay window deduplicates them after verification.
    """

    exchange: ServerExchange


@dataclass(frozen=True)
class ResponseReceived:
    """A response whose token is expected from that remote (first copy only).

    Emitted by :meth:`MessageLayer.receive` for a piggybacked response in an ACK, or a
    separate CON/NON response, whose token was announced with :meth:`MessageLayer.expect`.
    """

    message: Message
    remote: Address


@dataclass(frozen=True)
class DeliveryConfirmed:
    """A CON we sent was acknowledged (by an empty ACK, a piggybacked or a separate response).

    Emitted by :meth:`MessageLayer.receive`, once per CON; retransmission stops.
    """

    remote: Address
    mid: int
    token: bytes


@dataclass(frozen=True)
class Rejected:
    """The peer answered a CON or NON we sent with RST.

    Emitted by :meth:`MessageLayer.receive`, once per message (a NON only while its
    NON_LIFETIME lasts); for a notification this ends the observation (RFC 7641 §3.6).
    """

    remote: Address
    mid: int
    token: bytes


@dataclass(frozen=True)
class TransmissionFailed:
    """A CON was sent 1 + MAX_RETRANSMIT times and never acknowledged.

    Emitted by :meth:`MessageLayer.tick` when the last retransmission timed out.
    """

    remote: Address
    mid: int
    token: bytes


Event = RequestReceived | ResponseReceived | DeliveryConfirmed | Rejected | TransmissionFailed
Output = Transmit | Event
