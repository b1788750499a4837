"""The store on both backends (SQLite, PostgreSQL): atomic transactions, surviving restarts
and kills; and the SQLite file's permissions and migration."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import cbor2
import pytest

from grouposcore.errors import ManagerStoreError
from grouposcore.manager import member as mb
from grouposcore.manager.core import GroupManager
from grouposcore.manager.store import SCHEMA_VERSION, open_store
from grouposcore.manager.store import SqliteStore as Store
from grouposcore.manager.store.base import credential_key
from tests.manager.helpers import Harness, check_invariants

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_is_0600_with_wal(db_path: Path) -> None:
    old = os.umask(0)
    try:
        gm = GroupManager(db_path)
    finally:
        os.umask(old)
    gm.create_group("g")
    assert _mode(db_path) == 0o600
    wal = Path(str(db_path) + "-wal")
    assert wal.exists() and _mode(wal) == 0o600
    mode = gm.store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    gm.close()


def test_existing_database_is_tightened(db_path: Path) -> None:
    GroupManager(db_path).close()
    os.chmod(db_path, 0o644)
    GroupManager(db_path).close()
    assert _mode(db_path) == 0o600


def test_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(ManagerStoreError):
        Store(tmp_path)


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(ManagerStoreError):
        Store(bad)


def test_schema_version_mismatch_is_refused(db_url: str) -> None:
    s = open_store(db_url)
    with s.transaction():
        s._write("UPDATE meta SET value=99 WHERE key='schema'")
    s.close()
    with pytest.raises(ManagerStoreError):
        open_store(db_url)


def test_writes_need_a_transaction_and_roll_back_on_error(db_url: str) -> None:
    s = open_store(db_url)
    with pytest.raises(ManagerStoreError):
        s.set_access("n", "g", 6)
    with pytest.raises(RuntimeError):
        with s.transaction():
            s.set_access("n", "g", 6)
            with s.transaction():  # nested: part of the outer one
                s.set_access("m", "g", 6)
            raise RuntimeError("crash in the middle")
    assert s.access_list() == []
    with s.transaction():
        s.set_access("n", "g", 6)
    assert [(e.node, e.roles) for e in s.access_list()] == [("n", 6)]
    s.close()


def test_stale_sets_keep_the_last_n(db_url: str) -> None:
    gm = GroupManager(db_url)
    gm.create_group("g")
    s = gm.store
    with s.transaction():
        for n in range(1, 8):
            s.add_stale_set("g", n, b"\x80", keep=3)
    assert sorted(s.stale_sets("g")) == [5, 6, 7]
    gm.close()


def _busy_gm(harness: Harness) -> None:
    gm = harness.gm
    gm.create_group("g1")
    gm.create_group("g2", sign_alg=-7, backward_security=False)
    for i in range(6):
        harness.join(f"n{i}", "g1")
    from grouposcore.manager.params import Role

    harness.join("mon", "g1", [Role.MONITOR])
    harness.request("n2", "DELETE", "ace-group/g1/nodes/n2")
    gm.evict("g1", "n3")
    r = harness.request("n4", "POST", "ace-group/g1/nodes/n4")
    n4 = harness.nodes["n4"]
    assert n4.material is not None
    n4.material = mb.parse_key_renewal(r.payload, n4.material)
    gm.commission_node("n0")
    gm.commission_node("n1")


def test_reopen_sees_identical_state(db_url: str) -> None:
    harness = Harness(GroupManager(db_url))
    _busy_gm(harness)
    before = harness.gm.snapshot()
    # A second GM on the same database while the first one is still open (it was "killed").
    second = GroupManager(db_url)
    assert second.snapshot() == before
    check_invariants(second)
    # The reopened GM continues without reusing anything.
    h2 = Harness(second)
    h2.nodes.update(harness.nodes)
    h2.join("late", "g1")
    sids = [m.sender_id for m in second.members("g1") if m.sender_id]
    assert len(sids) == len(set(sids))
    check_invariants(second)
    second.close()
    harness.gm.close()


def test_channels_are_unique_and_persistent(db_url: str) -> None:
    gm = GroupManager(db_url)
    a = gm.commission_node("a")
    b = gm.commission_node("b")
    assert a.node_sender_id != b.node_sender_id and a.gm_sender_id == b""
    a2 = gm.commission_node("a")  # re-commissioning: new secret, same identifier
    assert a2.node_sender_id == a.node_sender_id and a2.master_secret != a.master_secret
    again = open_store(db_url)
    assert again.channel("a") == a2
    assert again.channel_by_sender_id(b.node_sender_id) == b
    again.close()
    gm.close()


_KILLER = textwrap.dedent(
    """
    import sys
    from grouposcore.manager.core import GroupManager
    from tests.manager.helpers import Harness
    gm = GroupManager(sys.argv[1])
    h = Harness(gm)
    if gm.group("g") is None:
        gm.create_group("g")
    i = 0
    while True:
        h.join(f"k{i}", "g")
        if i % 3 == 2:
            h.request(f"k{i - 1}", "DELETE", f"ace-group/g/nodes/k{i - 1}")
        print(i, flush=True)
        i += 1
    """
)


def test_killed_mid_way_reopens_consistent(db_url: str) -> None:
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLER, db_url],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    done = -1
    try:
        for line in proc.stdout:
            done = int(line.split()[0])
            if done >= 12:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert done >= 12
    gm = GroupManager(db_url)
    check_invariants(gm)
    names = {m.node for m in gm.members("g")}
    # Everything reported done is durable; only the step in flight may be missing.
    for i in range(done + 1):
        if i % 3 != 1:
            assert f"k{i}" in names
        elif i + 1 <= done:
            assert f"k{i}" not in names
    g = gm.group("g")
    assert g is not None and g.num >= done
    gm.close()


def test_schema_1_database_is_migrated_to_per_version_stale_sets(db_path: Path) -> None:
    """Schema 1 filed a stale set under the version that distributed it; schema 2 files it
    under the version during which the IDs were given up, the current one included."""
    gm = GroupManager(db_path)
    h = Harness(gm)
    gm.create_group("g", backward_security=False)
    for n in ("a", "b", "c"):
        h.join(n, "g")
    h.request("a", "DELETE", "ace-group/g/nodes/a")  # version 1 distributed [0x00]
    h.request("b", "POST", "ace-group/g/nodes/b")  # 0x01 given up under version 1
    gm.close()
    db = sqlite3.connect(db_path)
    db.execute("DELETE FROM stale_sets")
    db.execute("INSERT INTO stale_sets VALUES ('g', 1, ?)", (cbor2.dumps([b"\x00"]),))
    db.execute("UPDATE meta SET value=1 WHERE key='schema'")
    db.commit()
    db.close()
    s = Store(db_path)
    sets = {n: cbor2.loads(v) for n, v in s.stale_sets("g").items()}
    assert sets == {0: [b"\x00"], 1: [b"\x01"]}
    version = s._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0]
    assert version == SCHEMA_VERSION
    s.close()


def test_sqlite_url_and_plain_path_name_the_same_file(tmp_path: Path) -> None:
    a = open_store(tmp_path / "gm.db")
    with a.transaction():
        a.set_access("n", "g", 6)
    a.close()
    b = open_store(f"sqlite:///{tmp_path / 'gm.db'}")
    assert isinstance(b, Store) and b.path == tmp_path / "gm.db"
    assert [(e.node, e.roles) for e in b.access_list()] == [("n", 6)]
    assert b.url == f"sqlite:///{tmp_path / 'gm.db'}"
    b.close()
    with pytest.raises(ManagerStoreError):
        open_store("sqlite://relative-without-slash")


def test_unreachable_postgres_is_a_store_error(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(ManagerStoreError) as e:
        open_store(f"postgresql:///nothing?host={tmp_path}&password=hunter2&connect_timeout=2")
    assert "hunter2" not in str(e.value)


def test_store_failure_answers_5_00_and_changes_nothing(db_url: str) -> None:
    """A request that hits a database failure mid-transaction gets 5.00, and the state is
    what it was before (the half-done join is rolled back on either backend)."""
    h = Harness(GroupManager(db_url))
    h.gm.create_group("g")
    h.join("a", "g")
    h.gm.allow("b", "g", (1 << 1) | (1 << 2))
    before = h.gm.snapshot()
    store = h.gm.store
    real = store.record_allocation

    def broken(*args: object) -> None:
        real(*args)
        store._execute("SELECT * FROM no_such_table", ())

    store.record_allocation = broken  # type: ignore[method-assign]
    from grouposcore.manager.params import CF_ACE_GROUPCOMM, Code

    n = h.node("b")
    ch = h.challenge("b", "g")
    p = mb.build_join_request("g", (1, 2), credential=n.credential, private_key=n.private_key,
                              challenge=ch)  # fmt: skip
    r = h.request("b", "POST", "ace-group/g", p.payload, CF_ACE_GROUPCOMM)
    assert r.code == Code.INTERNAL_SERVER_ERROR
    del store.record_allocation
    assert h.gm.snapshot() == before
    h.join("b", "g", allow=False)  # and the store still works
    h.gm.close()


def test_schema_2_database_gets_the_member_key_index(db_path: Path) -> None:
    """Schema 3 indexes the members' public keys; opening a schema-2 file fills the index
    from the stored credentials, so a duplicate key is still refused after the upgrade."""
    gm = GroupManager(db_path)
    h = Harness(gm)
    gm.create_group("g", backward_security=False)
    for n in ("a", "b"):
        h.join(n, "g")
    gm.close()
    db = sqlite3.connect(db_path)
    db.execute("DROP TABLE member_keys")
    db.execute("UPDATE meta SET value=2 WHERE key='schema'")
    db.commit()
    db.close()
    gm = GroupManager(db_path)
    assert gm.store.nodes_with_key("g", credential_key(h.nodes["a"].credential)) == ["a"]
    assert gm.store.nodes_with_key("g", credential_key(h.nodes["b"].credential)) == ["b"]
    version = gm.store._one("SELECT value FROM meta WHERE key='schema'")
    assert version is not None and version[0] == SCHEMA_VERSION == 3
    gm.close()


def test_channel_sender_ids_are_shortest_first_and_found_without_a_scan(db_url: str) -> None:
    """Commissioning a node costs a few index lookups, not a read of every channel (it was
    O(N) per node, O(N²) for a fleet): IDs go out shortest first, a re-commissioned node
    keeps its own, and one taken out of order (an EDHOC C_R) is never handed out again."""
    gm = GroupManager(db_url)
    try:
        gm.store.channels = None  # type: ignore[assignment,method-assign]  # no full scans
        sids = [gm.commission_node(f"n{i}").node_sender_id for i in range(258)]
        assert sids == [bytes([i]) for i in range(256)] + [b"\x00\x00", b"\x00\x01"]
        assert gm.commission_node("n5").node_sender_id == b"\x05"
        n0 = gm.store.channel("n0")
        assert n0 is not None
        with gm.store.transaction():  # an EDHOC channel whose C_R is 0003
            gm.store.put_channel(dataclasses.replace(n0, node="edhoc", node_sender_id=b"\x00\x03"))
        # the probe starts at the channel count (259: 0003, taken): unique, if not dense
        assert gm.commission_node("x").node_sender_id == b"\x00\x04"
        assert gm.commission_node("y").node_sender_id == b"\x00\x05"
    finally:
        gm.close()
