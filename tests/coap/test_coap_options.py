"""Option registry, number bits, uint/Block formats, the Options container and codes."""

from __future__ import annotations

import pytest

from grouposcore.coap import (
    BlockOption,
    Code,
    Message,
    OptionFormat,
    OptionNumber,
    Options,
    OscoreClass,
    Type,
    code_name,
    code_str,
    constants,
    decode_uint,
    encode_uint,
    is_critical,
    is_empty,
    is_no_cache_key,
    is_request,
    is_response,
    is_success,
    is_unsafe,
    make_code,
    option_def,
)
from grouposcore.errors import CoapEncodeError, OptionValueError

# --- codes ---------------------------------------------------------------------------------


def test_code_values_and_helpers() -> None:
    assert Code.CONTENT == make_code(2, 5) == 69
    assert Code.CONTINUE == make_code(2, 31) == 95
    assert Code.REQUEST_ENTITY_INCOMPLETE == make_code(4, 8)
    assert Code.UNPROCESSABLE_ENTITY == make_code(4, 22)
    assert Code.TOO_MANY_REQUESTS == make_code(4, 29)
    assert Code.PROXYING_NOT_SUPPORTED == make_code(5, 5)
    assert code_str(Code.CONTENT) == "2.05"
    assert code_str(Code.GET) == "0.01"
    assert code_str(make_code(7, 31)) == "7.31"
    assert code_name(Code.NOT_FOUND) == "4.04 Not Found"
    assert code_name(Code.FETCH) == "FETCH"
    assert code_name(make_code(3, 1)) == "3.01"
    for bad in ((8, 0), (0, 32), (-1, 0)):
        with pytest.raises(CoapEncodeError):
            make_code(*bad)


def test_code_classes() -> None:
    assert is_empty(0) and not is_request(0) and not is_response(0)
    assert is_request(Code.GET) and is_request(31) and not is_request(32)
    assert is_response(Code.CREATED) and is_response(Code.GATEWAY_TIMEOUT)
    assert is_response(make_code(3, 0))
    assert not is_response(make_code(1, 0)) and not is_response(make_code(6, 0))
    assert is_success(Code.CONTINUE) and not is_success(Code.BAD_REQUEST)


# --- registry and number bits ---------------------------------------------------------------


def test_registry_entries() -> None:
    etag = option_def(OptionNumber.ETAG)
    assert (etag.name, etag.repeatable, etag.min_len, etag.max_len) == ("ETag", True, 1, 8)
    assert etag.format is OptionFormat.OPAQUE and etag.oscore_class is OscoreClass.E
    host = option_def(OptionNumber.URI_HOST)
    assert (host.min_len, host.max_len, host.format) == (1, 255, OptionFormat.STRING)
    echo = option_def(OptionNumber.ECHO)
    assert (echo.min_len, echo.max_len, echo.repeatable) == (1, 40, False)
    rt = option_def(OptionNumber.REQUEST_TAG)
    assert (rt.min_len, rt.max_len, rt.repeatable) == (0, 8, True)
    assert option_def(OptionNumber.PROXY_URI).max_len == 1034
    assert option_def(OptionNumber.BLOCK2).max_len == 3
    assert option_def(OptionNumber.OBSERVE).max_len == 3
    assert option_def(OptionNumber.SIZE1).max_len == 4
    assert option_def(OptionNumber.NO_RESPONSE).max_len == 1
    assert option_def(OptionNumber.OSCORE).max_len == 255
    assert option_def(OptionNumber.IF_NONE_MATCH).format is OptionFormat.EMPTY


def test_unknown_option_def() -> None:
    d = option_def(2050)
    assert d.name == "Option2050"
    assert d.format is OptionFormat.OPAQUE and d.repeatable
    assert (d.min_len, d.max_len) == (0, 65804)
    assert d.oscore_class is OscoreClass.E


@pytest.mark.parametrize(
    ("cls", "numbers"),
    [
        (
            OscoreClass.E,
            [1, 4, 5, 8, 11, 12, 15, 17, 20, 4242],
        ),
        (OscoreClass.U, [3, 7, 9, 35, 39, 16, 21]),
        (OscoreClass.EU, [6, 14, 27, 23, 60, 28, 258, 252, 292, 19, 31]),
    ],
)
def test_oscore_classes(cls: OscoreClass, numbers: list[int]) -> None:
    for n in numbers:
        assert option_def(n).oscore_class is cls, n


def test_number_bits() -> None:
    assert is_critical(OptionNumber.URI_PATH) and not is_critical(OptionNumber.ETAG)
    assert is_unsafe(OptionNumber.URI_HOST) and is_unsafe(OptionNumber.URI_PORT)
    assert not is_unsafe(OptionNumber.OSCORE)  # critical but safe-to-forward
    assert not is_unsafe(OptionNumber.ETAG)
    assert is_no_cache_key(OptionNumber.SIZE1) and is_no_cache_key(28)
    assert not is_no_cache_key(OptionNumber.ETAG) and not is_no_cache_key(OptionNumber.MAX_AGE)
    assert option_def(OptionNumber.PROXY_URI).critical and option_def(35).unsafe
    assert option_def(60).no_cache_key


# --- uint and Block -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [(0, b""), (1, b"\x01"), (255, b"\xff"), (256, b"\x01\x00"), (0xFFFFFF, b"\xff\xff\xff")],
)
def test_uint(value: int, wire: bytes) -> None:
    assert encode_uint(value) == wire
    assert decode_uint(wire) == value


def test_uint_leading_zero_and_negative() -> None:
    assert decode_uint(b"\x00\x00\x05") == 5
    with pytest.raises(OptionValueError):
        encode_uint(-1)


def test_block_option() -> None:
    b = BlockOption(5, True, 2)
    assert b.size == 64 and b.offset == 320
    assert b.encode() == bytes([5 << 4 | 8 | 2])
    assert BlockOption.decode(b.encode()) == b
    assert BlockOption.decode(b"") == BlockOption(0, False, 0)
    assert BlockOption.from_size(1, False, 1024) == BlockOption(1, False, 6)
    big = BlockOption((1 << 20) - 1, True, 6)
    assert len(big.encode()) == 3 and BlockOption.decode(big.encode()) == big
    assert str(b) == "5/1/64"


@pytest.mark.parametrize("data", [b"\x07", b"\x0f", b"\x00\x00\x00\x00", b"\x12\x34\x57"])
def test_block_option_invalid(data: bytes) -> None:
    with pytest.raises(OptionValueError):
        BlockOption.decode(data)


def test_block_option_invalid_construction() -> None:
    for args in ((0, False, 7), (1 << 20, False, 0), (-1, False, 0)):
        with pytest.raises(OptionValueError):
            BlockOption(*args)
    with pytest.raises(OptionValueError):
        BlockOption.from_size(0, False, 2048)
    with pytest.raises(OptionValueError):
        BlockOption.from_size(0, False, 100)


# --- Options container ------------------------------------------------------------------------


def test_ordering_and_multimap() -> None:
    o = Options()
    o.add(11, "b")
    o.add(3, "host")
    o.add(15, "q=1")
    o.add(11, "c")
    o.add(4, b"\x01")
    o.add(4, b"\x02")
    o.add(1, b"")
    assert list(o) == [
        (1, b""),
        (3, b"host"),
        (4, b"\x01"),
        (4, b"\x02"),
        (11, b"b"),
        (11, b"c"),
        (15, b"q=1"),
    ]
    assert len(o) == 7
    assert o.get(4) == b"\x01" and o.get_all(4) == [b"\x01", b"\x02"]
    assert o.get(99) is None and o.get(99, b"d") == b"d" and o.get_all(99) == []
    assert 11 in o and 12 not in o and "x" not in o
    assert o.numbers() == [1, 3, 4, 11, 15]
    o.set(4, b"\x09")
    assert o.get_all(4) == [b"\x09"]
    o.remove(11)
    o.remove(11)  # absent: no error
    assert o.uri_path == []
    assert list(o)[-1] == (15, b"q=1")


def test_value_conversions() -> None:
    o = Options()
    o.add(12, 50)
    o.add(11, "é")
    o.add(4, bytearray(b"\x01\x02"))
    o.add(60, memoryview(b"\x05"))
    o.add(14, 0)
    assert o.get(12) == b"\x32"
    assert o.get(11) == "é".encode()
    assert o.get(4) == b"\x01\x02" and type(o.get(4)) is bytes
    assert o.get(60) == b"\x05"
    assert o.get(14) == b""
    with pytest.raises(TypeError):
        o.add(4, 1.5)  # type: ignore[arg-type]
    for bad in (-1, 65536):
        with pytest.raises(OptionValueError):
            o.add(bad, b"")


def test_copy_and_eq() -> None:
    o = Options([(11, "a"), (3, "h")])
    c = o.copy()
    assert c == o and c is not o
    c.add(11, "b")
    assert c != o and o.uri_path == ["a"]
    assert Options() == Options()
    assert (Options() == []) is False
    assert Options([(11, "a"), (11, "b")]) != Options([(11, "b"), (11, "a")])


def test_repr_is_readable() -> None:
    o = Options([(3, "h"), (12, 60), (9, b"\x09\x14"), (23, BlockOption(2, True, 6).encode())])
    r = repr(o)
    assert r == "Options(Uri-Host='h', OSCORE=h'0914', Content-Format=60, Block2=2/1/1024)"
    assert "Option4242=h'ab'" in repr(Options([(4242, b"\xab")]))


def test_typed_properties() -> None:
    o = Options()
    o.uri_host = "example.com"
    o.uri_port = 61616
    o.uri_path = ["a", "", "c"]
    o.uri_query = ["x=1", "y"]
    o.location_path = ["new", "1"]
    o.location_query = ["z"]
    o.content_format = constants.CBOR
    o.accept = constants.ACE_GROUPCOMM_CBOR
    o.max_age = 0
    o.observe = 0x010203
    o.etag = b"\x01\x02"
    o.block1 = BlockOption(1, True, 6)
    o.block2 = BlockOption(0, False, 2)
    o.size1 = 5000
    o.size2 = 70000
    o.echo = b"e" * 8
    o.request_tag = b"\x00"
    o.oscore = b"\x09\x14"
    o.no_response = 26
    o.proxy_uri = "coap://p/x"
    o.proxy_scheme = "coap"
    o.if_match = [b"", b"\x01"]
    o.if_none_match = True
    assert o.uri_host == "example.com" and o.uri_port == 61616
    assert o.uri_path == ["a", "", "c"] and o.uri_query == ["x=1", "y"]
    assert o.location_path == ["new", "1"] and o.location_query == ["z"]
    assert o.content_format == 60 and o.accept == 261 and o.max_age == 0
    assert o.get(OptionNumber.MAX_AGE) == b""
    assert o.observe == 0x010203 and o.etag == b"\x01\x02"
    assert o.block1 == BlockOption(1, True, 6) and o.block2 == BlockOption(0, False, 2)
    assert o.size1 == 5000 and o.size2 == 70000
    assert o.echo == b"e" * 8 and o.request_tag == b"\x00" and o.oscore == b"\x09\x14"
    assert o.no_response == 26
    assert o.proxy_uri == "coap://p/x" and o.proxy_scheme == "coap"
    assert o.if_match == [b"", b"\x01"] and o.if_none_match is True
    numbers = [n for n, _ in o]
    assert numbers == sorted(numbers)
    # setters replace
    o.uri_path = ["z"]
    assert o.uri_path == ["z"]
    o.content_format = constants.JSON
    assert o.get_all(OptionNumber.CONTENT_FORMAT) == [b"\x32"]
    # None / empty / False removes
    for name in (
        "uri_host",
        "uri_port",
        "content_format",
        "accept",
        "max_age",
        "observe",
        "etag",
        "block1",
        "block2",
        "size1",
        "size2",
        "echo",
        "request_tag",
        "oscore",
        "no_response",
        "proxy_uri",
        "proxy_scheme",
    ):
        setattr(o, name, None)
        assert getattr(o, name) is None, name
    o.uri_path = []
    o.uri_query = None
    o.location_path = []
    o.location_query = []
    o.if_match = []
    o.if_none_match = False
    assert len(o) == 0


def test_typed_getter_errors_are_ours() -> None:
    o = Options([(OptionNumber.URI_PATH, b"\xff"), (OptionNumber.BLOCK2, b"\x07")])
    with pytest.raises(OptionValueError):
        _ = o.uri_path
    with pytest.raises(OptionValueError):
        _ = o.block2
    with pytest.raises(TypeError):
        o.uri_path = "a/b"  # type: ignore[assignment]


# --- Message model ---------------------------------------------------------------------------


def test_message_defaults_copy_and_repr() -> None:
    m = Message()
    assert (m.code, m.mtype, m.mid, m.token, m.payload) == (Code.EMPTY, Type.CON, 0, b"", b"")
    assert len(m.options) == 0 and m.remote is None
    assert Message().options is not m.options
    req = Message(Code.GET, Type.CON, 1, b"\xab", Options([(11, "light")]), remote=("::1", 5683))
    c = req.copy(mid=2)
    assert c.mid == 2 and c.token == b"\xab" and c.remote == ("::1", 5683)
    c.options.add(15, "a")
    assert req.options.uri_query == []
    assert req == req.copy(remote="elsewhere")  # remote is not compared
    assert str(req) == repr(req) == "<CON GET mid=1 token=ab uri=/light>"
    resp = Message(Code.CONTENT, Type.ACK, 1, b"\xab", Options([(12, 0)]), b"on")
    assert repr(resp) == "<ACK 2.05 Content mid=1 token=ab Content-Format=0 payload=2B>"
    q = Message(Code.POST, Type.NON, 3, options=Options([(11, "a"), (15, "k=v"), (7, 1234)]))
    assert repr(q) == "<NON POST mid=3 uri=//:1234/a?k=v>"
    assert repr(Message(make_code(0, 9), Type.NON, 3)) == "<NON 0.09 mid=3 uri=/>"
    with pytest.raises(TypeError):
        req.copy(nonsense=1)
