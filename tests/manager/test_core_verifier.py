"""Signature verifiers (profile §8): /verif-data, FETCH /kdc-cred, and what they may not do."""

from __future__ import annotations

import cbor2
import pytest

from grouposcore.errors import ManagerMessageError
from grouposcore.manager import member as mb
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    KeyParam,
    Param,
    Role,
    decode_problem_details,
)
from grouposcore.oscore.group import GroupContext
from tests.manager.helpers import RS, Harness


@pytest.fixture
def group(harness: Harness) -> Harness:
    harness.gm.create_group("g", backward_security=False)
    harness.join("a", "g")
    harness.gm.allow("v", "g", [Role.VERIFIER])
    harness.gm.allow("d", "g", RS)  # allowed, not joined, not a verifier
    return harness


def _error(r: object) -> tuple[int, int | None]:
    assert r.content_format == CF_PROBLEM_DETAILS  # type: ignore[attr-defined]
    return r.code, decode_problem_details(r.payload)[0]  # type: ignore[attr-defined]


def test_verif_data_gives_verifiers_the_sekey_but_no_decryption_keys(group: Harness) -> None:
    r = group.request("v", "GET", "ace-group/g/verif-data")
    assert r.code == Code.CONTENT and r.content_format == CF_ACE_GROUPCOMM
    body = cbor2.loads(r.payload)
    assert set(body) == {Param.GKTY, Param.KEY, Param.NUM, Param.EXP, Param.EXI,
                         Param.ACE_GROUPCOMM_PROFILE, Param.SIGN_ENC_KEY}  # fmt: skip
    key = body[Param.KEY]
    assert set(key) == {KeyParam.HKDF, KeyParam.CONTEXT_ID, KeyParam.CRED_FMT,
                        KeyParam.GP_ENC_ALG, KeyParam.SIGN_ALG, KeyParam.SIGN_PARAMS,
                        KeyParam.ALG, KeyParam.ECDH_ALG}  # fmt: skip
    g = group.gm.group("g")
    assert g is not None and key[KeyParam.CONTEXT_ID] == g.gid and body[Param.NUM] == g.num
    member_view = GroupContext(g.master_secret, g.gid, sender_id=None,
                               master_salt=g.master_salt)  # fmt: skip
    assert body[Param.SIGN_ENC_KEY] == member_view.signature_encryption_key
    assert g.master_secret not in r.payload


def test_verif_data_refused_to_members_and_to_non_verifiers(group: Harness) -> None:
    for node in ("a", "d"):
        r = group.request(node, "GET", "ace-group/g/verif-data")
        assert _error(r) == (Code.FORBIDDEN, ErrorId.VERIFIERS_ONLY)
    assert group.request("stranger", "GET", "ace-group/g/verif-data").code == Code.FORBIDDEN


def test_kdc_cred_fetch_proves_the_gm_key_over_the_verifiers_nonce(group: Harness) -> None:
    payload, cnonce = mb.build_kdc_cred_fetch()
    r = group.request("v", "FETCH", "ace-group/g/kdc-cred", payload, CF_ACE_GROUPCOMM)
    assert r.code == Code.CONTENT
    assert mb.parse_kdc_cred(r.payload, cnonce, -8) == group.gm.gm_credential("g")
    with pytest.raises(ManagerMessageError):
        mb.parse_kdc_cred(r.payload, b"another nonce", -8)
    # A member may use it too; GET stays the members' (it signs over their join nonce).
    assert group.request("a", "FETCH", "ace-group/g/kdc-cred", payload, 261).code == 69
    assert _error(group.request("v", "GET", "ace-group/g/kdc-cred")) == (
        Code.FORBIDDEN, ErrorId.ONLY_MEMBERS)  # fmt: skip
    r = group.request("d", "FETCH", "ace-group/g/kdc-cred", payload, CF_ACE_GROUPCOMM)
    assert _error(r) == (Code.FORBIDDEN, ErrorId.ONLY_MEMBERS)
    bad = cbor2.dumps({Param.CNONCE: b"short"})
    assert group.request("v", "FETCH", "ace-group/g/kdc-cred", bad, 261).code == 128


def test_verifier_reaches_only_its_resources(group: Harness) -> None:
    for method, path in (
        ("GET", "ace-group/g"),
        ("GET", "ace-group/g/num"),
        ("GET", "ace-group/g/policies"),
        ("GET", "ace-group/g/active"),
    ):
        assert group.request("v", method, path).code == Code.FORBIDDEN  # fmt: skip
    r = group.request("v", "FETCH", "ace-group/g/stale-sids", mb.build_stale_sids_request(0))
    assert r.code == Code.FORBIDDEN
    assert group.request("v", "GET", "ace-group/g/creds").code == Code.CONTENT
