"""Content-encryption algorithms and HKDF against RFC vectors and ``cryptography`` directly."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from grouposcore.cose import (
    A128CBC,
    A128CTR,
    A192CBC,
    A256CBC,
    AES_CCM_16_64_128,
    CHACHA20_POLY1305,
    HKDF_SHA256,
    HKDF_SHA384,
    HKDF_SHA512,
    aead_by_id,
    enc_structure,
    hkdf_by_id,
    hkdf_by_name,
)
from grouposcore.errors import CoseError, DecryptionError, UnknownAlgorithm

# id -> (key_len, nonce_len, tag_len) as registered (digest §1.1)
AEAD_TABLE = {
    10: (16, 13, 8), 11: (32, 13, 8), 12: (16, 7, 8), 13: (32, 7, 8),
    30: (16, 13, 16), 31: (32, 13, 16), 32: (16, 7, 16), 33: (32, 7, 16),
    1: (16, 12, 16), 2: (24, 12, 16), 3: (32, 12, 16), 24: (32, 12, 16),
}  # fmt: skip
CTR_TABLE = {-65534: 16, -65533: 24, -65532: 32}
CBC_TABLE = {-65531: 16, -65530: 24, -65529: 32}


def h(s: str) -> bytes:
    return bytes.fromhex(s)


@pytest.mark.parametrize("alg_id", sorted(AEAD_TABLE))
def test_aead_table_and_round_trip(alg_id: int) -> None:
    alg = aead_by_id(alg_id)
    assert (alg.key_len, alg.nonce_len, alg.tag_len) == AEAD_TABLE[alg_id]
    assert alg.is_aead and alg.id == alg_id
    c = alg.cipher(os.urandom(alg.key_len))
    nonce = os.urandom(alg.nonce_len)
    for pt in (b"", b"x", os.urandom(100)):
        ct = c.encrypt(nonce, pt, b"aad")
        assert len(ct) == len(pt) + alg.tag_len
        assert c.decrypt(nonce, ct, b"aad") == pt
    assert c.encrypt(nonce, b"abc") == c.encrypt(nonce, b"abc", b"")


@pytest.mark.parametrize("alg_id", sorted(AEAD_TABLE))
def test_aead_rejects_tampering(alg_id: int) -> None:
    alg = aead_by_id(alg_id)
    key = os.urandom(alg.key_len)
    c = alg.cipher(key)
    nonce = os.urandom(alg.nonce_len)
    ct = c.encrypt(nonce, b"hello group", b"aad")
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionError):
            c.decrypt(nonce, bytes(bad), b"aad")
    with pytest.raises(DecryptionError):
        c.decrypt(nonce, ct, b"aaD")
    other_nonce = bytes([nonce[0] ^ 1]) + nonce[1:]
    with pytest.raises(DecryptionError):
        c.decrypt(other_nonce, ct, b"aad")
    other_key = bytes([key[0] ^ 1]) + key[1:]
    with pytest.raises(DecryptionError):
        alg.cipher(other_key).decrypt(nonce, ct, b"aad")
    for short in (b"", ct[: alg.tag_len - 1]):
        with pytest.raises(DecryptionError):
            c.decrypt(nonce, short, b"aad")


@pytest.mark.parametrize("alg_id", sorted(AEAD_TABLE) + sorted(CTR_TABLE) + sorted(CBC_TABLE))
def test_wrong_key_and_nonce_lengths(alg_id: int) -> None:
    alg = aead_by_id(alg_id, allow_cbc=True)
    for n in (0, alg.key_len - 1, alg.key_len + 1):
        with pytest.raises(CoseError):
            alg.cipher(bytes(n))
    c = alg.cipher(bytes(alg.key_len))
    for n in (alg.nonce_len - 1, alg.nonce_len + 1):
        with pytest.raises(CoseError):
            c.encrypt(bytes(n), b"data")
        with pytest.raises(CoseError):
            c.decrypt(bytes(n), bytes(32))


def test_aes_ccm_rfc8613_c4() -> None:
    c = AES_CCM_16_64_128.cipher(h("f0910ed7295e6ad4b54fc793154302ff"))
    nonce, aad = h("4622d4dd6d944168eefb549868"), h("8368456e63727970743040488501810a40411440")
    assert c.encrypt(nonce, h("01b3747631"), aad) == h("612f1092f1776f1c1668b3825e")
    assert c.decrypt(nonce, h("612f1092f1776f1c1668b3825e"), aad) == h("01b3747631")


def _aead_objects(vectors: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for v in vectors["vectors"]:
        inter, outp = v.get("intermediate", {}), v.get("outputs", {})
        if "encryption_key" in inter and "ciphertext" in outp:
            aad = inter.get("aad") or inter.get("aad_enc_structure")
            out.append({"id": v["id"], "key": inter["encryption_key"], "nonce": inter["nonce"],
                        "aad": aad, "aad_array": inter["aad_array"],
                        "pt": inter["plaintext"], "ct": outp["ciphertext"]})  # fmt: skip
    return out


def test_all_vector_ciphertexts(
    rfc8613_vectors: dict[str, Any], group_vectors: dict[str, Any]
) -> None:
    """Every RFC 8613 and Group OSCORE message vector encrypts and decrypts byte for byte."""
    objs = _aead_objects(rfc8613_vectors) + _aead_objects(group_vectors)
    assert len(objs) >= 9
    for o in objs:
        assert enc_structure(h(o["aad_array"])) == h(o["aad"]), o["id"]
        c = AES_CCM_16_64_128.cipher(h(o["key"]))
        assert c.encrypt(h(o["nonce"]), h(o["pt"]), h(o["aad"])) == h(o["ct"]), o["id"]
        assert c.decrypt(h(o["nonce"]), h(o["ct"]), h(o["aad"])) == h(o["pt"]), o["id"]


def test_chacha_g8_group_request(group_vectors: dict[str, Any]) -> None:
    g8 = next(v for v in group_vectors["vectors"] if v["id"] == "G8")
    c = CHACHA20_POLY1305.cipher(h(g8["outputs"]["client_sender_key"]))
    nonce = h(g8["intermediate"]["group_request_nonce"])
    aad = enc_structure(h(g8["intermediate"]["group_request_aad_array"]))
    ct = h(g8["outputs"]["group_request_ciphertext"])
    pt = c.decrypt(nonce, ct, aad)
    assert pt == h("01b3747631")
    assert c.encrypt(nonce, pt, aad) == ct


@pytest.mark.parametrize("alg_id", sorted(CTR_TABLE))
def test_ctr_counter_block(alg_id: int) -> None:
    alg = aead_by_id(alg_id)
    assert not alg.is_aead and alg.tag_len == 0 and alg.nonce_len == 12
    assert alg.key_len == CTR_TABLE[alg_id]
    key, nonce = os.urandom(alg.key_len), os.urandom(12)
    pt = os.urandom(77)  # several blocks, partial last block
    enc = Cipher(algorithms.AES(key), modes.CTR(nonce + bytes(4))).encryptor()
    expected = enc.update(pt) + enc.finalize()
    c = alg.cipher(key)
    assert c.encrypt(nonce, pt) == expected
    assert c.decrypt(nonce, expected) == pt
    assert c.encrypt(nonce, b"") == b""


def test_ctr_refuses_aad() -> None:
    c = A128CTR.cipher(bytes(16))
    with pytest.raises(CoseError):
        c.encrypt(bytes(12), b"data", b"aad")
    with pytest.raises(CoseError):
        c.decrypt(bytes(12), b"data", b"aad")


def test_cbc_only_on_request() -> None:
    for alg_id, alg in ((-65531, A128CBC), (-65530, A192CBC), (-65529, A256CBC)):
        with pytest.raises(UnknownAlgorithm):
            aead_by_id(alg_id)
        assert aead_by_id(alg_id, allow_cbc=True) is alg
        assert alg.key_len == CBC_TABLE[alg_id] and alg.nonce_len == 16 and not alg.is_aead


@pytest.mark.parametrize("alg", [A128CBC, A192CBC, A256CBC])
def test_cbc_matches_cryptography_and_checks_padding(alg: Any) -> None:
    key, iv = os.urandom(alg.key_len), os.urandom(16)
    c = alg.cipher(key)
    for pt in (b"", b"a" * 15, b"b" * 16, os.urandom(33)):
        padder = padding.PKCS7(128).padder()
        padded = padder.update(pt) + padder.finalize()
        enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        expected = enc.update(padded) + enc.finalize()
        assert c.encrypt(iv, pt) == expected
        assert c.decrypt(iv, expected) == pt
    # a block whose decryption ends in an invalid pad byte
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    bad = enc.update(b"\x00" * 16) + enc.finalize()
    with pytest.raises(DecryptionError):
        c.decrypt(iv, bad)
    for wrong_len in (b"", bytes(15), bytes(17)):
        with pytest.raises(DecryptionError):
            c.decrypt(iv, wrong_len)
    with pytest.raises(CoseError):
        c.encrypt(iv, b"x", b"aad")


@pytest.mark.parametrize("bad", [0, 4, 14, 25, -65535, -65528, -7, "10", None, 10.0, True])
def test_unknown_aead_ids(bad: Any) -> None:
    with pytest.raises(UnknownAlgorithm):
        aead_by_id(bad)


# --- HKDF -------------------------------------------------------------------------------


def test_hkdf_rfc5869_case1() -> None:
    okm = HKDF_SHA256.derive(
        salt=h("000102030405060708090a0b0c"),
        ikm=bytes([0x0B] * 22),
        info=h("f0f1f2f3f4f5f6f7f8f9"),
        length=42,
    )
    assert okm == h(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hkdf_rfc8613_c11() -> None:
    okm = HKDF_SHA256.derive(h("9e7ca92223786340"), h("0102030405060708090a0b0c0d0e0f10"),
                             h("8540f60a634b657910"), 16)  # fmt: skip
    assert okm == h("f0910ed7295e6ad4b54fc793154302ff")


def test_hkdf_all_rfc8613_derivations(rfc8613_vectors: dict[str, Any]) -> None:
    """Includes C.2 (empty Master Salt), which relies on empty salt = zeros."""
    n = 0
    for v in rfc8613_vectors["vectors"]:
        if v["type"] != "key_derivation":
            continue
        i, inter, out = v["inputs"], v["intermediate"], v["outputs"]
        ms, salt = h(i["master_secret"]), h(i["master_salt"])
        assert HKDF_SHA256.derive(salt, ms, h(inter["info_sender_key"]), 16) == h(out["sender_key"])
        assert HKDF_SHA256.derive(salt, ms, h(inter["info_recipient_key"]), 16) == h(
            out["recipient_key"]
        )
        assert HKDF_SHA256.derive(salt, ms, h(inter["info_common_iv"]), 13) == h(out["common_iv"])
        n += 1
    assert n == 6


def test_hkdf_group_g1(group_vectors: dict[str, Any]) -> None:
    ci = group_vectors["common_inputs"]
    g1 = next(v for v in group_vectors["vectors"] if v["id"] == "G1")
    salt, ms = h(ci["master_salt"]), h(ci["master_secret"])
    inter, out = g1["intermediate"], g1["outputs"]
    assert HKDF_SHA256.derive(salt, ms, h(inter["info_client_key"]), 16) == h(
        out["client_sender_key"]
    )
    assert HKDF_SHA256.derive(salt, ms, h(inter["info_sekey"]), 16) == h(
        out["signature_encryption_key"]
    )


def test_hkdf_lookup_and_lengths() -> None:
    assert hkdf_by_id(5) is HKDF_SHA256 and hkdf_by_id(6) is HKDF_SHA384
    assert hkdf_by_id(7) is HKDF_SHA512
    for bad in (-10, 4, 8, "5", None, True):
        with pytest.raises(UnknownAlgorithm):
            hkdf_by_id(bad)  # type: ignore[arg-type]
    for name in ("HKDF-SHA-256", "SHA-256", "sha256", "hkdf_sha256", " HKDF SHA-256 "):
        assert hkdf_by_name(name) is HKDF_SHA256
    assert hkdf_by_name("HKDF-SHA-384") is HKDF_SHA384
    assert hkdf_by_name("sha512") is HKDF_SHA512
    for bad_name in ("", "md5", "HKDF", "sha-1", "direct+HKDF-SHA-256"):
        with pytest.raises(UnknownAlgorithm):
            hkdf_by_name(bad_name)
    out = HKDF_SHA512.derive(b"", b"ikm", b"", 64)
    assert len(out) == 64 and out != HKDF_SHA384.derive(b"", b"ikm", b"", 64)
    assert HKDF_SHA256.derive(b"", b"ikm", b"", 16) == HKDF_SHA256.derive(bytes(32), b"ikm", b"",
                                                                          16)  # fmt: skip
    with pytest.raises(CoseError):
        HKDF_SHA256.derive(b"", b"ikm", b"", 255 * 32 + 1)
