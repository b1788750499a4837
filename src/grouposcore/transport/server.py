"""Server-side decisions that do not need I/O: option checks, response suppression, leisure.

Kept apart from the endpoint so that each rule can be tested directly.
"""

from __future__ import annotations

import random

from grouposcore.coap import Code, Message, unrecognized_critical, validate_options
from grouposcore.coap.options import OptionFormat, OptionNumber, is_critical, registered_options

__all__ = [
    "bad_option_response",
    "error_response",
    "multicast_delay",
    "suppressed",
]

#: RFC 7967 §2.1: No-Response bit per response class it suppresses.
_NO_RESPONSE_BITS = {2: 0x02, 4: 0x08, 5: 0x10}
_NO_RESPONSE = int(OptionNumber.NO_RESPONSE)

#: number -> (min length, max length, repeatable, text) of every registered option
_LIMITS = {
    n: (d.min_len, d.max_len, d.repeatable, d.format is OptionFormat.STRING)
    for n, d in registered_options().items()
}


def _well_formed(items: list[tuple[int, bytes]]) -> bool:
    """Whether every option is registered and well-formed, so that there is nothing to
    answer or drop: the usual request, decided in one pass (every request is checked,
    a protected one twice: outer and inner options)."""
    prev = -1
    limits = _LIMITS
    for number, value in items:
        spec = limits.get(number)
        if spec is None:
            return False
        lo, hi, repeatable, text = spec
        if not lo <= len(value) <= hi or (number == prev and not repeatable):
            return False
        if text:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return False
        prev = number
    return True


def error_response(code: int, diagnostic: str = "") -> Message:
    """A response with ``code`` and an optional diagnostic payload (RFC 7252 §5.5.2)."""
    return Message(code, payload=diagnostic.encode("utf-8"))


def bad_option_response(request: Message) -> Message | None:
    """4.02 for unknown or malformed critical options (RFC 7252 §5.4.1); ``None`` if fine.

    Malformed *elective* options are dropped from the request in place: they are to be
    treated like unrecognized ones, i.e. ignored.
    """
    if _well_formed(request.options._items):
        return None
    unknown = unrecognized_critical(request.options)
    bad = validate_options(request.options)
    if unknown or any(is_critical(n) for n in bad):
        numbers = sorted({*unknown, *(n for n in bad if is_critical(n))})
        return error_response(Code.BAD_OPTION, "bad option " + ",".join(map(str, numbers)))
    for n in bad:
        request.options.remove(n)
    return None


def suppressed(request: Message, response: Message, multicast: bool) -> bool:
    """Whether ``response`` must not be sent.

    A No-Response option (RFC 7967) decides when present. Without it, error responses to
    multicast requests are suppressed (RFC 7252 §8.2, RFC 7390 §2.7): a group of servers
    must not flood the client with errors.
    """
    cls = response.code >> 5
    value = request.options.get(_NO_RESPONSE)  # (no typed accessor: once per response)
    if value is not None:
        return bool(int.from_bytes(value, "big") & _NO_RESPONSE_BITS.get(cls, 0))
    return multicast and cls in (4, 5)


def multicast_delay(leisure: float, rng: random.Random) -> float:
    """Random wait before answering a multicast request (RFC 7252 §8.2: spread the replies)."""
    return rng.uniform(0.0, leisure) if leisure > 0 else 0.0
