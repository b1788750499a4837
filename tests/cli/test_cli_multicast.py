"""``grouposcore get coap://224.0.1.187/light --security FILE`` against three
``grouposcore serve --multicast 224.0.1.187`` processes on one host, inside a private
network namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from grouposcore.cli.main import main
from tests.conftest import REPO
from tests.netns import in_private_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("mcast-cli")
    assert (
        main(["group", "provision", "client", "s1", "s2", "s3", "--out", str(directory), "-q"]) == 0
    )
    proc = subprocess.run(
        in_private_netns(sys.executable, "-m", "tests.cli.netns_cli", str(directory)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_members_on_one_host_answer_from_their_own_ports_and_echo_retries_reach_them(
    runs: dict[str, Any],
) -> None:
    """Each member answers a group request from its own unicast port, so the Echo retry
    (every server's first answer is a freshness challenge) goes back to the member that
    asked for it, not to whichever process bound the shared port last."""
    run = runs["plain"]
    assert run["rc"] == 0, run["err"]
    rows = [line.split("\t") for line in run["out"].splitlines()]
    assert sorted(row[1] for row in rows) == ["02", "03", "04"]  # the three Sender IDs
    assert sorted(row[0] for row in rows) == ["127.0.0.1:5701", "127.0.0.1:5702", "127.0.0.1:5703"]
    for _address, _sid, code, mode, payload in rows:
        # the first request after a server start is retried after an Echo challenge, by
        # unicast in pairwise mode
        assert (code, mode, payload) == ("2.05", "pairwise", "off")
    assert "3 responses (verified)" in run["err"]
    assert "Echo" in run["err"]


def test_group_request_with_json_output(runs: dict[str, Any]) -> None:
    run = runs["json"]
    assert run["rc"] == 0, run["err"]
    records = [json.loads(line) for line in run["out"].splitlines()]
    assert sorted(r["sender_id"] for r in records) == ["02", "03", "04"]
    assert {(r["code"], r["payload"], r["verified"], r["mode"]) for r in records} == {
        ("2.04", "dim 5", True, "group")
    }


def test_unsecured_group_request_gets_no_answer_from_secured_resources(
    runs: dict[str, Any],
) -> None:
    run = runs["unsecured"]
    assert run["out"] == "" and run["rc"] == 1
    assert "no response in" in run["err"]
    assert "do not answer unprotected group requests" in run["err"]


def test_unsecured_discovery_over_multicast(runs: dict[str, Any]) -> None:
    run = runs["discovery"]
    assert run["rc"] == 0, run["err"]
    rows = [line.split("\t") for line in run["out"].splitlines()]
    assert len(rows) == 3
    assert all(row[1] == "-" and row[3] == "plain" and "</light>" in row[4] for row in rows)
