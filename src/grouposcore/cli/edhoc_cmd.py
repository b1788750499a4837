"""The EDHOC parts of ``grouposcore manager`` and ``grouposcore join``.

* ``manager allow NODE GROUP --roles ... --cred node.cred``: admit the node by its EDHOC
  credential (no channel file; the node establishes its channel with EDHOC);
* ``manager credential [--out gm.cred]``: the GM's EDHOC credential, what nodes pin;
* ``join GROUP --manager URI --key node.key --gm-cred gm.cred --state FILE``: run EDHOC with
  the GM, then join over the channel it yields.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from grouposcore.cli.membership import EdhocFiles, write_link
from grouposcore.cli.output import emit, report_joined
from grouposcore.coap.uri import parse_uri
from grouposcore.edhoc.credentials import edn, read_credential_file, write_credential_file
from grouposcore.manager.core import GroupManager
from grouposcore.manager.edhoc_client import EdhocGroupManagerClient, EdhocIdentity
from grouposcore.manager.edhoc_gm import GmEdhoc
from grouposcore.manager.params import roles_from_tperm
from grouposcore.manager.runtime import GroupMember

__all__ = [
    "add_allow_arguments",
    "add_join_arguments",
    "add_manager_commands",
    "allow",
    "credential",
    "join",
]


def _roles(tperm: int) -> str:
    return ",".join(sorted(r.name.lower() for r in roles_from_tperm(tperm)))


def add_allow_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cred`` on ``manager allow``."""
    parser.add_argument(
        "--cred",
        metavar="FILE",
        help="admit the node by its EDHOC credential ({14: CCS}, CBOR or "
        "diagnostic notation, e.g. from 'grouposcore keygen'); no "
        "channel file is written unless --channel-out is given",
    )


def add_manager_commands(sub: Any, db: Callable[[argparse.ArgumentParser], None]) -> None:
    """``manager credential``."""
    p = sub.add_parser(
        "credential",
        help="the GM's EDHOC credential (what nodes pin)",
        description="Print the Group Manager's EDHOC credential ({14: CCS}, "
        "diagnostic notation), made on first use; --out writes it "
        "to a file for 'grouposcore join --gm-cred'.",
    )
    p.add_argument("--out", metavar="FILE", help="write the credential to FILE")
    db(p)


def add_join_arguments(parser: argparse.ArgumentParser) -> None:
    """``--key``, ``--gm-cred`` and ``--cred`` on ``join`` (instead of ``--channel``)."""
    parser.add_argument(
        "--key",
        metavar="FILE",
        help="the node's EDHOC private key (0600, from 'grouposcore keygen'): "
        "establish the channel with EDHOC instead of a channel file",
    )
    parser.add_argument(
        "--gm-cred",
        metavar="FILE",
        help="the GM's EDHOC credential ('grouposcore manager credential')",
    )
    parser.add_argument(
        "--cred", metavar="FILE", help="the node's own credential (default: KEY as .cred)"
    )


def allow(gm: GroupManager, args: argparse.Namespace) -> int:
    """``manager allow ... --cred``: access list entry and credential registration."""
    credential = read_credential_file(args.cred)
    gm.allow(args.node, args.group, args.roles)
    GmEdhoc(gm).register(args.node, credential)
    roles = _roles(sum(1 << r for r in args.roles))
    emit(
        args,
        {
            "node": args.node,
            "group": args.group,
            "roles": roles,
            "edhoc_kid": None if credential.kid is None else credential.kid.hex(),
        },
        f"{args.node} may join {args.group} as {roles}; admitted by EDHOC credential "
        f"{credential.describe()}",
    )
    return 0


def credential(gm: GroupManager, args: argparse.Namespace) -> int:
    """``manager credential``."""
    cred = GmEdhoc(gm).credential
    if args.out:
        write_credential_file(args.out, cred)
    kid = None if cred.kid is None else cred.kid.hex()
    text = edn({14: cred.ccs()}) if not args.out else f"GM credential (kid {kid}) -> {args.out}"
    emit(args, {"kid": kid, "credential": edn({14: cred.ccs()}), "out": args.out}, text)
    return 0


async def join(args: argparse.Namespace) -> int:
    """``join --key``: EDHOC with the GM, then the join over that channel."""
    if not args.gm_cred:
        print(
            "grouposcore join: --key needs --gm-cred (the GM's EDHOC credential)", file=sys.stderr
        )
        return 1
    if not args.manager:
        print("grouposcore join: --key needs --manager URI", file=sys.stderr)
        return 1
    ident = EdhocIdentity.from_files(args.key, args.gm_cred, cred_file=args.cred)
    parsed = parse_uri(args.manager)
    member = await GroupMember.open(
        None, (parsed.host, parsed.port), ident, args.group, args.roles, args.state,
        timeout=args.timeout, follow=False, sign_alg=args.sign_alg,
    )  # fmt: skip
    write_link(args.state, None, args.manager, edhoc=EdhocFiles(args.key, args.gm_cred, args.cred))
    try:
        client = member.client
        handshakes = client.handshakes if isinstance(client, EdhocGroupManagerClient) else 0
        report_joined(args, ident.node, member, how=" (EDHOC)", edhoc=handshakes)
    finally:
        await member.close()
    return 0
