"""The Group Flag selects group or pairwise mode (RFC 10021 §2.6.3): a group without group
mode refuses a group-mode message with a typed error, before any key or state is touched."""

from __future__ import annotations

import pytest

from grouposcore.errors import ModeNotSupported
from grouposcore.oscore.security import ServerSecurity
from tests.oscore.helpers import Member, content, get

A, B = Member(b"\x0a", "a"), Member(b"\x0b", "b")


def test_group_flag_refused_by_a_pairwise_only_group() -> None:
    server = B.context([A], group_enc=None, signature=None)
    assert not server.group_mode and server.pairwise_mode
    request, _ = A.context([B]).protect_request(get())  # group mode: Group Flag set
    assert request.options.oscore[0] & 0x20
    window = server.recipients[A.sid].replay_window
    before = (window.valid, window.highest, window._bitmap)
    with pytest.raises(ModeNotSupported):
        server.unprotect_request(request)
    with pytest.raises(ModeNotSupported):
        ServerSecurity([server]).unprotect_request(request)
    assert (window.valid, window.highest, window._bitmap) == before
    # the same group's pairwise mode works
    pairwise_client = A.context([B], group_enc=None, signature=None)
    pairwise, _ = pairwise_client.protect_request(get(), pairwise_with=B.sid)
    assert server.unprotect_request(pairwise)[0].options.uri_path == ["light"]


def test_group_flag_response_refused_by_a_pairwise_only_group() -> None:
    client = A.context([B], group_enc=None, signature=None)
    request, binding = client.protect_request(get(), pairwise_with=B.sid)
    # a group-mode response of a full-mode member, re-addressed to this request
    full_server = B.context([A])
    _, fbinding = full_server.unprotect_request(A.context([B]).protect_request(get())[0])
    reply = full_server.protect_response(content(b"x"), fbinding)
    assert reply.options.oscore[0] & 0x20
    reply.token = request.token
    with pytest.raises(ModeNotSupported):
        client.unprotect_response(reply, binding)
    assert binding.trackers is None  # no replay state was created for the refused response
