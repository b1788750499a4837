"""The CoAP code enum (RFC 7252 §12.1) and its names, with no imports from grouposcore.

It lives outside :mod:`grouposcore.coap` so that :mod:`grouposcore.errors`, which every
layer imports (the coap package included), can give its exceptions real :class:`Code`
values: importing ``grouposcore.coap.codes`` from errors.py would run the coap package's
``__init__``, which imports errors.py back. Use it as ``grouposcore.coap.Code``; this module
is an implementation detail.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Code", "code_name", "code_str"]


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


_PRETTY: dict[int, str] = {
    c.value: c.name.replace("_", " ").title() if c >= 64 else c.name for c in Code
}


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
