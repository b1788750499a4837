"""GroupMembers answering IPv4 multicast group requests, before and after an eviction, in a
private network namespace (needs root; see mcast_members.py for the scenario)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.netns import in_private_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory: Path = tmp_path_factory.mktemp("mcast-members")
    proc = subprocess.run(
        in_private_netns(sys.executable, "-m", "tests.manager.mcast_members", str(directory)),
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in result, result["error"]
    return result


def test_every_responder_answers_the_group_request(found: dict[str, Any]) -> None:
    sids = found["sids"]
    assert sids["m"] == ""  # the Monitor holds no Sender ID and stays silent
    assert found["before"] == [
        {"code": 69, "payload": n, "sender_id": sids[n], "group_mode": True}
        for n in ("r1", "r2", "r3")
    ]


def test_after_eviction_the_evicted_member_is_out(found: dict[str, Any]) -> None:
    sids = found["sids"]
    assert found["after"] == [
        {"code": 69, "payload": n, "sender_id": sids[n], "group_mode": True} for n in ("r1", "r2")
    ]
    # r3 could no longer verify the second request; the Monitor read both.
    assert found["runs"] == {"r1": 2, "r2": 2, "r3": 1, "m": 2}
