"""The ``grouposcore`` command: CoAP requests (plain, OSCORE, Group OSCORE, multicast),
a demo server and offline group provisioning."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

from grouposcore import __version__
from grouposcore.cli import (
    client,
    demo_cmd,
    group,
    join_cmd,
    keygen_cmd,
    manager_cmd,
    push_cmd,
    receive_cmd,
    server,
)


def _common(parser: argparse.ArgumentParser) -> None:
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debugging)"
    )
    loud.add_argument(
        "-q", "--quiet", action="store_true", help="only the responses, no status lines or warnings"
    )
    parser.add_argument(
        "--json", action="store_true", help="machine-readable output: one JSON object per line"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grouposcore",
        description="Secure group communication for CoAP (Group OSCORE, RFC 10021).",
    )
    parser.add_argument("--version", action="version", version=f"grouposcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in ("get", "put", "post", "delete", "observe"):
        what = (
            "register as observer and print notifications"
            if name == "observe"
            else f"send a {name.upper()} request"
        )
        p = sub.add_parser(
            name,
            help=what,
            description=f"{what[0].upper()}{what[1:]}. A multicast URI with --security sends a "
            "Group OSCORE group request and prints every verified response with "
            "its sender address and Sender ID.",
        )
        client.add_arguments(p, observe=name == "observe")
        _common(p)
    p = sub.add_parser(
        "serve", help="run a demo server (/light, /time)", description=server.__doc__
    )
    server.add_arguments(p)
    _common(p)
    p = sub.add_parser("group", help="static groups without a Group Manager")
    group.add_arguments(p, _common)
    p = sub.add_parser(
        "manager", help="run and administer a Group Manager", description=manager_cmd.DESCRIPTION
    )
    manager_cmd.add_manager_arguments(p, _common)
    p = sub.add_parser(
        "join",
        help="join a group through its Group Manager",
        description="Join GROUP (or resume from --state) through the Group "
        "Manager and write the member's state file (0600).",
    )
    join_cmd.add_join_arguments(p)
    _common(p)
    p = sub.add_parser(
        "keygen",
        help="make an EDHOC key pair and credential (for join --key)",
        description=keygen_cmd.__doc__,
    )
    keygen_cmd.add_arguments(p)
    _common(p)
    p = sub.add_parser(
        "demo",
        help="a secured lighting group with a Group Manager, end to end",
        description=demo_cmd.__doc__,
    )
    demo_cmd.add_arguments(p)
    _common(p)
    p = sub.add_parser(
        "push",
        help="send a file to every member of a group (firmware push)",
        description=push_cmd.__doc__,
    )
    push_cmd.add_push_arguments(p)
    _common(p)
    p = sub.add_parser(
        "receive",
        help="receive files pushed to the group (member side)",
        description=receive_cmd.__doc__,
    )
    receive_cmd.add_receive_arguments(p)
    _common(p)
    return parser


class _CliLogHandler(logging.StreamHandler[TextIO]):
    """The handler the CLI installs on the root logger; its class marks it, so calling
    :func:`main` again (tests, embedding) replaces it instead of adding a second one."""


def _logging(args: argparse.Namespace) -> None:
    if args.quiet:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    root = logging.getLogger()
    root.setLevel(level)
    handler = _CliLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for old in [h for h in root.handlers if isinstance(h, _CliLogHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    _logging(args)
    if args.command == "serve":
        return server.run(args)
    if args.command == "group":
        return group.run(args)
    if args.command == "manager":
        return manager_cmd.run_manager(args)
    if args.command == "join":
        return join_cmd.run_join(args)
    if args.command == "keygen":
        return keygen_cmd.run(args)
    if args.command == "demo":
        return demo_cmd.run(args, argv)
    if args.command == "push":
        return push_cmd.run_push(args)
    if args.command == "receive":
        return receive_cmd.run_receive(args)
    return client.run(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
