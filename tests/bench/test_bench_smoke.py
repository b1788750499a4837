"""The benchmark keeps running as the code changes (a smoke run; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, spec_dir


def test_benchmark_runs_and_reports_every_operation() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_protect.py"), "--rounds", "2", "--json",
         "--vectors", str(spec_dir() / "vectors-group-oscore.json")],
        capture_output=True, text=True, timeout=120, check=True,
    )
    report = json.loads(result.stdout)
    text = json.dumps(report)
    for operation in ("group_req_protect", "group_req_unprotect", "pairwise_resp_unprotect",
                      "floor_sign", "floor_verify", "floor_ccm"):
        assert operation in text
