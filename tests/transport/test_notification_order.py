"""Notification order, sans-I/O: Observe numbers for plain CoAP, Partial IVs under OSCORE."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import Message
from grouposcore.oscore.common import ResponseInfo
from grouposcore.oscore.option import encode_option
from grouposcore.oscore.security import VerifiedMessage
from grouposcore.transport.observation import order_source
from grouposcore.transport.observe import NotificationOrder, PartialIvOrder


def _piv(n: int) -> bytes:
    return n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")


def test_partial_iv_order_per_source_and_the_piv_less_answer_is_oldest() -> None:
    order = PartialIvOrder()
    assert order.accept("s1", None)  # the registration's answer (request nonce reused)
    assert not order.accept("s1", None)  # a second one without Partial IV is older
    assert order.accept("s1", _piv(3))
    assert not order.accept("s1", _piv(3)) and not order.accept("s1", _piv(2))
    assert order.accept("s2", _piv(0))  # another server (or context) is ordered apart
    assert order.accept("s1", _piv(300))


@settings(deadline=None)
@given(st.lists(st.integers(0, 2**40 - 1), max_size=30))
def test_partial_iv_order_delivers_exactly_the_running_maxima(pivs: list[int]) -> None:
    order = PartialIvOrder()
    delivered = [p for p in pivs if order.accept("s", _piv(p))]
    expected, top = [], -1
    for p in pivs:
        if p > top:
            expected.append(p)
            top = p
    assert delivered == expected


def test_observe_order_still_rules_plain_coap() -> None:
    order = NotificationOrder()
    assert order.accept(5, 0.0) and not order.accept(4, 1.0) and order.accept(6, 2.0)


def test_order_source_names_server_and_kid_context() -> None:
    raw = Message(69)
    raw.options.oscore = encode_option(b"\x07", b"\x02", b"\xaa")
    verified = VerifiedMessage(69, security=ResponseInfo(b"\x02", False, b"\x07"))
    assert order_source(raw, verified) == ((b"\x02", b"\xaa"), b"\x07")
    assert order_source(raw, Message(69)) is None  # no security report: Observe orders
