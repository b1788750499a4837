"""Transmission parameters (RFC 7252 §4.8) as one configurable value.

The RFC derives every lifetime from a few base numbers; keeping the derivation here means a
test (or a deployment on a slow link) changes ``ack_timeout`` once and the duplicate
cache, retransmission schedule and NON lifetimes all follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from grouposcore.coap import constants as _c

__all__ = ["TransmissionParams"]


@dataclass(frozen=True)
class TransmissionParams:
    """Base transmission parameters; the derived ones are properties."""

    ack_timeout: float = float(_c.ACK_TIMEOUT)
    ack_random_factor: float = float(_c.ACK_RANDOM_FACTOR)
    max_retransmit: int = int(_c.MAX_RETRANSMIT)
    #: Upper bound of the random delay before answering a multicast request (§8.2).
    default_leisure: float = float(_c.DEFAULT_LEISURE)
    #: RFC 7252 §4.8.2: the longest a datagram is expected to spend in the network.
    max_latency: float = float(_c.MAX_LATENCY)
    #: How long a server waits for a piggybacked answer before it sends an empty ACK and
    #: switches to a separate response. Far below ``ack_timeout`` so clients do not
    #: retransmit needlessly.
    empty_ack_delay: float = 0.2
    #: Responses waiting out their leisure leave on a grid of the loop's clock with this
    #: many points per leisure (0: none), so the members one process hosts answer a group
    #: request in at most this many event-loop turns rather than one wake-up each (see
    #: :class:`grouposcore.transport.serverflow.Leisure`).
    leisure_slots: int = 32

    def __post_init__(self) -> None:
        if self.ack_timeout <= 0 or self.ack_random_factor < 1 or self.max_retransmit < 0:
            raise ValueError("ack_timeout > 0, ack_random_factor >= 1, max_retransmit >= 0")
        if (
            min(self.default_leisure, self.max_latency, self.empty_ack_delay, self.leisure_slots)
            < 0
        ):
            raise ValueError("leisure, latency, empty-ACK delay and slots must not be negative")

    @property
    def processing_delay(self) -> float:
        return self.ack_timeout

    @property
    def max_transmit_span(self) -> float:
        """Time from the first to the last transmission of a CON."""
        intervals: int = 2**self.max_retransmit - 1
        return self.ack_timeout * intervals * self.ack_random_factor

    @property
    def max_transmit_wait(self) -> float:
        """Time from the first transmission of a CON until the sender gives up."""
        intervals: int = 2 ** (self.max_retransmit + 1) - 1
        return self.ack_timeout * intervals * self.ack_random_factor

    @cached_property  # read for every message; the fields are frozen
    def exchange_lifetime(self) -> float:
        """How long a CON message ID stays in the duplicate cache."""
        return self.max_transmit_span + 2 * self.max_latency + self.processing_delay

    @cached_property  # read for every message; the fields are frozen
    def non_lifetime(self) -> float:
        """How long a NON message ID stays in the duplicate cache."""
        return self.max_transmit_span + self.max_latency
