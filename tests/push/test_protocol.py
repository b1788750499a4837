"""Firmware push without sockets: formats, the manifest-driven receiver and the sender, and
the OSCORE layer under them. Each numbered finding of issue 11 that the state machines
decide has a test here: rollback after a restart (1), a push from a non-author or
non-distributor member (2), a block forged by another member rejected on arrival and asked
for again (3), resume after a restart (6)."""

from __future__ import annotations

import random
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import Code, Message, Type
from grouposcore.errors import GroupOscoreError, PushError, SuitError
from grouposcore.oscore.config import provision_static_group
from grouposcore.push.protocol import (
    COMPLETE,
    NO_MANIFEST,
    RECEIVING,
    REFUSED,
    REPORT_BITS,
    Data,
    ManifestMsg,
    PushReceiver,
    PushSender,
    Report,
    Status,
    decode,
)
from grouposcore.push.runner import block_size_for
from grouposcore.push.suit import Manifest, parse_envelope, sign_envelope
from tests.oscore.helpers import fresh_context

AUTHOR = Ed25519PrivateKey.generate()
TRUSTED = [AUTHOR.public_key()]
DIST = b"\x0a"  # the distributor's Sender ID


def blob(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def manifest(
    data: bytes,
    block_size: int = 64,
    sequence: int = 1,
    key: Ed25519PrivateKey = AUTHOR,
    distributors: list[bytes] | None = None,
) -> Manifest:
    raw = sign_envelope(
        data,
        sequence=sequence,
        block_size=block_size,
        key=key,
        distributors=[DIST] if distributors is None else distributors,
    )
    return parse_envelope(raw, [key.public_key()])


def sender_for(
    data: bytes, block_size: int = 64, sequence: int = 1, members: list[bytes] = (), **kw: object
) -> PushSender:  # type: ignore[assignment]
    return PushSender(data, manifest(data, block_size, sequence, **kw), members=members)


def deliver(s: PushSender, r: PushReceiver, indexes: list[int], sid: bytes = DIST) -> None:
    for i in indexes:
        msg = decode(s.block(i))
        assert isinstance(msg, Data)
        r.on_data(msg, sid)


def status_of(s: PushSender, r: PushReceiver, sid: bytes = DIST) -> Report:
    msg = decode(s.status())
    assert isinstance(msg, Status)
    return r.on_status(msg, sid)


def announce(s: PushSender, r: PushReceiver, sid: bytes = DIST) -> None:
    msg = decode(s.manifest_message())
    assert isinstance(msg, ManifestMsg)
    r.on_manifest(msg.tid, msg.envelope, sid)


# --- formats ------------------------------------------------------------------------------


def test_round_trips() -> None:
    d = Data(b"t" * 8, 2, b"x" * 952, (b"\x01" * 32,))
    assert decode(d.encode()) == d
    s = Status(b"t", 3, b"envelope")
    assert decode(s.encode()) == s
    r = Report(b"tid", RECEIVING, 5, 10, bytes([0b101, 0, 0b1000_0000]), 5683, 4)
    assert decode(r.encode()) == r
    assert r.missing() == [10, 12, 33]


@pytest.mark.parametrize("body", [
    [], [9, b"t"], [1, b"", 0, b"x", []], [1, b"t", -1, b"x", []],
    [1, b"t", 0, b"x", [b"short"]], [1, b"t", True, b"x", []],
    [2, b"t", 1], [4, b"t", 7], [3, b"t", 9, 0, 0, b"", None, None],
    [3, b"t", 0, 0, 0, b"x" * (REPORT_BITS // 8 + 1), None, None],
    [3, b"t", 0, 0, 0, b"", 70000, None],
])  # fmt: skip
def test_malformed_bodies_raise_push_error(body: list) -> None:
    with pytest.raises(PushError):
        decode(cbor2.dumps(body))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_push_error(data: bytes) -> None:
    try:
        decode(data)
    except PushError:
        pass


def test_largest_data_payload_fits_one_coap_block() -> None:
    for size in (100, 5000, 1 << 20, 16 << 20, 64 << 20):
        bs = block_size_for(size)
        nblocks = -(-size // bs)
        depth = (nblocks - 1).bit_length()
        d = Data(b"\xff" * 16, nblocks - 1, b"x" * bs, (b"\x00" * 32,) * depth)
        assert len(d.encode()) <= 1024, size


# --- receiver and sender together ---------------------------------------------------------


def test_all_blocks_in_any_order_complete_the_image() -> None:
    data = blob(5000)
    s = sender_for(data, members=[b"\x01"])
    r = PushReceiver(TRUSTED)
    announce(s, r)
    deliver(s, r, list(reversed(range(s.nblocks))))
    assert r.file(s.tid) == data and r.installed == 1
    report = status_of(s, r)
    assert report.state == COMPLETE
    assert s.on_report(b"\x01", report.encode()).complete and s.done


def test_blocks_before_the_manifest_are_refused_and_reported_missing() -> None:
    s = sender_for(blob(300))
    r = PushReceiver(TRUSTED)
    with pytest.raises(PushError, match="manifest has not arrived"):
        deliver(s, r, [0])
    assert r.report(s.tid).state == NO_MANIFEST
    report = status_of(s, r)  # STATUS carries the manifest
    assert report.state == RECEIVING and report.missing() == list(range(s.nblocks))


def test_report_bitmap_starts_at_the_first_missing_block_and_is_bounded() -> None:
    data = blob(64 * (REPORT_BITS + 500))
    s = sender_for(data, members=[b"\x01"])
    r = PushReceiver(TRUSTED)
    announce(s, r)
    deliver(s, r, [i for i in range(300) if i != 7])
    report = r.report(s.tid)
    assert report.first == 7 and report.missing_count == s.nblocks - 299
    missing = report.missing()
    assert missing[0] == 7 and missing[1] == 300 and len(missing) == REPORT_BITS - 292
    assert len(report.encode()) < 800


def test_block_forged_by_another_member_is_dropped_on_arrival_and_asked_for_again() -> None:
    """Finding 3: a block that OSCORE accepts (another member's valid key) but whose content
    is not the author's fails the hash-tree proof at once; only that block is missing."""
    data = blob(640)
    s = sender_for(data, members=[b"\x01"])
    r = PushReceiver(TRUSTED)
    announce(s, r)
    good = decode(s.block(3))
    assert isinstance(good, Data)
    forged = Data(good.tid, 3, bytes(64), good.proof)
    with pytest.raises(PushError, match="does not match the manifest"):
        r.on_data(forged, DIST)
    deliver(s, r, [i for i in range(s.nblocks) if i != 3])
    assert r.report(s.tid).missing() == [3] and r.bad_blocks == 1
    s.on_report(b"\x01", r.report(s.tid).encode())
    assert s.members[b"\x01"].missing == [3]
    deliver(s, r, [3])
    assert r.file(s.tid) == data


def test_push_from_a_member_that_is_not_a_distributor_is_refused() -> None:
    """Finding 2: the group key proves membership only; the manifest names who pushes."""
    s = sender_for(blob(300))
    r = PushReceiver(TRUSTED)
    with pytest.raises(SuitError, match="not a distributor"):
        announce(s, r, sid=b"\x0b")
    assert r.report(s.tid).state == REFUSED
    announce(s, r)  # the distributor is fine
    with pytest.raises(SuitError, match="not a distributor"):
        deliver(s, r, [0], sid=b"\x0b")
    assert r.progress(s.tid) == (0, s.nblocks)


def test_firmware_signed_by_a_member_instead_of_the_author_is_refused() -> None:
    """Finding 2: a member's own signing key is not a trusted author key."""
    member = Ed25519PrivateKey.generate()
    data = blob(300)
    s = PushSender(data, manifest(data, key=member, distributors=[DIST]))
    r = PushReceiver(TRUSTED)
    with pytest.raises(SuitError, match="no trusted author"):
        announce(s, r)
    report = status_of(s, r)
    assert report.state == REFUSED and r.transfers == []
    assert s.on_report(b"\x01", report.encode()).state == "refused"


def test_rollback_replay_after_restart_is_refused(tmp_path: Path) -> None:
    """Finding 1: the installed sequence number is persisted; a recorded older push replayed
    to a restarted member is refused."""
    old, new = blob(300, 1), blob(300, 2)
    s_old, s_new = sender_for(old, sequence=3), sender_for(new, sequence=4)
    r = PushReceiver(TRUSTED, store=tmp_path)
    announce(s_old, r)
    deliver(s_old, r, list(range(s_old.nblocks)))
    announce(s_new, r)
    deliver(s_new, r, list(range(s_new.nblocks)))
    assert r.installed == 4
    r.close()
    restarted = PushReceiver(TRUSTED, store=tmp_path)
    assert restarted.installed == 4
    with pytest.raises(SuitError, match="not newer than the installed 4"):
        announce(s_old, restarted)
    with pytest.raises(PushError):
        deliver(s_old, restarted, [0])
    assert restarted.file(s_old.tid) is None
    report = status_of(s_old, restarted)
    assert report.state == REFUSED and report.installed == 4
    # the same version again is not newer either, but the sender counts it as installed
    s_same = sender_for(new, sequence=4, members=[b"\x01"])
    report = status_of(s_same, restarted)
    assert report.state == REFUSED
    assert s_same.on_report(b"\x01", report.encode()).complete


def test_restart_resumes_with_the_blocks_already_stored(tmp_path: Path) -> None:
    """Finding 6: blocks are kept on disk; a restarted member asks only for the rest."""
    data = blob(64 * 40)
    s = sender_for(data)
    r = PushReceiver(TRUSTED, store=tmp_path)
    announce(s, r)
    deliver(s, r, list(range(25)))
    r.close()  # (a kill -9 leaves the same files: each block is written before its log entry)
    again = PushReceiver(TRUSTED, store=tmp_path)
    assert again.progress(s.tid) == (25, 40)
    assert again.report(s.tid).missing() == list(range(25, 40))
    deliver(s, again, list(range(25, 40)))
    assert again.file(s.tid) == data and again.installed == 1
    assert not list(tmp_path.glob("*.transfer"))  # the partial image is gone once complete


def test_store_with_a_refused_manifest_is_dropped_on_restart(tmp_path: Path) -> None:
    data = blob(300)
    s = sender_for(data)
    r = PushReceiver(TRUSTED, store=tmp_path)
    announce(s, r)
    r.close()
    stranger = PushReceiver([Ed25519PrivateKey.generate().public_key()], store=tmp_path)
    assert stranger.transfers == [] and not list(tmp_path.glob("*.transfer"))


def test_duplicates_are_counted_not_restored() -> None:
    s = sender_for(blob(100), block_size=32)
    r = PushReceiver(TRUSTED)
    announce(s, r)
    deliver(s, r, [0, 0, 1])
    assert r.duplicates == 1 and r.stored_blocks == 2


def test_rejected_messages_change_nothing() -> None:
    s = sender_for(blob(100), block_size=32)
    r = PushReceiver(TRUSTED, max_size=1000)
    announce(s, r)
    deliver(s, r, [0])
    before = (r.stored_blocks, r.progress(s.tid), r.report(s.tid))
    good = decode(s.block(1))
    assert isinstance(good, Data)
    for bad in (
        Data(s.tid, 9, good.chunk, good.proof),
        Data(s.tid, 1, good.chunk[:-1], good.proof),
        Data(s.tid, 1, bytes(len(good.chunk)), good.proof[:-1]),
    ):
        with pytest.raises(PushError):
            r.on_data(bad, DIST)
    other = sender_for(blob(100, 9), block_size=32)
    with pytest.raises(PushError):  # another manifest under a known transfer id
        r.on_manifest(s.tid, other.manifest.envelope, DIST)
    big = sender_for(blob(2000), block_size=32)
    with pytest.raises(SuitError, match="exceeds the limit"):
        announce(big, r)
    assert (r.stored_blocks, r.progress(s.tid), r.report(s.tid)) == before
    assert r.transfers == [s.tid]


def test_sender_refuses_a_manifest_for_another_file() -> None:
    m = manifest(blob(300, 1))
    with pytest.raises(PushError, match="does not describe this file"):
        PushSender(blob(300, 2), m)


def test_sender_rejects_foreign_or_wrong_reports() -> None:
    s = sender_for(blob(100), block_size=32, members=[b"\x01"])
    with pytest.raises(PushError):
        s.on_report(b"\x01", Report(b"other", RECEIVING, 1, 0, b"\x01").encode())
    with pytest.raises(PushError):
        s.on_report(b"\x01", Report(s.tid, RECEIVING, 1, 30, b"\xff\xff").encode())
    with pytest.raises(PushError):
        s.on_report(b"\x01", s.block(0))
    assert s.members[b"\x01"].reports == 0 and not s.done


def test_old_transfers_are_forgotten() -> None:
    r = PushReceiver(TRUSTED, max_transfers=2)
    tids = []
    for n in range(3):
        s = sender_for(blob(50, n), block_size=16, sequence=n + 1)
        announce(s, r)
        tids.append(s.tid)
    assert r.transfers == tids[1:]


def test_empty_file() -> None:
    s = sender_for(b"", block_size=16, members=[b"\x01"])
    assert s.nblocks == 0
    r = PushReceiver(TRUSTED)
    report = status_of(s, r)
    assert report.state == COMPLETE and r.file(s.tid) == b""


# --- the OSCORE layer under it ------------------------------------------------------------


def test_tampered_block_fails_verification_and_is_never_stored() -> None:
    docs = provision_static_group(["sender", "member"])
    sender_ctx = fresh_context(docs["sender"])
    member_ctx = fresh_context(docs["member"])
    data = blob(3000)
    s = PushSender(data, manifest(data, 900, distributors=[sender_ctx.sender_id]))
    r = PushReceiver(TRUSTED)
    announce(s, r, sid=sender_ctx.sender_id)
    wires = []
    for i in range(s.nblocks):
        msg = Message(Code.POST, Type.NON, mid=i, token=b"t", payload=s.block(i))
        msg.options.uri_path = ["fw"]
        protected, _ = sender_ctx.protect_request(msg)
        wires.append(bytearray(protected.encode()))
    wires[1][-40] ^= 0x01  # one bit inside block 1's ciphertext/signature
    for raw in wires:
        try:
            plain, binding = member_ctx.unprotect_request(Message.decode(bytes(raw)))
        except GroupOscoreError:
            continue
        assert binding.group_mode
        msg = decode(plain.payload)
        assert isinstance(msg, Data)
        r.on_data(msg, binding.request_kid)
    assert r.progress(s.tid) == (3, 4)
    assert r.report(s.tid).missing() == [1]


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(0, 2000),
    block_size=st.sampled_from([16, 100, 512]),
    seed=st.integers(0, 2**32 - 1),
    order=st.randoms(use_true_random=False),
)
def test_any_delivery_order_with_duplicates_ends_with_the_exact_file(
    size: int, block_size: int, seed: int, order: random.Random
) -> None:
    data = blob(size, seed)
    s = sender_for(data, block_size=block_size, members=[b"\x07"])
    r = PushReceiver(TRUSTED)
    announce(s, r)
    indexes = list(range(s.nblocks)) * 2
    order.shuffle(indexes)
    kept = indexes[: max(1, len(indexes) * 2 // 3)] if indexes else []
    deliver(s, r, kept)
    for _ in range(5):  # report and repair until complete
        report = status_of(s, r)
        s.on_report(b"\x07", report.encode())
        if report.state == COMPLETE:
            break
        deliver(s, r, s.members[b"\x07"].missing)
    assert r.file(s.tid) == data and s.done
    assert r.stored_blocks == s.nblocks


def test_pacer_follows_what_got_through_between_floor_and_ceiling() -> None:
    from grouposcore.push.runner import _Pacer

    p = _Pacer(1000.0, 8)
    p.settle_at(0.5, 100.0)
    assert p.rate == pytest.approx(450.0) and p.pause == pytest.approx(8 / 450.0)
    for _ in range(10):
        p.settle_at(0.9, 100.0)
    assert p.rate == 100.0
    for _ in range(30):
        p.speed_up(1000.0)
    assert p.rate == 1000.0


def test_summary_names_members_and_progress_has_an_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Finding 8: the end summary names every member (from the security file), says what
    each is missing; JSON progress carries the transfer id and an estimate of time left."""
    import json

    from grouposcore.cli.push_cmd import _names, _progress_event, _summary
    from grouposcore.oscore.config import write_secret_file
    from grouposcore.push.runner import PushResult

    docs = provision_static_group(["switch", "kitchen", "hall"])
    path = write_secret_file(tmp_path / "switch.json", docs["switch"])
    names = _names(str(path))
    assert sorted(names.values()) == ["hall", "kitchen"]
    by_name = {v: k for k, v in names.items()}
    data = blob(640)
    s = sender_for(data, members=list(names))
    r = PushReceiver(TRUSTED)
    announce(s, r)
    deliver(s, r, list(range(s.nblocks)))
    s.on_report(by_name["kitchen"], status_of(s, r).encode())
    s.on_report(by_name["hall"], Report(s.tid, RECEIVING, 4, 0, b"\x0f").encode())
    event = _progress_event("status", s, s.nblocks, 0, 2.0)
    assert event["tid"] == s.tid.hex() and event["complete"] == 1
    assert event["eta"] is not None and event["eta"] > 0
    json.dumps(event)
    _summary(PushResult(s, 2.0, s.nblocks, 0, 1, names=names), "fw.bin")
    err = capsys.readouterr().err
    assert f"transfer {s.tid.hex()}" in err and "fw.bin" in err
    assert "kitchen (" in err and "complete" in err
    assert "hall (" in err and "incomplete (4 blocks missing)" in err


def test_version_counts_as_installed_only_after_the_install_hook(tmp_path: Path) -> None:
    data = blob(300)
    s = sender_for(data, sequence=9)
    calls: list[tuple[bytes, int, int | None]] = []
    r = PushReceiver(TRUSTED, store=tmp_path)
    r.install = lambda tid, image, m: calls.append((image, m.sequence, r.installed))
    announce(s, r)
    deliver(s, r, list(range(s.nblocks)))
    assert calls == [(data, 9, None)] and r.installed == 9


def test_the_same_manifest_under_a_second_transfer_id_is_refused() -> None:
    """Otherwise any member could evict real transfers with copies of a valid manifest."""
    data = blob(300)
    s = sender_for(data)
    r = PushReceiver(TRUSTED, max_transfers=2)
    announce(s, r)
    with pytest.raises(SuitError, match="another transfer id"):
        r.on_manifest(b"copy", s.manifest.envelope, DIST)
    assert r.transfers == [s.tid]


def test_pacer_slows_down_for_overload_not_for_the_paths_own_loss() -> None:
    """Finding 5: 40 % random loss at every rate is not a reason to send slower; loss that
    grows above what the path always loses is."""
    from grouposcore.push.runner import _Pacer

    p = _Pacer(1000.0, 8)
    for _ in range(5):
        p.observe(0.40, 100.0, 4000.0)
    assert p.rate > 1000.0
    fast = p.rate
    p.observe(0.70, 100.0, 4000.0)  # 30 points above the path's own loss: overload
    assert p.rate < fast * 0.8
