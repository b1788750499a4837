"""Group OSCORE interop with aiocoap 0.4.17 (SimpleGroupContext), at the datagram level.

Members: the G vectors' client 0x25 and server 0x52 (Ed25519, HKDF SHA-256, ECDH-SS on the
mapped X25519 keys). Ed25519 and AES-CCM are deterministic, so equal inputs must give
equal bytes; the vectors pin both libraries to the same output.

aiocoap's API: a client protects with the SimpleGroupContext (group mode) or with
``pairwise_for(rid)``; it picks the context for a response with ``context_from_response``.
A server finds the context with ``get_oscore_context_for`` and answers through
``context_for_response()``, which is the pairwise one even for group requests.
"""

from __future__ import annotations

from typing import Any

import aiocoap
import pytest
from aiocoap import oscore
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat
from cryptography.hazmat.primitives.serialization import NoEncryption as NoEnc

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.cose import Credential
from grouposcore.errors import ContextNotFound, OscoreDecodeError, ProtectionError, ReplayError
from grouposcore.oscore import GroupContext, ResponseInfo
from tests.interop.aiocoap_peers import (
    CLIENT_ID,
    COMMON,
    GID,
    GV,
    SERVER_ID,
    H,
    aio_group,
    aio_incoming,
    aio_protect,
    ccs,
    gos_group,
    same_content,
    seed,
)

URI_HOST = 3


# -- aiocoap roles ---------------------------------------------------------------------


def aio_request(
    client: oscore.SimpleGroupContext,
    request: Message,
    *,
    pairwise: bool = False,
    server_id: bytes = SERVER_ID,
) -> tuple[bytes, Any, Any]:
    """aiocoap client: the protected datagram, its request id and the sending context."""
    sender = client.pairwise_for(server_id) if pairwise else client
    wire, request_id = aio_protect(sender, request)
    return wire, request_id, sender


def aio_read_response(sender: Any, wire: bytes, request_id: Any) -> tuple[aiocoap.Message, Any]:
    """aiocoap client: pick the context the way its transport does, then unprotect."""
    message = aio_incoming(wire)
    ctx = sender.context_from_response(oscore.verify_start(message))
    plain, _ = ctx.unprotect(message, request_id)
    return plain, ctx


def aio_serve(server: oscore.SimpleGroupContext, wire: bytes) -> tuple[Any, aiocoap.Message, Any]:
    """aiocoap server: find the context, unprotect; returns (context, plain, request id)."""
    message = aio_incoming(wire)
    ctx = server.get_oscore_context_for(oscore.verify_start(message))
    assert ctx is not None, "aiocoap found no context for the request"
    plain, request_id = ctx.unprotect(message)
    return ctx, plain, request_id


# -- message shapes ----------------------------------------------------------------------


def _get() -> Message:
    return Message.decode(H(GV["G3"]["inputs"]["unprotected_coap"]))


def _post() -> Message:
    o = Options()
    o.uri_host = "group.example"
    o.uri_path = ["lights", "all"]
    o.uri_query = ["level=3"]
    o.content_format = 60
    return Message(Code.POST, Type.NON, 0x0A0B, b"\x0a\x0b\x0c", o, b"\xa1\x01\xf5" * 20)


def _content(request: Message, payload: bytes = b"Hello World!") -> Message:
    o = Options()
    o.content_format = 0
    o.max_age = 30
    return Message(Code.CONTENT, Type.NON, 0x5555, request.token, o, payload)


REQUESTS = {"get": _get, "post": _post}


# -- vectors: both libraries produce the same bytes ------------------------------------


@pytest.mark.parametrize("vector_id", ["G3", "G6"])
def test_vector_request_identical_bytes(vector_id: str) -> None:
    vec = GV[vector_id]
    pairwise = vec["mode"] == "pairwise"
    seq = vec["inputs"]["sender_sequence_number"]
    plain = Message.decode(H(vec["inputs"]["unprotected_coap"]))
    aio_bytes, _, _ = aio_request(aio_group("client", seq=seq), plain, pairwise=pairwise)
    gos_msg, _ = gos_group("client", seq=seq).protect_request(
        plain, pairwise_with=SERVER_ID if pairwise else None
    )
    assert aio_bytes.hex() == gos_msg.encode().hex() == vec["outputs"]["protected_coap"]


@pytest.mark.parametrize("request_id_,response_id", [("G3", "G4"), ("G3", "G5"), ("G6", "G7")])
def test_vector_response_identical_bytes(request_id_: str, response_id: str) -> None:
    vec = GV[response_id]
    seq = vec["inputs"]["sender_sequence_number"]
    fresh = seq is not None
    request = H(GV[request_id_]["outputs"]["protected_coap"])
    response = Message.decode(H(vec["inputs"]["unprotected_coap"]))

    aio_server = aio_group("server", seq=seq or 0)
    ctx, _, request_id = aio_serve(aio_server, request)
    request_id.can_reuse_nonce = not fresh
    # a group-mode answer needs the full group context; aiocoap's own choice is pairwise
    responder = aio_server if vec["mode"] == "group" else ctx.context_for_response()
    aio_bytes, _ = aio_protect(responder, response, request_id)

    gos_server = gos_group("server", seq=seq or 0)
    _, binding = gos_server.unprotect_request(Message.decode(request))
    gos_bytes = gos_server.protect_response(
        response, binding, pairwise=vec["mode"] == "pairwise", fresh_piv=fresh
    ).encode()
    assert aio_bytes.hex() == gos_bytes.hex() == vec["outputs"]["protected_coap"]


# -- aiocoap client, grouposcore server ---------------------------------------------------


@pytest.mark.parametrize("fresh", [False, True], ids=["nonce-reuse", "fresh-piv"])
@pytest.mark.parametrize("answer", ["group", "pairwise"])
@pytest.mark.parametrize("ask", ["group", "pairwise"])
@pytest.mark.parametrize("shape", list(REQUESTS))
def test_aiocoap_client_grouposcore_server(shape: str, ask: str, answer: str, fresh: bool) -> None:
    """B1 group/group, B2 group/pairwise, B3 pairwise/group, B4 pairwise/pairwise."""
    request = REQUESTS[shape]()
    client = aio_group("client", seq=0x123)
    wire, request_id, sender = aio_request(client, request, pairwise=ask == "pairwise")

    server = gos_group("server", seq=0x4567)
    plain, binding = server.unprotect_request(Message.decode(wire))
    assert plain == request
    assert binding.group_mode == (ask == "group")
    assert (binding.request_kid, binding.request_piv) == (CLIENT_ID, b"\x01\x23")

    response = _content(request)
    protected = server.protect_response(
        response, binding, pairwise=answer == "pairwise", fresh_piv=fresh
    )
    expected_option = bytes((0x08 | (0x20 if answer == "group" else 0) | (2 if fresh else 0),))
    expected_option += (b"\x45\x67" if fresh else b"") + SERVER_ID
    assert protected.options.oscore == expected_option
    unprotected, ctx = aio_read_response(sender, protected.encode(), request_id)
    assert ctx.is_signing == (answer == "group")
    assert same_content(unprotected, response)


def test_aiocoap_client_grouposcore_server_several_responses() -> None:
    """One group request, then responses in alternating modes, all with fresh PIVs after
    the first: aiocoap accepts each (its choice of context follows the Group Flag)."""
    request = _get()
    client = aio_group("client", seq=1)
    wire, request_id, sender = aio_request(client, request)
    server = gos_group("server", seq=0)
    _, binding = server.unprotect_request(Message.decode(wire))
    for n in range(4):
        response = _content(request, payload=b"n=%d" % n)
        protected = server.protect_response(response, binding, pairwise=n % 2 == 1)
        unprotected, ctx = aio_read_response(sender, protected.encode(), request_id)
        assert unprotected.payload == b"n=%d" % n
        assert ctx.is_signing == (n % 2 == 0)


# -- grouposcore client, aiocoap server ---------------------------------------------------


@pytest.mark.parametrize("shape", list(REQUESTS))
def test_grouposcore_group_request_aiocoap_default_pairwise_response(shape: str) -> None:
    """aiocoap answers a group-mode request in pairwise mode (digest §14)."""
    request = REQUESTS[shape]()
    client = gos_group("client", seq=77)
    protected, binding = client.protect_request(request)

    server = aio_group("server", seq=3)
    ctx, plain, request_id = aio_serve(server, protected.encode())
    assert ctx.is_signing  # verified as a group-mode request
    assert same_content(plain, request, skip=(URI_HOST,))

    responder = ctx.context_for_response()
    assert not responder.is_signing
    response = _content(request)
    first, _ = aio_protect(responder, response, request_id)
    second, _ = aio_protect(responder, response.copy(payload=b"later"), request_id)
    assert Message.decode(first).options.oscore == b"\x08" + SERVER_ID

    got, info = client.unprotect_response(Message.decode(first), binding)
    assert got == response
    assert info == ResponseInfo(SERVER_ID, False, None)
    got, info = client.unprotect_response(Message.decode(second), binding)
    assert got.payload == b"later"
    assert info == ResponseInfo(SERVER_ID, False, b"\x03")


@pytest.mark.parametrize("fresh", [False, True], ids=["nonce-reuse", "fresh-piv"])
@pytest.mark.parametrize("ask", ["group", "pairwise"])
def test_grouposcore_client_aiocoap_group_response(ask: str, fresh: bool) -> None:
    """aiocoap's full group context can also sign its response (B1 and B3)."""
    request = _post()
    client = gos_group("client", seq=9)
    protected, binding = client.protect_request(
        request, pairwise_with=SERVER_ID if ask == "pairwise" else None
    )
    server = aio_group("server", seq=0x10000)
    ctx, plain, request_id = aio_serve(server, protected.encode())
    assert ctx.is_signing == (ask == "group")
    assert same_content(plain, request, skip=(URI_HOST,))

    request_id.can_reuse_nonce = not fresh
    response = _content(request)
    wire, _ = aio_protect(server, response, request_id)
    got, info = client.unprotect_response(Message.decode(wire), binding)
    assert got == response
    assert info == ResponseInfo(SERVER_ID, True, b"\x01\x00\x00" if fresh else None)


def test_grouposcore_pairwise_request_aiocoap_pairwise_response() -> None:
    request = _post()
    client = gos_group("client", seq=0xABCDEF)
    protected, binding = client.protect_request(request, pairwise_with=SERVER_ID)
    assert protected.options.oscore == b"\x1b\xab\xcd\xef\x03" + GID + CLIENT_ID

    server = aio_group("server")
    ctx, plain, request_id = aio_serve(server, protected.encode())
    assert not ctx.is_signing
    assert same_content(plain, request, skip=(URI_HOST,))
    response = _content(request)
    wire, _ = aio_protect(ctx.context_for_response(), response, request_id)
    got, info = client.unprotect_response(Message.decode(wire), binding)
    assert got == response
    assert info == ResponseInfo(SERVER_ID, False, None)


def test_grouposcore_client_observes_aiocoap_server() -> None:
    """Observe over a group request: notifications carry the server's own PIVs."""
    o = Options()
    o.uri_path = ["temp"]
    o.observe = 0
    request = Message(Code.GET, Type.NON, 1, b"obs!", o)
    client = gos_group("client", seq=40)
    protected, binding = client.protect_request(request)
    assert protected.code == Code.FETCH
    server = aio_group("server", seq=500)
    ctx, plain, request_id = aio_serve(server, protected.encode())
    assert plain.opt.observe == 0
    responder = ctx.context_for_response()
    for n in range(3):
        note = _content(request, payload=b"%d C" % (20 + n))
        note.options.observe = n + 1
        wire, _ = aio_protect(responder, note, request_id)
        got, info = client.unprotect_response(Message.decode(wire), binding)
        assert got.payload == note.payload and got.options.observe == n + 1
        assert info.piv == (None if n == 0 else (500 + n - 1).to_bytes(2, "big"))


# -- identifiers --------------------------------------------------------------------

IDS = [
    (b"", b"\x01", b"\x00"),  # empty Sender ID: the kid is present but empty
    (b"\x01", b"", b""),  # empty Gid and empty server Sender ID
    (b"1234567", b"7654321", b"G" * 8),  # longest IDs for a 13-byte nonce, long Gid
    (b"\x00", b"\x00\x00", b"\xff"),  # IDs differing only in length
]


@pytest.mark.parametrize(
    "client_id,server_id,gid",
    IDS,
    ids=["empty-client-id", "empty-gid-and-server-id", "7-byte-ids", "ids-differ-in-length"],
)
def test_identifier_edge_cases(client_id: bytes, server_id: bytes, gid: bytes) -> None:
    """Every mode pairing, both directions, with unusual Sender IDs and Gids."""
    member: dict[str, Any] = {"ids": (client_id, server_id), "gid": gid}
    request = _post()
    response = _content(request)
    for ask_pairwise in (False, True):
        aio_client = aio_group("client", seq=3, **member)
        gos_client = gos_group("client", seq=3, **member)
        wire, request_id, sender = aio_request(
            aio_client, request, pairwise=ask_pairwise, server_id=server_id
        )
        gos_bytes = gos_client.protect_request(
            request, pairwise_with=server_id if ask_pairwise else None
        )[0].encode()
        assert wire == gos_bytes

        gos_server = gos_group("server", seq=9, **member)
        _, binding = gos_server.unprotect_request(Message.decode(wire))
        assert binding.request_kid == client_id
        for answer_pairwise in (False, True):
            for fresh in (False, True):
                binding.responses_sent = 0
                protected = gos_server.protect_response(
                    response, binding, pairwise=answer_pairwise, fresh_piv=fresh
                )
                plain, _ = aio_read_response(sender, protected.encode(), request_id)
                assert same_content(plain, response)

        gclient = gos_group("client", seq=3, **member)
        protected, gbinding = gclient.protect_request(
            request, pairwise_with=server_id if ask_pairwise else None
        )
        aio_server = aio_group("server", seq=9, **member)
        ctx, _, rid = aio_serve(aio_server, protected.encode())
        for responder in (ctx.context_for_response(), aio_server):
            for fresh in (False, True):
                rid.can_reuse_nonce = not fresh
                answer, _ = aio_protect(responder, response, rid)
                gbinding.trackers = None  # the same PIV-less slot is reused on purpose
                got, info = gclient.unprotect_response(Message.decode(answer), gbinding)
                assert got == response and info.sender_id == server_id


# -- algorithms ----------------------------------------------------------------------

ALGS = [(24, 10), (10, 24), (24, 24), (10, 10)]


@pytest.mark.parametrize("group_enc,aead", ALGS)
def test_algorithm_combinations_both_directions(group_enc: int, aead: int) -> None:
    """Group Enc Alg and AEAD Alg may differ; the Common IV then has the longer nonce
    length and each mode uses its own prefix of it."""
    algs = {"group_enc": group_enc, "aead": aead}
    request = _post()

    # identical bytes for group and pairwise requests
    for pairwise in (False, True):
        aio_bytes, _, _ = aio_request(
            aio_group("client", seq=7, **algs), request, pairwise=pairwise
        )
        gos_msg, _ = gos_group("client", seq=7, **algs).protect_request(
            request, pairwise_with=SERVER_ID if pairwise else None
        )
        assert aio_bytes == gos_msg.encode()

    # aiocoap client -> grouposcore server -> pairwise and group answers -> aiocoap
    client = aio_group("client", seq=8, **algs)
    wire, request_id, sender = aio_request(client, request)
    server = gos_group("server", seq=2, **algs)
    _, binding = server.unprotect_request(Message.decode(wire))
    response = _content(request)
    for pairwise in (True, False):
        protected = server.protect_response(response, binding, pairwise=pairwise)
        unprotected, _ = aio_read_response(sender, protected.encode(), request_id)
        assert same_content(unprotected, response)

    # grouposcore client -> aiocoap server -> aiocoap's pairwise answer -> grouposcore
    gclient = gos_group("client", seq=30, **algs)
    for pairwise in (False, True):
        protected, gbinding = gclient.protect_request(
            request, pairwise_with=SERVER_ID if pairwise else None
        )
        ctx, _, rid = aio_serve(aio_group("server", seq=5, **algs), protected.encode())
        answer, _ = aio_protect(ctx.context_for_response(), response, rid)
        got, info = gclient.unprotect_response(Message.decode(answer), gbinding)
        assert got == response and not info.group_mode


def test_g8_mixed_algorithm_vector_from_aiocoap() -> None:
    vec = GV["G8"]
    plain = _get()
    client = aio_group("client", seq=7, group_enc=24, aead=10)
    group_wire, _, _ = aio_request(client, plain)
    pairwise_wire, _, _ = aio_request(client, plain, pairwise=True)
    group_msg, pairwise_msg = Message.decode(group_wire), Message.decode(pairwise_wire)
    assert group_msg.options.oscore.hex() == vec["intermediate"]["group_request_oscore_option"]
    assert group_msg.payload.hex() == vec["outputs"]["group_request_payload"]
    assert (
        pairwise_msg.options.oscore.hex() == vec["intermediate"]["pairwise_request_oscore_option"]
    )
    assert pairwise_msg.payload.hex() == vec["outputs"]["pairwise_request_payload"]
    server = gos_group("server", group_enc=24, aead=10)
    assert server.unprotect_request(group_msg)[0] == plain
    assert server.unprotect_request(pairwise_msg)[0] == plain


# -- credentials -----------------------------------------------------------------------


def test_grouposcore_built_ccs_match_vectors_and_aiocoap_parses_them() -> None:
    for name in ("client", "server", "gm"):
        key = Ed25519PrivateKey.from_private_bytes(seed(name)).public_key()
        built = Credential.build_ccs(key, -8, "gm" if name == "gm" else name)
        assert built.raw == ccs(name)
        raw_pub = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        assert oscore.algorithms_countersign["EdDSA on Ed25519"].from_kccs(built.raw) == raw_pub


def test_fresh_member_with_grouposcore_built_ccs() -> None:
    """A new key pair whose CCS grouposcore encodes: both libraries put the same bytes
    into the AAD and the pairwise key derivation."""
    key = Ed25519PrivateKey.generate()
    raw_seed = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEnc())
    cred = Credential.build_ccs(key.public_key(), -8, "fresh-client").raw
    aio_client = aio_group("client", own_cred=cred, own_seed=raw_seed, seq=3)
    gos_server = gos_group("server", peer_cred=cred)
    request = _post()
    for pairwise in (False, True):
        wire, request_id, sender = aio_request(aio_client, request, pairwise=pairwise)
        _, binding = gos_server.unprotect_request(Message.decode(wire))
        response = _content(request)
        protected = gos_server.protect_response(response, binding, pairwise=True)
        unprotected, _ = aio_read_response(sender, protected.encode(), request_id)
        assert same_content(unprotected, response)

    gos_client = gos_group("client", own_cred=cred, own_seed=raw_seed, seq=3)
    aio_server = aio_group("server", peer_cred=cred)
    protected, binding = gos_client.protect_request(request)
    ctx, _, request_id = aio_serve(aio_server, protected.encode())
    answer, _ = aio_protect(ctx.context_for_response(), _content(request), request_id)
    assert gos_client.unprotect_response(Message.decode(answer), binding)[0] == _content(request)


# -- negative interop ------------------------------------------------------------------


def _with_option(message: Message, value: bytes) -> Message:
    bad = message.copy()
    bad.options.oscore = value
    return bad


def test_tampered_aiocoap_group_request_rejected_then_replay() -> None:
    request = _get()
    wire, _, _ = aio_request(aio_group("client", seq=5), request)
    original = Message.decode(wire)
    option = original.options.oscore
    assert option == H("390503") + GID + CLIENT_ID  # flags, PIV 05, |Gid| 3, Gid, kid
    server = gos_group("server")

    # every bit of the ciphertext and of the encrypted signature is covered
    for i in range(len(original.payload)):
        for bit in (0x01, 0x80):
            payload = bytearray(original.payload)
            payload[i] ^= bit
            with pytest.raises(ProtectionError):
                server.unprotect_request(original.copy(payload=bytes(payload)))
    with pytest.raises(ProtectionError):
        server.unprotect_request(original.copy(payload=original.payload[:-1]))

    damaged: list[tuple[bytes, type[Exception]]] = [
        (H("390603") + GID + CLIENT_ID, ProtectionError),  # other PIV
        (H("190503") + GID + CLIENT_ID, ProtectionError),  # Group Flag cleared: pairwise
        (H("390503") + b"Dam" + CLIENT_ID, ContextNotFound),  # other Gid
        (H("390503") + GID + b"\x26", ContextNotFound),  # unknown kid
        (H("b90503") + GID + CLIENT_ID, OscoreDecodeError),  # reserved bit
        (H("390505") + GID + CLIENT_ID, OscoreDecodeError),  # Gid length past the end
    ]
    for value, error in damaged:
        with pytest.raises(error):
            server.unprotect_request(_with_option(original, value))

    # no rejected copy touched the replay window
    assert server.unprotect_request(Message.decode(wire))[0] == request
    with pytest.raises(ReplayError):
        server.unprotect_request(Message.decode(wire))


def test_tampered_aiocoap_pairwise_request_rejected_then_replay() -> None:
    request = _post()
    wire, _, _ = aio_request(aio_group("client", seq=300), request, pairwise=True)
    original = Message.decode(wire)
    server = gos_group("server")
    for i in range(len(original.payload)):
        payload = bytearray(original.payload)
        payload[i] ^= 0x10
        with pytest.raises(ProtectionError):
            server.unprotect_request(original.copy(payload=bytes(payload)))
    # setting the Group Flag turns it into a group-mode message without a valid signature
    flagged = bytes((original.options.oscore[0] | 0x20,)) + original.options.oscore[1:]
    with pytest.raises(ProtectionError):
        server.unprotect_request(_with_option(original, flagged))
    assert server.unprotect_request(Message.decode(wire))[0] == request
    with pytest.raises(ReplayError):
        server.unprotect_request(Message.decode(wire))


def test_replayed_aiocoap_response_rejected() -> None:
    client = gos_group("client", seq=11)
    protected, binding = client.protect_request(_get())
    ctx, _, request_id = aio_serve(aio_group("server"), protected.encode())
    responder = ctx.context_for_response()
    first, _ = aio_protect(responder, _content(_get()), request_id)
    second, _ = aio_protect(responder, _content(_get()), request_id)
    client.unprotect_response(Message.decode(first), binding)
    client.unprotect_response(Message.decode(second), binding)
    for wire in (first, second):
        with pytest.raises(ReplayError):
            client.unprotect_response(Message.decode(wire), binding)


def test_aiocoap_rejects_tampered_grouposcore_group_request() -> None:
    protected, _ = gos_group("client", seq=1).protect_request(_get())
    wire = bytearray(protected.encode())
    wire[-5] ^= 0x04  # inside the encrypted signature
    server = aio_group("server")
    with pytest.raises(oscore.ProtectionInvalid):
        aio_serve(server, bytes(wire))
    ctx, plain, _ = aio_serve(server, protected.encode())
    assert plain.payload == b"" and ctx.is_signing


def test_common_inputs_are_the_ones_aiocoap_was_built_with() -> None:
    """Guard against the helpers drifting from the vectors' parameters."""
    gos = gos_group("client")
    aio = aio_group("client")
    assert isinstance(gos, GroupContext)
    assert gos.common_iv == aio.common_iv
    assert gos.signature_encryption_key == aio.signature_encryption_key
    assert gos.sender_key == aio._sender_key
    assert gos.recipient_key(SERVER_ID) == aio.recipient_keys[SERVER_ID]
    assert gos.pairwise_keys(SERVER_ID) == (
        aio.pairwise_for(SERVER_ID).sender_key,
        aio.pairwise_for(SERVER_ID).recipient_key,
    )
    assert COMMON["signature_alg"] == aio.alg_signature.value
