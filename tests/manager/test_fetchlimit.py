"""The credential-fetch limiter (sans-I/O): token bucket, in-flight bound, negative cache."""

from __future__ import annotations

import pytest

from grouposcore.manager.fetchlimit import Admission, FetchLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _kid(i: int) -> bytes:
    return i.to_bytes(2, "big")


def test_token_bucket_bounds_fetches_of_distinct_unknown_ids() -> None:
    clock = Clock()
    lim = FetchLimiter(rate=0.5, burst=3, max_in_flight=100, clock=clock)
    decisions = [lim.admit(_kid(i)) for i in range(50)]
    assert decisions.count(Admission.FETCH) == 3
    assert lim.stats.fetches == 3 and lim.stats.rate_limited == 47
    for i in range(3):
        lim.finished(_kid(i), False)
    clock.now += 4.0  # 0.5 per second: two more tokens
    decisions = [lim.admit(_kid(i)) for i in range(100, 150)]
    assert decisions.count(Admission.FETCH) == 2
    clock.now += 1000.0  # refill never exceeds the burst
    decisions = [lim.admit(_kid(i)) for i in range(200, 250)]
    assert decisions.count(Admission.FETCH) == 3


def test_in_flight_bound_and_one_fetch_per_sender_id() -> None:
    lim = FetchLimiter(rate=100.0, burst=100, max_in_flight=2, clock=Clock())
    assert lim.admit(b"\x01") is Admission.FETCH
    assert lim.admit(b"\x01") is Admission.IN_FLIGHT
    assert lim.admit(b"\x02") is Admission.FETCH
    assert lim.admit(b"\x03") is Admission.RATE_LIMITED
    lim.finished(b"\x01", True)
    assert lim.admit(b"\x03") is Admission.FETCH
    assert lim.stats.in_flight_hits == 1 and lim.stats.found == 1


def test_negative_cache_expires_and_is_bounded() -> None:
    clock = Clock()
    lim = FetchLimiter(
        rate=1000.0,
        burst=1000,
        max_in_flight=1000,
        negative_ttl=60.0,
        failure_ttl=5.0,
        negative_size=4,
        clock=clock,
    )
    assert lim.admit(b"\x01") is Admission.FETCH
    lim.finished(b"\x01", False)  # the GM does not know it
    assert lim.admit(b"\x01") is Admission.NEGATIVE
    assert lim.stats.negative_hits == 1 and lim.stats.not_found == 1
    clock.now += 61.0
    assert lim.admit(b"\x01") is Admission.FETCH  # expired: asked again
    lim.finished(b"\x01", None)  # failed: retried sooner
    clock.now += 4.0
    assert lim.admit(b"\x01") is Admission.NEGATIVE
    clock.now += 2.0
    assert lim.admit(b"\x01") is Admission.FETCH
    lim.finished(b"\x01", True)
    for i in range(10, 20):
        assert lim.admit(_kid(i)) is Admission.FETCH
        lim.finished(_kid(i), False)
    assert lim.negative_entries == 4  # bounded: the oldest went first
    assert lim.admit(_kid(19)) is Admission.NEGATIVE
    assert lim.admit(_kid(10)) is Admission.FETCH
    lim.forget_negative()
    assert lim.negative_entries == 0


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        FetchLimiter(burst=0)
