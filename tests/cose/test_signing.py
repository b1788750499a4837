"""Signature algorithms: COSE raw r||s form, rejection paths, and the G3 countersignature."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from grouposcore.cose import (
    EDDSA,
    ES256,
    ES384,
    ES512,
    SignatureAlgorithm,
    countersign_structure,
    enc_structure,
    signature_by_id,
)
from grouposcore.errors import CoseError, SignatureError, UnknownAlgorithm

ALGS = [EDDSA, ES256, ES384, ES512]


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def test_table() -> None:
    got = {a.id: (a.name, a.signature_len, a.kty, a.crv) for a in ALGS}
    assert got == {
        -8: ("EdDSA", 64, 1, 6),
        -7: ("ES256", 64, 2, 1),
        -35: ("ES384", 96, 2, 2),
        -36: ("ES512", 132, 2, 3),
    }
    for a in ALGS:
        assert signature_by_id(a.id) is a
    for bad in (-19, -9, -27, 0, "-8", None, False):
        with pytest.raises(UnknownAlgorithm):
            signature_by_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
def test_sign_verify_and_tamper(alg: SignatureAlgorithm) -> None:
    priv = alg.generate_private_key()
    pub = priv.public_key()
    assert alg.accepts_key(priv) and alg.accepts_key(pub)
    data = b"countersign me"
    sig = alg.sign(priv, data)
    assert len(sig) == alg.signature_len
    alg.verify(pub, sig, data)
    with pytest.raises(SignatureError):
        alg.verify(pub, sig, data + b"!")
    for i in (0, len(sig) // 2, len(sig) - 1):
        bad = bytearray(sig)
        bad[i] ^= 0x80
        with pytest.raises(SignatureError):
            alg.verify(pub, bytes(bad), data)
    for wrong_len in (sig[:-1], sig + b"\x00", b""):
        with pytest.raises(SignatureError):
            alg.verify(pub, wrong_len, data)
    with pytest.raises(SignatureError):
        alg.verify(alg.generate_private_key().public_key(), sig, data)


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
def test_wrong_key_types(alg: SignatureAlgorithm) -> None:
    sig = bytes(alg.signature_len)
    for other in ALGS:
        if other is alg:
            continue
        key = other.generate_private_key()
        assert not alg.accepts_key(key) and not alg.accepts_key(key.public_key())
        with pytest.raises(SignatureError):
            alg.verify(key.public_key(), sig, b"data")
        with pytest.raises(CoseError):
            alg.sign(key, b"data")
    x = X25519PrivateKey.generate()
    assert not alg.accepts_key(x)
    with pytest.raises(SignatureError):
        alg.verify(x.public_key(), sig, b"data")  # type: ignore[arg-type]
    with pytest.raises(CoseError):
        alg.sign(x, b"data")  # type: ignore[arg-type]


def test_ecdsa_raw_form_is_fixed_width_r_s() -> None:
    """A signature with small r and s still has full width and verifies as DER would."""
    priv = ES256.generate_private_key()
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    data = b"m"
    for _ in range(20):
        sig = ES256.sign(priv, data)
        assert len(sig) == 64
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        priv.public_key().verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    p521 = ES512.generate_private_key()
    assert len(ES512.sign(p521, data)) == 132


def test_ecdsa_zero_signature_rejected() -> None:
    priv = ES256.generate_private_key()
    with pytest.raises(SignatureError):
        ES256.verify(priv.public_key(), bytes(64), b"data")


def _vector(group_vectors: dict[str, Any], vid: str) -> dict[str, Any]:
    return next(v for v in group_vectors["vectors"] if v["id"] == vid)


def test_g3_structures_and_signature(group_vectors: dict[str, Any]) -> None:
    g3 = _vector(group_vectors, "G3")
    inter = g3["intermediate"]
    aad_array, ct = h(inter["aad_array"]), h(g3["outputs"]["ciphertext"])
    assert enc_structure(aad_array) == h(inter["aad_enc_structure"])
    to_sign = countersign_structure(aad_array, ct)
    assert to_sign == h(inter["countersign_structure"])
    seed = h(group_vectors["common_inputs"]["creds"]["client"]["ed25519_seed"])
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    sig = EDDSA.sign(priv, to_sign)
    assert sig == h(inter["signature"])
    EDDSA.verify(priv.public_key(), sig, to_sign)
    # the 4-element diagnostic form must not verify against the real signature
    diag = group_vectors["diagnostics"][0]
    with pytest.raises(SignatureError):
        EDDSA.verify(priv.public_key(), sig, h(diag["countersign_structure_4elem"]))


@pytest.mark.parametrize("vid,signer", [("G3", "client"), ("G4", "server"), ("G5", "server")])
def test_group_mode_signatures(group_vectors: dict[str, Any], vid: str, signer: str) -> None:
    v = _vector(group_vectors, vid)
    inter = v["intermediate"]
    structure = countersign_structure(h(inter["aad_array"]), h(v["outputs"]["ciphertext"]))
    assert structure == h(inter["countersign_structure"])
    seed = h(group_vectors["common_inputs"]["creds"][signer]["ed25519_seed"])
    assert EDDSA.sign(Ed25519PrivateKey.from_private_bytes(seed), structure) == h(
        inter["signature"]
    )


def test_g8_signature(group_vectors: dict[str, Any]) -> None:
    g8 = _vector(group_vectors, "G8")
    structure = countersign_structure(
        h(g8["intermediate"]["group_request_aad_array"]),
        h(g8["outputs"]["group_request_ciphertext"]),
    )
    seed = h(group_vectors["common_inputs"]["creds"]["client"]["ed25519_seed"])
    sig = EDDSA.sign(Ed25519PrivateKey.from_private_bytes(seed), structure)
    assert sig == h(g8["intermediate"]["group_request_signature"])


@pytest.mark.parametrize("alg", ALGS, ids=lambda a: a.name)
def test_key_verifier_checks_any_fitting_key_with_one_function(alg: SignatureAlgorithm) -> None:
    verify = alg.key_verifier()
    keys = [alg.generate_private_key() for _ in range(2)]
    for key in keys:
        verify(key.public_key(), alg.sign(key, b"data"), b"data")
    sig = alg.sign(keys[0], b"data")
    with pytest.raises(SignatureError):
        verify(keys[1].public_key(), sig, b"data")
    with pytest.raises(SignatureError):
        verify(keys[0].public_key(), sig, b"other")
    with pytest.raises(SignatureError):
        verify(keys[0].public_key(), sig[:-1], b"data")
