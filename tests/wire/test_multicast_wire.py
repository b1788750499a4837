"""Group OSCORE over real IPv4 multicast (224.0.1.187 on ``lo``) in a private network
namespace: grouposcore with itself and with aiocoap 0.4.17 as real peers.

The scenarios (tests/wire/mcast_scenarios.py) run in one child process started with
``unshare -n``; this module checks what each of them saw. Needs root for the namespace.
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

SERVER_NAMES = ["s1", "s2", "s3"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory = tmp_path_factory.mktemp("mcast")
    proc = subprocess.run(
        in_private_netns(sys.executable, "-m", "tests.wire.mcast_scenarios", str(directory)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scenario(results: dict[str, Any], name: str) -> dict[str, Any]:
    found = results[name]
    assert "error" not in found, found.get("error")
    return found


def by_sender(responses: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {r["sender_id"]: r for r in responses}
    assert len(out) == len(responses), f"one response per server expected: {responses}"
    return out


def check_three(
    found: dict[str, Any], *, group_mode: bool, echo_retried: int | None = None
) -> None:
    """Exactly one verified 2.05 from each server, with the payload of that server; the
    server at index ``echo_retried`` answered a pairwise repeat after its Echo challenge."""
    responses = by_sender(found["responses"])
    assert set(responses) == set(found["servers"].values())
    for index, (name, sid) in enumerate(found["servers"].items()):
        r = responses[sid]
        assert (r["code"], r["payload"]) == (69, name)
        assert r["group_mode"] is (False if index == echo_retried else group_mode)
    assert found["runs"] == [1, 1, 1]


def test_group_request_answered_in_group_mode(results: dict[str, Any]) -> None:
    found = scenario(results, "group_mode")
    check_three(found, group_mode=True)
    for r in found["responses"]:
        assert r["remote"] == ["127.0.0.1", 5683]


def test_group_request_answered_in_pairwise_mode(results: dict[str, Any]) -> None:
    check_three(scenario(results, "pairwise_responses"), group_mode=False)


def test_late_joiner_challenges_a_multicast_request(results: dict[str, Any]) -> None:
    found = scenario(results, "late_joiner")
    check_three(found, group_mode=True, echo_retried=2)
    assert found["failures"] == [[], [], ["FreshnessRequired"]]


def test_unprotected_multicast_request_to_secured_resource_gets_silence(
    results: dict[str, Any],
) -> None:
    found = scenario(results, "unprotected")
    assert found["secured"] == []  # no amplification, not even an error response
    assert found["runs"] == [0, 0, 0]
    assert [(r["code"], r["payload"]) for r in found["plain"]] == [(69, "plain")] * 3


def test_replayed_multicast_request_gets_silence(results: dict[str, Any]) -> None:
    found = scenario(results, "replay")
    check_three(found, group_mode=True)
    assert found["replayed"] == []
    assert found["failures"] == [["ReplayError"]] * 3


def test_grouposcore_client_and_three_aiocoap_servers(results: dict[str, Any]) -> None:
    # aiocoap's group server answers in pairwise mode
    check_three(scenario(results, "aiocoap_servers"), group_mode=False)


def test_aiocoap_client_and_three_grouposcore_servers(results: dict[str, Any]) -> None:
    check_three(scenario(results, "aiocoap_client_group_responses"), group_mode=True)


def test_aiocoap_client_and_pairwise_answers(results: dict[str, Any]) -> None:
    check_three(scenario(results, "aiocoap_client_pairwise_responses"), group_mode=False)
