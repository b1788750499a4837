"""``grouposcore push`` and ``grouposcore receive``: a file to every member of a group.

``push FILE URI --security FILE --manifest ENVELOPE --author KEY`` sends FILE, described by
a SUIT envelope the firmware author signed, once over multicast (URI names the group
address, port and path, e.g. ``coap://224.0.1.187/fw``) as Group OSCORE protected blocks,
then asks the members what they miss and repairs that over unicast in pairwise mode, until
every member reports the image complete (or nobody gets closer for a while). ``--sign
AUTHOR_KEY --sequence N`` signs the manifest on the spot instead (for tests and demos; in a
fleet the author signs elsewhere). Exit status 0 when all members completed, 1 otherwise.

``receive --security FILE --author KEY`` is the member side: it listens on the group,
accepts manifests signed by a trusted author (``--author``, repeatable) that are newer
than the installed version, checks every block on arrival, keeps what arrived in
``--store`` so that a restart resumes, and writes each complete image
(``--once``: exit after the first).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from grouposcore.cli.lifecycle import stop_on_signals
from grouposcore.cli.membership import Opened, follows_manager, open_member
from grouposcore.cli.security_files import is_member_state, load_group_context
from grouposcore.cli.server import GroupPortSocket
from grouposcore.coap import parse_uri
from grouposcore.coap.constants import COAP_PORT
from grouposcore.cose.signing import (
    EDDSA,
    ES256,
    ES384,
    ES512,
    PrivateKey,
    PublicKey,
    SignatureAlgorithm,
)
from grouposcore.demo.view import JsonView, PlainView, RichView
from grouposcore.errors import ConfigError, GroupOscoreError, UriError, UsageError
from grouposcore.oscore import GroupContext
from grouposcore.oscore.security import ServerSecurity
from grouposcore.push.protocol import PushReceiver
from grouposcore.push.runner import (
    FirmwareResource,
    PushResult,
    SenderTagging,
    block_size_for,
    payload_limit,
    push_file,
)
from grouposcore.push.suit import Manifest, parse_envelope, sign_envelope
from grouposcore.transport import Endpoint, Site
from grouposcore.transport.sockets import UdpSocket, is_multicast

__all__ = ["add_push_arguments", "add_receive_arguments", "run_push", "run_receive"]

log = logging.getLogger("grouposcore.cli")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the file to send")
    parser.add_argument(
        "uri",
        metavar="URI",
        help="multicast URI of the members' resource, e.g. coap://224.0.1.187/fw",
    )
    parser.add_argument(
        "--security",
        metavar="FILE",
        help="the sender's group security file or member state (a member "
        "state first catches up with its Group Manager)",
    )
    parser.add_argument("--group", dest="security", help=argparse.SUPPRESS)
    parser.add_argument(
        "--manifest",
        metavar="ENVELOPE",
        help="the SUIT envelope the firmware author signed for FILE",
    )
    parser.add_argument(
        "--author",
        metavar="PEM",
        action="append",
        default=[],
        help="the author's public key to check --manifest with (repeatable)",
    )
    parser.add_argument(
        "--sign",
        metavar="PEM",
        help="sign the manifest here with this author private key instead "
        "(it names this sender as the only distributor)",
    )
    parser.add_argument(
        "--sequence",
        type=int,
        default=None,
        help="manifest sequence number with --sign (default: the time)",
    )
    parser.add_argument(
        "--save-manifest", metavar="PATH", help="with --sign: write the signed envelope here too"
    )
    parser.add_argument(
        "--members",
        metavar="SID,...",
        help="Sender IDs (hex) that must end with the file "
        "(default: every member in the group file)",
    )
    parser.add_argument("--interface", metavar="IF", help="interface for the multicast")
    parser.add_argument(
        "--block-size",
        type=int,
        metavar="N",
        help="bytes per block with --sign (default: what fits one CoAP block with its proof)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=1000.0,
        help="blocks per second to start with; the members' reports move it (default 1000)",
    )
    parser.add_argument(
        "--max-rate", type=float, default=20000.0, help="blocks per second, at most (default 20000)"
    )
    parser.add_argument(
        "--status-timeout",
        type=float,
        default=2.0,
        help="longest wait for the members' reports per round (default 2 s)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="report-and-repair rounds at most (default: no limit; it "
        "stops when no member gets closer for --patience rounds)",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=8,
        help="rounds without progress before giving up (default 8)",
    )


def add_receive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--security",
        metavar="FILE",
        help="this member's group security file or member state (a member "
        "state keeps following its Group Manager)",
    )
    parser.add_argument("--group", dest="security", help=argparse.SUPPRESS)
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


def _group_context(path: str) -> GroupContext:
    try:
        return load_group_context(path)
    except (ConfigError, OSError) as e:
        raise UsageError(f"{path}: {e}") from None


def _public_keys(paths: list[str]) -> list[PublicKey]:
    keys: list[PublicKey] = []
    for path in paths:
        try:
            key = serialization.load_pem_public_key(Path(path).read_bytes())
        except (OSError, ValueError) as e:
            raise UsageError(f"{path}: not a PEM public key ({e})") from None
        if not isinstance(key, Ed25519PublicKey | ec.EllipticCurvePublicKey) or (
            _manifest_algorithm(key) is None
        ):
            raise UsageError(f"{path}: a {_key_kind(key)} cannot check a manifest; {_KEYS_WANTED}")
        keys.append(key)
    return keys


#: the signature algorithms a manifest may use, each pinned to its key type and curve
_MANIFEST_ALGORITHMS = (EDDSA, ES256, ES384, ES512)
_KEYS_WANTED = "give an Ed25519 or an ECDSA P-256, P-384 or P-521 key"


def _manifest_algorithm(key: PrivateKey | PublicKey) -> SignatureAlgorithm | None:
    """The COSE algorithm a manifest signed with ``key`` uses, None if none fits it."""
    return next((a for a in _MANIFEST_ALGORITHMS if a.accepts_key(key)), None)


def _key_kind(key: object) -> str:
    """How an error names a loaded key: its class, and its curve for an EC key."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"{type(key).__name__} on {key.curve.name}"
    return type(key).__name__


def _author_key(path: str) -> tuple[PrivateKey, SignatureAlgorithm]:
    """The firmware author's private key from the PEM file ``path`` and the algorithm it
    signs with; refuses any other kind of key by name rather than failing while signing."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError, TypeError) as e:
        raise UsageError(f"{path}: not a PEM private key ({e})") from None
    if isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        alg = _manifest_algorithm(key)
        if alg is not None:
            return key, alg
    raise UsageError(f"{path}: a {_key_kind(key)} cannot sign a manifest; {_KEYS_WANTED}")


def _manifest(args: argparse.Namespace, data: bytes, limit: int, sender_id: bytes) -> Manifest:
    """The signed manifest for ``data``: from --manifest (checked with --author) or signed
    here with --sign (naming this sender as the one distributor)."""
    if (args.manifest is None) == (args.sign is None):
        raise UsageError("give either --manifest (with --author) or --sign")
    if args.sign is not None:
        key, alg = _author_key(args.sign)
        sequence = args.sequence if args.sequence is not None else int(time.time())
        envelope = sign_envelope(
            data, sequence=sequence, key=key, alg=alg.id,
            block_size=args.block_size or block_size_for(len(data), limit),
            distributors=[sender_id],
        )  # fmt: skip
        if args.save_manifest:
            Path(args.save_manifest).write_bytes(envelope)
        return parse_envelope(envelope, [key.public_key()])
    if not args.author:
        raise UsageError("--manifest needs --author to check it with")
    try:
        envelope = Path(args.manifest).read_bytes()
    except OSError as e:
        raise UsageError(f"{args.manifest}: {e.strerror}") from None
    return parse_envelope(envelope, _public_keys(args.author)).for_push()


def _names(path: str) -> dict[bytes, str]:
    """Sender ID -> the name the security file gives the member (``members[].name``), where
    it gives one; the summary falls back to the hex Sender ID."""
    try:
        doc = json.loads(Path(path).read_text())
        return {
            bytes.fromhex(m["sender_id"]): str(m["name"])
            for m in doc.get("members", [])
            if isinstance(m, dict) and m.get("name") and isinstance(m.get("sender_id"), str)
        }
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


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
    names = _names(args.security)
    try:
        manifest = _manifest(args, data, payload_limit(endpoint), ctx.sender_id)
        started = time.monotonic()
        last_event = 0.0
        begun = False

        def progress(phase: str, sender: Any, sent: int, repairs: int) -> None:
            nonlocal begun, last_event
            if not begun:
                begun = True
                view.push_start(len(sender.data), sender.nblocks, len(sender.expected))
                if isinstance(view, JsonView):
                    view._emit(
                        event="push-manifest",
                        tid=sender.tid.hex(),
                        file=str(args.file),
                        sequence=sender.manifest.sequence,
                    )
            view.push_progress(
                sent, sender.nblocks, sender.completed(), len(sender.expected), repairs
            )
            now = time.monotonic()
            if isinstance(view, JsonView) and (now - last_event >= 1.0 or phase == "status"):
                last_event = now
                view._emit(**_progress_event(phase, sender, sent, repairs, now - started))
            elif isinstance(view, PlainView) and phase == "status" and not view.quiet:
                e = _progress_event(phase, sender, sent, repairs, now - started)
                view._emit(
                    f"push round={sender.round} complete={e['complete']}/"
                    f"{e['members']} repairs={repairs} elapsed={e['elapsed']}s "
                    f"eta={'-' if e['eta'] is None else str(e['eta']) + 's'}"
                )

        result = await push_file(
            endpoint, ctx, data, (host, uri.port or COAP_PORT), members=members,
            manifest=manifest, path=uri.path or ("fw",), rate=args.rate,
            max_rate=max(args.rate, args.max_rate), status_timeout=args.status_timeout,
            max_rounds=args.rounds, patience=args.patience, interface=args.interface,
            on_progress=progress, names=names,
        )  # fmt: skip
    finally:
        await endpoint.close()
    view.push_end(result)
    if not isinstance(view, JsonView):
        _summary(result, args.file)
    return 0 if result.ok else 1


def _progress_event(
    phase: str, sender: Any, sent: int, repairs: int, elapsed: float
) -> dict[str, Any]:
    """A ``--json`` progress record with an estimate of the time left (from the share of
    block deliveries still outstanding and the pace so far)."""
    total = sender.nblocks * max(1, len(sender.expected))
    known = [sender.members[sid] for sid in sender.expected]
    if any(p.missing_count is not None or p.complete for p in known):
        left = sum(
            0
            if p.complete
            else (p.missing_count if p.missing_count is not None else sender.nblocks)
            for p in known
        )
    else:
        left = total - sent * len(known)
    left = max(0, left)
    done = total - left
    eta = None if done <= 0 else round(elapsed * left / done, 1)
    return {
        "event": "progress",
        "phase": phase,
        "tid": sender.tid.hex(),
        "blocks_sent": sent,
        "blocks": sender.nblocks,
        "repairs": repairs,
        "complete": sender.completed(),
        "members": len(sender.expected),
        "round": sender.round,
        "elapsed": round(elapsed, 1),
        "eta": eta,
    }


def _summary(result: PushResult, file: str) -> None:
    """One line per member, by name, after the push."""
    s = result.sender
    print(
        f"pushed {file} (transfer {s.tid.hex()}, sequence {s.manifest.sequence}, "
        f"{len(s.data)} bytes) in {result.seconds:.1f} s, {result.rounds} rounds, "
        f"{result.repairs_sent} repairs",
        file=sys.stderr,
    )
    for sid, p in sorted(s.members.items(), key=lambda kv: result.name(kv[0])):
        if sid not in s.expected:
            continue
        if p.complete:
            what = "complete"
        elif p.state == "refused":
            what = f"refused the manifest (installed {p.installed})"
        elif p.reports == 0:
            what = "incomplete (no report)"
        else:
            what = f"incomplete ({p.missing_count} blocks missing)"
        print(
            f"  {result.name(sid)} ({sid.hex() or '-'}): {what}, {p.repairs} repairs",
            file=sys.stderr,
        )


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


def _target(out: str, tid: bytes, sequence: int) -> Path:
    path = Path(out)
    return path / f"firmware-{sequence}-{tid.hex()}.bin" if path.is_dir() else path


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
    if not args.author:
        raise UsageError("receive needs --author: the firmware author key(s) to trust")
    trusted = _public_keys(args.author)
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
