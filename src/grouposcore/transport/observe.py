"""Observe (RFC 7641) decisions, free of I/O: notification order and notification types.

The endpoint keeps the registrations and does the sending; what is decided here is which
notification is newer (client, §3.4), which Observe number comes next (server, §4.4) and
whether a notification goes out as CON or NON (server, §4.5).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from grouposcore.coap import Message, Type
from grouposcore.transport.security import Binding

__all__ = [
    "OBSERVE_MODULUS",
    "NotificationOrder",
    "NotificationPolicy",
    "ObserveCounter",
    "Observer",
    "PartialIvOrder",
    "is_fresher",
]

#: Observe numbers are 24-bit (RFC 7641 §4.4).
OBSERVE_MODULUS = 1 << 24
_HALF = 1 << 23
#: After this long without notifications the order of Observe numbers no longer matters.
_REORDER_HORIZON = 128.0


def is_fresher(v_new: int, t_new: float, v_old: int, t_old: float) -> bool:
    """RFC 7641 §3.4: is the notification (v_new, t_new) newer than (v_old, t_old)?"""
    return (
        (v_old < v_new and v_new - v_old < _HALF)
        or (v_old > v_new and v_old - v_new > _HALF)
        or t_new > t_old + _REORDER_HORIZON
    )


class NotificationOrder:
    """Client side: drops notifications that arrive out of order."""

    def __init__(self) -> None:
        self._last: tuple[int, float] | None = None

    def accept(self, observe: int, now: float) -> bool:
        """Whether a notification with ``observe`` received at ``now`` is the newest so far."""
        if self._last is not None and not is_fresher(observe, now, *self._last):
            return False
        self._last = (observe, now)
        return True


class PartialIvOrder:
    """Client side under OSCORE: notifications ordered by Partial IV, not by Observe.

    RFC 8613 §7.4.1 and RFC 10021 §5.3.1: the Observe value is not protected (the inner
    option is empty), so the order of verified notifications is their Partial IV, per
    responding server and security context (``source``). A response without Partial IV (the
    answer to the registration, which reuses the request nonce) counts as the oldest one.
    Only what already verified is fed here; the replay check is the security layer's.
    """

    #: Sources remembered per observation (a server, once per security context it used).
    MAX_SOURCES = 16

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}

    def accept(self, source: Hashable, piv: bytes | None) -> bool:
        """Whether the notification from ``source`` with ``piv`` is the newest so far."""
        value = -1 if piv is None else int.from_bytes(piv, "big")
        last = self._last.get(source)
        if last is not None and value <= last:
            return False
        if last is None and len(self._last) >= self.MAX_SOURCES:
            del self._last[next(iter(self._last))]  # the oldest source
        self._last[source] = value
        return True


class ObserveCounter:
    """Server side: strictly increasing Observe numbers (modulo 2**24) for one resource."""

    def __init__(self, start: int = 2) -> None:
        self._value = start % OBSERVE_MODULUS

    def next(self) -> int:
        v = self._value
        self._value = (v + 1) % OBSERVE_MODULUS
        return v


@dataclass(frozen=True)
class NotificationPolicy:
    """How notifications are sent.

    ``confirmable`` True sends every notification as CON. Otherwise they go as NON, and
    every ``con_every``-th one, or the first after ``con_interval`` seconds, is CON so the
    server learns whether the client is still there (RFC 7641 §4.5: at least every 24 h).
    """

    confirmable: bool = False
    con_every: int = 5
    con_interval: float = 24 * 3600.0


@dataclass(eq=False)
class Observer:
    """One registration on the server: who observes, with which request and protection."""

    remote: Any
    token: bytes
    #: The registering request as the resource saw it (plain, reassembled).
    request: Message
    #: Opaque security binding of the registration (``None``: plain CoAP).
    binding: Binding | None = None
    multicast: bool = False
    #: Sends one notification; installed by the endpoint.
    trigger: Callable[[Observer], object] | None = None
    non_since_con: int = 0
    #: Time of the last CON notification (set to the registration time by the endpoint).
    last_con: float = 0.0

    @property
    def key(self) -> tuple[Any, bytes]:
        return (self.remote, self.token)

    def notification_type(self, policy: NotificationPolicy, now: float) -> Type:
        """CON or NON for the next notification, updating the bookkeeping."""
        if (
            policy.confirmable
            or self.non_since_con + 1 >= policy.con_every
            or now - self.last_con >= policy.con_interval
        ):
            self.non_since_con = 0
            self.last_con = now
            return Type.CON
        self.non_since_con += 1
        return Type.NON
