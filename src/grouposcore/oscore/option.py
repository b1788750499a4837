"""The OSCORE option value: the compressed COSE header (RFC 8613 §6.1, RFC 10021 §4.3).

``flags || PIV (n bytes) || [s || kid context (s bytes)] || kid (rest)``, with the Group
Flag 0x20 added by Group OSCORE. Decoding is strict: reserved bits, reserved PIV lengths
and truncated fields are errors, never silently accepted.
"""

from __future__ import annotations

from typing import NamedTuple

from grouposcore.errors import OscoreDecodeError

FLAG_PIV_MASK = 0x07
FLAG_KID = 0x08
FLAG_KID_CONTEXT = 0x10
FLAG_GROUP = 0x20
FLAG_RESERVED = 0xC0

MAX_PIV_LEN = 5


class OscoreOption(NamedTuple):
    """Decoded OSCORE option. ``None`` means the field is absent (h'' is a present, empty kid).

    A NamedTuple rather than a frozen dataclass: it is built for every received message.
    """

    piv: bytes | None = None
    kid: bytes | None = None
    kid_context: bytes | None = None
    group: bool = False

    def encode(self) -> bytes:
        return encode_option(self.piv, self.kid, self.kid_context, self.group)

    @classmethod
    def decode(cls, value: bytes) -> OscoreOption:
        return decode_option(value)


def encode_option(
    piv: bytes | None, kid: bytes | None, kid_context: bytes | None, group: bool = False
) -> bytes:
    flags = 0
    parts = []
    if piv is not None:
        if not 1 <= len(piv) <= MAX_PIV_LEN:
            raise OscoreDecodeError(f"Partial IV must be 1 to 5 bytes, got {len(piv)}")
        flags |= len(piv)
        parts.append(piv)
    if kid_context is not None:
        if len(kid_context) > 255:
            raise OscoreDecodeError("kid context longer than 255 bytes")
        flags |= FLAG_KID_CONTEXT
        parts.append(bytes((len(kid_context),)))
        parts.append(kid_context)
    if kid is not None:
        flags |= FLAG_KID
        parts.append(kid)
    if group:
        flags |= FLAG_GROUP
    if flags == 0:
        return b""
    return bytes((flags,)) + b"".join(parts)


#: builds an OscoreOption from a 4-tuple without the keyword-argument ``__new__`` (the
#: receive hot path decodes one option per message)
_make = tuple.__new__
_EMPTY = OscoreOption()


def decode_option(value: bytes) -> OscoreOption:
    if not value:
        return _EMPTY
    flags = value[0]
    if flags & FLAG_RESERVED:
        raise OscoreDecodeError(f"reserved OSCORE flag bits set: 0x{flags:02x}")
    if flags == 0:
        raise OscoreDecodeError("OSCORE option with all flags zero must be empty")
    n = flags & FLAG_PIV_MASK
    if n > MAX_PIV_LEN:
        raise OscoreDecodeError(f"reserved Partial IV length {n}")
    pos = 1
    piv = None
    if n:
        if len(value) < pos + n:
            raise OscoreDecodeError("OSCORE option truncated in the Partial IV")
        piv = value[pos : pos + n]
        pos += n
    kid_context = None
    if flags & FLAG_KID_CONTEXT:
        if len(value) < pos + 1:
            raise OscoreDecodeError("OSCORE option truncated before the kid context length")
        s = value[pos]
        pos += 1
        if len(value) < pos + s:
            raise OscoreDecodeError("OSCORE option truncated in the kid context")
        kid_context = value[pos : pos + s]
        pos += s
    kid = None
    if flags & FLAG_KID:
        kid = value[pos:]
    elif pos != len(value):
        raise OscoreDecodeError("trailing bytes in OSCORE option without kid flag")
    return _make(OscoreOption, (piv, kid, kid_context, bool(flags & FLAG_GROUP)))


def piv_from_int(seq: int) -> bytes:
    """Partial IV encoding of a sequence number: big-endian, leading zeros stripped, 0 -> 00."""
    return seq.to_bytes(max(1, (seq.bit_length() + 7) // 8), "big")


def piv_to_int(piv: bytes) -> int:
    return int.from_bytes(piv, "big")
