"""CoAP message types and codes (RFC 7252 §3, §12.1).

Codes are kept as plain ints on the wire side: a code this module does not know (e.g. a
future method or a reserved class) must survive a decode/encode round trip unchanged, so
the enums below are a naming convenience, never a filter.
"""

from __future__ import annotations

from enum import IntEnum

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


class Code(IntEnum):
    """Registered request methods and response codes (value = class << 5 | detail).

    ``str()`` and f-strings give the form people read (``2.04 Changed``, ``GET``);
    ``int()`` and ``%d`` the number.
    """

    def __str__(self) -> str:
        return code_name(self)

    def __format__(self, spec: str) -> str:
        return code_name(self) if not spec else format(int(self), spec)

    EMPTY = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    PATCH = 6
    IPATCH = 7

    CREATED = 65  # 2.01
    DELETED = 66  # 2.02
    VALID = 67  # 2.03
    CHANGED = 68  # 2.04
    CONTENT = 69  # 2.05
    CONTINUE = 95  # 2.31

    BAD_REQUEST = 128  # 4.00
    UNAUTHORIZED = 129  # 4.01
    BAD_OPTION = 130  # 4.02
    FORBIDDEN = 131  # 4.03
    NOT_FOUND = 132  # 4.04
    METHOD_NOT_ALLOWED = 133  # 4.05
    NOT_ACCEPTABLE = 134  # 4.06
    REQUEST_ENTITY_INCOMPLETE = 136  # 4.08
    CONFLICT = 137  # 4.09
    PRECONDITION_FAILED = 140  # 4.12
    REQUEST_ENTITY_TOO_LARGE = 141  # 4.13
    UNSUPPORTED_CONTENT_FORMAT = 143  # 4.15
    UNPROCESSABLE_ENTITY = 150  # 4.22
    TOO_MANY_REQUESTS = 157  # 4.29

    INTERNAL_SERVER_ERROR = 160  # 5.00
    NOT_IMPLEMENTED = 161  # 5.01
    BAD_GATEWAY = 162  # 5.02
    SERVICE_UNAVAILABLE = 163  # 5.03
    GATEWAY_TIMEOUT = 164  # 5.04
    PROXYING_NOT_SUPPORTED = 165  # 5.05


# Lookup table used by the decoder: known codes become enum members (nicer reprs), the
# rest stay plain ints. Indexing a tuple is cheaper than calling the enum per message.
CODE_TABLE: tuple[int, ...] = tuple(
    Code(i) if i in Code._value2member_map_ else i for i in range(256)
)

_PRETTY: dict[int, str] = {
    c.value: c.name.replace("_", " ").title() if c >= 64 else c.name for c in Code
}


def make_code(cls: int, detail: int) -> int:
    """Build a code from its class (0-7) and detail (0-31), e.g. ``make_code(2, 5) == 69``."""
    if not (0 <= cls <= 7 and 0 <= detail <= 31):
        raise CoapEncodeError(f"code {cls}.{detail:02d} out of range (class 0-7, detail 0-31)")
    return cls << 5 | detail


def code_str(code: int) -> str:
    """The dotted ``c.dd`` form used in the RFCs (69 -> ``"2.05"``)."""
    return f"{code >> 5}.{code & 0x1F:02d}"


def code_name(code: int) -> str:
    """Human-readable form for logs: ``GET``, ``2.05 Content``, or just ``3.07`` if unknown."""
    name = _PRETTY.get(code)
    if name is None:
        return code_str(code)
    if code < 32:
        return name
    return f"{code_str(code)} {name}"


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
