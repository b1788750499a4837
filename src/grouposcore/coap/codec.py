"""CoAP over UDP wire format (RFC 7252 §3): header, token, options, payload marker.

Decoding is strict about the framing (anything RFC 7252 calls a message format error is
rejected with :class:`CoapDecodeError`) but lenient about option *contents*: whether a
bad value of a known option is an error depends on whether the option is critical and on
what the application understands (RFC 7252 §5.4.1), so that check is left to
:func:`validate_options` and :func:`unrecognized_critical`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import TYPE_CHECKING

from grouposcore.coap import message as _message
from grouposcore.coap.codes import CODE_TABLE, Type
from grouposcore.coap.options import (
    MAX_OPTION_NUMBER,
    MAX_OPTION_VALUE_LENGTH,
    OptionFormat,
    Options,
    OptionValue,
    option_def,
    registered_options,
)
from grouposcore.errors import CoapDecodeError, CoapEncodeError

if TYPE_CHECKING:
    from grouposcore.coap.message import Message

__all__ = [
    "decode",
    "decode_option_items",
    "decode_options",
    "encode",
    "encode_options",
    "unrecognized_critical",
    "validate_options",
]

_HEADER = struct.Struct("!BBH")
_TYPES = (Type.CON, Type.NON, Type.ACK, Type.RST)
_KNOWN = frozenset(registered_options())
_STRING = OptionFormat.STRING


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, bytes):
        return bytes(data)
    raise TypeError(f"expected bytes, not {type(data).__name__}")


# --- encoding -----------------------------------------------------------------------------


def _nibble(value: int, out: bytearray) -> int:
    """Return the 4-bit field for ``value`` and append its extension bytes to ``out``."""
    if value < 13:
        return value
    if value < 269:
        out.append(value - 13)
        return 13
    value -= 269
    out.append(value >> 8)
    out.append(value & 0xFF)
    return 14


def _encode_items(items: list[tuple[int, bytes]], out: bytearray) -> None:
    prev = 0
    for number, value in items:
        delta = number - prev
        prev = number
        length = len(value)
        if delta < 13 and length < 13:
            out.append(delta << 4 | length)
        else:
            if length > MAX_OPTION_VALUE_LENGTH:
                raise CoapEncodeError(
                    f"option {number} value of {length} bytes exceeds the maximum "
                    f"{MAX_OPTION_VALUE_LENGTH}"
                )
            pos = len(out)
            out.append(0)
            dn = _nibble(delta, out)
            ln = _nibble(length, out)
            out[pos] = dn << 4 | ln
        out += value


def encode_options(options: Options | Iterable[tuple[int, OptionValue]]) -> bytes:
    """Option sequence without header or payload marker (e.g. for OSCORE's plaintext)."""
    if not isinstance(options, Options):
        options = Options(options)
    out = bytearray()
    _encode_items(options._items, out)
    return bytes(out)


def _bad_int(name: str, value: object, hi: int) -> CoapEncodeError:
    return CoapEncodeError(f"{name} {value!r} is not an integer in 0..{hi}")


def encode(msg: Message) -> bytes:
    """Serialize ``msg`` to one UDP datagram."""
    token = msg.token
    tkl = len(token)
    if tkl > 8:
        raise CoapEncodeError(f"token of {tkl} bytes is longer than 8")
    code, mid, mtype = msg.code, msg.mid, msg.mtype
    if not isinstance(code, int) or not 0 <= code <= 0xFF:
        raise _bad_int("code", code, 0xFF)
    if not isinstance(mid, int) or not 0 <= mid <= 0xFFFF:
        raise _bad_int("message ID", mid, 0xFFFF)
    if not isinstance(mtype, int) or not 0 <= mtype <= 3:
        raise _bad_int("message type", mtype, 3)
    items = msg.options._items
    payload = msg.payload
    if code == 0 and (tkl or items or payload):
        raise CoapEncodeError("an Empty message (0.00) cannot carry a token, options or payload")
    out = bytearray(_HEADER.pack(0x40 | mtype << 4 | tkl, code, mid))
    out += token
    if items:
        _encode_items(items, out)
    if payload:
        out.append(0xFF)
        out += payload
    return bytes(out)


# --- decoding -----------------------------------------------------------------------------


def _decode_options(data: bytes, i: int) -> tuple[Options, bytes]:
    """Parse options from ``data[i:]`` up to the end or the payload marker."""
    items, payload = _decode_items(data, i)
    return Options._from_sorted(items), payload


def _decode_items(data: bytes, i: int) -> tuple[list[tuple[int, bytes]], bytes]:
    """The (number, value) list in wire order and the payload of ``data[i:]``."""
    n = len(data)
    items: list[tuple[int, bytes]] = []
    number = 0
    while i < n:
        b = data[i]
        i += 1
        if b == 0xFF:
            if i == n:
                raise CoapDecodeError("payload marker 0xFF is not followed by a payload")
            return items, data[i:]
        delta = b >> 4
        length = b & 0x0F
        if delta >= 13:
            if delta == 13:
                if i >= n:
                    raise CoapDecodeError("truncated option delta extension (1 byte expected)")
                delta = data[i] + 13
                i += 1
            elif delta == 14:
                if i + 2 > n:
                    raise CoapDecodeError("truncated option delta extension (2 bytes expected)")
                delta = (data[i] << 8 | data[i + 1]) + 269
                i += 2
            else:
                raise CoapDecodeError(
                    f"option delta nibble 15 with length nibble {length}: reserved "
                    "(only the full byte 0xFF is the payload marker)"
                )
        number += delta
        if length >= 13:
            if length == 13:
                if i >= n:
                    raise CoapDecodeError(
                        f"option {number}: truncated length extension (1 byte expected)"
                    )
                length = data[i] + 13
                i += 1
            elif length == 14:
                if i + 2 > n:
                    raise CoapDecodeError(
                        f"option {number}: truncated length extension (2 bytes expected)"
                    )
                length = (data[i] << 8 | data[i + 1]) + 269
                i += 2
            else:
                raise CoapDecodeError(f"option {number}: length nibble 15 is reserved")
        if number > MAX_OPTION_NUMBER:
            raise CoapDecodeError(f"option number {number} exceeds {MAX_OPTION_NUMBER}")
        end = i + length
        if end > n:
            raise CoapDecodeError(
                f"option {number}: value of {length} bytes truncated ({n - i} available)"
            )
        items.append((number, data[i:end]))
        i = end
    return items, b""


def decode_options(data: bytes, offset: int = 0) -> tuple[Options, bytes]:
    """Options and payload from a header-less byte string starting at ``offset`` (e.g.
    OSCORE's inner plaintext after its code byte, without copying it first)."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    return _decode_options(data, offset)


def decode_option_items(data: bytes, offset: int = 0) -> tuple[list[tuple[int, bytes]], bytes]:
    """:func:`decode_options` as a plain (number, value) list in wire order, for code that
    merges option lists itself (OSCORE's inner message) and would unwrap Options anyway."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    return _decode_items(data, offset)


def decode(data: bytes) -> Message:
    """Parse one UDP datagram; any framing error raises :class:`CoapDecodeError`."""
    if type(data) is not bytes:
        data = _as_bytes(data)
    n = len(data)
    if n < 4:
        raise CoapDecodeError(f"datagram of {n} bytes is shorter than the 4-byte CoAP header")
    b0 = data[0]
    if b0 >> 6 != 1:
        raise CoapDecodeError(f"unsupported CoAP version {b0 >> 6} (expected 1)")
    tkl = b0 & 0x0F
    if tkl > 8:
        raise CoapDecodeError(f"reserved token length {tkl} (9-15 are a format error)")
    code = data[1]
    if code == 0 and (tkl or n > 4):
        if tkl:
            raise CoapDecodeError(f"Empty message (0.00) with a token of length {tkl}")
        raise CoapDecodeError(f"Empty message (0.00) with {n - 4} bytes after the header")
    end = 4 + tkl
    if end > n:
        raise CoapDecodeError(f"token truncated: length {tkl}, {n - 4} bytes available")
    if end == n:
        options, payload = Options._from_sorted([]), b""
    else:
        items, payload = _decode_items(data, end)
        options = Options._from_sorted(items)
    return _message.Message(
        CODE_TABLE[code],
        _TYPES[(b0 >> 4) & 3],
        data[2] << 8 | data[3],
        data[4:end],
        options,
        payload,
    )


# --- content checks left to the application ---------------------------------------------


def validate_options(options: Options) -> list[int]:
    """Numbers of options whose values break their registered length or format.

    Also lists a non-repeatable option that occurs more than once: RFC 7252 §5.4.5 says the
    extra occurrences are to be treated like unrecognized options. Unknown numbers are
    opaque and never listed here (see :func:`unrecognized_critical`). Ascending order.
    """
    bad: list[int] = []
    prev = -1
    for number, value in options:
        d = option_def(number)
        ok = d.min_len <= len(value) <= d.max_len
        if ok and d.format is _STRING:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                ok = False
        if ok and number == prev and not d.repeatable:
            ok = False
        if not ok and (not bad or bad[-1] != number):
            bad.append(number)
        prev = number
    return bad


def unrecognized_critical(options: Options, known: set[int] | None = None) -> list[int]:
    """Critical (odd) option numbers not in ``known`` (default: the built-in registry).

    A request carrying any of them must be answered with 4.02 Bad Option, a response or
    a non-request must be rejected (RFC 7252 §5.4.1).
    """
    k: set[int] | frozenset[int] = _KNOWN if known is None else known
    return [n for n in options.numbers() if n & 1 and n not in k]
