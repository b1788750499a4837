"""CoAP over UDP: the asyncio endpoint and the sans-I/O protocol machinery behind it.

This package is the only code in grouposcore that touches sockets and timers. The decisions
live in sans-I/O modules (``messagelayer``, ``blockwise``, ``observe``, ``server``) that
tests drive with a fake clock; ``endpoint`` and ``sockets`` carry them onto the network.

The message layer's inputs and outputs are exported here so that other adapters (another
event loop, a simulator) can drive it: :class:`MessageLayer` takes datagrams, sends,
answers and clock ticks and returns :class:`Transmit` outputs and the events
:class:`RequestReceived` (with its :class:`ServerExchange`), :class:`ResponseReceived`,
:class:`DeliveryConfirmed`, :class:`Rejected` and :class:`TransmissionFailed`
(docs/messagelayer.md).
"""

from grouposcore.transport.blockwise import BlockwiseLimits
from grouposcore.transport.endpoint import Endpoint
from grouposcore.transport.messagelayer import (
    DeliveryConfirmed,
    Event,
    ExchangeState,
    MessageLayer,
    Output,
    Rejected,
    RequestReceived,
    ResponseReceived,
    ServerExchange,
    TransmissionFailed,
    Transmit,
)
from grouposcore.transport.observation import Observation
from grouposcore.transport.observe import NotificationPolicy, Observer
from grouposcore.transport.params import TransmissionParams
from grouposcore.transport.rejections import RejectionStats, VerificationFailures
from grouposcore.transport.resource import Resource, Site, link_format
from grouposcore.transport.security import (
    Binding,
    ClientSecurity,
    Protection,
    ServerSecurity,
)

__all__ = [
    "Binding",
    "BlockwiseLimits",
    "ClientSecurity",
    "DeliveryConfirmed",
    "Endpoint",
    "Event",
    "ExchangeState",
    "MessageLayer",
    "NotificationPolicy",
    "Observation",
    "Observer",
    "Output",
    "Protection",
    "Rejected",
    "RejectionStats",
    "RequestReceived",
    "Resource",
    "ResponseReceived",
    "ServerExchange",
    "ServerSecurity",
    "Site",
    "TransmissionFailed",
    "TransmissionParams",
    "Transmit",
    "VerificationFailures",
    "link_format",
]
