"""Fixtures for the Group Manager tests: a GM on a temporary database (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from grouposcore.manager.core import GroupManager
from tests.manager.helpers import Harness
from tests.manager.pgserver import Cluster, NoServer, start_cluster


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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One PostgreSQL server for the session: started here and stopped at the end, unless
    GROUPOSCORE_PG_URL names one. Skips (with the reason) only if none can be had."""
    try:
        cluster = start_cluster()
    except NoServer as e:
        pytest.skip(f"no PostgreSQL server: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, empty PostgreSQL database of its own."""
    url = pg_cluster.new_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``--db`` value of a fresh database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gm.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
