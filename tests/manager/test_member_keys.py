"""The member's own key pair and join values across joins, re-joins and resumptions
(grouposcore.manager.member_state.MemberKeys), without a Group Manager."""

from __future__ import annotations

from grouposcore.cose import private_key_to_bytes
from grouposcore.manager.member_state import MemberKeys, MemberState
from grouposcore.manager.params import Role, tperm
from tests.manager.test_member_decisions import material

MONITOR = tperm([Role.MONITOR])
REQUESTER = tperm([Role.REQUESTER])


def _state(keys: MemberKeys, scope: bytes = b"\x81", nonce: bytes = b"n") -> MemberState:
    return MemberState(node="n", material=material(), scope=scope, client_nonce=nonce,
                       private_key=private_key_to_bytes(keys.private_key),
                       credential=keys.credential)  # fmt: skip


def test_a_monitor_joins_without_a_key_pair_and_others_keep_theirs() -> None:
    keys = MemberKeys()
    keys.for_join(REQUESTER, -8, "n")
    first = keys.private_key
    assert first is not None and keys.credential is not None
    keys.for_join(REQUESTER, -8, "n")
    assert keys.private_key is first  # a re-join keeps the key the GM knows
    keys.for_join(MONITOR, -8, "n")
    assert keys.private_key is None and keys.credential is None


def test_a_rejoin_keeps_the_state_files_key_unless_one_was_given() -> None:
    old = MemberKeys()
    old.for_join(REQUESTER, -8, "n")
    state = _state(old)
    fresh = MemberKeys()
    fresh.keep_key(state)
    assert fresh.credential == old.credential and fresh.scope == b""
    given = MemberKeys()
    given.for_join(REQUESTER, -8, "n")
    mine = given.credential
    given.keep_key(state)
    assert given.credential == mine


def test_resuming_takes_over_key_scope_and_nonce_and_saves_them_back() -> None:
    old = MemberKeys()
    old.for_join(REQUESTER, -8, "n")
    keys = MemberKeys()
    keys.resume(_state(old, scope=b"\x82", nonce=b"cn"))
    assert (keys.credential, keys.scope, keys.client_nonce) == (old.credential, b"\x82", b"cn")
    saved = keys.state("n", material(), 128)
    assert saved.private_key == private_key_to_bytes(old.private_key)
    assert (saved.scope, saved.client_nonce, saved.ssn_reserved) == (b"\x82", b"cn", 128)
    assert MemberKeys().state("n", material(), 0).scope == b"\x80"  # never joined: empty
