"""A ``grouposcore receive`` killed with SIGKILL during a push and started again with the
same store; run inside ``unshare -n``.

``python -m tests.push.restart_net DIR`` prints one JSON object: the push result, what the
restarted receiver said when it started (how many blocks it resumed with) and the hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.oscore.config import provision_static_group, write_secret_file

CLI = [sys.executable, "-m", "grouposcore.cli.main"]
SIZE = 192 << 10


def receiver(directory: Path, files: dict[str, Path], name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CLI, "receive", "--security", str(files[name]), "--interface", "lo", "--out",
         str(directory / f"{name}.out"), "--once", "--json", "--leisure", "0.1",
         "--author", str(directory / "author.pem"), "--store", str(directory / f"{name}.store")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc


def main(directory: Path) -> dict:
    names = ["sender", "r1", "r2"]
    docs = provision_static_group(names)
    files = {n: write_secret_file(directory / f"{n}.json", d) for n, d in docs.items()}
    data = os.urandom(SIZE)
    (directory / "firmware.bin").write_bytes(data)
    author = Ed25519PrivateKey.generate()
    (directory / "author.key").write_bytes(
        author.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "author.pem").write_bytes(
        author.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    procs = {n: receiver(directory, files, n) for n in names[1:]}
    for p in procs.values():
        assert p.stdout is not None
        p.stdout.readline()  # listening
    push = subprocess.Popen(
        [*CLI, "push", str(directory / "firmware.bin"), "coap://224.0.1.187/fw", "--security",
         str(files["sender"]), "--interface", "lo", "--json", "--rate", "200", "--max-rate",
         "200", "--sign", str(directory / "author.key"), "--sequence", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # let r1 store part of the image, then kill it hard and start it again
    store = directory / "r1.store"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        logs = list(store.glob("*.transfer/blocks.log"))
        if logs and logs[0].stat().st_size >= 4 * 100:
            break
        time.sleep(0.02)
    os.kill(procs["r1"].pid, signal.SIGKILL)
    procs["r1"].wait()
    procs["r1"] = receiver(directory, files, "r1")
    assert procs["r1"].stdout is not None
    restarted = json.loads(procs["r1"].stdout.readline())
    out, err = push.communicate(timeout=120)
    result = {}
    for name, p in procs.items():
        _, stderr = p.communicate(timeout=30)
        path = directory / f"{name}.out"
        result[name] = {
            "code": p.returncode,
            "stderr": stderr[-2000:],
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None,
        }
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "restarted": restarted,
        "push_code": push.returncode,
        "push": json.loads(out.strip().splitlines()[-1]) if out.strip() else None,
        "push_stderr": err[-2000:],
        "receivers": result,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
