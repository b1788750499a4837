"""The Group Manager scale benchmark keeps running as the code changes (tiny sizes; no
timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_gm_benchmark_runs_every_part() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_gm.py"),
            "--sizes",
            "3,6",
            "--batch",
            "2",
            "--members",
            "12",
            "--joins",
            "3",
            "--rounds",
            "2",
            "--procs",
            "2",
            "--per-socket",
            "4",
            "--serve-members",
            "5",
            "--serve-rounds",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(result.stdout)
    parts = {row["part"] for row in report["rows"]}
    assert parts == {"join", "serve", "rekey", "rekey_on_join"}
    assert len([r for r in report["rows"] if r["part"] == "rekey_on_join"]) == 2
    serve = next(r for r in report["rows"] if r["part"] == "serve")
    assert serve["members"] == 5 and serve["before_min_us"] > 0 and serve["after_min_us"] > 0
    for row in report["rows"]:
        if row["part"] in ("rekey", "rekey_on_join"):
            assert row["reached"] == 12  # every member got the new keys
    assert report["ratios"].startswith("ratios: joins/s@6=")
    assert "serve request@5 before/after=" in report["ratios"]
