"""Static group and OSCORE security files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from grouposcore.errors import GroupOscoreError
from grouposcore.oscore import GroupContext, SecurityContext
from grouposcore.oscore.config import (
    ConfigError,
    load_security,
    provision_static_group,
    read_secret_file,
    write_secret_file,
)
from tests.oscore.helpers import content, get


def test_provisioned_group_members_talk(tmp_path: Path) -> None:
    docs = provision_static_group(["switch", "light-1", "light-2"], name="lights")
    paths = {n: write_secret_file(tmp_path / f"{n}.json", d) for n, d in docs.items()}
    for path in paths.values():
        assert (os.stat(path).st_mode & 0o777) == 0o600
    switch = load_security(paths["switch"])
    lights = [load_security(paths[n]) for n in ("light-1", "light-2")]
    assert isinstance(switch, GroupContext)
    request, binding = switch.protect_request(get())
    for light in lights:
        assert isinstance(light, GroupContext)
        plain, sbinding = light.unprotect_request(request)
        assert plain.options.uri_path == ["light"]
        reply, info = switch.unprotect_response(
            light.protect_response(content(b"ok"), sbinding), binding)
        assert reply.payload == b"ok" and info.sender_id == light.sender_id


def test_world_readable_file_is_refused(tmp_path: Path) -> None:
    path = write_secret_file(tmp_path / "m.json", provision_static_group(["a", "b"])["a"])
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret_file(path)


def test_sequence_file_survives_restart(tmp_path: Path) -> None:
    doc = provision_static_group(["a", "b"])["a"] | {"sequence_file": "a.seq"}
    path = write_secret_file(tmp_path / "a.json", doc)
    first = load_security(path)
    _, b1 = first.protect_request(get())
    again = load_security(path)  # a restart: numbers continue beyond the reservation
    _, b2 = again.protect_request(get())
    assert int.from_bytes(b2.request_piv, "big") > int.from_bytes(b1.request_piv, "big")


def test_oscore_file(tmp_path: Path) -> None:
    common = {"type": "oscore", "master_secret": "0102030405060708090a0b0c0d0e0f10",
              "master_salt": "9e7ca92223786340"}
    client = write_secret_file(tmp_path / "c.json",
                               common | {"sender_id": "", "recipient_id": "01"})
    ctx = load_security(client)
    assert isinstance(ctx, SecurityContext)
    assert ctx.sender_key.hex() == "f0910ed7295e6ad4b54fc793154302ff"


@pytest.mark.parametrize(
    "change",
    [{"gid": "zz"}, {"master_secret": None}, {"members": "x"}, {"members": [{"sender_id": "01"}]},
     {"credential": "a0"}, {"signature": 99}, {"type": "other"}, {"freshness": "never"}],
)
def test_malformed_group_files_are_clear_errors(tmp_path: Path, change: dict) -> None:
    doc = provision_static_group(["a", "b"])["a"]
    doc.update(change)
    path = write_secret_file(tmp_path / "a.json", doc)
    with pytest.raises(GroupOscoreError):
        load_security(path)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError):
        load_security(path)
