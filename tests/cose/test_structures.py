"""Hand-built CBOR heads and COSE structures, checked against cbor2 and the vectors."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.cose import (
    cbor_array_head,
    cbor_bstr,
    cbor_int,
    cbor_map_head,
    cbor_tstr,
    cbor_uint,
    countersign_structure,
    enc_structure,
)
from grouposcore.errors import CoseError


@settings(deadline=None)
@given(st.integers(0, 2**64 - 1))
def test_uint_matches_cbor2(n: int) -> None:
    assert cbor_uint(n) == cbor2.dumps(n) == cbor_int(n)


@settings(deadline=None)
@given(st.integers(-(2**64), 2**64 - 1))
def test_int_matches_cbor2(n: int) -> None:
    assert cbor_int(n) == cbor2.dumps(n)


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_bstr_matches_cbor2(data: bytes) -> None:
    assert cbor_bstr(data) == cbor2.dumps(data)


@settings(deadline=None)
@given(st.text(max_size=300))
def test_tstr_matches_cbor2(text: str) -> None:
    assert cbor_tstr(text) == cbor2.dumps(text)


def test_boundaries_and_containers() -> None:
    for n in (0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32):
        assert cbor_uint(n) == cbor2.dumps(n)
        assert cbor_bstr(b"\x00" * min(n, 70000)) == cbor2.dumps(b"\x00" * min(n, 70000))
    assert cbor_array_head(3) + cbor_uint(1) + cbor_int(-8) + cbor_bstr(b"") == cbor2.dumps(
        [1, -8, b""]
    )
    assert cbor_map_head(1) + cbor_uint(1) + cbor_tstr("a") == cbor2.dumps({1: "a"})
    with pytest.raises(CoseError):
        cbor_uint(-1)
    with pytest.raises(CoseError):
        cbor_uint(2**64)
    with pytest.raises(CoseError):
        cbor_int(-(2**64) - 1)


@settings(deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=400))
def test_structures_match_cbor2(aad: bytes, ct: bytes) -> None:
    assert enc_structure(aad) == cbor2.dumps(["Encrypt0", b"", aad])
    assert countersign_structure(aad, ct) == cbor2.dumps(["CounterSignature0", b"", b"", aad, ct])


def test_rfc8613_aad() -> None:
    assert enc_structure(bytes.fromhex("8501810a40411440")) == bytes.fromhex(
        "8368456e63727970743040488501810a40411440"
    )
