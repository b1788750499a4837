#!/usr/bin/env python3
"""Memory of a Group OSCORE member: Python heap per Recipient Context, RSS of a member process.

Run: ``python3 bench/bench_memory.py [--recipients N] [--members M] [--json]``

Why: issue 14 target 4. A member keeps one Recipient Context per other member, so its heap
grows with the group; the targets are <= 1 KiB of Python heap per Recipient Context and
<= 60 MB resident for a member process of a 100-member group.

What is measured.

* heap per Recipient Context: ``tracemalloc`` (Python's allocator only: memory that
  ``cryptography`` allocates in Rust for key and cipher objects is not seen) around adding
  ``N`` (default 1,000) members to one GroupContext from their CCS bytes, made before
  tracing as a Group Manager would hand them over. The difference of the traced memory
  before and after, divided by N, with the contexts alive; this is what the target is
  judged on (the state kept for every member). Then the same contexts once more after
  the caches the hot path fills per member, reported beside it: the pairwise ciphers
  (derived on the first pairwise message with that member) and one verified group request
  from every member (its replay window moves, the nonce builder remembers its Sender ID).
  Lazy one-time set-up inside ``cryptography`` is warmed up before tracing.
* member process: a fresh interpreter (``sys.executable``) builds a GroupContext with
  ``M`` (default 100) recipients, binds an Endpoint on loopback serving one resource with
  it, sends itself one group-mode request through a second Endpoint and verifies the
  response, then reports its peak resident set (``VmHWM``; ``ru_maxrss`` would carry the
  forking parent's peak over). For reference, the same for a bare interpreter and for one
  that only imported grouposcore.

Exit status is 0 unless ``--check`` is given and a target fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import textwrap
import tracemalloc
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.coap import Code, Message, Type
from grouposcore.cose import Credential
from grouposcore.oscore import GroupContext

SECRET = bytes(range(1, 17))
SALT = b"\x9e\x7c\xa9\x22\x23\x78\x63\x40"
GID = b"\x44\x61\x6c"
HEAP_LIMIT = 1024  # bytes per Recipient Context
RSS_LIMIT_MB = 60.0


def _sid(i: int) -> bytes:
    return (i + 1).to_bytes(2, "big")


def _member(i: int, key: Ed25519PrivateKey, cred: bytes, **kwargs: Any) -> GroupContext:
    return GroupContext(
        SECRET,
        GID,
        master_salt=SALT,
        sender_id=_sid(i),
        private_key=key,
        credential=cred,
        max_recipients=100_000,
        **kwargs,
    )


def _traced(fn: Any) -> int:
    """Traced Python heap that ``fn()`` leaves allocated, in bytes."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before


def heap_per_recipient(n: int) -> dict[str, float]:
    """Bytes of Python heap per Recipient Context: created, then with the hot-path caches."""
    keys = [Ed25519PrivateKey.generate() for _ in range(n + 1)]
    creds = [Credential.build_ccs(k.public_key(), -8, f"m{i}").raw for i, k in enumerate(keys)]
    own = _member(n, keys[n], creds[n])
    # one group request from every member, protected before tracing
    get = Message(code=Code.GET, mtype=Type.NON, mid=1, token=b"\x01")
    get.options.uri_path = ["light"]
    requests = []
    for i in range(n):
        sender = _member(i, keys[i], creds[i])
        requests.append(sender.protect_request(get)[0])
        del sender
    # warm-up outside tracing: lazy imports and one-time set-up inside cryptography (the
    # first X25519 exchange, the first verification) are not per Recipient Context
    spare = _member(
        n + 1,
        Ed25519PrivateKey.generate(),
        Credential.build_ccs(Ed25519PrivateKey.generate().public_key(), -8).raw,
    )
    spare.add_recipient(_sid(0), creds[0])
    spare._pairwise_ciphers(spare.recipient(_sid(0)))
    spare.unprotect_request(requests[0])
    del spare
    tracemalloc.start()
    try:
        created = _traced(lambda: [own.add_recipient(_sid(i), creds[i]) for i in range(n)])

        def pairwise() -> None:
            for rid in own.recipients:  # what the first pairwise message with each derives
                own._pairwise_ciphers(own.recipient(rid))

        with_pairwise = _traced(pairwise)

        def receive() -> None:
            for m in requests:
                own.unprotect_request(m)

        with_request = _traced(receive)
    finally:
        tracemalloc.stop()
    return {
        "created": created / n,
        "with_pairwise_ciphers": (created + with_pairwise) / n,
        "with_one_request_each": (created + with_pairwise + with_request) / n,
    }


MEMBER_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from grouposcore.coap import Code, Message
    from grouposcore.cose import Credential
    from grouposcore.oscore import GroupContext
    from grouposcore.oscore.security import ClientSecurity, ServerSecurity
    from grouposcore.transport.endpoint import Endpoint
    from grouposcore.transport.resource import Resource, Site

    M = int(sys.argv[1])
    SECRET, SALT, GID = bytes(range(1, 17)), bytes.fromhex("9e7ca92223786340"), b"Dal"
    keys = [Ed25519PrivateKey.generate() for _ in range(M)]
    creds = [Credential.build_ccs(k.public_key(), -8, f"m{i}").raw for i, k in enumerate(keys)]
    sid = lambda i: (i + 1).to_bytes(2, "big")

    def member(i):
        return GroupContext(SECRET, GID, master_salt=SALT, sender_id=sid(i),
                            private_key=keys[i], credential=creds[i],
                            peers={sid(j): creds[j] for j in range(M) if j != i})

    class Light(Resource):
        async def render_get(self, request):
            return Message(Code.CONTENT, payload=b"on")

    async def main():
        server_ctx, client_ctx = member(0), member(1)
        site = Site()
        site.add("light", Light())
        server = await Endpoint.create(("127.0.0.1", 0), site=site,
                                       server_security=ServerSecurity([server_ctx]))
        client = await Endpoint.create(("127.0.0.1", 0))
        try:
            req = Message(Code.GET)
            req.options.uri_path = ["light"]
            resp = await client.request(req, server.address, timeout=10,
                                        security=ClientSecurity(client_ctx))
            assert resp.payload == b"on", resp
        finally:
            await client.close()
            await server.close()

    asyncio.run(main())
    print(PEAK())
""")

#: the peak RSS of this process image in KiB: VmHWM, which execve resets (ru_maxrss keeps
#: the high-water mark of the forking parent, so a child would report the parent's size)
PEAK = textwrap.dedent("""
    def PEAK():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
""")


def _peak_mb(code: str, *args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PEAK + code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    return int(out.split()[-1]) / 1024


def rss(members: int) -> dict[str, float]:
    report = "\nprint(PEAK())"
    return {
        "bare interpreter": _peak_mb(report),
        "imported grouposcore": _peak_mb(
            "\nimport grouposcore.transport.endpoint, grouposcore.oscore" + report
        ),
        f"member of {members}, endpoint, one exchange": _peak_mb(MEMBER_SCRIPT, str(members)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--recipients",
        type=int,
        default=1000,
        help="Recipient Contexts for the heap figure (default 1000)",
    )
    ap.add_argument(
        "--members", type=int, default=100, help="group size of the member process (default 100)"
    )
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 if a target fails")
    args = ap.parse_args(argv)
    if args.recipients < 1 or args.members < 2:
        ap.error("--recipients must be >= 1 and --members >= 2")

    heap = heap_per_recipient(args.recipients)
    rss_mb = rss(args.members)
    member_rss = rss_mb[f"member of {args.members}, endpoint, one exchange"]
    # the target is the state kept for every member; the cached rows show what the first
    # pairwise message and the first request from a member add on top
    heap_ok = heap["created"] <= HEAP_LIMIT
    rss_ok = member_rss <= RSS_LIMIT_MB
    ok = heap_ok and rss_ok
    if args.json:
        print(
            json.dumps(
                {
                    "recipients": args.recipients,
                    "members": args.members,
                    "heap_bytes_per_recipient": {k: round(v, 1) for k, v in heap.items()},
                    "maxrss_mb": {k: round(v, 1) for k, v in rss_mb.items()},
                    "targets": {
                        "heap_per_recipient_le_1KiB": heap_ok,
                        "member_rss_le_60MB": rss_ok,
                    },
                },
                indent=1,
            )
        )
    else:
        title = f"Python heap per Recipient Context ({args.recipients})"
        head = f"{title:<52} {'bytes':>8}"
        lines = [f"grouposcore memory; Python {sys.version.split()[0]}", "", head, "-" * len(head)]
        for k, v in heap.items():
            lines.append(f"  {k.replace('_', ' '):<50} {v:8.0f}")
        head = f"{'process peak RSS (VmHWM)':<52} {'MB':>8}"
        lines += ["", head, "-" * len(head)]
        for k, v in rss_mb.items():
            lines.append(f"  {k:<50} {v:8.1f}")
        lines += [
            "",
            f"  {'PASS' if heap_ok else 'FAIL'}  heap per Recipient Context (created) <= "
            f"{HEAP_LIMIT} B",
            f"  {'PASS' if rss_ok else 'FAIL'}  member process of {args.members} <= "
            f"{RSS_LIMIT_MB:g} MB",
            f"key figures: {heap['created']:.0f} B per Recipient Context "
            f"({heap['with_one_request_each']:.0f} B with pairwise ciphers and one "
            f"request each); member of {args.members}: {member_rss:.1f} MB RSS; "
            f"{int(heap_ok) + int(rss_ok)}/2 targets hold",
        ]
        print("\n".join(lines))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
