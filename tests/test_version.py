"""The version is written once, in pyproject.toml; the package and the CLI report it."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

import grouposcore
from grouposcore.cli.main import main

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_is_single_sourced_from_pyproject() -> None:
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert grouposcore.__version__ == version("grouposcore") == declared


def test_cli_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"grouposcore {grouposcore.__version__}"
