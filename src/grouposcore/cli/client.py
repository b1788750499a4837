"""``grouposcore get|put|post|delete|observe``: one request, or a group request to a
multicast address, with OSCORE / Group OSCORE protection from a security file."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

from grouposcore.cli.membership import follows_manager, open_member
from grouposcore.cli.output import Printer, format_address
from grouposcore.cli.security_files import (
    add_security_argument,
    is_member_state,
    kind,
    load_context,
)
from grouposcore.coap import CoapUri, Code, Message, parse_uri, uri_to_options
from grouposcore.coap.constants import ACK_TIMEOUT, DEFAULT_LEISURE
from grouposcore.errors import (
    ConfigError,
    GroupManagerRequestError,
    GroupOscoreError,
    MembershipTerminated,
    PeerUnreachable,
    RequestTimeout,
    UriError,
    UsageError,
)
from grouposcore.manager.params import Role
from grouposcore.oscore import GroupContext, SecurityContext
from grouposcore.oscore.config import read_secret_file
from grouposcore.oscore.security import ClientSecurity, VerifiedMessage
from grouposcore.transport import Endpoint
from grouposcore.transport.blockwise import BlockwiseLimits, size_to_szx
from grouposcore.transport.sockets import is_multicast

log = logging.getLogger("grouposcore.cli")

METHODS = {
    "get": Code.GET,
    "put": Code.PUT,
    "post": Code.POST,
    "delete": Code.DELETE,
    "observe": Code.GET,
}

#: exit status: an error response (4.xx/5.xx) or no response to a group request
EXIT_ERROR_RESPONSE = 1
#: exit status: bad arguments or an unusable security file
EXIT_USAGE = 2
#: exit status: timeout, network or verification failure
EXIT_FAILURE = 3

#: How long a group request collects responses at most unless --timeout says otherwise:
#: a server waits up to DEFAULT_LEISURE before it answers (RFC 7252 §8.2), the answer may
#: need an Echo round trip on top
DEFAULT_GROUP_TIMEOUT = DEFAULT_LEISURE + ACK_TIMEOUT
#: How long an Observe registration may take unless --timeout says otherwise
DEFAULT_OBSERVE_TIMEOUT = 10.0


class NotAMember(Exception):
    """The member state's Group Manager ended or refused the membership."""


def add_arguments(parser: argparse.ArgumentParser, *, observe: bool = False) -> None:
    parser.add_argument("uri", metavar="URI", help="coap://host[:port]/path[?query]")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--payload", metavar="TEXT", help="request payload (UTF-8 text)")
    body.add_argument(
        "--payload-file",
        metavar="FILE",
        help="request payload from a file ('-' for standard input)",
    )
    parser.add_argument(
        "--content-format",
        metavar="N|NAME",
        type=content_format,
        help="Content-Format of the payload: a number or a name (text, "
        "link-format, octet-stream, json, cbor, senml+json, ...)",
    )
    parser.add_argument(
        "--token",
        metavar="HEX",
        type=_token,
        help="the request's token, 0-8 bytes in hex (default: a random one); unicast requests",
    )
    parser.add_argument(
        "--accept",
        metavar="N|NAME",
        type=content_format,
        help="Accept option: the Content-Format wanted in the response",
    )
    parser.add_argument(
        "--option",
        metavar="NUMBER=VALUE",
        action="append",
        default=[],
        type=coap_option,
        help="an extra CoAP option (repeatable): VALUE is a number, 0x-hex, "
        "or text, e.g. --option 2053=0x01 or --option 15=a=b",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the response payload to FILE, byte for byte (unicast)",
    )
    add_security_argument(
        parser,
        "the member's security file: an OSCORE or static group file, or "
        "a member state from 'grouposcore join' (which first catches up "
        "with its Group Manager); needed for a secured multicast request",
    )
    parser.add_argument(
        "--pairwise",
        metavar="SENDER_ID_HEX",
        help="Group OSCORE pairwise mode with this member (unicast only)",
    )
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        help="give up after S seconds (group requests: collect responses for "
        "S seconds; default: until every known member answered, at most "
        "the servers' leisure plus ACK_TIMEOUT, "
        f"{DEFAULT_GROUP_TIMEOUT:g} s)",
    )
    parser.add_argument("--non", action="store_true", help="send a NON request (unicast)")
    parser.add_argument(
        "--block-size",
        metavar="N",
        type=block_size,
        help="block-wise transfer in blocks of N bytes (16, 32, ..., 1024; default 1024)",
    )
    parser.add_argument(
        "--interface",
        metavar="IF",
        help="interface (name, index or IPv4 address) for multicast requests",
    )
    parser.add_argument(
        "--gm-timeout",
        metavar="S",
        type=float,
        default=10.0,
        help="with a member state: per-request timeout towards its Group "
        "Manager when catching up (default 10 s)",
    )
    if observe:
        parser.add_argument(
            "--count",
            metavar="N",
            type=int,
            help="stop after N notifications (default: until interrupted)",
        )
        parser.add_argument(
            "--duration",
            metavar="S",
            type=float,
            help="stop after S seconds, also when the server stays silent "
            "(default: until interrupted; --timeout bounds only the "
            "registration)",
        )


#: Content-Format names (RFC 7252 §12.3 and the IANA registry) as aiocoap-client and
#: coap-client accept them: the media type, or its short form
CONTENT_FORMATS = {
    "text/plain": 0,
    "text": 0,
    "text/plain;charset=utf-8": 0,
    "application/link-format": 40,
    "link-format": 40,
    "link": 40,
    "application/xml": 41,
    "xml": 41,
    "application/octet-stream": 42,
    "octet-stream": 42,
    "binary": 42,
    "application/exi": 47,
    "exi": 47,
    "application/json": 50,
    "json": 50,
    "application/json-patch+json": 51,
    "application/merge-patch+json": 52,
    "application/cbor": 60,
    "cbor": 60,
    "application/cwt": 61,
    "cwt": 61,
    "application/oscore": 10001,
    "application/senml+json": 110,
    "senml+json": 110,
    "application/senml+cbor": 112,
    "senml+cbor": 112,
}


def content_format(text: str) -> int:
    """``--content-format``: a number 0..65535 or a name from :data:`CONTENT_FORMATS`."""
    if text.strip().isdigit():
        number = int(text)
        if not 0 <= number <= 0xFFFF:
            raise argparse.ArgumentTypeError("a Content-Format number is 0..65535")
        return number
    found = CONTENT_FORMATS.get(text.strip().lower())
    if found is None:
        raise argparse.ArgumentTypeError(
            f"unknown Content-Format {text!r} (a number, or e.g. text, json, cbor)"
        )
    return found


def block_size(text: str) -> int:
    """``--block-size``: a power of two from 16 to 1024 (RFC 7959 §2.2)."""
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size not in [16 << szx for szx in range(7)]:
        raise argparse.ArgumentTypeError("a block size is 16, 32, 64, 128, 256, 512 or 1024")
    return size


def coap_option(text: str) -> tuple[int, bytes]:
    """``--option NUMBER=VALUE``: a number (minimal uint), ``0x`` hex, or UTF-8 text."""
    number, sep, value = text.partition("=")
    if not sep or not number.strip().isdigit() or not 0 < int(number) <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"not NUMBER=VALUE with NUMBER 1..65535: {text!r}")
    if value.isdigit():
        n = int(value)
        return int(number), n.to_bytes((n.bit_length() + 7) // 8, "big")
    if value.lower().startswith("0x"):
        try:
            return int(number), bytes.fromhex(value[2:])
        except ValueError:
            raise argparse.ArgumentTypeError(f"not hex: {value!r}") from None
    return int(number), value.encode("utf-8")


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
    if kind(path) != "ours":
        return  # a member state, aiocoap and libcoap contexts keep their numbers durably
    document = read_secret_file(path)
    if document.get("sender_id") is not None and not document.get("sequence_file"):
        raise UsageError(
            f"{path} has no 'sequence_file': sequence numbers would restart at 0 on every "
            'run and reuse nonces; add e.g. "sequence_file": "member.seq"'
        )


def _pairwise_peer(args: argparse.Namespace, context: object, multicast: bool) -> bytes | None:
    if not args.pairwise:
        return None
    if not isinstance(context, GroupContext):
        raise UsageError("--pairwise needs a group security file")
    if multicast:
        raise UsageError("--pairwise is for unicast requests; a group request goes in group mode")
    try:
        pairwise = bytes.fromhex(args.pairwise)
    except ValueError as exc:
        raise UsageError(f"--pairwise: not a hex Sender ID: {args.pairwise!r}") from exc
    if pairwise not in context.recipients:
        raise UsageError(f"--pairwise: {args.pairwise} is not a member of the group")
    return pairwise


async def _security(
    args: argparse.Namespace,
    multicast: bool,
    stack: contextlib.AsyncExitStack,
    printer: Printer,
) -> ClientSecurity | None:
    """The request's protection. A member state linked to its Group Manager is caught up
    first (the GM may have rekeyed since the state was written) and saved afterwards."""
    path = args.security
    if path is None:
        if args.pairwise:
            raise UsageError("--pairwise needs a group security file (--security)")
        return None
    if is_member_state(path) and follows_manager(path):
        try:
            opened = await open_member(path, follow=False, timeout=args.gm_timeout)
        except MembershipTerminated as exc:
            raise NotAMember(f"{path}: no longer a member of the group ({exc})") from None
        except GroupManagerRequestError as exc:
            raise NotAMember(f"{path}: the Group Manager refused this member ({exc})") from None
        except (RequestTimeout, OSError) as exc:
            # The GM is down: the stored material still works unless the group was rekeyed.
            printer.note(f"warning: {exc}; using the stored keying material, which may be stale")
        else:
            stack.push_async_callback(opened.member.close)
            if opened.note:
                printer.note(opened.note)
            member = opened.member
            pairwise = _pairwise_peer(args, member.context, multicast)
            return member.client_security(pairwise_with=pairwise)
    context = load_context(path, uri=args.uri)
    require_durable_sequence(path)
    pairwise = _pairwise_peer(args, context, multicast)
    if multicast and not isinstance(context, GroupContext):
        raise UsageError("a multicast request needs a group security file")
    return ClientSecurity(context, pairwise_with=pairwise)


def _write_output(path: str, payload: bytes) -> None:
    try:
        Path(path).write_bytes(payload)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc


def build_request(args: argparse.Namespace, uri: CoapUri) -> Message:
    msg = Message(METHODS[args.command], payload=_payload(args), options=uri_to_options(uri))
    if args.content_format is not None:
        msg.options.content_format = args.content_format
    if args.accept is not None:
        msg.options.accept = args.accept
    for number, value in args.option:
        try:
            msg.options.add(number, value)
        except (ValueError, GroupOscoreError) as exc:
            raise UsageError(f"--option {number}: {exc}") from exc
    return msg


def _bind_for(host: str) -> tuple[str, int]:
    return ("0.0.0.0", 0) if "." in host and ":" not in host else ("::", 0)


def _token(text: str) -> bytes:
    """argparse type of ``--token``: hex, at most 8 bytes (RFC 7252 §5.3.1)."""
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex: {text!r}") from None
    if len(value) > 8:
        raise argparse.ArgumentTypeError("a CoAP token is at most 8 bytes")
    return value


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
    if multicast and args.command == "observe":
        raise UsageError("observe is for unicast URIs")
    if multicast and args.output is not None:
        raise UsageError("--output is for unicast requests (a group request has many answers)")
    request = build_request(args, uri)
    async with contextlib.AsyncExitStack() as stack:
        security = await _security(args, multicast, stack, printer)
        printer.oscore = security is not None and isinstance(security.context, SecurityContext)
        limits = (
            BlockwiseLimits()
            if args.block_size is None
            else BlockwiseLimits(szx=size_to_szx(args.block_size))
        )
        endpoint = await stack.enter_async_context(
            await Endpoint.create(
                _bind_for(uri.host), multicast_interface=args.interface, blockwise=limits
            )
        )
        if multicast:
            return await _group(endpoint, request, uri, args, security, printer)
        if args.command == "observe":
            timer = asyncio.timeout(args.duration)
            try:
                async with timer:
                    return await _observe(endpoint, request, uri, args, security, printer)
            except TimeoutError:
                if not timer.expired():
                    raise
                return 0  # the time asked for is over; what came has been printed
        response = await endpoint.request(
            request,
            (uri.host, uri.port),
            timeout=args.timeout,
            confirmable=not args.non,
            security=security,
            token=args.token,
        )
        if args.output is not None:
            _write_output(args.output, response.payload)
            # the status line still goes to stderr, with who answered and how
            response = dataclasses.replace(response, payload=b"")
        printer.response(response)
        return _exit_for(response)


class _CountingSecurity:
    """Passes everything to the request's security and notes the responses that failed
    verification, so an empty group answer can say why it may be empty."""

    def __init__(self, inner: ClientSecurity) -> None:
        self._inner = inner
        self.failures: list[tuple[object, str]] = []
        #: requests repeated after an Echo challenge
        self.echo_retries = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def protect_request(self, request: Message) -> Any:
        if request.options.echo is not None:
            self.echo_retries += 1
        return self._inner.protect_request(request)

    def unprotect_response(self, response: Message, binding: Any) -> Any:
        try:
            return self._inner.unprotect_response(response, binding)
        except GroupOscoreError as exc:
            self.failures.append((response.remote, str(exc)))
            raise


def expected_responders(security: ClientSecurity | None) -> set[bytes]:
    """The Sender IDs that may answer a group request: the members this member knows
    (a GM member's peers that are Responders; every other member of a static group)."""
    if security is None:
        return set()
    member = getattr(security, "_member", None)
    if member is not None:
        return {
            sid
            for sid, peer in member.material.peers.items()
            if not peer.roles or peer.roles & (1 << Role.RESPONDER)
        }
    context = security.context
    return set(context.recipients) if isinstance(context, GroupContext) else set()


async def _group(
    endpoint: Endpoint,
    request: Message,
    uri: CoapUri,
    args: argparse.Namespace,
    security: ClientSecurity | None,
    printer: Printer,
) -> int:
    """Collect verified answers: for ``--timeout`` seconds if given, else until every
    known member answered or the servers' longest leisure plus ACK_TIMEOUT passed."""
    timeout = args.timeout if args.timeout is not None else DEFAULT_GROUP_TIMEOUT
    expected = set() if args.timeout is not None else expected_responders(security)
    counting = _CountingSecurity(security) if security is not None else None
    count = 0
    answered: set[bytes] = set()
    started = time.monotonic()
    responses = endpoint.group_request(
        request,
        (uri.host, uri.port),
        timeout=timeout,
        security=counting,
        interface=args.interface,
    )
    try:
        async for response in responses:
            count += 1
            printer.group_response(response)
            info = getattr(response, "security", None)
            if info is not None:
                answered.add(info.sender_id)
            if expected and expected <= answered:
                break
    finally:
        await responses.aclose()
    waited = time.monotonic() - started
    plural = "s" if count != 1 else ""
    if count:
        verified = " (verified)" if security is not None else ""
        printer.note(f"{count} response{plural}{verified} in {waited:.1f} s")
        retried = 0 if counting is None else counting.echo_retries
        if retried:
            printer.note(
                f"{retried} server{'s' if retried != 1 else ''} first answered with an Echo "
                "challenge (its first request from this member since it started, RFC 9175); "
                "the request was repeated to it by unicast, in pairwise mode"
            )
        return 0
    why = f"no response in {waited:.1f} s"
    if counting is not None and counting.failures:
        n = len(counting.failures)
        why += f"; {n} answer{'s' if n != 1 else ''} failed verification (reasons with -v)"
        for remote, reason in counting.failures:
            log.info("answer from %s failed verification: %s", format_address(remote), reason)
    elif security is None:
        why += "; secured resources do not answer unprotected group requests"
    printer.note(why)
    return EXIT_ERROR_RESPONSE


async def _observe(
    endpoint: Endpoint,
    request: Message,
    uri: CoapUri,
    args: argparse.Namespace,
    security: ClientSecurity | None,
    printer: Printer,
) -> int:
    # A registration answered by an error that cannot be verified (e.g. an unprotected
    # 4.01) is dropped by the endpoint, so the registration needs a deadline of its own.
    timeout = args.timeout if args.timeout is not None else DEFAULT_OBSERVE_TIMEOUT
    seen = 0
    status = 0
    while True:
        observation = endpoint.observe(
            request, (uri.host, uri.port), security=security, timeout=timeout
        )
        retry = None
        try:
            async for notification in observation:
                if seen == 0 and retry is None and security is not None:
                    # a server's first request from this member since it started gets an
                    # Echo challenge (RFC 9175): register again with the Echo value. Under
                    # our security every notification was verified (VerifiedMessage, kept
                    # through block-wise reassembly); anything else cannot be trusted to
                    # carry a challenge, so it is shown as it is and never retried.
                    if isinstance(notification, VerifiedMessage):
                        retry = security.echo_retry(notification, request)
                    if retry is not None:
                        break
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
        if retry is None:
            return status
        request, security = retry


def run(args: argparse.Namespace) -> int:
    """Entry point of the request commands; returns the exit status."""
    printer = Printer(json_output=args.json, quiet=args.quiet)
    try:
        return asyncio.run(_run(args, printer))
    except (UsageError, ConfigError) as exc:
        print(f"grouposcore {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotAMember as exc:
        print(f"grouposcore {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except RequestTimeout as exc:
        where = args.uri.split("//", 1)[-1].split("/", 1)[0]
        # the endpoint names addresses as tuples; an operator reads host:port
        text = re.sub(
            r"\('([^']*)', (\d+)\)", lambda m: format_address((m.group(1), m.group(2))), str(exc)
        )
        print(
            f"grouposcore {args.command}: timeout: no answer from {where}: {text}", file=sys.stderr
        )
        return EXIT_FAILURE
    except socket.gaierror as exc:
        host = args.uri.split("//", 1)[-1].split("/", 1)[0]
        print(
            f"grouposcore {args.command}: cannot resolve host {host!r}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except PeerUnreachable as exc:
        # the network said so at once (ICMP): a network error, not a timeout
        print(f"grouposcore {args.command}: unreachable: {exc}", file=sys.stderr)
        return EXIT_ERROR_RESPONSE
    except GroupOscoreError as exc:
        print(f"grouposcore {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        # a network error, not a timeout or a verification failure
        print(f"grouposcore {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR_RESPONSE
    except KeyboardInterrupt:
        return 130
