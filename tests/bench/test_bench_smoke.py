"""The benchmark keeps running as the code changes (a smoke run; no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, spec_dir

OPERATIONS = (
    "group_req_protect",
    "group_req_unprotect",
    "group_resp_protect",
    "group_resp_unprotect",
    "pairwise_req_protect",
    "pairwise_req_unprotect",
    "pairwise_resp_protect",
    "pairwise_resp_unprotect",
)


def _run(*extra: str) -> str:
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_protect.py"),
            "--rounds",
            "2",
            "--vectors",
            str(spec_dir() / "vectors-group-oscore.json"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout


def test_benchmark_runs_and_reports_every_operation() -> None:
    report = json.loads(_run("--json"))
    text = json.dumps(report)
    for operation in (
        "group_req_protect",
        "group_req_unprotect",
        "pairwise_resp_unprotect",
        "floor_sign",
        "floor_verify",
        "floor_ccm",
    ):
        assert operation in text


def test_benchmark_reports_the_stubbed_crypto_figures() -> None:
    report = json.loads(_run("--json"))
    stubbed = report["stubbed_us"]
    assert set(stubbed) == set(OPERATIONS)
    for figures in stubbed.values():
        assert 0 < figures["min"] <= figures["median"]
    for key in (
        "group_req_protect/floor",
        "group_req_unprotect/floor",
        "pairwise_req_protect/stubbed_us",
        "group_req_unprotect/stubbed_us",
    ):
        assert report["key_ratios"][key] > 0
    assert any("crypto stubbed" in t["target"] for t in report["targets"])


def test_benchmark_table_ends_with_the_key_ratios() -> None:
    lines = _run().strip().splitlines()
    assert any(line.startswith("protocol overhead, crypto stubbed") for line in lines)
    assert lines[-1].startswith("key ratios: group req protect/sign")
    assert "stubbed µs" in lines[-1]
