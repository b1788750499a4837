"""``grouposcore manager group list|get|set|delete`` and remote ``group create``: the admin
interface of draft-ietf-ace-oscore-gm-admin, spoken over an administrator's OSCORE channel
(``--manager coap://... --channel FILE``) or applied to the database file directly (``--db``,
the local operator, who holds every permission). Both paths run the same admin code, so a
command means the same thing either way. ``manager admin`` makes a node an administrator.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grouposcore.cli.output import emit, fail
from grouposcore.coap.uri import parse_uri
from grouposcore.errors import GroupOscoreError
from grouposcore.manager.admin import WILDCARD, AdminParam, AdminPerm
from grouposcore.manager.channel import (
    channel_sequence_key,
    read_channel_file,
    write_channel_file,
)
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.core import GroupManager
from grouposcore.manager.params import (
    CF_ACE_GROUPCOMM,
    Code,
    Param,
    decode_problem_details,
    dumps,
    loads_strict,
)
from grouposcore.oscore.sequence import FileSequenceStore, SenderSequence
from grouposcore.transport import Endpoint

__all__ = ["add_admin_arguments", "add_remote_arguments", "run_admin", "run_group_admin"]

_NAMES: dict[int, str] = {int(p): p.name.lower() for p in AdminParam}
_NAMES.update({int(Param.EXP): "exp", int(Param.GROUP_POLICIES): "group_policies",
               int(Param.ACE_GROUPCOMM_PROFILE): "ace_groupcomm_profile"})  # fmt: skip
_METHODS = {"GET": 1, "POST": 2, "DELETE": 4}


def add_remote_arguments(p: argparse.ArgumentParser) -> None:
    """--manager / --channel: talk to a running GM instead of opening the database."""
    p.add_argument("--manager", metavar="URI",
                   help="a running GM's URI (coap://HOST:PORT): use its admin interface "
                        "instead of the database")  # fmt: skip
    p.add_argument(
        "--channel",
        metavar="FILE",
        help="the administrator's channel file (from 'grouposcore manager admin')",
    )


def add_admin_arguments(gsub: Any, sub: Any, db: Callable[[argparse.ArgumentParser], None]) -> None:
    """The group list/get/set/delete commands and ``manager admin``."""
    p = gsub.add_parser("list", help="the groups (those the administrator may list)")
    add_remote_arguments(p)
    db(p)
    p = gsub.add_parser("get", help="a group's configuration (admin interface)")
    p.add_argument("name", metavar="NAME")
    add_remote_arguments(p)
    db(p)
    p = gsub.add_parser("set", help="change a group's status: active, description, ...")
    p.add_argument("name", metavar="NAME")
    state = p.add_mutually_exclusive_group()
    state.add_argument(
        "--active",
        dest="active",
        action="store_true",
        default=None,
        help="let nodes join and members use the group",
    )
    state.add_argument(
        "--inactive",
        dest="active",
        action="store_false",
        help="suspend the group (needed before delete)",
    )
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--max-stale-sets", type=int, metavar="N")
    add_remote_arguments(p)
    db(p)
    p = gsub.add_parser("delete", help="delete an inactive group")
    p.add_argument("name", metavar="NAME")
    add_remote_arguments(p)
    db(p)

    p = sub.add_parser(
        "admin",
        help="make a node an administrator; writes its channel file",
        description="Grant NODE admin permissions on the groups matching "
        "--groups (a group name, or * for all), commissioning its "
        "OSCORE channel with the GM if needed.",
    )
    p.add_argument("node", metavar="NODE")
    p.add_argument(
        "--groups",
        metavar="PATTERN",
        default=WILDCARD,
        help="a group name, or * (default) for every group",
    )
    p.add_argument(
        "--perms",
        default="list,create,read,write,delete",
        metavar="LIST",
        help="comma-separated: list, create, read, write, delete (default all); 'none' revokes",
    )
    p.add_argument(
        "--channel-out",
        metavar="FILE",
        help="where to write the channel file (default NODE.channel.json)",
    )
    p.add_argument("--manager", metavar="URI", help="the GM's URI to note in the channel file")
    db(p)


def _named(body: dict[Any, Any]) -> dict[str, Any]:
    return {_NAMES.get(k, str(k)): v for k, v in body.items()}


def run_admin(args: argparse.Namespace) -> int:
    """``manager admin NODE``: grant, commission, write the channel file."""
    perms = 0
    if args.perms.strip().lower() != "none":
        for word in args.perms.split(","):
            try:
                perms |= 1 << AdminPerm[word.strip().upper()]
            except KeyError:
                return fail("manager admin", f"unknown permission {word.strip()!r}")
    try:
        gm = GroupManager(args.db)
    except GroupOscoreError as e:
        return fail("manager admin", str(e))
    try:
        gm.allow_admin(args.node, args.groups, perms)
        channel = gm.store.channel(args.node) or gm.commission_node(args.node)
        out = Path(args.channel_out or f"{args.node}.channel.json")
        write_channel_file(out, channel, manager=args.manager)
    except GroupOscoreError as e:
        return fail("manager admin", str(e))
    finally:
        gm.close()
    names = [p.name.lower() for p in AdminPerm if perms >> p & 1]
    emit(args, {"node": args.node, "groups": args.groups, "perms": names,
                "channel": str(out)},
         f"{args.node} administers {args.groups}: {','.join(names) or 'nothing'}; "
         f"channel file {out}")  # fmt: skip
    return 0


async def _remote(args: argparse.Namespace, method: str, path: tuple[str, ...],
                  body: dict[int, Any] | None) -> tuple[int, bytes]:  # fmt: skip
    if not args.channel:
        raise GroupOscoreError("--manager needs the administrator's --channel file")
    channel, _noted, _pinned = read_channel_file(args.channel)
    uri = parse_uri(args.manager)
    host = (
        "127.0.0.1"
        if uri.host.startswith("127.")
        else "::1"
        if uri.host == "::1"
        else ("::" if ":" in uri.host else "0.0.0.0")
    )
    endpoint = await Endpoint.create((host, 0))
    try:
        sequence = SenderSequence(store=FileSequenceStore(str(args.channel) + ".seq"),
                                  key=channel_sequence_key(channel))  # fmt: skip
        client = GroupManagerClient(endpoint, (uri.host, uri.port), channel, sequence=sequence,
                                    timeout=10.0)  # fmt: skip
        payload = b"" if body is None else dumps(body)
        cf = None if body is None else CF_ACE_GROUPCOMM
        r = await client.request(_METHODS[method], path, payload, cf, ok=range(256))
        return r.code, r.payload
    finally:
        await endpoint.close()


def call(args: argparse.Namespace, method: str, path: tuple[str, ...],
         body: dict[int, Any] | None = None) -> tuple[int, bytes]:  # fmt: skip
    """One admin request, remote (``--manager``) or on the database (``--db``)."""
    if getattr(args, "manager", None):
        return asyncio.run(_remote(args, method, path, body))
    gm = GroupManager(args.db)
    try:
        payload = b"" if body is None else dumps(body)
        r = gm.administer(method, path, payload, None if body is None else CF_ACE_GROUPCOMM)
        return r.code, r.payload
    finally:
        gm.close()


def _error(what: str, code: int, payload: bytes) -> int:
    detail = payload.decode("utf-8", "replace")[:200]
    try:
        error_id, text = decode_problem_details(payload)
        detail = f"{text or ''} (error {error_id})" if error_id is not None else text or ""
    except GroupOscoreError:
        pass
    return fail(what, f"{code >> 5}.{code & 31:02d} {detail}".strip())


def remote_create(args: argparse.Namespace, config: dict[int, Any]) -> int:
    """``group create --manager``: POST /manage."""
    code, payload = call(args, "POST", ("manage",), config)
    if code != Code.CREATED:
        return _error("manager group create", code, payload)
    body = _named(loads_strict(payload, "creation response"))
    emit(args, body, f"created group {body.get('group_name')}; join at "
                     f"{body.get('joining_uri')}")  # fmt: skip
    return 0


def run_group_admin(args: argparse.Namespace) -> int:
    """``manager group list|get|set|delete``."""
    what = f"manager group {args.group_command}"
    try:
        if args.group_command == "list":
            code, payload = call(args, "GET", ("manage",))
            if code != Code.CONTENT:
                return _error(what, code, payload)
            names = [t.split("/")[-1] for t in payload.decode().replace(">", "<").split("<")
                     if t.startswith("/manage/")]  # fmt: skip
            emit(args, {"groups": names}, "\n".join(names))
            return 0
        path = ("manage", args.name)
        if args.group_command == "delete":
            code, payload = call(args, "DELETE", path)
            if code != Code.DELETED:
                return _error(what, code, payload)
            emit(args, {"deleted": args.name}, f"deleted group {args.name}")
            return 0
        code, payload = call(args, "GET", path)
        if code != Code.CONTENT:
            return _error(what, code, payload)
        conf = loads_strict(payload, "group configuration")
        if args.group_command == "get":
            named = _named(conf)
            emit(args, named, "\n".join(f"{k}: {v}" for k, v in named.items()))
            return 0
        keep = (AdminParam.ACTIVE, AdminParam.GROUP_DESCRIPTION, AdminParam.MAX_STALE_SETS,
                AdminParam.APP_GROUPS, AdminParam.AS_URI)  # fmt: skip
        new: dict[int, Any] = {k: conf[k] for k in keep if conf.get(k) is not None}
        if args.active is not None:
            new[AdminParam.ACTIVE] = args.active
        if args.description is not None:
            new[AdminParam.GROUP_DESCRIPTION] = args.description
        if args.max_stale_sets is not None:
            new[AdminParam.MAX_STALE_SETS] = args.max_stale_sets
        code, payload = call(args, "POST", path, new)
        if code != Code.CHANGED:
            return _error(what, code, payload)
        emit(args, _named(new), f"group {args.name}: " + ", ".join(
            f"{_NAMES[int(k)]} {v}" for k, v in new.items()))  # fmt: skip
        return 0
    except GroupOscoreError as e:
        return fail(what, str(e))
    except OSError as e:
        return fail(what, str(e.strerror or e))
