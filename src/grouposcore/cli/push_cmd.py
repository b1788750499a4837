"""``grouposcore push`` and ``grouposcore receive``: a file to every member of a group.

``push FILE URI --security FILE`` sends FILE once over multicast (URI names the group address,
port and path, e.g. ``coap://224.0.1.187/fw``) as Group OSCORE protected blocks, then asks
the members what they miss and repairs that over unicast in pairwise mode, until every
member reports the file with the right SHA-256. Exit status 0 when all did, 1 otherwise.

``receive --security FILE`` is the member side: it listens on the group, stores verified
blocks and writes each complete file (``--once``: exit after the first).
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
from typing import Any

from grouposcore.cli.lifecycle import stop_on_signals
from grouposcore.cli.membership import Opened, follows_manager, open_member
from grouposcore.cli.security_files import is_member_state, load_group_context
from grouposcore.cli.server import GroupPortSocket
from grouposcore.coap import parse_uri
from grouposcore.coap.constants import COAP_PORT
from grouposcore.demo.view import JsonView, PlainView, RichView
from grouposcore.errors import GroupOscoreError, UriError
from grouposcore.oscore import GroupContext
from grouposcore.oscore.config import ConfigError
from grouposcore.oscore.security import ServerSecurity
from grouposcore.push.protocol import PushReceiver
from grouposcore.push.runner import FirmwareResource, SenderTagging, push_file
from grouposcore.transport import Endpoint, Site
from grouposcore.transport.sockets import UdpSocket, is_multicast

__all__ = ["add_push_arguments", "add_receive_arguments", "run_push", "run_receive"]

log = logging.getLogger("grouposcore.cli")


class UsageError(Exception):
    """A command line that cannot work (exit status 2)."""


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the file to send")
    parser.add_argument("uri", metavar="URI",
                        help="multicast URI of the members' resource, e.g. "
                             "coap://224.0.1.187/fw")
    parser.add_argument("--security", metavar="FILE",
                        help="the sender's group security file or member state (a member "
                             "state first catches up with its Group Manager)")
    parser.add_argument("--group", dest="security", help=argparse.SUPPRESS)
    parser.add_argument("--members", metavar="SID,...",
                        help="Sender IDs (hex) that must end with the file "
                             "(default: every member in the group file)")
    parser.add_argument("--interface", metavar="IF", help="interface for the multicast")
    parser.add_argument("--block-size", type=int, metavar="N",
                        help="bytes per block (default: what fits one CoAP block)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="blocks per second to start with; the members' reports move it "
                             "(default 1000)")
    parser.add_argument("--max-rate", type=float, default=20000.0,
                        help="blocks per second, at most (default 20000)")
    parser.add_argument("--status-timeout", type=float, default=2.0,
                        help="longest wait for the members' reports per round (default 2 s)")
    parser.add_argument("--rounds", type=int, default=12,
                        help="report-and-repair rounds before giving up (default 12)")


def add_receive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--security", metavar="FILE",
                        help="this member's group security file or member state (a member "
                             "state keeps following its Group Manager)")
    parser.add_argument("--group", dest="security", help=argparse.SUPPRESS)
    parser.add_argument("--listen", metavar="ADDR", default="0.0.0.0",
                        help="address to bind the group port on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=COAP_PORT,
                        help=f"group port (default {COAP_PORT})")
    parser.add_argument("--multicast", metavar="ADDR", action="append", default=[],
                        help="multicast group to join (repeatable; default 224.0.1.187, "
                             "ff02::fd with an IPv6 --listen)")
    parser.add_argument("--join", dest="multicast", action="append", help=argparse.SUPPRESS)
    parser.add_argument("--interface", metavar="IF", help="interface to join the groups on")
    parser.add_argument("--out", metavar="PATH", default=".",
                        help="where complete files go: a directory (one file per transfer "
                             "id) or a file name (default: the current directory)")
    parser.add_argument("--from", dest="senders", metavar="SID,...",
                        help="accept files only from these Sender IDs (hex)")
    parser.add_argument("--max-size", type=int, default=64 << 20,
                        help="largest file accepted in bytes (default 64 MiB)")
    parser.add_argument("--leisure", type=float, default=0.5,
                        help="longest random wait before answering a multicast request "
                             "(default 0.5 s; keep it below the sender's --status-timeout)")
    parser.add_argument("--once", action="store_true",
                        help="exit after the first file, once the sender was told")


def _group_context(path: str) -> GroupContext:
    try:
        return load_group_context(path)
    except (ConfigError, OSError) as e:
        raise UsageError(f"{path}: {e}") from None


def _sids(text: str | None) -> list[bytes] | None:
    if text is None:
        return None
    try:
        return [bytes.fromhex(part) for part in text.split(",") if part.strip() != "-"]
    except ValueError:
        raise UsageError(f"not a list of hex Sender IDs: {text!r}") from None


# --- push --------------------------------------------------------------------------------


async def _member(path: str, *, follow: bool) -> Opened | None:
    """The member behind a state file linked to its GM (caught up), else None."""
    try:
        if not (is_member_state(path) and follows_manager(path)):
            return None
        return await open_member(path, follow=follow)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _require_security(args: argparse.Namespace) -> None:
    if args.security is None:  # not argparse's required=: the old --group also sets it
        raise UsageError("--security FILE is required (the member's group security file)")


async def _push(args: argparse.Namespace, view: Any) -> int:
    _require_security(args)
    opened = await _member(args.security, follow=False)
    if opened is None:
        return await _push_with(args, view, _group_context(args.security))
    try:
        if opened.note:
            print(f"grouposcore push: {opened.note}", file=sys.stderr)
        return await _push_with(args, view, opened.member.context)
    finally:
        await opened.member.close()


async def _push_with(args: argparse.Namespace, view: Any, ctx: GroupContext) -> int:
    if ctx.sender_id is None:
        raise UsageError("a silent member (no Sender ID) cannot push")
    try:
        uri = parse_uri(args.uri)
    except UriError as e:
        raise UsageError(str(e)) from None
    host = uri.host.strip("[]")
    if not is_multicast(host):
        raise UsageError(f"{args.uri}: push needs a multicast URI (e.g. coap://224.0.1.187/fw)")
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise UsageError(f"{args.file}: {e.strerror}") from None
    members = _sids(args.members)
    bind = ("::", 0) if ":" in host else ("0.0.0.0", 0)
    endpoint = await Endpoint.create(bind, multicast_interface=args.interface)
    try:
        started = False

        def progress(phase: str, sender: Any, sent: int, repairs: int) -> None:
            nonlocal started
            if not started:
                started = True
                view.push_start(len(sender.data), sender.nblocks, len(sender.expected))
            view.push_progress(sent, sender.nblocks, sender.completed(), len(sender.expected),
                               repairs)

        result = await push_file(
            endpoint, ctx, data, (host, uri.port or COAP_PORT), members=members,
            path=uri.path or ("fw",), block_size=args.block_size, rate=args.rate,
            max_rate=max(args.rate, args.max_rate),
            status_timeout=args.status_timeout, max_rounds=args.rounds,
            interface=args.interface, on_progress=progress,
        )  # fmt: skip
    finally:
        await endpoint.close()
    view.push_end(result)
    if not isinstance(view, JsonView):
        for sid, p in sorted(result.sender.members.items()):
            if sid in result.sender.expected and not p.complete:
                missing = "no report" if p.reports == 0 else f"{p.missing_count} blocks missing"
                print(f"grouposcore push: member {sid.hex() or '-'} incomplete ({missing})",
                      file=sys.stderr)
    return 0 if result.ok else 1


def run_push(args: argparse.Namespace) -> int:
    if args.json:
        view: Any = JsonView()
    elif sys.stdout.isatty():
        view = RichView()
    else:
        view = PlainView(quiet=args.quiet)
    try:
        return asyncio.run(_push(args, view))
    except UsageError as e:
        print(f"grouposcore push: {e}", file=sys.stderr)
        return 2
    except (GroupOscoreError, OSError) as e:
        print(f"grouposcore push: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# --- receive -----------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """A received file is readable by its owner only (it may be firmware not meant for
    everyone on the host), as the security files are."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(data)


def _target(out: str, tid: bytes) -> Path:
    path = Path(out)
    return path / f"{tid.hex()}.bin" if path.is_dir() else path


async def _receive(args: argparse.Namespace) -> int:
    _require_security(args)
    opened = await _member(args.security, follow=True)
    try:
        return await _receive_with(args, opened)
    finally:
        if opened is not None:
            await opened.member.close()


async def _receive_with(args: argparse.Namespace, opened: Opened | None) -> int:
    inner: ServerSecurity
    if opened is None:
        inner = ServerSecurity([_group_context(args.security)])
    else:
        inner = opened.member.server_security()
        if opened.note:
            print(f"grouposcore receive: {opened.note}", file=sys.stderr)
    member = None if opened is None else opened.member
    ctx = inner.contexts[0] if opened is None else opened.member.context
    senders = _sids(args.senders)
    done: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
    receiver = PushReceiver(max_size=args.max_size)
    resource = FirmwareResource(receiver, senders=senders,
                                on_complete=lambda tid, data: done.put_nowait((tid, data)))
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
        group_ep = Endpoint(GroupPortSocket((args.listen, args.port), unicast_sock), site=site,
                            server_security=hook, multicast_interface=args.interface,
                            leisure=args.leisure)
    except BaseException:
        await unicast.close()
        raise
    receiver.port = unicast.address[1]
    stop = stop_on_signals()
    try:
        for group in args.multicast or (["ff02::fd"] if v6 else ["224.0.1.187"]):
            group_ep.join_group(group, args.interface)
        info = {"event": "listening", "group_port": group_ep.address[1],
                "repair_port": unicast.address[1],
                "sender_id": (ctx.sender_id or b"").hex()}
        print(json.dumps(info) if args.json else
              f"listening on port {info['group_port']} (repairs to port "
              f"{info['repair_port']}), Sender ID {info['sender_id'] or '-'}", flush=True)
        while not stop.is_set():
            if member is not None and member.terminated:
                print(f"grouposcore receive: no longer a member of {member.group} (evicted "
                      "by the Group Manager); stopping", file=sys.stderr, flush=True)
                return 1
            getter = asyncio.ensure_future(done.get())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({getter, stopper}, timeout=1.0,
                               return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if not getter.done():
                getter.cancel()
                continue
            tid, data = getter.result()
            path = _target(args.out, tid)
            _write_private(path, data)
            digest = hashlib.sha256(data).hexdigest()
            record = {"event": "received", "tid": tid.hex(), "size": len(data),
                      "sha256": digest, "path": str(path)}
            print(json.dumps(record) if args.json else
                  f"received {tid.hex()} {len(data)} bytes sha256 {digest} -> {path}",
                  flush=True)
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
    return 0


def run_receive(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_receive(args))
    except UsageError as e:
        print(f"grouposcore receive: {e}", file=sys.stderr)
        return 2
    except (GroupOscoreError, OSError) as e:
        print(f"grouposcore receive: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
