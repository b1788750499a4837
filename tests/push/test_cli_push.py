"""The command line: ``grouposcore push`` to three ``grouposcore receive`` processes over
multicast in a private network namespace; and the errors a user meets first."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grouposcore.oscore.config import provision_static_group, write_secret_file
from tests.conftest import REPO
from tests.netns import in_private_netns

CLI = [sys.executable, "-m", "grouposcore.cli.main"]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)
@pytest.mark.parametrize(
    ("size", "rate"),
    [
        (200_000, "1000"),
        # as fast as the sender can sign: faster than three receiver processes on two
        # cores verify, so blocks may overflow their socket buffers and need repairs
        (1 << 20, "100000"),
    ],
)
def test_push_to_three_receivers(tmp_path: Path, size: int, rate: str) -> None:
    proc = subprocess.run(
        in_private_netns(
            sys.executable, "-m", "tests.push.cli_net", str(tmp_path), str(size), rate
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    push = found["push"]
    assert push["code"] == 0, push["stderr"]
    events = [json.loads(line) for line in push["stdout"].strip().splitlines()]
    result = events[-1]
    assert result["event"] == "push" and result["ok"] and result["size"] == size
    # progress while it runs, and the transfer id tied to the file name at the start
    assert events[1]["event"] == "push-manifest" and events[1]["tid"] == result["tid"]
    assert events[1]["file"].endswith("firmware.bin") and events[1]["sequence"] == 7
    assert any(e["event"] == "progress" and "eta" in e for e in events)
    print(
        f"push of {size} bytes at rate {rate} to 3 receiver processes: "
        f"{result['seconds']} s, {result['repairs_sent']} repairs, {result['rounds']} rounds"
    )
    assert [m["state"] for m in result["members"]] == ["complete"] * 3
    for name, r in found["receivers"].items():
        assert r["code"] == 0, (name, r["stderr"])
        assert r["sha256"] == found["sha256"]
        received = [line for line in r["lines"] if line["event"] == "received"]
        assert len(received) == 1 and received[0]["sha256"] == found["sha256"]
        assert received[0]["tid"] == result["tid"] and received[0]["installed"] == 7
        assert r["listening"]["installed"] is None


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)
def test_push_signed_by_a_member_instead_of_the_author_is_refused_by_every_receiver(
    tmp_path: Path,
) -> None:
    """Finding 2 end to end: the group key lets a member send, not author firmware. Every
    receiver refuses the manifest, writes nothing, and the push says so per member."""
    proc = subprocess.run(
        in_private_netns(
            sys.executable, "-m", "tests.push.cli_net", str(tmp_path), "20000", "1000", "foreign"
        ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    push = found["push"]
    assert push["code"] == 1
    result = json.loads(push["stdout"].strip().splitlines()[-1])
    # (receivers sharing the group port on one host may not all be heard: an Echo
    # challenge answered from the shared port reaches one of them)
    states = [m["state"] for m in result["members"]]
    assert "refused" in states and set(states) <= {"refused", "unknown"}
    assert result["repairs_sent"] == 0
    for r in found["receivers"].values():
        assert r["sha256"] is None
        assert not [line for line in r["lines"] if line["event"] == "received"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )


def test_push_needs_a_multicast_uri_and_a_group_file(tmp_path: Path) -> None:
    docs = provision_static_group(["a", "b"])
    group = write_secret_file(tmp_path / "a.json", docs["a"])
    blob = tmp_path / "f.bin"
    blob.write_bytes(b"x" * 100)
    r = run_cli("push", str(blob), "coap://127.0.0.1/fw", "--group", str(group))
    assert r.returncode == 2 and "multicast URI" in r.stderr
    r = run_cli("push", str(tmp_path / "missing"), "coap://224.0.1.187/fw", "--group", str(group))
    assert r.returncode == 2 and "missing" in r.stderr
    r = run_cli("push", str(blob), "coap://224.0.1.187/fw", "--group", str(tmp_path / "no"))
    assert r.returncode == 2
    r = run_cli(
        "push", str(blob), "coap://224.0.1.187/fw", "--group", str(group), "--members", "zz"
    )
    assert r.returncode == 2 and "hex Sender IDs" in r.stderr


def author_key(tmp_path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "author.key"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_push_refuses_blocks_larger_than_one_coap_block(tmp_path: Path) -> None:
    docs = provision_static_group(["a", "b"])
    group = write_secret_file(tmp_path / "a.json", docs["a"])
    blob = tmp_path / "f.bin"
    blob.write_bytes(b"x" * 3000)
    r = run_cli(
        "push",
        str(blob),
        "coap://224.0.1.187/fw",
        "--security",
        str(group),
        "--block-size",
        "1000",
        "--sign",
        str(author_key(tmp_path)),
    )
    assert r.returncode == 1 and "do not fit one CoAP block" in r.stderr


def test_push_and_receive_refuse_an_author_key_of_the_wrong_type_by_name(
    tmp_path: Path,
) -> None:
    """An RSA key, or an EC key on a curve no COSE algorithm here signs with, is refused
    when it is loaded (exit 2, naming the key and what would do), not deep in signing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    docs = provision_static_group(["a", "b"])
    group = write_secret_file(tmp_path / "a.json", docs["a"])
    blob = tmp_path / "f.bin"
    blob.write_bytes(b"x" * 100)
    for name, key in [
        ("rsa", rsa.generate_private_key(65537, 2048)),
        ("p224", ec.generate_private_key(ec.SECP224R1())),
    ]:
        private = tmp_path / f"{name}.key"
        private.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        public = tmp_path / f"{name}.pub"
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        r = run_cli(
            "push",
            str(blob),
            "coap://224.0.1.187/fw",
            "--security",
            str(group),
            "--sign",
            str(private),
        )
        assert r.returncode == 2, r.stderr
        assert f"{private}: a " in r.stderr and "cannot sign a manifest" in r.stderr
        assert "Ed25519 or an ECDSA P-256, P-384 or P-521 key" in r.stderr
        assert "Traceback" not in r.stderr
        r = run_cli(
            "receive",
            "--security",
            str(group),
            "--author",
            str(public),
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
        )
        assert r.returncode == 2, r.stderr
        assert f"{public}: a " in r.stderr and "cannot check a manifest" in r.stderr
        assert "Traceback" not in r.stderr


def test_push_needs_a_signed_manifest_and_receive_a_trusted_author(tmp_path: Path) -> None:
    docs = provision_static_group(["a", "b"])
    group = write_secret_file(tmp_path / "a.json", docs["a"])
    blob = tmp_path / "f.bin"
    blob.write_bytes(b"x" * 100)
    r = run_cli("push", str(blob), "coap://224.0.1.187/fw", "--security", str(group))
    assert r.returncode == 2 and "--manifest" in r.stderr
    r = run_cli("receive", "--security", str(group))
    assert r.returncode == 2 and "--author" in r.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
    reason="needs root, unshare and ip to create a network namespace",
)
def test_receiver_killed_during_a_push_resumes_from_its_store(tmp_path: Path) -> None:
    """Finding 6: kill -9 in the middle, start again with the same --store: the member
    resumes with the blocks it had (its report asks only for the rest) and completes."""
    proc = subprocess.run(
        in_private_netns(sys.executable, "-m", "tests.push.restart_net", str(tmp_path)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["push_code"] == 0, found["push_stderr"]
    resumed = found["restarted"]["resuming"]
    assert len(resumed) == 1 and resumed[0]["tid"] == found["push"]["tid"]
    assert 100 <= resumed[0]["blocks"] < resumed[0]["of"]
    for name, r in found["receivers"].items():
        assert r["code"] == 0, (name, r["stderr"])
        assert r["sha256"] == found["sha256"], name
