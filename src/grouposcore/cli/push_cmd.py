"""``grouposcore push``: a file to every member of a group (each member runs
``grouposcore receive``).

``push FILE URI --security FILE --manifest ENVELOPE --author KEY`` sends FILE, described by
a SUIT envelope the firmware author signed, once over multicast (URI names the group
address, port and path, e.g. ``coap://224.0.1.187/fw``) as Group OSCORE protected blocks,
then asks the members what they miss and repairs that over unicast in pairwise mode, until
every member reports the image complete (or nobody gets closer for a while). ``--sign
AUTHOR_KEY --sequence N`` signs the manifest on the spot instead (for tests and demos; in a
fleet the author signs elsewhere). Exit status 0 when all members completed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from grouposcore.cli.lifecycle import run_command
from grouposcore.cli.membership import Opened, follows_manager, open_member
from grouposcore.cli.security_files import (
    add_security_argument,
    is_member_state,
    load_group_context,
)
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
from grouposcore.errors import ConfigError, UriError, UsageError
from grouposcore.oscore import GroupContext
from grouposcore.push.runner import (
    PushResult,
    block_size_for,
    payload_limit,
    push_file,
)
from grouposcore.push.suit import Manifest, parse_envelope, sign_envelope
from grouposcore.transport import Endpoint
from grouposcore.transport.sockets import is_multicast

__all__ = [
    "add_push_arguments",
    "author_public_keys",
    "group_context",
    "open_group_member",
    "require_security",
    "run_push",
    "sender_ids",
]

log = logging.getLogger("grouposcore.cli")


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the file to send")
    parser.add_argument(
        "uri",
        metavar="URI",
        help="multicast URI of the members' resource, e.g. coap://224.0.1.187/fw",
    )
    add_security_argument(
        parser,
        "the sender's group security file or member state (a member "
        "state first catches up with its Group Manager)",
    )
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


def group_context(path: str) -> GroupContext:
    """The group context of a security file; UsageError naming the file if unusable."""
    try:
        return load_group_context(path)
    except (ConfigError, OSError) as e:
        raise UsageError(f"{path}: {e}") from None


def author_public_keys(paths: list[str]) -> list[PublicKey]:
    """The firmware authors' PEM public keys; UsageError for one no manifest can use."""
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
    return parse_envelope(envelope, author_public_keys(args.author)).for_push()


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


def sender_ids(text: str | None) -> list[bytes] | None:
    """A comma-separated list of hex Sender IDs (None: not given)."""
    if text is None:
        return None
    try:
        return [bytes.fromhex(part) for part in text.split(",") if part.strip() != "-"]
    except ValueError:
        raise UsageError(f"not a list of hex Sender IDs: {text!r}") from None


# --- push --------------------------------------------------------------------------------


async def open_group_member(path: str, *, follow: bool) -> Opened | None:
    """The member behind a state file linked to its GM (caught up), else None."""
    try:
        if not (is_member_state(path) and follows_manager(path)):
            return None
        return await open_member(path, follow=follow)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def require_security(args: argparse.Namespace) -> None:
    """UsageError unless ``--security`` was given."""
    if args.security is None:  # not argparse's required=: the old --group also sets it
        raise UsageError("--security FILE is required (the member's group security file)")


async def _push(args: argparse.Namespace, view: Any) -> int:
    require_security(args)
    opened = await open_group_member(args.security, follow=False)
    if opened is None:
        return await _push_with(args, view, group_context(args.security))
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
    members = sender_ids(args.members)
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
    return run_command("push", _push(args, view))
