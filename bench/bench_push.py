#!/usr/bin/env python3
"""Firmware push cost per block against the crypto floor, sender and members, in one run.

Run: ``python3 bench/bench_push.py [--size 16M] [--members 10] [--json] [--net]``

Why: issue 11 asks for a 16 MiB push to 10 members with the CPU each side spends per block
within 1.5x of what the cryptography alone costs. Everything is measured in one process,
with the thread CPU clock (``time.thread_time``), so load from other processes on a shared
machine does not count against us; the floor is measured in the same run, before and after
the push, and the better of the two is used.

What is timed, per block (the image is split as a real push splits it, ``block_size_for``
a 1024-byte CoAP block, with the author-signed SUIT manifest and hash-tree proofs):

* sender: ``PushSender.block`` (chunk, proof, CBOR) + building the CoAP request (NON,
  Uri-Path, No-Response) + Group OSCORE protection in group mode (encrypt, sign) + encoding
  to bytes. Floor: one Ed25519 signature over a buffer of the size of the
  Countersign_structure plus one AES-CCM-16-64-128 encryption of a block-sized plaintext
  plus the HKDF-SHA-256 that derives the keystream encrypting the signature (RFC 10021
  §4.1 makes it part of every group-mode message).
* member (each of ``--members``, one after the other, each with its own context and
  receiver): decoding the datagram + Group OSCORE unprotection (replay check, signature
  verification, decryption) + push decoding + the hash-tree proof check + storing.
  Floor: one Ed25519 verification, one AES-CCM decryption of the same sizes and the
  keystream HKDF.

The transport (asyncio, sockets, message layer) is not in these figures; ``--net``
additionally runs the whole push over real multicast in a private network namespace
(needs root and ``unshare``; every member in one process, so it is bound by one core doing
all members' verifications) and reports its wall-clock MiB/s.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from grouposcore.coap import Code, Message, Type  # noqa: E402
from grouposcore.oscore.config import provision_static_group  # noqa: E402
from grouposcore.push.protocol import (  # noqa: E402
    NO_RESPONSE_ALL,
    PushReceiver,
    PushSender,
    decode,
)
from grouposcore.push.runner import block_size_for  # noqa: E402
from grouposcore.push.suit import parse_envelope, sign_envelope  # noqa: E402
from tests.oscore.helpers import fresh_context  # noqa: E402


def size_arg(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1:].upper() in units:
        return int(float(text[:-1]) * units[text[-1].upper()])
    return int(text)


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(thread CPU seconds, result) of ``fn()`` with the garbage collector off."""
    gc.collect()
    gc.disable()
    try:
        start = time.thread_time()
        result = fn()
        return time.thread_time() - start, result
    finally:
        gc.enable()


def floor(signed: int, plain_len: int, n: int = 2000) -> dict[str, float]:
    """µs per block of the bare primitives on the sizes a block really has: sign +
    encrypt, verify + decrypt (``signed``: the Countersign_structure, ``plain_len``: the
    OSCORE plaintext)."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    ccm = AESCCM(os.urandom(16), tag_length=8)
    nonce = os.urandom(13)
    data = os.urandom(signed)
    plain = os.urandom(plain_len)
    sig = key.sign(data)
    ct = ccm.encrypt(nonce, plain, b"aad")
    sekey, info = os.urandom(16), os.urandom(24)

    def keystream() -> bytes:
        return HKDF(hashes.SHA256(), 64, b"\x01\x02", info).derive(sekey)

    def send() -> None:
        for _ in range(n):
            ccm.encrypt(nonce, plain, b"aad")
            key.sign(data)
            keystream()

    def receive() -> None:
        for _ in range(n):
            keystream()
            pub.verify(sig, data)
            ccm.decrypt(nonce, ct, b"aad")

    return {"sender": cpu(send)[0] / n * 1e6, "member": cpu(receive)[0] / n * 1e6}


def run(size: int, members: int) -> dict[str, Any]:
    names = ["sender", *(f"m{i}" for i in range(members))]
    docs = provision_static_group(names)
    sender_ctx = fresh_context(docs["sender"])
    author = Ed25519PrivateKey.generate()
    data = random.Random(11).randbytes(size)
    block_size = block_size_for(size)
    envelope = sign_envelope(
        data, sequence=1, block_size=block_size, key=author, distributors=[sender_ctx.sender_id]
    )
    manifest = parse_envelope(envelope, [author.public_key()])
    sender = PushSender(data, manifest)
    nblocks = sender.nblocks

    # the sizes the crypto really works on for a block: what is signed, what is encrypted
    sizes: dict[str, int] = {}
    probe = fresh_context(docs["sender"])
    real_sign = probe._sign  # type: ignore[attr-defined]
    real_cipher = probe._sender_group_cipher  # type: ignore[attr-defined]

    def sign_probe(blob: bytes) -> bytes:
        sizes["signed"] = len(blob)
        return real_sign(blob)

    class CipherProbe:
        def encrypt(self, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
            sizes["plain"] = len(plaintext)
            return real_cipher.encrypt(nonce, plaintext, aad)

    probe._sign = sign_probe  # type: ignore[attr-defined]
    probe._sender_group_cipher = CipherProbe()  # type: ignore[attr-defined]
    first = Message(Code.POST, Type.NON, mid=0, token=b"\x01", payload=sender.block(0))
    first.options.uri_path = ["fw"]
    first.options.no_response = NO_RESPONSE_ALL
    probe.protect_request(first)
    floor_before = floor(sizes["signed"], sizes["plain"])
    protect = sender_ctx.protect_request

    def send_all() -> list[bytes]:
        wires = []
        block = sender.block
        for i in range(nblocks):
            msg = Message(Code.POST, Type.NON, mid=i & 0xFFFF, token=b"\x01", payload=block(i))
            msg.options.uri_path = ["fw"]
            msg.options.no_response = NO_RESPONSE_ALL
            protected, _ = protect(msg)
            wires.append(protected.encode())
        return wires

    sender_cpu, wires = cpu(send_all)

    member_cpu = []
    for name in names[1:]:
        ctx = fresh_context(docs[name])
        receiver = PushReceiver([author.public_key()])
        receiver.on_manifest(sender.tid, envelope, sender_ctx.sender_id)
        unprotect = ctx.unprotect_request

        def receive_all(receiver: PushReceiver = receiver, unprotect: Any = unprotect) -> None:
            on_data = receiver.on_data
            for raw in wires:
                plain, binding = unprotect(Message.decode(raw))
                on_data(decode(plain.payload), binding.request_kid)  # type: ignore[arg-type]

        seconds, _ = cpu(receive_all)
        if receiver.file(sender.tid) != data:
            raise SystemExit(f"{name} did not end with the image")
        member_cpu.append(seconds)
    floor_after = floor(sizes["signed"], sizes["plain"])
    fl = {k: min(floor_before[k], floor_after[k]) for k in floor_before}
    per_sender = sender_cpu / nblocks * 1e6
    per_member = sum(member_cpu) / len(member_cpu) / nblocks * 1e6
    mib = size / (1 << 20)
    return {
        "size": size,
        "members": members,
        "blocks": nblocks,
        "block_size": block_size,
        "sender_us_per_block": round(per_sender, 1),
        "member_us_per_block": round(per_member, 1),
        "signed_bytes": sizes["signed"],
        "floor_sender_us": round(fl["sender"], 1),
        "floor_member_us": round(fl["member"], 1),
        "sender_ratio": round(per_sender / fl["sender"], 2),
        "member_ratio": round(per_member / fl["member"], 2),
        "sender_mib_s": round(mib / sender_cpu, 2),
        "member_mib_s": round(mib / (sum(member_cpu) / len(member_cpu)), 2),
    }


def net(size: int, members: int) -> dict[str, Any]:
    setup = 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$0" "$@"'
    env = dict(
        os.environ, PUSH_MEMBERS=str(members), PUSH_SIZE=str(size), PYTHONPATH=str(REPO / "src")
    )
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", setup, sys.executable, "-m", "tests.push.net", "direct"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=env,
    )
    if proc.returncode:
        return {"error": proc.stderr[-500:]}
    found = json.loads(proc.stdout.strip().splitlines()[-1])["direct"]
    if "error" in found:
        return {"error": found["error"]}
    return {
        "ok": found["ok"],
        "seconds": found["seconds"],
        "mib_s": round(size / (1 << 20) / found["seconds"], 2),
        "rounds": found["result"]["rounds"],
        "repairs": found["result"]["repairs_sent"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=size_arg, default=16 << 20)
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--net", action="store_true", help="also push over real multicast")
    args = ap.parse_args()
    result = run(args.size, args.members)
    if args.net:
        result["net"] = net(args.size, args.members)
    if args.json:
        print(json.dumps(result))
        return 0
    r = result
    print(
        f"push {r['size'] / (1 << 20):.1f} MiB to {r['members']} members, {r['blocks']} "
        f"blocks of {r['block_size']} B: sender {r['sender_us_per_block']} µs/block "
        f"({r['sender_ratio']}x floor {r['floor_sender_us']} µs, {r['sender_mib_s']} MiB/s "
        f"CPU-bound), member {r['member_us_per_block']} µs/block ({r['member_ratio']}x floor "
        f"{r['floor_member_us']} µs, {r['member_mib_s']} MiB/s CPU-bound)"
    )
    if "net" in r:
        print(f"over multicast (all members in one process): {r['net']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
