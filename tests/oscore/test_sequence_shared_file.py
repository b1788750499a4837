"""One sequence file shared by several processes (``serve`` and a ``join`` of the same node,
two commands on one GM channel or on one aiocoap context folder): reservations must never
overlap, or two processes send with the same Partial IV under the same key, reusing a nonce
(RFC 8613 Appendix B.1.1)."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

import pytest

from grouposcore.cli.interop import AiocoapSequenceStore
from grouposcore.oscore.sequence import (
    FileSequenceStore,
    MemorySequenceStore,
    SenderSequence,
    SequenceNumberStore,
)

ROUNDS = 200


def _store(kind: str, path: str) -> SequenceNumberStore:
    if kind == "aiocoap":  # an aiocoap context folder used by two of our commands
        return AiocoapSequenceStore(Path(path))
    return FileSequenceStore(path)


def _take(kind: str, path: str, start: Any, out: Any) -> None:
    """Child process: wait for the start signal, then take numbers one block at a time."""
    seq = SenderSequence(store=_store(kind, path), key="k", step=1)
    start.wait()
    out.put([seq.next() for _ in range(ROUNDS)])


@pytest.mark.parametrize("kind", ["file", "aiocoap"])
def test_two_processes_sharing_a_sequence_file_never_get_the_same_number(
    tmp_path: Path, kind: str
) -> None:
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    path = str(tmp_path / "node.seq") if kind == "file" else str(tmp_path)
    procs = [ctx.Process(target=_take, args=(kind, path, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    taken = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    a, b = taken
    assert len(set(a)) == len(set(b)) == ROUNDS
    assert not set(a) & set(b)
    assert _store(kind, path).load("k") == max(a + b) + 1


def test_reservation_holds_the_file_lock_from_read_to_write(tmp_path: Path) -> None:
    """Deterministic race: while one store is between reading the file and writing it,
    another (as another process would) tries to reserve from the same file. With the lock
    it waits and continues after the first reservation; without it both reserve block 0."""
    path = tmp_path / "node.seq"
    first, second = FileSequenceStore(path), FileSequenceStore(path)
    seq_a = SenderSequence(store=first, key="k", step=8)
    seq_b = SenderSequence(store=second, key="k", step=8)
    got: dict[str, int] = {}
    armed = [True]
    read = first._read

    def racing_read() -> dict[str, int]:
        data = read()
        if armed[0]:
            armed[0] = False
            other = threading.Thread(target=lambda: got.setdefault("b", seq_b.next()))
            other.start()
            other.join(timeout=1.0)  # it cannot finish while the lock is held
            racing_read.other = other  # type: ignore[attr-defined]
        return data

    first._read = racing_read  # type: ignore[method-assign]
    got["a"] = seq_a.next()
    racing_read.other.join(timeout=30)  # type: ignore[attr-defined]
    assert got == {"a": 0, "b": 8}
    assert FileSequenceStore(path).load("k") == 16


def test_a_stale_store_never_lowers_or_drops_another_process_reservation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "node.seq"
    early, late = FileSequenceStore(path), FileSequenceStore(path)
    late.reserve("channel/n", 100)
    early.reserve("channel/n", 50)  # it never saw the 100
    early.reserve("group/g", 7)
    assert FileSequenceStore(path).load("channel/n") == 100
    assert FileSequenceStore(path).load("group/g") == 7
    resumed = SenderSequence(store=early, key="channel/n", step=4)
    assert resumed.next() == 100


def test_a_stale_aiocoap_store_never_lowers_another_process_reservation(
    tmp_path: Path,
) -> None:
    early, late = AiocoapSequenceStore(tmp_path), AiocoapSequenceStore(tmp_path)
    late.reserve("aiocoap", 100)
    early.reserve("aiocoap", 50)  # it never saw the 100
    assert AiocoapSequenceStore(tmp_path).load("aiocoap") == 100
    assert SenderSequence(store=early, key="aiocoap", step=4).next() == 100
    assert (tmp_path / "sequence.json").stat().st_mode & 0o077 == 0


def test_a_shared_file_at_the_end_of_the_space_hands_out_nothing(tmp_path: Path) -> None:
    from grouposcore.errors import SequenceNumberExhausted

    path = tmp_path / "node.seq"
    other = SenderSequence(store=FileSequenceStore(path), key="k", step=4, limit_max=9)
    seq = SenderSequence(store=FileSequenceStore(path), key="k", step=4, limit_max=9)
    assert [other.next() for _ in range(10)] == list(range(10))
    with pytest.raises(SequenceNumberExhausted):
        seq.next()
    assert seq.exhausted and FileSequenceStore(path).load("k") == 10


def test_a_restarted_sender_resumes_after_the_last_reservation_in_any_store(
    tmp_path: Path,
) -> None:
    """The file store's reservation also moves past other processes' blocks; the resumption
    at start-up is what protects every other store (and what peek() reports)."""
    memory = MemorySequenceStore()
    first = SenderSequence(store=memory, key="k", step=10)
    assert [first.next() for _ in range(3)] == [0, 1, 2]
    resumed = SenderSequence(store=memory, key="k", step=10)
    assert resumed.peek() == 10 and resumed.next() == 10
    path = tmp_path / "node.seq"
    SenderSequence(store=FileSequenceStore(path), key="k", step=10).next()
    assert SenderSequence(store=FileSequenceStore(path), key="k", step=10).peek() == 10
