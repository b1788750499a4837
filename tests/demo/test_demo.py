"""``grouposcore demo`` as a user runs it: a child process, inside a network namespace for
multicast, checked by its exit status and the counts it prints."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from grouposcore.cli.demo_cmd import parse_size
from tests.conftest import REPO

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)


def demo(*args: str, netns: bool = True, timeout: float = 120) -> tuple[int, str, str, float]:
    cmd = [sys.executable, "-m", "grouposcore.cli.main", "demo", *args]
    if netns:
        cmd = ["unshare", "-n", *cmd]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    return proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - start


def rounds(stdout: str) -> list[tuple[str, int, int]]:
    return [
        (m.group(1), int(m.group(2)), int(m.group(3)))
        for m in re.finditer(r"^round (.+?): (\d+) of (\d+) verified", stdout, re.M)
    ]


@needs_netns
def test_demo_with_eight_lights_verifies_every_step() -> None:
    code, out, err, seconds = demo("--lights", "8")
    print(f"grouposcore demo --lights 8: {seconds:.2f} s wall")
    assert code == 0, out + err
    assert rounds(out) == [
        ("on", 8, 8),
        ("dim 40", 8, 8),
        ("off", 8, 8),
        ("on", 9, 9),  # light9 joined
        ("dim 40", 8, 8),  # light4 evicted
    ]
    results = re.findall(r"^result (\S+) (ok|FAILED)", out, re.M)
    assert [name for name, _ in results] == [
        "join",
        "on",
        "dim",
        "off",
        "join-rekey",
        "after-join",
        "evict",
        "after-evict",
        "replay",
    ]
    assert {verdict for _, verdict in results} == {"ok"}
    # the evicted light neither answered nor acted; it rejected the command
    assert re.search(
        r"^light light4 .*verified=- rtt_ms=- note=evicted:_rejected_it_\("
        r"ContextNotFound\)",
        out,
        re.M,
    )
    assert "cannot read the command sent before it joined (ContextNotFound)" in out
    assert re.search(
        r"replayed the latest command: rejected by 9 of 9 lights "
        r"\(ContextNotFound, ReplayError\), no answers",
        out,
    )
    assert re.search(r"^summary ok: 9 of 9 steps verified", out, re.M)


@needs_netns
def test_demo_json_with_firmware_push() -> None:
    code, out, err, _ = demo("--lights", "4", "--firmware", "64K", "--json", "--seed", "3")
    assert code == 0, out + err
    events = [json.loads(line) for line in out.splitlines()]
    push = next(e for e in events if e["event"] == "push")
    assert push["ok"] and push["size"] == 65536
    assert [m["state"] for m in push["members"]] == ["complete"] * 4  # light2 was evicted
    assert {m["sha256"] for m in push["members"]} == {push["sha256"]}
    summary = events[-1]
    assert summary == {**summary, "event": "summary", "ok": True, "passed": 10, "failed": []}
    assert [e["verified"] for e in events if e["event"] == "round"] == [4, 4, 4, 5, 4]


@needs_netns
def test_demo_over_ipv6_multicast() -> None:
    code, out, err, _ = demo("--lights", "3", "--ipv6")
    assert code == 0, out + err
    assert rounds(out)[0] == ("on", 3, 3)
    assert "(ipv6 multicast)" in out


def test_demo_unicast_fallback_without_namespace() -> None:
    code, out, err, _ = demo("--lights", "3", "--unicast", netns=False)
    assert code == 0, out + err
    assert rounds(out) == [
        ("on", 3, 3),
        ("dim 40", 3, 3),
        ("off", 3, 3),
        ("on", 4, 4),
        ("dim 40", 3, 3),
    ]
    assert "(unicast)" in out


def test_a_failing_step_exits_non_zero_and_says_what_failed() -> None:
    # no time at all to collect answers: the command rounds cannot verify
    code, out, err, _ = demo("--lights", "2", "--unicast", "--timeout", "0", netns=False)
    assert code == 1
    assert re.search(r"^result on FAILED: 0 of 2 verified", out, re.M)
    assert "grouposcore demo: step on failed" in err
    assert re.search(r"^summary FAILED", out, re.M)


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("64K", 65536), ("1M", 1 << 20), ("1MiB", 1 << 20), ("2kb", 2048)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1T", "-3", "one"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size(text)


@needs_netns
def test_demo_with_lights_in_two_worker_processes() -> None:
    code, out, err, _ = demo("--lights", "6", "--processes", "2", "--firmware", "32K", "--json")
    assert code == 0, out + err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["verified"] for e in events if e["event"] == "round"] == [6, 6, 6, 7, 6]
    evict = next(e for e in events if e["event"] == "result" and e["name"] == "after-evict")
    assert evict["ok"] and evict["data"]["evicted_rejections"] == ["ContextNotFound"]
    assert events[-1]["ok"] and events[-1]["mode"].endswith("lights in 2 processes")


@needs_netns
def test_demo_with_a_hundred_lights() -> None:
    code, out, err, seconds = demo("--lights", "100", timeout=170)
    print(f"grouposcore demo --lights 100: {seconds:.2f} s wall")
    assert code == 0, out[-3000:] + err[-3000:]
    assert rounds(out) == [
        ("on", 100, 100),
        ("dim 40", 100, 100),
        ("off", 100, 100),
        ("on", 101, 101),
        ("dim 40", 100, 100),
    ]
    assert re.search(r"^summary ok: 9 of 9 steps verified", out, re.M)
