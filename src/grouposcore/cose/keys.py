"""COSE_Key (RFC 9052 §7, RFC 9053 §7) <-> ``cryptography`` key objects, and key files.

Parsing is strict: every malformed or unusable key raises :class:`CredentialError`, so a
hostile credential can never surface as a ``KeyError`` or a ``cryptography`` exception.
"""

from __future__ import annotations

import io
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from grouposcore.errors import CredentialError

__all__ = [
    "CRV_ED25519",
    "CRV_P256",
    "CRV_P384",
    "CRV_P521",
    "CRV_X25519",
    "KTY_EC2",
    "KTY_OKP",
    "AnyPrivateKey",
    "AnyPublicKey",
    "cose_key_from_public",
    "decode_cbor_strict",
    "key_kty_crv",
    "private_key_from_bytes",
    "private_key_from_cose_key",
    "private_key_to_bytes",
    "private_key_to_cose_key",
    "public_key_bytes",
    "public_key_from_cose_key",
]

# Everything a COSE_Key here can hold; X25519 only serves pairwise-mode key agreement.
AnyPrivateKey = Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey
AnyPublicKey = Ed25519PublicKey | X25519PublicKey | ec.EllipticCurvePublicKey

KTY_OKP, KTY_EC2 = 1, 2
CRV_P256, CRV_P384, CRV_P521, CRV_X25519, CRV_ED25519 = 1, 2, 3, 4, 6

_LBL_KTY, _LBL_ALG, _LBL_CRV, _LBL_X, _LBL_Y, _LBL_D = 1, 3, -1, -2, -3, -4

# COSE crv -> (curve class, coordinate length in bytes)
_EC2: dict[int, tuple[type[ec.EllipticCurve], int]] = {
    CRV_P256: (ec.SECP256R1, 32),
    CRV_P384: (ec.SECP384R1, 48),
    CRV_P521: (ec.SECP521R1, 66),
}
_EC2_BY_NAME: dict[str, int] = {cls().name: crv for crv, (cls, _) in _EC2.items()}


def decode_cbor_strict(data: bytes, what: str = "CBOR item") -> Any:
    """Decode exactly one CBOR item (no trailing bytes, no duplicate map keys).

    Any failure, whatever cbor2 raises, becomes :class:`CredentialError`.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CredentialError(f"{what} must be bytes")
    data = bytes(data)
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            fp, read_size=1, allow_duplicate_keys=False, max_depth=32
        ).decode()
    except Exception as e:  # cbor2 raises a wide variety of errors on hostile input
        raise CredentialError(f"malformed {what}: {e}") from None
    if fp.tell() != len(data):
        raise CredentialError(f"trailing bytes after {what}")
    return value


def key_kty_crv(key: object) -> tuple[int, int]:
    """(kty, crv) of a public or private key object, for credential metadata."""
    if isinstance(key, Ed25519PublicKey | Ed25519PrivateKey):
        return KTY_OKP, CRV_ED25519
    if isinstance(key, X25519PublicKey | X25519PrivateKey):
        return KTY_OKP, CRV_X25519
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        crv = _EC2_BY_NAME.get(key.curve.name)
        if crv is not None:
            return KTY_EC2, crv
    raise CredentialError(f"unsupported key type {type(key).__name__}")


def public_key_bytes(pub: AnyPublicKey) -> bytes:
    """Raw x (OKP) or x || y (EC2): a compact form for display and comparison."""
    if isinstance(pub, Ed25519PublicKey | X25519PublicKey):
        return pub.public_bytes_raw()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return pub.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
    raise CredentialError(f"unsupported key type {type(pub).__name__}")


def cose_key_from_public(public_key: AnyPublicKey, alg: int | None = None) -> dict[int, Any]:
    """COSE_Key map in the order kty, alg, crv, x[, y] (the order credentials are built in)."""
    if isinstance(public_key, Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise CredentialError("expected a public key, got a private key")
    kty, crv = key_kty_crv(public_key)
    m: dict[int, Any] = {_LBL_KTY: kty}
    if alg is not None:
        m[_LBL_ALG] = alg
    m[_LBL_CRV] = crv
    raw = public_key_bytes(public_key)
    if kty == KTY_OKP:
        m[_LBL_X] = raw
    else:
        half = len(raw) // 2
        m[_LBL_X], m[_LBL_Y] = raw[:half], raw[half:]
    return m


def _get(m: dict[Any, Any], label: int, typ: type, what: str) -> Any:
    v = m.get(label)
    if v is None:
        raise CredentialError(f"COSE_Key lacks {what}")
    if not isinstance(v, typ) or (isinstance(v, bool) and typ is int):
        raise CredentialError(f"COSE_Key {what} has the wrong type")
    return v


def _check_map(m: object) -> tuple[int, int]:
    if not isinstance(m, dict):
        raise CredentialError("COSE_Key must be a map")
    if any(type(k) not in (int, str) for k in m):  # True == 1 would alias kty
        raise CredentialError("COSE_Key has a label that is neither int nor text")
    kty = _get(m, _LBL_KTY, int, "kty")
    crv = _get(m, _LBL_CRV, int, "crv")
    alg = m.get(_LBL_ALG)
    if _LBL_ALG in m and (not isinstance(alg, int) or isinstance(alg, bool)):
        raise CredentialError("COSE_Key alg must be an integer")
    return kty, crv


def public_key_from_cose_key(m: dict[Any, Any]) -> AnyPublicKey:
    """Load the public part of a COSE_Key; EC2 points are validated to lie on their curve."""
    kty, crv = _check_map(m)
    x = _get(m, _LBL_X, bytes, "x")
    if kty == KTY_OKP:
        if _LBL_Y in m:
            raise CredentialError("OKP COSE_Key must not carry y")
        if len(x) != 32:
            raise CredentialError("OKP x must be 32 bytes")
        if crv == CRV_ED25519:
            # The point itself is checked where it is used (ECDH mapping rejects it, signatures
            # fail): deployed credentials such as aiocoap's demo GM CCS (vector C1) carry an
            # x that is not on the curve, yet they must still work as opaque external_aad input.
            return Ed25519PublicKey.from_public_bytes(x)
        if crv == CRV_X25519:
            return X25519PublicKey.from_public_bytes(x)
        raise CredentialError(f"unsupported OKP curve {crv}")
    if kty == KTY_EC2:
        if crv not in _EC2:
            raise CredentialError(f"unsupported EC2 curve {crv}")
        curve_cls, size = _EC2[crv]
        if len(x) != size:
            raise CredentialError(f"EC2 x must be {size} bytes")
        y = m.get(_LBL_Y)
        if isinstance(y, bool):  # point compression: y is the sign bit (RFC 9053 §7.1.1)
            point = (b"\x03" if y else b"\x02") + x
        elif isinstance(y, bytes) and len(y) == size:
            point = b"\x04" + x + y
        else:
            raise CredentialError(f"EC2 y must be {size} bytes or a bool")
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(curve_cls(), point)
        except ValueError:
            raise CredentialError("EC2 point is not on the curve") from None
    raise CredentialError(f"unsupported key type {kty}")


def private_key_to_cose_key(priv: AnyPrivateKey, alg: int | None = None) -> dict[int, Any]:
    """COSE_Key with the public fields followed by d (-4)."""
    if not isinstance(priv, Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise CredentialError(f"unsupported private key type {type(priv).__name__}")
    m = cose_key_from_public(priv.public_key(), alg)
    if isinstance(priv, ec.EllipticCurvePrivateKey):
        size = _EC2[m[_LBL_CRV]][1]
        m[_LBL_D] = priv.private_numbers().private_value.to_bytes(size, "big")
    else:
        m[_LBL_D] = priv.private_bytes_raw()
    return m


def private_key_from_cose_key(m: dict[Any, Any]) -> AnyPrivateKey:
    """Load a private COSE_Key; public fields, when present, must match the private key."""
    kty, crv = _check_map(m)
    d = _get(m, _LBL_D, bytes, "d")
    priv: AnyPrivateKey
    if kty == KTY_OKP and crv in (CRV_ED25519, CRV_X25519):
        if len(d) != 32:
            raise CredentialError("OKP d must be 32 bytes")
        cls = Ed25519PrivateKey if crv == CRV_ED25519 else X25519PrivateKey
        priv = cls.from_private_bytes(d)
    elif kty == KTY_EC2 and crv in _EC2:
        curve_cls, size = _EC2[crv]
        if len(d) != size:
            raise CredentialError(f"EC2 d must be {size} bytes")
        try:
            priv = ec.derive_private_key(int.from_bytes(d, "big"), curve_cls())
        except ValueError:
            raise CredentialError("EC2 d is out of range") from None
    else:
        raise CredentialError(f"unsupported key type/curve {kty}/{crv}")
    if _LBL_X in m:
        if public_key_from_cose_key(m) != priv.public_key():
            raise CredentialError("COSE_Key public part does not match d")
    return priv


def private_key_to_bytes(priv: AnyPrivateKey) -> bytes:
    """Key-file form: a CBOR-encoded private COSE_Key."""
    return cbor2.dumps(private_key_to_cose_key(priv))


def private_key_from_bytes(data: bytes) -> AnyPrivateKey:
    """Inverse of :func:`private_key_to_bytes`; CredentialError on anything malformed."""
    return private_key_from_cose_key(decode_cbor_strict(data, "private COSE_Key"))
