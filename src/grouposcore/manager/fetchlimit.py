"""How often a member may ask its Group Manager for a credential it does not have, sans-I/O.

A group request from an unknown Sender ID cannot be verified before the sender's credential
is known, so the member has to ask the GM (FETCH /creds) *before* any check. Without a bound,
anyone who knows only the Gid makes every member query the GM for every forged datagram
(an amplifier), and the list of IDs being looked up grows without limit. This limiter puts
three bounds on it, per group (defaults: a burst of 8, then one a second, 4 outstanding,
"unknown" remembered for a minute, for at most 256 IDs):

* a token bucket: at most ``burst`` fetches at once, refilled at ``rate`` per second;
* at most ``max_in_flight`` fetches outstanding, each Sender ID at most once;
* a bounded negative cache: a Sender ID the GM said it does not know (or a failed fetch) is
  not asked about again until its entry expires; the oldest entries go first when full.

Every decision is counted in :class:`FetchStats`, so an operator can see both the attack and
what the limiter suppressed. The clock is injected; nothing here sleeps or does I/O.
"""

from __future__ import annotations

import enum
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admission", "FetchLimiter", "FetchStats"]


class Admission(enum.Enum):
    """What to do about a Sender ID the member does not know."""

    FETCH = "fetch"  #: ask the GM now (a token was taken; report the outcome with finished())
    IN_FLIGHT = "in-flight"  #: already being asked about
    NEGATIVE = "negative"  #: the GM did not know it recently (or asking failed)
    RATE_LIMITED = "rate-limited"  #: too many fetches lately, or too many outstanding


@dataclass
class FetchStats:
    """Counters since the member started (what the GM was asked, what was suppressed)."""

    fetches: int = 0  #: fetches started
    found: int = 0  #: ... that returned the credential
    not_found: int = 0  #: ... for a Sender ID the GM does not know
    failed: int = 0  #: ... that failed (GM unreachable, error answer)
    rate_limited: int = 0  #: lookups suppressed by the rate or in-flight limit
    negative_hits: int = 0  #: lookups suppressed by the negative cache
    in_flight_hits: int = 0  #: lookups for a Sender ID already being fetched

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


class FetchLimiter:
    """Admission control for credential fetches of one group (see the module docstring)."""

    def __init__(
        self,
        *,
        rate: float = 1.0,
        burst: int = 8,
        max_in_flight: int = 4,
        negative_ttl: float = 60.0,
        failure_ttl: float = 5.0,
        negative_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 1 or max_in_flight < 1 or negative_size < 1:
            raise ValueError("rate >= 0, burst, max_in_flight and negative_size >= 1")
        self.rate = rate
        self.burst = burst
        self.max_in_flight = max_in_flight
        self.negative_ttl = negative_ttl
        self.failure_ttl = failure_ttl
        self.negative_size = negative_size
        self._clock = clock
        self._tokens = float(burst)
        self._refilled = clock()
        self._in_flight: set[bytes] = set()
        self._negative: OrderedDict[bytes, float] = OrderedDict()  # kid -> expiry
        self.stats = FetchStats()

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._refilled)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._refilled = now

    def admit(self, kid: bytes) -> Admission:
        """Decide about one lookup of ``kid``; FETCH commits the caller to :meth:`finished`."""
        if kid in self._in_flight:
            self.stats.in_flight_hits += 1
            return Admission.IN_FLIGHT
        now = self._clock()
        expiry = self._negative.get(kid)
        if expiry is not None:
            if now < expiry:
                self.stats.negative_hits += 1
                return Admission.NEGATIVE
            del self._negative[kid]
        self._refill(now)
        if self._tokens < 1.0 or len(self._in_flight) >= self.max_in_flight:
            self.stats.rate_limited += 1
            return Admission.RATE_LIMITED
        self._tokens -= 1.0
        self._in_flight.add(kid)
        self.stats.fetches += 1
        return Admission.FETCH

    def finished(self, kid: bytes, found: bool | None) -> None:
        """Outcome of an admitted fetch: True found, False unknown to the GM, None failed."""
        self._in_flight.discard(kid)
        if found:
            self.stats.found += 1
            self._negative.pop(kid, None)
            return
        if found is None:
            self.stats.failed += 1
            ttl = self.failure_ttl
        else:
            self.stats.not_found += 1
            ttl = self.negative_ttl
        self._negative[kid] = self._clock() + ttl
        self._negative.move_to_end(kid)
        while len(self._negative) > self.negative_size:
            self._negative.popitem(last=False)

    def forget_negative(self) -> None:
        """New keying material: members may have joined, so earlier "unknown" answers go."""
        self._negative.clear()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def negative_entries(self) -> int:
        return len(self._negative)
