"""Refused requests: no error response to what is or may be a group request (RFC 10021 §7),
and every refusal counted and logged for the operator (``serve -v``).

A toy server security raises the refusal under test; requests are sent as raw datagrams so
the test sees exactly what (if anything) comes back.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import pytest

from grouposcore.coap import BlockOption, Code, Message, Type
from grouposcore.errors import (
    ContextNotFound,
    CredentialNotFound,
    GroupOscoreError,
    OscoreDecodeError,
    ProtectionError,
    ReplayError,
)
from grouposcore.transport import Endpoint, Protection, Resource, Site
from grouposcore.transport.rejections import (
    RejectionStats,
    may_be_group_request,
    reason_of,
    request_mode,
)

#: OSCORE option values: Group Flag | kid flag | PIV length 1, PIV 5, kid 0x42 ...
GROUP_MODE = b"\x29\x05\x42"
#: ... and without the Group Flag (OSCORE, or pairwise without kid context)
ONE_TO_ONE = b"\x09\x05\x42"


class Refusing:
    """Server security that refuses every protected request with ``exc``."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def unprotect_request(self, request: Message) -> tuple[Message, Any] | None:
        if request.options.oscore is None:
            return None
        raise self.exc

    def protect_response(self, response: Message, binding: Any) -> Message:
        raise AssertionError("nothing verified, so nothing is protected")


class Open(Resource):
    protection = Protection()

    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=b"open")


def _request(oscore: bytes, *, critical: bool = False, late_block: bool = False) -> bytes:
    msg = Message(Code.POST, Type.NON, 0x3344, b"\x21", payload=b"ciphertext")
    msg.options.oscore = oscore
    if critical:
        msg.options.set(65001, b"x")  # an unknown critical option: 4.02 Bad Option
    if late_block:  # outer Block1 #1 without #0: 4.08 Request Entity Incomplete
        msg.options.block1 = BlockOption.from_size(1, False, 16)
        msg.payload = b"x" * 16
    return msg.encode()


async def _exchange(endpoint: Endpoint, data: bytes) -> Message | None:
    """Send ``data`` from a fresh socket; the first non-empty answer within 0.5 s, or None."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    try:
        await loop.sock_sendto(sock, data, endpoint.address)
        while True:
            try:
                reply, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), 0.5)
            except TimeoutError:
                return None
            msg = Message.decode(reply)
            if msg.code != Code.EMPTY:
                return msg
    finally:
        sock.close()


def _serve(security: Any, data: bytes) -> tuple[Message | None, RejectionStats]:
    async def main() -> tuple[Message | None, RejectionStats]:
        site = Site()
        site.add("open", Open())
        ep = await Endpoint.create(("127.0.0.1", 0), site=site, server_security=security)
        try:
            return await _exchange(ep, data), ep.rejections
        finally:
            await ep.close()

    return asyncio.run(main())


REFUSALS = [
    (ContextNotFound("unknown Sender ID 42"), "unknown-context", Code.UNAUTHORIZED),
    (CredentialNotFound("no credential"), "no-credential", Code.SERVICE_UNAVAILABLE),
    (ReplayError("replayed"), "replay", Code.UNAUTHORIZED),
    (ProtectionError("signature verification failed"), "verification-failed", Code.BAD_REQUEST),
    (OscoreDecodeError("truncated"), "malformed", Code.BAD_OPTION),
    (GroupOscoreError("something else"), "other:GroupOscoreError", Code.BAD_REQUEST),
]


@pytest.mark.parametrize(("exc", "reason", "code"), REFUSALS, ids=[r[1] for r in REFUSALS])
def test_group_mode_request_failures_get_no_error_response(
    exc: BaseException, reason: str, code: int
) -> None:
    """A group-mode request that arrived by unicast is refused in silence, whatever the
    reason; the same refusal of a one-to-one request is answered."""
    answer, stats = _serve(Refusing(exc), _request(GROUP_MODE))
    assert answer is None
    assert stats.counts == {reason: 1}
    assert stats.last is not None and stats.last.mode == "group" and not stats.last.answered
    answer, stats = _serve(Refusing(exc), _request(ONE_TO_ONE))
    assert answer is not None and answer.code == code
    assert stats.counts == {reason: 1} and stats.last is not None and stats.last.answered


def test_group_mode_request_with_a_bad_outer_option_gets_no_402() -> None:
    answer, _ = _serve(Refusing(ContextNotFound("x")), _request(GROUP_MODE, critical=True))
    assert answer is None
    answer, _ = _serve(Refusing(ContextNotFound("x")), _request(ONE_TO_ONE, critical=True))
    assert answer is not None and answer.code == Code.BAD_OPTION


def test_group_mode_request_with_a_broken_outer_block1_gets_no_408() -> None:
    answer, _ = _serve(Refusing(ContextNotFound("x")), _request(GROUP_MODE, late_block=True))
    assert answer is None
    answer, _ = _serve(Refusing(ContextNotFound("x")), _request(ONE_TO_ONE, late_block=True))
    assert answer is not None and answer.code == Code.REQUEST_ENTITY_INCOMPLETE


def test_group_mode_request_to_an_endpoint_without_security_gets_no_402() -> None:
    answer, stats = _serve(None, _request(GROUP_MODE))
    assert answer is None and stats.counts == {"no-security": 1}
    answer, stats = _serve(None, _request(ONE_TO_ONE))
    assert answer is not None and answer.code == Code.BAD_OPTION
    assert stats.counts == {"no-security": 1}


def test_security_layer_crash_on_a_group_mode_request_gets_no_500() -> None:
    answer, _ = _serve(Refusing(RuntimeError("bug")), _request(GROUP_MODE))
    assert answer is None
    answer, _ = _serve(Refusing(RuntimeError("bug")), _request(ONE_TO_ONE))
    assert answer is not None and answer.code == Code.INTERNAL_SERVER_ERROR


def test_rejections_are_logged_with_reason_sender_kid_and_mode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="grouposcore.security")
    _serve(Refusing(ReplayError("Partial IV 5 already received")), _request(GROUP_MODE))
    _, stats = _serve(None, _request(ONE_TO_ONE))
    lines = [r.getMessage() for r in caplog.records if r.name == "grouposcore.security"]
    assert len(lines) == 2
    assert "rejected group request from ('127.0.0.1', " in lines[0]
    assert "kid 42: replay (Partial IV 5 already received), not answered" in lines[0]
    assert "rejected oscore request from" in lines[1] and "kid 42: no-security" in lines[1]
    assert stats.summary() == "no-security 1"


def test_unprotected_request_to_a_protected_resource_is_counted() -> None:
    msg = Message(Code.GET, Type.NON, 7, b"\x01")
    msg.options.uri_path = ["open"]
    answer, stats = _serve(Refusing(ContextNotFound("x")), msg.encode())
    assert answer is not None and answer.code == Code.UNAUTHORIZED
    assert stats.counts == {"unprotected": 1}
    assert stats.last is not None and stats.last.mode == "plain"


def test_sans_io_helpers() -> None:
    plain = Message(Code.GET)
    assert not may_be_group_request(plain, False) and may_be_group_request(plain, True)
    group = Message(Code.POST)
    group.options.oscore = GROUP_MODE
    assert may_be_group_request(group, False)
    assert request_mode(group) == ("group", b"\x42")
    pairwise = Message(Code.POST)
    pairwise.options.oscore = b"\x19\x05\x02\xaa\xbb\x42"  # kid context aabb
    assert request_mode(pairwise, [b"\xaa\xbb"]) == ("pairwise", b"\x42")
    assert request_mode(pairwise, [b"\xcc"]) == ("oscore", b"\x42")
    broken = Message(Code.POST)
    broken.options.oscore = b"\x2f"  # Group Flag, reserved PIV length
    assert may_be_group_request(broken, False) and request_mode(broken)[0] == "group"
    assert reason_of(CredentialNotFound("x")) == "no-credential"  # before ContextNotFound
