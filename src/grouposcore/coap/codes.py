"""CoAP message types and codes (RFC 7252 §3, §12.1).

Codes are kept as plain ints on the wire side: a code this module does not know (e.g. a
future method or a reserved class) must survive a decode/encode round trip unchanged, so
the enums are a naming convenience, never a filter. :class:`Code` is defined in
:mod:`grouposcore._coapcode` (so that :mod:`grouposcore.errors` can use it without an import
cycle) and is the same class here.
"""

from __future__ import annotations

from enum import IntEnum

from grouposcore._coapcode import Code, code_name, code_str
from grouposcore.errors import CoapEncodeError

__all__ = [
    "Code",
    "Type",
    "code_name",
    "code_str",
    "is_empty",
    "is_request",
    "is_response",
    "is_success",
    "make_code",
]


class Type(IntEnum):
    """The 2-bit message type of the CoAP header."""

    CON = 0
    NON = 1
    ACK = 2
    RST = 3


# Lookup table used by the decoder: known codes become enum members (nicer reprs), the
# rest stay plain ints. Indexing a tuple is cheaper than calling the enum per message.
CODE_TABLE: tuple[int, ...] = tuple(
    Code(i) if i in Code._value2member_map_ else i for i in range(256)
)


def make_code(cls: int, detail: int) -> int:
    """Build a code from its class (0-7) and detail (0-31), e.g. ``make_code(2, 5) == 69``."""
    if not (0 <= cls <= 7 and 0 <= detail <= 31):
        raise CoapEncodeError(f"code {cls}.{detail:02d} out of range (class 0-7, detail 0-31)")
    return cls << 5 | detail


def is_empty(code: int) -> bool:
    """0.00: the Empty message (ACK/RST/ping), which carries no token, options or payload."""
    return code == 0


def is_request(code: int) -> bool:
    """Class 0 with a non-zero detail (0.01-0.31)."""
    return 0 < code < 32


def is_response(code: int) -> bool:
    """Classes 2, 4 and 5 (and the unassigned class 3), i.e. 2.00-5.31."""
    return 64 <= code < 192


def is_success(code: int) -> bool:
    """Class 2 responses."""
    return 64 <= code < 96
