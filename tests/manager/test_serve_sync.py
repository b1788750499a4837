"""``manager serve`` looks at the database before each request for one query only: it
re-reads groups and channels when another process committed (the store's change marker
moved), when keying material expired, or after its own admin interface changed something.
An offline eviction or rekeying is still pushed before the request right after it is
answered. Both backends (SQLite's data_version, PostgreSQL's change counter)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from grouposcore.cli.main import main
from grouposcore.cli.manager_serve import SyncedService
from grouposcore.coap import Code as CoapCode
from grouposcore.manager.core import GroupManager, Notification
from grouposcore.manager.params import Code, Param, loads_strict
from grouposcore.manager.service import NodeRequest
from grouposcore.manager.store import ChannelMaterial, Store, open_store
from tests.manager.helpers import Harness

PATH = ("ace-group", "g")


@pytest.fixture
def served(db_url: str) -> Iterator[SyncedService]:
    """A serving GM with members a and b in group g (their joins are its own commits)."""
    gm = GroupManager(open_store(db_url))
    gm.create_group("g", backward_security=False)
    harness = Harness(gm)
    harness.join("a", "g")
    harness.join("b", "g")
    try:
        yield SyncedService(gm)
    finally:
        gm.close()


def _get(svc: SyncedService, node: str) -> Any:
    request = NodeRequest(code=CoapCode.GET, token=node.encode(), node=node)
    return svc.serve(PATH, request)


def _count_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count calls of the store methods that read every group or channel."""
    calls = {"groups": 0, "channels": 0}
    for name in calls:
        original = getattr(store, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> Any:
            calls[_name] += 1
            return _original(*args)

        monkeypatch.setattr(store, name, counted)
    return calls


def _record(svc: SyncedService, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """What the service does, in order: pushes (deliver) and answers (GroupManager.handle)."""
    events: list[tuple[Any, ...]] = []
    deliver, handle = svc.deliver, svc.gm.handle

    def recording_deliver(notes: Any) -> None:
        notes = list(notes)
        if notes:
            events.append(("push", [(n.node, n.code, _num(n)) for n in notes]))
        deliver(notes)

    def recording_handle(node: str, method: Any, path: Any, *rest: Any) -> Any:
        events.append(("answer", node, tuple(path)))
        return handle(node, method, path, *rest)

    monkeypatch.setattr(svc, "deliver", recording_deliver)
    monkeypatch.setattr(svc.gm, "handle", recording_handle)
    return events


def _num(note: Notification) -> int | None:
    if note.code != Code.CONTENT:
        return None
    num = loads_strict(note.payload, "notification").get(Param.NUM)
    return num if isinstance(num, int) else None


def test_change_marker_moves_for_another_connections_commit_not_for_its_own(
    db_url: str,
) -> None:
    one, other = GroupManager(open_store(db_url)), GroupManager(open_store(db_url))
    try:
        mine, theirs = one.store.change_marker(), other.store.change_marker()
        assert one.store.change_marker() == mine  # nothing committed: the same value
        one.create_group("g")
        one.commission_node("n")
        assert one.store.change_marker() == mine  # our own commits leave it alone
        assert other.store.change_marker() != theirs
        theirs = other.store.change_marker()
        assert other.store.change_marker() == theirs
        other.rekey("g")
        assert other.store.change_marker() == theirs
        assert one.store.change_marker() != mine
    finally:
        one.close()
        other.close()


def test_serve_request_without_database_change_reads_no_groups_or_channels(
    served: SyncedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_reads(served.gm.store, monkeypatch)
    for node in ("a", "b", "a"):
        assert _get(served, node).code == CoapCode.CONTENT
    assert calls == {"groups": 0, "channels": 0}
    # Its own changes (a rekeying it pushed itself) do not make it look either.
    served.rekey("g")
    assert _get(served, "a").code == CoapCode.CONTENT
    assert calls == {"groups": 0, "channels": 0}


@pytest.mark.parametrize("command", [["evict", "g", "b"], ["rekey", "g"]])
def test_serve_request_right_after_offline_change_pushes_it_first(
    served: SyncedService, db_url: str, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    _get(served, "a")  # in step with the database
    events = _record(served, monkeypatch)
    assert main(["manager", *command, "--db", db_url, "-q"]) == 0  # another process's commit
    g = served.gm.group("g")
    assert g is not None
    response = _get(served, "a")
    assert response.code == CoapCode.CONTENT
    assert loads_strict(response.payload, "answer")[Param.NUM] == g.num
    assert [e[0] for e in events] == ["push", "answer"]  # pushed before the answer
    pushed = events[0][1]
    assert ("a", Code.CONTENT, g.num) in pushed
    if command[0] == "evict":
        assert ("b", Code.NOT_FOUND, None) in pushed
    # Pushed once: the next request finds nothing new.
    _get(served, "a")
    assert [e[0] for e in events] == ["push", "answer", "answer"]


def test_serve_request_after_offline_commission_installs_the_channel(
    served: SyncedService, db_url: str
) -> None:
    other = GroupManager(open_store(db_url))
    try:
        other.commission_node("c")
    finally:
        other.close()
    assert "c" not in served._contexts
    _get(served, "a")
    assert "c" in served._contexts


def test_serve_syncs_when_keying_material_expires_without_database_change(
    served: SyncedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    g = served.gm.group("g")
    assert g is not None
    calls = _count_reads(served.gm.store, monkeypatch)
    assert not served.refresh(now=g.exp - 1)
    assert calls["groups"] == 0
    assert served.refresh(now=g.exp)
    after = served.gm.group("g")
    assert after is not None and after.num == g.num + 1
    calls["groups"] = 0
    assert not served.refresh(now=after.exp - 1)  # until the new material expires
    assert calls["groups"] == 0


def test_serve_request_after_an_admin_request_syncs_once(
    served: SyncedService, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_reads(served.gm.store, monkeypatch)
    request = NodeRequest(code=CoapCode.GET, token=b"m", node="a")
    served.serve(("manage",), request)  # 'a' is no administrator: refused, all the same
    assert calls["groups"] == 0
    _get(served, "a")
    assert calls["groups"] > 0
    seen = dict(calls)
    _get(served, "a")
    assert calls == seen


def test_serve_retries_a_failed_sync_at_the_next_request(
    served: SyncedService, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["manager", "rekey", "g", "--db", db_url, "-q"]) == 0
    failures = served.gm.store.failures

    def broken(*args: Any, **kwargs: Any) -> None:
        raise failures[0]("database went away")

    monkeypatch.setattr(served, "sync", broken)
    _get(served, "a")  # logged, answered all the same
    monkeypatch.undo()
    events = _record(served, monkeypatch)
    _get(served, "a")
    assert [e[0] for e in events] == ["push", "answer"]


def test_postgres_commit_of_unknown_outcome_moves_the_marker(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    store = open_store(pg_url)
    try:
        before = store.change_marker()
        execute = store._execute

        def failing_commit(sql: str, args: tuple[Any, ...]) -> Any:
            if sql == "COMMIT":
                raise psycopg.OperationalError("connection lost during COMMIT")
            return execute(sql, args)

        monkeypatch.setattr(store, "_execute", failing_commit)
        material = ChannelMaterial("n", b"s" * 16, b"t" * 8, b"\x00", b"\x01", None, 10, 5)
        with pytest.raises(psycopg.OperationalError), store.transaction():
            store.put_channel(material)
        monkeypatch.undo()
        store._rollback()
        assert store.channel("n") is None  # it did not commit, yet the caller must look
        assert store.change_marker() != before
    finally:
        store.close()
