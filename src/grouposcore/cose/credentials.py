"""Authentication credentials: CWT Claims Sets (CCS, RFC 8392) carrying a COSE_Key in cnf.

A credential's identity is its exact byte string: that is what goes into the external_aad and
the pairwise-key IKM, so it is kept as received and never re-encoded (digest §10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2

from grouposcore.cose.keys import (
    CRV_ED25519,
    CRV_P256,
    CRV_P384,
    CRV_P521,
    CRV_X25519,
    KTY_EC2,
    KTY_OKP,
    AnyPublicKey,
    cose_key_from_public,
    decode_cbor_strict,
    public_key_from_cose_key,
)
from grouposcore.cose.signing import SignatureAlgorithm, signature_by_id
from grouposcore.errors import CoseError, CredentialError, UnknownAlgorithm

__all__ = [
    "CLAIM_CNF",
    "CLAIM_SUB",
    "CRED_FMT_KCCS",
    "CRED_FMT_KCWT",
    "CRED_FMT_X5CHAIN",
    "Credential",
]

# Credential formats are named by the COSE header parameter that would carry them.
CRED_FMT_KCWT = 13
CRED_FMT_KCCS = 14
CRED_FMT_X5CHAIN = 33

CLAIM_SUB = 2
CLAIM_CNF = 8
_CNF_COSE_KEY = 1
_LBL_D = -4

_KEY_AGREEMENT_CURVES = frozenset(
    {(KTY_OKP, CRV_ED25519), (KTY_OKP, CRV_X25519),
     (KTY_EC2, CRV_P256), (KTY_EC2, CRV_P384), (KTY_EC2, CRV_P521)}
)  # fmt: skip


def _check_labels(m: dict[Any, Any], what: str) -> None:
    # bool and float keys hash equal to ints (True == 1, 8.0 == 8) and would alias labels.
    for k in m:
        if type(k) not in (int, str):
            raise CredentialError(f"{what} has a label that is neither int nor text")


def _label_order(label: int | str) -> bytes:
    # Deterministic CBOR ordering (RFC 8949 §4.2.1): bytewise order of the encoded labels.
    return cbor2.dumps(label)


@dataclass(frozen=True, eq=False, slots=True)
class Credential:
    """A parsed credential; equality and hashing use only the exact bytes ``raw``.

    Slotted: every Recipient Context holds one, so its size counts per group member.
    """

    raw: bytes
    public_key: AnyPublicKey
    kty: int
    crv: int
    alg: int | None
    subject: str | None
    fmt: int = CRED_FMT_KCCS

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credential):
            return NotImplemented
        return self.raw == other.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Credential(subject={self.subject!r}, kty={self.kty}, crv={self.crv}, " \
               f"alg={self.alg}, raw={self.raw.hex()})"  # fmt: skip

    @classmethod
    def from_ccs(cls, raw: bytes) -> Credential:
        """Parse an untagged CCS; anything malformed or unusable raises CredentialError."""
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise CredentialError("a CCS must be given as bytes")
        raw = bytes(raw)
        if raw and raw[0] >> 5 == 6:
            raise CredentialError("CCS must be stored untagged")
        claims = decode_cbor_strict(raw, "CCS")
        if not isinstance(claims, dict):
            raise CredentialError("CCS is not a CBOR map")
        _check_labels(claims, "CCS")
        cnf = claims.get(CLAIM_CNF)
        if not isinstance(cnf, dict):
            raise CredentialError("CCS lacks a cnf (8) map")
        _check_labels(cnf, "cnf")
        cose_key = cnf.get(_CNF_COSE_KEY)
        if not isinstance(cose_key, dict):
            raise CredentialError("cnf lacks a COSE_Key (1)")
        _check_labels(cose_key, "COSE_Key")
        if _LBL_D in cose_key:
            raise CredentialError("credential carries a private key")
        public_key = public_key_from_cose_key(cose_key)
        subject = claims.get(CLAIM_SUB)
        if subject is not None and not isinstance(subject, str):
            raise CredentialError("CCS sub must be a text string")
        return cls(raw, public_key, cose_key[1], cose_key[-1], cose_key.get(3), subject)

    @classmethod
    def build_ccs(
        cls,
        public_key: AnyPublicKey,
        alg: int,
        subject: str | None = None,
        extra_claims: dict[int, Any] | None = None,
    ) -> Credential:
        """Encode a CCS deterministically.

        Claims in deterministic label order, then cnf; the COSE_Key as kty, alg, crv, x[, y].
        """
        claims: dict[int | str, Any] = {}
        if subject is not None:
            claims[CLAIM_SUB] = subject
        for label, value in (extra_claims or {}).items():
            if label == CLAIM_CNF or label in claims or type(label) not in (int, str):
                raise CredentialError(f"claim label {label!r} is reserved or duplicated")
            claims[label] = value
        try:
            sig = signature_by_id(alg)
        except UnknownAlgorithm:
            sig = None
        if sig is not None and not sig.accepts_key(public_key):
            raise CredentialError(f"{sig.name} does not fit a {type(public_key).__name__}")
        ordered = {label: claims[label] for label in sorted(claims, key=_label_order)}
        ordered[CLAIM_CNF] = {_CNF_COSE_KEY: cose_key_from_public(public_key, alg)}
        try:
            raw = cbor2.dumps(ordered)
        except Exception as e:  # unencodable extra claim values
            raise CoseError(f"cannot encode CCS: {e}") from None
        return cls.from_ccs(raw)

    def fits_signature(self, alg: SignatureAlgorithm) -> bool:
        """True if this credential can verify ``alg`` signatures (and does not name another alg)."""
        return (
            self.kty == alg.kty
            and self.crv == alg.crv
            and alg.accepts_key(self.public_key)
            and (self.alg is None or self.alg == alg.id)
        )

    def fits_key_agreement(self) -> bool:
        """True if the key can take part in ECDH (Ed25519 via its X25519 mapping)."""
        return (self.kty, self.crv) in _KEY_AGREEMENT_CURVES
