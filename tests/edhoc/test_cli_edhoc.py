"""``grouposcore keygen``, ``manager allow --cred``, ``manager credential`` and
``join --key --gm-cred`` end to end: a node with only its key pair and the GM's credential
joins in one command, against ``manager serve`` in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import cbor2
import pytest

from grouposcore.cli.main import main
from grouposcore.cli.membership import follows_manager, open_member
from grouposcore.edhoc.credentials import read_credential_file, read_key_file
from grouposcore.errors import EdhocCredentialError
from tests.cli.conftest import start_manager_serve, stop


def _json(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_keygen_writes_a_private_key_and_its_credential(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "node.key"
    assert main(["keygen", str(key), "--kid", "0a", "--subject", "lamp", "--json"]) == 0
    out = _json(capsys.readouterr().out)[0]
    assert out["kid"] == "0a" and out["credential"] == str(tmp_path / "node.cred")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    raw = cbor2.loads(key.read_bytes())
    assert set(raw) == {1, -1, -4} and raw[1] == 2 and raw[-1] == 1 and len(raw[-4]) == 32
    cred = read_credential_file(tmp_path / "node.cred")
    assert cred.kid == b"\x0a" and cred.subject == "lamp"
    assert cred.x == read_key_file(key).public_xy()[0]
    assert (tmp_path / "node.cred").read_text().startswith("{14: {")
    # never overwrites a key
    assert main(["keygen", str(key), "-q"]) == 1
    assert "exists" in capsys.readouterr().err


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "node.key"
    assert main(["keygen", str(key), "-q"]) == 0
    os.chmod(key, 0o640)
    with pytest.raises(EdhocCredentialError, match="chmod 600"):
        read_key_file(key)


def test_join_with_key_and_gm_credential_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gm.db"
    assert main(["manager", "group", "create", "g", "--db", str(db), "-q"]) == 0
    assert main(["keygen", str(tmp_path / "lamp.key"), "--subject", "lamp", "-q"]) == 0
    assert (
        main(
            [
                "manager",
                "allow",
                "lamp",
                "g",
                "--roles",
                "requester,responder",
                "--cred",
                str(tmp_path / "lamp.cred"),
                "--db",
                str(db),
                "--json",
            ]
        )
        == 0
    )
    allowed = _json(capsys.readouterr().out)[0]
    assert allowed["node"] == "lamp" and allowed["edhoc_kid"]
    assert not list(tmp_path.glob("*.channel.json"))  # no channel file on the EDHOC path
    gm_cred = tmp_path / "gm.cred"
    assert main(["manager", "credential", "--db", str(db), "--out", str(gm_cred), "-q"]) == 0
    proc, port = start_manager_serve(db)
    try:
        state = tmp_path / "lamp.state"
        code = main(["join", "g", "--manager", f"coap://127.0.0.1:{port}",
                     "--key", str(tmp_path / "lamp.key"), "--gm-cred", str(gm_cred),
                     "--state", str(state), "--json"])  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0, captured.err
        joined = _json(captured.out)[0]
        assert joined["started"] == "joined" and joined["sender_id"] and joined["edhoc"] == 1
        assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
        # a restarted member runs EDHOC again and resumes from its state file
        assert main(["join", "g", "--manager", f"coap://127.0.0.1:{port}",
                     "--key", str(tmp_path / "lamp.key"), "--gm-cred", str(gm_cred),
                     "--state", str(state), "--json"]) == 0  # fmt: skip
        again = _json(capsys.readouterr().out)[0]
        assert again["started"] == "resumed" and again["sender_id"] == joined["sender_id"]
        # the state is linked to its GM through the EDHOC files: after a rekeying, a command
        # using --security STATE catches up (a new EDHOC run, no channel file anywhere)
        assert follows_manager(str(state))
        assert main(["manager", "rekey", "g", "--db", str(db), "-q"]) == 0

        async def catch_up() -> tuple[int, str | None]:
            opened = await open_member(str(state), follow=False)
            try:
                return opened.member.material.num, opened.note
            finally:
                await opened.member.close()

        num, note = asyncio.run(catch_up())
        assert num == again["num"] + 1 and note is not None and "stale" in note
        # a node whose credential was never registered gets a clear EDHOC error
        assert main(["keygen", str(tmp_path / "rogue.key"), "-q"]) == 0
        assert main(["join", "g", "--manager", f"coap://127.0.0.1:{port}",
                     "--key", str(tmp_path / "rogue.key"), "--gm-cred", str(gm_cred),
                     "--state", str(tmp_path / "rogue.state")]) == 1  # fmt: skip
        assert "does not know our credential" in capsys.readouterr().err
    finally:
        err = stop(proc)
    assert "Traceback" not in err


def test_join_needs_a_channel_or_an_edhoc_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["join", "g", "--state", str(tmp_path / "s")]) == 1
    assert "--key and --gm-cred" in capsys.readouterr().err
