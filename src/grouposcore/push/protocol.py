"""Firmware push to a Group OSCORE group, sans-I/O: message formats and both state machines.

The file travels once over multicast; what a member misses it gets over unicast.

1. **DATA**, multicast, group mode: ``POST /fw`` as NON with an inner No-Response (26,
   nothing back). One request per block. Every member verifies the signature of each block
   on arrival, so a tampered block is dropped by OSCORE and never reaches the store.
2. **STATUS**, multicast, group mode: ``POST /fw`` after the last block (and again in later
   rounds for members not heard from). Each member answers with a **REPORT**.
3. **Repair**, unicast, pairwise mode: a DATA request to one member for each block its
   report listed, NON with No-Response like the multicast blocks. The next round's STATUS
   shows what arrived; a member is done once its REPORT says complete. (Not CON: a
   retransmission repeats its Partial IV, which the member's replay window has usually
   left behind by then, because the sender used other Partial IVs for other members.)

Reports are sender-driven: a round's STATUS has a deadline (the sender's status timeout,
later rounds twice the slowest answer seen), and whoever has not reported by then is asked
again in the next round. Members never report unasked, so a group's reports come spread by
their leisure instead of all at once. A member keeps the state of its ``max_transfers``
most recent transfers only.

The block index is in the (encrypted) payload rather than a Block1 option: RFC 7959
Block1 is a sequential, atomic exchange the server reassembles in order, whereas here blocks
arrive with gaps and are stored out of order.

Payloads are CBOR arrays whose first element is the message kind:

* DATA   ``[1, tid, size, block_size, index, chunk]``; the block with index 0 appends
  ``digest`` (the file's SHA-256) as a 7th element, any other block may.
* STATUS ``[2, tid, size, block_size, digest, round]``: the whole manifest, so a member
  that lost block 0 learns the digest here.
* REPORT ``[3, tid, state, missing_count, ranges, port, digest]``: ``state`` 0 receiving,
  1 complete (all blocks and the SHA-256 matched), 2 corrupt (all blocks present, digest
  wrong: the member dropped them and starts again); ``ranges`` lists up to
  :data:`MAX_RANGES` ``[first, count]`` runs of missing blocks, ``missing_count`` counts all
  of them; ``port`` is the UDP port a member wants repairs on (null: where the report came
  from; members sharing the multicast port have a second, unicast endpoint);
  ``digest`` the SHA-256 the member computed (null until complete).

``tid`` is a random 1..16 byte transfer id; ``size`` the file size in bytes; all blocks but
the last carry exactly ``block_size`` bytes. Anything malformed, or contradicting what the
receiver already knows about ``tid``, raises :class:`~grouposcore.errors.PushError` and
changes nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from grouposcore.errors import PushError

__all__ = [
    "COMPLETE",
    "CORRUPT",
    "DATA",
    "MAX_RANGES",
    "NO_RESPONSE_ALL",
    "RECEIVING",
    "REPORT",
    "STATUS",
    "Accepted",
    "Data",
    "MemberProgress",
    "PushReceiver",
    "PushSender",
    "Report",
    "Status",
    "decode",
    "missing_ranges",
]

DATA, STATUS, REPORT = 1, 2, 3
RECEIVING, COMPLETE, CORRUPT = 0, 1, 2
STATE_NAMES = {RECEIVING: "receiving", COMPLETE: "complete", CORRUPT: "corrupt"}
#: missing-block runs one report lists (keeps a report well inside one datagram)
MAX_RANGES = 64
#: No-Response value suppressing 2.xx, 4.xx and 5.xx answers (RFC 7967)
NO_RESPONSE_ALL = 0x02 | 0x08 | 0x10
MIN_BLOCK, MAX_BLOCK = 16, 16384
MAX_TID = 16
DIGEST_LEN = 32


@dataclass(frozen=True, slots=True)
class Data:
    tid: bytes
    size: int
    block_size: int
    index: int
    chunk: bytes
    digest: bytes | None = None

    def encode(self) -> bytes:
        body: list[Any] = [DATA, self.tid, self.size, self.block_size, self.index, self.chunk]
        if self.digest is not None:
            body.append(self.digest)
        return cbor2.dumps(body)


@dataclass(frozen=True, slots=True)
class Status:
    tid: bytes
    size: int
    block_size: int
    digest: bytes
    round: int

    def encode(self) -> bytes:
        return cbor2.dumps(
            [STATUS, self.tid, self.size, self.block_size, self.digest, self.round]
        )


@dataclass(frozen=True, slots=True)
class Report:
    tid: bytes
    state: int
    missing_count: int
    ranges: tuple[tuple[int, int], ...]
    port: int | None = None
    digest: bytes | None = None

    def encode(self) -> bytes:
        return cbor2.dumps([
            REPORT, self.tid, self.state, self.missing_count,
            [list(r) for r in self.ranges], self.port, self.digest,
        ])  # fmt: skip

    def missing(self) -> list[int]:
        """The block indexes the listed runs cover (possibly fewer than ``missing_count``)."""
        return [i for first, count in self.ranges for i in range(first, first + count)]


def _uint(value: Any, what: str, hi: int = 1 << 40) -> int:
    if type(value) is not int or not 0 <= value <= hi:
        raise PushError(f"{what} must be an integer in 0..{hi}")
    return value


def _bytes(value: Any, what: str, lo: int, hi: int) -> bytes:
    if type(value) is not bytes or not lo <= len(value) <= hi:
        raise PushError(f"{what} must be a byte string of {lo}..{hi} bytes")
    return value


def _manifest(size: Any, block_size: Any) -> tuple[int, int]:
    bs = _uint(block_size, "block_size", MAX_BLOCK)
    if bs < MIN_BLOCK:
        raise PushError(f"block_size must be at least {MIN_BLOCK}")
    return _uint(size, "size"), bs


def decode(payload: bytes) -> Data | Status | Report:
    """Parse any push payload; PushError for anything but exactly one well-formed message."""
    try:
        body = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types, none may leak
        raise PushError(f"push payload is not CBOR: {exc}") from None
    if type(body) is not list or not body or type(body[0]) is not int:
        raise PushError("push payload must be an array starting with the kind")
    kind = body[0]
    if kind == DATA and len(body) in (6, 7):
        size, bs = _manifest(body[2], body[3])
        index = _uint(body[4], "index")
        chunk = _bytes(body[5], "chunk", 0, MAX_BLOCK)
        digest = _bytes(body[6], "digest", DIGEST_LEN, DIGEST_LEN) if len(body) == 7 else None
        nblocks = -(-size // bs)
        if index >= nblocks:
            raise PushError(f"block {index} is beyond the {nblocks} blocks of the file")
        if len(chunk) != min(bs, size - index * bs):
            raise PushError(f"block {index} has {len(chunk)} bytes, not the expected size")
        return Data(_bytes(body[1], "tid", 1, MAX_TID), size, bs, index, chunk, digest)
    if kind == STATUS and len(body) == 6:
        size, bs = _manifest(body[2], body[3])
        return Status(
            _bytes(body[1], "tid", 1, MAX_TID), size, bs,
            _bytes(body[4], "digest", DIGEST_LEN, DIGEST_LEN), _uint(body[5], "round"),
        )  # fmt: skip
    if kind == REPORT and len(body) == 7:
        state = _uint(body[2], "state", 2)
        count = _uint(body[3], "missing_count")
        if type(body[4]) is not list or len(body[4]) > MAX_RANGES:
            raise PushError(f"ranges must be an array of at most {MAX_RANGES} runs")
        ranges = []
        for run in body[4]:
            if type(run) is not list or len(run) != 2:
                raise PushError("a missing run is [first, count]")
            ranges.append((_uint(run[0], "first"), _uint(run[1], "count")))
        if sum(c for _, c in ranges) > count:
            raise PushError("runs list more blocks than missing_count")
        port = None if body[5] is None else _uint(body[5], "port", 65535)
        digest = None if body[6] is None else _bytes(body[6], "digest", DIGEST_LEN, DIGEST_LEN)
        return Report(_bytes(body[1], "tid", 1, MAX_TID), state, count, tuple(ranges), port,
                      digest)
    raise PushError(f"unknown push message kind {kind} with {len(body)} elements")


def missing_ranges(have: bytearray, limit: int = MAX_RANGES) -> tuple[int, list[tuple[int, int]]]:
    """(number of zero entries, first ``limit`` runs of zeros as ``(first, count)``)."""
    runs: list[tuple[int, int]] = []
    total = 0
    start = -1
    for i, b in enumerate(have):
        if not b:
            total += 1
            if start < 0:
                start = i
        elif start >= 0:
            if len(runs) < limit:
                runs.append((start, i - start))
            start = -1
    if start >= 0 and len(runs) < limit:
        runs.append((start, len(have) - start))
    return total, runs


# --- receiver ---------------------------------------------------------------------------


class _Transfer:
    """One file being received: storage, bitmap, manifest."""

    __slots__ = ("block_size", "buffer", "digest", "have", "nblocks", "received", "result",
                 "size", "state", "tid")

    def __init__(self, tid: bytes, size: int, block_size: int) -> None:
        self.tid, self.size, self.block_size = tid, size, block_size
        self.nblocks = -(-size // block_size)
        self.buffer = bytearray(size)
        self.have = bytearray(self.nblocks)
        self.received = 0
        self.digest: bytes | None = None
        self.state = RECEIVING
        self.result: bytes | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """What one DATA did: ``stored`` False for a duplicate; ``completed`` when the file just
    became complete and its SHA-256 matched."""

    tid: bytes
    index: int
    stored: bool
    completed: bool
    state: int


class PushReceiver:
    """A member's side: stores verified blocks of up to ``max_transfers`` files.

    Feed it only payloads that passed OSCORE verification (the edge's job); it checks the
    push format and consistency. A file larger than ``max_size`` is refused.
    """

    def __init__(self, *, max_size: int = 64 << 20, max_transfers: int = 2,
                 port: int | None = None) -> None:
        self.max_size = max_size
        self.max_transfers = max_transfers
        #: the port put into reports (None: answer where the request came from)
        self.port = port
        self._transfers: OrderedDict[bytes, _Transfer] = OrderedDict()
        self.stored_blocks = 0
        self.duplicates = 0

    def _transfer(self, tid: bytes, size: int, block_size: int) -> _Transfer:
        t = self._transfers.get(tid)
        if t is not None:
            if (t.size, t.block_size) != (size, block_size):
                raise PushError("block does not match the transfer's size or block size")
            self._transfers.move_to_end(tid)
            return t
        if size > self.max_size:
            raise PushError(f"file of {size} bytes exceeds the limit of {self.max_size}")
        t = _Transfer(tid, size, block_size)
        self._transfers[tid] = t
        while len(self._transfers) > self.max_transfers:
            self._transfers.popitem(last=False)
        return t

    def _check_digest(self, t: _Transfer, digest: bytes | None) -> None:
        if digest is not None and t.digest is not None and digest != t.digest:
            raise PushError("digest differs from the one announced for this transfer")

    def on_data(self, data: Data) -> Accepted:
        """Store one verified block."""
        known = self._transfers.get(data.tid)
        if known is not None:
            if (known.size, known.block_size) != (data.size, data.block_size):
                raise PushError("block does not match the transfer's size or block size")
            self._check_digest(known, data.digest)
        t = self._transfer(data.tid, data.size, data.block_size)
        if data.digest is not None:
            t.digest = data.digest
        if t.state == COMPLETE or t.have[data.index]:
            self.duplicates += 1
            return Accepted(t.tid, data.index, False, False, t.state)
        start = data.index * t.block_size
        t.buffer[start : start + len(data.chunk)] = data.chunk
        t.have[data.index] = 1
        t.received += 1
        self.stored_blocks += 1
        return Accepted(t.tid, data.index, True, self._settle(t), t.state)

    def on_status(self, status: Status) -> Report:
        """Learn the manifest, then report."""
        known = self._transfers.get(status.tid)
        if known is not None:
            if (known.size, known.block_size) != (status.size, status.block_size):
                raise PushError("status does not match the transfer's size or block size")
            self._check_digest(known, status.digest)
        t = self._transfer(status.tid, status.size, status.block_size)
        t.digest = status.digest
        self._settle(t)
        return self.report(status.tid)

    def _settle(self, t: _Transfer) -> bool:
        """Check a fully received file against its digest; True when it just completed."""
        if t.state == COMPLETE or t.received < t.nblocks or t.digest is None:
            return False
        if hashlib.sha256(t.buffer).digest() == t.digest:
            t.state = COMPLETE
            t.result = bytes(t.buffer)
            return True
        # Every block verified under OSCORE, yet the whole is wrong: start over.
        t.state = CORRUPT
        t.have = bytearray(t.nblocks)
        t.received = 0
        return False

    def report(self, tid: bytes) -> Report:
        t = self._transfers.get(tid)
        if t is None:
            raise PushError("no transfer with this id")
        if t.state == COMPLETE:
            return Report(tid, COMPLETE, 0, (), self.port, hashlib.sha256(t.buffer).digest())
        count, runs = missing_ranges(t.have)
        if count == 0 and t.digest is None:
            runs, count = [(0, 1)], 1  # block 0 carries the digest: ask for it again
        return Report(tid, t.state if t.state == CORRUPT else RECEIVING, count,
                      tuple(runs), self.port, None)

    def file(self, tid: bytes) -> bytes | None:
        """The complete, digest-checked file, or None."""
        t = self._transfers.get(tid)
        return t.result if t is not None else None

    def progress(self, tid: bytes) -> tuple[int, int]:
        """(blocks stored, blocks in the file)."""
        t = self._transfers.get(tid)
        return (0, 0) if t is None else (t.received, t.nblocks)

    @property
    def transfers(self) -> list[bytes]:
        return list(self._transfers)


# --- sender -----------------------------------------------------------------------------


@dataclass
class MemberProgress:
    """What the sender knows about one member (by Sender ID)."""

    sender_id: bytes
    state: str = "unknown"
    missing: list[int] = field(default_factory=list)
    missing_count: int | None = None
    port: int | None = None
    digest: bytes | None = None
    repairs: int = 0
    reports: int = 0

    @property
    def complete(self) -> bool:
        return self.state == "complete"


class PushSender:
    """The sending side: splits ``data`` into blocks and tracks every member's reports.

    ``members`` are the Sender IDs expected to end with the file; reports from others are
    recorded too but do not hold up :attr:`done`.
    """

    def __init__(self, data: bytes, *, block_size: int = 1024, tid: bytes | None = None,
                 members: Iterable[bytes] = ()) -> None:
        _manifest(len(data), block_size)
        self.data = bytes(data)
        self.block_size = block_size
        self.tid = tid if tid is not None else os.urandom(8)
        _bytes(self.tid, "tid", 1, MAX_TID)
        self.digest = hashlib.sha256(self.data).digest()
        self.nblocks = -(-len(self.data) // block_size)
        self.round = 0
        self.members: dict[bytes, MemberProgress] = {
            sid: MemberProgress(sid) for sid in members
        }
        self.expected = set(self.members)

    def block(self, index: int) -> bytes:
        """DATA payload of block ``index`` (block 0 also carries the digest)."""
        if not 0 <= index < self.nblocks:
            raise PushError(f"no block {index}")
        start = index * self.block_size
        chunk = self.data[start : start + self.block_size]
        return Data(self.tid, len(self.data), self.block_size, index, chunk,
                    self.digest if index == 0 else None).encode()

    def status(self) -> bytes:
        """STATUS payload of the next round."""
        self.round += 1
        return Status(self.tid, len(self.data), self.block_size, self.digest,
                      self.round).encode()

    def on_report(self, sender_id: bytes, payload: bytes) -> MemberProgress:
        """Record a member's REPORT (from a status answer or a repair answer)."""
        msg = decode(payload)
        if not isinstance(msg, Report):
            raise PushError("expected a REPORT")
        if msg.tid != self.tid:
            raise PushError("report for another transfer")
        if any(first + count > self.nblocks for first, count in msg.ranges):
            raise PushError("report lists blocks beyond the file")
        p = self.members.get(sender_id)
        if p is None:
            p = self.members[sender_id] = MemberProgress(sender_id)
        p.reports += 1
        p.port = msg.port
        p.missing_count = msg.missing_count
        if msg.state == COMPLETE:
            if msg.digest != self.digest:
                p.state, p.digest, p.missing = "corrupt", msg.digest, []
                return p
            p.state, p.digest, p.missing = "complete", msg.digest, []
        else:
            p.state = STATE_NAMES[msg.state]
            p.missing = msg.missing()
        return p

    @property
    def done(self) -> bool:
        """Every expected member reported the file complete with the right digest."""
        return all(self.members[sid].complete for sid in self.expected)

    def pending(self) -> list[bytes]:
        """Expected members not complete yet."""
        return [sid for sid in self.expected if not self.members[sid].complete]

    def completed(self) -> int:
        return sum(1 for sid in self.expected if self.members[sid].complete)
