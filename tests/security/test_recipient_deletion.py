"""RFC 10021 §2.6.1.2: once a Recipient Context was deleted, its replay state is lost, so
every Recipient Context created afterwards starts with an invalid replay window."""

from __future__ import annotations

import pytest

from grouposcore.errors import FreshnessRequired
from tests.oscore.helpers import Member, get

A, B, C = (Member(bytes([i]), n) for i, n in ((0x0A, "a"), (0x0B, "b"), (0x0C, "c")))


def test_removed_recipient_makes_later_recipient_windows_invalid() -> None:
    server = B.context([A], credential_provider=lambda kid, gid: {C.sid: C.cred.raw}.get(kid))
    server.remove_recipient(A.sid)
    assert server.recipient_deleted
    # A comes back (e.g. learnt again from the Group Manager): its old requests must not be
    # deliverable again, so its new context starts invalid and asks for an Echo
    server.add_recipient(A.sid, A.cred.raw)
    assert not server.recipients[A.sid].replay_window.valid
    request, _ = A.context([B]).protect_request(get())
    with pytest.raises(FreshnessRequired):
        server.unprotect_request(request)
    # the same holds for a context created on the fly for a member never seen before
    request, _ = C.context([B]).protect_request(get())
    with pytest.raises(FreshnessRequired):
        server.unprotect_request(request)
    assert not server.recipients[C.sid].replay_window.valid


def test_removing_an_unknown_recipient_is_no_deletion() -> None:
    server = B.context([A])
    server.remove_recipient(C.sid)
    assert not server.recipient_deleted
    request, _ = A.context([B]).protect_request(get())
    server.unprotect_request(request)
