"""Byte-level CBOR for the per-message COSE structures (hot path: no cbor2 calls).

Both structures have a constant prefix; only the byte-string heads depend on the input, so
they are built by concatenation.
"""

from __future__ import annotations

from grouposcore.errors import CoseError

__all__ = [
    "cbor_array_head",
    "cbor_bstr",
    "cbor_int",
    "cbor_map_head",
    "cbor_tstr",
    "cbor_uint",
    "countersign_structure",
    "enc_structure",
]

_MAX_ARG = 2**64 - 1


def _head(major: int, n: int) -> bytes:
    """CBOR initial byte(s) with the shortest argument encoding (RFC 8949 §3)."""
    mt = major << 5
    if n < 24:
        return bytes((mt | n,))
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    if n <= _MAX_ARG:
        return bytes((mt | 27,)) + n.to_bytes(8, "big")
    raise CoseError(f"CBOR argument {n} does not fit in 64 bits")


def cbor_uint(n: int) -> bytes:
    """Unsigned integer (major type 0)."""
    if n < 0:
        raise CoseError(f"cbor_uint needs n >= 0, got {n}")
    return _head(0, n)


def cbor_int(n: int) -> bytes:
    """Any integer: major type 0 for n >= 0, major type 1 (encoding -1 - n) otherwise."""
    return _head(0, n) if n >= 0 else _head(1, -1 - n)


_SHORT_BSTR_HEADS = [bytes((0x40 | n,)) for n in range(24)]


def cbor_bstr(data: bytes) -> bytes:
    """Byte string (major type 2): head plus the bytes themselves."""
    n = len(data)
    if n < 24:  # the common case on the hot path (kids, PIVs, Gids, options)
        return _SHORT_BSTR_HEADS[n] + data
    if n < 0x100:
        return bytes((0x58, n)) + data
    return _head(2, n) + data


def cbor_tstr(text: str) -> bytes:
    """Text string (major type 3), UTF-8."""
    raw = text.encode("utf-8")
    return _head(3, len(raw)) + raw


def cbor_array_head(length: int) -> bytes:
    """Head of a definite-length array (major type 4); the items follow."""
    return _head(4, length)


def cbor_map_head(length: int) -> bytes:
    """Head of a definite-length map (major type 5); the key/value pairs follow."""
    return _head(5, length)


# ["Encrypt0", h'' (protected), ...]
_ENC0_PREFIX = b"\x83\x68Encrypt0\x40"
# ["CounterSignature0", h'' (body_protected), h'' (sign_protected), ...]: the 5-element
# form aiocoap and Californium both sign (digest §5.5).
_CSIG0_PREFIX = b"\x85\x71CounterSignature0\x40\x40"


def enc_structure(external_aad: bytes) -> bytes:
    """Enc_structure for COSE_Encrypt0 with empty protected header: the AEAD's AAD."""
    return _ENC0_PREFIX + cbor_bstr(external_aad)


def countersign_structure(external_aad: bytes, ciphertext: bytes) -> bytes:
    """Countersign_structure over the ciphertext (encrypt-then-sign, group mode)."""
    return _CSIG0_PREFIX + cbor_bstr(external_aad) + cbor_bstr(ciphertext)
