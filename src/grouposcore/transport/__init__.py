"""CoAP over UDP: the asyncio endpoint and the sans-I/O protocol machinery behind it.

This package is the only code in grouposcore that touches sockets and timers. The decisions
live in sans-I/O modules (``messagelayer``, ``blockwise``, ``observe``, ``server``) that
tests drive with a fake clock; ``endpoint`` and ``sockets`` carry them onto the network.
"""

from grouposcore.transport.blockwise import BlockwiseLimits
from grouposcore.transport.endpoint import Endpoint
from grouposcore.transport.messagelayer import MessageLayer
from grouposcore.transport.observation import Observation
from grouposcore.transport.observe import NotificationPolicy, Observer
from grouposcore.transport.params import TransmissionParams
from grouposcore.transport.rejections import RejectionStats, VerificationFailures
from grouposcore.transport.resource import Resource, Site, link_format
from grouposcore.transport.security import (
    ClientSecurity,
    Protection,
    ServerSecurity,
)

__all__ = [
    "BlockwiseLimits",
    "ClientSecurity",
    "Endpoint",
    "MessageLayer",
    "NotificationPolicy",
    "Observation",
    "Observer",
    "Protection",
    "RejectionStats",
    "Resource",
    "ServerSecurity",
    "Site",
    "TransmissionParams",
    "VerificationFailures",
    "link_format",
]
