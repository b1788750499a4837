"""What ``grouposcore serve`` refuses to start with (issue 9 items 3 and 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grouposcore.cli.main import main
from grouposcore.cli.server import load_server_context
from grouposcore.oscore import GroupContext, SecurityContext
from grouposcore.oscore.config import ConfigError, provision_static_group, write_secret_file

OSCORE = {
    "type": "oscore",
    "master_secret": "0102030405060708090a0b0c0d0e0f10",
    "sender_id": "01",
    "recipient_id": "",
}


def test_server_file_without_sequence_file_is_refused(tmp_path: Path) -> None:
    """A server's own Partial IVs (notifications, Echo challenges) must survive a restart."""
    group = provision_static_group(["a", "b"])["a"]
    del group["sequence_file"]
    for name, doc in (("oscore", OSCORE), ("group", group)):
        path = write_secret_file(tmp_path / f"{name}.json", doc)
        with pytest.raises(ConfigError, match="sequence_file"):
            load_server_context(str(path))
    silent = group | {"sender_id": None}
    path = write_secret_file(tmp_path / "silent.json", silent)
    assert isinstance(load_server_context(str(path)), GroupContext)  # it never sends


def test_server_contexts_start_with_invalid_windows(tmp_path: Path) -> None:
    oscore = write_secret_file(tmp_path / "o.json", OSCORE | {"sequence_file": "o.seq"})
    group = write_secret_file(tmp_path / "g.json", provision_static_group(["a", "b"])["a"])
    peer = load_server_context(str(oscore))
    member = load_server_context(str(group))
    assert isinstance(peer, SecurityContext) and not peer.replay_window.valid
    assert isinstance(member, GroupContext)
    assert not any(rc.replay_window.valid for rc in member.recipients.values())


@pytest.mark.parametrize("old", ["drop-first", "accept"])
def test_serve_refuses_retired_freshness_values(
    tmp_path: Path, old: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "0", "--freshness", old])
    assert info.value.code == 2
    assert "insecure-accept-replays-after-restart" in capsys.readouterr().err
    path = write_secret_file(
        tmp_path / "g.json", provision_static_group(["a", "b"])["a"] | {"freshness": old}
    )
    with pytest.raises(ConfigError, match="no longer supported"):
        load_server_context(str(path))
