"""``grouposcore receive`` ×3 and ``grouposcore push`` as processes; run inside ``unshare -n``.

``python -m tests.push.cli_net DIR SIZE [RATE [foreign]]`` provisions a static group in DIR,
starts the receivers, pushes a random file of SIZE bytes and prints one JSON object with what
happened. With ``foreign`` the pusher signs the manifest with a key the receivers do not
trust (a member posing as the firmware author); the receivers are stopped after the push.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.oscore.config import provision_static_group, write_secret_file

CLI = [sys.executable, "-m", "grouposcore.cli.main"]


def main(directory: Path, size: int, rate: str = "1000", foreign: str = "") -> dict:
    names = ["sender", "r1", "r2", "r3"]
    docs = provision_static_group(names)
    files = {n: write_secret_file(directory / f"{n}.json", d) for n, d in docs.items()}
    data = os.urandom(size)
    firmware = directory / "firmware.bin"
    firmware.write_bytes(data)
    author = Ed25519PrivateKey.generate()
    signer = Ed25519PrivateKey.generate() if foreign else author
    (directory / "author.key").write_bytes(
        signer.private_bytes(
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
    receivers = []
    for n in names[1:]:
        out = directory / f"{n}.out"
        proc = subprocess.Popen(
            [
                *CLI,
                "receive",
                "--security",
                str(files[n]),
                "--interface",
                "lo",
                "--out",
                str(out),
                "--once",
                "--json",
                "--author",
                str(directory / "author.pem"),
                "--store",
                str(directory / f"{n}.store"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        receivers.append((n, out, proc, json.loads(proc.stdout.readline())))
    start = time.perf_counter()
    push = subprocess.run(
        [
            *CLI,
            "push",
            str(firmware),
            "coap://224.0.1.187/fw",
            "--group",
            str(files["sender"]),
            "--interface",
            "lo",
            "--json",
            "--rate",
            rate,
            "--sign",
            str(directory / "author.key"),
            "--sequence",
            "7",
            *(["--patience", "2"] if foreign else []),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    seconds = time.perf_counter() - start
    if foreign:
        for _, _, proc, _ in receivers:
            proc.terminate()
    results = {}
    for n, out, proc, listening in receivers:
        stdout, stderr = proc.communicate(timeout=30)
        results[n] = {
            "code": proc.returncode,
            "listening": listening,
            "lines": [json.loads(line) for line in stdout.splitlines() if line.strip()],
            "stderr": stderr,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else None,
        }
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "seconds": round(seconds, 2),
        "push": {"code": push.returncode, "stdout": push.stdout, "stderr": push.stderr},
        "receivers": results,
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:5])))
