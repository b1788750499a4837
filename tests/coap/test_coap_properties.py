"""Property tests: round trips, canonical encoding, and random bytes are decoded exactly
when they are well-formed (checked against an independent reading of RFC 7252 §3)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import (
    BlockOption,
    Message,
    OptionNumber,
    Options,
    Type,
    decode,
    decode_options,
    decode_uint,
    encode,
    encode_options,
    encode_uint,
)
from grouposcore.errors import CoapDecodeError

option_numbers = st.one_of(
    st.sampled_from([int(n) for n in OptionNumber]),
    st.integers(0, 300),
    st.integers(0, 65535),
)
option_values = st.one_of(
    st.binary(max_size=14),
    st.binary(min_size=12, max_size=300),
    st.binary(min_size=260, max_size=1500),
)
option_lists = st.lists(st.tuples(option_numbers, option_values), max_size=12)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    code = draw(st.integers(0, 255))
    mtype = draw(st.sampled_from(Type))
    mid = draw(st.integers(0, 0xFFFF))
    if code == 0:
        return Message(code, mtype, mid)
    token = draw(st.binary(max_size=8))
    opts = Options(draw(option_lists))
    if draw(st.booleans()):  # repeated numbers, including unknown ones
        n = draw(option_numbers)
        for v in draw(st.lists(option_values, min_size=2, max_size=4)):
            opts.add(n, v)
    payload = draw(st.one_of(st.just(b""), st.binary(max_size=64), st.binary(max_size=2000)))
    return Message(code, mtype, mid, token, opts, payload)


@settings(deadline=None)
@given(messages())
def test_message_roundtrip(m: Message) -> None:
    data = encode(m)
    back = decode(data)
    assert back == m
    assert back.encode() == data
    assert isinstance(back.mtype, Type)


@settings(deadline=None)
@given(option_lists, st.binary(max_size=40))
def test_options_roundtrip(items: list[tuple[int, bytes]], payload: bytes) -> None:
    opts = Options(items)
    data = encode_options(opts) + (b"\xff" + payload if payload else b"")
    assert decode_options(data) == (opts, payload)


@settings(deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=3)), max_size=20))
def test_options_keep_sorted_stable_order(items: list[tuple[int, bytes]]) -> None:
    o = Options()
    for n, v in items:
        o.add(n, v)
    assert list(o) == sorted(items, key=lambda t: t[0])
    for n in {n for n, _ in items}:
        assert o.get_all(n) == [v for k, v in items if k == n]
        assert o.get(n) == o.get_all(n)[0]


def _options_well_formed(data: bytes) -> bool:
    """RFC 7252 §3.1 option/payload framing, read independently of the codec."""
    rest, number = data, 0
    while rest:
        if rest[0] == 0xFF:
            return len(rest) > 1  # a payload marker must be followed by a payload
        head, rest = rest[0], rest[1:]
        fields = []
        for nibble in (head >> 4, head & 0x0F):  # delta, then length; extensions in order
            if nibble == 15:
                return False
            extra = {13: 1, 14: 2}.get(nibble, 0)
            if len(rest) < extra:
                return False
            base = {13: 13, 14: 269}.get(nibble, nibble)
            fields.append(base + int.from_bytes(rest[:extra], "big") if extra else nibble)
            rest = rest[extra:]
        number += fields[0]
        if number > 0xFFFF or len(rest) < fields[1]:
            return False
        rest = rest[fields[1] :]
    return True


def _well_formed(data: bytes) -> bool:
    """RFC 7252 §3: version 1, token length 0-8, Empty is a bare header, then options."""
    if len(data) < 4 or data[0] >> 6 != 1:
        return False
    tkl = data[0] & 0x0F
    if tkl > 8 or len(data) < 4 + tkl:
        return False
    if data[1] == 0:
        return len(data) == 4
    return _options_well_formed(data[4 + tkl :])


datagrams = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda b0, rest: bytes([0x40 | (b0 & 0x3F)]) + rest,
        st.integers(0, 255),
        st.binary(min_size=3, max_size=80),
    ),
)


@settings(max_examples=400, deadline=None)
@given(datagrams)
def test_random_datagrams_only_raise_decode_error(data: bytes) -> None:
    try:
        m = decode(data)
    except CoapDecodeError:
        assert not _well_formed(data), data.hex()  # refused only what is malformed
        return
    assert _well_formed(data), data.hex()  # and accepted nothing malformed
    # The wire format has exactly one encoding per message, so success means identity.
    assert m.encode() == data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=64))
def test_random_option_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        opts, payload = decode_options(data)
    except CoapDecodeError:
        assert not _options_well_formed(data), data.hex()
        return
    assert _options_well_formed(data), data.hex()
    assert encode_options(opts) + (b"\xff" + payload if payload else b"") == data


@settings(deadline=None)
@given(st.integers(0, (1 << 20) - 1), st.booleans(), st.integers(0, 6))
def test_block_roundtrip(num: int, more: bool, szx: int) -> None:
    b = BlockOption(num, more, szx)
    assert BlockOption.decode(b.encode()) == b
    assert BlockOption.from_size(num, more, b.size) == b
    assert len(b.encode()) <= 3


@settings(deadline=None)
@given(st.integers(0, 1 << 70))
def test_uint_roundtrip(v: int) -> None:
    enc = encode_uint(v)
    assert decode_uint(enc) == v
    assert enc[:1] != b"\x00"  # minimal: no leading zero byte


@settings(max_examples=300, deadline=None)
@given(messages(), st.integers(0, 10_000), st.integers(0, 255), st.booleans())
def test_mutated_valid_datagrams(m: Message, pos: int, byte: int, truncate: bool) -> None:
    """Corrupting one byte of, or truncating, a valid datagram reaches the deep error paths."""
    data = bytearray(encode(m))
    pos %= len(data)
    if truncate:
        del data[pos:]
    else:
        data[pos] = byte
    try:
        back = decode(bytes(data))
    except CoapDecodeError:
        assert not _well_formed(bytes(data)), data.hex()
        return
    assert _well_formed(bytes(data)), data.hex()
    assert back.encode() == bytes(data)
