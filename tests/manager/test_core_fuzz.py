"""Hostile input to the Group Manager: only 4.xx answers, never an exception, never a change,
and every answer is one a client can read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.manager import member as mb
from grouposcore.manager.core import GmResponse, GroupManager
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    CF_PROBLEM_DETAILS,
    Code,
    Param,
    decode_problem_details,
    loads_strict,
)
from tests.manager.helpers import RS, Harness


@pytest.fixture(scope="module")
def fuzz_gm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    gm = GroupManager(tmp_path_factory.mktemp("fuzz") / "gm.db")
    h = Harness(gm)
    gm.create_group("g")
    h.join("member", "g")
    gm.allow("joiner", "g", RS)
    h.challenge("joiner", "g")  # a challenge is outstanding: PoP checks are reached
    yield h
    gm.close()


_CLIENT_ERRORS = {
    Code.BAD_REQUEST,
    Code.FORBIDDEN,
    Code.NOT_FOUND,
    Code.METHOD_NOT_ALLOWED,
    Code.UNSUPPORTED_CONTENT_FORMAT,
}


def _assert_readable(r: GmResponse) -> None:
    """2.05 carries one CBOR item; a 4.00 carries problem details or a fresh kdcchallenge
    (ace-groupcomm+cbor); other errors carry problem details or a short diagnostic."""
    if r.code == Code.CONTENT:
        loads_strict(r.payload, "2.05 payload")
    elif r.content_format == CF_PROBLEM_DETAILS:
        decode_problem_details(r.payload)
    elif r.content_format == CF_ACE_GROUPCOMM:
        assert r.code == Code.BAD_REQUEST
        assert len(mb.parse_challenge(r.payload).kdcchallenge) >= 8
    else:
        assert r.content_format is None and r.code != Code.BAD_REQUEST
        assert len(r.payload) <= 200


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_to_join_only_give_4_00(fuzz_gm: Harness, data: bytes) -> None:
    before = fuzz_gm.gm.snapshot()
    r = fuzz_gm.request("joiner", "POST", "ace-group/g", data, 261)
    assert r.code == Code.BAD_REQUEST
    _assert_readable(r)
    assert fuzz_gm.gm.snapshot() == before


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.binary(max_size=80)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.integers(-2, 40), inner, max_size=4)
    ),
    max_leaves=12,
)
_labels = st.sampled_from(
    [Param.SCOPE, Param.GET_CREDS, Param.CLIENT_CRED, Param.CNONCE, Param.CLIENT_CRED_VERIFY, 99]
)


def _scopes() -> st.SearchStrategy[Any]:
    entry = st.tuples(st.sampled_from(["g", "h", ""]), st.integers(-1, 40)).map(list)
    return st.lists(entry, max_size=2).map(cbor2.dumps) | st.binary(max_size=10)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_labels, _values, max_size=5), _scopes(), st.booleans())
def test_structured_garbage_to_join(
    fuzz_gm: Harness, body: dict[int, Any], scope: bytes, with_scope: bool
) -> None:
    if with_scope:
        body[Param.SCOPE] = scope
    before = fuzz_gm.gm.snapshot()
    r = fuzz_gm.request("joiner", "POST", "ace-group/g", cbor2.dumps(body), 261)
    assert r.code in (Code.BAD_REQUEST, Code.FORBIDDEN)
    _assert_readable(r)
    assert fuzz_gm.gm.snapshot() == before


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "FETCH", "iPATCH", 0, 7]),
    st.sampled_from(
        [
            "ace-group",
            "ace-group/g/creds",
            "ace-group/g/stale-sids",
            "ace-group/g/nodes/member/cred",
            "ace-group/g/kdc-cred",
            "ace-group/g/policies",
            "ace-group/x",
            "ace-group/g/nodes/x",
            "ace-group/g/nodes/member/zz",
            "ace-group/%00",
            "",
        ]
    ),
    st.binary(max_size=60),
    st.sampled_from([None, 261, 60, 0, 50]),
)
def test_random_requests_everywhere(
    fuzz_gm: Harness, method: Any, path: str, data: bytes, cf: int | None
) -> None:
    before = fuzz_gm.gm.snapshot()
    r = fuzz_gm.request("member", method, path, data, cf)
    assert r.code in _CLIENT_ERRORS or r.code == Code.CONTENT
    _assert_readable(r)
    if r.code != Code.CONTENT:
        assert fuzz_gm.gm.snapshot() == before
