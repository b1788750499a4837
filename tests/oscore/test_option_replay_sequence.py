"""OSCORE option codec, replay window and durable sequence numbers."""

from __future__ import annotations

import os
import stat
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grouposcore.errors import OscoreDecodeError, ReplayError, SequenceNumberExhausted
from grouposcore.oscore import (
    FileSequenceStore,
    MemorySequenceStore,
    OscoreOption,
    ReplayWindow,
    SenderSequence,
    decode_option,
    encode_option,
)
from grouposcore.oscore.option import piv_from_int
from tests.conftest import load_vectors

EXAMPLES = load_vectors("vectors-group-oscore.json")["draft_examples"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["id"])
def test_draft_compression_examples(example: dict) -> None:
    hdr = example["cose_unprotected"]
    group = example["flag_byte"] in ("39", "28")
    value = encode_option(
        bytes.fromhex(hdr["partial_iv"]) if "partial_iv" in hdr else None,
        bytes.fromhex(hdr["kid"]) if "kid" in hdr else None,
        bytes.fromhex(hdr["kid_context"]) if "kid_context" in hdr else None,
        group,
    )
    assert value.hex() == example["oscore_option"]
    decoded = decode_option(value)
    assert decoded.group == group
    assert (decoded.kid or b"").hex() == hdr.get("kid", "")


@pytest.mark.parametrize(
    "value, reason",
    [
        ("40", "reserved"),
        ("80", "reserved"),
        ("06" + "00" * 6, "reserved Partial IV length"),
        ("07" + "00" * 7, "reserved Partial IV length"),
        ("03" + "0000", "truncated"),
        ("10", "truncated"),
        ("1005" + "0000", "truncated"),
        ("0100ff", "trailing"),
        ("00", "all flags zero"),
    ],
)
def test_malformed_options_rejected(value: str, reason: str) -> None:
    with pytest.raises(OscoreDecodeError, match=reason):
        decode_option(bytes.fromhex(value))


@settings(deadline=None)
@given(
    piv=st.none() | st.binary(min_size=1, max_size=5),
    kid=st.none() | st.binary(max_size=7),
    kid_context=st.none() | st.binary(max_size=255),
    group=st.booleans(),
)
def test_option_round_trip(piv, kid, kid_context, group) -> None:
    value = encode_option(piv, kid, kid_context, group)
    assert decode_option(value) == OscoreOption(piv, kid, kid_context, group) or (
        value == b"" and decode_option(value) == OscoreOption()
    )


def _option_is_well_formed(data: bytes) -> bool:
    """An independent reading of RFC 8613 §6.1 / RFC 10021 §4.3 option syntax."""
    if not data:
        return True
    flags = data[0]
    if flags & 0xC0 or flags == 0 or flags & 0x07 > 5:
        return False
    pos = 1 + (flags & 0x07)
    if len(data) < pos:
        return False
    if flags & 0x10:
        if len(data) < pos + 1 or len(data) < pos + 1 + data[pos]:
            return False
        pos += 1 + data[pos]
    return bool(flags & 0x08) or pos == len(data)


@settings(deadline=None)
@given(
    st.binary(max_size=64)
    | st.builds(
        lambda flags, rest: bytes([flags]) + rest, st.integers(0, 255), st.binary(max_size=12)
    )
)
def test_random_option_bytes_decode_exactly_or_are_rejected(data: bytes) -> None:
    """Every well-formed value decodes and re-encodes to the same bytes; every malformed
    one raises OscoreDecodeError (and nothing else)."""
    if _option_is_well_formed(data):
        option = decode_option(data)
        assert option.encode() == data
        assert option.group == bool(data and data[0] & 0x20)
        assert (option.piv is None) == (not data or data[0] & 0x07 == 0)
    else:
        with pytest.raises(OscoreDecodeError):
            decode_option(data)


def test_piv_encoding() -> None:
    assert piv_from_int(0) == b"\x00"
    assert piv_from_int(20) == b"\x14"
    assert piv_from_int(256) == b"\x01\x00"
    assert piv_from_int((1 << 40) - 1) == b"\xff" * 5


def test_replay_window_basics() -> None:
    w = ReplayWindow(32)
    w.check(5)
    w.update(5)
    with pytest.raises(ReplayError):
        w.check(5)
    w.check(3)  # older but inside the window and unseen
    w.update(3)
    with pytest.raises(ReplayError):
        w.check(3)
    w.update(100)
    with pytest.raises(ReplayError):
        w.check(68)  # fell out of the window
    w.check(69)
    w.check(101)


def test_invalid_window_accepts_nothing_until_initialised() -> None:
    w = ReplayWindow(32, valid=False)
    with pytest.raises(ReplayError):
        w.check(0)
    w.initialize_from(40)
    with pytest.raises(ReplayError):
        w.check(40)
    with pytest.raises(ReplayError):
        w.check(20)
    w.check(41)


@settings(deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=200), max_size=60))
def test_replay_window_never_accepts_twice(seqs: list[int]) -> None:
    """The window agrees with a reference model: accept a number exactly when it was never
    accepted and is newer than the window's lower edge (top - size)."""
    w = ReplayWindow(32)
    accepted: set[int] = set()
    for s in seqs:
        top = max(accepted, default=-1)
        expected = s not in accepted and s > top - 32
        assert w.is_fresh(s) == expected
        if expected:
            w.check(s)
            w.update(s)
            accepted.add(s)
        else:
            with pytest.raises(ReplayError):
                w.check(s)


def test_a_jump_to_the_largest_partial_iv_keeps_the_window_small() -> None:
    """Memory does not grow with the jump (shifting before masking built a 2**40-bit int)."""
    w = ReplayWindow()
    w.check(3)
    w.update(3)
    tracemalloc.start()
    try:
        w.update(2**28)  # the old code built a 32 MiB integer here
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024
    top = 2**40 - 1
    w.check(top)
    w.update(top)
    assert w._bitmap.bit_length() <= w.size
    assert w.highest == top
    for old in (3, top):
        with pytest.raises(ReplayError):
            w.check(old)
    w.update(top - 1)
    with pytest.raises(ReplayError):
        w.check(top - 1)
    w.check(top - 2)
    w.update(5)  # far below the window: a no-op, never a 2**40-bit mask
    assert w._bitmap.bit_length() <= w.size


def test_sequence_exhaustion() -> None:
    seq = SenderSequence((1 << 40) - 2)
    assert seq.next() == (1 << 40) - 2
    assert seq.next() == (1 << 40) - 1
    with pytest.raises(SequenceNumberExhausted):
        seq.next()
    with pytest.raises(SequenceNumberExhausted):
        seq.next()  # stays exhausted: no wrap-around


def test_sequence_store_reserves_ahead_and_skips_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    store = FileSequenceStore(path)
    seq = SenderSequence(store=store, key="g1", step=10)
    used = [seq.next() for _ in range(15)]
    assert used == list(range(15))
    assert FileSequenceStore(path).load("g1") == 20  # two blocks reserved durably
    # crash: a new process resumes after the last reservation, never below it
    resumed = SenderSequence(store=FileSequenceStore(path), key="g1", step=10)
    assert resumed.next() == 20
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".seq-")]


def test_sequence_store_reserves_before_use() -> None:
    class Recording(MemorySequenceStore):
        def reserve(self, key: str, upto: int) -> None:
            assert seq.peek() < upto  # the number about to be used is already covered
            super().reserve(key, upto)

    store = Recording()
    seq = SenderSequence(store=store, key="k", step=4)
    for _ in range(9):
        n = seq.next()
        assert n < store.reservations["k"]


def test_failed_reservation_hands_out_nothing() -> None:
    class Broken(MemorySequenceStore):
        def reserve(self, key: str, upto: int) -> None:
            raise OSError("disk full")

    seq = SenderSequence(store=Broken(), key="k")
    with pytest.raises(OSError):
        seq.next()
    assert seq.peek() == 0


def test_corrupt_sequence_file_is_a_clear_error(tmp_path: Path) -> None:
    from grouposcore.errors import GroupOscoreError

    path = tmp_path / "seq.json"
    path.write_text("{not json")
    with pytest.raises(GroupOscoreError):
        FileSequenceStore(path)
