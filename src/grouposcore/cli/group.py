"""``grouposcore group provision``: a static group without a Group Manager, one file per
member, for offline deployment (see :mod:`grouposcore.oscore.config`); ``group export``:
an OSCORE context for aiocoap or libcoap (:mod:`grouposcore.cli.interop`).

Each file names a sequence file (``NAME.seq`` next to it) where the member's Sender
Sequence Number is reserved durably, so separate runs of the command line never reuse one.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from grouposcore.cli import interop
from grouposcore.cli.security_files import load_context
from grouposcore.errors import ConfigError, GroupOscoreError
from grouposcore.oscore import SecurityContext
from grouposcore.oscore.config import provision_static_group, write_secret_file

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def add_arguments(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """``common`` adds the options every command has (-v/-q, --json) to the subcommands."""
    sub = parser.add_subparsers(dest="group_command", metavar="COMMAND", required=True)
    prov = sub.add_parser(
        "provision",
        help="create a static group: one security file per member",
        description="Write NAME.json (mode 0600) into DIR for every member. Give each member "
        "only its own file: it holds that member's private key.",
    )
    prov.add_argument("names", metavar="NAMES", nargs="+", help="member names")
    prov.add_argument("--out", metavar="DIR", required=True, help="output directory")
    prov.add_argument("--name", metavar="NAME", default="group", help="group name")
    prov.add_argument(
        "--signature",
        type=int,
        choices=(-8, -7),
        default=-8,
        help="signature algorithm: -8 EdDSA (Ed25519), -7 ECDSA P-256",
    )
    prov.add_argument("--gid", metavar="HEX", help="Group Identifier (default: random 4 bytes)")
    prov.add_argument("--force", action="store_true", help="overwrite existing files")
    common(prov)
    exp = sub.add_parser(
        "export",
        help="write an OSCORE context for aiocoap or libcoap",
        description="Write the RFC 8613 context of FILE (any file --security takes) in "
        "aiocoap's (a security context directory) or libcoap's (a "
        "coap-oscore-conf file) format, continuing at the next unused sequence "
        "number. Move, do not copy: use only the exported context afterwards, "
        "or the two would reuse nonces.",
    )
    exp.add_argument("file", metavar="FILE", help="the OSCORE security file to export")
    exp.add_argument("--format", choices=("aiocoap", "libcoap"), required=True)
    exp.add_argument(
        "--out", metavar="PATH", required=True, help="aiocoap: a directory; libcoap: a file"
    )
    common(exp)


def run(args: argparse.Namespace) -> int:
    if args.group_command == "export":
        return export(args)
    return provision(args)


def export(args: argparse.Namespace) -> int:
    """``group export``: an OSCORE context in another tool's format."""
    try:
        context = load_context(args.file)
        if not isinstance(context, SecurityContext):
            raise ConfigError(
                f"{args.file} is a group context: aiocoap's and libcoap's "
                "files hold RFC 8613 contexts only"
            )
        out = Path(args.out)
        if args.format == "aiocoap":
            interop.export_aiocoap(context, out)
        else:
            interop.export_libcoap(context, out)
    except ConfigError as exc:
        print(f"grouposcore group export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"grouposcore group export: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"wrote {out} ({args.format})")
    return 0


def provision(args: argparse.Namespace) -> int:
    names: list[str] = args.names
    for name in names:
        if not _NAME.match(name):
            print(
                f"grouposcore group provision: bad member name {name!r} (letters, digits, "
                "'.', '_', '-')",
                file=sys.stderr,
            )
            return 2
    if len(set(names)) != len(names):
        print("grouposcore group provision: member names must differ", file=sys.stderr)
        return 2
    gid = None
    if args.gid is not None:
        try:
            gid = bytes.fromhex(args.gid)
        except ValueError:
            print(f"grouposcore group provision: --gid is not hex: {args.gid!r}", file=sys.stderr)
            return 2
    out = Path(args.out)
    targets = {name: out / f"{name}.json" for name in names}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not args.force:
        print(
            f"grouposcore group provision: would overwrite {', '.join(existing)} (use --force)",
            file=sys.stderr,
        )
        return 2
    # an ECDSA group uses ECDH with the same curve for pairwise mode (-27: ECDH-SS + HKDF-256)
    try:
        docs = provision_static_group(names, name=args.name, gid=gid, signature=args.signature)
        for name, doc in docs.items():
            # Sequence numbers survive restarts: a reused one would reuse an AEAD nonce.
            doc["sequence_file"] = f"{name}.seq"
            write_secret_file(targets[name], doc)
    except (GroupOscoreError, OSError) as exc:
        print(f"grouposcore group provision: {exc}", file=sys.stderr)
        return 3
    if args.json:
        print(
            json.dumps(
                {
                    "group": args.name,
                    "gid": next(iter(docs.values()))["gid"],
                    "members": [
                        {"name": n, "sender_id": docs[n]["sender_id"], "file": str(targets[n])}
                        for n in names
                    ],
                }
            )
        )
    elif not args.quiet:
        for name in names:
            print(f"{targets[name]}\t{name}\t{docs[name]['sender_id']}")
    return 0
