"""Ctrl-C stops every long-running command cleanly: an exit status, no traceback."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.cli.main import main
from tests.conftest import REPO
from tests.netns import in_private_netns


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)
def test_ctrl_c_during_push_stops_without_a_traceback(tmp_path: Path) -> None:
    assert main(["group", "provision", "a", "b", "--out", str(tmp_path), "-q"]) == 0
    blob = tmp_path / "firmware.bin"
    blob.write_bytes(os.urandom(200_000))
    author = tmp_path / "author.key"
    author.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # nobody receives: the push keeps asking for reports until it is interrupted
    proc = subprocess.Popen(
        in_private_netns(sys.executable, "-m", "grouposcore.cli.main",
                         "push", str(blob), "coap://224.0.1.187/fw",
                         "--security", str(tmp_path / "a.json"), "--interface", "lo", "--json",
                         "--status-timeout", "5", "--sign", str(author)),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert '"push-start"' in proc.stdout.readline()  # under way
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
