"""EDHOC sans-I/O: both roles agree on the OSCORE context; bad input leaves no session."""

from __future__ import annotations

import cbor2
import pytest

from grouposcore.coap import Message
from grouposcore.edhoc import Initiator
from grouposcore.edhoc.protocol import (
    CF_EDHOC_CBOR_SEQ,
    encode_conn_id,
    parse_error,
    split_conn_id,
)
from grouposcore.errors import EdhocCredentialError, EdhocError, EdhocPeerError
from tests.edhoc.helpers import identity, sessions_for


def _pair() -> tuple:
    gm_key, gm_cred = identity(b"\x47", "gm")
    node_key, node_cred = identity(b"\x0a", "node")
    sessions = sessions_for(gm_key, gm_cred, {"node": node_cred})
    initiator = Initiator(node_key, node_cred, gm_cred)
    return sessions, initiator, node_key, node_cred, gm_cred


def test_both_roles_derive_the_same_oscore_context_with_swapped_ids() -> None:
    sessions, initiator, *_ = _pair()
    r2 = sessions.handle(initiator.message_1())
    assert r2.code == 68 and sessions.pending() == 1
    r4 = sessions.handle(initiator.message_3(r2.payload))
    assert r4.code == 68 and r4.established is not None and sessions.pending() == 0
    node = initiator.finish(r4.payload)
    gm = r4.established.oscore
    assert r4.established.name == "node"
    assert (node.master_secret, node.master_salt) == (gm.master_secret, gm.master_salt)
    assert len(node.master_secret) == 16 and len(node.master_salt) == 8
    assert node.sender_id == gm.recipient_id == initiator.c_r
    assert node.recipient_id == gm.sender_id == initiator.c_i
    # the contexts interoperate: a request protected by one verifies at the other
    req = Message(2, payload=b"hi")
    req.options.uri_path = ["x"]
    protected, _ = node.context().protect_request(req)
    plain, _ = gm.context().unprotect_request(protected)
    assert plain.payload == b"hi"


@pytest.mark.parametrize("by_value", [False, True])
def test_credentials_by_kid_and_by_value_both_authenticate(by_value: bool) -> None:
    sessions, _, node_key, node_cred, gm_cred = _pair()
    initiator = Initiator(node_key, node_cred, gm_cred, by_value=by_value)
    r2 = sessions.handle(initiator.message_1())
    r4 = sessions.handle(initiator.message_3(r2.payload))
    assert r4.established is not None and r4.established.peer == node_cred


def test_unknown_initiator_credential_is_an_error_and_leaves_no_session() -> None:
    sessions, _, _, _, gm_cred = _pair()
    stranger_key, stranger_cred = identity(b"\x0b", "stranger")
    initiator = Initiator(stranger_key, stranger_cred, gm_cred)
    r2 = sessions.handle(initiator.message_1())
    r4 = sessions.handle(initiator.message_3(r2.payload))
    assert r4.code == 128 and r4.content_format == CF_EDHOC_CBOR_SEQ
    assert r4.established is None and sessions.pending() == 0
    err = parse_error(r4.payload)
    assert err.err_code == 3


def test_known_kid_with_another_key_fails_verification() -> None:
    # same kid as the registered node, different key: the MAC in message_3 does not verify
    sessions, _, _, _, gm_cred = _pair()
    impostor_key, impostor_cred = identity(b"\x0a", "node")
    initiator = Initiator(impostor_key, impostor_cred, gm_cred)
    r2 = sessions.handle(initiator.message_1())
    r4 = sessions.handle(initiator.message_3(r2.payload))
    assert r4.code == 128 and r4.established is None and sessions.pending() == 0
    assert "does not verify" in str(parse_error(r4.payload))


def test_wrong_responder_credential_is_reported_as_such() -> None:
    sessions, _, node_key, node_cred, _ = _pair()
    _, other_gm = identity(b"\x48", "other-gm")
    initiator = Initiator(node_key, node_cred, other_gm)
    r2 = sessions.handle(initiator.message_1())
    with pytest.raises(EdhocCredentialError, match="expected other-gm"):
        initiator.message_3(r2.payload)


def test_same_kid_other_key_responder_fails_mac() -> None:
    sessions, _, node_key, node_cred, gm_cred = _pair()
    _, fake_gm = identity(gm_cred.kid, "gm")
    initiator = Initiator(node_key, node_cred, fake_gm)
    r2 = sessions.handle(initiator.message_1())
    with pytest.raises(EdhocError, match="does not verify"):
        initiator.message_3(r2.payload)


def test_tampered_message_2_is_rejected() -> None:
    sessions, initiator, *_ = _pair()
    r2 = sessions.handle(initiator.message_1())
    bad = bytearray(r2.payload)
    bad[-2] ^= 0x01
    with pytest.raises(EdhocError):
        initiator.message_3(bytes(bad))


def test_tampered_message_3_is_refused_and_the_session_is_gone() -> None:
    sessions, initiator, *_ = _pair()
    r2 = sessions.handle(initiator.message_1())
    payload = bytearray(initiator.message_3(r2.payload))
    payload[-2] ^= 0x01
    r4 = sessions.handle(bytes(payload))
    assert r4.code == 128 and r4.established is None and sessions.pending() == 0
    # the genuine message_3 cannot be completed afterwards either: the session was used up
    again = sessions.handle(bytes(payload[:-2]) + bytes([payload[-2] ^ 1, payload[-1]]))
    assert again.code == 128 and "unknown C_R" in str(parse_error(again.payload))


def test_replayed_message_1_is_refused_without_a_new_session() -> None:
    sessions, initiator, *_ = _pair()
    m1 = initiator.message_1()
    assert sessions.handle(m1).code == 68
    replay = sessions.handle(m1)
    assert replay.code == 128 and sessions.pending() == 1
    assert "replayed message_1" in str(parse_error(replay.payload))


def test_garbage_never_raises_and_creates_nothing() -> None:
    sessions, *_ = _pair()
    for payload in (b"", b"\xf5", b"\xf5\x03\x02", b"\x05", b"\x41", b"\xff" * 40):
        reply = sessions.handle(payload)
        assert reply.code == 128 and reply.established is None
    assert sessions.pending() == 0


def test_unsupported_cipher_suite_answers_error_code_2_with_our_suites() -> None:
    sessions, initiator, *_ = _pair()
    m1 = initiator.message_1()
    assert m1[1:3] == b"\x03\x02"  # method 3, suite 2
    reply = sessions.handle(m1[:2] + b"\x06" + m1[3:])
    assert reply.code == 128
    err = parse_error(reply.payload)
    assert err.err_code == 2 and err.err_info == 2


def test_pending_sessions_are_bounded() -> None:
    sessions, _, node_key, node_cred, gm_cred = _pair()
    sessions.max_sessions = 4
    for _ in range(10):
        sessions.handle(Initiator(node_key, node_cred, gm_cred).message_1())
    assert sessions.pending() == 4


def test_c_r_avoids_ids_in_use_and_c_i() -> None:
    gm_key, gm_cred = identity(b"\x47", "gm")
    node_key, node_cred = identity(b"\x0a", "node")
    used = [bytes([b]) for b in range(0x00, 0x17)]
    sessions = sessions_for(gm_key, gm_cred, {"node": node_cred}, taken_ids=lambda: used)
    initiator = Initiator(node_key, node_cred, gm_cred, c_i=b"\x17")
    r2 = sessions.handle(initiator.message_1())
    initiator.message_3(r2.payload)
    assert initiator.c_r not in (*used, b"\x17")


@pytest.mark.parametrize("c", [b"\x00", b"\x17", b"\x20", b"\x37", b"\x18", b"\xff", b"ab"])
def test_connection_identifier_encoding_round_trips(c: bytes) -> None:
    encoded = encode_conn_id(c)
    assert split_conn_id(encoded + b"rest") == (c, b"rest")
    if len(c) > 1 or c[0] in (0x18, 0xFF):
        assert cbor2.loads(encoded) == c


def test_error_message_parses_to_a_peer_error() -> None:
    err = parse_error(cbor2.dumps(1) + cbor2.dumps("nope"))
    assert isinstance(err, EdhocPeerError) and "nope" in str(err) and err.err_code == 1
    assert parse_error(b"\xff").err_code == -1


def test_byte_string_connection_identifier_when_the_one_byte_ints_are_taken() -> None:
    gm_key, gm_cred = identity(b"\x47", "gm")
    node_key, node_cred = identity(b"\x0a", "node")
    ints = [bytes([b]) for b in (*range(0x00, 0x18), *range(0x20, 0x38))]
    sessions = sessions_for(gm_key, gm_cred, {"node": node_cred}, taken_ids=lambda: ints)
    initiator = Initiator(node_key, node_cred, gm_cred)
    r2 = sessions.handle(initiator.message_1())
    m3 = initiator.message_3(r2.payload)
    assert initiator.c_r == b"\x18" and m3[:2] == b"\x41\x18"  # CBOR bstr h'18' on the wire
    r4 = sessions.handle(m3)
    assert r4.established is not None
    node, gm = initiator.finish(r4.payload), r4.established.oscore
    assert node.sender_id == gm.recipient_id == b"\x18"
    req = Message(2, payload=b"x")
    protected, _ = node.context().protect_request(req)
    assert gm.context().unprotect_request(protected)[0].payload == b"x"


def test_unsupported_method_is_an_edhoc_error_without_a_session() -> None:
    sessions, initiator, *_ = _pair()
    m1 = initiator.message_1()
    reply = sessions.handle(m1[:1] + b"\x00" + m1[2:])  # method 0 (signature keys)
    assert reply.code == 128 and sessions.pending() == 0
    assert "unsupported EDHOC method" in str(parse_error(reply.payload))
