"""``grouposcore get|put|post|delete|observe``: one request, or a group request to a
multicast address, with OSCORE / Group OSCORE protection from a security file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from grouposcore.cli.output import Printer
from grouposcore.cli.security_files import is_member_state, load_context
from grouposcore.coap import CoapUri, Code, Message, parse_uri, uri_to_options
from grouposcore.errors import GroupOscoreError, RequestTimeout, UriError
from grouposcore.oscore import GroupContext, SecurityContext
from grouposcore.oscore.config import ConfigError, read_secret_file
from grouposcore.oscore.security import ClientSecurity
from grouposcore.transport import Endpoint
from grouposcore.transport.sockets import is_multicast

log = logging.getLogger("grouposcore.cli")

METHODS = {"get": Code.GET, "put": Code.PUT, "post": Code.POST, "delete": Code.DELETE,
           "observe": Code.GET}

#: exit status: an error response (4.xx/5.xx) or no response to a group request
EXIT_ERROR_RESPONSE = 1
#: exit status: bad arguments or an unusable security file
EXIT_USAGE = 2
#: exit status: timeout, network or verification failure
EXIT_FAILURE = 3

#: How long a group request collects responses unless --timeout says otherwise
DEFAULT_GROUP_TIMEOUT = 3.0
#: How long an Observe registration may take unless --timeout says otherwise
DEFAULT_OBSERVE_TIMEOUT = 10.0


class UsageError(Exception):
    """Arguments that do not fit together; reported like argparse errors."""


def add_arguments(parser: argparse.ArgumentParser, *, observe: bool = False) -> None:
    parser.add_argument("uri", metavar="URI", help="coap://host[:port]/path[?query]")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--payload", metavar="TEXT", help="request payload (UTF-8 text)")
    body.add_argument("--payload-file", metavar="FILE",
                      help="request payload from a file ('-' for standard input)")
    parser.add_argument("--content-format", metavar="N", type=int,
                        help="Content-Format of the payload (e.g. 0 text, 50 JSON, 60 CBOR)")
    parser.add_argument("--security", metavar="FILE",
                        help="OSCORE or group security file to protect the request with")
    parser.add_argument("--group", metavar="FILE",
                        help="group security file (Group OSCORE); required for a secured "
                             "multicast request")
    parser.add_argument("--pairwise", metavar="SENDER_ID_HEX",
                        help="Group OSCORE pairwise mode with this member (unicast only)")
    parser.add_argument("--timeout", metavar="S", type=float,
                        help="give up after S seconds (group requests: collect responses for "
                             f"S seconds, default {DEFAULT_GROUP_TIMEOUT:g})")
    parser.add_argument("--non", action="store_true", help="send a NON request (unicast)")
    parser.add_argument("--interface", metavar="IF",
                        help="interface (name, index or IPv4 address) for multicast requests")
    if observe:
        parser.add_argument("--count", metavar="N", type=int,
                            help="stop after N notifications (default: until interrupted)")


def _payload(args: argparse.Namespace) -> bytes:
    if args.payload is not None:
        return str(args.payload).encode("utf-8")
    if args.payload_file is not None:
        if args.payload_file == "-":
            return sys.stdin.buffer.read()
        try:
            return Path(args.payload_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read payload file: {exc}") from exc
    return b""


def require_durable_sequence(path: str) -> None:
    """Refuse a security file without ``sequence_file``: every run would start counting at
    0 again and reuse nonces (and the peers would reject the requests as replays)."""
    if is_member_state(path):
        return  # a member's state always comes with its STATE.seq reservation file
    document = read_secret_file(path)
    if document.get("sender_id") is not None and not document.get("sequence_file"):
        raise UsageError(
            f"{path} has no 'sequence_file': sequence numbers would restart at 0 on every "
            "run and reuse nonces; add e.g. \"sequence_file\": \"member.seq\""
        )


def _security(args: argparse.Namespace, multicast: bool) -> ClientSecurity | None:
    if args.security and args.group:
        raise UsageError("give either --security or --group, not both")
    path = args.group or args.security
    if path is None:
        if args.pairwise:
            raise UsageError("--pairwise needs a group file (--group)")
        return None
    context = load_context(path)
    require_durable_sequence(path)
    if args.group and not isinstance(context, GroupContext):
        raise UsageError(f"{path} is not a group security file")
    pairwise = None
    if args.pairwise:
        if not isinstance(context, GroupContext):
            raise UsageError("--pairwise needs a group file")
        if multicast:
            raise UsageError("--pairwise is for unicast requests; a group request goes in "
                             "group mode")
        try:
            pairwise = bytes.fromhex(args.pairwise)
        except ValueError as exc:
            raise UsageError(f"--pairwise: not a hex Sender ID: {args.pairwise!r}") from exc
        if pairwise not in context.recipients:
            raise UsageError(f"--pairwise: {args.pairwise} is not a member of the group")
    if multicast and not isinstance(context, GroupContext):
        raise UsageError("a multicast request needs a group file (--group)")
    return ClientSecurity(context, pairwise_with=pairwise)


def build_request(args: argparse.Namespace, uri: CoapUri) -> Message:
    msg = Message(METHODS[args.command], payload=_payload(args),
                  options=uri_to_options(uri))
    if args.content_format is not None:
        if not 0 <= args.content_format <= 0xFFFF:
            raise UsageError("--content-format must be 0..65535")
        msg.options.content_format = args.content_format
    return msg


def _bind_for(host: str) -> tuple[str, int]:
    return ("0.0.0.0", 0) if "." in host and ":" not in host else ("::", 0)


def _exit_for(msg: Message) -> int:
    return 0 if 64 <= msg.code < 96 else EXIT_ERROR_RESPONSE


async def _run(args: argparse.Namespace, printer: Printer) -> int:
    try:
        uri = parse_uri(args.uri)
    except UriError as exc:
        raise UsageError(f"bad URI: {exc}") from exc
    if uri.scheme != "coap":
        raise UsageError(f"only coap:// URIs are supported, not {uri.scheme}://")
    multicast = is_multicast(uri.host)
    security = _security(args, multicast)
    printer.oscore = security is not None and isinstance(security.context, SecurityContext)
    request = build_request(args, uri)
    async with await Endpoint.create(
        _bind_for(uri.host), multicast_interface=args.interface
    ) as endpoint:
        if multicast:
            if args.command == "observe":
                raise UsageError("observe is for unicast URIs")
            return await _group(endpoint, request, uri, args, security, printer)
        if args.command == "observe":
            return await _observe(endpoint, request, uri, args, security, printer)
        response = await endpoint.request(
            request, (uri.host, uri.port), timeout=args.timeout,
            confirmable=not args.non, security=security,
        )
        printer.response(response)
        return _exit_for(response)


async def _group(
    endpoint: Endpoint, request: Message, uri: CoapUri, args: argparse.Namespace,
    security: ClientSecurity | None, printer: Printer,
) -> int:
    timeout = args.timeout if args.timeout is not None else DEFAULT_GROUP_TIMEOUT
    count = 0
    async for response in endpoint.group_request(
        request, (uri.host, uri.port), timeout=timeout, security=security,
        interface=args.interface,
    ):
        count += 1
        printer.group_response(response)
    printer.note(f"{count} response{'s' if count != 1 else ''}"
                 f"{' (verified)' if security is not None and count else ''}")
    return 0 if count else EXIT_ERROR_RESPONSE


async def _observe(
    endpoint: Endpoint, request: Message, uri: CoapUri, args: argparse.Namespace,
    security: ClientSecurity | None, printer: Printer,
) -> int:
    # A registration answered by an error that cannot be verified (e.g. an unprotected
    # 4.01) is dropped by the endpoint, so the registration needs a deadline of its own.
    timeout = args.timeout if args.timeout is not None else DEFAULT_OBSERVE_TIMEOUT
    observation = endpoint.observe(
        request, (uri.host, uri.port), security=security, timeout=timeout
    )
    seen = 0
    status = 0
    try:
        async for notification in observation:
            printer.response(notification)
            seen += 1
            status = _exit_for(notification)
            if notification.options.observe is None:
                if seen == 1 and status == 0:
                    printer.note("the resource is not observable")
                break
            if args.count is not None and seen >= args.count:
                break
    finally:
        with contextlib.suppress(GroupOscoreError, OSError):
            await observation.cancel(timeout=2)
    return status


def run(args: argparse.Namespace) -> int:
    """Entry point of the request commands; returns the exit status."""
    printer = Printer(json_output=args.json, quiet=args.quiet)
    try:
        return asyncio.run(_run(args, printer))
    except (UsageError, ConfigError) as exc:
        print(f"grouposcore {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RequestTimeout as exc:
        print(f"grouposcore {args.command}: timeout: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except (GroupOscoreError, OSError) as exc:
        print(f"grouposcore {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
