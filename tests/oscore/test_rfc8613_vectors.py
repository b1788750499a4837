"""RFC 8613 Appendix C: every vector in vectors-rfc8613.json, byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from grouposcore.coap import Message
from grouposcore.oscore import SecurityContext, SenderSequence, derive_info
from tests.conftest import load_vectors

VECTORS = load_vectors("vectors-rfc8613.json")["vectors"]
BY_ID = {v["id"]: v for v in VECTORS}
H = bytes.fromhex


def _hex_or_none(value: str | None) -> bytes | None:
    return None if value is None else H(value)


def context_for(vector_id: str, *, seq: int = 0) -> SecurityContext:
    inputs = BY_ID[vector_id]["inputs"]
    assert inputs["hkdf"] == "HKDF-SHA-256"
    id_context = _hex_or_none(inputs["id_context"])
    return SecurityContext(
        H(inputs["master_secret"]),
        H(inputs["sender_id"]),
        H(inputs["recipient_id"]),
        master_salt=H(inputs["master_salt"]),
        id_context=id_context,
        aead=inputs["aead_alg"],
        sequence=SenderSequence(seq),
        send_kid_context=id_context is not None,
    )


KEY_VECTORS = [v for v in VECTORS if v["type"] == "key_derivation"]


@pytest.mark.parametrize("vector", KEY_VECTORS, ids=lambda v: v["id"])
def test_key_derivation(vector: dict[str, Any]) -> None:
    inputs, mid, out = vector["inputs"], vector["intermediate"], vector["outputs"]
    ctx = context_for(vector["id"])
    id_context = _hex_or_none(inputs["id_context"])
    alg = inputs["aead_alg"]
    assert (
        derive_info(H(inputs["sender_id"]), id_context, alg, "Key", 16).hex()
        == mid["info_sender_key"]
    )
    assert (
        derive_info(H(inputs["recipient_id"]), id_context, alg, "Key", 16).hex()
        == mid["info_recipient_key"]
    )
    assert derive_info(b"", id_context, alg, "IV", 13).hex() == mid["info_common_iv"]
    assert ctx.sender_key.hex() == out["sender_key"]
    assert ctx.recipient_key.hex() == out["recipient_key"]
    assert ctx.common_iv.hex() == out["common_iv"]
    assert ctx.nonce(ctx.sender_id, b"\x00").hex() == out["sender_nonce_piv0"]
    assert ctx.nonce(ctx.recipient_id, b"\x00").hex() == out["recipient_nonce_piv0"]


def _peer_of(vector_id: str) -> str:
    return vector_id[:-1] + ("2" if vector_id.endswith("1") else "1")


REQUESTS = [v for v in VECTORS if v["type"] == "request"]


@pytest.mark.parametrize("vector", REQUESTS, ids=lambda v: v["id"])
def test_request_protect_and_unprotect(vector: dict[str, Any]) -> None:
    inputs, mid, out = vector["inputs"], vector["intermediate"], vector["outputs"]
    client = context_for(vector["context_from"], seq=inputs["sender_sequence_number"])
    assert client.sender_key.hex() == inputs["sender_key"]
    assert client.nonce(client.sender_id, H(mid["partial_iv"])).hex() == mid["nonce"]
    plain = Message.decode(H(inputs["unprotected_coap"]))
    protected, binding = client.protect_request(plain)
    assert protected.options.oscore.hex() == out["oscore_option"]
    assert protected.payload.hex() == out["ciphertext"]
    assert protected.encode().hex() == out["protected_coap"]
    assert binding.request_piv.hex() == mid["partial_iv"]

    server = context_for(_peer_of(vector["context_from"]))
    request, server_binding = server.unprotect_request(Message.decode(H(out["protected_coap"])))
    assert request == plain
    assert server_binding.request_kid.hex() == mid["kid"]


RESPONSES = [v for v in VECTORS if v["type"] == "response"]


@pytest.mark.parametrize("vector", RESPONSES, ids=lambda v: v["id"])
def test_response_protect_and_unprotect(vector: dict[str, Any]) -> None:
    inputs, mid, out = vector["inputs"], vector["intermediate"], vector["outputs"]
    request_vector = BY_ID["C.4"]
    client = context_for("C.1.1", seq=request_vector["inputs"]["sender_sequence_number"])
    server = context_for("C.1.2", seq=inputs["sender_sequence_number"])
    protected_request, client_binding = client.protect_request(
        Message.decode(H(request_vector["inputs"]["unprotected_coap"]))
    )
    _, server_binding = server.unprotect_request(protected_request)

    fresh = mid["partial_iv"] is not None
    response = Message.decode(H(inputs["unprotected_coap"]))
    protected = server.protect_response(response, server_binding, fresh_piv=fresh)
    assert protected.options.oscore.hex() == out["oscore_option"]
    assert protected.payload.hex() == out["ciphertext"]
    assert protected.encode().hex() == out["protected_coap"]

    plain, info = client.unprotect_response(
        Message.decode(H(out["protected_coap"])), client_binding
    )
    assert plain == response
    assert info.piv == _hex_or_none(mid["partial_iv"])


def test_aad_example_section_5_4() -> None:
    vector = BY_ID["5.4-example"]
    inputs, out = vector["inputs"], vector["outputs"]
    ctx = SecurityContext(b"\x00" * 16, b"\x01", b"\x02", aead=inputs["aead_alg"])
    aad = ctx._aad(H(inputs["request_kid"]), H(inputs["request_piv"]))
    assert aad.hex() == out["aad"]
    assert out["external_aad"].endswith(out["aad_array"])
