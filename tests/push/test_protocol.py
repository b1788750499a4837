"""Firmware push without sockets: formats, receiver and sender state machines, and the
OSCORE layer rejecting tampered blocks before they could be stored."""

from __future__ import annotations

import hashlib
import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.coap import Code, Message, Type
from grouposcore.errors import GroupOscoreError, PushError
from grouposcore.oscore.config import provision_static_group
from grouposcore.push.protocol import (
    COMPLETE,
    CORRUPT,
    MAX_RANGES,
    RECEIVING,
    Data,
    PushReceiver,
    PushSender,
    Report,
    Status,
    decode,
    missing_ranges,
)
from tests.oscore.helpers import fresh_context


def blob(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def deliver(sender: PushSender, receiver: PushReceiver, indexes: list[int]) -> None:
    for i in indexes:
        msg = decode(sender.block(i))
        assert isinstance(msg, Data)
        receiver.on_data(msg)


def status_of(sender: PushSender, receiver: PushReceiver) -> Report:
    msg = decode(sender.status())
    assert isinstance(msg, Status)
    return receiver.on_status(msg)


# --- formats ------------------------------------------------------------------------------


def test_round_trips() -> None:
    d = Data(b"t" * 8, 3000, 1024, 2, b"x" * 952, hashlib.sha256(b"").digest())
    assert decode(d.encode()) == d
    s = Status(b"t", 10, 16, b"\x01" * 32, 3)
    assert decode(s.encode()) == s
    r = Report(b"tid", RECEIVING, 5, ((0, 2), (7, 3)), 5683, None)
    assert decode(r.encode()) == r
    assert r.missing() == [0, 1, 7, 8, 9]


@pytest.mark.parametrize(
    "body",
    [
        [],
        [9, b"t"],
        [1, b"t", 100, 16, 7, b"x" * 16],  # index beyond the file
        [1, b"t", 100, 16, 6, b"x" * 16],  # last block must be 4 bytes
        [1, b"t", 100, 8, 0, b"x" * 8],  # block size too small
        [1, b"", 100, 16, 0, b"x" * 16],  # empty tid
        [1, b"t", -1, 16, 0, b""],
        [1, b"t", 32, 16, 0, b"x" * 16, b"short digest"],
        [2, b"t", 32, 16, b"\x00" * 32],
        [3, b"t", 0, 1, [[0, 2]], None, None],  # runs exceed the count
        [3, b"t", 3, 0, [], None, None],  # no such state
        [3, b"t", 0, 9, [[0, 1, 2]], None, None],
        [3, b"t", 0, 9, [], 70000, None],
        [3, b"t", 0, 9, [[0, 1]] * (MAX_RANGES + 1), None, None],
        [1, b"t", True, 16, 0, b""],  # booleans are not integers here
    ],
)
def test_malformed_bodies_raise_push_error(body: list) -> None:
    with pytest.raises(PushError):
        decode(cbor2.dumps(body))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_only_raise_push_error(data: bytes) -> None:
    try:
        decode(data)
    except PushError:
        pass


@given(st.lists(st.booleans(), max_size=300))
def test_missing_ranges_match_bitmap(bits: list[bool]) -> None:
    have = bytearray(bits)
    total, runs = missing_ranges(have, limit=10_000)
    assert total == bits.count(False)
    assert [i for a, n in runs for i in range(a, a + n)] == [i for i, b in enumerate(bits) if not b]
    assert len(missing_ranges(have, limit=2)[1]) <= 2


# --- receiver and sender together ---------------------------------------------------------


def test_all_blocks_in_order_complete_the_file() -> None:
    data = blob(5000)
    s = PushSender(data, block_size=1024, members=[b"\x01"])
    r = PushReceiver()
    deliver(s, r, list(range(s.nblocks)))
    assert r.file(s.tid) == data
    report = status_of(s, r)
    assert report.state == COMPLETE and report.digest == hashlib.sha256(data).digest()
    assert s.on_report(b"\x01", report.encode()).complete
    assert s.done and s.completed() == 1


def test_gaps_are_reported_and_repaired_out_of_order() -> None:
    data = blob(40 * 64 + 5)
    s = PushSender(data, block_size=64, members=[b"\x01", b"\x02"])
    r = PushReceiver(port=40000)
    lost = {0, 3, 4, 5, 17, 40}
    deliver(s, r, [i for i in range(s.nblocks) if i not in lost])
    assert r.file(s.tid) is None
    assert r.progress(s.tid) == (s.nblocks - len(lost), s.nblocks)
    report = status_of(s, r)
    assert report.state == RECEIVING and report.missing_count == len(lost)
    assert report.ranges == ((0, 1), (3, 3), (17, 1), (40, 1)) and report.port == 40000
    p = s.on_report(b"\x01", report.encode())
    assert sorted(p.missing) == sorted(lost) and p.port == 40000
    assert not s.done and set(s.pending()) == {b"\x01", b"\x02"}
    deliver(s, r, sorted(lost, reverse=True))  # the repairs, any order
    final = r.report(s.tid)
    assert final.state == COMPLETE and r.file(s.tid) == data
    s.on_report(b"\x01", final.encode())
    assert not s.done  # member 2 has not reported
    s.on_report(b"\x02", final.encode())
    assert s.done


def test_digest_known_only_from_status_when_block_zero_was_lost() -> None:
    data = blob(300)
    s = PushSender(data, block_size=100)
    r = PushReceiver()
    deliver(s, r, [1, 2])
    report = r.report(s.tid)
    assert report.missing() == [0]
    deliver(s, r, [0])
    assert r.file(s.tid) == data
    # all blocks but no digest yet (block 0 carries it): the receiver asks for block 0 again
    r2 = PushReceiver()
    d0 = decode(s.block(0))
    assert isinstance(d0, Data)
    r2.on_data(Data(d0.tid, d0.size, d0.block_size, 0, d0.chunk, None))
    deliver(s, r2, [1, 2])
    assert r2.file(s.tid) is None and r2.report(s.tid).missing() == [0]
    assert status_of(s, r2).state == COMPLETE


def test_duplicates_are_counted_not_restored() -> None:
    s = PushSender(blob(100), block_size=32)
    r = PushReceiver()
    deliver(s, r, [0, 0, 1])
    assert r.duplicates == 1 and r.stored_blocks == 2


def test_inconsistent_blocks_change_nothing() -> None:
    s = PushSender(blob(100), block_size=32)
    r = PushReceiver(max_size=1000)
    deliver(s, r, [0])
    before = (r.stored_blocks, r.progress(s.tid), r.report(s.tid))
    with pytest.raises(PushError):  # same tid, other size
        r.on_data(Data(s.tid, 200, 32, 1, b"y" * 32))
    with pytest.raises(PushError):  # same tid, other digest
        r.on_data(Data(s.tid, 100, 32, 1, b"y" * 32, b"\x00" * 32))
    with pytest.raises(PushError):
        r.on_status(Status(s.tid, 100, 32, b"\x00" * 32, 1))
    with pytest.raises(PushError):  # too large a file for this receiver
        r.on_data(Data(b"other", 5000, 1000, 0, b"z" * 1000))
    assert (r.stored_blocks, r.progress(s.tid), r.report(s.tid)) == before
    assert r.transfers == [s.tid]


def test_wrong_content_under_a_right_looking_digest_is_corrupt_and_restarts() -> None:
    data = blob(64)
    s = PushSender(data, block_size=32)
    r = PushReceiver()
    r.on_data(Data(s.tid, 64, 32, 0, b"\x00" * 32, s.digest))
    deliver(s, r, [1])
    report = r.report(s.tid)
    assert report.state == CORRUPT and report.missing() == [0, 1]
    assert s.on_report(b"\x05", report.encode()).state == "corrupt"
    deliver(s, r, [0, 1])
    assert r.file(s.tid) == data


def test_sender_rejects_foreign_or_wrong_reports() -> None:
    s = PushSender(blob(100), block_size=32, members=[b"\x01"])
    with pytest.raises(PushError):
        s.on_report(b"\x01", Report(b"other", RECEIVING, 1, ((0, 1),)).encode())
    with pytest.raises(PushError):
        s.on_report(b"\x01", Report(s.tid, RECEIVING, 1, ((9, 1),)).encode())
    with pytest.raises(PushError):
        s.on_report(b"\x01", s.block(0))
    wrong = s.on_report(b"\x01", Report(s.tid, COMPLETE, 0, (), None, b"\x00" * 32).encode())
    assert wrong.state == "corrupt" and not s.done
    assert s.members[b"\x01"].reports == 1


def test_old_transfers_are_forgotten() -> None:
    r = PushReceiver(max_transfers=2)
    tids = []
    for n in range(3):
        s = PushSender(blob(50, n), block_size=16)
        deliver(s, r, [0])
        tids.append(s.tid)
    assert r.transfers == tids[1:]
    with pytest.raises(PushError):
        r.report(tids[0])


def test_empty_file() -> None:
    s = PushSender(b"", block_size=16, members=[b"\x01"])
    assert s.nblocks == 0
    r = PushReceiver()
    report = status_of(s, r)
    assert report.state == COMPLETE and r.file(s.tid) == b""


# --- the OSCORE layer under it ------------------------------------------------------------


def test_tampered_block_fails_verification_and_is_never_stored() -> None:
    docs = provision_static_group(["sender", "member"])
    sender_ctx = fresh_context(docs["sender"])
    member_ctx = fresh_context(docs["member"])
    s = PushSender(blob(3000), block_size=1024)
    r = PushReceiver()
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
        r.on_data(msg)
    assert r.progress(s.tid) == (2, 3)
    assert r.report(s.tid).missing() == [1]
    assert r.file(s.tid) is None


@settings(max_examples=60, deadline=None)
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
    s = PushSender(data, block_size=block_size, members=[b"\x07"])
    r = PushReceiver()
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


def test_largest_data_header_fits_the_overhead_the_runner_reserves() -> None:
    from grouposcore.push.runner import DATA_OVERHEAD

    chunk = 1024 - DATA_OVERHEAD
    size = (1 << 40) - 1  # as large as the format allows
    last_full = size // chunk - 1
    for index in (0, last_full):
        d = Data(b"\xff" * 16, size, chunk, index, b"x" * chunk, b"\x00" * 32)
        assert len(d.encode()) <= 1024
