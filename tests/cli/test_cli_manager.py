"""``grouposcore manager ...`` and ``grouposcore join`` end to end on loopback: offline
administration on the database, ``manager serve`` in a subprocess picking those changes up,
members joining through channel files and resuming from their state files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
from pathlib import Path

import pytest

from grouposcore.cli.main import main
from grouposcore.manager.runtime import GroupMember, read_channel_file
from tests.cli.conftest import start_manager_serve, stop


def _json(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def caught_c_sid(shown: dict) -> str:
    return next(m["sender_id"] for m in shown["members"] if m["node"] == "c")


def test_offline_administration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "gm.db")
    assert (
        main(["manager", "group", "create", "g", "--db", db, "--algs=-7,10,10,-27", "--json"]) == 0
    )
    created = _json(capsys.readouterr().out)[0]
    assert created["group"] == "g" and created["num"] == 0
    assert _mode(Path(db)) == 0o600
    chan = tmp_path / "a.channel.json"
    assert (
        main(
            [
                "manager",
                "allow",
                "g",
                "a",
                "--roles",
                "requester,responder",
                "--db",
                db,
                "--channel-out",
                str(chan),
                "--manager",
                "coap://127.0.0.1:5683",
                "-q",
            ]
        )
        == 0
    )
    assert _mode(chan) == 0o600
    channel, uri, pinned = read_channel_file(chan)
    assert channel.node == "a" and uri == "coap://127.0.0.1:5683" and set(pinned) == {"g"}
    # Allowing the node into a second group keeps its channel (same keys) and pins both GMs.
    assert main(["manager", "group", "create", "h", "--db", db, "-q"]) == 0
    assert (
        main(
            [
                "manager",
                "allow",
                "h",
                "a",
                "--roles",
                "monitor",
                "--db",
                db,
                "--channel-out",
                str(chan),
                "-q",
            ]
        )
        == 0
    )
    again, uri2, pinned2 = read_channel_file(chan)
    assert again == channel and uri2 == uri and set(pinned2) == {"g", "h"}
    assert main(["manager", "show", "--db", db, "--json"]) == 0
    shown = {r["group"]: r for r in _json(capsys.readouterr().out)}
    assert shown["g"]["algs"]["sign"] == -7 and shown["g"]["members"] == []
    assert shown["g"]["allowed"] == [{"node": "a", "roles": "requester,responder"}]
    assert shown["h"]["allowed"] == [{"node": "a", "roles": "monitor"}]
    # Errors: unknown group, unknown role, evicting a non-member.
    assert main(["manager", "show", "nope", "--db", db]) == 1
    assert main(["manager", "allow", "nope", "a", "--roles", "requester", "--db", db]) == 1
    with pytest.raises(SystemExit) as e:
        main(["manager", "allow", "g", "a", "--roles", "boss", "--db", db])
    assert e.value.code == 2
    assert main(["manager", "evict", "g", "a", "--db", db]) == 1  # not a member
    capsys.readouterr()


def test_serve_join_resume_evict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "gm.db")
    assert main(["manager", "group", "create", "g", "--db", db, "-q"]) == 0
    channels = {}
    for node in ("a", "b"):
        channels[node] = tmp_path / f"{node}.channel.json"
        assert (
            main(
                [
                    "manager",
                    "allow",
                    "g",
                    node,
                    "--roles",
                    "requester,responder",
                    "--db",
                    db,
                    "--channel-out",
                    str(channels[node]),
                    "--manager",
                    "coap://127.0.0.1:5683",
                    "-q",
                ]
            )
            == 0
        )
    proc, port = start_manager_serve(Path(db))
    uri = f"coap://127.0.0.1:{port}"
    try:
        states = {n: tmp_path / f"{n}.state" for n in ("a", "b", "c")}
        for node in ("a", "b"):
            assert (
                main(
                    [
                        "join",
                        "g",
                        "--manager",
                        uri,
                        "--channel",
                        str(channels[node]),
                        "--state",
                        str(states[node]),
                        "--json",
                    ]
                )
                == 0
            )
        joined = {r["node"]: r for r in _json(capsys.readouterr().out)}
        assert joined["a"]["started"] == joined["b"]["started"] == "joined"
        assert joined["a"]["sender_id"] != joined["b"]["sender_id"]
        assert joined["b"]["num"] == 2  # backward security: every join rekeyed
        assert _mode(states["a"]) == 0o600
        # A second run resumes from the state file: no new join, same Sender ID.
        assert (
            main(
                [
                    "join",
                    "g",
                    "--manager",
                    uri,
                    "--channel",
                    str(channels["a"]),
                    "--state",
                    str(states["a"]),
                    "--json",
                ]
            )
            == 0
        )
        resumed = _json(capsys.readouterr().out)[0]
        assert resumed["started"] == "resumed"
        assert resumed["sender_id"] == joined["a"]["sender_id"] and resumed["num"] == 2
        assert joined["b"]["sender_id"] in resumed["peers"]

        async def live() -> None:
            # c is allowed while the server runs: the server installs its new channel.
            channels["c"] = tmp_path / "c.channel.json"
            assert (
                main(
                    [
                        "manager",
                        "allow",
                        "g",
                        "c",
                        "--roles",
                        "requester,responder",
                        "--db",
                        db,
                        "--channel-out",
                        str(channels["c"]),
                        "--manager",
                        "coap://127.0.0.1:5683",
                        "-q",
                    ]
                )
                == 0
            )
            channel, _, pinned = read_channel_file(channels["c"])
            member = None
            for _ in range(40):  # until the server's sync picked the channel up
                try:
                    member = await GroupMember.open(
                        None, ("127.0.0.1", port), channel, "g", [1, 2], states["c"],
                        gm_credential=pinned["g"], timeout=5.0,
                    )  # fmt: skip
                    break
                except Exception:  # 4.01 until the server installed the channel
                    await asyncio.sleep(0.2)
            assert member is not None
            try:
                num = member.material.num
                b_sid = bytes.fromhex(joined["b"]["sender_id"])
                assert b_sid in member.material.peers
                # Offline eviction; the server pushes the rekeying with b's stale Sender ID.
                assert main(["manager", "evict", "g", "b", "--db", db, "-q"]) == 0
                material = await member.wait_for(num + 1, timeout=10)
                assert b_sid not in material.peers
                assert main(["manager", "rekey", "g", "--db", db, "-q"]) == 0
                assert (await member.wait_for(num + 2, timeout=10)).num == num + 2
            finally:
                await member.close()

        asyncio.run(asyncio.wait_for(live(), 90))
        capsys.readouterr()
        assert main(["manager", "show", "g", "--db", db, "--json"]) == 0
        shown = _json(capsys.readouterr().out)[0]
        assert sorted(m["node"] for m in shown["members"]) == ["a", "c"]
        assert "b" not in [a["node"] for a in shown["allowed"]]
        # b was evicted: resuming fails over to a new join, which the GM refuses (4.03).
        assert (
            main(
                [
                    "join",
                    "g",
                    "--manager",
                    uri,
                    "--channel",
                    str(channels["b"]),
                    "--state",
                    str(states["b"]),
                    "--timeout",
                    "5",
                ]
            )
            == 1
        )
        assert "4.03" in capsys.readouterr().err
        assert not states["b"].exists()  # the ended membership's state is gone
        # a was offline during both rekeyings: it catches up from its state file.
        assert (
            main(
                [
                    "join",
                    "g",
                    "--channel",
                    str(channels["a"]),
                    "--manager",
                    uri,
                    "--state",
                    str(states["a"]),
                    "--json",
                ]
            )
            == 0
        )
        caught = _json(capsys.readouterr().out)[0]
        assert caught["started"] == "resumed" and caught["num"] == shown["num"]
        assert joined["b"]["sender_id"] not in caught["peers"]
        # A Monitor joins without a key and gets no Sender ID.
        chan_m = tmp_path / "m.channel.json"
        assert (
            main(
                [
                    "manager",
                    "allow",
                    "g",
                    "m",
                    "--roles",
                    "monitor",
                    "--db",
                    db,
                    "--channel-out",
                    str(chan_m),
                    "--manager",
                    uri,
                    "-q",
                ]
            )
            == 0
        )
        for _ in range(40):  # the server installs m's channel within --sync
            if (
                main(
                    [
                        "join",
                        "g",
                        "--channel",
                        str(chan_m),
                        "--roles",
                        "monitor",
                        "--state",
                        str(tmp_path / "m.state"),
                        "--json",
                        "--timeout",
                        "5",
                    ]
                )
                == 0
            ):
                break
            time.sleep(0.2)
        monitor = _json(capsys.readouterr().out)[0]
        assert monitor["sender_id"] is None and monitor["roles"] == "monitor"
        assert set(monitor["peers"]) == {joined["a"]["sender_id"], caught_c_sid(shown)}
        assert main(["manager", "show", "g", "--db", db]) == 0
        text = capsys.readouterr().out
        assert "  member m: monitor, Sender ID -" in text and "  member a: " in text
    finally:
        err = stop(proc)
    assert "Traceback" not in err, err


def test_serve_rekeys_expired_material_and_installs_new_channels(tmp_path: Path) -> None:
    from grouposcore.cli.manager_serve import SyncedService
    from grouposcore.manager.core import GroupManager

    db = tmp_path / "gm.db"
    assert main(["manager", "group", "create", "g", "--db", str(db), "--lifetime", "60", "-q"]) == 0
    gm = GroupManager(db)
    try:
        svc = SyncedService(gm)
        g = gm.group("g")
        assert g is not None
        svc.sync(now=g.exp - 1)
        assert gm.group("g").num == 0  # type: ignore[union-attr]
        svc.sync(now=g.exp)
        after = gm.group("g")
        assert after is not None and after.num == 1 and after.gid != g.gid
        # A channel commissioned by another process is installed at the next sync.
        assert (
            main(
                [
                    "manager",
                    "allow",
                    "g",
                    "n",
                    "--roles",
                    "requester",
                    "--db",
                    str(db),
                    "--channel-out",
                    str(tmp_path / "n.json"),
                    "--manager",
                    "coap://127.0.0.1:5683",
                    "-q",
                ]
            )
            == 0
        )
        assert "n" not in svc._contexts
        svc.sync()
        assert "n" in svc._contexts
    finally:
        gm.close()


def test_member_state_files_drive_serve_and_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Members that joined through the GM use their state files with serve, get/put."""
    from tests.cli.conftest import start_serve

    db = str(tmp_path / "gm.db")
    assert main(["manager", "group", "create", "lights", "--db", db, "-q"]) == 0
    for node, roles in (("switch", "requester"), ("lamp", "responder")):
        assert (
            main(
                [
                    "manager",
                    "allow",
                    "lights",
                    node,
                    "--roles",
                    roles,
                    "--db",
                    db,
                    "--channel-out",
                    str(tmp_path / f"{node}.chan"),
                    "--manager",
                    "coap://127.0.0.1:5683",
                    "-q",
                ]
            )
            == 0
        )
    gm, port = start_manager_serve(Path(db))
    try:
        # the switch's join rekeys the group (backward security); the lamp's second run
        # of join resumes and brings its state file up to the current keying material
        for node, roles in (("lamp", "responder"), ("switch", "requester"), ("lamp", "responder")):
            assert (
                main(
                    [
                        "join",
                        "lights",
                        "--manager",
                        f"coap://127.0.0.1:{port}",
                        "--roles",
                        roles,
                        "--channel",
                        str(tmp_path / f"{node}.chan"),
                        "--state",
                        str(tmp_path / f"{node}.state"),
                        "-q",
                    ]
                )
                == 0
            )
        lamp, lamp_port = start_serve("--security", str(tmp_path / "lamp.state"))
        try:
            uri = f"coap://127.0.0.1:{lamp_port}/light"
            state = str(tmp_path / "switch.state")
            assert main(["put", uri, "--security", state, "--payload", "dim 40", "--json"]) == 0
            first = _json(capsys.readouterr().out)[0]
            assert first["verified"] and first["code"] == "2.04"
            assert main(["get", uri, "--security", state, "--json"]) == 0
            second = _json(capsys.readouterr().out)[0]
            assert second["payload"] == "dim 40" and second["mode"] == "group"
        finally:
            stop(lamp)
    finally:
        stop(gm)


def test_serve_follows_its_group_manager_and_requests_catch_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lamp served from its member state keeps answering after the group is rekeyed (a
    new member joined) without a restart; the switch's stale state catches up before it
    sends and says so; the eviction notice stops the lamp's server."""
    from tests.cli.conftest import start_serve

    db = str(tmp_path / "gm.db")
    assert main(["manager", "group", "create", "lights", "--db", db, "-q"]) == 0
    for node, roles in (("switch", "requester"), ("lamp", "responder"), ("late", "requester")):
        assert (
            main(
                [
                    "manager",
                    "allow",
                    "lights",
                    node,
                    "--roles",
                    roles,
                    "--db",
                    db,
                    "--channel-out",
                    str(tmp_path / f"{node}.chan"),
                    "--manager",
                    "coap://127.0.0.1:5683",
                    "-q",
                ]
            )
            == 0
        )
    gm, port = start_manager_serve(Path(db))

    def join(node: str, roles: str) -> None:
        assert (
            main(
                [
                    "join",
                    "lights",
                    "--manager",
                    f"coap://127.0.0.1:{port}",
                    "--roles",
                    roles,
                    "--channel",
                    str(tmp_path / f"{node}.chan"),
                    "--state",
                    str(tmp_path / f"{node}.state"),
                    "-q",
                ]
            )
            == 0
        )

    try:
        join("lamp", "responder")
        join("switch", "requester")
        lamp, lamp_port = start_serve("--security", str(tmp_path / "lamp.state"))
        try:
            uri = f"coap://127.0.0.1:{lamp_port}/light"
            switch = str(tmp_path / "switch.state")
            assert main(["put", uri, "--security", switch, "--payload", "dim 40"]) == 0
            capsys.readouterr()
            join("late", "requester")  # rekeys the group: both states are stale now
            assert main(["get", uri, "--security", switch, "--json"]) == 0
            captured = capsys.readouterr()
            assert "caught up with the Group Manager" in captured.err
            assert _json(captured.out)[0]["payload"] == "dim 40"
            # the switch's state file was brought up to date: no note the second time
            assert main(["get", uri, "--security", switch, "--json"]) == 0
            assert "stale" not in capsys.readouterr().err
            assert main(["manager", "evict", "lights", "lamp", "--db", db, "-q"]) == 0
            assert lamp.wait(timeout=30) == 1
            err = stop(lamp)
            assert "no longer a member of lights" in err
            # its state went with the membership; using it says so
            assert main(["get", uri, "--security", str(tmp_path / "lamp.state")]) == 2
            assert "the membership ended" in capsys.readouterr().err
        finally:
            stop(lamp)
    finally:
        stop(gm)


def test_allow_takes_group_then_node_like_evict_and_the_old_order_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "gm.db")
    assert main(["manager", "group", "create", "g", "--db", db, "-q"]) == 0
    chan = str(tmp_path / "n.chan")
    assert (
        main(
            [
                "manager",
                "allow",
                "g",
                "n",
                "--roles",
                "requester",
                "--db",
                db,
                "--channel-out",
                chan,
                "--manager",
                "coap://127.0.0.1",
                "--json",
            ]
        )
        == 0
    )
    assert _json(capsys.readouterr().out)[0]["node"] == "n"
    assert (
        main(
            [
                "manager",
                "allow",
                "m",
                "g",
                "--roles",
                "requester",
                "--db",
                db,
                "--channel-out",
                chan,
                "--manager",
                "coap://127.0.0.1",
                "--json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert _json(captured.out)[0] == {
        "node": "m",
        "group": "g",
        "roles": "requester",
        "channel": chan,
    }
    assert "deprecated" in captured.err


def test_allow_asks_for_the_manager_uri_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A channel file without the GM's address would only fail later, at join."""
    db = str(tmp_path / "gm.db")
    assert main(["manager", "group", "create", "g", "--db", db, "-q"]) == 0
    chan = tmp_path / "n.chan"
    assert (
        main(
            [
                "manager",
                "allow",
                "g",
                "n",
                "--roles",
                "requester",
                "--db",
                db,
                "--channel-out",
                str(chan),
            ]
        )
        == 1
    )
    assert "give --manager URI" in capsys.readouterr().err
    assert not chan.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["show"],
        ["evict", "g", "n"],
        ["rekey", "g"],
        ["allow", "g", "n", "--roles", "requester"],
        ["serve"],
    ],
)
def test_a_mistyped_database_is_an_error_not_a_new_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    db = tmp_path / "nosuch.db"
    assert main(["manager", *command, "--db", str(db)]) == 1
    assert f"no Group Manager database {db}" in capsys.readouterr().err
    assert not db.exists()


def test_join_refusals_say_what_the_group_manager_means() -> None:
    from grouposcore.cli.join_cmd import join_refusal
    from grouposcore.errors import GroupManagerRequestError
    from grouposcore.manager.params import Code, ErrorId, Role

    def said(code: int, error_id: int | None = None) -> str:
        error = GroupManagerRequestError("Group Manager answered", code=code, error_id=error_id)
        return join_refusal(error, "lamp", "lights", [Role.RESPONDER])

    assert "lamp may not join lights as responder (not on the group's access list" in said(
        Code.FORBIDDEN
    )
    assert "has no group 'lights'" in said(Code.NOT_FOUND)
    assert "does not know lamp's channel" in said(Code.UNAUTHORIZED)
    assert "[membership terminated]" in said(Code.FORBIDDEN, ErrorId.MEMBERSHIP_TERMINATED)


def test_serve_says_when_its_group_manager_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "gm.db")
    assert main(["manager", "group", "create", "lights", "--db", db, "-q"]) == 0
    assert (
        main(
            [
                "manager",
                "allow",
                "lights",
                "lamp",
                "--roles",
                "responder",
                "--db",
                db,
                "--channel-out",
                str(tmp_path / "lamp.chan"),
                "--manager",
                "coap://127.0.0.1:5683",
                "-q",
            ]
        )
        == 0
    )
    gm, port = start_manager_serve(Path(db))
    try:
        assert (
            main(
                [
                    "join",
                    "lights",
                    "--manager",
                    f"coap://127.0.0.1:{port}",
                    "--roles",
                    "responder",
                    "--channel",
                    str(tmp_path / "lamp.chan"),
                    "--state",
                    str(tmp_path / "lamp.state"),
                    "-q",
                ]
            )
            == 0
        )
    finally:
        stop(gm)
    # the GM's port is closed: the ICMP error says so at once (a network error, exit 1);
    # a GM host that stays silent is a timeout (exit 3)
    assert main(
        [
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--gm-timeout",
            "1",
            "--security",
            str(tmp_path / "lamp.state"),
        ]
    ) in (1, 3)
    err = capsys.readouterr().err
    assert f"the Group Manager at coap://127.0.0.1:{port} did not answer" in err


def test_serve_bounds_rejoins_and_join_says_when_to_try_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A member that lost its state file joins again: the GM rekeys (new Gid). Beyond
    ``--rejoin-burst`` joins of the node (its first one included) it is refused with 5.03,
    and ``join`` says when to retry."""
    db = str(tmp_path / "gm.db")
    assert (
        main(["manager", "group", "create", "g", "--db", db, "-q", "--no-backward-security"]) == 0
    )
    channel = tmp_path / "a.channel.json"
    assert (
        main(
            [
                "manager",
                "allow",
                "g",
                "a",
                "--roles",
                "requester,responder",
                "--db",
                db,
                "--channel-out",
                str(channel),
                "--manager",
                "coap://127.0.0.1:5683",
                "-q",
            ]
        )
        == 0
    )
    proc, port = start_manager_serve(Path(db), "--rejoin-burst", "2", "--rejoin-interval", "600")
    state = tmp_path / "a.state"
    join = [
        "join",
        "g",
        "--manager",
        f"coap://127.0.0.1:{port}",
        "--channel",
        str(channel),
        "--state",
        str(state),
        "--json",
    ]
    try:
        assert main(join) == 0
        first = _json(capsys.readouterr().out)[0]
        state.unlink()  # the node lost its state: it joins again while still a member
        assert main(join) == 0
        again = _json(capsys.readouterr().out)[0]
        assert again["started"] == "joined" and again["gid"] != first["gid"]
        assert again["num"] == first["num"] + 1
        state.unlink()
        assert main(join) != 0
        err = capsys.readouterr().err
        assert "5.03" in err and "a joined g more often than the Group Manager allows" in err
        wait = re.search(r"try again in (\d+) s", err)
        assert wait is not None and 590 <= int(wait.group(1)) <= 600
    finally:
        stop(proc)
