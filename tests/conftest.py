"""Shared fixtures: where the specification's test vectors live."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

REPO = Path(__file__).resolve().parent.parent

# No per-example deadline anywhere: on a loaded 2-core machine the time of one example says
# nothing about the code, and a deadline only makes property tests flaky.
settings.register_profile("grouposcore", deadline=None)
settings.load_profile("grouposcore")


def spec_dir() -> Path:
    """The test vectors: ``$GROUPOSCORE_SPEC_DIR`` or the copy in ``tests/vectors``.

    The copy is kept in the repository so that a bare clone tests itself; the variable
    points the suite at another copy (e.g. the team's ``shared/spec``) to check against it.
    A missing folder is an error, not a skip: the vectors are the project's ground truth.
    """
    env = os.environ.get("GROUPOSCORE_SPEC_DIR")
    path = Path(env) if env else REPO / "tests" / "vectors"
    if not path.is_dir():
        raise FileNotFoundError(f"spec folder with test vectors not found: {path}")
    return path


def load_vectors(name: str) -> dict[str, Any]:
    with open(spec_dir() / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def rfc8613_vectors() -> dict[str, Any]:
    return load_vectors("vectors-rfc8613.json")


@pytest.fixture(scope="session")
def group_vectors() -> dict[str, Any]:
    return load_vectors("vectors-group-oscore.json")
