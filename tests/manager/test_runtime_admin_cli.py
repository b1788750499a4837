"""``grouposcore manager group ... --manager coap://...``: the CLI administers a running GM
over an administrator's OSCORE channel; the same commands work on the database file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grouposcore.cli.main import main
from tests.manager.test_runtime_gm_replicas import serve, stop


def _json(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_cli_administers_a_running_gm_remotely(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = db_url
    admin = str(tmp_path / "admin.json")
    lamp = str(tmp_path / "lamp.json")
    assert main(["manager", "group", "create", "base", "--db", db, "-q"]) == 0
    assert main(["manager", "admin", "root", "--db", db, "--channel-out", admin, "-q"]) == 0
    assert main(["manager", "allow", "base", "lamp", "--roles", "requester", "--db", db,
                 "--manager", "coap://127.0.0.1:5683", "--channel-out", lamp,
                 "-q"]) == 0  # fmt: skip
    proc, (host, port) = serve(db)
    try:
        remote = ["--manager", f"coap://{host}:{port}", "--channel", admin, "--json"]
        capsys.readouterr()
        assert main(["manager", "group", "create", "hall", "--description", "the hall",
                     *remote]) == 0  # fmt: skip
        created = _json(capsys.readouterr().out)[0]
        assert created["group_name"] == "hall"
        assert created["joining_uri"].endswith("/ace-group/hall/")
        assert main(["manager", "group", "list", *remote]) == 0
        assert _json(capsys.readouterr().out)[0]["groups"] == ["base", "hall"]
        assert main(["manager", "group", "get", "hall", *remote]) == 0
        conf = _json(capsys.readouterr().out)[0]
        assert conf["group_description"] == "the hall" and conf["active"] is True

        # a node without admin rights is refused
        outsider = ["--manager", f"coap://{host}:{port}", "--channel", lamp]
        assert main(["manager", "group", "create", "mine", *outsider]) == 1
        assert "4.03" in capsys.readouterr().err
        assert main(["manager", "group", "delete", "hall", *outsider]) == 1

        assert main(["manager", "group", "delete", "hall", *remote]) == 1  # still active
        assert "error 10" in capsys.readouterr().err
        assert main(["manager", "group", "set", "hall", "--inactive", *remote]) == 0
        assert main(["manager", "group", "delete", "hall", *remote]) == 0
        capsys.readouterr()
        # the local mode reads the same database
        assert main(["manager", "group", "list", "--db", db, "--json"]) == 0
        assert _json(capsys.readouterr().out)[0]["groups"] == ["base"]
        assert main(["manager", "group", "get", "base", "--db", db, "--json"]) == 0
        assert _json(capsys.readouterr().out)[0]["group_name"] == "base"
    finally:
        stop([proc])
