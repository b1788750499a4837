"""``grouposcore join``: join a group through its Group Manager (or resume), over the node's
channel file from ``grouposcore manager allow`` or with EDHOC.

The member's state file is written 0600; a later ``join`` (or any :class:`GroupMember`)
resumes from it without a new join while the material is current. The channel's sequence
numbers are reserved in ``CHANNEL.seq``, shared safely with any other process using the
same channel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Iterable

from grouposcore.cli import edhoc_cmd
from grouposcore.cli.manager_cmd import parse_roles
from grouposcore.cli.membership import write_link
from grouposcore.cli.output import fail, report_joined
from grouposcore.coap.uri import parse_uri
from grouposcore.errors import GroupManagerRequestError, GroupOscoreError
from grouposcore.manager.params import Code, ErrorId, Role
from grouposcore.manager.runtime import GroupMember, read_channel_file

__all__ = ["add_join_arguments", "join_refusal", "run_join"]


def add_join_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("group", metavar="GROUP")
    parser.add_argument(
        "--manager",
        metavar="URI",
        help="the GM, e.g. coap://127.0.0.1:5683 (default: from the channel file)",
    )
    parser.add_argument(
        "--channel",
        metavar="FILE",
        help="the node's channel file from 'grouposcore manager allow' "
        "(or --key and --gm-cred: EDHOC)",
    )
    edhoc_cmd.add_join_arguments(parser)
    parser.add_argument(
        "--state",
        metavar="FILE",
        required=True,
        help="the member's state file (written 0600; resumed from if present)",
    )
    parser.add_argument(
        "--roles",
        type=parse_roles,
        default=[Role.REQUESTER, Role.RESPONDER],
        help="roles to join with (default requester,responder)",
    )
    parser.add_argument(
        "--sign-alg",
        type=int,
        default=-8,
        metavar="N",
        help="algorithm of the member key generated at the first join",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="per-request timeout towards the GM (seconds)",
    )


def join_refusal(
    error: GroupManagerRequestError, node: str, group: str, roles: Iterable[Role]
) -> str:
    """What a refused join means for the operator (the GM's own words when it gave any)."""
    said = str(error)
    code = f"{error.code >> 5}.{error.code & 31:02d}"
    if error.error_id is not None:
        with contextlib.suppress(ValueError):
            said += f" [{ErrorId(error.error_id).name.lower().replace('_', ' ')}]"
    wanted = ",".join(r.name.lower() for r in roles)
    if error.code == Code.FORBIDDEN:
        return (
            f"{said}: {node} may not join {group} as {wanted} (not on the group's access "
            f"list, evicted, or not allowed these roles; the GM's operator sees the access "
            f"list with 'grouposcore manager show {group}')"
        )
    if error.code == Code.NOT_FOUND:
        return f"{said}: the Group Manager has no group {group!r} ({code} Not Found)"
    if error.code == Code.UNAUTHORIZED:
        return (
            f"{said}: the Group Manager does not know {node}'s channel (an outdated "
            "channel file, recommissioned, or another Group Manager)"
        )
    if error.code == Code.SERVICE_UNAVAILABLE and error.retry_after is not None:
        return (
            f"{said}: {node} joined {group} more often than the Group Manager allows (a "
            "join while still a member, or a leave and join again, rekeys the group); run "
            "the same command again then"
        )
    return said


def run_join(args: argparse.Namespace) -> int:
    """``grouposcore join``: join (or resume), write the state file, print the summary."""
    try:
        return asyncio.run(_join(args))
    except GroupOscoreError as e:
        return fail("join", str(e))
    except OSError as e:
        return fail("join", f"{e.strerror or e}")


async def _join(args: argparse.Namespace) -> int:
    if args.key:
        return await edhoc_cmd.join(args)
    if not args.channel:
        return fail("join", "give --channel FILE, or --key and --gm-cred (EDHOC)")
    channel, noted, pinned = read_channel_file(args.channel)
    uri = args.manager or noted
    if uri is None:
        return fail("join", "no --manager URI and none in the channel file")
    parsed = parse_uri(uri)
    try:
        member = await GroupMember.open(
            None, (parsed.host, parsed.port), channel, args.group, args.roles, args.state,
            channel_sequence=str(args.channel) + ".seq", timeout=args.timeout, follow=False,
            sign_alg=args.sign_alg, gm_credential=pinned.get(args.group),
        )  # fmt: skip
    except GroupManagerRequestError as e:
        return fail("join", join_refusal(e, channel.node, args.group, args.roles))
    try:
        # serve, receive and the request commands follow the GM through this link
        write_link(args.state, args.channel, uri)
        report_joined(args, channel.node, member)
    finally:
        await member.close()
    return 0
