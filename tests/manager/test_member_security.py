"""A response to a request verified under an older context goes out under the current one
only while the requester is still the member it was."""

from __future__ import annotations

import pytest

from grouposcore.errors import ContextNotFound
from grouposcore.manager.member import PeerInfo
from grouposcore.manager.member_security import MemberServerSecurity
from tests.oscore.helpers import Member, get


def test_a_response_never_goes_to_a_new_holder_of_the_requesters_sender_id() -> None:
    """The observer's Sender ID went stale after a rekeying and now names another member:
    its observation ends (ContextNotFound) instead of a notification that the new holder
    could read; the same member under the same Sender ID is still answered."""
    requester, server, newcomer = Member(b"\x00", "a"), Member(b"\x01", "b"), Member(b"\x00", "d")
    old = server.context([requester])
    msg, _ = requester.context([server]).protect_request(get())
    _, binding = old.unprotect_request(msg)
    current = server.context([newcomer])  # after the rekeying: Sender ID 00 is d's
    with pytest.raises(ContextNotFound, match="no longer the same member"):
        MemberServerSecurity._same_requester(
            binding, current, {b"\x00": PeerInfo(newcomer.cred.raw, 0)}
        )
    same = server.context([])
    MemberServerSecurity._same_requester(binding, same, {b"\x00": PeerInfo(requester.cred.raw, 0)})
    assert same.recipients[b"\x00"].credential.raw == requester.cred.raw
