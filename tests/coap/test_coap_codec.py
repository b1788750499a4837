"""Wire codec: malformed input, extended delta/length forms, encode errors, option checks."""

from __future__ import annotations

import pytest

from grouposcore.coap import (
    Code,
    Message,
    OptionNumber,
    Options,
    Type,
    decode,
    decode_options,
    encode,
    encode_options,
    unrecognized_critical,
    validate_options,
)
from grouposcore.errors import CoapDecodeError, CoapEncodeError

HDR = bytes.fromhex("40015d1f")  # CON GET mid 0x5d1f, no token


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "shorter than the 4-byte"),
        (bytes.fromhex("400100"), "shorter than the 4-byte"),
        (bytes.fromhex("00010000"), "version 0"),
        (bytes.fromhex("80010000"), "version 2"),
        (bytes.fromhex("c0010000"), "version 3"),
        (bytes.fromhex("49010000") + bytes(9), "token length 9"),
        (bytes.fromhex("4f010000") + bytes(15), "token length 15"),
        (bytes.fromhex("48010000") + bytes(7), "token truncated"),
        (bytes.fromhex("42010000aa"), "token truncated"),
        (HDR + bytes.fromhex("b3") + b"tv", "truncated"),
        (HDR + bytes.fromhex("d0"), "delta extension"),
        (HDR + bytes.fromhex("e0"), "delta extension"),
        (HDR + bytes.fromhex("e001"), "delta extension"),
        (HDR + bytes.fromhex("0d"), "length extension"),
        (HDR + bytes.fromhex("0e00"), "length extension"),
        (HDR + bytes.fromhex("f0"), "delta nibble 15"),
        (HDR + bytes.fromhex("f3616263"), "delta nibble 15"),
        (HDR + bytes.fromhex("0f"), "length nibble 15"),
        (HDR + bytes.fromhex("3f"), "length nibble 15"),
        (HDR + bytes.fromhex("ff"), "payload marker"),
        (HDR + bytes.fromhex("b3747631ff"), "payload marker"),
        (HDR + bytes.fromhex("e0ffff") + bytes.fromhex("e00000"), "exceeds 65535"),
        (HDR + bytes.fromhex("e0fef3"), "exceeds 65535"),
        (HDR + bytes.fromhex("0e0000") + bytes(100), "truncated"),
        (bytes.fromhex("41000000aa"), "Empty message"),
        (bytes.fromhex("48000000"), "Empty message"),
        (bytes.fromhex("40000000b3747631"), "Empty message"),
        (bytes.fromhex("40000000ff41"), "Empty message"),
        (bytes.fromhex("60000000ff"), "Empty message"),
    ],
)
def test_malformed_rejected(data: bytes, fragment: str) -> None:
    with pytest.raises(CoapDecodeError, match=fragment):
        decode(data)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (bytes.fromhex("ff"), "payload marker"),
        (bytes.fromhex("f1"), "delta nibble 15"),
        (bytes.fromhex("1f"), "length nibble 15"),
        (bytes.fromhex("d1"), "delta extension"),
        (bytes.fromhex("1d"), "length extension"),
        (bytes.fromhex("13aa"), "truncated"),
    ],
)
def test_decode_options_malformed(data: bytes, fragment: str) -> None:
    with pytest.raises(CoapDecodeError, match=fragment):
        decode_options(data)


def test_largest_option_number_accepted() -> None:
    # delta 65535 (= 269 + 65266) reaches exactly the top of the number space.
    opts, payload = decode_options(bytes.fromhex("e0fef2"))
    assert list(opts) == [(65535, b"")]
    assert payload == b""
    assert encode_options(opts) == bytes.fromhex("e0fef2")


def test_empty_message_forms() -> None:
    ack = Message(Code.EMPTY, Type.ACK, 0x1234)
    assert ack.encode() == bytes.fromhex("60001234")
    assert decode(bytes.fromhex("60001234")) == ack
    assert decode(bytes.fromhex("70000001")).mtype is Type.RST
    assert ack.is_empty() and not ack.is_request() and not ack.is_response()
    assert Message().encode() == bytes.fromhex("40000000")


def test_decode_options_without_header_and_memoryview() -> None:
    opts, payload = decode_options(memoryview(bytes.fromhex("b3747631ff6869")))
    assert opts.uri_path == ["tv1"] and payload == b"hi"
    assert type(payload) is bytes
    assert decode_options(b"") == (Options(), b"")
    m = decode(bytearray(bytes.fromhex("44015d1f00003974396c6f63616c686f737483747631")))
    assert m.options.uri_host == "localhost"


# --- extended delta / length ---------------------------------------------------------------


def test_request_tag_292_uses_14_delta() -> None:
    o = Options()
    o.request_tag = b"\x01"
    enc = encode_options(o)
    # delta 292 -> nibble 14 with extension 292-269 = 23; length 1.
    assert enc == bytes.fromhex("e10017") + b"\x01"
    assert decode_options(enc)[0] == o


def test_echo_252_uses_13_delta() -> None:
    o = Options([(OptionNumber.ECHO, b"\xaa" * 8)])
    enc = encode_options(o)
    assert enc[0] == 0xD8 and enc[1] == 252 - 13
    assert decode_options(enc)[0] == o


@pytest.mark.parametrize(
    ("length", "head"),
    [
        (12, bytes.fromhex("bc")),
        (13, bytes.fromhex("bd00")),
        (268, bytes.fromhex("bdff")),
        (269, bytes.fromhex("be0000")),
        (300, bytes.fromhex("be001f")),
        (65535 + 269, bytes.fromhex("beffff")),
    ],
)
def test_extended_lengths(length: int, head: bytes) -> None:
    value = bytes(range(256)) * (length // 256) + bytes(length % 256)
    o = Options([(11, value)])
    enc = encode_options(o)
    assert enc[: len(head)] == head
    assert len(enc) == len(head) + length
    back, payload = decode_options(enc)
    assert back == o and payload == b""


def test_both_extensions_in_one_option() -> None:
    m = Message(
        Code.POST, Type.NON, 7, b"\x01", Options([(300, b"x" * 300), (2000, b"y" * 20)]), b"pl"
    )
    data = m.encode()
    # first option: delta 300 -> 14/ext 31, length 300 -> 14/ext 31
    assert data[5:10] == bytes.fromhex("ee001f001f")
    assert decode(data) == m


def test_encode_rejects_overlong_value() -> None:
    o = Options([(1000, bytes(65535 + 270))])
    with pytest.raises(CoapEncodeError, match="exceeds the maximum"):
        encode_options(o)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"token": bytes(9)}, "token of 9 bytes"),
        ({"mid": -1}, "message ID"),
        ({"mid": 65536}, "message ID"),
        ({"code": 256}, "code"),
        ({"code": -1}, "code"),
        ({"code": None}, "code"),
        ({"mtype": 4}, "message type"),
        ({"code": Code.EMPTY}, "Empty message"),
    ],
)
def test_encode_errors(changes: dict[str, object], fragment: str) -> None:
    base = Message(Code.GET, Type.CON, 1, b"\x01", Options([(11, "a")]), b"")
    with pytest.raises(CoapEncodeError, match=fragment):
        encode(base.copy(**changes))


def test_empty_with_payload_not_encodable() -> None:
    with pytest.raises(CoapEncodeError):
        Message(payload=b"x").encode()


def test_unknown_codes_and_types_roundtrip() -> None:
    for code in (8, 31, 32, 63, 96, 127, 192, 224, 255):
        m = Message(code, Type.NON, 1, b"", Options(), b"z")
        back = decode(m.encode())
        assert back.code == code and type(back.code) is int
        assert back == m
    assert decode(bytes.fromhex("50457777")).code is Code.CONTENT


def test_options_encoded_in_number_order_regardless_of_insertion() -> None:
    o = Options()
    o.add(11, "b")
    o.add(3, "h")
    o.add(11, "c")
    o.add(1, b"")
    m = Message(Code.GET, Type.CON, 2, b"", o)
    data = m.encode()
    assert data[4:] == bytes.fromhex("10") + bytes.fromhex("2168") + bytes.fromhex("8162") + (
        bytes.fromhex("0163")
    )


# --- content checks ------------------------------------------------------------------------


def test_validate_options() -> None:
    o = Options()
    o.add(OptionNumber.URI_HOST, b"")  # too short (1-255)
    o.add(OptionNumber.ETAG, bytes(9))  # too long (1-8)
    o.add(OptionNumber.URI_PATH, b"\xff\xfe")  # not UTF-8
    o.add(OptionNumber.CONTENT_FORMAT, 0)
    o.add(OptionNumber.CONTENT_FORMAT, 50)  # not repeatable
    o.add(OptionNumber.ECHO, b"")  # Echo is 1-40
    o.add(OptionNumber.REQUEST_TAG, b"")  # fine (0-8)
    o.add(OptionNumber.REQUEST_TAG, b"12345678")  # fine, repeatable
    o.add(OptionNumber.IF_NONE_MATCH, b"\x00")  # must be empty
    o.add(5000, bytes(1000))  # unknown: opaque, never flagged here
    assert validate_options(o) == [3, 4, 5, 11, 12, 252]
    ok = decode(bytes.fromhex("44015d1f00003974396c6f63616c686f737483747631")).options
    assert validate_options(ok) == []


def test_validate_block_and_oscore_lengths() -> None:
    o = Options([(OptionNumber.BLOCK2, bytes(4)), (OptionNumber.OSCORE, bytes(256))])
    assert validate_options(o) == [9, 23]


def test_unrecognized_critical() -> None:
    o = Options([(11, "a"), (2049, b""), (2048, b""), (65001, b"x"), (65001, b"y"), (9, b"")])
    assert unrecognized_critical(o) == [2049, 65001]
    assert unrecognized_critical(o, known={2049, 65001}) == [9, 11]
    assert unrecognized_critical(Options()) == []


def test_codes_print_as_people_read_them() -> None:
    """``print(reply.code)`` shows ``2.04 Changed``, not 68; ``int()`` and ``:d`` stay numbers."""
    from grouposcore.coap import Code

    assert str(Code.CHANGED) == f"{Code.CHANGED}" == "2.04 Changed"
    assert str(Code.GET) == "GET"
    assert int(Code.CHANGED) == 68 and f"{Code.CHANGED:d}" == "68"


def test_the_package_is_typed() -> None:
    """Users' type checkers see the annotations (PEP 561)."""
    from importlib.resources import files

    assert files("grouposcore").joinpath("py.typed").is_file()
