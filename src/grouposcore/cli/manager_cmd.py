"""``grouposcore manager ...``: run and administer a Group Manager.

The administrative commands (``group create``, ``allow``, ``evict``, ``rekey``, ``show``)
work directly on the GM database, with or without a running ``manager serve``: the server
looks at the database before each request and every ``--sync`` seconds (one query, the
store's change marker, unless another process committed something), installs channels
commissioned meanwhile, publishes new groups, and pushes rekeyings made offline to the
members observing their group (with the stale Sender IDs) and 4.04 to the evicted ones.
It also rekeys every group whose keying material expired ('exp', from ``group create
--lifetime``).

``allow`` also commissions the node's OSCORE channel with the GM (once per node) and writes
the node's channel file (0600), which ``grouposcore join`` (:mod:`grouposcore.cli.join_cmd`)
uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grouposcore.cli import edhoc_cmd, manager_admin, manager_serve
from grouposcore.cli.output import emit, fail, role_names
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.admin import AdminParam
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import (
    Param,
    Role,
)
from grouposcore.manager.runtime import read_channel_file, write_channel_file
from grouposcore.manager.store import sqlite_path

log = logging.getLogger("grouposcore.cli")

DEFAULT_DB = "grouposcore-gm.db"
DESCRIPTION = (
    "Run a Group Manager (serve) and administer it (group create, allow, evict, rekey, "
    "show). The administrative commands work on the database directly; a running server "
    "picks their changes up and pushes rekeyings to the members."
)
_ROLE_NAMES = {"requester": Role.REQUESTER, "responder": Role.RESPONDER,
               "monitor": Role.MONITOR, "verifier": Role.VERIFIER}  # fmt: skip


def parse_roles(text: str) -> list[Role]:
    """``requester,responder`` -> roles (argparse type)."""
    try:
        roles = [_ROLE_NAMES[w.strip().lower()] for w in text.split(",") if w.strip()]
    except KeyError as e:
        raise argparse.ArgumentTypeError(
            f"unknown role {e.args[0]!r} (requester, responder, monitor, verifier)"
        ) from None
    if not roles:
        raise argparse.ArgumentTypeError("no role given")
    return roles


def _alg(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a COSE algorithm number: {text!r}") from None


# --- argument parsers ---------------------------------------------------------------------


def add_manager_arguments(
    parser: argparse.ArgumentParser, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """The ``manager`` subcommands; ``common`` adds -v/-q/--json to each."""
    sub = parser.add_subparsers(dest="manager_command", metavar="COMMAND", required=True)

    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--db",
            metavar="URL",
            default=DEFAULT_DB,
            help="GM database: a path or sqlite:///PATH (SQLite, created 0600), or "
            "postgresql://... (shared by several GM processes); "
            f"default {DEFAULT_DB}",
        )
        common(p)

    p = sub.add_parser(
        "serve",
        help="run the Group Manager (the /ace-group resources)",
        description="Serve the groups of the database to commissioned nodes "
        "over their OSCORE channels. Prints 'listening on "
        "ADDR:PORT' once ready.",
    )
    p.add_argument("--bind", metavar="ADDR", default="::", help="local address (default ::)")
    p.add_argument(
        "--port",
        metavar="N",
        type=int,
        default=5683,
        help="UDP port (default 5683; 0 picks a free one)",
    )
    p.add_argument(
        "--sync",
        metavar="S",
        type=float,
        default=1.0,
        help="how often to pick up changes made by offline commands (seconds)",
    )
    p.add_argument(
        "--rejoin-burst",
        metavar="N",
        type=int,
        default=3,
        help="joins one node may make at once (a re-join or a leave and join again each "
        "rekey the group; default 3)",
    )
    p.add_argument(
        "--rejoin-interval",
        metavar="S",
        type=float,
        default=60.0,
        help="then one join per S seconds; more get 5.03 with Max-Age (default 60)",
    )
    db(p)

    grp = sub.add_parser("group", help="create groups")
    gsub = grp.add_subparsers(dest="group_command", metavar="COMMAND", required=True)
    p = gsub.add_parser("create", help="create a group with fresh keying material")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--algs",
        metavar="SIGN,ENC,AEAD,ECDH",
        help="all four algorithms at once (Signature, Group Encryption, pairwise "
        "AEAD, pairwise key agreement), e.g. --algs=-7,10,10,-27 or "
        "--algs=-8,10,none,none",
    )
    p.add_argument(
        "--sign-alg",
        type=int,
        default=-8,
        metavar="N",
        help="signature algorithm: -8 EdDSA (default), -7 ES256",
    )
    p.add_argument(
        "--group-enc-alg",
        type=int,
        default=10,
        metavar="N",
        help="group-mode encryption algorithm (default 10, AES-CCM-16-64-128)",
    )
    p.add_argument(
        "--aead-alg",
        type=_alg,
        default=10,
        metavar="N|none",
        help="pairwise-mode AEAD (default 10; none: no pairwise mode)",
    )
    p.add_argument(
        "--ecdh-alg",
        type=_alg,
        default=-27,
        metavar="N|none",
        help="pairwise key agreement (default -27, ECDH-SS + HKDF-256)",
    )
    p.add_argument(
        "--no-backward-security", action="store_true", help="do not rekey when a node joins"
    )
    p.add_argument(
        "--lifetime",
        type=int,
        default=30 * 24 * 3600,
        metavar="S",
        help="keying material lifetime in seconds (default 30 days)",
    )
    p.add_argument("--description", metavar="TEXT", help="(with --manager) group description")
    p.add_argument(
        "--inactive", action="store_true", help="(with --manager) create the group suspended"
    )
    manager_admin.add_remote_arguments(p)
    db(p)
    manager_admin.add_admin_arguments(gsub, sub, db)

    p = sub.add_parser(
        "allow",
        help="let a node join a group; writes its channel file",
        description="Put NODE on GROUP's access list with the given roles. "
        "The first time a node is allowed anywhere, its OSCORE "
        "channel with the GM is commissioned. The channel file "
        "(0600) is what 'grouposcore join --channel' needs. "
        "(The old order NODE GROUP still works when it is "
        "unambiguous.)",
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument("node", metavar="NODE")
    p.add_argument(
        "--roles",
        type=parse_roles,
        required=True,
        help="comma-separated: requester, responder, monitor",
    )
    p.add_argument(
        "--channel-out",
        metavar="FILE",
        help="where to write the channel file (default NODE.channel.json)",
    )
    p.add_argument(
        "--manager",
        metavar="URI",
        help="the GM's URI as the node reaches it, noted in the channel file, e.g. "
        "coap://[::1]:5683 (required unless the channel file names it)",
    )
    p.add_argument(
        "--recommission",
        action="store_true",
        help="new channel keys for the node (its old channel file stops working)",
    )
    edhoc_cmd.add_allow_arguments(p)
    db(p)
    edhoc_cmd.add_manager_commands(sub, db)

    p = sub.add_parser("evict", help="remove a member and rekey the group")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("node", metavar="NODE")
    p.add_argument(
        "--keep-access",
        action="store_true",
        help="leave the node on the access list (it may join again)",
    )
    db(p)

    p = sub.add_parser("rekey", help="rekey a group now")
    p.add_argument("group", metavar="GROUP")
    db(p)

    p = sub.add_parser("show", help="groups, members and the access list")
    p.add_argument("group", metavar="GROUP", nargs="?")
    db(p)


# --- offline administration ---------------------------------------------------------------


def _group_create(gm: GroupManager, args: argparse.Namespace) -> int:
    sign, enc, aead, ecdh = args.sign_alg, args.group_enc_alg, args.aead_alg, args.ecdh_alg
    if args.algs:
        parts = [w.strip() for w in args.algs.split(",")]
        if len(parts) != 4:
            return fail("manager group create", "--algs needs SIGN,ENC,AEAD,ECDH")
        try:
            vals = [_alg(w) for w in parts]
        except argparse.ArgumentTypeError as e:
            return fail("manager group create", str(e))
        if vals[0] is None or vals[1] is None:
            return fail("manager group create", "signature and group encryption are needed")
        sign, enc, aead, ecdh = vals[0], vals[1], vals[2], vals[3]
    if (aead is None) != (ecdh is None):
        return fail("manager group create", "pairwise mode needs both --aead-alg and --ecdh-alg")
    g = gm.create_group(
        args.name, sign_alg=sign, group_enc_alg=enc, aead_alg=aead, ecdh_alg=ecdh,
        backward_security=not args.no_backward_security, lifetime=args.lifetime,
    )  # fmt: skip
    emit(
        args,
        {"group": g.name, "gid": g.gid.hex(), "num": g.num},
        f"created group {g.name} (Gid {g.gid.hex()})",
    )
    return 0


def _remote_group_create(args: argparse.Namespace) -> int:
    """``group create --manager``: the same group through the GM's admin interface."""
    if args.no_backward_security:
        return fail("manager group create", "--no-backward-security is a local-only setting")
    aead, ecdh = args.aead_alg, args.ecdh_alg
    sign, enc = args.sign_alg, args.group_enc_alg
    if args.algs:
        try:
            sign, enc, aead, ecdh = (_alg(w.strip()) for w in args.algs.split(","))
        except (argparse.ArgumentTypeError, ValueError):
            return fail("manager group create", "--algs needs SIGN,ENC,AEAD,ECDH")
    config: dict[int, Any] = {
        AdminParam.GROUP_NAME: args.name, AdminParam.ACTIVE: not args.inactive,
        AdminParam.SIGN_ALG: sign, AdminParam.GP_ENC_ALG: enc,
        AdminParam.PAIRWISE_MODE: aead is not None and ecdh is not None,
        Param.EXP: int(time.time()) + args.lifetime,
    }  # fmt: skip
    if aead is not None and ecdh is not None:
        config[AdminParam.ALG], config[AdminParam.ECDH_ALG] = aead, ecdh
    if args.description:
        config[AdminParam.GROUP_DESCRIPTION] = args.description
    try:
        return manager_admin.remote_create(args, config)
    except GroupOscoreError as e:
        return fail("manager group create", str(e))
    except OSError as e:
        return fail("manager group create", str(e.strerror or e))


def _allow(gm: GroupManager, args: argparse.Namespace) -> int:
    if gm.group(args.group) is None and gm.group(args.node) is not None:
        # the order before 'allow GROUP NODE' (like 'evict GROUP NODE')
        print(
            f"grouposcore manager allow: warning: 'allow NODE GROUP' is deprecated; "
            f"write 'allow {args.node} {args.group}' (GROUP first, like evict)",
            file=sys.stderr,
        )
        args.group, args.node = args.node, args.group
    if gm.group(args.group) is None:
        return fail("manager allow", f"no group {args.group!r}")
    if args.cred and not args.channel_out:
        return edhoc_cmd.allow(gm, args)
    gm.allow(args.node, args.group, args.roles)
    channel = gm.store.channel(args.node)
    if channel is None or args.recommission:
        channel = gm.commission_node(args.node)
    out = Path(args.channel_out or f"{args.node}.channel.json")
    pinned: dict[str, bytes] = {}
    manager = args.manager
    if out.exists():
        with contextlib.suppress(GroupOscoreError):
            old, old_manager, pinned = read_channel_file(out)
            if old != channel:
                pinned = {}
            manager = manager or old_manager
    if manager is None:
        return fail(
            "manager allow",
            "give --manager URI, the Group Manager's address as the "
            "node will reach it (e.g. coap://192.0.2.1:5683): the channel file needs "
            "it for 'grouposcore join'",
        )
    for entry in gm.store.access_list():
        if entry.node == args.node and entry.roles and gm.group(entry.group) is not None:
            pinned[entry.group] = gm.gm_credential(entry.group)
    write_channel_file(out, channel, manager=manager, gm_credentials=pinned)
    roles = role_names(sum(1 << r for r in args.roles))
    emit(
        args,
        {"node": args.node, "group": args.group, "roles": roles, "channel": str(out)},
        f"{args.node} may join {args.group} as {roles}; channel file {out}",
    )
    return 0


def _show(gm: GroupManager, args: argparse.Namespace) -> int:
    groups = [g for g in gm.store.groups() if args.group in (None, g.name)]
    if args.group is not None and not groups:
        return fail("manager show", f"no group {args.group!r}")
    access = gm.store.access_list()
    for g in groups:
        members = [
            {"node": m.node, "roles": role_names(m.roles),
             "sender_id": None if m.sender_id is None else m.sender_id.hex()}
            for m in gm.members(g.name)
        ]  # fmt: skip
        allowed = [
            {"node": a.node, "roles": role_names(a.roles)}
            for a in access if a.group == g.name and a.roles
        ]  # fmt: skip
        record = {
            "group": g.name, "gid": g.gid.hex(), "num": g.num, "exp": g.exp,
            "active": g.active, "backward_security": g.backward_security,
            "algs": {"sign": g.sign_alg, "group_enc": g.group_enc_alg, "aead": g.aead_alg,
                     "ecdh": g.ecdh_alg, "hkdf": g.hkdf_alg},
            "members": members, "allowed": allowed,
        }  # fmt: skip
        lines = [f"group {g.name}: Gid {g.gid.hex()}, num {g.num}, "
                 f"{'active' if g.active else 'inactive'}, algs sign {g.sign_alg} "
                 f"enc {g.group_enc_alg} aead {g.aead_alg} ecdh {g.ecdh_alg}"]  # fmt: skip
        for m in members:
            lines.append(f"  member {m['node']}: {m['roles']}, Sender ID {m['sender_id'] or '-'}")
        for a in allowed:
            lines.append(f"  allowed {a['node']}: {a['roles']}")
        emit(args, record, "\n".join(lines))
    return 0


def run_manager(args: argparse.Namespace) -> int:
    """Dispatch ``grouposcore manager ...``."""
    creating = args.manager_command == "group"
    try:
        db_file = sqlite_path(args.db)
    except GroupOscoreError as exc:
        return fail(f"manager {args.manager_command}", str(exc))
    if not creating and db_file is not None and not db_file.exists():
        # a typo must not leave an empty database behind (only 'group create' makes one)
        return fail(
            f"manager {args.manager_command}",
            f"no Group Manager database {args.db} (create it with 'grouposcore "
            f"manager group create NAME --db {args.db}')",
        )
    if args.manager_command == "serve":
        try:
            return asyncio.run(manager_serve.serve(args))
        except KeyboardInterrupt:
            return 0
    if args.manager_command == "admin":
        return manager_admin.run_admin(args)
    if args.manager_command == "group" and args.group_command != "create":
        return manager_admin.run_group_admin(args)
    if args.manager_command == "group" and args.manager:
        return _remote_group_create(args)
    try:
        gm = GroupManager(args.db)
    except GroupOscoreError as e:
        return fail("manager", str(e))
    try:
        if args.manager_command == "group":
            return _group_create(gm, args)
        if args.manager_command == "allow":
            return _allow(gm, args)
        if args.manager_command == "credential":
            return edhoc_cmd.credential(gm, args)
        if args.manager_command == "evict":
            gm.evict(args.group, args.node, revoke=not args.keep_access)
            g = gm.group(args.group)
            assert g is not None
            emit(
                args,
                {"group": args.group, "evicted": args.node, "num": g.num},
                f"evicted {args.node} from {args.group}; rekeyed to num {g.num}",
            )
            return 0
        if args.manager_command == "rekey":
            gm.rekey(args.group)
            g = gm.group(args.group)
            assert g is not None
            emit(
                args,
                {"group": args.group, "num": g.num, "gid": g.gid.hex()},
                f"rekeyed {args.group} to num {g.num} (Gid {g.gid.hex()})",
            )
            return 0
        return _show(gm, args)
    except GroupOscoreError as e:
        return fail(f"manager {args.manager_command}", str(e))
    finally:
        gm.close()
