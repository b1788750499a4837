"""The memory benchmark keeps running as the code changes (a smoke run; no size asserted
beyond sanity)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def _run(*extra: str) -> str:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_memory.py"),
            "--recipients",
            "20",
            "--members",
            "5",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout


def test_memory_benchmark_reports_heap_per_recipient_and_member_rss() -> None:
    report = json.loads(_run("--json"))
    heap = report["heap_bytes_per_recipient"]
    assert 0 < heap["created"] <= heap["with_pairwise_ciphers"] <= heap["with_one_request_each"]
    rss = report["maxrss_mb"]
    assert set(rss) == {
        "bare interpreter",
        "imported grouposcore",
        "member of 5, endpoint, one exchange",
    }
    assert all(v > 0 for v in rss.values())
    assert set(report["targets"]) == {"heap_per_recipient_le_1KiB", "member_rss_le_60MB"}


def test_memory_benchmark_table_ends_with_the_key_figures() -> None:
    last = _run().strip().splitlines()[-1]
    assert last.startswith("key figures: ") and "per Recipient Context" in last
