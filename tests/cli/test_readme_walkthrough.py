"""The README's command-line walkthrough, executed as written inside a network namespace:
a static group with two lights served on one host, a multicast GET and PUT with default
options, then the Group Manager story (members join while the others serve, one is
evicted, the others answer without a restart, the evicted one is out)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.cli.walkthrough_netns import walkthrough_commands
from tests.conftest import REPO
from tests.netns import in_private_netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("walkthrough")
    proc = subprocess.run(
        in_private_netns(sys.executable, "-m", "tests.cli.walkthrough_netns", str(directory)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])["steps"]
    (directory / "transcript.txt").write_text(transcript(found))
    return found


def transcript(steps: list[dict[str, Any]]) -> str:
    lines = []
    for step in steps:
        lines.append(f"$ {step['command']}    [{step['seconds']} s, exit {step['rc']}]")
        lines += [f"  {line}" for line in (step["out"] + step["err"]).splitlines()]
    return "\n".join(lines) + "\n"


def _step(steps: list[dict[str, Any]], start: str, nth: int = 0) -> dict[str, Any]:
    return [s for s in steps if s["command"].startswith(start)][nth]


def _rows(step: dict[str, Any]) -> list[list[str]]:
    return [line.split("\t") for line in step["out"].splitlines()]


def test_every_foreground_command_of_the_walkthrough_ends_as_the_readme_says(
    steps: list[dict[str, Any]],
) -> None:
    assert len(steps) == len(walkthrough_commands((REPO / "README.md").read_text()))
    for step in steps:
        if not step["command"].endswith("&") and "&" not in step["command"].split("#")[0]:
            assert step["rc"] == step["expected"], transcript([step])


def test_static_group_get_and_put_reach_both_lights_with_default_options(
    steps: list[dict[str, Any]],
) -> None:
    get = _step(steps, "grouposcore get coap://224.0.1.187/light --security keys/")
    assert sorted(row[0] for row in _rows(get)) == ["127.0.0.1:5701", "127.0.0.1:5702"]
    assert {row[2] for row in _rows(get)} == {"2.05"}
    put = _step(steps, "grouposcore put coap://224.0.1.187/light --security keys/")
    assert sorted((row[0], row[2], row[4]) for row in _rows(put)) == [
        ("127.0.0.1:5701", "2.04", "on"),
        ("127.0.0.1:5702", "2.04", "on"),
    ]
    pairwise = _step(steps, "grouposcore get coap://127.0.0.1:5701/light")
    assert pairwise["out"] == "on\n" and "pairwise mode" in pairwise["err"]


def test_members_that_joined_follow_the_manager_and_the_evicted_one_is_out(
    steps: list[dict[str, Any]],
) -> None:
    # lamp1 and lamp2 were serving while the later members joined (each join rekeyed)
    get = _step(steps, "grouposcore get coap://224.0.1.187/light --security switch.state")
    assert sorted(row[0] for row in _rows(get)) == [
        "127.0.0.1:5711",
        "127.0.0.1:5712",
        "127.0.0.1:5713",
    ]
    put = _step(steps, "grouposcore put coap://224.0.1.187/light --security switch.state")
    assert sorted((row[0], row[2]) for row in _rows(put)) == [
        ("127.0.0.1:5711", "2.04"),
        ("127.0.0.1:5712", "2.04"),
    ]
    lamp3 = _step(steps, "grouposcore serve --port 5713")
    assert lamp3["rc"] == 1 and "no longer a member of lights" in lamp3["err"]
    for port in ("5711", "5712"):  # still serving, never restarted
        assert _step(steps, f"grouposcore serve --port {port}")["rc"] in (0, -15)
    rejoin = _step(steps, "grouposcore join lights --channel lamp3", 1)
    assert rejoin["rc"] == 1 and "4.03" in rejoin["err"]
    assert "not on the group's access list" in rejoin["err"]
