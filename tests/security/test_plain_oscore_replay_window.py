"""Plain OSCORE (RFC 8613 §7.4): a replayed request is refused, and only a request that
fully verified moves the replay window (a forged one leaves it as it was)."""

from __future__ import annotations

import pytest

from grouposcore.errors import ProtectionError, ReplayError
from grouposcore.oscore import SecurityContext, SenderSequence
from tests.oscore.helpers import get

SECRET = b"s" * 16


def _pair(**server_kw: object) -> tuple[SecurityContext, SecurityContext]:
    client = SecurityContext(SECRET, b"\x01", b"\x02")
    server = SecurityContext(SECRET, b"\x02", b"\x01", **server_kw)  # type: ignore[arg-type]
    return client, server


def test_plain_oscore_replayed_request_is_refused() -> None:
    client, server = _pair()
    first, _ = client.protect_request(get())
    second, _ = client.protect_request(get())
    server.unprotect_request(second)
    server.unprotect_request(first)  # out of order but fresh: accepted once
    for replay in (first, second):
        with pytest.raises(ReplayError):
            server.unprotect_request(replay)


def test_plain_oscore_request_older_than_the_window_is_refused() -> None:
    client, server = _pair(replay_window_size=32)
    old, _ = client.protect_request(get())
    client.sequence = SenderSequence(40)
    new, _ = client.protect_request(get())
    server.unprotect_request(new)
    with pytest.raises(ReplayError):
        server.unprotect_request(old)


def test_plain_oscore_forged_request_does_not_move_the_window() -> None:
    client, server = _pair()
    genuine, _ = client.protect_request(get())
    forged = genuine.copy(payload=bytes([genuine.payload[0] ^ 1]) + genuine.payload[1:])
    before = (server.replay_window.highest, server.replay_window._bitmap)
    with pytest.raises(ProtectionError):
        server.unprotect_request(forged)
    assert (server.replay_window.highest, server.replay_window._bitmap) == before
    plain, _ = server.unprotect_request(genuine)  # the real request still gets through
    assert plain.options.uri_path == ["light"]
