"""ECDH-SS: P-256 and Ed25519->X25519 vectors, the Edwards->Montgomery map, rejection paths."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.cose import (
    ECDH_SS_HKDF_256,
    ECDH_SS_HKDF_512,
    HKDF_SHA256,
    HKDF_SHA512,
    ed25519_private_to_x25519,
    ed25519_public_to_x25519,
    edwards25519_point_is_valid,
    key_agreement_by_id,
)
from grouposcore.errors import KeyAgreementError, UnknownAlgorithm

P = 2**255 - 19


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def _vec(group_vectors: dict[str, Any], vid: str, key: str = "primitive_vectors") -> Any:
    return next(v for v in group_vectors[key] if v["id"] == vid)


def test_lookup() -> None:
    assert key_agreement_by_id(-27) is ECDH_SS_HKDF_256 and ECDH_SS_HKDF_256.hkdf is HKDF_SHA256
    assert key_agreement_by_id(-28) is ECDH_SS_HKDF_512 and ECDH_SS_HKDF_512.hkdf is HKDF_SHA512
    for bad in (-29, -25, 27, None, True):
        with pytest.raises(UnknownAlgorithm):
            key_agreement_by_id(bad)  # type: ignore[arg-type]


def test_p1_p256(group_vectors: dict[str, Any]) -> None:
    p1 = _vec(group_vectors, "P1")
    keys = {}
    for name, k in p1["keys"].items():
        priv = ec.derive_private_key(int(k["d"], 16), ec.SECP256R1())
        nums = priv.public_key().public_numbers()
        assert (nums.x, nums.y) == (int(k["x"], 16), int(k["y"], 16))
        keys[name] = priv
    ka = ECDH_SS_HKDF_256
    e1, e2, e3 = keys["e1"], keys["e2"], keys["e3"]
    assert ka.shared_secret(e1, e2.public_key()) == h(p1["outputs"]["shared_e1_e2"])
    assert ka.shared_secret(e2, e1.public_key()) == h(p1["outputs"]["shared_e1_e2"])
    assert ka.shared_secret(e1, e3.public_key()) == h(p1["outputs"]["shared_e1_e3"])


def test_p2_ed25519_mapped(group_vectors: dict[str, Any]) -> None:
    p2 = _vec(group_vectors, "P2")
    privs = {}
    for name, k in p2["keys"].items():
        priv = Ed25519PrivateKey.from_private_bytes(h(k["ed25519_seed"]))
        assert priv.public_key().public_bytes_raw() == h(k["ed25519_pub"])
        assert ed25519_private_to_x25519(priv).private_bytes_raw() == h(k["x25519_priv"])
        assert ed25519_public_to_x25519(priv.public_key()).public_bytes_raw() == h(k["x25519_pub"])
        privs[name] = priv
    e1, e2, e3 = privs["e1"], privs["e2"], privs["e3"]
    ka = ECDH_SS_HKDF_256
    assert ka.shared_secret(e1, e2.public_key()) == h(p2["outputs"]["shared_e1_e2"])
    assert ka.shared_secret(e3, e1.public_key()) == h(p2["outputs"]["shared_e1_e3"])
    # mixed forms: mapped X25519 key on one side, Ed25519 on the other
    assert ka.shared_secret(ed25519_private_to_x25519(e1), e2.public_key()) == h(
        p2["outputs"]["shared_e1_e2"]
    )
    assert ka.shared_secret(e1, ed25519_public_to_x25519(e2.public_key())) == h(
        p2["outputs"]["shared_e1_e2"]
    )


def test_g2_client_server(group_vectors: dict[str, Any]) -> None:
    creds = group_vectors["common_inputs"]["creds"]
    inter = _vec(group_vectors, "G2", "vectors")["intermediate"]
    client = Ed25519PrivateKey.from_private_bytes(h(creds["client"]["ed25519_seed"]))
    server = Ed25519PrivateKey.from_private_bytes(h(creds["server"]["ed25519_seed"]))
    for who, priv in (("client", client), ("server", server)):
        assert ed25519_private_to_x25519(priv).private_bytes_raw() == h(inter[f"{who}_x25519_priv"])
        assert ed25519_public_to_x25519(priv.public_key()).public_bytes_raw() == h(
            inter[f"{who}_x25519_pub"]
        )
    shared = h(inter["shared_secret"])
    assert ECDH_SS_HKDF_256.shared_secret(client, server.public_key()) == shared
    assert ECDH_SS_HKDF_256.shared_secret(server, client.public_key()) == shared


def test_x25519_keys_used_directly() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    assert ECDH_SS_HKDF_256.shared_secret(a, b.public_key()) == a.exchange(b.public_key())


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_mapping_commutes_with_ecdh(seed: bytes) -> None:
    """Mapped private and public keys are consistent: X25519(mapped priv) = mapped pub."""
    priv = Ed25519PrivateKey.from_private_bytes(seed)
    mapped = ed25519_private_to_x25519(priv)
    assert mapped.public_key() == ed25519_public_to_x25519(priv.public_key())


def _enc(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


def test_edwards_rejections() -> None:
    for y in (1, P - 1):  # the identity and the order-2 point are valid points but unusable
        assert edwards25519_point_is_valid(_enc(y))
        with pytest.raises(KeyAgreementError):
            ed25519_public_to_x25519(Ed25519PublicKey.from_public_bytes(_enc(y)))
    non_canonical = [_enc(P), _enc(P + 1), _enc(2**255 - 1), _enc(1, sign=1)]
    for enc in non_canonical:
        assert not edwards25519_point_is_valid(enc)
        with pytest.raises(KeyAgreementError):
            ed25519_public_to_x25519(Ed25519PublicKey.from_public_bytes(enc))
    # y = 2 is not on the curve (x^2 = 3 / (4d + 1) is a non-square)
    assert not edwards25519_point_is_valid(_enc(2))
    with pytest.raises(KeyAgreementError):
        ECDH_SS_HKDF_256.shared_secret(
            Ed25519PrivateKey.generate(), Ed25519PublicKey.from_public_bytes(_enc(2))
        )
    assert not edwards25519_point_is_valid(bytes(31))


def test_small_order_x25519_rejected() -> None:
    own = X25519PrivateKey.generate()
    for u in (0, 1):
        with pytest.raises(KeyAgreementError):
            ECDH_SS_HKDF_256.shared_secret(own, X25519PublicKey.from_public_bytes(_enc(u)))


def test_incompatible_keys_rejected() -> None:
    ka = ECDH_SS_HKDF_256
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    ed = Ed25519PrivateKey.generate()
    x = X25519PrivateKey.generate()
    pairs: list[tuple[Any, Any]] = [
        (p256, p384.public_key()),
        (p384, p256.public_key()),
        (p256, ed.public_key()),
        (ed, p256.public_key()),
        (x, p256.public_key()),
        (p256, x.public_key()),
        (ed.public_key(), ed.public_key()),
        (b"raw", ed.public_key()),
    ]
    for own, peer in pairs:
        with pytest.raises(KeyAgreementError):
            ka.shared_secret(own, peer)
    p521 = ec.generate_private_key(ec.SECP521R1())
    other = ec.generate_private_key(ec.SECP521R1())
    assert len(ka.shared_secret(p521, other.public_key())) == 66
