"""Sender Sequence Numbers that survive restarts without ever reusing a nonce.

RFC 8613 Appendix B.1.1: before a number is used, a block of numbers ahead of it is
reserved in durable storage; after a crash the sender resumes at the end of the last
reservation, skipping whatever was left of that block. Numbers are never handed out
beyond what is durably reserved, so an interrupted process can lose numbers but never
repeat one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from grouposcore._files import exclusive_file, write_private_file
from grouposcore.errors import GroupOscoreError, SequenceNumberExhausted

#: RFC 8613 §7.2.1: the Partial IV is at most 5 bytes, so 2^40 - 1 is the last usable number.
MAX_SEQUENCE_NUMBER = (1 << 40) - 1
DEFAULT_RESERVATION_STEP = 256


class SequenceNumberStore(Protocol):
    """Durable record of how far each sender may have counted."""

    def load(self, key: str) -> int | None:
        """The first number that may be used after a restart, or None if never reserved."""

    def reserve(self, key: str, upto: int) -> None:
        """Durably record that numbers below ``upto`` may have been used. Must not return
        before the record is on stable storage."""


@runtime_checkable
class BlockReservingStore(SequenceNumberStore, Protocol):
    """A store that several processes may share: it reserves a whole block at once, from
    wherever the latest reservation of any of them ended."""

    def reserve_block(self, key: str, start: int, count: int, end: int) -> int:
        """Reserve ``count`` numbers (none at or past ``end``) for ``key`` from ``start`` or
        from where any earlier reservation (of any process) ended, whichever is later;
        return the first. At or past ``end`` nothing is reserved."""


def next_block(reserved: int, start: int, count: int, end: int) -> tuple[int, int | None]:
    """The block a shared store reserves: its first number, from ``start`` or from where
    the latest reservation (``reserved``) ended, whichever is later, and the new
    reservation to record (``None``: nothing left before ``end``, record nothing). Every
    :class:`BlockReservingStore` applies this one rule under its lock."""
    first = max(start, reserved)
    return first, (min(first + count, end) if first < end else None)


class MemorySequenceStore:
    """A store that forgets on exit: for tests and for contexts that are rebuilt on restart."""

    def __init__(self) -> None:
        self.reservations: dict[str, int] = {}

    def load(self, key: str) -> int | None:
        return self.reservations.get(key)

    def reserve(self, key: str, upto: int) -> None:
        self.reservations[key] = upto


class FileSequenceStore:
    """Reservations for any number of senders in one JSON file, replaced atomically.

    Each reservation is written to a temporary file in the same folder, fsync'ed and
    renamed over the old one, then the folder is fsync'ed: a crash leaves either the old or
    the new file, never a torn one. The file is created with mode 0600.

    Several processes may share the file (``serve`` and a ``join`` of the same node, say):
    each reservation holds an exclusive ``flock`` on ``PATH.lock`` across reading the file,
    raising the count and writing it back, so no two of them reserve the same numbers
    (:meth:`reserve_block`), a reservation never lowers a count another process raised, and
    none drops the others' keys.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._read()  # a corrupt file is an error at once, not at the first reservation

    def _read(self) -> dict[str, int]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GroupOscoreError(f"corrupt sequence number file {self.path}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in data.items()
        ):
            raise GroupOscoreError(f"corrupt sequence number file {self.path}")
        return data

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """This thread and process alone between reading the file and replacing it."""
        with self._lock, exclusive_file(self.path):
            yield

    def load(self, key: str) -> int | None:
        # Read afresh: another process may have reserved since (the rename is atomic).
        return self._read().get(key)

    def reserve(self, key: str, upto: int) -> None:
        with self._exclusive():
            data = self._read()
            data[key] = max(upto, data.get(key, 0))
            self._write(data)

    def reserve_block(self, key: str, start: int, count: int, end: int) -> int:
        """See :meth:`BlockReservingStore.reserve_block`."""
        with self._exclusive():
            data = self._read()
            first, upto = next_block(data.get(key, 0), start, count, end)
            if upto is not None:
                data[key] = upto
                self._write(data)
        return first

    def _write(self, data: dict[str, int]) -> None:
        write_private_file(self.path, json.dumps(data, sort_keys=True).encode(), prefix=".seq-")


class SenderSequence:
    """The Sender Sequence Number of one Sender Context.

    ``key`` names this sender in the store (e.g. hex of Gid and Sender ID); ``step`` is how
    many numbers one durable write reserves (the K of RFC 8613 B.1.1).
    """

    __slots__ = ("_limit", "_next", "key", "limit_max", "step", "store")

    def __init__(
        self,
        start: int = 0,
        *,
        store: SequenceNumberStore | None = None,
        key: str = "",
        step: int = DEFAULT_RESERVATION_STEP,
        limit_max: int = MAX_SEQUENCE_NUMBER,
    ) -> None:
        if step < 1:
            raise ValueError("reservation step must be positive")
        self.store = store
        self.key = key
        self.step = step
        self.limit_max = limit_max
        if store is not None:
            resumed = store.load(key)
            if resumed is not None:
                start = max(start, resumed)
        self._next = start
        self._limit = start  # numbers below this are durably reserved

    def next(self) -> int:
        """Take the next number (reserving a new block first when needed)."""
        seq = self._next
        if seq > self.limit_max:
            raise SequenceNumberExhausted(
                "sender sequence number exhausted: a new Sender ID or Security Context is needed"
            )
        if self.store is not None and seq >= self._limit:
            seq = self._reserve(seq)
        self._next = seq + 1
        return seq

    def _reserve(self, seq: int) -> int:
        """Durably reserve the block that starts at ``seq``; the number to use now. A shared
        file may move it past another process's reservation."""
        assert self.store is not None
        if isinstance(self.store, BlockReservingStore):
            seq = self.store.reserve_block(self.key, seq, self.step, self.limit_max + 1)
            if seq > self.limit_max:
                self._next = seq  # stays exhausted without asking the file again
                raise SequenceNumberExhausted(
                    "sender sequence number exhausted: a new Sender ID or Security Context is "
                    "needed"
                )
            self._limit = min(seq + self.step, self.limit_max + 1)
            return seq
        limit = min(seq + self.step, self.limit_max + 1)
        self.store.reserve(self.key, limit)
        self._limit = limit
        return seq

    def peek(self) -> int:
        return self._next

    @property
    def exhausted(self) -> bool:
        return self._next > self.limit_max
