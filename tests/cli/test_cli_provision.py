"""``grouposcore group provision``: one private file per member that loads as a group."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grouposcore.cli.main import build_parser, main
from grouposcore.oscore import GroupContext
from grouposcore.oscore.config import load_security, read_secret_file


def test_provision_writes_one_private_file_per_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "g"
    assert (
        main(
            [
                "group",
                "provision",
                "a",
                "b",
                "c",
                "--out",
                str(out),
                "--name",
                "kitchen",
                "--gid",
                "0a0b",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{out / n}.json\t{n}\t{sid}" for n, sid in (("a", "01"), ("b", "02"), ("c", "03"))
    ]
    contexts = {}
    for name in "abc":
        path = out / f"{name}.json"
        assert os.stat(path).st_mode & 0o777 == 0o600
        doc = read_secret_file(path)
        assert doc["name"] == "kitchen" and doc["sequence_file"] == f"{name}.seq"
        ctx = load_security(path)
        assert isinstance(ctx, GroupContext)
        contexts[name] = ctx
    assert {c.gid for c in contexts.values()} == {bytes.fromhex("0a0b")}
    assert set(contexts["a"].recipients) == {b"\x02", b"\x03"}
    # every member holds the others' credentials, never their private keys
    a_doc = read_secret_file(out / "a.json")
    assert all(set(m) == {"name", "sender_id", "credential"} for m in a_doc["members"])


def test_provision_json_and_ecdsa(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["group", "provision", "x", "y", "--out", str(tmp_path), "--signature", "-7", "--json"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in report["members"]] == ["x", "y"]
    assert report["group"] == "group" and len(bytes.fromhex(report["gid"])) == 4
    ctx = load_security(tmp_path / "x.json")
    assert isinstance(ctx, GroupContext) and ctx.signature is not None
    assert ctx.signature.id == -7


def test_provision_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["group", "provision", "a", "b", "--out", str(tmp_path), "-q"]) == 0
    before = (tmp_path / "a.json").read_bytes()
    assert main(["group", "provision", "a", "b", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "a.json").read_bytes() == before
    assert main(["group", "provision", "a", "b", "--out", str(tmp_path), "--force", "-q"]) == 0
    assert (tmp_path / "a.json").read_bytes() != before


@pytest.mark.parametrize("names", [["a", "a"], ["../evil"], ["a b"]])
def test_provision_rejects_bad_names(tmp_path: Path, names: list[str]) -> None:
    assert main(["group", "provision", *names, "--out", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_provision_rejects_bad_gid(tmp_path: Path) -> None:
    assert main(["group", "provision", "a", "--out", str(tmp_path), "--gid", "xyz"]) == 2


def test_signature_choices_are_enforced(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(
            ["group", "provision", "a", "--out", str(tmp_path), "--signature", "-35"]
        )
    assert exc.value.code == 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("get", "observe", "serve", "group"))
