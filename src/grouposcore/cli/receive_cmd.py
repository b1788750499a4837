"""``grouposcore receive``: the member side of ``grouposcore push``.

``receive --security FILE --author KEY`` listens on the group, accepts manifests signed by
a trusted author (``--author``, repeatable) that are newer than the installed version,
checks every block on arrival, keeps what arrived in ``--store`` so that a restart
resumes, and writes each complete image (``--once``: exit after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from grouposcore.cli.lifecycle import run_command, stop_on_signals
from grouposcore.cli.membership import Opened
from grouposcore.cli.push_cmd import (
    author_public_keys,
    group_context,
    open_group_member,
    require_security,
    sender_ids,
)
from grouposcore.cli.security_files import add_security_argument
from grouposcore.cli.server import GroupPortSocket
from grouposcore.coap.constants import COAP_PORT
from grouposcore.errors import GroupOscoreError, UsageError
from grouposcore.oscore.security import ServerSecurity
from grouposcore.push.protocol import PushReceiver
from grouposcore.push.runner import (
    FirmwareResource,
    SenderTagging,
)
from grouposcore.push.suit import Manifest
from grouposcore.transport import Endpoint, Site
from grouposcore.transport.sockets import UdpSocket

__all__ = ["add_receive_arguments", "run_receive"]

log = logging.getLogger("grouposcore.cli")


def add_receive_arguments(parser: argparse.ArgumentParser) -> None:
    add_security_argument(
        parser,
        "this member's group security file or member state (a member "
        "state keeps following its Group Manager)",
    )
    parser.add_argument(
        "--author",
        metavar="PEM",
        action="append",
        default=[],
        help="public key of a trusted firmware author (repeatable, required)",
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=".grouposcore-firmware",
        help="where the installed version and partial images are kept, so "
        "that a restart resumes and never installs an older version "
        "(default .grouposcore-firmware)",
    )
    parser.add_argument(
        "--listen",
        metavar="ADDR",
        default="0.0.0.0",
        help="address to bind the group port on (default 0.0.0.0)",
    )
    parser.add_argument(
        "--port", type=int, default=COAP_PORT, help=f"group port (default {COAP_PORT})"
    )
    parser.add_argument(
        "--multicast",
        metavar="ADDR",
        action="append",
        default=[],
        help="multicast group to join (repeatable; default 224.0.1.187, "
        "ff02::fd with an IPv6 --listen)",
    )
    parser.add_argument("--join", dest="multicast", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--interface", metavar="IF", help="interface to join the groups on")
    parser.add_argument(
        "--out",
        metavar="PATH",
        default=".",
        help="where complete images go: a directory (firmware-SEQ-TID.bin "
        "per transfer) or a file name (default: the current directory)",
    )
    parser.add_argument(
        "--from",
        dest="senders",
        metavar="SID,...",
        help="accept files only from these Sender IDs (hex)",
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=64 << 20,
        help="largest file accepted in bytes (default 64 MiB)",
    )
    parser.add_argument(
        "--leisure",
        type=float,
        default=0.5,
        help="longest random wait before answering a multicast request "
        "(default 0.5 s; keep it below the sender's --status-timeout)",
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after the first file, once the sender was told"
    )


def _write_private(path: Path, data: bytes) -> None:
    """A received file is readable by its owner only (it may be firmware not meant for
    everyone on the host), as the security files are."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _target(out: str, tid: bytes, sequence: int) -> Path:
    path = Path(out)
    return path / f"firmware-{sequence}-{tid.hex()}.bin" if path.is_dir() else path


async def _receive(args: argparse.Namespace) -> int:
    require_security(args)
    opened = await open_group_member(args.security, follow=True)
    try:
        return await _receive_with(args, opened)
    finally:
        if opened is not None:
            await opened.member.close()


async def _receive_with(args: argparse.Namespace, opened: Opened | None) -> int:
    inner: ServerSecurity
    if opened is None:
        inner = ServerSecurity([group_context(args.security)])
    else:
        inner = opened.member.server_security()
        if opened.note:
            print(f"grouposcore receive: {opened.note}", file=sys.stderr)
    member = None if opened is None else opened.member
    ctx = inner.contexts[0] if opened is None else opened.member.context
    senders = sender_ids(args.senders)
    if not args.author:
        raise UsageError("receive needs --author: the firmware author key(s) to trust")
    trusted = author_public_keys(args.author)
    done: asyncio.Queue[tuple[bytes, Path, int]] = asyncio.Queue()

    def install(tid: bytes, data: bytes, manifest: Manifest) -> None:
        # written before the member records the version as installed
        path = _target(args.out, tid, manifest.sequence)
        tmp = path.with_name(f".{path.name}.part")
        _write_private(tmp, data)
        tmp.replace(path)
        done.put_nowait((tid, path, manifest.sequence))

    try:
        receiver = PushReceiver(trusted, store=args.store, max_size=args.max_size, install=install)
    except (OSError, GroupOscoreError) as e:
        raise UsageError(f"--store {args.store}: {e}") from None
    resource = FirmwareResource(receiver, senders=senders)
    site = Site()
    site.add("fw", resource)
    hook = SenderTagging(inner)
    v6 = ":" in args.listen
    # Several members on one host share the group port, so that port does not reach one
    # member: each has its own unicast endpoint for repairs (the reports name it) and
    # answers group requests from it (serve does the same).
    unicast_sock = UdpSocket((args.listen, 0))
    unicast = Endpoint(unicast_sock, site=site, server_security=hook)
    try:
        group_ep = Endpoint(
            GroupPortSocket((args.listen, args.port), unicast_sock),
            site=site,
            server_security=hook,
            multicast_interface=args.interface,
            leisure=args.leisure,
        )
    except BaseException:
        await unicast.close()
        raise
    receiver.port = unicast.address[1]
    stop = stop_on_signals()
    try:
        for group in args.multicast or (["ff02::fd"] if v6 else ["224.0.1.187"]):
            group_ep.join_group(group, args.interface)
        info = {
            "event": "listening",
            "group_port": group_ep.address[1],
            "repair_port": unicast.address[1],
            "sender_id": (ctx.sender_id or b"").hex(),
            "installed": receiver.installed,
            "resuming": [
                {
                    "tid": tid.hex(),
                    "blocks": receiver.progress(tid)[0],
                    "of": receiver.progress(tid)[1],
                }
                for tid in receiver.transfers
            ],
        }
        print(
            json.dumps(info)
            if args.json
            else f"listening on port {info['group_port']} (repairs to port "
            f"{info['repair_port']}), Sender ID {info['sender_id'] or '-'}, installed "
            f"firmware sequence {'-' if receiver.installed is None else receiver.installed}",
            flush=True,
        )
        while not stop.is_set():
            if member is not None and member.terminated:
                print(
                    f"grouposcore receive: no longer a member of {member.group} (evicted "
                    "by the Group Manager); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            getter = asyncio.ensure_future(done.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                continue
            tid, path, sequence = getter.result()
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            record = {
                "event": "received",
                "tid": tid.hex(),
                "sequence": sequence,
                "installed": receiver.installed,
                "size": len(data),
                "sha256": digest,
                "path": str(path),
            }
            print(
                json.dumps(record)
                if args.json
                else f"received {tid.hex()} sequence {sequence} {len(data)} bytes sha256 "
                f"{digest} -> {path} (installed sequence {receiver.installed})",
                flush=True,
            )
            if args.once:
                # Stay until our "complete" report went out (and a little longer, in case
                # it was lost and the sender asks again), at most a minute.
                for _ in range(600):
                    if resource.completion_reports.get(tid) or stop.is_set():
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(args.leisure + 1.0)
                break
    finally:
        await group_ep.close()
        await unicast.close()
        receiver.close()
    return 0


def run_receive(args: argparse.Namespace) -> int:
    return run_command("receive", _receive(args))
