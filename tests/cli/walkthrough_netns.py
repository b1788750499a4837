"""Runs the README's command-line walkthrough as written; started inside a fresh network
namespace by test_readme_walkthrough.py.

``python3 -m tests.cli.walkthrough_netns DIR`` runs every command of the README's ``sh``
block in DIR with ``bash -c``: a command ending in ``&`` is started in the background and
the next one waits until it printed its first line ("listening on ..."); every other
command runs to its end. ``grouposcore`` on the PATH is this tree's command line. Prints
one JSON object: each command with its exit status, output and duration, and what the
background servers printed by the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.cli.conftest import ENTRY, REPO

#: the walkthrough is the ``sh`` block of the README's "Command line" section
_SECTION = re.compile(r"## Command line\n(.*?)\n## ", re.S)
_BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def walkthrough_commands(readme: str) -> list[str]:
    """The walkthrough's commands in order (comment lines and blank lines left out)."""
    section = _SECTION.search(readme)
    assert section is not None, "README has no '## Command line' section"
    block = _BLOCK.search(section.group(1))
    assert block is not None, "the Command line section has no sh block"
    commands = []
    for line in block.group(1).replace("\\\n", " ").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def expected_status(command: str) -> int:
    """0, or what the command's trailing comment says (``# exit status N``)."""
    found = re.search(r"#.*exit status (\d+)", command)
    return int(found.group(1)) if found else 0


def _background(command: str) -> bool:
    return re.sub(r"\s+#.*$", "", command).endswith("&")


def _tool_dir(directory: Path) -> Path:
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "grouposcore"
    tool.write_text(f"#!/bin/sh\nexec {sys.executable} -c '{ENTRY}' \"$@\"\n")
    tool.chmod(0o755)
    return bin_dir


def run(directory: Path) -> dict[str, Any]:
    env = dict(os.environ)
    env["PATH"] = f"{_tool_dir(directory)}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH")) if p
    )
    work = directory / "work"
    work.mkdir()
    steps: list[dict[str, Any]] = []
    servers: list[tuple[dict[str, Any], subprocess.Popen[str]]] = []
    try:
        for command in walkthrough_commands((REPO / "README.md").read_text(encoding="utf-8")):
            step: dict[str, Any] = {"command": command, "expected": expected_status(command)}
            steps.append(step)
            start = time.monotonic()
            if _background(command):
                proc = subprocess.Popen(
                    ["bash", "-c", command.rsplit("&", 1)[0]],
                    cwd=work,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                assert proc.stdout is not None
                step["first_line"] = proc.stdout.readline()
                servers.append((step, proc))
            else:
                done = subprocess.run(
                    ["bash", "-c", command],
                    cwd=work,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                step.update(rc=done.returncode, out=done.stdout, err=done.stderr)
            step["seconds"] = round(time.monotonic() - start, 2)
    finally:
        for step, proc in servers:
            if proc.poll() is None:
                proc.terminate()
            try:
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate(timeout=20)
            step.update(rc=proc.returncode, out=step["first_line"] + out, err=err)
    return {"steps": steps}


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]))))
