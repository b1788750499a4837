"""The client side: its sans-I/O decisions (what a request sends next: Block1 blocks, Block2
follow-ups, one Echo retry; how long an exchange waits; when a body needs a Request-Tag) and
the inbox a group request waits on."""

from __future__ import annotations

import asyncio

import pytest

from grouposcore.coap import BlockOption, Code, Message
from grouposcore.errors import BlockwiseError
from grouposcore.transport.blockwise import BlockwiseLimits
from grouposcore.transport.client import (
    BodyTags,
    Inbox,
    RequestPlan,
    destination,
    echo_retry,
    response_deadline,
)
from grouposcore.transport.params import TransmissionParams

A = ("192.0.2.1", 5683)


def post(payload: bytes = b"", path: str = "r") -> Message:
    msg = Message(Code.POST, payload=payload)
    msg.options.uri_path = [path]
    return msg


def continue_(num: int, szx: int = 0) -> Message:
    msg = Message(Code.CONTINUE)
    msg.options.block1 = BlockOption(num, True, szx)
    return msg


def block2(num: int, more: bool, payload: bytes, code: int = Code.CHANGED) -> Message:
    msg = Message(code, payload=payload)
    msg.options.block2 = BlockOption(num, more, 0)
    return msg


def test_plan_sends_the_body_in_blocks_then_fetches_the_response_blocks() -> None:
    plan = RequestPlan(post(bytes(40)), BlockwiseLimits(szx=0))
    sent = [plan.first()]
    for answer in (continue_(0), continue_(1), block2(0, True, b"a" * 16)):
        nxt = plan.next(answer)
        assert nxt is not None
        sent.append(nxt)
    assert plan.next(block2(1, False, b"b")) is None
    assert [m.options.block1 for m in sent[:3]] == [
        BlockOption(0, True, 0),
        BlockOption(1, True, 0),
        BlockOption(2, False, 0),
    ]
    follow = sent[3]
    assert follow.options.block2 == BlockOption(1, False, 0) and follow.payload == b""
    assert follow.options.block1 is None
    result = plan.result()
    assert result.code == Code.CHANGED and result.payload == b"a" * 16 + b"b"
    assert result.options.block2 is None


def test_plan_retries_once_with_the_echo_of_a_401() -> None:
    plan = RequestPlan(post(b"x"), BlockwiseLimits())
    first = plan.first()
    challenge = Message(Code.UNAUTHORIZED)
    challenge.options.echo = b"\x05"
    retry = plan.next(challenge)
    assert retry is not None and retry.options.echo == b"\x05" and first.options.echo is None
    again = Message(Code.UNAUTHORIZED)
    again.options.echo = b"\x06"
    assert plan.next(again) is None  # one retry only
    assert plan.result() is again


def test_plan_without_echo_returns_the_challenge() -> None:
    plan = RequestPlan(post(b"x"), BlockwiseLimits(), echo=False)
    plan.first()
    challenge = Message(Code.UNAUTHORIZED)
    challenge.options.echo = b"\x05"
    assert plan.next(challenge) is None and plan.result() is challenge
    with pytest.raises(BlockwiseError):
        RequestPlan(post(), BlockwiseLimits()).result()


def test_echo_retry_only_for_a_new_echo_value_in_a_401() -> None:
    challenge = Message(Code.UNAUTHORIZED)
    challenge.options.echo = b"\x05"
    assert echo_retry(post(), Message(Code.UNAUTHORIZED)) is None
    assert echo_retry(post(), Message(Code.CHANGED)) is None
    answered = post()
    answered.options.echo = b"\x05"
    assert echo_retry(answered, challenge) is None
    retry = echo_retry(post(b"body"), challenge)
    assert retry is not None and retry.payload == b"body" and retry.options.echo == b"\x05"


def test_response_deadline_follows_rfc7252_limits() -> None:
    p = TransmissionParams()
    assert response_deadline(p, confirmable=True, acked=False, deadline=9.0, start=1.0) == 9.0
    assert response_deadline(p, confirmable=True, acked=False, deadline=None, start=1.0) is None
    assert (
        response_deadline(p, confirmable=True, acked=True, deadline=None, start=1.0)
        == 1.0 + p.exchange_lifetime
    )
    assert (
        response_deadline(p, confirmable=False, acked=False, deadline=None, start=1.0)
        == 1.0 + p.max_transmit_wait
    )


def test_body_tags_only_tag_a_body_sent_beside_another_to_the_same_resource() -> None:
    tags = BodyTags()
    k1, t1 = tags.acquire(A, post(path="r"))
    _, other = tags.acquire(A, post(path="s"))
    k2, t2 = tags.acquire(A, post(path="r"))
    assert t1 is None and other is None and t2 is not None and len(t2) == 4
    tags.release(k2)
    tags.release(k1)
    assert tags.acquire(A, post(path="r"))[1] is None


def test_destination_leaves_implied_uri_host_and_port_out() -> None:
    msg = Message(Code.GET)
    msg.options.uri_host = "[2001:db8::1]"
    msg.options.uri_port = 5683
    host, port, sent = destination(msg)
    assert (host, port) == ("2001:db8::1", 5683)
    assert sent.options.uri_host is None and sent.options.uri_port is None
    named = Message(Code.GET)
    named.options.uri_host = "node.example"
    named.options.uri_port = 61616
    host, port, sent = destination(named)
    assert (host, port) == ("node.example", 61616)
    assert sent.options.uri_host == "node.example" and sent.options.uri_port == 61616
    assert named.options.uri_host == "node.example"  # the caller's request is left alone
    with pytest.raises(ValueError):
        destination(Message(Code.GET))


def test_inbox_hands_over_items_in_order_and_times_out_on_the_loop_clock() -> None:
    async def main() -> None:
        inbox = Inbox(asyncio.get_running_loop())
        inbox.put("a")
        inbox.put("b")
        assert await inbox.get(0.0) == "a"  # arrived already: no wait, even with no time
        assert await inbox.get(0.0) == "b"
        asyncio.get_running_loop().call_soon(inbox.put, "c")
        assert await inbox.get(10.0) == "c"
        with pytest.raises(TimeoutError):
            await inbox.get(0.01)
        inbox.put("d")  # a late item waits for the next get
        assert await inbox.get(0.0) == "d"

    asyncio.run(main())
