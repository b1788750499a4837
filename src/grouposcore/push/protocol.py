"""Firmware push to a Group OSCORE group, sans-I/O: the receiver and sender state machines.

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

The payload formats are in :mod:`grouposcore.push.messages`; this module holds the two
state machines. A receiver's transfer goes RECEIVING -> COMPLETE (:func:`transfer_transition`);
the sender's view of each member (:class:`MemberState`) follows the member's latest report.

Anything malformed, or contradicting what the receiver knows, raises
:class:`~grouposcore.errors.PushError` and changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from grouposcore._files import write_private_file
from grouposcore.cose.signing import PublicKey
from grouposcore.errors import PushError, SuitError
from grouposcore.push.messages import (
    COMPLETE,
    DATA,
    MANIFEST,
    MAX_TID,
    NO_MANIFEST,
    NO_RESPONSE_ALL,
    RECEIVING,
    REFUSED,
    REPORT,
    REPORT_BITS,
    STATUS,
    Data,
    Kind,
    ManifestMsg,
    Report,
    ReportState,
    Status,
    byte_string,
    decode,
)
from grouposcore.push.suit import (
    Manifest,
    leaf_hash,
    parse_envelope,
    tree_levels,
    tree_proof,
    verify_proof,
)

# The message names are re-exported: code written against the one-module layout still works.
__all__ = [
    "COMPLETE",
    "DATA",
    "MANIFEST",
    "MANIFEST_EVERY",
    "NO_MANIFEST",
    "NO_RESPONSE_ALL",
    "RECEIVING",
    "REFUSED",
    "REPORT",
    "REPORT_BITS",
    "STATUS",
    "Accepted",
    "Data",
    "Kind",
    "ManifestMsg",
    "MemberProgress",
    "MemberState",
    "PushReceiver",
    "PushSender",
    "Report",
    "ReportState",
    "Status",
    "TransferInput",
    "decode",
    "member_state",
    "transfer_transition",
]

#: the manifest goes out again after this many blocks
MANIFEST_EVERY = 64


class TransferInput(Enum):
    """What changes a receiver's transfer (the block checks come before these)."""

    #: a new block passed its proof and was stored
    STORED = "stored"
    #: the last block arrived and the image matched the manifest's digest
    MATCHED = "matched"
    #: the last block arrived but the image did not match: start over
    MISMATCHED = "mismatched"


#: A transfer's life cycle: (state, input) -> next state; COMPLETE takes no input (a block
#: for a complete image is a duplicate, counted before the state machine sees it).
_TRANSFER_TRANSITIONS: dict[tuple[ReportState, TransferInput], ReportState] = {
    (RECEIVING, TransferInput.STORED): RECEIVING,
    (RECEIVING, TransferInput.MATCHED): COMPLETE,
    (RECEIVING, TransferInput.MISMATCHED): RECEIVING,
}


def transfer_transition(state: ReportState, event: TransferInput) -> ReportState:
    """The transfer's state after ``event``; ValueError for a pair the life cycle forbids."""
    try:
        return _TRANSFER_TRANSITIONS[state, event]
    except KeyError:
        raise ValueError(f"illegal transfer transition: {event.name} in {state.name}") from None


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
        self.state: ReportState = RECEIVING
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
                    index = int.from_bytes(raw[i : i + 4], "big")
                    if index < self.nblocks and not self.have[index]:
                        self.have[index] = 1
                        self.received += 1
            self._log = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def advance(self, event: TransferInput) -> None:
        self.state = transfer_transition(self.state, event)

    def store(self, index: int, chunk: bytes) -> None:
        start = index * self.block_size
        if self._fd >= 0:
            os.pwrite(self._fd, chunk, start)  # the block first, then its log entry
            os.write(self._log, index.to_bytes(4, "big"))
        else:
            self.buffer[start : start + len(chunk)] = chunk
        self.have[index] = 1
        self.received += 1
        self.advance(TransferInput.STORED)

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
    state: ReportState


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

    def __init__(
        self,
        trusted: Sequence[PublicKey],
        *,
        store: str | Path | None = None,
        max_size: int = 64 << 20,
        max_transfers: int = 2,
        port: int | None = None,
        install: Callable[[bytes, bytes, Manifest], None] | None = None,
    ) -> None:
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
        # Durable before the image is reported installed: a crash must not roll it back.
        data = json.dumps({"sequence": sequence}).encode()
        write_private_file(self.store / "installed.json", data, prefix=".installed-")

    # manifests

    def _accept(self, envelope: bytes) -> Manifest:
        manifest = parse_envelope(envelope, self.trusted).for_push()
        if self.installed is not None and manifest.sequence <= self.installed:
            raise SuitError(
                f"manifest sequence number {manifest.sequence} is not newer than "
                f"the installed {self.installed}"
            )
        if manifest.image_size is not None and manifest.image_size > self.max_size:
            raise SuitError(
                f"image of {manifest.image_size} bytes exceeds the limit of {self.max_size}"
            )
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
            raise SuitError(
                f"Sender ID {sender_id.hex() or '-'} is not a distributor the manifest names"
            )

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
        if t.state is COMPLETE or t.have[data.index]:
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
        if t.state is COMPLETE:
            return False
        if t.received < t.nblocks:
            return False
        image = t.image()
        if hashlib.sha256(image).digest() == t.manifest.image_digest:
            if self.install is not None:
                self.install(t.tid, image, t.manifest)
            t.advance(TransferInput.MATCHED)
            t.result = image
            if self.installed is None or t.manifest.sequence > self.installed:
                self._save_installed(t.manifest.sequence)
            t.close(remove=True)
            return True
        # every block matched the tree, yet the image does not: the author's manifest is
        # inconsistent or the store was damaged; start over
        t.advance(TransferInput.MISMATCHED)
        t.restart()
        return False

    def report(self, tid: bytes) -> Report:
        t = self._transfers.get(tid)
        if t is None:
            state = REFUSED if tid in self._refused else NO_MANIFEST
            return Report(tid, state, 0, 0, b"", self.port, self.installed)
        if t.state is COMPLETE:
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


class MemberState(StrEnum):
    """The sender's view of one member. Not a life cycle with forbidden steps: it follows
    the member's latest report (:func:`member_state`), and a member can lose what it had
    (a restart without a store directory, a transfer it dropped for newer ones)."""

    #: no report yet
    UNKNOWN = "unknown"
    #: the manifest is accepted; ``missing`` lists blocks to repair
    RECEIVING = "receiving"
    #: the member has not got the manifest yet
    NO_MANIFEST = "no manifest"
    #: the image is complete, or the member already installed this sequence number
    COMPLETE = "complete"
    #: the member refused the manifest; nothing will change that
    REFUSED = "refused"


def member_state(report: ReportState, already_installed: bool) -> MemberState:
    """What a report says about its member: a refusal by a member that has installed this
    manifest's sequence number (or a newer one) counts as complete."""
    if report is COMPLETE or (report is REFUSED and already_installed):
        return MemberState.COMPLETE
    return {
        REFUSED: MemberState.REFUSED,
        NO_MANIFEST: MemberState.NO_MANIFEST,
        RECEIVING: MemberState.RECEIVING,
    }[report]


@dataclass
class MemberProgress:
    """What the sender knows about one member (by Sender ID)."""

    sender_id: bytes
    state: MemberState = MemberState.UNKNOWN
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
        return self.state is MemberState.COMPLETE

    @property
    def finished(self) -> bool:
        """Nothing more will change: complete, or refused the manifest."""
        return self.state in (MemberState.COMPLETE, MemberState.REFUSED)


class PushSender:
    """The sending side: a signed envelope and the image it describes, split into blocks
    with their proofs; tracks every member's reports.

    ``manifest`` must describe ``data`` (size, digest, tree root), else PushError. The
    transfer id defaults to one derived from the envelope.
    ``members`` are the Sender IDs expected to end with the image.
    """

    def __init__(
        self,
        data: bytes,
        manifest: Manifest,
        *,
        tid: bytes | None = None,
        members: Iterable[bytes] = (),
    ) -> None:
        manifest.for_push()
        self.manifest = manifest
        self.data = bytes(data)
        self.block_size = bs = manifest.block_size or 0
        self.digest = hashlib.sha256(self.data).digest()
        if len(self.data) != manifest.image_size or self.digest != manifest.image_digest:
            raise PushError("the manifest does not describe this file (size or digest differ)")
        self.nblocks = manifest.nblocks
        self._levels = tree_levels(
            [leaf_hash(self.data[i : i + bs]) for i in range(0, len(self.data), bs)]
        )
        if self._levels[-1][0] != manifest.tree_root:
            raise PushError("the manifest's hash tree root does not match this file")
        # by default the transfer id follows from the manifest, so a push started again
        # with the same manifest continues where members are (their stores resume it)
        self.tid = tid if tid is not None else hashlib.sha256(manifest.envelope).digest()[:8]
        byte_string(self.tid, "tid", 1, MAX_TID)
        self.round = 0
        self.members: dict[bytes, MemberProgress] = {sid: MemberProgress(sid) for sid in members}
        self.expected = set(self.members)

    def block(self, index: int) -> bytes:
        """DATA payload of block ``index`` with its proof."""
        if not 0 <= index < self.nblocks:
            raise PushError(f"no block {index}")
        start = index * self.block_size
        chunk = self.data[start : start + self.block_size]
        return Data(self.tid, index, chunk, tuple(tree_proof(self._levels, index))).encode()

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
        p.state = member_state(msg.state, already)
        if p.state is MemberState.COMPLETE:
            p.missing, p.missing_count = [], 0
        elif p.state is MemberState.REFUSED:
            p.missing, p.missing_count = [], None
        elif p.state is MemberState.NO_MANIFEST:
            p.missing, p.missing_count = [], self.nblocks
        else:
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
