"""Group OSCORE processing: rejections leave no trace, one request many responses, freshness."""

from __future__ import annotations

import copy

import pytest

from grouposcore.coap import Message
from grouposcore.errors import (
    ContextNotFound,
    CredentialNotFound,
    FreshnessRequired,
    ModeNotSupported,
    OscoreDecodeError,
    OscoreError,
    ProtectionError,
    ReplayError,
)
from grouposcore.oscore import GroupContext, SecurityContext, decode_option
from tests.oscore.helpers import Member, content, echo_challenge, get

A, B, C, D = (
    Member(bytes([i]), n) for i, n in ((0x0A, "a"), (0x0B, "b"), (0x0C, "c"), (0x0D, "d"))
)


def snapshot(ctx: GroupContext) -> dict:
    """Everything an unprotect may change: recipients and their replay windows."""
    return {
        rid: (
            rc.replay_window.valid,
            rc.replay_window.highest,
            rc.replay_window._bitmap,
            rc.echo_challenge,
        )
        for rid, rc in ctx.recipients.items()
    } | {"_deleted": ctx.recipient_deleted, "_seq": ctx.sequence.peek()}


def flip(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 0x01
    return bytes(b)


def protected_request(pairwise: bool = False) -> tuple[GroupContext, GroupContext, Message]:
    client = A.context([B])
    server = B.context([A])
    msg, _ = client.protect_request(get(), pairwise_with=B.sid if pairwise else None)
    return client, server, msg


@pytest.mark.parametrize("pairwise", [False, True], ids=["group", "pairwise"])
@pytest.mark.parametrize("where", ["ciphertext", "signature", "option-piv", "kid-context"])
def test_tampering_is_rejected_without_state_change(where: str, pairwise: bool) -> None:
    _, server, msg = protected_request(pairwise)
    if pairwise and where == "signature":
        where = "ciphertext-end"
    bad = copy.deepcopy(msg)
    option = msg.options.oscore
    if where == "ciphertext":
        bad.payload = flip(msg.payload, 0)
    elif where in ("signature", "ciphertext-end"):
        bad.payload = flip(msg.payload, len(msg.payload) - 1)
    elif where == "option-piv":
        bad.options.oscore = flip(option, 1)  # PIV 0x00 -> 0x01: wrong nonce and AAD
    else:
        bad.options.oscore = flip(option, 3)  # inside the Gid
    before = snapshot(server)
    with pytest.raises((ProtectionError, ContextNotFound)):
        server.unprotect_request(bad)
    assert snapshot(server) == before
    # the genuine message is still accepted afterwards
    request, binding = server.unprotect_request(msg)
    assert request.options.uri_path == ["light"]
    assert binding.group_mode is not pairwise


def test_signature_by_another_key_is_rejected() -> None:
    impostor = Member(A.sid, "impostor")  # same Sender ID, own key, but B knows A's credential
    client = impostor.context([B])
    server = B.context([A])
    msg, _ = client.protect_request(get())
    before = snapshot(server)
    with pytest.raises(ProtectionError, match="signature"):
        server.unprotect_request(msg)
    assert snapshot(server) == before


def test_replayed_request_is_rejected() -> None:
    _, server, msg = protected_request()
    server.unprotect_request(msg)
    before = snapshot(server)
    with pytest.raises(ReplayError):
        server.unprotect_request(msg)
    assert snapshot(server) == before


@pytest.mark.parametrize("fresh_piv", [False, True], ids=["request-nonce", "own-piv"])
@pytest.mark.parametrize("mode", ["group", "pairwise", "oscore"])
def test_response_bound_to_another_request_is_rejected(mode: str, fresh_piv: bool) -> None:
    """A response verifies only for the request it answers: with its own Partial IV the
    nonce no longer ties it to the request, only the request's kid and Partial IV in the
    external_aad do (RFC 8613 §5.4, RFC 10021 §4.3)."""
    client: GroupContext | SecurityContext
    server: GroupContext | SecurityContext
    if mode == "oscore":
        client = SecurityContext(b"s" * 16, b"\x01", b"\x02")
        server = SecurityContext(b"s" * 16, b"\x02", b"\x01")
        protect = client.protect_request
    else:
        client, server = A.context([B]), B.context([A])
        target = B.sid if mode == "pairwise" else None

        def protect(msg: Message) -> tuple[Message, object]:
            return client.protect_request(msg, pairwise_with=target)  # type: ignore[union-attr]

    first, binding1 = protect(get(mid=1))
    second, binding2 = protect(get(mid=2))
    _, sbinding1 = server.unprotect_request(first)
    server.unprotect_request(second)
    response = server.protect_response(content(b"on"), sbinding1, fresh_piv=fresh_piv)
    with pytest.raises(ProtectionError):
        client.unprotect_response(response, binding2)
    assert not binding2.trackers or not any(
        t.no_piv_seen or t.window.highest >= 0 for t in binding2.trackers.values()
    )
    assert client.unprotect_response(response, binding1)[0].payload == b"on"


def test_group_flag_on_a_plain_oscore_context_is_rejected() -> None:
    _, _, msg = protected_request()
    plain = SecurityContext(b"k" * 16, b"\x0b", b"\x0a", id_context=bytes.fromhex("44616c"))
    with pytest.raises(OscoreDecodeError, match="Group Flag"):
        plain.unprotect_request(msg)


def test_unknown_kid_without_credential_creates_no_state() -> None:
    client = C.context([B])
    server = B.context([A], credential_provider=lambda kid, gid: None)
    msg, _ = client.protect_request(get())
    with pytest.raises(CredentialNotFound) as info:
        server.unprotect_request(msg)
    assert info.value.coap_code == (5 << 5) | 3
    assert C.sid not in server.recipients
    no_provider = B.context([A])
    with pytest.raises(ContextNotFound):
        no_provider.unprotect_request(msg)


def test_recipient_context_created_on_the_fly_and_dropped_on_failure() -> None:
    asked: list[bytes] = []

    def provider(kid: bytes, gid: bytes) -> bytes | None:
        asked.append(kid)
        return {C.sid: C.cred.raw}.get(kid)

    server = B.context([A], credential_provider=provider)
    client = C.context([B])
    msg, _ = client.protect_request(get())
    bad = copy.deepcopy(msg)
    bad.payload = flip(msg.payload, 2)
    with pytest.raises(ProtectionError):
        server.unprotect_request(bad)
    assert C.sid not in server.recipients
    assert not server.recipient_deleted  # a failed provisional context is no deletion
    server.unprotect_request(msg)
    assert C.sid in server.recipients and server.recipients[C.sid].replay_window.valid
    assert asked == [C.sid, C.sid]


def test_one_request_many_responses() -> None:
    client = A.context([B, C, D])
    servers = [m.context([A]) for m in (B, C, D)]
    request, binding = client.protect_request(get())
    seen = {}
    for server, pairwise in zip(servers, (False, True, False), strict=True):
        _, sbinding = server.unprotect_request(request)
        resp = server.protect_response(content(server.sender_id), sbinding, pairwise=pairwise)
        plain, info = client.unprotect_response(resp, binding)
        seen[info.sender_id] = (plain.payload, info.group_mode)
        with pytest.raises(ReplayError):  # a second response without PIV from the same server
            client.unprotect_response(resp, binding)
    assert seen == {B.sid: (B.sid, True), C.sid: (C.sid, False), D.sid: (D.sid, True)}


def test_notifications_need_fresh_piv_and_are_not_replayed() -> None:
    client, server, _ = protected_request()
    request, binding = client.protect_request(get())
    _, sbinding = server.unprotect_request(request)
    first = server.protect_response(content(b"1"), sbinding)
    second = server.protect_response(content(b"2"), sbinding)
    assert first.options.oscore[0] & 0x07 == 0  # first reuses the request nonce
    assert second.options.oscore[0] & 0x07 != 0  # later ones carry a Partial IV
    assert client.unprotect_response(second, binding)[0].payload == b"2"
    assert client.unprotect_response(first, binding)[0].payload == b"1"
    with pytest.raises(ReplayError):
        client.unprotect_response(second, binding)


def test_pairwise_response_from_another_member_is_rejected() -> None:
    client = A.context([B, C])
    b, c = B.context([A]), C.context([A])
    request, binding = client.protect_request(get(), pairwise_with=B.sid)
    _, sbinding = b.unprotect_request(request)
    # C intercepts B's request (it cannot decrypt it) and answers a group-mode request of its own
    other, _ = client.protect_request(get())
    _, cbinding = c.unprotect_request(other)
    forged = c.protect_response(content(b"x"), cbinding)
    forged.token = request.token
    with pytest.raises(ProtectionError, match="another member"):
        client.unprotect_response(forged, binding)
    ok = b.protect_response(content(b"y"), sbinding)
    assert client.unprotect_response(ok, binding)[0].payload == b"y"


def test_silent_server_receives_but_never_sends() -> None:
    monitor = GroupContext(
        A.context().master_secret,
        A.context().gid,
        master_salt=A.context().master_salt,
        sender_id=None,
        gm_cred=A.context().gm_cred,
        peers={A.sid: A.cred.raw},
    )
    client = A.context([B])
    request, _ = client.protect_request(get())
    plain, sbinding = monitor.unprotect_request(request)
    assert plain.options.uri_path == ["light"]
    with pytest.raises(ModeNotSupported):
        monitor.protect_response(content(b"x"), sbinding)
    pairwise, _ = client.protect_request(get(), pairwise_with=B.sid)
    with pytest.raises(ModeNotSupported):
        monitor.unprotect_request(pairwise)


OWN_SID = r"^request carries this member's own Sender ID$"


def test_own_sender_id_is_not_processed() -> None:
    client = A.context([B])
    request, _ = client.protect_request(get())
    with pytest.raises(ContextNotFound, match=OWN_SID):
        A.context([B]).unprotect_request(request)


def test_reflected_own_request_is_refused_even_with_a_credential_provider() -> None:
    """A request carrying the member's own Sender ID (e.g. its own group request reflected
    back) is refused before any lookup: a credential provider that knows every member,
    the member itself included, would otherwise let it verify and be delivered."""
    asked: list[bytes] = []

    def provider(kid: bytes, gid: bytes) -> bytes | None:
        asked.append(kid)
        return {A.sid: A.cred.raw, B.sid: B.cred.raw}.get(kid)

    me = A.context([B], credential_provider=provider)
    for pairwise in (False, True):
        request, _ = me.protect_request(get(), pairwise_with=B.sid if pairwise else None)
        before = snapshot(me)
        with pytest.raises(ContextNotFound, match=OWN_SID):
            me.unprotect_request(request)
        assert snapshot(me) == before and A.sid not in me.recipients
    assert asked == []


def test_sequence_numbers_are_shared_by_both_modes() -> None:
    client = A.context([B])
    _, b1 = client.protect_request(get())
    _, b2 = client.protect_request(get(), pairwise_with=B.sid)
    _, b3 = client.protect_request(get())
    assert [b.request_piv for b in (b1, b2, b3)] == [b"\x00", b"\x01", b"\x02"]


def test_eviction_makes_new_windows_invalid_and_echo_recovers() -> None:
    server = B.context(
        [A],
        max_recipients=1,
        credential_provider=lambda kid, gid: {C.sid: C.cred.raw, A.sid: A.cred.raw}.get(kid),
    )
    c = C.context([B])
    r1, _ = c.protect_request(get())
    server.unprotect_request(r1)  # C's context evicts A's: a deletion
    assert server.recipient_deleted and A.sid not in server.recipients
    a = A.context([B])
    a.sequence.next()
    late, _ = a.protect_request(get())
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(late)
    challenge = echo_challenge(info.value, late)
    assert challenge.options.oscore[0] & 0x07  # own Partial IV, never the request nonce
    # a new request without the Echo value is not enough
    no_echo, _ = a.protect_request(get(), pairwise_with=B.sid)
    with pytest.raises(FreshnessRequired):
        server.unprotect_request(no_echo)
    # the retry (unicast, pairwise) carries the Echo value of the latest challenge
    retry = get()
    retry.options.echo = server.recipients[A.sid].echo_challenge
    retry_msg, _ = a.protect_request(retry, pairwise_with=B.sid)
    server.unprotect_request(retry_msg)
    assert server.recipients[A.sid].replay_window.valid
    with pytest.raises(ReplayError):
        server.unprotect_request(late)  # older than the proven-fresh request


def test_echo_challenge_is_readable_by_the_client() -> None:
    a = A.context([B])
    server = B.context([A], replay_windows_valid=False)
    request, binding = a.protect_request(get())
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(request)
    reply, _ = a.unprotect_response(echo_challenge(info.value, request), binding)
    assert reply.code == 0x81 and reply.options.echo == info.value.echo
    retry = get()
    retry.options.echo = reply.options.echo
    msg, _ = a.protect_request(retry, pairwise_with=B.sid)
    assert server.unprotect_request(msg)[0].options.echo == reply.options.echo


def _restarted_server_under_replay(policy: str) -> tuple[GroupContext, list[Message]]:
    """A server that lost its replay state, and six requests an attacker recorded earlier."""
    a = A.context([B])
    recorded = [a.protect_request(get())[0] for _ in range(6)]
    return B.context([A], replay_windows_valid=False, freshness=policy), recorded


@pytest.mark.parametrize("policy", ["echo", "drop"])
def test_replay_of_old_then_newer_recorded_requests_delivers_nothing(policy: str) -> None:
    """The attack that broke 'drop-first': replay one old request first, then the newer
    recorded ones. With any allowed policy nothing is delivered and the window stays
    invalid (RFC 10021 §2.6.1.2)."""
    server, recorded = _restarted_server_under_replay(policy)
    delivered = 0
    for msg in [recorded[0], *recorded[1:], *recorded]:
        try:
            server.unprotect_request(msg)
            delivered += 1
        except (ReplayError, FreshnessRequired):
            pass
    assert delivered == 0
    assert not server.recipients[A.sid].replay_window.valid


def test_drop_policy_changes_no_state() -> None:
    server, recorded = _restarted_server_under_replay("drop")
    server.remove_recipient(A.sid)
    server.credential_provider = lambda kid, gid: A.cred.raw if kid == A.sid else None
    before = snapshot(server)
    for msg in recorded:
        with pytest.raises(ReplayError, match="freshness 'drop'"):
            server.unprotect_request(msg)
    assert snapshot(server) == before


def test_insecure_accept_policy_is_explicit_and_delivers_replays() -> None:
    """The switch for peers that cannot answer an Echo does what its name says."""
    from grouposcore.oscore.group import INSECURE_ACCEPT_REPLAYS

    server, recorded = _restarted_server_under_replay(INSECURE_ACCEPT_REPLAYS)
    server.unprotect_request(recorded[0])
    for msg in recorded[1:]:
        server.unprotect_request(msg)
    with pytest.raises(ReplayError):
        server.unprotect_request(recorded[0])


@pytest.mark.parametrize("old", ["drop-first", "accept"])
def test_retired_freshness_policies_are_refused_with_advice(old: str) -> None:
    with pytest.raises(OscoreError, match=r"no longer supported.*use 'echo'"):
        B.context([A], freshness=old)


def test_stale_member_removed_cannot_be_verified() -> None:
    server = B.context([A, C])
    server.remove_recipient(C.sid)
    request, _ = C.context([B]).protect_request(get())
    with pytest.raises(ContextNotFound):
        server.unprotect_request(request)


def _rekeyed(member: Member, peers: list[Member]) -> GroupContext:
    """``member``'s context after a rekey: new Gid and Master Secret, same Sender IDs."""
    return GroupContext(
        bytes(range(40, 56)),
        b"\x99\x01",
        sender_id=member.sid,
        private_key=member.key,
        credential=member.cred,
        peers={p.sid: p.cred.raw for p in peers},
    )


def test_response_numbers_restart_after_rekey() -> None:
    """A server that was rekeyed protects its next notifications under the new Gid with
    Partial IVs from 0 again; the client takes them (Response Numbers are per Security
    Context, RFC 10021 §2.6.3.2, §5.3.1) and still refuses replays in either context."""
    client, server = A.context([B]), B.context([A])
    request, binding = client.protect_request(get())
    _, sbinding = server.unprotect_request(request)
    old = [server.protect_response(content(bytes([i])), sbinding) for i in range(4)]
    for msg in old:
        client.unprotect_response(msg, binding)
    client_new, server_new = _rekeyed(A, [B]), _rekeyed(B, [A])
    new = [server_new.protect_response(content(b"n%d" % i), sbinding) for i in range(2)]
    assert decode_option(new[0].options.oscore).piv == b"\x00"
    for i, msg in enumerate(new):
        plain, info = client_new.unprotect_response(msg, binding)
        assert plain.payload == b"n%d" % i and info.piv == bytes([i])
    for msg in new:
        with pytest.raises(ReplayError):
            client_new.unprotect_response(msg, binding)
    for msg in old[1:]:
        with pytest.raises(ReplayError):
            client.unprotect_response(msg, binding)


@pytest.mark.parametrize("pairwise", [False, True], ids=["group", "pairwise"])
def test_response_under_new_context_is_bound_to_its_request(pairwise: bool) -> None:
    """Across a rekey (the binding's context is the old one, the external_aad is rebuilt
    for the new one) a response still verifies only for the request it answers."""
    client, server = A.context([B]), B.context([A])
    first, binding1 = client.protect_request(get(mid=1))
    second, binding2 = client.protect_request(get(mid=2))
    _, sbinding1 = server.unprotect_request(first)
    server.unprotect_request(second)
    client_new, server_new = _rekeyed(A, [B]), _rekeyed(B, [A])
    response = server_new.protect_response(content(b"n"), sbinding1, pairwise=pairwise)
    with pytest.raises(ProtectionError):
        client_new.unprotect_response(response, binding2)
    assert client_new.unprotect_response(response, binding1)[0].payload == b"n"
    # the old context keeps its own pairwise keys: the new one left nothing in it
    old = server.protect_response(content(b"o"), sbinding1, pairwise=True)
    assert client.unprotect_response(old, binding1)[0].payload == b"o"


def test_response_to_one_requester_does_not_verify_for_another_requester() -> None:
    """Two requesters whose requests carry the same Partial IV: only the requester's kid in
    the external_aad tells their responses apart once the response has its own Partial IV
    under a new context (RFC 10021 §4.3), so the group-mode answer to A must not verify as
    C's (a pairwise answer is already tied to A by its keys)."""
    client_a, client_c, server = A.context([B]), C.context([B]), B.context([A, C])
    req_a, _ = client_a.protect_request(get(mid=1))
    req_c, binding_c = client_c.protect_request(get(mid=2))
    assert (
        decode_option(req_a.options.oscore or b"").piv
        == decode_option(req_c.options.oscore or b"").piv
    )
    _, sbinding_a = server.unprotect_request(req_a)
    server.unprotect_request(req_c)
    c_new, server_new = _rekeyed(C, [B]), _rekeyed(B, [A, C])
    response = server_new.protect_response(content(b"for A"), sbinding_a)
    with pytest.raises(ProtectionError):
        c_new.unprotect_response(response, binding_c)
