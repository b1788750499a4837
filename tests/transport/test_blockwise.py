"""Sans-I/O tests of the block-wise planners: client and server halves talk to each other."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import BlockOption, Code, Message, Options, Type
from grouposcore.errors import BlockwiseError, ResponseTooLarge
from grouposcore.transport.blockwise import (
    Block1Assembler,
    Block1Sender,
    Block2Collector,
    Block2Server,
    BlockwiseLimits,
)

ORIGIN = ("192.0.2.1", 5683)


def request(code: int = Code.PUT, payload: bytes = b"", path: str = "data") -> Message:
    opts = Options()
    opts.uri_path = [path]
    return Message(code, Type.CON, 0, b"\x01", opts, payload)


def upload(
    body: bytes, client_szx: int, server_szx: int, tag: bytes | None = None
) -> tuple[Message, int]:
    """Run a Block1 upload through the assembler; returns (delivered request, round trips)."""
    asm = Block1Assembler(BlockwiseLimits(szx=server_szx))
    req = request(payload=body)
    sender = Block1Sender(req, client_szx, tag)
    msg: Message | None = sender.first()
    trips = 0
    while msg is not None:
        trips += 1
        res = asm.feed(msg, ORIGIN, now=0.0)
        if res.complete is not None:
            assert res.final_block is not None and not res.final_block.more
            return res.complete, trips
        assert res.response is not None
        msg = sender.next(res.response)
    raise AssertionError("the sender stopped before the body was complete")


@settings(max_examples=60, deadline=None)
@given(
    st.binary(min_size=0, max_size=5000),
    st.integers(min_value=0, max_value=6),
    st.integers(min_value=0, max_value=6),
)
def test_block1_roundtrip_any_sizes(body: bytes, cszx: int, sszx: int) -> None:
    if not Block1Sender.needed(request(payload=body), cszx):
        return
    whole, _ = upload(body, cszx, sszx)
    assert whole.payload == body
    assert whole.options.block1 is None and whole.options.size1 is None
    assert whole.options.uri_path == ["data"]


def test_block1_server_asks_for_smaller_blocks() -> None:
    body = bytes(range(256)) * 40  # 10 KiB
    whole, trips = upload(body, client_szx=6, server_szx=2)
    assert whole.payload == body
    assert trips == 1 + (len(body) - 1024) // 64  # first 1024-byte block, then 64-byte ones


def test_block1_size1_and_request_tag_on_blocks() -> None:
    body = b"x" * 3000
    sender = Block1Sender(request(payload=body), 6, b"\x07\x07")
    first = sender.first()
    assert first.options.size1 == 3000
    assert first.options.block1 == BlockOption(0, True, 6)
    assert first.options.request_tag == b"\x07\x07"
    cont = Message(Code.CONTINUE)
    cont.options.block1 = BlockOption(0, True, 6)
    second = sender.next(cont)
    assert second is not None and second.options.block1 == BlockOption(1, True, 6)
    assert second.options.request_tag == b"\x07\x07"
    # A final (non-2.31) answer ends the transfer, whatever it is.
    assert sender.next(Message(Code.REQUEST_ENTITY_TOO_LARGE)) is None


def test_block1_continue_for_wrong_block_is_an_error() -> None:
    sender = Block1Sender(request(payload=b"y" * 2000), 6)
    sender.first()
    bad = Message(Code.CONTINUE)
    bad.options.block1 = BlockOption(3, True, 6)
    with pytest.raises(BlockwiseError):
        sender.next(bad)


def test_block1_missing_block_gets_408_and_tags_separate_bodies() -> None:
    asm = Block1Assembler(BlockwiseLimits())
    a = Block1Sender(request(payload=b"a" * 2048 + b"!"), 6, b"A")
    b = Block1Sender(request(payload=b"b" * 2048 + b"?"), 6, b"B")
    a1, b1 = a.first(), b.first()
    assert asm.feed(a1, ORIGIN, 0.0).response.code == Code.CONTINUE
    assert asm.feed(b1, ORIGIN, 0.0).response.code == Code.CONTINUE
    cont = Message(Code.CONTINUE)
    cont.options.block1 = BlockOption(0, True, 6)
    a2 = a.next(cont)
    a3 = a.next(_cont(1))
    # Skipping block 1 of body A: 4.08, and the state of B is untouched.
    assert asm.feed(a3, ORIGIN, 0.0).response.code == Code.REQUEST_ENTITY_INCOMPLETE
    assert asm.feed(a2, ORIGIN, 0.0).response.code == Code.CONTINUE
    assert asm.feed(a3, ORIGIN, 0.0).complete.payload == b"a" * 2048 + b"!"
    b2 = b.next(cont)
    b3 = b.next(_cont(1))
    assert asm.feed(b2, ORIGIN, 0.0).response.code == Code.CONTINUE
    assert asm.feed(b3, ORIGIN, 0.0).complete.payload == b"b" * 2048 + b"?"
    # The same blocks from another peer never join this body.
    other = ("192.0.2.9", 5683)
    assert asm.feed(a2, other, 0.0).response.code == Code.REQUEST_ENTITY_INCOMPLETE


def _cont(num: int) -> Message:
    m = Message(Code.CONTINUE)
    m.options.block1 = BlockOption(num, True, 6)
    return m


def test_block1_over_limit_413_with_size1() -> None:
    asm = Block1Assembler(BlockwiseLimits(max_body=4096))
    sender = Block1Sender(request(payload=b"z" * 5000), 6)
    res = asm.feed(sender.first(), ORIGIN, 0.0)
    assert res.response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert res.response.options.size1 == 4096
    # Without Size1 the limit is found while reassembling.
    first = sender.first()
    first.options.size1 = None
    msg: Message | None = first
    codes = []
    while msg is not None:
        r = asm.feed(msg, ORIGIN, 0.0)
        assert r.response is not None
        codes.append(r.response.code)
        msg = sender.next(r.response)
    assert codes[-1] == Code.REQUEST_ENTITY_TOO_LARGE
    assert asm.pending() == 0


def test_block1_partial_bodies_expire() -> None:
    asm = Block1Assembler(BlockwiseLimits(lifetime=10.0))
    sender = Block1Sender(request(payload=b"q" * 3000), 6)
    asm.feed(sender.first(), ORIGIN, 0.0)
    second = sender.next(_cont(0))
    assert asm.feed(second, ORIGIN, 11.0).response.code == Code.REQUEST_ENTITY_INCOMPLETE


def test_block1_wrong_payload_length_is_bad_request() -> None:
    asm = Block1Assembler(BlockwiseLimits())
    msg = request(payload=b"short")
    msg.options.block1 = BlockOption(0, True, 6)
    assert asm.feed(msg, ORIGIN, 0.0).response.code == Code.BAD_REQUEST


def download(body: bytes, server_szx: int, early_szx: int | None = None) -> Message:
    srv = Block2Server(BlockwiseLimits(szx=server_szx))
    req = request(Code.GET)
    if early_szx is not None:
        req.options.block2 = BlockOption(0, False, early_szx)
    full = Message(Code.CONTENT, payload=body)
    full.options.content_format = 0
    col = Block2Collector(req, max_body=1 << 20)
    resp = srv.slice(req, full, ORIGIN, 0.0)
    nxt = col.feed(resp)
    while nxt is not None:
        assert nxt.payload == b"" and nxt.options.observe is None
        cached = srv.cached(nxt, ORIGIN, 0.0)
        assert cached is not None
        nxt = col.feed(cached)
    return col.result()


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=6000), st.integers(0, 6), st.one_of(st.none(), st.integers(0, 6)))
def test_block2_roundtrip_any_sizes(body: bytes, sszx: int, early: int | None) -> None:
    out = download(body, sszx, early)
    assert out.payload == body
    assert out.options.block2 is None and out.code == Code.CONTENT
    assert out.options.content_format == 0


def test_block2_early_negotiation_and_size2() -> None:
    srv = Block2Server(BlockwiseLimits(szx=6))
    req = request(Code.GET)
    req.options.block2 = BlockOption(0, False, 2)  # the client wants 64-byte blocks
    resp = srv.slice(req, Message(Code.CONTENT, payload=b"r" * 1000), ORIGIN, 0.0)
    assert resp.options.block2 == BlockOption(0, True, 2)
    assert len(resp.payload) == 64 and resp.options.size2 == 1000
    assert resp.options.etag is not None


def test_block2_small_response_untouched() -> None:
    srv = Block2Server(BlockwiseLimits())
    small = Message(Code.CONTENT, payload=b"ok")
    assert srv.slice(request(Code.GET), small, ORIGIN, 0.0) is small


def test_block2_out_of_range_is_bad_option() -> None:
    srv = Block2Server(BlockwiseLimits())
    req = request(Code.GET)
    req.options.block2 = BlockOption(5, False, 6)
    out = srv.slice(req, Message(Code.CONTENT, payload=b"x" * 2000), ORIGIN, 0.0)
    assert out.code == Code.BAD_OPTION


def test_block2_collector_rejects_changed_etag_and_limit() -> None:
    col = Block2Collector(request(Code.GET), max_body=1 << 20)
    b0 = Message(Code.CONTENT, payload=b"a" * 16)
    b0.options.block2 = BlockOption(0, True, 0)
    b0.options.etag = b"\x01"
    assert col.feed(b0) is not None
    b1 = Message(Code.CONTENT, payload=b"b" * 16)
    b1.options.block2 = BlockOption(1, False, 0)
    b1.options.etag = b"\x02"
    with pytest.raises(BlockwiseError):
        col.feed(b1)
    small = Block2Collector(request(Code.GET), max_body=20)
    assert small.feed(b0) is not None
    b1.options.etag = b"\x01"
    b1.options.block2 = BlockOption(1, True, 0)
    b1.payload = b"b" * 16
    with pytest.raises(ResponseTooLarge):
        small.feed(b1)


def test_block2_collector_rejects_wrong_offset() -> None:
    col = Block2Collector(request(Code.GET), max_body=1 << 20)
    b0 = Message(Code.CONTENT, payload=b"a" * 16)
    b0.options.block2 = BlockOption(0, True, 0)
    col.feed(b0)
    b2 = Message(Code.CONTENT, payload=b"c" * 16)
    b2.options.block2 = BlockOption(2, False, 0)
    with pytest.raises(BlockwiseError):
        col.feed(b2)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([23, 27, 28, 60, 11, 292]), st.binary(max_size=4)),
        max_size=5,
    ),
    st.binary(max_size=300),
)
def test_server_planners_answer_garbage_with_coap_codes(
    opts: list[tuple[int, bytes]], payload: bytes
) -> None:
    """Random Block/Size option bytes never raise: they get a response or pass through."""
    msg = Message(Code.PUT, Type.CON, 1, b"\x01", Options(opts), payload)
    asm = Block1Assembler(BlockwiseLimits(max_body=1000))
    res = asm.feed(msg, ORIGIN, 0.0)
    assert (res.complete is None) != (res.response is None)
    srv = Block2Server(BlockwiseLimits())
    cached = srv.cached(msg, ORIGIN, 0.0)
    assert cached is None or cached.code in (Code.BAD_OPTION, Code.CONTENT)
    out = srv.slice(msg, Message(Code.CONTENT, payload=payload * 5), ORIGIN, 0.0)
    assert out.code in (Code.CONTENT, Code.BAD_OPTION)
