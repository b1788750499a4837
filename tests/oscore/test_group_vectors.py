"""Group OSCORE vectors G1-G8 (vectors-group-oscore.json), byte for byte, both directions."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.coap import Message
from grouposcore.cose import cbor_bstr
from grouposcore.oscore import GroupContext, SenderSequence, derive_info
from tests.conftest import load_vectors

DATA = load_vectors("vectors-group-oscore.json")
COMMON = DATA["common_inputs"]
V = {v["id"]: v for v in DATA["vectors"]}
H = bytes.fromhex
CLIENT_ID, SERVER_ID = H(COMMON["client_sender_id"]), H(COMMON["server_sender_id"])
GID = H(COMMON["id_context_gid"])


def cred(name: str) -> bytes:
    return H(COMMON["creds"][name]["ccs"])


def member(name: str, *, seq: int = 0, **algs: Any) -> GroupContext:
    """The client (0x25) or server (0x52) of the vectors, knowing the other one."""
    other = "server" if name == "client" else "client"
    own_id, other_id = (CLIENT_ID, SERVER_ID) if name == "client" else (SERVER_ID, CLIENT_ID)
    return GroupContext(
        H(COMMON["master_secret"]),
        GID,
        master_salt=H(COMMON["master_salt"]),
        sender_id=own_id,
        private_key=Ed25519PrivateKey.from_private_bytes(H(COMMON["creds"][name]["ed25519_seed"])),
        credential=cred(name),
        gm_cred=cred("gm"),
        peers={other_id: cred(other)},
        sequence=SenderSequence(seq),
        **algs,
    )


def test_common_inputs_match_context_defaults() -> None:
    ctx = member("client")
    assert ctx.aead.id == COMMON["aead_alg"] and ctx.group_enc.id == COMMON["group_encryption_alg"]
    assert ctx.signature.id == COMMON["signature_alg"]
    assert COMMON["algorithms_array_in_aad"].endswith(ctx._aad_head[2:].hex())


def test_g1_key_derivation() -> None:
    mid, out = V["G1"]["intermediate"], V["G1"]["outputs"]
    assert derive_info(CLIENT_ID, GID, 10, "Key", 16).hex() == mid["info_client_key"]
    assert derive_info(SERVER_ID, GID, 10, "Key", 16).hex() == mid["info_server_key"]
    assert derive_info(b"", GID, 10, "IV", 13).hex() == mid["info_common_iv"]
    assert derive_info(b"", GID, 10, "SEKey", 16).hex() == mid["info_sekey"]
    client = member("client")
    assert client.sender_key.hex() == out["client_sender_key"]
    assert client.recipient(SERVER_ID).key.hex() == out["server_sender_key"]
    assert client.common_iv.hex() == out["common_iv"]
    assert client.signature_encryption_key.hex() == out["signature_encryption_key"]
    server = member("server")
    assert server.sender_key.hex() == out["server_sender_key"]


def test_g2_pairwise_keys() -> None:
    out = V["G2"]["outputs"]
    c2s, s2c = out["pairwise_key_client_to_server"], out["pairwise_key_server_to_client"]
    sender, recipient = member("client").pairwise_keys(SERVER_ID)
    assert (sender.hex(), recipient.hex()) == (c2s, s2c)
    sender, recipient = member("server").pairwise_keys(CLIENT_ID)
    assert (sender.hex(), recipient.hex()) == (s2c, c2s)


def _request(vector_id: str, *, pairwise: bool) -> tuple[GroupContext, Any, Message]:
    vec = V[vector_id]
    client = member("client", seq=vec["inputs"]["sender_sequence_number"])
    plain = Message.decode(H(vec["inputs"]["unprotected_coap"]))
    target = SERVER_ID if pairwise else None
    protected, binding = client.protect_request(plain, pairwise_with=target)
    return client, binding, protected


def test_g3_group_request() -> None:
    vec = V["G3"]
    mid, out = vec["intermediate"], vec["outputs"]
    client, binding, protected = _request("G3", pairwise=False)
    assert protected.options.oscore.hex() == mid["oscore_option"]
    assert client._group_nonce(CLIENT_ID, b"\x05").hex() == mid["nonce"]
    assert client._keystream(b"\x05", CLIENT_ID, True).hex() == mid["keystream"]
    # the external_aad as protect_request built it: the binding keeps its shared prefix
    aad_array = binding.aad_prefix + cbor_bstr(H(mid["oscore_option"])) + client._own_aad_tail
    assert aad_array.hex() == mid["aad_array"]
    assert protected.payload.hex() == out["payload"]
    assert protected.encode().hex() == out["protected_coap"]

    server = member("server")
    request, sbinding = server.unprotect_request(Message.decode(H(out["protected_coap"])))
    assert request == Message.decode(H(vec["inputs"]["unprotected_coap"]))
    assert sbinding.group_mode and sbinding.request_kid == CLIENT_ID


def _respond(request_id: str, response_id: str, **kwargs: Any) -> None:
    client, binding, protected_request = _request(
        request_id, pairwise=V[request_id]["mode"] == "pairwise"
    )
    vec = V[response_id]
    seq = vec["inputs"]["sender_sequence_number"]
    server = member("server", seq=seq or 0)
    _, sbinding = server.unprotect_request(protected_request)
    response = Message.decode(H(vec["inputs"]["unprotected_coap"]))
    protected = server.protect_response(response, sbinding, fresh_piv=seq is not None, **kwargs)
    assert protected.options.oscore.hex() == vec["intermediate"]["oscore_option"]
    assert protected.payload.hex() == vec["outputs"]["payload"]
    assert protected.encode().hex() == vec["outputs"]["protected_coap"]
    plain, info = client.unprotect_response(Message.decode(protected.encode()), binding)
    assert plain == response
    assert info.sender_id == SERVER_ID
    assert info.group_mode == (vec["mode"] == "group")


def test_g4_group_response_without_piv() -> None:
    _respond("G3", "G4")


def test_g5_group_response_with_piv() -> None:
    _respond("G3", "G5")


def test_g6_pairwise_request() -> None:
    vec = V["G6"]
    client, _, protected = _request("G6", pairwise=True)
    assert protected.options.oscore.hex() == vec["intermediate"]["oscore_option"]
    assert client._pairwise_nonce(CLIENT_ID, b"\x06").hex() == vec["intermediate"]["nonce"]
    assert protected.encode().hex() == vec["outputs"]["protected_coap"]
    request, sbinding = member("server").unprotect_request(protected)
    assert not sbinding.group_mode
    assert request == Message.decode(H(vec["inputs"]["unprotected_coap"]))


def test_g7_pairwise_response() -> None:
    _respond("G6", "G7")


def test_g8_mixed_algorithms() -> None:
    vec = V["G8"]
    mid, out = vec["intermediate"], vec["outputs"]
    algs = {"group_enc": 24, "aead": 10}
    client = member("client", seq=7, **algs)
    assert client.sender_key.hex() == out["client_sender_key"]
    assert client.recipient(SERVER_ID).key.hex() == out["server_sender_key"]
    assert client.common_iv.hex() == out["common_iv"]
    assert client.signature_encryption_key.hex() == out["signature_encryption_key"]
    assert derive_info(CLIENT_ID, GID, 24, "Key", 32).hex() == mid["info_client_key"]
    assert derive_info(b"", GID, 24, "IV", 13).hex() == mid["info_common_iv"]
    assert derive_info(b"", GID, 24, "SEKey", 32).hex() == mid["info_sekey"]
    pw = client.pairwise_keys(SERVER_ID)
    assert pw[0].hex() == out["pairwise_key_client_to_server"]
    assert pw[1].hex() == out["pairwise_key_server_to_client"]
    assert client.max_id_len == 6

    plain = Message.decode(H(V["G3"]["inputs"]["unprotected_coap"]))
    group_req, _ = client.protect_request(plain)
    assert group_req.options.oscore.hex() == mid["group_request_oscore_option"]
    assert client._group_nonce(CLIENT_ID, b"\x07").hex() == mid["group_request_nonce"]
    assert client._keystream(b"\x07", CLIENT_ID, True).hex() == mid["group_request_keystream"]
    assert group_req.payload.hex() == out["group_request_payload"]
    pairwise_req, _ = client.protect_request(plain, pairwise_with=SERVER_ID)
    assert pairwise_req.options.oscore.hex() == mid["pairwise_request_oscore_option"]
    assert client._pairwise_nonce(CLIENT_ID, b"\x08").hex() == mid["pairwise_request_nonce"]
    assert pairwise_req.payload.hex() == out["pairwise_request_payload"]

    server = member("server", **algs)
    assert server.unprotect_request(group_req)[0] == plain
    assert server.unprotect_request(pairwise_req)[0] == plain
