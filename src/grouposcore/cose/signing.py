"""Signature algorithms for the Group OSCORE countersignature (EdDSA and ECDSA, COSE form).

COSE carries ECDSA signatures as fixed-width r || s (RFC 9053 §2.1), not DER; the conversion
happens here so callers only ever see the wire form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from grouposcore.cose.algorithms import _is_int
from grouposcore.cose.keys import AnyPrivateKey, AnyPublicKey
from grouposcore.errors import CoseError, SignatureError, UnknownAlgorithm

__all__ = [
    "EDDSA",
    "ES256",
    "ES384",
    "ES512",
    "KTY_EC2",
    "KTY_OKP",
    "PrivateKey",
    "PublicKey",
    "SignatureAlgorithm",
    "signature_by_id",
]

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

KTY_OKP = 1
KTY_EC2 = 2

# COSE crv -> (cryptography curve class, hash used by the matching ESxxx algorithm)
_EC_CURVES: dict[int, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm]]] = {
    1: (ec.SECP256R1, hashes.SHA256),
    2: (ec.SECP384R1, hashes.SHA384),
    3: (ec.SECP521R1, hashes.SHA512),
}


@dataclass(frozen=True)
class SignatureAlgorithm:
    """A COSE signature algorithm pinned to one key type and curve, as Group OSCORE uses it."""

    id: int
    name: str
    signature_len: int
    kty: int
    crv: int

    def accepts_key(self, key: object) -> bool:
        """True if ``key`` (private or public) has the key type and curve this algorithm needs."""
        if self.kty == KTY_OKP:
            return isinstance(key, Ed25519PrivateKey | Ed25519PublicKey)
        if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            return isinstance(key.curve, _EC_CURVES[self.crv][0])
        return False

    def generate_private_key(self) -> PrivateKey:
        """A fresh key for this algorithm (used by tests, tools and the Group Manager)."""
        if self.kty == KTY_OKP:
            return Ed25519PrivateKey.generate()
        return ec.generate_private_key(_EC_CURVES[self.crv][0]())

    def sign(self, private_key: AnyPrivateKey, data: bytes) -> bytes:
        """Sign ``data``; ECDSA output is raw r || s of ``signature_len`` bytes. Any key a
        COSE_Key can hold is accepted by type and rejected here unless it fits."""
        if not isinstance(private_key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey) or (
            not self.accepts_key(private_key)
        ):
            raise CoseError(f"{self.name} cannot sign with a {type(private_key).__name__}")
        if isinstance(private_key, Ed25519PrivateKey):
            return private_key.sign(data)
        der = private_key.sign(data, ec.ECDSA(_EC_CURVES[self.crv][1]()))
        r, s = decode_dss_signature(der)
        half = self.signature_len // 2
        return r.to_bytes(half, "big") + s.to_bytes(half, "big")

    def verify(self, public_key: AnyPublicKey, signature: bytes, data: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is valid for ``data``."""
        if len(signature) != self.signature_len:
            raise SignatureError(
                f"{self.name} signature must be {self.signature_len} bytes, got {len(signature)}"
            )
        if not isinstance(public_key, Ed25519PublicKey | ec.EllipticCurvePublicKey) or (
            not self.accepts_key(public_key)
        ):
            raise SignatureError(f"{self.name} cannot verify with a {type(public_key).__name__}")
        try:
            if isinstance(public_key, Ed25519PublicKey):
                public_key.verify(bytes(signature), data)
            else:
                half = self.signature_len // 2
                r = int.from_bytes(signature[:half], "big")
                s = int.from_bytes(signature[half:], "big")
                der = encode_dss_signature(r, s)
                public_key.verify(der, data, ec.ECDSA(_EC_CURVES[self.crv][1]()))
        except (InvalidSignature, ValueError):
            raise SignatureError(f"{self.name} signature does not verify") from None

    def signer(self, private_key: AnyPrivateKey) -> Callable[[bytes], bytes]:
        """A function that signs with ``private_key``: the key is checked once here, so the
        returned function does only the signing (the Group OSCORE hot path)."""
        if not self.accepts_key(private_key):
            raise CoseError(f"{self.name} cannot sign with a {type(private_key).__name__}")
        if isinstance(private_key, Ed25519PrivateKey):
            return private_key.sign
        return lambda data: self.sign(private_key, data)

    def verifier(self, public_key: AnyPublicKey) -> Callable[[bytes, bytes], None]:
        """A function ``(signature, data)`` that raises SignatureError unless valid; the key
        is checked once here."""
        if not self.accepts_key(public_key):
            raise SignatureError(f"{self.name} cannot verify with a {type(public_key).__name__}")
        if not isinstance(public_key, Ed25519PublicKey):
            return lambda signature, data: self.verify(public_key, signature, data)
        verify = public_key.verify
        name = self.name

        def verify_eddsa(signature: bytes, data: bytes) -> None:
            if len(signature) != 64:
                raise SignatureError(f"{name} signature must be 64 bytes, got {len(signature)}")
            try:
                verify(signature, data)
            except InvalidSignature:
                raise SignatureError(f"{name} signature does not verify") from None

        return verify_eddsa

    def key_verifier(self) -> Callable[[AnyPublicKey, bytes, bytes], None]:
        """A function ``(public_key, signature, data)`` that raises SignatureError unless
        valid, for keys already checked with :meth:`accepts_key`: one function serves every
        key, so a Group OSCORE member keeps none per Recipient Context."""
        if self.kty != KTY_OKP:
            return self.verify
        name = self.name

        def verify_eddsa(public_key: AnyPublicKey, signature: bytes, data: bytes) -> None:
            if len(signature) != 64:
                raise SignatureError(f"{name} signature must be 64 bytes, got {len(signature)}")
            try:
                cast(Ed25519PublicKey, public_key).verify(signature, data)
            except InvalidSignature:
                raise SignatureError(f"{name} signature does not verify") from None

        return verify_eddsa


EDDSA = SignatureAlgorithm(-8, "EdDSA", 64, KTY_OKP, 6)
ES256 = SignatureAlgorithm(-7, "ES256", 64, KTY_EC2, 1)
ES384 = SignatureAlgorithm(-35, "ES384", 96, KTY_EC2, 2)
ES512 = SignatureAlgorithm(-36, "ES512", 132, KTY_EC2, 3)
_SIGNATURES: dict[int, SignatureAlgorithm] = {a.id: a for a in (EDDSA, ES256, ES384, ES512)}


def signature_by_id(alg_id: int) -> SignatureAlgorithm:
    """Look up a signature algorithm by COSE id (-8, -7, -35, -36)."""
    alg = _SIGNATURES.get(alg_id) if _is_int(alg_id) else None
    if alg is None:
        raise UnknownAlgorithm(f"unsupported signature algorithm {alg_id!r}")
    return alg
