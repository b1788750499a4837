"""The OSCORE envelope (RFC 8613 §4): what goes inside, what stays outside, and back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import Code, Message, OptionNumber, Options
from grouposcore.errors import OscoreDecodeError
from grouposcore.oscore import inner

REQUEST_CODES = (Code.GET, Code.POST, Code.PUT, Code.DELETE, Code.FETCH)
RESPONSE_CODES = (Code.CONTENT, Code.CHANGED, Code.NOT_FOUND, Code.UNAUTHORIZED)
_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    is_request = draw(st.booleans())
    code = draw(st.sampled_from(REQUEST_CODES if is_request else RESPONSE_CODES))
    options = Options()
    if draw(st.booleans()):
        options.add(OptionNumber.URI_HOST, draw(_text))
    for segment in draw(st.lists(_text, max_size=3)):
        options.add(OptionNumber.URI_PATH, segment)
    for query in draw(st.lists(_text, max_size=2)):
        options.add(OptionNumber.URI_QUERY, query)
    if draw(st.booleans()):
        options.add(OptionNumber.CONTENT_FORMAT, draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        options.add(OptionNumber.ETAG, draw(st.binary(min_size=1, max_size=8)))
    if draw(st.booleans()):
        value = draw(st.sampled_from((0, 1)) if is_request else st.integers(0, (1 << 24) - 1))
        options.add(OptionNumber.OBSERVE, value)
    if draw(st.booleans()):
        options.add(OptionNumber.ECHO, draw(st.binary(min_size=1, max_size=40)))
    payload = draw(st.binary(max_size=32))
    return Message(
        code=code,
        mid=draw(st.integers(0, 65535)),
        token=draw(st.binary(max_size=8)),
        options=options,
        payload=payload,
    )


@settings(deadline=None, max_examples=300)
@given(messages())
def test_split_then_merge_gives_back_the_message(message: Message) -> None:
    """Whatever the application wrote is what the other end's application reads, and the
    outside shows nothing of class E: no path, query, payload or real code."""
    outer, plaintext, outer_code = inner.split(message)
    protected = inner.assemble(message, outer, outer_code, b"", b"\x00")
    assert protected.payload == b"\x00" and protected.code in (
        Code.POST,
        Code.FETCH,
        Code.CHANGED,
        Code.CONTENT,
    )
    visible = {number for number, _ in protected.options}
    assert visible <= {OptionNumber.URI_HOST, OptionNumber.OBSERVE, OptionNumber.OSCORE}
    merged = inner.merge(protected, plaintext)
    assert (merged.code, merged.payload, merged.token, merged.mid) == (
        message.code,
        message.payload,
        message.token,
        message.mid,
    )
    assert list(merged.options) == list(message.options)


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=48))
def test_random_plaintext_merges_exactly_or_is_rejected(plaintext: bytes) -> None:
    """A decrypted plaintext is either a well-formed inner message (code first, payload
    after the marker) or an OscoreDecodeError, never another exception."""
    protected = Message(code=Code.CHANGED, mid=7, token=b"t")
    protected.options.add(OptionNumber.OSCORE, b"")
    try:
        merged = inner.merge(protected, plaintext)
    except OscoreDecodeError:
        return
    assert merged.code == plaintext[0]
    if merged.payload:
        assert plaintext.endswith(b"\xff" + merged.payload)
    assert OptionNumber.OSCORE not in {number for number, _ in merged.options}


def test_empty_plaintext_is_rejected() -> None:
    with pytest.raises(OscoreDecodeError, match="empty plaintext"):
        inner.merge(Message(code=Code.CHANGED), b"")
