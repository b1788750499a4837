"""RFC 8613 OSCORE interop with aiocoap 0.4.17, at the datagram level.

Every exchange crosses the library boundary as encoded CoAP bytes: one side protects and
encodes, the other decodes and unprotects. Context: RFC 8613 Appendix C.1 (client h'',
server h'01'). AES-CCM is deterministic, so equal inputs must give equal bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiocoap import oscore

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.errors import ContextNotFound, OscoreDecodeError, ProtectionError, ReplayError
from tests.interop.aiocoap_peers import (
    RFC,
    H,
    aio_incoming,
    aio_oscore,
    aio_oscore_client,
    aio_oscore_server,
    aio_protect,
    gos_oscore,
    gos_oscore_client,
    gos_oscore_server,
    same_content,
)

URI_HOST = 3
OBSERVE = 6


# -- message shapes -----------------------------------------------------------------


def _c4_request() -> Message:
    return Message.decode(H(RFC["C.4"]["inputs"]["unprotected_coap"]))


def _post_request() -> Message:
    o = Options()
    o.uri_host = "localhost"
    o.uri_path = ["sensors", "temperature"]
    o.uri_query = ["unit=C", "fmt"]
    o.content_format = 50
    return Message(Code.POST, Type.CON, 0x1234, b"\x01\x02", o, b'{"t":21.5}')


def _observe_request() -> Message:
    o = Options()
    o.uri_path = ["obs"]
    o.observe = 0
    o.accept = 60
    return Message(Code.GET, Type.NON, 0xBEEF, bytes(range(8)), o)


def _put_request() -> Message:
    o = Options()
    o.uri_host = "sensor.example"
    o.uri_path = ["a-rather-long-path-segment-over-13", "x"]
    o.if_match = [b"\xaa\xbb"]
    o.content_format = 0
    return Message(Code.PUT, Type.CON, 7, b"\xff", o, bytes(range(256)) + b"tail")


def _delete_request() -> Message:
    o = Options()
    o.uri_path = ["item", "3"]
    return Message(Code.DELETE, Type.CON, 65535, b"", o)


def _c7_response(request: Message) -> Message:
    plain = Message.decode(H(RFC["C.7"]["inputs"]["unprotected_coap"]))
    return plain.copy(mtype=Type.ACK, mid=request.mid, token=request.token)


def _created_response(request: Message) -> Message:
    o = Options()
    o.location_path = ["new", "42"]
    o.max_age = 60
    o.content_format = 0
    return Message(Code.CREATED, Type.ACK, request.mid, request.token, o, b"ok")


def _notification(request: Message) -> Message:
    o = Options()
    o.etag = b"\x01\x02\x03\x04"
    o.content_format = 60
    o.observe = 5
    return Message(Code.CONTENT, Type.NON, 0x4242, request.token, o, bytes(200))


def _changed_response(request: Message) -> Message:
    return Message(Code.CHANGED, Type.ACK, request.mid, request.token, Options(), b"")


def _not_found(request: Message) -> Message:
    o = Options()
    o.max_age = 0
    return Message(Code.NOT_FOUND, Type.ACK, request.mid, request.token, o, b"gone")


Exchange = tuple[Callable[[], Message], Callable[[Message], Message]]
EXCHANGES: dict[str, Exchange] = {
    "c4-get": (_c4_request, _c7_response),
    "post-payload": (_post_request, _created_response),
    "observe": (_observe_request, _notification),
    "put-long": (_put_request, _changed_response),
    "delete": (_delete_request, _not_found),
}


# -- vectors: both libraries produce the RFC's bytes ------------------------------------


@pytest.mark.parametrize("vector_id", ["C.4", "C.5", "C.6"])
def test_vector_request_identical_bytes(vector_id: str) -> None:
    """C.4 (with salt), C.5 (no salt, Sender ID 00), C.6 (ID Context sent as kid context)."""
    vec = RFC[vector_id]
    client_vector = vec["context_from"]
    server_vector = client_vector[:-1] + "2"
    seq = vec["inputs"]["sender_sequence_number"]
    plain = Message.decode(H(vec["inputs"]["unprotected_coap"]))
    send_kid_context = vec["inputs"]["id_context"] is not None
    aio_bytes, _ = aio_protect(aio_oscore(client_vector, seq), plain)
    gos_bytes = (
        gos_oscore(client_vector, seq, send_kid_context=send_kid_context)
        .protect_request(plain)[0]
        .encode()
    )
    assert aio_bytes.hex() == gos_bytes.hex() == vec["outputs"]["protected_coap"]
    # and each library's server reads the other's request
    assert gos_oscore(server_vector).unprotect_request(Message.decode(aio_bytes))[0] == plain
    aio_plain, _ = aio_oscore(server_vector).unprotect(aio_incoming(gos_bytes))
    assert same_content(aio_plain, plain, skip=(URI_HOST,))


@pytest.mark.parametrize("vector_id", ["C.7", "C.8"])
def test_vector_response_identical_bytes(vector_id: str) -> None:
    vec = RFC[vector_id]
    fresh = vec["intermediate"]["partial_iv"] is not None
    seq = vec["inputs"]["sender_sequence_number"]
    request = H(RFC["C.4"]["outputs"]["protected_coap"])
    response = Message.decode(H(vec["inputs"]["unprotected_coap"]))

    aio_server = aio_oscore_server(seq)
    _, request_id = aio_server.unprotect(aio_incoming(request))
    if fresh:
        request_id.can_reuse_nonce = False
    aio_bytes, _ = aio_protect(aio_server, response, request_id)

    gos_server = gos_oscore_server(seq)
    _, binding = gos_server.unprotect_request(Message.decode(request))
    gos_bytes = gos_server.protect_response(response, binding, fresh_piv=fresh).encode()
    assert aio_bytes.hex() == gos_bytes.hex() == vec["outputs"]["protected_coap"]


# -- aiocoap client, grouposcore server --------------------------------------------------


@pytest.mark.parametrize("fresh", [False, True], ids=["nonce-reuse", "fresh-piv"])
@pytest.mark.parametrize("shape", list(EXCHANGES))
def test_aiocoap_client_grouposcore_server(shape: str, fresh: bool) -> None:
    make_request, make_response = EXCHANGES[shape]
    request = make_request()
    client = aio_oscore_client(seq=41)
    wire, request_id = aio_protect(client, request)

    server = gos_oscore_server(seq=3)
    plain, binding = server.unprotect_request(Message.decode(wire))
    assert plain == request
    assert binding.request_kid == b"" and binding.request_piv == b"\x29"

    response = make_response(request)
    protected = server.protect_response(response, binding, fresh_piv=fresh)
    assert (protected.options.oscore == b"\x01\x03") if fresh else (protected.options.oscore == b"")
    received = aio_incoming(protected.encode())
    unprotected, _ = client.unprotect(received, request_id)
    assert same_content(unprotected, response, skip=(OBSERVE,))  # aiocoap rewrites Observe
    assert received.token == request.token and received.mid == response.mid


def test_aiocoap_client_accepts_several_grouposcore_responses() -> None:
    """First response reuses the request nonce, later ones (notifications) carry PIVs."""
    request = _observe_request()
    client = aio_oscore_client(seq=5)
    wire, request_id = aio_protect(client, request)
    server = gos_oscore_server(seq=100)
    _, binding = server.unprotect_request(Message.decode(wire))
    for n in range(4):
        response = _notification(request).copy(mid=n, payload=bytes([n]) * 3)
        response.options.observe = n
        protected = server.protect_response(response, binding)
        assert protected.options.oscore == (b"" if n == 0 else bytes((0x01, 99 + n)))
        unprotected, _ = client.unprotect(aio_incoming(protected.encode()), request_id)
        assert unprotected.payload == bytes([n]) * 3
        assert unprotected.opt.observe == (-1 if n == 0 else 99 + n)


# -- grouposcore client, aiocoap server --------------------------------------------------


@pytest.mark.parametrize("shape", list(EXCHANGES))
def test_grouposcore_client_aiocoap_server(shape: str) -> None:
    make_request, make_response = EXCHANGES[shape]
    request = make_request()
    client = gos_oscore_client(seq=0x1F3)
    protected, binding = client.protect_request(request)

    server = aio_oscore_server(seq=9)
    plain, request_id = server.unprotect(aio_incoming(protected.encode()))
    # aiocoap rebuilds only the inner message: outer Uri-Host is not copied back
    assert same_content(plain, request, skip=(URI_HOST,))

    response = make_response(request)
    first, _ = aio_protect(server, response, request_id)  # reuses the request nonce
    second, _ = aio_protect(server, response.copy(payload=b"again"), request_id)  # own PIV
    got1, info1 = client.unprotect_response(Message.decode(first), binding)
    got2, info2 = client.unprotect_response(Message.decode(second), binding)
    assert info1.piv is None and info2.piv == b"\x09"
    assert got1 == response  # aiocoap sends no outer Observe here; the inner one stands
    assert got2.payload == b"again" and got2.code == response.code


@pytest.mark.parametrize("shape", list(EXCHANGES))
def test_identical_bytes_for_identical_inputs(shape: str) -> None:
    make_request, make_response = EXCHANGES[shape]
    request = make_request()
    aio_bytes, _ = aio_protect(aio_oscore_client(seq=300), request)
    gos_bytes = gos_oscore_client(seq=300).protect_request(request)[0].encode()
    assert aio_bytes == gos_bytes

    response = make_response(request)
    aio_input = response
    if response.options.observe is not None:
        # RFC 8613 §4.1.3.5.2: a notification's inner Observe is empty; aiocoap copies the
        # application's value inside, so it is given the empty value we put there
        aio_input = response.copy(options=response.options.copy())
        aio_input.options.observe = 0
    for fresh in (False, True):
        aio_server = aio_oscore_server(seq=77)
        _, request_id = aio_server.unprotect(aio_incoming(aio_bytes))
        request_id.can_reuse_nonce = not fresh
        aio_resp, _ = aio_protect(aio_server, aio_input, request_id)
        gos_server = gos_oscore_server(seq=77)
        _, binding = gos_server.unprotect_request(Message.decode(gos_bytes))
        gos_resp = gos_server.protect_response(response, binding, fresh_piv=fresh)
        # aiocoap's protect() leaves the outer Observe to its transport
        gos_resp.options.remove(OBSERVE)
        assert aio_resp == gos_resp.encode()


def test_outer_code_of_response_to_observe_request() -> None:
    """A final response without Observe to an Observe request: grouposcore sends outer
    2.04 (RFC 8613 §4.2), aiocoap 2.05 (it follows the request's FETCH). The outer Code is
    not protected, so each side must accept the other's choice."""
    request = _observe_request()
    final = Message(Code.NOT_FOUND, Type.NON, 9, request.token, Options(), b"no")
    aio_client = aio_oscore_client(seq=1)
    wire, request_id = aio_protect(aio_client, request)
    gos_server = gos_oscore_server()
    _, binding = gos_server.unprotect_request(Message.decode(wire))
    gos_resp = gos_server.protect_response(final, binding)
    assert gos_resp.code == Code.CHANGED
    plain, _ = aio_client.unprotect(aio_incoming(gos_resp.encode()), request_id)
    assert same_content(plain, final)

    gos_client = gos_oscore_client(seq=2)
    protected, gbinding = gos_client.protect_request(request)
    aio_server = aio_oscore_server()
    _, rid = aio_server.unprotect(aio_incoming(protected.encode()))
    aio_resp, _ = aio_protect(aio_server, final, rid)
    assert Message.decode(aio_resp).code == Code.CONTENT
    assert gos_client.unprotect_response(Message.decode(aio_resp), gbinding)[0] == final


@pytest.mark.parametrize("seq", [0, 1, 255, 256, 65535, 1 << 24, (1 << 32) + 5, (1 << 40) - 2])
def test_partial_iv_encodings_agree(seq: int) -> None:
    """Partial IVs of 1 to 5 bytes are encoded and accepted the same way by both."""
    request = _c4_request()
    aio_bytes, _ = aio_protect(aio_oscore_client(seq), request)
    gos_bytes = gos_oscore_client(seq).protect_request(request)[0].encode()
    assert aio_bytes == gos_bytes
    assert gos_oscore_server().unprotect_request(Message.decode(aio_bytes))[0] == request
    aio_plain, _ = aio_oscore_server().unprotect(aio_incoming(gos_bytes))
    assert same_content(aio_plain, request, skip=(URI_HOST,))


# -- negative interop --------------------------------------------------------------------


def test_tampered_aiocoap_request_rejected_then_replay_detected() -> None:
    request = _post_request()
    wire, _ = aio_protect(aio_oscore_client(seq=12), request)
    server = gos_oscore_server()
    original = Message.decode(wire)
    assert original.options.oscore == b"\x09\x0c"

    for i in range(len(original.payload)):
        for bit in (0x01, 0x80):
            payload = bytearray(original.payload)
            payload[i] ^= bit
            with pytest.raises(ProtectionError):
                server.unprotect_request(original.copy(payload=bytes(payload)))
    damaged_option: list[tuple[bytes, type[Exception]]] = [
        (b"\x09\x0d", ProtectionError),  # other Partial IV: other nonce, other AAD
        (b"\x09\x0c\x01", ContextNotFound),  # kid 01 is the server itself
        (b"\x89\x0c", OscoreDecodeError),  # reserved bit
        (b"\x0a\x0c", OscoreDecodeError),  # PIV longer than the option
    ]
    for value, error in damaged_option:
        bad = original.copy()
        bad.options.oscore = value
        with pytest.raises(error):
            server.unprotect_request(bad)

    # nothing above touched the replay window: the genuine request still passes, once
    assert server.unprotect_request(Message.decode(wire))[0] == request
    with pytest.raises(ReplayError):
        server.unprotect_request(Message.decode(wire))


def test_aiocoap_rejects_tampered_grouposcore_response() -> None:
    request = _c4_request()
    client = aio_oscore_client(seq=20)
    wire, request_id = aio_protect(client, request)
    server = gos_oscore_server()
    _, binding = server.unprotect_request(Message.decode(wire))
    response = server.protect_response(_c7_response(request), binding).encode()
    tampered = bytearray(response)
    tampered[-1] ^= 0x01
    with pytest.raises(oscore.ProtectionInvalid):
        client.unprotect(aio_incoming(bytes(tampered)), request_id)
    unprotected, _ = client.unprotect(aio_incoming(response), request_id)
    assert unprotected.payload == b"Hello World!"


def test_aiocoap_rejects_replayed_grouposcore_request() -> None:
    protected, _ = gos_oscore_client(seq=4).protect_request(_c4_request())
    server = aio_oscore_server()
    server.unprotect(aio_incoming(protected.encode()))
    with pytest.raises(oscore.ReplayError):
        server.unprotect(aio_incoming(protected.encode()))
