"""Group OSCORE across the algorithm matrix: AEADs, A128CTR, opt-in A128CBC, EdDSA/ECDSA."""

from __future__ import annotations

from typing import Any

import pytest

from grouposcore.cose import Credential, signature_by_id
from grouposcore.errors import ProtectionError, UnknownAlgorithm
from grouposcore.oscore import GroupContext
from tests.oscore.helpers import GID, GM_CRED, SALT, SECRET, content, get


def pair(signature: int = -8, **algs: Any) -> tuple[GroupContext, GroupContext]:
    sig = signature_by_id(signature)
    keys = [sig.generate_private_key() for _ in range(2)]
    creds = [
        Credential.build_ccs(k.public_key(), signature, n) for k, n in zip(keys, "cs", strict=True)
    ]
    sids = [b"\x01", b"\x02"]
    return tuple(  # type: ignore[return-value]
        GroupContext(
            SECRET,
            GID,
            master_salt=SALT,
            sender_id=sids[i],
            private_key=keys[i],
            credential=creds[i],
            gm_cred=GM_CRED,
            signature=signature,
            peers={sids[1 - i]: creds[1 - i].raw},
            **algs,
        )
        for i in range(2)
    )


def roundtrip(client: GroupContext, server: GroupContext, *, pairwise: bool) -> None:
    target = server.sender_id if pairwise else None
    request, binding = client.protect_request(get(), pairwise_with=target)
    plain, sbinding = server.unprotect_request(request)
    assert plain.options.uri_path == ["light"]
    for fresh in (False, True):
        reply = server.protect_response(content(b"state=on"), sbinding, fresh_piv=fresh)
        assert client.unprotect_response(reply, binding)[0].payload == b"state=on"


@pytest.mark.parametrize("group_enc", [10, 11, 12, 30, 1, 2, 3, 24, -65534, -65533, -65532])
def test_group_encryption_algorithms(group_enc: int) -> None:
    client, server = pair(group_enc=group_enc)
    roundtrip(client, server, pairwise=False)
    roundtrip(client, server, pairwise=True)


@pytest.mark.parametrize("aead", [10, 13, 31, 1, 24])
def test_pairwise_aead_algorithms(aead: int) -> None:
    client, server = pair(aead=aead)
    roundtrip(client, server, pairwise=True)


@pytest.mark.parametrize("signature", [-8, -7, -35, -36])
def test_signature_algorithms(signature: int) -> None:
    client, server = pair(signature)
    roundtrip(client, server, pairwise=False)
    roundtrip(client, server, pairwise=True)  # ECDH over Ed25519->X25519 or the NIST curve


def test_ctr_group_mode_integrity_rests_on_the_signature() -> None:
    client, server = pair(group_enc=-65534)
    request, _ = client.protect_request(get())
    request.payload = bytes([request.payload[0] ^ 1]) + request.payload[1:]
    with pytest.raises(ProtectionError, match="signature"):
        server.unprotect_request(request)


def test_cbc_only_as_an_explicit_compatibility_option() -> None:
    with pytest.raises(UnknownAlgorithm):
        pair(group_enc=-65531)
    client, server = pair(group_enc=-65531, allow_cbc=True)
    roundtrip(client, server, pairwise=False)


def test_signature_only_and_pairwise_only_groups() -> None:
    client, server = pair(aead=None, key_agreement=None)
    roundtrip(client, server, pairwise=False)
    client, server = pair(group_enc=None, signature=-8)
    assert not client.group_mode and client.pairwise_mode
    roundtrip(client, server, pairwise=True)
