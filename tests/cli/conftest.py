"""A provisioned group and a ``grouposcore serve`` process on loopback for the CLI tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from grouposcore.cli.main import main
from tests.conftest import REPO

#: runs the console entry point ``main()`` in a fresh interpreter
ENTRY = "import sys; from grouposcore.cli.main import main; sys.exit(main())"


def grouposcore_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", ENTRY, *args]


@dataclass
class Served:
    proc: subprocess.Popen[str]
    port: int
    group: Path

    def uri(self, path: str) -> str:
        return f"coap://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def member(self, name: str) -> Path:
        return self.group / f"{name}.json"


def start_serve(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        grouposcore_cmd("serve", "--bind", "127.0.0.1", "--port", "0", *args),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on 127.0.0.1:"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"serve did not start: {line!r} {err}")
    return proc, int(line.rsplit(":", 1)[1])


def start_manager_serve(db: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """``grouposcore manager serve`` on a free loopback port; (process, port)."""
    proc = subprocess.Popen(
        grouposcore_cmd("manager", "serve", "--db", str(db), "--bind", "127.0.0.1",
                        "--port", "0", "--sync", "0.2", *extra),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on 127.0.0.1:"):
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"manager serve did not start: {line!r} {err}")
    return proc, int(line.rsplit(":", 1)[1])


def stop(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return err


@pytest.fixture(scope="module")
def group_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("group")
    assert (
        main(["group", "provision", "client", "light1", "--out", str(out), "--name", "demo", "-q"])
        == 0
    )
    return out


@pytest.fixture(scope="module")
def served(group_dir: Path) -> Iterator[Served]:
    proc, port = start_serve("--security", str(group_dir / "light1.json"))
    try:
        yield Served(proc, port, group_dir)
    finally:
        stop(proc)
