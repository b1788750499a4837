"""Member side: GM PoP checking, parsing GM answers, and the member state file."""

from __future__ import annotations

import dataclasses
import stat
from dataclasses import replace
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.cose import EDDSA, Credential, private_key_to_bytes
from grouposcore.errors import GroupManagerRequestError, ManagerMessageError, MembershipTerminated
from grouposcore.manager import member as mb
from grouposcore.manager import member_state as ms
from grouposcore.manager.params import (
    CF_PROBLEM_DETAILS,
    Code,
    ErrorId,
    KeyParam,
    Param,
    Role,
    encode_problem_details,
)
from tests.manager.helpers import RS, Harness


@pytest.fixture
def joined(harness: Harness) -> tuple[Harness, bytes, mb.PendingJoin]:
    """A raw join exchange: the 2.01 payload and the pending request it answers."""
    harness.gm.create_group("g", backward_security=False)
    harness.join("peer", "g")
    harness.gm.allow("n", "g", RS)
    n = harness.node("n")
    ch = harness.challenge("n", "g")
    p = mb.build_join_request("g", RS, credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    r = harness.request("n", "POST", "ace-group/g", p.payload, 261)
    assert r.code == Code.CREATED
    return harness, r.payload, p


def _tamper(payload: bytes, label: int, value: object) -> bytes:
    body = cbor2.loads(payload)
    body[label] = value
    return cbor2.dumps(body)


def test_join_response_needs_a_valid_gm_pop(joined: tuple[Harness, bytes, mb.PendingJoin]) -> None:
    _, payload, pending = joined
    m = mb.parse_join_response(payload, pending)
    assert m.sender_id == b"\x01" and set(m.peers) == {b"\x00"}
    body = cbor2.loads(payload)
    sig = bytearray(body[Param.KDC_CRED_VERIFY])
    sig[0] ^= 0x80
    with pytest.raises(ManagerMessageError, match="proof of possession"):
        mb.parse_join_response(_tamper(payload, Param.KDC_CRED_VERIFY, bytes(sig)), pending)
    with pytest.raises(ManagerMessageError):
        mb.parse_join_response(payload, replace(pending, cnonce=b"\x00" * 16))
    # A GM credential swapped for another key fails, pinned or not.
    other = Credential.build_ccs(EDDSA.generate_private_key().public_key(), -8, "gm").raw
    with pytest.raises(ManagerMessageError):
        mb.parse_join_response(_tamper(payload, Param.KDC_CRED, other), pending)
    with pytest.raises(ManagerMessageError, match="expected"):
        mb.parse_join_response(payload, pending, gm_credential=other)


@pytest.mark.parametrize(
    ("label", "value"),
    [
        (Param.GKTY, 2),
        (Param.ACE_GROUPCOMM_PROFILE, 7),
        (Param.NUM, -1),
        (Param.NUM, "0"),
        (Param.KEY, b"\x00"),
        (Param.CREDS, [b"x"]),
        (Param.PEER_IDENTIFIERS, [b"\x00", b"\x00"]),
        (Param.EXP, True),
    ],
)
def test_malformed_join_responses(
    joined: tuple[Harness, bytes, mb.PendingJoin], label: int, value: object
) -> None:
    _, payload, pending = joined
    with pytest.raises(ManagerMessageError):
        mb.parse_join_response(_tamper(payload, label, value), pending)


@pytest.mark.parametrize(
    ("label", "value"),
    [
        (KeyParam.MS, b""),
        (KeyParam.SIGN_ALG, -999),
        (KeyParam.GP_ENC_ALG, -65531),  # A128CBC is forbidden by RFC 10021
        (KeyParam.GROUP_SENDER_ID, b"12345678"),
        (KeyParam.CONTEXT_ID, 5),
    ],
)
def test_malformed_key_objects(
    joined: tuple[Harness, bytes, mb.PendingJoin], label: int, value: object
) -> None:
    _, payload, pending = joined
    body = cbor2.loads(payload)
    body[Param.KEY][label] = value
    with pytest.raises(ManagerMessageError):
        mb.parse_join_response(cbor2.dumps(body), pending)


def test_monitor_response_with_a_sender_id_is_refused(
    joined: tuple[Harness, bytes, mb.PendingJoin],
) -> None:
    _, payload, pending = joined
    as_monitor = replace(pending, roles=1 << Role.MONITOR)
    with pytest.raises(ManagerMessageError):
        mb.parse_join_response(payload, as_monitor)
    body = cbor2.loads(payload)
    del body[Param.KEY][KeyParam.GROUP_SENDER_ID]
    with pytest.raises(ManagerMessageError):
        mb.parse_join_response(cbor2.dumps(body), pending)


def test_older_or_inconsistent_material_is_refused(
    joined: tuple[Harness, bytes, mb.PendingJoin],
) -> None:
    harness, payload, pending = joined
    m = mb.parse_join_response(payload, pending)
    newer = replace(m, num=m.num + 1)
    current = harness.request("n", "GET", "ace-group/g").payload
    with pytest.raises(ManagerMessageError, match="older"):
        mb.parse_material(current, newer)
    with pytest.raises(ManagerMessageError, match="Gid"):
        mb.parse_material(current, replace(m, gid=b"\x01\x02"))
    # A partial rekeying message keeps what it does not mention; no salt means empty salt.
    rekey = {
        Param.GKTY: 1,
        Param.KEY: {KeyParam.MS: b"k" * 16, KeyParam.CONTEXT_ID: b"\x09"},
        Param.NUM: m.num + 1,
        Param.STALE_NODE_IDS: [b"\x00"],
    }
    updated = mb.parse_material(cbor2.dumps(rekey), m)
    assert (updated.master_secret, updated.master_salt, updated.gid) == (b"k" * 16, b"", b"\x09")
    assert (updated.sign_alg, updated.sender_id, updated.peers) == (-8, m.sender_id, {})


def test_errors_and_notifications() -> None:
    err = mb.parse_error(
        Code.BAD_REQUEST,
        encode_problem_details(ErrorId.INVALID_POP, "nope"),
        CF_PROBLEM_DETAILS,
    )
    assert isinstance(err, GroupManagerRequestError)
    assert (err.code, err.error_id) == (Code.BAD_REQUEST, ErrorId.INVALID_POP)
    assert "nope" in str(err)
    odd = mb.parse_error(Code.FORBIDDEN, b"\xff", CF_PROBLEM_DETAILS)
    assert odd.error_id is None and odd.code == Code.FORBIDDEN


def test_notification_outcomes(joined: tuple[Harness, bytes, mb.PendingJoin]) -> None:
    _, payload, pending = joined
    m = mb.parse_join_response(payload, pending)
    with pytest.raises(MembershipTerminated):
        mb.handle_notification(m, Code.NOT_FOUND, b"", None)
    with pytest.raises(GroupManagerRequestError):
        mb.handle_notification(m, Code.SERVICE_UNAVAILABLE, b"", None)
    with pytest.raises(MembershipTerminated):
        mb.apply_stale(m, [m.sender_id])  # type: ignore[list-item]
    assert mb.apply_stale(m, None).peers == {}


def test_challenge_and_small_parsers() -> None:
    with pytest.raises(ManagerMessageError):
        mb.parse_challenge(cbor2.dumps({Param.KDCCHALLENGE: b"short"}))
    assert mb.parse_creds(cbor2.dumps(b"")) == {}
    assert mb.parse_stale_sids(b"") is None
    assert mb.parse_stale_sids(cbor2.dumps([b"\x01"])) == [b"\x01"]
    with pytest.raises(ManagerMessageError):
        mb.parse_stale_sids(cbor2.dumps([1]))
    with pytest.raises(ManagerMessageError):
        mb.parse_key_renewal(cbor2.dumps({}), None)  # type: ignore[arg-type]


def _state(joined: tuple[Harness, bytes, mb.PendingJoin]) -> ms.MemberState:
    harness, payload, pending = joined
    n = harness.nodes["n"]
    return ms.MemberState(
        node="n",
        material=mb.parse_join_response(payload, pending),
        private_key=private_key_to_bytes(n.private_key),
        credential=n.credential,
        scope=pending.scope,
        client_nonce=pending.cnonce,
        ssn_reserved=4096,
    )


def test_state_file_round_trip_and_mode(
    joined: tuple[Harness, bytes, mb.PendingJoin], tmp_path: Path
) -> None:
    state = _state(joined)
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "member.state"
    path.write_bytes(b"old")
    path.chmod(0o644)
    ms.save_state(path, state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ms.load_state(path) == state
    # no temporary file left behind; the lock file stays for the next writer
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "member.state",
        "member.state.lock",
    ]


def test_state_file_never_goes_back_to_older_keys(
    joined: tuple[Harness, bytes, mb.PendingJoin], tmp_path: Path
) -> None:
    """Two processes share a state file (``serve`` and a one-shot command of the same
    member): the one still on older keys must not overwrite what the other caught up to."""
    state = _state(joined)
    newer = dataclasses.replace(
        state, material=dataclasses.replace(state.material, num=state.material.num + 1)
    )
    path = tmp_path / "member.state"
    assert ms.save_state(path, newer)
    assert not ms.save_state(path, state)  # older: the file keeps the newer keys
    assert ms.load_state(path) == newer
    other = dataclasses.replace(state, node="someone-else")
    assert ms.save_state(path, other)  # not the same member's file: replaced as before
    path.write_bytes(b"garbage")
    path.chmod(0o600)
    assert ms.save_state(path, state) and ms.load_state(path) == state


@pytest.mark.parametrize("mode", [0o644, 0o660, 0o606])
def test_member_state_file_accessible_by_other_users_is_refused(
    joined: tuple[Harness, bytes, mb.PendingJoin], tmp_path: Path, mode: int
) -> None:
    """The state file holds the Master Secret and the private key: refused once other users
    can read or write it, with the chmod that fixes it."""
    path = tmp_path / "member.state"
    state = _state(joined)
    ms.save_state(path, state)
    path.chmod(mode)
    with pytest.raises(ManagerMessageError, match=rf"other users; run: chmod 600 {path}$"):
        ms.load_state(path)
    path.chmod(0o600)
    assert ms.load_state(path) == state


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_state_decoding_random_bytes(data: bytes) -> None:
    try:
        ms.decode_state(data)
    except ManagerMessageError:
        pass


def test_state_decoding_mutations(joined: tuple[Harness, bytes, mb.PendingJoin]) -> None:
    good = ms.encode_state(_state(joined))
    top = cbor2.loads(good)
    for key in list(top):
        broken = dict(top)
        broken[key] = ["wrong type"]
        with pytest.raises(ManagerMessageError):
            ms.decode_state(cbor2.dumps(broken))
    for key in list(top["material"]):
        broken = dict(top)
        broken["material"] = dict(top["material"], **{key: {"x": 1}})
        with pytest.raises(ManagerMessageError):
            ms.decode_state(cbor2.dumps(broken))


_ANSWER_PARSERS = [
    lambda d: mb.parse_challenge(d),
    lambda d: mb.parse_creds(d),
    lambda d: mb.parse_stale_sids(d),
]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.integers(min_value=0, max_value=2))
def test_answer_parsers_random_bytes(data: bytes, which: int) -> None:
    try:
        _ANSWER_PARSERS[which](data)
    except ManagerMessageError:
        pass


def test_a_5_03_with_max_age_tells_the_member_when_to_try_again() -> None:
    """The GM's 5.03 (a re-join budget spent) carries Max-Age: the member's error keeps it as
    ``retry_after`` and says it; other codes have no retry time."""
    from grouposcore.coap import Code
    from grouposcore.manager.params import CF_PROBLEM_DETAILS, encode_problem_details

    body = encode_problem_details(None, "re-joined too often")
    err = mb.parse_error(Code.SERVICE_UNAVAILABLE, body, CF_PROBLEM_DETAILS, 40)
    assert err.code == Code.SERVICE_UNAVAILABLE and err.retry_after == 40
    assert "re-joined too often" in str(err) and "try again in 40 s" in str(err)
    assert mb.parse_error(Code.FORBIDDEN, b"", None, 60).retry_after is None
    assert mb.parse_error(Code.SERVICE_UNAVAILABLE, b"", None).retry_after is None
