"""CCS credentials: exact bytes kept, deterministic building, strict and total parsing."""

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
    CRED_FMT_KCCS,
    CRED_FMT_KCWT,
    CRED_FMT_X5CHAIN,
    EDDSA,
    ES256,
    ES384,
    ES512,
    Credential,
    public_key_bytes,
)
from grouposcore.errors import CoseError, CredentialError


def h(s: str) -> bytes:
    return bytes.fromhex(s)


def _ed_pub(seed_hex: str) -> Any:
    return Ed25519PrivateKey.from_private_bytes(h(seed_hex)).public_key()


def test_format_constants() -> None:
    assert (CRED_FMT_KCWT, CRED_FMT_KCCS, CRED_FMT_X5CHAIN) == (13, 14, 33)


def test_ccs_examples_parse_and_keep_raw(group_vectors: dict[str, Any]) -> None:
    creds = {}
    for ex in group_vectors["ccs_examples"]:
        raw = h(ex["ccs"])
        c = Credential.from_ccs(raw)
        assert c.raw == raw and type(c.raw) is bytes
        assert (c.kty, c.crv, c.alg, c.fmt) == (1, 6, -8, CRED_FMT_KCCS)
        assert c.public_key.public_bytes_raw() == raw[-32:]
        assert c.fits_signature(EDDSA) and c.fits_key_agreement()
        creds[ex["id"]] = c
    assert creds["C1"].subject == "groupmanager" and creds["C3"].subject == "sender"
    # C1 and C2 hold the same key in different byte orders: not the same credential
    assert creds["C1"].public_key == creds["C2"].public_key
    assert creds["C1"] != creds["C2"] and len({creds["C1"], creds["C2"], creds["C3"]}) == 3
    assert Credential.from_ccs(bytearray(h(group_vectors["ccs_examples"][0]["ccs"]))) == creds["C1"]


def test_build_reproduces_common_inputs(group_vectors: dict[str, Any]) -> None:
    for who, v in group_vectors["common_inputs"]["creds"].items():
        pub = _ed_pub(v["ed25519_seed"])
        assert pub.public_bytes_raw() == h(v["ed25519_pub"])
        c = Credential.build_ccs(pub, -8, who)
        assert c.raw == h(v["ccs"])
        assert c.subject == who and c.alg == -8 and c.public_key == pub
        assert c == Credential.from_ccs(h(v["ccs"]))
        assert hash(c) == hash(Credential.from_ccs(h(v["ccs"])))


def test_build_reproduces_aiocoap_gm_credential(group_vectors: dict[str, Any]) -> None:
    c1 = next(e for e in group_vectors["ccs_examples"] if e["id"] == "C1")
    parsed = Credential.from_ccs(h(c1["ccs"]))
    extra = {4: 2879067471, 3: "coaps://domain.example.org", 1: "coaps://mysite.example.com"}
    built = Credential.build_ccs(parsed.public_key, -8, "groupmanager", extra)
    assert built.raw == h(c1["ccs"])


def test_build_ordering_and_errors() -> None:
    pub = Ed25519PrivateKey.generate().public_key()
    c = Credential.build_ccs(pub, -8, None, {-70000: 1, "name": 2, 100: 3, 6: 4})
    assert list(cbor2.loads(c.raw)) == [6, 100, -70000, "name", 8]
    assert c.subject is None
    assert Credential.build_ccs(pub, -8, extra_claims={2: "s"}).subject == "s"
    for extra in ({8: {}}, {2: "dup"}, {1.5: "x"}):
        with pytest.raises(CredentialError):
            Credential.build_ccs(pub, -8, "s", extra)  # type: ignore[dict-item]
    with pytest.raises(CredentialError):
        Credential.build_ccs(pub, -7, "s")
    with pytest.raises(CoseError):
        Credential.build_ccs(pub, -8, "s", {9: object()})


@pytest.mark.parametrize("alg,crv", [(ES256, 1), (ES384, 2), (ES512, 3)], ids=lambda a: str(a))
def test_ec2_credentials(alg: Any, crv: int) -> None:
    pub = alg.generate_private_key().public_key()
    c = Credential.build_ccs(pub, alg.id, "ec")
    assert (c.kty, c.crv, c.alg) == (2, crv, alg.id)
    assert Credential.from_ccs(c.raw).public_key == pub
    assert c.fits_signature(alg) and c.fits_key_agreement()
    assert not c.fits_signature(EDDSA)
    for other in (ES256, ES384, ES512):
        if other is not alg:
            assert not c.fits_signature(other)


def test_fits_rules() -> None:
    ed = Ed25519PrivateKey.generate().public_key()
    x = ed.public_bytes_raw()
    no_alg = Credential.from_ccs(cbor2.dumps({8: {1: {1: 1, -1: 6, -2: x}}}))
    assert no_alg.alg is None and no_alg.fits_signature(EDDSA)
    wrong_alg = Credential.from_ccs(cbor2.dumps({8: {1: {1: 1, 3: -7, -1: 6, -2: x}}}))
    assert not wrong_alg.fits_signature(EDDSA) and wrong_alg.fits_key_agreement()
    x25519 = X25519PrivateKey.generate().public_key()
    xc = Credential.build_ccs(x25519, -27, "x")
    assert xc.fits_key_agreement() and (xc.kty, xc.crv) == (1, 4)
    assert not any(xc.fits_signature(a) for a in (EDDSA, ES256, ES384, ES512))
    p256 = ec.generate_private_key(ec.SECP256R1()).public_key()
    pc = Credential.build_ccs(p256, -27)
    assert pc.fits_signature(ES256) is False  # alg names ECDH, not ES256
    assert pc.fits_key_agreement()


def _valid() -> dict[Any, Any]:
    x = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return {2: "s", 8: {1: {1: 1, 3: -8, -1: 6, -2: x}}}


def test_from_ccs_rejections() -> None:
    good = cbor2.dumps(_valid())
    x = _valid()[8][1][-2]
    bad_inputs: list[Any] = [
        b"",
        b"\xff",
        good[:-1],
        good + b"\x00",
        good + good,
        b"\xd8\x3d" + good,  # tag 61 (CWT)
        b"\xc0" + good,
        cbor2.dumps([2, "s"]),
        cbor2.dumps("text"),
        cbor2.dumps({2: "s"}),
        cbor2.dumps({2: "s", 8: [1]}),
        cbor2.dumps({2: "s", 8: {3: b"kid"}}),
        cbor2.dumps({2: "s", 8: {1: b"key"}}),
        cbor2.dumps({2: 5, 8: {1: {1: 1, -1: 6, -2: x}}}),
        cbor2.dumps({8: {1: {1: 1, -1: 6, -2: x, -4: bytes(32)}}}),
        cbor2.dumps({8: {1: {1: 1, -1: 6, -2: x[:31]}}}),
        cbor2.dumps({8: {1: {1: 2, -1: 1, -2: bytes(32), -3: bytes(32)}}}),
        cbor2.dumps({8.0: {1: {1: 1, -1: 6, -2: x}}}),
        cbor2.dumps({8: {True: {1: 1, -1: 6, -2: x}}}),
        cbor2.dumps({8: {1: {True: 1, -1: 6, -2: x}}}),
        "a2 text",
        None,
    ]
    for data in bad_inputs:
        with pytest.raises(CredentialError):
            Credential.from_ccs(data)


def test_duplicate_labels_rejected() -> None:
    key = cbor2.dumps({1: {1: 1, -1: 6, -2: _valid()[8][1][-2]}})
    raw = b"\xa3" + b"\x02\x61a" + b"\x02\x61b" + b"\x08" + key
    with pytest.raises(CredentialError):
        Credential.from_ccs(raw)
    assert Credential.from_ccs(b"\xa2\x02\x61a\x08" + key).subject == "a"


def _surely_not_a_ccs(data: bytes) -> bool:
    """True when an independent reading with cbor2 already shows ``data`` is no usable CCS
    (empty, tagged, not CBOR, not a map, no cnf COSE_Key map, a private key, no bytes x)."""
    if not data or data[0] >> 5 == 6:
        return True
    try:
        claims = cbor2.loads(data)
    except Exception:
        return True
    if not isinstance(claims, dict) or not isinstance(claims.get(8), dict):
        return True
    key = claims[8].get(1)
    return not isinstance(key, dict) or -4 in key or not isinstance(key.get(-2), bytes)


def _check_parse(data: bytes) -> Credential | None:
    """Parse ``data``; a refusal must be justified, an acceptance must keep its promises:
    the exact bytes, and the key fields that an independent cbor2 reading finds."""
    try:
        c = Credential.from_ccs(data)
    except CredentialError:
        return None
    assert not _surely_not_a_ccs(data), data.hex()
    assert c.raw == data
    claims = cbor2.loads(data)
    key = claims[8][1]
    assert (c.kty, c.crv, c.alg, c.subject) == (key[1], key[-1], key.get(3), claims.get(2))
    assert public_key_bytes(c.public_key)[: len(key[-2])] == key[-2]
    assert public_key_bytes(Credential.from_ccs(c.raw).public_key) == public_key_bytes(c.public_key)
    return c


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_credential_error(data: bytes) -> None:
    _check_parse(data)


_CBOR_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40)
    | st.text(max_size=10) | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers(-5, 10) | st.text(max_size=3), inner, max_size=5),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    _CBOR_VALUES,
    st.integers(1, 3),
    st.sampled_from([-1, 0, 1, 2, 3, 4, 5, 6, 7]),
    _CBOR_VALUES | st.binary(min_size=32, max_size=32),
)
def test_structured_garbage_only_raises_credential_error(
    claims: Any, kty: int, crv: int, x: Any
) -> None:
    for value in (claims, {8: {1: claims}}):
        _check_parse(cbor2.dumps(value))
    # an OKP key without y is usable exactly for Ed25519 (6) and X25519 (4) with a 32-byte x;
    # EC2 keys need y (or its sign bit), so none of them is
    okp = kty == 1 and crv in (4, 6) and isinstance(x, bytes) and len(x) == 32
    assert (_check_parse(cbor2.dumps({8: {1: {1: kty, -1: crv, -2: x}}})) is not None) == okp


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 200), st.integers(1, 255), st.integers(0, 3))
def test_mutated_ccs_only_raises_credential_error(pos: int, xor: int, cut: int) -> None:
    raw = bytearray(cbor2.dumps(_valid()))
    raw[pos % len(raw)] ^= xor
    _check_parse(bytes(raw[: len(raw) - cut]))
