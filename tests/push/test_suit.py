"""SUIT envelopes: the draft's published examples verify, push manifests round-trip, and
what is not supported or not trusted is refused by name; the block hash tree."""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.errors import SuitError
from grouposcore.push.suit import (
    leaf_hash,
    parse_envelope,
    sign_envelope,
    tree_levels,
    tree_proof,
    verify_proof,
)

VECTORS = Path(__file__).parent / "vectors"
DRAFT_KEY = load_pem_public_key((VECTORS / "author.pem").read_bytes())


def vector(i: int) -> bytes:
    return (VECTORS / f"example{i}.suit").read_bytes()


@pytest.mark.parametrize("i", range(6))
def test_draft_examples_verify_with_the_drafts_key(i: int) -> None:
    m = parse_envelope(vector(i), [DRAFT_KEY])  # type: ignore[list-item]
    assert m.sequence == i
    if i == 3:  # A/B slots: the image is chosen by try-each
        assert m.conditional and m.image_size is None
        return
    assert m.image_size == 34768
    assert m.image_digest == bytes.fromhex(
        "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210"
    )


@pytest.mark.parametrize(("i", "reason"), [
    (0, "does not set block size"), (3, "try-each"), (4, "3 components"),
    (5, "2 components"),
])  # fmt: skip
def test_draft_examples_are_refused_for_push_by_name(i: int, reason: str) -> None:
    with pytest.raises(SuitError, match=reason):
        parse_envelope(vector(i), [DRAFT_KEY]).for_push()  # type: ignore[list-item]


def test_draft_example_with_an_altered_signature_or_an_untrusted_key_is_refused() -> None:
    raw = bytearray(vector(0))
    raw[100] ^= 1  # inside the ES256 signature
    with pytest.raises(SuitError, match="no trusted author"):
        parse_envelope(bytes(raw), [DRAFT_KEY])  # type: ignore[list-item]
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SuitError, match="no trusted author"):
        parse_envelope(vector(0), [other])


def test_severed_member_must_match_its_digest() -> None:
    env = cbor2.loads(vector(2))
    body = dict(env.value)
    body[23] = body[23][:-1] + bytes([body[23][-1] ^ 1])
    with pytest.raises(SuitError, match="text does not match"):
        parse_envelope(cbor2.dumps(cbor2.CBORTag(107, body)), [DRAFT_KEY])  # type: ignore[list-item]


def test_mac_authentication_and_other_digest_algorithms_are_refused_by_name() -> None:
    env = dict(cbor2.loads(vector(0)).value)
    auth = cbor2.loads(env[2])
    mac = cbor2.dumps(cbor2.CBORTag(17, [b"\xa1\x01\x05", {}, None, b"x" * 32]))
    env[2] = cbor2.dumps([auth[0], mac])
    with pytest.raises(SuitError, match="COSE_Mac0 authentication is not supported"):
        parse_envelope(cbor2.dumps(cbor2.CBORTag(107, env)), [DRAFT_KEY])  # type: ignore[list-item]
    env[2] = cbor2.dumps([cbor2.dumps([-18, b"x" * 32]), auth[1]])
    with pytest.raises(SuitError, match="only SHA-256"):
        parse_envelope(cbor2.dumps(cbor2.CBORTag(107, env)), [DRAFT_KEY])  # type: ignore[list-item]


def test_push_manifest_round_trips_and_names_its_distributors() -> None:
    key = Ed25519PrivateKey.generate()
    image = bytes(range(256)) * 10
    raw = sign_envelope(image, sequence=7, block_size=100, key=key, distributors=[b"\x01"])
    m = parse_envelope(raw, [key.public_key()]).for_push()
    assert (m.sequence, m.image_size, m.block_size, m.nblocks) == (7, 2560, 100, 26)
    assert m.distributors == (b"\x01",)
    assert (
        m.tree_root
        == tree_levels([leaf_hash(image[i : i + 100]) for i in range(0, 2560, 100)])[-1][0]
    )
    with pytest.raises(SuitError, match="no trusted author"):
        parse_envelope(raw, [Ed25519PrivateKey.generate().public_key()])


def test_a_group_member_key_cannot_stand_in_for_the_author() -> None:
    author, member = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign_envelope(b"evil" * 100, sequence=99, block_size=64, key=member)
    with pytest.raises(SuitError, match="no trusted author"):
        parse_envelope(forged, [author.public_key()])


@settings(deadline=None, max_examples=60)
@given(st.integers(1, 300), st.data())
def test_every_block_has_a_proof_and_no_other_block_passes_it(
    count: int, data: st.DataObject
) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(count)]
    levels = tree_levels(leaves)
    root = levels[-1][0]
    index = data.draw(st.integers(0, count - 1))
    proof = tree_proof(levels, index)
    assert verify_proof(leaves[index], index, count, proof, root)
    other = data.draw(st.integers(0, count - 1))
    if other != index:
        assert not verify_proof(leaves[other], index, count, proof, root)
        assert not verify_proof(leaves[index], other, count, proof, root) or (
            tree_proof(levels, other) == proof and leaves[other] == leaves[index]
        )
    assert not verify_proof(leaf_hash(b"forged"), index, count, proof, root)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 200), st.data())
def test_proven_nodes_shortcut_gives_the_same_answers(count: int, data: st.DataObject) -> None:
    """With the cache of proven inner nodes every genuine block still passes and no other
    content passes, whatever the proof (a genuine block may pass with a damaged proof once
    the climb meets a proven node: its content is what is proven)."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(count)]
    levels = tree_levels(leaves)
    root = levels[-1][0]
    known: dict[int, bytes] = {}
    order = data.draw(st.permutations(range(count)))
    for index in order[: count // 2]:
        assert verify_proof(leaves[index], index, count, tree_proof(levels, index), root, known)
    for index in order:
        proof = tree_proof(levels, index)
        assert verify_proof(leaves[index], index, count, proof, root, known)
        forged = leaf_hash(b"forged")
        assert not verify_proof(forged, index, count, proof, root, known)
        if proof:
            bad = [bytes(32), *proof[1:]]
            assert not verify_proof(forged, index, count, bad, root, known)
        assert (
            not verify_proof(leaves[index], (index + 1) % count, count, proof, root, known)
            or leaves[index] == leaves[(index + 1) % count]
        )


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300), st.integers(0, 236), st.integers(0, 255))
def test_damaged_envelopes_only_raise_suit_error(junk: bytes, at: int, value: int) -> None:
    """Random bytes and one-byte damage of a real envelope: SuitError, nothing else."""
    for raw in (junk, vector(0)[:at] + bytes([value]) + vector(0)[at + 1 :]):
        try:
            parse_envelope(raw, [DRAFT_KEY])  # type: ignore[list-item]
        except SuitError:
            pass
