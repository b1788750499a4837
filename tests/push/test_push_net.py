"""Firmware push over real multicast in a private network namespace: 1 MiB to 20 members
directly and through a relay dropping 5 % of all datagrams, smaller files with 20 % and
40 % loss and after an outage of 200 datagrams (all with the default settings), and a
tampered block.

Each scenario runs in a child process started with ``unshare -n`` (tests/push/net.py) and
prints what it saw; the hashes every member computed are compared with the file's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from tests.netns import in_private_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)


def run_scenario(kind: str, members: int, size: int, loss: float = 0.05) -> dict[str, Any]:
    env = dict(os.environ, PUSH_MEMBERS=str(members), PUSH_SIZE=str(size), PUSH_LOSS=str(loss))
    proc = subprocess.run(
        in_private_netns(sys.executable, "-m", "tests.push.net", kind),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])[kind]
    assert "error" not in found, found["error"]
    print(
        f"{kind}: {size} bytes to {members} members in {found['seconds']} s, "
        f"{found['result']['repairs_sent']} repairs, {found['result']['rounds']} rounds"
    )
    return found


def check_everyone_has_the_file(found: dict[str, Any], members: int) -> None:
    assert found["ok"]
    assert found["member_hashes"] == [found["sha256"]] * members
    result = found["result"]
    assert [m["state"] for m in result["members"]] == ["complete"] * members
    assert {m["sha256"] for m in result["members"]} == {found["sha256"]}
    assert result["blocks_sent"] == result["blocks"]


def test_one_mebibyte_to_twenty_members_over_multicast() -> None:
    found = run_scenario("direct", 20, 1 << 20)
    check_everyone_has_the_file(found, 20)
    assert found["oscore_failures"] == [[]] * 20
    # every block stored exactly once per member: no block went around twice for nothing
    assert found["stored"] == [found["result"]["blocks"]] * 20


def test_one_mebibyte_to_twenty_members_with_five_percent_loss() -> None:
    found = run_scenario("lossy", 20, 1 << 20)
    check_everyone_has_the_file(found, 20)
    relay = found["relay"]
    share = relay["dropped"] / (relay["dropped"] + relay["forwarded"])
    assert 0.04 < share < 0.06
    assert found["result"]["repairs_sent"] > 0 and found["result"]["rounds"] > 1
    assert found["stored"] == [found["result"]["blocks"]] * 20


@pytest.mark.parametrize("loss", [0.2, 0.4])
def test_heavy_independent_loss_completes_with_defaults(loss: float) -> None:
    """Finding 5: bitmap reports, repairs from the latest report of every member (also
    those whose report was lost this round), rounds until nobody gets closer."""
    found = run_scenario("lossy", 5, 128 << 10, loss)
    check_everyone_has_the_file(found, 5)
    relay = found["relay"]
    share = relay["dropped"] / (relay["dropped"] + relay["forwarded"])
    assert loss - 0.05 < share < loss + 0.05


def test_an_outage_of_two_hundred_datagrams_is_repaired() -> None:
    found = run_scenario("burst", 5, 128 << 10)
    check_everyone_has_the_file(found, 5)
    assert found["relay"]["dropped"] == 200
    assert found["result"]["repairs_sent"] >= 150


def test_spoofed_junk_with_the_next_message_ids_evicts_no_real_block() -> None:
    """Finding 4: deduplication keyed by what the sender signed, after verification."""
    found = run_scenario("junk", 3, 256 << 10)
    check_everyone_has_the_file(found, 3)
    assert len(found["oscore_failures"][0]) == 200 and found["oscore_failures"][1:] == [[]] * 2
    assert found["result"]["repairs_sent"] == 0  # no real block was taken for a duplicate
    assert found["stored"] == [found["result"]["blocks"]] * 3


def test_tampered_block_is_rejected_by_oscore_and_repaired() -> None:
    found = run_scenario("tamper", 4, 64 << 10)
    check_everyone_has_the_file(found, 4)
    # the altered datagram failed verification at member 0 only, never reached /fw ...
    assert len(found["oscore_failures"][0]) == 1 and found["oscore_failures"][1:] == [[]] * 3
    assert found["rejected_by_resource"] == [0] * 4
    # ... and exactly that block came again over unicast
    assert found["result"]["repairs_sent"] == 1
    assert sum(m["repairs"] for m in found["result"]["members"]) == 1
