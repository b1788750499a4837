"""Endpoint-facing security: context dispatch, error answers, Echo retry (sans-I/O)."""

from __future__ import annotations

import pytest

from grouposcore.coap import Code, Message, OptionNumber, Options
from grouposcore.coap.codec import decode_options
from grouposcore.coap.uri import parse_uri
from grouposcore.errors import (
    ContextNotFound,
    CredentialNotFound,
    FreshnessRequired,
    OscoreError,
    ProtectionError,
    ReplayError,
)
from grouposcore.oscore import GroupContext, SecurityContext, SenderSequence, inner
from grouposcore.oscore.security import ClientSecurity, ServerSecurity, VerifiedMessage
from tests.oscore.helpers import Member, content, echo_challenge, get

A, B, C = Member(b"\x0a", "a"), Member(b"\x0b", "b"), Member(b"\x0c", "c")


def test_dispatch_by_gid_and_kid_and_unprotected_passthrough() -> None:
    group = B.context([A])
    peer_client = SecurityContext(b"s" * 16, b"\x01", b"\x02")
    peer_server = SecurityContext(b"s" * 16, b"\x02", b"\x01")
    server = ServerSecurity([group, peer_server])
    assert server.unprotect_request(get()) is None

    req, binding = ClientSecurity(A.context([B])).protect_request(get())
    plain, sbinding = server.unprotect_request(req)
    assert sbinding.context is group and plain.options.uri_path == ["light"]
    reply = server.protect_response(content(b"on"), sbinding)
    verified = ClientSecurity(A.context([B])).unprotect_response(reply, binding)
    assert isinstance(verified, VerifiedMessage) and verified.security.sender_id == B.sid

    req2, _ = ClientSecurity(peer_client).protect_request(get())
    _, sbinding2 = server.unprotect_request(req2)
    assert sbinding2.context is peer_server


def test_colliding_gids_are_each_tried() -> None:
    """Two groups (from different Group Managers) with the same Gid and Sender ID 0x0a."""
    other = Member(b"\x0a", "other-a")
    ours = B.context([A])
    theirs = GroupContext(
        b"another secret!!",
        ours.gid,
        sender_id=B.sid,
        private_key=B.key,
        credential=B.cred,
        peers={other.sid: other.cred.raw},
    )
    their_client = GroupContext(
        b"another secret!!",
        ours.gid,
        sender_id=other.sid,
        private_key=other.key,
        credential=other.cred,
        peers={B.sid: B.cred.raw},
    )
    server = ServerSecurity([ours, theirs])
    _, binding = server.unprotect_request(A.context([B]).protect_request(get())[0])
    assert binding.context is ours
    _, binding = server.unprotect_request(their_client.protect_request(get())[0])
    assert binding.context is theirs
    stranger = Member(b"\x0a", "stranger")
    with pytest.raises(ProtectionError):
        server.unprotect_request(
            stranger.context([B], sequence=SenderSequence(5)).protect_request(get())[0]
        )


def test_errors_carry_their_answer() -> None:
    server = ServerSecurity([B.context([A])])
    req, _ = C.context([B]).protect_request(get())
    with pytest.raises(ContextNotFound) as info:
        server.unprotect_request(req)
    assert info.value.coap_code == Code.UNAUTHORIZED and info.value.max_age == 0
    assert info.value.diagnostic == "Security context not found"
    provider = B.context([A], credential_provider=lambda kid, gid: None)
    with pytest.raises(CredentialNotFound) as missing:
        ServerSecurity([provider]).unprotect_request(req)
    assert missing.value.coap_code == Code.SERVICE_UNAVAILABLE and missing.value.max_age == 60


def test_unprotected_answer_to_protected_request_is_an_error() -> None:
    client = ClientSecurity(A.context([B]))
    _, binding = client.protect_request(get())
    with pytest.raises(OscoreError, match=r"unprotected 4\.01"):
        client.unprotect_response(content(b"x").copy(code=Code.UNAUTHORIZED), binding)


def test_echo_challenge_then_pairwise_retry() -> None:
    server_ctx = B.context([A], replay_windows_valid=False)
    server = ServerSecurity([server_ctx])
    client = ClientSecurity(A.context([B]))
    original = get()
    req, binding = client.protect_request(original)
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(req)
    challenge = echo_challenge(info.value, req)
    assert challenge is not None and 9 in challenge.options
    verified = client.unprotect_response(challenge, binding)
    retry = client.echo_retry(verified, original)
    assert retry is not None
    retry_msg, retry_security = retry
    assert retry_security.pairwise_with == B.sid
    req2, binding2 = retry_security.protect_request(retry_msg)
    plain, sbinding = server.unprotect_request(req2)
    assert plain.options.uri_path == ["light"] and not sbinding.group_mode
    reply = retry_security.unprotect_response(
        server.protect_response(content(b"ok"), sbinding), binding2
    )
    assert reply.payload == b"ok"
    assert retry_security.echo_retry(reply, retry_msg) is None


def test_plain_oscore_echo_recovery() -> None:
    client_ctx = SecurityContext(b"s" * 16, b"\x01", b"\x02")
    server_ctx = SecurityContext(b"s" * 16, b"\x02", b"\x01", replay_window_valid=False)
    server = ServerSecurity([server_ctx])
    client = ClientSecurity(client_ctx)
    req, binding = client.protect_request(get())
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(req)
    verified = client.unprotect_response(echo_challenge(info.value, req), binding)
    retry_msg, sec = client.echo_retry(verified, get())
    req2, _ = sec.protect_request(retry_msg)
    assert server.unprotect_request(req2)[0].options.echo == verified.options.echo
    assert server_ctx.replay_window.valid


def test_plain_oscore_retry_with_wrong_or_missing_echo_is_refused() -> None:
    """Only the Echo value the server sent last makes an invalid window valid."""
    client = SecurityContext(b"s" * 16, b"\x01", b"\x02")
    server = SecurityContext(b"s" * 16, b"\x02", b"\x01", replay_window_valid=False)
    first, _ = client.protect_request(get())
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(first)
    sent = info.value.echo
    wrong = get()
    wrong.options.echo = bytes(b ^ 0xFF for b in sent)
    for attempt in (wrong, get()):
        request, _ = client.protect_request(attempt)
        with pytest.raises(FreshnessRequired):
            server.unprotect_request(request)
        assert not server.replay_window.valid
    stale = get()
    stale.options.echo = sent  # superseded by the challenges answered to the bad retries
    request, _ = client.protect_request(stale)
    with pytest.raises(FreshnessRequired):
        server.unprotect_request(request)
    right = get()
    right.options.echo = server.echo_challenge
    request, _ = client.protect_request(right)
    assert server.unprotect_request(request)[0].options.echo == right.options.echo
    assert server.replay_window.valid and server.echo_challenge is None


def test_plain_oscore_replayed_response_and_notification_are_refused() -> None:
    client = SecurityContext(b"s" * 16, b"\x01", b"\x02")
    server = SecurityContext(b"s" * 16, b"\x02", b"\x01")
    registration = get()
    registration.options.observe = 0
    request, binding = client.protect_request(registration)
    _, sbinding = server.unprotect_request(request)
    first = server.protect_response(content(b"1"), sbinding)
    notes = []
    for n in (2, 3):
        note = content(b"%d" % n)
        note.options.observe = n
        notes.append(server.protect_response(note, sbinding))
    assert first.options.oscore == b"" and all(m.options.oscore for m in notes)
    for msg in (first, *notes):
        client.unprotect_response(msg, binding)
    for msg in (first, *notes):
        with pytest.raises(ReplayError):
            client.unprotect_response(msg, binding)


def test_echo_challenge_through_plain_protect_response_uses_own_piv() -> None:
    """A transport that builds the 4.01 + Echo itself still never reuses the request nonce."""
    server_ctx = B.context([A], replay_windows_valid=False)
    server = ServerSecurity([server_ctx])
    req, _ = A.context([B]).protect_request(get())
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(req)
    reply = content(b"").copy(code=Code.UNAUTHORIZED)
    reply.options.echo = info.value.echo
    protected = server.protect_response(reply, info.value.binding)
    assert protected.options.oscore[0] & 0x07  # a Partial IV is present


@pytest.mark.parametrize(
    ("uri", "outer"),
    [
        ("coap://[2001:db8::1]/a/b?x=1", "coap://[2001:db8::1]"),
        ("coap://example.org:5690/a/b?x=1", "coap://example.org:5690"),
        ("coaps://example.org/a", "coaps://example.org"),
        ("coap://example.org/?q=%20", "coap://example.org"),
    ],
)
def test_outer_proxy_uri_is_only_scheme_host_and_port(uri: str, outer: str) -> None:
    """RFC 8613 §4.1.3.3: the outer Proxy-Uri is the composition of scheme, host and port;
    path and query are encrypted. The server sees the Proxy-Uri the client wrote."""
    client = SecurityContext(b"s" * 16, b"\x01", b"\x02")
    server = SecurityContext(b"s" * 16, b"\x02", b"\x01")
    msg = Message(code=Code.GET)
    msg.options.proxy_uri = uri
    protected, _ = client.protect_request(msg)
    assert protected.options.proxy_uri == outer
    assert protected.options.uri_host is None and protected.options.proxy_scheme is None
    assert not protected.options.uri_path and not protected.options.uri_query
    _, plaintext, _ = inner.split(msg)
    hidden, _ = decode_options(plaintext, 1)
    assert any(n in (OptionNumber.URI_PATH, OptionNumber.URI_QUERY) for n, _ in hidden)
    plain, _ = server.unprotect_request(protected)
    assert parse_uri(plain.options.proxy_uri) == parse_uri(uri)
    assert not plain.options.uri_path


def _inner_observe(message: Message) -> list[bytes]:
    _, plaintext, _ = inner.split(message)
    hidden, _ = decode_options(plaintext, 1)
    return [value for number, value in hidden if number == OptionNumber.OBSERVE]


def test_notification_inner_observe_is_empty_and_outer_carries_the_value() -> None:
    """RFC 8613 §4.1.3.5.2: a notification's inner Observe is empty, the outer one has the
    value, and after verification the application sees the outer value."""
    note = content(b"21").copy(options=Options())
    note.options.observe = 0x1234
    assert _inner_observe(note) == [b""]
    client = SecurityContext(b"s" * 16, b"\x01", b"\x02")
    server = SecurityContext(b"s" * 16, b"\x02", b"\x01")
    registration = get()
    registration.options.observe = 0
    request, binding = client.protect_request(registration)
    _, sbinding = server.unprotect_request(request)
    for n, value in enumerate((0x1234, 0x1235)):
        note.options.observe = value
        protected = server.protect_response(note, sbinding)
        assert protected.options.observe == value
        plain, info = client.unprotect_response(protected, binding)
        assert plain.options.observe == value and plain.payload == b"21"
        assert info.piv == (None if n == 0 else b"\x00")


@pytest.mark.parametrize("value", [0, 1])
def test_request_inner_observe_keeps_registration_or_cancellation(value: int) -> None:
    """RFC 8613 §4.1.3.5.1: inner and outer Observe of a request both hold 0 or 1."""
    request = get()
    request.options.observe = value
    assert _inner_observe(request) == [b"" if value == 0 else b"\x01"]
    client = A.context([B])
    server = B.context([A])
    protected, _ = client.protect_request(request)
    assert protected.options.observe == value
    plain, sbinding = server.unprotect_request(protected)
    assert plain.options.observe == value and sbinding.observe == (value == 0)


def test_outer_observe_without_inner_is_not_an_observation() -> None:
    """An Observe added on the path (outer only) makes neither a registration nor a
    notification: the inner option decides (RFC 8613 §4.1.3.5)."""
    client = A.context([B])
    server = B.context([A])
    protected, binding = client.protect_request(get())
    protected.options.observe = 0
    plain, sbinding = server.unprotect_request(protected)
    assert plain.options.observe is None and not sbinding.observe
    response = server.protect_response(content(b"x"), sbinding)
    response.options.observe = 9
    reply, _ = client.unprotect_response(response, binding)
    assert reply.options.observe is None


def test_echo_retry_through_the_same_client_security_goes_pairwise() -> None:
    """A transport that repeats the request with the same ClientSecurity (and the server's
    address in ``remote``) still sends the Echo retry in pairwise mode."""
    server = ServerSecurity([B.context([A], replay_windows_valid=False)])
    client = ClientSecurity(A.context([B]))
    first = get()
    first.remote = ("224.0.1.187", 5683)
    req, binding = client.protect_request(first)
    with pytest.raises(FreshnessRequired) as info:
        server.unprotect_request(req)
    challenge = echo_challenge(info.value, req)
    challenge.remote = ("192.0.2.7", 5683)
    verified = client.unprotect_response(challenge, binding)
    retry = get()
    retry.options.echo = verified.options.echo
    retry.remote = ("192.0.2.7", 5683)
    req2, binding2 = client.protect_request(retry)
    assert not binding2.group_mode and binding2.intended_recipient == B.sid
    plain, sbinding = server.unprotect_request(req2)
    assert not sbinding.group_mode and plain.options.echo == verified.options.echo


def test_plain_oscore_response_numbers_are_per_id_context() -> None:
    """After a new context (RFC 8613 B.2: new ID Context) the server's Partial IVs start at
    0 again; the client's replay state for the old context does not reject them."""

    def pair(id_context: bytes) -> tuple[SecurityContext, SecurityContext]:
        return (
            SecurityContext(b"s" * 16, b"\x01", b"\x02", id_context=id_context),
            SecurityContext(b"s" * 16, b"\x02", b"\x01", id_context=id_context),
        )

    client, server = pair(b"\x01")
    request, binding = client.protect_request(get())
    _, sbinding = server.unprotect_request(request)
    for _ in range(3):
        client.unprotect_response(
            server.protect_response(content(b"o"), sbinding, fresh_piv=True), binding
        )
    client_new, server_new = pair(b"\x02")
    note = server_new.protect_response(content(b"n"), sbinding, fresh_piv=True)
    plain, info = client_new.unprotect_response(note, binding)
    assert plain.payload == b"n" and info.piv == b"\x00"
    with pytest.raises(ReplayError):
        client_new.unprotect_response(note, binding)
