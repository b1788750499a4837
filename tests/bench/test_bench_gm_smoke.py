"""The Group Manager scale benchmark keeps running as the code changes (tiny sizes; no
timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_gm_benchmark_runs_every_part() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_gm.py"), "--sizes", "3,6", "--batch", "2",
         "--members", "12", "--joins", "3", "--rounds", "2", "--procs", "2", "--per-socket", "4",
         "--json"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(result.stdout)
    parts = {row["part"] for row in report["rows"]}
    assert parts == {"join", "rekey", "rekey_on_join"}
    assert len([r for r in report["rows"] if r["part"] == "rekey_on_join"]) == 2
    for row in report["rows"]:
        if row["part"] != "join":
            assert row["reached"] == 12  # every member got the new keys
    assert report["ratios"].startswith("ratios: joins/s@6=")
