"""The security-mutant table (tools/mutants.py) still matches the code and the tests, so a
refactor learns in the ordinary test run that a mutant's snippet or target moved."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_tool", REPO / "tools" / "mutants.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building
    spec.loader.exec_module(module)
    return module


TOOL = _tool()


@pytest.mark.parametrize("mutant", TOOL.MUTANTS, ids=lambda m: m.id)
def test_mutant_snippets_occur_once_and_targets_exist(mutant: Any) -> None:
    source = (REPO / "src" / "grouposcore" / mutant.file).read_text(encoding="utf-8")
    assert TOOL.mutated_source(source, mutant) != source
    assert TOOL.resolve_targets(REPO, mutant.targets)


def test_mutant_ids_are_unique() -> None:
    ids = [m.id for m in TOOL.MUTANTS]
    assert len(ids) == len(set(ids))


def test_a_stale_snippet_is_reported() -> None:
    stale = TOOL.Mutant("stale", "oscore/replay.py", (("no such line", "x"),), ("tests",), "-")
    with pytest.raises(TOOL.TableError, match="update the table"):
        TOOL.mutated_source("source without it", stale)
