"""``grouposcore serve -v`` shows the operator every request it refused (issue 9 item 24)."""

from __future__ import annotations

from pathlib import Path

from grouposcore.cli.main import main
from tests.cli.conftest import start_serve, stop


def test_serve_verbose_logs_each_rejected_request_and_the_totals(
    group_dir: Path, tmp_path: Path
) -> None:
    assert main(["group", "provision", "mallory", "x", "--out", str(tmp_path), "-q"]) == 0
    proc, port = start_serve("--security", str(group_dir / "light1.json"), "-v")
    try:
        assert (
            main(
                [
                    "get",
                    f"coap://127.0.0.1:{port}/light",
                    "--group",
                    str(tmp_path / "mallory.json"),
                    "--timeout",
                    "1",
                    "-q",
                ]
            )
            == 3
        )
    finally:
        err = stop(proc)
    line = next(ln for ln in err.splitlines() if "grouposcore.security" in ln)
    assert line.startswith("INFO grouposcore.security: rejected group request from ")
    assert "kid 01: unknown-context" in line and line.endswith("not answered")
    assert "rejected requests: unknown-context 1" in err
