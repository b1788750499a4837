"""Firmware push message formats: the CBOR payloads, their kinds and the report states.

The protocol these carry (who sends what, when) is described in
:mod:`grouposcore.push.protocol`, which holds the state machines. Payloads are CBOR arrays
whose first element is the message :class:`Kind`:

* MANIFEST ``[4, tid, envelope]``
* DATA     ``[1, tid, index, chunk, [sibling, ...]]``
* STATUS   ``[2, tid, round, envelope]``
* REPORT   ``[3, tid, state, missing_count, first, bitmap, port, installed]``: ``state`` a
  :class:`ReportState`; ``bitmap`` marks missing blocks from ``first`` on (bit ``j`` of
  byte ``j // 8``, least significant first, for block ``first + j``), at most
  :data:`REPORT_BITS` of them, ``missing_count`` counts all; ``port`` is where the member
  wants repairs (null: where the report came from); ``installed`` the sequence number of
  the last manifest it installed (null: none).

``tid`` is a random 1..16 byte transfer id. :func:`decode` raises
:class:`~grouposcore.errors.PushError` for anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import cbor2

from grouposcore.errors import PushError

__all__ = [
    "COMPLETE",
    "DATA",
    "MANIFEST",
    "MAX_TID",
    "NO_MANIFEST",
    "NO_RESPONSE_ALL",
    "RECEIVING",
    "REFUSED",
    "REPORT",
    "REPORT_BITS",
    "STATUS",
    "Data",
    "Kind",
    "ManifestMsg",
    "Report",
    "ReportState",
    "Status",
    "byte_string",
    "decode",
    "uint",
]


class Kind(IntEnum):
    """The first element of every push payload."""

    DATA = 1
    STATUS = 2
    REPORT = 3
    MANIFEST = 4


class ReportState(IntEnum):
    """A member's state for one transfer, as a REPORT carries it (the values are on the wire)."""

    #: the manifest is accepted and blocks are missing
    RECEIVING = 0
    #: every block arrived and the image matched the manifest's digest
    COMPLETE = 1
    #: the manifest is not newer than what is installed, or not acceptable
    REFUSED = 2
    #: no manifest for this transfer yet
    NO_MANIFEST = 3

    @property
    def label(self) -> str:
        """The state in words, for people."""
        return self.name.lower().replace("_", " ")


DATA, STATUS, REPORT, MANIFEST = Kind.DATA, Kind.STATUS, Kind.REPORT, Kind.MANIFEST
RECEIVING, COMPLETE = ReportState.RECEIVING, ReportState.COMPLETE
REFUSED, NO_MANIFEST = ReportState.REFUSED, ReportState.NO_MANIFEST
#: missing blocks one report maps (a 768-byte bitmap keeps it inside one CoAP block)
REPORT_BITS = 6144
#: No-Response value suppressing 2.xx, 4.xx and 5.xx answers (RFC 7967)
NO_RESPONSE_ALL = 0x02 | 0x08 | 0x10
MAX_TID = 16
MAX_ENVELOPE = 4096
MAX_PROOF = 40


@dataclass(frozen=True, slots=True)
class ManifestMsg:
    """MANIFEST: the author-signed SUIT envelope of transfer ``tid``."""

    tid: bytes
    envelope: bytes

    def encode(self) -> bytes:
        return cbor2.dumps([int(MANIFEST), self.tid, self.envelope])


@dataclass(frozen=True, slots=True)
class Data:
    """DATA: block ``index`` of the image with its hash-tree proof (sibling hashes)."""

    tid: bytes
    index: int
    chunk: bytes
    proof: tuple[bytes, ...]

    def encode(self) -> bytes:
        return cbor2.dumps([int(DATA), self.tid, self.index, self.chunk, list(self.proof)])


@dataclass(frozen=True, slots=True)
class Status:
    """STATUS: asks every member for a REPORT; carries the envelope for late joiners."""

    tid: bytes
    round: int
    envelope: bytes

    def encode(self) -> bytes:
        return cbor2.dumps([int(STATUS), self.tid, self.round, self.envelope])


@dataclass(frozen=True, slots=True)
class Report:
    """REPORT: a member's state for transfer ``tid`` and the blocks it still misses."""

    tid: bytes
    state: ReportState
    missing_count: int
    first: int = 0
    bitmap: bytes = b""
    port: int | None = None
    installed: int | None = None

    def encode(self) -> bytes:
        return cbor2.dumps(
            [
                int(REPORT),
                self.tid,
                int(self.state),
                self.missing_count,
                self.first,
                self.bitmap,
                self.port,
                self.installed,
            ]
        )

    def missing(self) -> list[int]:
        """The block indexes the bitmap marks (possibly fewer than ``missing_count``)."""
        first, bits = self.first, self.bitmap
        return [
            first + 8 * i + j
            for i, byte in enumerate(bits)
            if byte
            for j in range(8)
            if byte >> j & 1
        ]


def uint(value: Any, what: str, hi: int = 1 << 40) -> int:
    """``value`` if it is an int in 0..``hi`` (not a bool), else PushError naming ``what``."""
    if type(value) is not int or not 0 <= value <= hi:
        raise PushError(f"{what} must be an integer in 0..{hi}")
    return value


def byte_string(value: Any, what: str, lo: int, hi: int) -> bytes:
    """``value`` if it is a byte string of ``lo``..``hi`` bytes, else PushError."""
    if type(value) is not bytes or not lo <= len(value) <= hi:
        raise PushError(f"{what} must be a byte string of {lo}..{hi} bytes")
    return value


def decode(payload: bytes) -> Data | Status | Report | ManifestMsg:
    """Parse any push payload; PushError for anything but exactly one well-formed message."""
    try:
        body = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types, none may leak
        raise PushError(f"push payload is not CBOR: {exc}") from None
    if type(body) is not list or not body or type(body[0]) is not int:
        raise PushError("push payload must be an array starting with the kind")
    kind, n = body[0], len(body)
    if kind == DATA and n == 5:
        proof = body[4]
        if (
            type(proof) is not list
            or len(proof) > MAX_PROOF
            or (proof and (set(map(type, proof)) != {bytes} or set(map(len, proof)) != {32}))
        ):
            raise PushError("a proof is an array of 32-byte hashes")
        return Data(
            byte_string(body[1], "tid", 1, MAX_TID),
            uint(body[2], "index"),
            byte_string(body[3], "chunk", 0, 65536),
            tuple(proof),
        )
    if kind == STATUS and n == 4:
        return Status(
            byte_string(body[1], "tid", 1, MAX_TID),
            uint(body[2], "round"),
            byte_string(body[3], "envelope", 1, MAX_ENVELOPE),
        )
    if kind == MANIFEST and n == 3:
        return ManifestMsg(
            byte_string(body[1], "tid", 1, MAX_TID),
            byte_string(body[2], "envelope", 1, MAX_ENVELOPE),
        )
    if kind == REPORT and n == 8:
        installed = None if body[7] is None else uint(body[7], "installed", 1 << 63)
        port = None if body[6] is None else uint(body[6], "port", 65535)
        return Report(
            byte_string(body[1], "tid", 1, MAX_TID),
            ReportState(uint(body[2], "state", 3)),
            uint(body[3], "missing_count"),
            uint(body[4], "first"),
            byte_string(body[5], "bitmap", 0, REPORT_BITS // 8),
            port,
            installed,
        )
    raise PushError(f"unknown push message kind {kind} with {n} elements")
