"""The repository's copy of the test vectors is the team's spec, byte for byte."""

from __future__ import annotations

import pytest

from tests.conftest import REPO

SHARED = REPO.parent / "shared" / "spec"


@pytest.mark.parametrize("name", ["vectors-rfc8613.json", "vectors-group-oscore.json"])
def test_vectors_copy_matches_the_shared_spec(name: str) -> None:
    copy = REPO / "tests" / "vectors" / name
    assert copy.is_file(), f"{copy} missing: a bare clone could not test itself"
    if not (SHARED / name).is_file():
        pytest.skip(f"no {SHARED} beside this checkout to compare with")
    assert copy.read_bytes() == (SHARED / name).read_bytes(), (
        f"{copy} differs from {SHARED / name}: copy the new vectors into tests/vectors"
    )
