"""Labels, roles, AIF scope, problem details and the strict CBOR reader."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grouposcore.errors import GroupManagerRequestError, ManagerMessageError
from grouposcore.manager.params import (
    FORBIDDEN_ROLE_SETS,
    MEMBER_ROLE_SETS,
    ErrorId,
    KeyParam,
    Method,
    Param,
    Role,
    decode_problem_details,
    decode_scope,
    encode_problem_details,
    encode_scope,
    loads_strict,
    method_from,
    roles_from_tperm,
    tperm,
    validate_member_roles,
)


def test_labels_match_the_digest() -> None:
    assert (Param.SCOPE, Param.GET_CREDS, Param.CLIENT_CRED, Param.CNONCE) == (3, 4, 5, 6)
    assert (Param.GKTY, Param.KEY, Param.NUM, Param.ACE_GROUPCOMM_PROFILE) == (7, 8, 9, 10)
    assert (Param.EXP, Param.EXI, Param.CREDS, Param.PEER_ROLES) == (11, 12, 13, 14)
    assert (Param.PEER_IDENTIFIERS, Param.GROUP_POLICIES, Param.KDC_CRED) == (15, 16, 17)
    assert (Param.KDC_NONCE, Param.KDC_CRED_VERIFY, Param.REKEYING_SCHEME) == (18, 19, 20)
    assert (Param.GROUP_SENDER_ID, Param.CLIENT_CRED_VERIFY, Param.CONTROL_URI) == (21, 24, 26)
    assert (Param.KDCCHALLENGE, Param.ECDH_INFO, Param.KDC_DH_CREDS) == (30, 31, 32)
    assert (Param.SIGN_ENC_KEY, Param.STALE_NODE_IDS) == (33, 34)
    assert [int(k) for k in KeyParam] == list(range(14))
    assert [int(e) for e in ErrorId] == list(range(10))


def test_scope_example_from_the_digest() -> None:
    aif = encode_scope([("gp1", tperm([Role.REQUESTER, Role.RESPONDER]))])
    assert aif.hex() == "81826367703106"
    assert cbor2.dumps(aif).hex() == "4781826367703106"
    assert decode_scope(aif) == [("gp1", 6)]


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=20),
            st.sets(st.sampled_from(list(Role)), min_size=1).map(tperm),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_scope_round_trip(entries: list[tuple[str, int]]) -> None:
    assert decode_scope(encode_scope(entries)) == entries


@given(st.binary(max_size=64))
def test_scope_random_bytes_only_raise_our_error(data: bytes) -> None:
    try:
        entries = decode_scope(data)
    except ManagerMessageError:
        return
    assert entries and all(isinstance(n, str) and p > 0 for n, p in entries)


@pytest.mark.parametrize(
    "bad",
    [[], [["g"]], [["g", 0]], [["g", 1]], [["g", 64]], [["", 2]], [[1, 2]], [["g", True]]],
)
def test_malformed_scopes(bad: object) -> None:
    with pytest.raises(ManagerMessageError):
        decode_scope(cbor2.dumps(bad))


def test_roles_and_forbidden_combinations() -> None:
    assert tperm([Role.REQUESTER]) == 2 and tperm([Role.MONITOR]) == 8
    assert roles_from_tperm(6) == {Role.REQUESTER, Role.RESPONDER}
    assert validate_member_roles(6) == {Role.REQUESTER, Role.RESPONDER}
    assert validate_member_roles(8) == {Role.MONITOR}
    for combo in FORBIDDEN_ROLE_SETS:
        assert combo not in MEMBER_ROLE_SETS
        with pytest.raises(GroupManagerRequestError) as e:
            validate_member_roles(tperm(combo))
        assert e.value.error_id == ErrorId.ROLES_INCONSISTENT and e.value.code == 128
    with pytest.raises(GroupManagerRequestError):
        validate_member_roles(1 << Role.VERIFIER)


def test_methods() -> None:
    assert method_from("fetch") == Method.FETCH and method_from(4) == Method.DELETE
    assert method_from("PATCH") is None and method_from(True) is None
    assert method_from(200) is None


def test_problem_details_round_trip() -> None:
    body = encode_problem_details(ErrorId.INVALID_POP, "bad signature", "Invalid PoP")
    assert cbor2.loads(body) == {-1: "Invalid PoP", -2: "bad signature", 0: {0: 3}}
    assert decode_problem_details(body) == (3, "bad signature")
    assert decode_problem_details(encode_problem_details(None, "x")) == (None, "x")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1\x01",  # truncated
        b"\x01\x02",  # trailing bytes
        b"\xa2\x01\x01\x01\x02",  # duplicate key
        b"\xc1\x1a\x00\x00\x00\x00",  # tag (epoch datetime)
        b"\xd9\xd9\xf7\x01",  # self-described CBOR tag
        b"\xa1\x81\x01\x02",  # array as map key
        b"\xf7",  # undefined
        b"\xf9\x7c\x00",  # infinity
        b"\x81" * 40 + b"\x01",  # too deep
    ],
)
def test_strict_reader_rejects(data: bytes) -> None:
    with pytest.raises(ManagerMessageError):
        loads_strict(data)


@given(st.binary(max_size=80))
def test_strict_reader_random_bytes(data: bytes) -> None:
    try:
        loads_strict(data)
    except ManagerMessageError:
        pass


@given(st.binary(max_size=80))
def test_problem_details_random_bytes(data: bytes) -> None:
    try:
        decode_problem_details(data)
    except ManagerMessageError:
        pass


@given(st.integers(min_value=0, max_value=2**64 - 1), st.sampled_from([0, b"x", "t", [], {}]))
def test_every_tag_is_refused(tag: int, content: object) -> None:
    with pytest.raises(ManagerMessageError):
        loads_strict(cbor2.dumps(cbor2.CBORTag(tag, content)))
