"""Firmware push to a Group OSCORE group, sans-I/O: message formats and both state machines.

What is pushed is described by a SUIT envelope the firmware author signed
(:mod:`grouposcore.push.suit`): sequence number, image size and digest, block size, the root
of a hash tree over the blocks and the group members allowed to distribute it. The group key
only proves membership; the author key proves the firmware.

1. **MANIFEST**, multicast, group mode, No-Response: the envelope. Sent first and again
   every :data:`MANIFEST_EVERY` blocks, and carried by every STATUS, so a member that lost it
   learns it later. A member verifies it against its trusted author keys and refuses it
   unless its sequence number is newer than the last one it installed (anti-rollback that
   survives a restart when the member has a store directory).
2. **DATA**, multicast (or unicast pairwise for repairs), No-Response: one block with its
   hash-tree proof. A member checks the proof against the manifest's root the moment the
   block arrives: a block protected by another member's key but not the author's content is
   dropped there, stays missing, and is asked for again.
3. **STATUS**, multicast: each member answers with a **REPORT**.

Only the manifest's distributors (Sender IDs; any member when the manifest names none) may
send DATA and STATUS.

Payloads are CBOR arrays whose first element is the message kind:

* MANIFEST ``[4, tid, envelope]``
* DATA     ``[1, tid, index, chunk, [sibling, ...]]``
* STATUS   ``[2, tid, round, envelope]``
* REPORT   ``[3, tid, state, missing_count, first, bitmap, port, installed]``: ``state`` 0
  receiving, 1 complete (every block and the image digest matched), 2 refused (the
  manifest is not newer than what is installed, or not acceptable; nothing will change
  that), 3 no manifest yet; ``bitmap`` marks missing blocks from ``first`` on (bit ``j``
  of byte ``j // 8``, least significant first, for block ``first + j``), at most
  :data:`REPORT_BITS` of them, ``missing_count`` counts all; ``port`` is where the member
  wants repairs (null: where the report came from); ``installed`` the sequence number of
  the last manifest it installed (null: none).

``tid`` is a random 1..16 byte transfer id. Anything malformed, or contradicting what the
receiver knows, raises :class:`~grouposcore.errors.PushError` and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from grouposcore.cose.signing import PublicKey
from grouposcore.errors import PushError, SuitError
from grouposcore.push.suit import (
    Manifest,
    leaf_hash,
    parse_envelope,
    tree_levels,
    tree_proof,
    verify_proof,
)

__all__ = [
    "COMPLETE",
    "DATA",
    "MANIFEST",
    "NO_MANIFEST",
    "NO_RESPONSE_ALL",
    "RECEIVING",
    "REFUSED",
    "REPORT",
    "REPORT_BITS",
    "STATUS",
    "Accepted",
    "Data",
    "ManifestMsg",
    "MemberProgress",
    "PushReceiver",
    "PushSender",
    "Report",
    "Status",
    "decode",
]

DATA, STATUS, REPORT, MANIFEST = 1, 2, 3, 4
RECEIVING, COMPLETE, REFUSED, NO_MANIFEST = 0, 1, 2, 3
STATE_NAMES = {RECEIVING: "receiving", COMPLETE: "complete", REFUSED: "refused",
               NO_MANIFEST: "no manifest"}
#: missing blocks one report maps (a 768-byte bitmap keeps it inside one CoAP block)
REPORT_BITS = 6144
#: the manifest goes out again after this many blocks
MANIFEST_EVERY = 64
#: No-Response value suppressing 2.xx, 4.xx and 5.xx answers (RFC 7967)
NO_RESPONSE_ALL = 0x02 | 0x08 | 0x10
MAX_TID = 16
MAX_ENVELOPE = 4096
MAX_PROOF = 40


@dataclass(frozen=True, slots=True)
class ManifestMsg:
    tid: bytes
    envelope: bytes

    def encode(self) -> bytes:
        return cbor2.dumps([MANIFEST, self.tid, self.envelope])


@dataclass(frozen=True, slots=True)
class Data:
    tid: bytes
    index: int
    chunk: bytes
    proof: tuple[bytes, ...]

    def encode(self) -> bytes:
        return cbor2.dumps([DATA, self.tid, self.index, self.chunk, list(self.proof)])


@dataclass(frozen=True, slots=True)
class Status:
    tid: bytes
    round: int
    envelope: bytes

    def encode(self) -> bytes:
        return cbor2.dumps([STATUS, self.tid, self.round, self.envelope])


@dataclass(frozen=True, slots=True)
class Report:
    tid: bytes
    state: int
    missing_count: int
    first: int = 0
    bitmap: bytes = b""
    port: int | None = None
    installed: int | None = None

    def encode(self) -> bytes:
        return cbor2.dumps([REPORT, self.tid, self.state, self.missing_count, self.first,
                            self.bitmap, self.port, self.installed])

    def missing(self) -> list[int]:
        """The block indexes the bitmap marks (possibly fewer than ``missing_count``)."""
        first, bits = self.first, self.bitmap
        return [first + 8 * i + j for i, byte in enumerate(bits) if byte
                for j in range(8) if byte >> j & 1]


def _uint(value: Any, what: str, hi: int = 1 << 40) -> int:
    if type(value) is not int or not 0 <= value <= hi:
        raise PushError(f"{what} must be an integer in 0..{hi}")
    return value


def _bytes(value: Any, what: str, lo: int, hi: int) -> bytes:
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
        if type(proof) is not list or len(proof) > MAX_PROOF or (
            proof and (set(map(type, proof)) != {bytes} or set(map(len, proof)) != {32})
        ):
            raise PushError("a proof is an array of 32-byte hashes")
        return Data(_bytes(body[1], "tid", 1, MAX_TID), _uint(body[2], "index"),
                    _bytes(body[3], "chunk", 0, 65536), tuple(proof))
    if kind == STATUS and n == 4:
        return Status(_bytes(body[1], "tid", 1, MAX_TID), _uint(body[2], "round"),
                      _bytes(body[3], "envelope", 1, MAX_ENVELOPE))
    if kind == MANIFEST and n == 3:
        return ManifestMsg(_bytes(body[1], "tid", 1, MAX_TID),
                           _bytes(body[2], "envelope", 1, MAX_ENVELOPE))
    if kind == REPORT and n == 8:
        installed = None if body[7] is None else _uint(body[7], "installed", 1 << 63)
        port = None if body[6] is None else _uint(body[6], "port", 65535)
        return Report(_bytes(body[1], "tid", 1, MAX_TID), _uint(body[2], "state", 3),
                      _uint(body[3], "missing_count"), _uint(body[4], "first"),
                      _bytes(body[5], "bitmap", 0, REPORT_BITS // 8), port, installed)
    raise PushError(f"unknown push message kind {kind} with {n} elements")


# --- receiver ---------------------------------------------------------------------------


class _Transfer:
    """One image being received: the manifest, what arrived, and where it is kept (memory,
    or a directory so that a restarted member resumes)."""

    def __init__(self, tid: bytes, manifest: Manifest, folder: Path | None) -> None:
        assert manifest.image_size is not None and manifest.block_size is not None
        self.tid, self.manifest = tid, manifest
        self.size, self.block_size = manifest.image_size, manifest.block_size
        self.nblocks = manifest.nblocks
        self.have = bytearray(self.nblocks)
        self.received = 0
        #: inner hash-tree nodes already proven (see ``verify_proof``)
        self.known: dict[int, bytes] = {}
        self.state = RECEIVING
        self.result: bytes | None = None
        self.folder = folder
        self._fd = self._log = -1
        self.buffer = bytearray(0 if folder else self.size)
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "manifest.suit").write_bytes(manifest.envelope)
            self._fd = os.open(folder / "image.part", os.O_RDWR | os.O_CREAT, 0o600)
            os.ftruncate(self._fd, self.size)
            log = folder / "blocks.log"
            if log.exists():  # resume: the blocks stored before a restart
                raw = log.read_bytes()
                for i in range(0, len(raw) - len(raw) % 4, 4):
                    index = int.from_bytes(raw[i:i + 4], "big")
                    if index < self.nblocks and not self.have[index]:
                        self.have[index] = 1
                        self.received += 1
            self._log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def store(self, index: int, chunk: bytes) -> None:
        start = index * self.block_size
        if self._fd >= 0:
            os.pwrite(self._fd, chunk, start)  # the block first, then its log entry
            os.write(self._log, index.to_bytes(4, "big"))
        else:
            self.buffer[start:start + len(chunk)] = chunk
        self.have[index] = 1
        self.received += 1

    def image(self) -> bytes:
        if self._fd >= 0:
            return os.pread(self._fd, self.size, 0) if self.size else b""
        return bytes(self.buffer)

    def restart(self) -> None:
        self.have = bytearray(self.nblocks)
        self.received = 0
        if self._log >= 0:
            os.ftruncate(self._log, 0)

    def close(self, remove: bool = False) -> None:
        for fd in (self._fd, self._log):
            if fd >= 0:
                os.close(fd)
        self._fd = self._log = -1
        if remove and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Accepted:
    """What one DATA did: ``stored`` False for a duplicate; ``completed`` when the image just
    became complete and matched the manifest's digest."""

    tid: bytes
    index: int
    stored: bool
    completed: bool
    state: int


class PushReceiver:
    """A member's side: verifies manifests and blocks, keeps up to ``max_transfers`` images.

    ``trusted`` are the firmware author keys. With ``store`` (a directory) the highest
    installed sequence number and the blocks of unfinished images survive a restart.
    ``install(tid, image, manifest)`` runs when an image is complete and matched, before
    its sequence number is recorded as installed (and the partial image removed), so a
    crash in between leaves an image that installs again rather than a version counted as
    installed that never was. Feed it only payloads that passed OSCORE verification, with
    the verified Sender ID.
    """

    def __init__(self, trusted: Sequence[PublicKey], *, store: str | Path | None = None,
                 max_size: int = 64 << 20, max_transfers: int = 2,
                 port: int | None = None,
                 install: Callable[[bytes, bytes, Manifest], None] | None = None) -> None:
        if not trusted:
            raise PushError("a member needs at least one trusted firmware author key")
        self.trusted = list(trusted)
        self.store = None if store is None else Path(store)
        self.max_size = max_size
        self.max_transfers = max_transfers
        #: the port put into reports (None: answer where the request came from)
        self.port = port
        self.install = install
        self._transfers: OrderedDict[bytes, _Transfer] = OrderedDict()
        self._refused: dict[bytes, str] = {}
        self.installed: int | None = None
        self.stored_blocks = 0
        self.duplicates = 0
        self.bad_blocks = 0
        if self.store is not None:
            self.store.mkdir(parents=True, exist_ok=True)
            self._load()

    # persistence

    def _load(self) -> None:
        assert self.store is not None
        try:
            self.installed = json.loads((self.store / "installed.json").read_text())["sequence"]
        except FileNotFoundError:
            self.installed = None
        except (ValueError, KeyError, TypeError) as exc:
            raise PushError(f"{self.store / 'installed.json'} is unreadable: {exc}") from None
        for folder in sorted(self.store.glob("*.transfer")):
            try:
                tid = bytes.fromhex(folder.name.removesuffix(".transfer"))
                manifest = self._accept((folder / "manifest.suit").read_bytes())
            except (OSError, ValueError, PushError):
                shutil.rmtree(folder, ignore_errors=True)
                continue
            self._add(tid, manifest)

    def _save_installed(self, sequence: int) -> None:
        self.installed = sequence
        if self.store is None:
            return
        tmp = self.store / "installed.json.tmp"
        with open(tmp, "w") as f:
            json.dump({"sequence": sequence}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.store / "installed.json")

    # manifests

    def _accept(self, envelope: bytes) -> Manifest:
        manifest = parse_envelope(envelope, self.trusted).for_push()
        if self.installed is not None and manifest.sequence <= self.installed:
            raise SuitError(f"manifest sequence number {manifest.sequence} is not newer than "
                            f"the installed {self.installed}")
        if manifest.image_size is not None and manifest.image_size > self.max_size:
            raise SuitError(f"image of {manifest.image_size} bytes exceeds the limit of "
                            f"{self.max_size}")
        return manifest

    def _add(self, tid: bytes, manifest: Manifest) -> _Transfer:
        folder = None if self.store is None else self.store / f"{tid.hex()}.transfer"
        t = _Transfer(tid, manifest, folder)
        self._transfers[tid] = t
        while len(self._transfers) > self.max_transfers:
            _, old = self._transfers.popitem(last=False)
            old.close(remove=True)
        self._settle(t)
        return t

    def on_manifest(self, tid: bytes, envelope: bytes, sender_id: bytes) -> _Transfer:
        """Learn (or recognise) the manifest of ``tid``; SuitError when refused."""
        t = self._transfers.get(tid)
        if t is not None:
            if t.manifest.envelope != envelope:
                raise PushError("another manifest for a known transfer")
            self._check_distributor(t.manifest, sender_id)
            return t
        try:
            manifest = self._accept(envelope)
            self._check_distributor(manifest, sender_id)
            if any(o.manifest.envelope == envelope for o in self._transfers.values()):
                # one image, one transfer: a copy under another id would only evict others
                raise SuitError("this manifest is being received under another transfer id")
        except SuitError as exc:
            self._refused[tid] = str(exc)
            while len(self._refused) > 16:
                self._refused.pop(next(iter(self._refused)))
            raise
        self._refused.pop(tid, None)
        return self._add(tid, manifest)

    @staticmethod
    def _check_distributor(manifest: Manifest, sender_id: bytes) -> None:
        if manifest.distributors is not None and sender_id not in manifest.distributors:
            raise SuitError(f"Sender ID {sender_id.hex() or '-'} is not a distributor the "
                            "manifest names")

    # blocks

    def on_data(self, data: Data, sender_id: bytes) -> Accepted:
        """Check one block against the manifest and store it; PushError when it does not
        belong (the block stays missing and is reported again)."""
        t = self._transfers.get(data.tid)
        if t is None:
            raise PushError("block of a transfer whose manifest has not arrived")
        m = t.manifest
        self._check_distributor(m, sender_id)
        if data.index >= t.nblocks:
            raise PushError(f"block {data.index} is beyond the {t.nblocks} blocks of the image")
        if t.state == COMPLETE or t.have[data.index]:
            self.duplicates += 1
            return Accepted(t.tid, data.index, False, False, t.state)
        expected = min(t.block_size, t.size - data.index * t.block_size)
        assert m.tree_root is not None
        if len(data.chunk) != expected or not verify_proof(
            leaf_hash(data.chunk), data.index, t.nblocks, data.proof, m.tree_root, t.known
        ):
            self.bad_blocks += 1
            raise PushError(f"block {data.index} does not match the manifest")
        t.store(data.index, data.chunk)
        self.stored_blocks += 1
        return Accepted(t.tid, data.index, True, self._settle(t), t.state)

    def on_status(self, status: Status, sender_id: bytes) -> Report:
        """Learn the manifest it carries, then report (a refusal is a report too)."""
        try:
            self.on_manifest(status.tid, status.envelope, sender_id)
        except SuitError:
            pass
        return self.report(status.tid)

    def _settle(self, t: _Transfer) -> bool:
        """Check a fully received image against the manifest; True when it just completed."""
        if t.state == COMPLETE or t.received < t.nblocks:
            return False
        image = t.image()
        if hashlib.sha256(image).digest() == t.manifest.image_digest:
            if self.install is not None:
                self.install(t.tid, image, t.manifest)
            t.state = COMPLETE
            t.result = image
            if self.installed is None or t.manifest.sequence > self.installed:
                self._save_installed(t.manifest.sequence)
            t.close(remove=True)
            return True
        # every block matched the tree, yet the image does not: the author's manifest is
        # inconsistent or the store was damaged; start over
        t.restart()
        return False

    def report(self, tid: bytes) -> Report:
        t = self._transfers.get(tid)
        if t is None:
            state = REFUSED if tid in self._refused else NO_MANIFEST
            return Report(tid, state, 0, 0, b"", self.port, self.installed)
        if t.state == COMPLETE:
            return Report(tid, COMPLETE, 0, 0, b"", self.port, self.installed)
        missing = t.nblocks - t.received
        first = t.have.find(0)
        bits = bytearray(min(REPORT_BITS, t.nblocks - first) + 7 >> 3)
        have = t.have
        for j in range(min(REPORT_BITS, t.nblocks - first)):
            if not have[first + j]:
                bits[j >> 3] |= 1 << (j & 7)
        return Report(tid, RECEIVING, missing, first, bytes(bits), self.port, self.installed)

    def refusal(self, tid: bytes) -> str | None:
        """Why the manifest of ``tid`` was refused, if it was."""
        return self._refused.get(tid)

    def manifest(self, tid: bytes) -> Manifest | None:
        t = self._transfers.get(tid)
        return None if t is None else t.manifest

    def file(self, tid: bytes) -> bytes | None:
        """The complete, digest-checked image, or None."""
        t = self._transfers.get(tid)
        return t.result if t is not None else None

    def progress(self, tid: bytes) -> tuple[int, int]:
        """(blocks stored, blocks in the image)."""
        t = self._transfers.get(tid)
        return (0, 0) if t is None else (t.received, t.nblocks)

    @property
    def transfers(self) -> list[bytes]:
        return list(self._transfers)

    def close(self) -> None:
        for t in self._transfers.values():
            t.close()


# --- sender -----------------------------------------------------------------------------


@dataclass
class MemberProgress:
    """What the sender knows about one member (by Sender ID)."""

    sender_id: bytes
    state: str = "unknown"
    missing: list[int] = field(default_factory=list)
    missing_count: int | None = None
    port: int | None = None
    installed: int | None = None
    repairs: int = 0
    reports: int = 0
    #: the round of the report ``missing`` comes from
    round: int = 0

    @property
    def complete(self) -> bool:
        return self.state == "complete"

    @property
    def finished(self) -> bool:
        """Nothing more will change: complete, or refused the manifest."""
        return self.state in ("complete", "refused")


class PushSender:
    """The sending side: a signed envelope and the image it describes, split into blocks
    with their proofs; tracks every member's reports.

    ``manifest`` must describe ``data`` (size, digest, tree root), else PushError. The
    transfer id defaults to one derived from the envelope.
    ``members`` are the Sender IDs expected to end with the image.
    """

    def __init__(self, data: bytes, manifest: Manifest, *, tid: bytes | None = None,
                 members: Iterable[bytes] = ()) -> None:
        manifest.for_push()
        self.manifest = manifest
        self.data = bytes(data)
        self.block_size = bs = manifest.block_size or 0
        self.digest = hashlib.sha256(self.data).digest()
        if len(self.data) != manifest.image_size or self.digest != manifest.image_digest:
            raise PushError("the manifest does not describe this file (size or digest differ)")
        self.nblocks = manifest.nblocks
        self._levels = tree_levels([leaf_hash(self.data[i:i + bs])
                                    for i in range(0, len(self.data), bs)])
        if self._levels[-1][0] != manifest.tree_root:
            raise PushError("the manifest's hash tree root does not match this file")
        # by default the transfer id follows from the manifest, so a push started again
        # with the same manifest continues where members are (their stores resume it)
        self.tid = tid if tid is not None else hashlib.sha256(manifest.envelope).digest()[:8]
        _bytes(self.tid, "tid", 1, MAX_TID)
        self.round = 0
        self.members: dict[bytes, MemberProgress] = {
            sid: MemberProgress(sid) for sid in members
        }
        self.expected = set(self.members)

    def block(self, index: int) -> bytes:
        """DATA payload of block ``index`` with its proof."""
        if not 0 <= index < self.nblocks:
            raise PushError(f"no block {index}")
        start = index * self.block_size
        chunk = self.data[start:start + self.block_size]
        return cbor2.dumps([DATA, self.tid, index, chunk, tree_proof(self._levels, index)])

    def manifest_message(self) -> bytes:
        return ManifestMsg(self.tid, self.manifest.envelope).encode()

    def status(self) -> bytes:
        """STATUS payload of the next round."""
        self.round += 1
        return Status(self.tid, self.round, self.manifest.envelope).encode()

    def on_report(self, sender_id: bytes, payload: bytes) -> MemberProgress:
        """Record a member's REPORT."""
        msg = decode(payload)
        if not isinstance(msg, Report):
            raise PushError("expected a REPORT")
        if msg.tid != self.tid:
            raise PushError("report for another transfer")
        if msg.first + 8 * len(msg.bitmap) > self.nblocks + 7:
            raise PushError("report maps blocks beyond the image")
        p = self.members.get(sender_id)
        if p is None:
            p = self.members[sender_id] = MemberProgress(sender_id)
        p.reports += 1
        p.round = self.round
        p.port = msg.port
        p.installed = msg.installed
        already = msg.installed is not None and msg.installed >= self.manifest.sequence
        if msg.state == COMPLETE or (msg.state == REFUSED and already):
            p.state, p.missing, p.missing_count = "complete", [], 0
        elif msg.state == REFUSED:
            p.state, p.missing, p.missing_count = "refused", [], None
        elif msg.state == NO_MANIFEST:
            p.state, p.missing, p.missing_count = "no manifest", [], self.nblocks
        else:
            p.state = "receiving"
            p.missing_count = msg.missing_count
            p.missing = [i for i in msg.missing() if i < self.nblocks]
        return p

    @property
    def done(self) -> bool:
        """Every expected member reported the image complete (or already installed)."""
        return all(self.members[sid].complete for sid in self.expected)

    @property
    def finished(self) -> bool:
        """Nothing more to do: every expected member is complete or refused."""
        return all(self.members[sid].finished for sid in self.expected)

    def pending(self) -> list[bytes]:
        """Expected members still receiving (or not heard from)."""
        return [sid for sid in self.expected if not self.members[sid].finished]

    def completed(self) -> int:
        return sum(1 for sid in self.expected if self.members[sid].complete)
