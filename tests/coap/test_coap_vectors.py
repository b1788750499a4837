"""Known byte vectors: RFC 8613 Appendix C and the Group OSCORE vectors decode and re-encode."""

from __future__ import annotations

from typing import Any

import pytest

from grouposcore.coap import Code, Message, OptionNumber, Options, Type, decode, decode_options

from ..conftest import load_vectors

_RFC = load_vectors("vectors-rfc8613.json")["vectors"]
_GROUP = load_vectors("vectors-group-oscore.json")["vectors"]


def _coap_hexes(vectors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for v in vectors:
        for where, key in (("inputs", "unprotected_coap"), ("outputs", "protected_coap")):
            h = v.get(where, {}).get(key)
            if h:
                out.append((f"{v['id']}:{key}", h))
    return out


ALL_MESSAGES = _coap_hexes(_RFC) + _coap_hexes(_GROUP)


def test_vector_files_hold_messages() -> None:
    ids = {i.split(":")[0] for i, _ in ALL_MESSAGES}
    assert {"C.4", "C.5", "C.6", "C.7", "C.8"} <= ids
    assert len(ALL_MESSAGES) >= 20


@pytest.mark.parametrize(("vid", "hexdata"), ALL_MESSAGES, ids=[i for i, _ in ALL_MESSAGES])
def test_roundtrip_byte_identical(vid: str, hexdata: str) -> None:
    data = bytes.fromhex(hexdata)
    msg = decode(data)
    assert msg.encode() == data
    assert Message.decode(data) == msg


def _vec(vid: str) -> dict[str, Any]:
    return next(v for v in _RFC if v["id"] == vid)


def test_c4_request_fields() -> None:
    m = decode(bytes.fromhex(_vec("C.4")["inputs"]["unprotected_coap"]))
    assert m.mtype is Type.CON
    assert m.code is Code.GET
    assert m.mid == 0x5D1F
    assert m.token == bytes.fromhex("00003974")
    assert m.options.uri_host == "localhost"
    assert m.options.uri_path == ["tv1"]
    assert list(m.options) == [(3, b"localhost"), (11, b"tv1")]
    assert m.payload == b""
    assert m.is_request() and not m.is_response() and not m.is_empty()
    assert repr(m) == "<CON GET mid=23839 token=00003974 uri=//localhost/tv1>"


def test_c4_protected_fields() -> None:
    m = decode(bytes.fromhex(_vec("C.4")["outputs"]["protected_coap"]))
    assert m.code == Code.POST
    assert m.options.oscore == bytes.fromhex("0914")
    assert m.options.uri_host == "localhost"
    assert m.options.uri_path == []
    assert m.payload == bytes.fromhex(_vec("C.4")["outputs"]["ciphertext"])


def test_c6_kid_context_option() -> None:
    v = _vec("C.6")
    m = decode(bytes.fromhex(v["outputs"]["protected_coap"]))
    assert m.mid == 0x2F8E
    assert m.token == bytes.fromhex("ef9bbf7a")
    assert m.options.get(OptionNumber.OSCORE) == bytes.fromhex(v["outputs"]["oscore_option"])


def test_c7_response_fields() -> None:
    v = _vec("C.7")
    m = decode(bytes.fromhex(v["inputs"]["unprotected_coap"]))
    assert (m.mtype, m.code, m.mid) == (Type.ACK, Code.CONTENT, 0x5D1F)
    assert m.payload == b"Hello World!"
    assert len(m.options) == 0
    assert m.is_response()
    p = decode(bytes.fromhex(v["outputs"]["protected_coap"]))
    assert p.code == Code.CHANGED
    # C.7 sends an OSCORE option with an empty value (nibble 9, length 0).
    assert p.options.oscore == b""
    assert OptionNumber.OSCORE in p.options


def test_c8_response_with_piv() -> None:
    v = _vec("C.8")
    p = decode(bytes.fromhex(v["outputs"]["protected_coap"]))
    assert p.options.oscore == bytes.fromhex(v["outputs"]["oscore_option"])


@pytest.mark.parametrize("vid", ["C.4", "C.5", "C.6", "C.7", "C.8"])
def test_inner_plaintext_via_decode_options(vid: str) -> None:
    """OSCORE plaintext = code byte || options || [0xFF payload]; decode_options parses the tail."""
    v = _vec(vid)
    plain = bytes.fromhex(v["intermediate"]["plaintext"])
    inner, payload = decode_options(plain[1:])
    unprotected = decode(bytes.fromhex(v["inputs"]["unprotected_coap"]))
    assert plain[0] == unprotected.code
    # The inner options are the E-class options of the unprotected message (Uri-Path here).
    expected = Options([(n, val) for n, val in unprotected.options if n != OptionNumber.URI_HOST])
    assert inner == expected
    assert payload == unprotected.payload


def test_group_vector_noticeable_fields(group_vectors: dict[str, Any]) -> None:
    msgs = [
        decode(bytes.fromhex(v["outputs"]["protected_coap"]))
        for v in group_vectors["vectors"]
        if v.get("outputs", {}).get("protected_coap")
    ]
    assert any(m.mtype is Type.NON for m in msgs)  # group requests are NON
    for m in msgs:
        assert m.options.oscore is not None
