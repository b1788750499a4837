"""Push progress as types: the report states on the wire, the receiver's transfer life
cycle (checked over every pair) and the sender's view of each member."""

from __future__ import annotations

import itertools
import json

import cbor2
import pytest

from grouposcore.push.messages import (
    Data,
    Kind,
    ManifestMsg,
    Report,
    ReportState,
    Status,
    decode,
)
from grouposcore.push.protocol import (
    MemberState,
    PushReceiver,
    TransferInput,
    member_state,
    transfer_transition,
)
from grouposcore.push.runner import PushResult
from tests.push.test_protocol import TRUSTED, announce, blob, deliver, sender_for


def test_wire_format_is_the_plain_integers_it_always_was() -> None:
    """The enums must not change a byte: kinds and report states encode as plain uints."""
    assert Report(b"t", ReportState.NO_MANIFEST, 2, 0, b"\x03", None, 7).encode() == (
        cbor2.dumps([3, b"t", 3, 2, 0, b"\x03", None, 7])
    )
    assert Data(b"t", 1, b"x", (b"\x00" * 32,)).encode() == cbor2.dumps(
        [1, b"t", 1, b"x", [b"\x00" * 32]]
    )
    assert Status(b"t", 2, b"e").encode() == cbor2.dumps([2, b"t", 2, b"e"])
    assert ManifestMsg(b"t", b"e").encode() == cbor2.dumps([4, b"t", b"e"])
    assert [int(k) for k in Kind] == [1, 2, 3, 4]
    assert [int(s) for s in ReportState] == [0, 1, 2, 3]


def test_decoded_report_state_is_the_enum() -> None:
    report = decode(cbor2.dumps([3, b"t", 2, 0, 0, b"", None, None]))
    assert isinstance(report, Report) and report.state is ReportState.REFUSED
    assert ReportState.NO_MANIFEST.label == "no manifest"


RECV, DONE = ReportState.RECEIVING, ReportState.COMPLETE
TRANSFER = {
    (RECV, TransferInput.STORED): RECV,
    (RECV, TransferInput.MATCHED): DONE,
    (RECV, TransferInput.MISMATCHED): RECV,
}


@pytest.mark.parametrize(("state", "event"), list(itertools.product(ReportState, TransferInput)))
def test_transfer_transition_table_is_exhaustive(state: ReportState, event: TransferInput) -> None:
    if (state, event) in TRANSFER:
        assert transfer_transition(state, event) is TRANSFER[state, event]
    else:
        with pytest.raises(ValueError, match="illegal transfer transition"):
            transfer_transition(state, event)


@pytest.mark.parametrize(
    ("report", "installed", "expected"),
    [
        (ReportState.RECEIVING, False, MemberState.RECEIVING),
        (ReportState.RECEIVING, True, MemberState.RECEIVING),
        (ReportState.COMPLETE, False, MemberState.COMPLETE),
        (ReportState.COMPLETE, True, MemberState.COMPLETE),
        (ReportState.REFUSED, False, MemberState.REFUSED),
        (ReportState.REFUSED, True, MemberState.COMPLETE),
        (ReportState.NO_MANIFEST, False, MemberState.NO_MANIFEST),
        (ReportState.NO_MANIFEST, True, MemberState.NO_MANIFEST),
    ],
)
def test_member_state_follows_every_report(
    report: ReportState, installed: bool, expected: MemberState
) -> None:
    assert member_state(report, installed) is expected


def test_receiver_transfer_state_is_typed_through_its_life() -> None:
    s = sender_for(blob(300), members=[b"\x01"])
    r = PushReceiver(TRUSTED)
    announce(s, r)
    assert r.report(s.tid).state is ReportState.RECEIVING
    deliver(s, r, list(range(s.nblocks)))
    assert r.report(s.tid).state is ReportState.COMPLETE
    progress = s.on_report(b"\x01", r.report(s.tid).encode())
    assert progress.state is MemberState.COMPLETE and progress.complete


def test_push_result_json_keeps_the_state_strings() -> None:
    s = sender_for(blob(300), members=[b"\x01", b"\x02"])
    s.on_report(b"\x01", Report(s.tid, ReportState.NO_MANIFEST, 0).encode())
    out = PushResult(s, 1.0, 0, 0, 0).as_dict()
    text = json.dumps(out)
    assert [m["state"] for m in out["members"]] == ["no manifest", "unknown"]
    assert all(type(m["state"]) is str for m in out["members"])
    assert '"state": "no manifest"' in text
