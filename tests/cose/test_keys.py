"""COSE_Key conversion: round trips, exact layouts, and rejection of malformed keys."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.cose import (
    cose_key_from_public,
    private_key_from_bytes,
    private_key_from_cose_key,
    private_key_to_bytes,
    private_key_to_cose_key,
    public_key_bytes,
    public_key_from_cose_key,
)
from grouposcore.errors import CredentialError

CURVES = {1: (ec.SECP256R1, 32), 2: (ec.SECP384R1, 48), 3: (ec.SECP521R1, 66)}


def _all_private_keys() -> list[Any]:
    keys: list[Any] = [Ed25519PrivateKey.generate(), X25519PrivateKey.generate()]
    keys += [ec.generate_private_key(cls()) for cls, _ in CURVES.values()]
    return keys


def test_okp_layout_and_round_trip() -> None:
    priv = Ed25519PrivateKey.generate()
    pub = priv.public_key()
    m = cose_key_from_public(pub, -8)
    assert list(m.items()) == [(1, 1), (3, -8), (-1, 6), (-2, pub.public_bytes_raw())]
    assert public_key_from_cose_key(m) == pub
    assert list(cose_key_from_public(pub)) == [1, -1, -2]
    x = X25519PrivateKey.generate().public_key()
    assert cose_key_from_public(x) == {1: 1, -1: 4, -2: x.public_bytes_raw()}
    assert public_key_from_cose_key(cose_key_from_public(x)) == x


@pytest.mark.parametrize("crv", sorted(CURVES))
def test_ec2_layout_and_round_trip(crv: int) -> None:
    cls, size = CURVES[crv]
    pub = ec.generate_private_key(cls()).public_key()
    m = cose_key_from_public(pub, -7)
    assert list(m) == [1, 3, -1, -2, -3] and m[1] == 2 and m[-1] == crv
    assert len(m[-2]) == size and len(m[-3]) == size
    assert public_key_bytes(pub) == m[-2] + m[-3]
    assert public_key_from_cose_key(m) == pub
    # point compression: y given as its sign bit
    compressed = dict(m)
    compressed[-3] = bool(pub.public_numbers().y & 1)
    assert public_key_from_cose_key(compressed) == pub


def test_points_not_on_curve_rejected() -> None:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    m = cose_key_from_public(pub)
    bad = dict(m)
    bad[-3] = bytes(31) + bytes([(m[-3][-1] + 1) % 256])
    with pytest.raises(CredentialError):
        public_key_from_cose_key(bad)
    with pytest.raises(CredentialError):
        public_key_from_cose_key({**m, -2: bytes(32), -3: bytes(32)})


@pytest.mark.parametrize(
    "mutation",
    [
        {1: 3},  # RSA
        {1: 4},  # symmetric
        {1: "OKP"},
        {1: True},
        {-1: 1},  # OKP key with a NIST curve
        {-1: 7},  # Ed448 unsupported
        {-1: 5},  # X448 unsupported
        {-2: b"\x00" * 31},
        {-2: b"\x00" * 33},
        {-2: "text"},
        {-3: b"\x00" * 32},  # y on an OKP key
        {3: "EdDSA"},
        {3: 1.5},
    ],
)
def test_bad_okp_keys(mutation: dict[int, Any]) -> None:
    m = cose_key_from_public(Ed25519PrivateKey.generate().public_key(), -8)
    m.update(mutation)
    with pytest.raises(CredentialError):
        public_key_from_cose_key(m)


def test_bad_ec2_keys_and_wrong_curves() -> None:
    p256 = cose_key_from_public(ec.generate_private_key(ec.SECP256R1()).public_key())
    for mutation in ({-1: 2}, {-1: 3}, {-1: 6}, {-1: 9}, {-3: b"\x00" * 33}, {-3: 5}):
        with pytest.raises(CredentialError):
            public_key_from_cose_key({**p256, **mutation})
    no_y = dict(p256)
    del no_y[-3]
    for bad in (no_y, {1: 2, -1: 1}, {}, {-1: 1, -2: p256[-2]}, [1, 2], None, {True: 2, -1: 1}):
        with pytest.raises(CredentialError):
            public_key_from_cose_key(bad)  # type: ignore[arg-type]


def test_private_round_trips() -> None:
    for priv in _all_private_keys():
        m = private_key_to_cose_key(priv, -8 if isinstance(priv, Ed25519PrivateKey) else None)
        assert list(m)[-1] == -4
        back = private_key_from_cose_key(m)
        assert type(back) is type(priv) and back.public_key() == priv.public_key()
        data = private_key_to_bytes(priv)
        again = private_key_from_bytes(data)
        assert again.public_key() == priv.public_key()
        assert private_key_to_bytes(again) == data
    seed = bytes(range(32))
    ed = Ed25519PrivateKey.from_private_bytes(seed)
    assert private_key_to_cose_key(ed)[-4] == seed


def test_private_key_rejections() -> None:
    ed = private_key_to_cose_key(Ed25519PrivateKey.generate())
    p256 = private_key_to_cose_key(ec.generate_private_key(ec.SECP256R1()))
    other_x = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    bad_maps: list[Any] = [
        {**ed, -2: other_x},  # public part does not match d
        {**ed, -4: bytes(31)},
        {**ed, -4: "seed"},
        {k: v for k, v in ed.items() if k != -4},
        {**p256, -4: bytes(32)},  # scalar 0
        {**p256, -4: b"\xff" * 32},  # scalar >= n
        {**p256, -4: bytes(31) + b"\x01", -1: 2},
        {**p256, 1: 1},
    ]
    for m in bad_maps:
        with pytest.raises(CredentialError):
            private_key_from_cose_key(m)
    d_only = {1: 2, -1: 1, -4: p256[-4]}
    assert private_key_from_cose_key(d_only).public_key() == public_key_from_cose_key(p256)
    for data in (b"", b"\xa0", cbor2.dumps(ed) + b"\x00", b"\xff", cbor2.dumps([1, 2]), b"\x1c"):
        with pytest.raises(CredentialError):
            private_key_from_bytes(data)


def test_public_helpers_reject_private_and_foreign_keys() -> None:
    priv = Ed25519PrivateKey.generate()
    with pytest.raises(CredentialError):
        cose_key_from_public(priv)  # type: ignore[arg-type]
    with pytest.raises(CredentialError):
        public_key_bytes(b"key")  # type: ignore[arg-type]
    with pytest.raises(CredentialError):
        private_key_to_cose_key(priv.public_key())  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_private_key_from_random_bytes(data: bytes) -> None:
    try:
        key = private_key_from_bytes(data)
    except CredentialError:
        return
    # accepted: a CBOR map with a byte-string d, and the key survives its own encoding
    decoded = cbor2.loads(data)
    assert isinstance(decoded, dict) and isinstance(decoded.get(-4), bytes)
    again = private_key_from_bytes(private_key_to_bytes(key))
    assert public_key_bytes(again.public_key()) == public_key_bytes(key.public_key())
