"""Fixtures for the Group Manager tests: a GM on a temporary database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grouposcore.manager.core import GroupManager
from tests.manager.helpers import Harness


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gm.db"


@pytest.fixture
def gm(db_path: Path) -> Iterator[GroupManager]:
    manager = GroupManager(db_path)
    yield manager
    manager.close()


@pytest.fixture
def harness(gm: GroupManager) -> Harness:
    return Harness(gm)
