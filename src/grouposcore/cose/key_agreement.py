"""Static-static ECDH for Group OSCORE pairwise keys (ECDH-SS + HKDF, COSE -27 / -28).

Group members usually hold Ed25519 signing keys; pairwise mode reuses them for X25519 by
mapping Edwards points to Montgomery form (RFC 7748 §4.1 birational map). That map is the
only field arithmetic here; scalar multiplication itself is done by ``cryptography``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from grouposcore.cose.algorithms import HKDF_SHA256, HKDF_SHA512, HkdfAlgorithm, _is_int
from grouposcore.errors import KeyAgreementError, UnknownAlgorithm

__all__ = [
    "ECDH_SS_HKDF_256",
    "ECDH_SS_HKDF_512",
    "AgreementPrivateKey",
    "AgreementPublicKey",
    "KeyAgreementAlgorithm",
    "ed25519_private_to_x25519",
    "ed25519_public_to_x25519",
    "edwards25519_point_is_valid",
    "key_agreement_by_id",
]

AgreementPrivateKey = Ed25519PrivateKey | X25519PrivateKey | ec.EllipticCurvePrivateKey
AgreementPublicKey = Ed25519PublicKey | X25519PublicKey | ec.EllipticCurvePublicKey

_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P  # edwards25519 curve constant d
_Y_MASK = (1 << 255) - 1


def _edwards_y(encoded: bytes) -> int:
    """Decode an Ed25519 public key to its y coordinate, checking RFC 8032 §5.1.3 validity."""
    if len(encoded) != 32:
        raise KeyAgreementError("Ed25519 public key must be 32 bytes")
    n = int.from_bytes(encoded, "little")
    y, x_sign = n & _Y_MASK, n >> 255
    if y >= _P:
        raise KeyAgreementError("non-canonical Ed25519 public key (y >= p)")
    y2 = y * y % _P
    # x^2 = (y^2 - 1) / (d y^2 + 1); the denominator never vanishes since -1/d is a non-square.
    x2 = (y2 - 1) * pow(_D * y2 + 1, -1, _P) % _P
    if x2 == 0:
        if x_sign:
            raise KeyAgreementError("non-canonical Ed25519 public key (x = 0 with sign bit)")
    elif pow(x2, (_P - 1) // 2, _P) != 1:
        raise KeyAgreementError("Ed25519 public key is not a point on the curve")
    return y


def edwards25519_point_is_valid(encoded: bytes) -> bool:
    """True if ``encoded`` is a canonical encoding of a point on edwards25519."""
    try:
        _edwards_y(encoded)
    except KeyAgreementError:
        return False
    return True


def ed25519_public_to_x25519(pub: Ed25519PublicKey) -> X25519PublicKey:
    """Map an Ed25519 public key to X25519: u = (1 + y) / (1 - y) mod p."""
    y = _edwards_y(pub.public_bytes_raw())
    if y in (1, _P - 1):  # identity and the order-2 point: 1 - y = 0 or u = 0
        raise KeyAgreementError("Ed25519 public key has y = ±1 and no usable Montgomery form")
    u = (1 + y) * pow(1 - y, -1, _P) % _P
    return X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))


def ed25519_private_to_x25519(priv: Ed25519PrivateKey) -> X25519PrivateKey:
    """Derive the X25519 scalar Ed25519 itself signs with: clamp(SHA-512(seed)[:32])."""
    digest = hashes.Hash(hashes.SHA512())
    digest.update(priv.private_bytes_raw())
    a = bytearray(digest.finalize()[:32])
    a[0] &= 248
    a[31] &= 127
    a[31] |= 64
    return X25519PrivateKey.from_private_bytes(bytes(a))


@dataclass(frozen=True)
class KeyAgreementAlgorithm:
    """ECDH-SS with the HKDF that Group OSCORE uses for its pairwise key derivation."""

    id: int
    name: str
    hkdf: HkdfAlgorithm

    def shared_secret(
        self, own_private_key: AgreementPrivateKey, peer_public_key: AgreementPublicKey
    ) -> bytes:
        """Raw ECDH output (x coordinate / u); Ed25519 keys on either side are mapped first."""
        own, peer = own_private_key, peer_public_key
        if isinstance(own, Ed25519PrivateKey):
            own = ed25519_private_to_x25519(own)
        if isinstance(peer, Ed25519PublicKey):
            peer = ed25519_public_to_x25519(peer)
        if isinstance(own, X25519PrivateKey) and isinstance(peer, X25519PublicKey):
            try:
                secret = own.exchange(peer)
            except ValueError:  # OpenSSL refuses the all-zero result of a small-order point
                raise KeyAgreementError("X25519 with a small-order public key") from None
            if secret == bytes(32):
                raise KeyAgreementError("X25519 with a small-order public key")
            return secret
        if isinstance(own, ec.EllipticCurvePrivateKey) and isinstance(
            peer, ec.EllipticCurvePublicKey
        ):
            if own.curve.name != peer.curve.name:
                raise KeyAgreementError(
                    f"ECDH curve mismatch: {own.curve.name} vs {peer.curve.name}"
                )
            try:
                return own.exchange(ec.ECDH(), peer)
            except ValueError as e:
                raise KeyAgreementError(f"ECDH failed: {e}") from None
        raise KeyAgreementError(
            f"no ECDH between {type(own_private_key).__name__} and {type(peer_public_key).__name__}"
        )


ECDH_SS_HKDF_256 = KeyAgreementAlgorithm(-27, "ECDH-SS + HKDF-256", HKDF_SHA256)
ECDH_SS_HKDF_512 = KeyAgreementAlgorithm(-28, "ECDH-SS + HKDF-512", HKDF_SHA512)
_KEY_AGREEMENTS = {a.id: a for a in (ECDH_SS_HKDF_256, ECDH_SS_HKDF_512)}


def key_agreement_by_id(alg_id: int) -> KeyAgreementAlgorithm:
    """Look up a pairwise key agreement algorithm by COSE id (-27, -28)."""
    alg = _KEY_AGREEMENTS.get(alg_id) if _is_int(alg_id) else None
    if alg is None:
        raise UnknownAlgorithm(f"unsupported key agreement algorithm {alg_id!r}")
    return alg
