"""``grouposcore serve``: a small CoAP server with demo resources, secured by security
files, optionally a member of multicast groups.

Resources: ``/light`` (GET/PUT/POST, observable; state ``on``, ``off`` or ``dim N`` with
N in 0..100), ``/time`` (GET, observable, notifies every second) and the built-in
``/.well-known/core``. With security files, ``/light`` and ``/time`` accept only requests
protected with one of the loaded contexts; discovery stays open.

A member state from ``grouposcore join`` keeps following its Group Manager while the
server runs: rekeyings, stale Sender IDs, new members' credentials and the eviction notice
(the server then stops). Several members on one host each take their own ``--port`` for
unicast and share ``--multicast-port`` (default 5683) for the group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from grouposcore.cli.lifecycle import run_command, stop_on_signals
from grouposcore.cli.membership import Opened, follows_manager, open_member
from grouposcore.cli.security_files import is_member_state, load_context
from grouposcore.coap import Code, Message
from grouposcore.coap.constants import ALL_COAP_NODES_V4, COAP_PORT, DEFAULT_LEISURE, TEXT_PLAIN
from grouposcore.errors import ConfigError, UsageError
from grouposcore.oscore import GroupContext
from grouposcore.oscore.group import FRESHNESS_POLICIES, INSECURE_ACCEPT_REPLAYS
from grouposcore.oscore.security import AnyContext, ServerSecurity
from grouposcore.transport import Endpoint, Protection, RejectionStats, Resource, Site
from grouposcore.transport.sockets import Datagram, UdpSocket, format_address

log = logging.getLogger("grouposcore.cli")


@dataclass(frozen=True)
class LightState:
    """``on``, ``off`` or ``dim N`` (0 <= N <= 100)."""

    mode: str = "off"
    level: int = 0

    def __str__(self) -> str:
        return f"dim {self.level}" if self.mode == "dim" else self.mode

    @classmethod
    def parse(cls, text: str) -> LightState:
        words = text.strip().lower().split()
        if words in (["on"], ["off"]):
            return cls(words[0])
        if len(words) == 2 and words[0] == "dim" and words[1].isdigit():
            level = int(words[1])
            if 0 <= level <= 100:
                return cls("dim", level)
        raise ValueError(f"not a light state: {text!r} (on, off or dim 0..100)")

    def toggled(self) -> LightState:
        return LightState("off") if self.mode != "off" else LightState("on")


def _text(code: int, text: str) -> Message:
    msg = Message(code, payload=text.encode("utf-8"))
    msg.options.content_format = TEXT_PLAIN
    return msg


def _who(request: Message) -> str:
    sec = getattr(request, "security", None)
    sid = getattr(sec, "sender_id", None)
    return f"{request.remote} (Sender ID {sid.hex()})" if sid is not None else str(request.remote)


def _unacceptable(request: Message) -> Message | None:
    """4.06 when the request's Accept names a format other than the text these resources
    give (RFC 7252 §5.10.4)."""
    accept = request.options.accept
    if accept is not None and accept != TEXT_PLAIN:
        return _text(Code.NOT_ACCEPTABLE, "text/plain (Content-Format 0) only")
    return None


class Light(Resource):
    """A lamp: GET reads the state, PUT sets it, POST sets it or (empty / ``toggle``)
    toggles it; every change notifies the observers."""

    rt = "core.light"
    ct = TEXT_PLAIN
    title = "Demo light"
    observable = True

    def __init__(self, **attrs: object) -> None:
        super().__init__(**attrs)
        self.state = LightState()

    def render_get(self, request: Message) -> Message:
        return _unacceptable(request) or _text(Code.CONTENT, str(self.state))

    def _update(self, request: Message, *, toggle_ok: bool) -> Message:
        refused = _unacceptable(request)
        if refused is not None:
            return refused
        cf = request.options.content_format
        if cf not in (None, TEXT_PLAIN):
            return _text(Code.UNSUPPORTED_CONTENT_FORMAT, "text/plain only")
        try:
            text = request.payload.decode("utf-8")
        except UnicodeDecodeError:
            return _text(Code.BAD_REQUEST, "payload is not UTF-8")
        if toggle_ok and text.strip().lower() in ("", "toggle"):
            new = self.state.toggled()
        else:
            try:
                new = LightState.parse(text)
            except ValueError as exc:
                return _text(Code.BAD_REQUEST, str(exc))
        changed = new != self.state
        self.state = new
        log.info("light is %s (set by %s)", new, _who(request))
        if changed:
            self.notify()
        return _text(Code.CHANGED, str(new))

    def render_put(self, request: Message) -> Message:
        return self._update(request, toggle_ok=False)

    def render_post(self, request: Message) -> Message:
        return self._update(request, toggle_ok=True)


class Clock(Resource):
    """The server's UTC time; observers get a notification every second."""

    rt = "time"
    ct = TEXT_PLAIN
    title = "UTC time"
    observable = True

    def render_get(self, request: Message) -> Message:
        return _unacceptable(request) or _text(
            Code.CONTENT, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        )


def demo_site(contexts: list[AnyContext]) -> tuple[Site, Light, Clock]:
    """The demo resources, protected by ``contexts`` when there are any."""
    protection = None
    if contexts:
        protection = Protection(
            oscore=any(not isinstance(c, GroupContext) for c in contexts),
            group=any(isinstance(c, GroupContext) for c in contexts),
        )
    site = Site()
    light = Light(protection=protection)
    clock = Clock(protection=protection)
    site.add("light", light)
    site.add("time", clock)
    return site, light, clock


def load_server_context(path: str, freshness: str | None = None) -> AnyContext:
    """A security file's context for a server that just started.

    Replay windows start out invalid (the server cannot know what it accepted before): the
    group's freshness policy decides about each sender's first request, by default an Echo
    challenge (RFC 10021 §9). ``freshness`` overrides the file. A file that lets the server
    send (a Sender ID) but keeps no ``sequence_file`` is refused: after a restart its
    Partial IVs (notifications, Echo challenges) would reuse nonces.
    """
    overrides: dict[str, Any] = {"replay_windows_valid": False}
    if freshness is not None:
        overrides["freshness"] = freshness
    return load_context(path, role="server", **overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind", metavar="ADDR", default="::", help="local address (default :: for IPv6 and IPv4)"
    )
    parser.add_argument(
        "--port",
        metavar="N",
        type=int,
        default=COAP_PORT,
        help=f"this member's own UDP port for unicast (default {COAP_PORT}; "
        "0 picks a free one); several members on one host need one each",
    )
    parser.add_argument(
        "--security",
        metavar="FILE",
        action="append",
        default=[],
        help="OSCORE or static group security file (repeatable), or one member "
        "state from 'grouposcore join' (followed with its Group Manager)",
    )
    parser.add_argument(
        "--multicast",
        metavar="ADDR",
        action="append",
        default=[],
        help=f"join a multicast group, e.g. {ALL_COAP_NODES_V4} (repeatable)",
    )
    # the old name of --multicast
    parser.add_argument("--join", dest="multicast", action="append", help=argparse.SUPPRESS)
    parser.add_argument(
        "--multicast-port",
        metavar="N",
        type=int,
        default=COAP_PORT,
        help=f"the group's port, shared by every member on the host (default {COAP_PORT})",
    )
    parser.add_argument(
        "--interface",
        metavar="IF",
        help="interface for the multicast groups (name, index or IPv4 address)",
    )
    parser.add_argument(
        "--freshness",
        choices=FRESHNESS_POLICIES,
        help="requests of a group member whose replay window is not valid "
        "(every member after a start): echo = Echo challenge (default "
        f"from the file, normally echo), drop = drop them; "
        f"{INSECURE_ACCEPT_REPLAYS} = accept the first one (INSECURE: "
        "requests recorded before the start are delivered again; only "
        "for clients that cannot answer an Echo)",
    )
    parser.add_argument(
        "--gm-timeout",
        metavar="S",
        type=float,
        default=10.0,
        help="with a member state: per-request timeout towards its Group Manager (default 10 s)",
    )
    parser.add_argument(
        "--leisure",
        metavar="S",
        type=float,
        help="longest random wait before answering a multicast request "
        f"(default {DEFAULT_LEISURE:g} s)",
    )


class GroupPortSocket(UdpSocket):
    """The group port that several members on one host share: it takes only multicast
    datagrams (unicast to a shared port reaches an arbitrary member) and answers through
    the member's own unicast socket, so follow-ups such as an Echo retry or a pairwise
    request come back to this member."""

    def __init__(self, bind: tuple[str, int], via: UdpSocket) -> None:
        super().__init__(bind, reuse_address=True)
        self.via = via

    def receive(self) -> Datagram | None:
        while True:
            dgram = super().receive()
            if dgram is None or dgram.multicast:
                return dgram
            log.debug("ignoring unicast to the shared group port from %s", dgram.remote)

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        self.via.send(data, remote)


def _bind(bind: tuple[str, int], **kwargs: bool) -> UdpSocket:
    try:
        return UdpSocket(bind, **kwargs)
    except OSError as exc:
        where = format_address(bind)
        if exc.errno == errno.EADDRINUSE:
            raise OSError(
                exc.errno,
                f"{where} is in use (another member on this host? give each its own --port)",
            ) from None
        raise OSError(exc.errno, f"cannot bind {where}: {exc.strerror}") from None


async def _open_security(args: argparse.Namespace) -> tuple[list[AnyContext], Opened | None]:
    """The static contexts, or the one member that follows its Group Manager."""
    linked = [p for p in args.security if is_member_state(p) and follows_manager(p)]
    if linked and len(args.security) > 1:
        raise ConfigError(
            f"{linked[0]} follows its Group Manager: serve it alone (one serve per membership)"
        )
    if linked:
        if args.freshness is not None:
            log.warning(
                "--freshness applies to static files; a member's first requests "
                "after a restart get an Echo challenge"
            )
        opened = await open_member(linked[0], follow=True, timeout=args.gm_timeout)
        return [opened.member.context], opened
    contexts = []
    for path in args.security:
        contexts.append(load_server_context(path, args.freshness))
    return contexts, None


async def serve(args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        contexts, opened = await _open_security(args)
        member = None if opened is None else opened.member
        security: ServerSecurity | None = None
        if member is not None:
            stack.push_async_callback(member.close)
            if opened is not None and opened.note:
                print(f"grouposcore serve: {opened.note}", file=sys.stderr, flush=True)
            security = member.server_security()
        elif contexts:
            security = ServerSecurity(contexts)
        site, _light, clock = demo_site(contexts)
        endpoints: list[Endpoint] = []
        groups = args.multicast
        shared = bool(groups) and args.port != args.multicast_port
        sock = _bind((args.bind, args.port))
        endpoint = Endpoint(
            sock,
            site=site,
            server_security=security,
            multicast_interface=args.interface,
            leisure=args.leisure,
        )
        await stack.enter_async_context(endpoint)
        endpoints.append(endpoint)
        if shared:
            for group in groups:
                any_host = "::" if ":" in group else "0.0.0.0"
                group_sock = GroupPortSocket((any_host, args.multicast_port), sock)
                group_ep = Endpoint(
                    group_sock,
                    site=site,
                    server_security=security,
                    multicast_interface=args.interface,
                    leisure=args.leisure,
                )
                await stack.enter_async_context(group_ep)
                endpoints.append(group_ep)
                group_ep.join_group(group, args.interface)
        else:
            for group in groups:
                endpoint.join_group(group, args.interface)
        host, port = endpoint.address
        shown = format_address((host, port))
        for ctx in contexts:
            log.info("security context: %r", ctx)
        extra = f", group port {args.multicast_port}" if shared else ""
        print(f"listening on {shown}{extra}", flush=True)
        if member is not None:
            m = member.material
            print(
                f"member {member.client.node} of {member.group}: Sender ID "
                f"{'-' if m.sender_id is None else m.sender_id.hex()}, num {m.num}; "
                "following the Group Manager",
                file=sys.stderr,
                flush=True,
            )
        stop = stop_on_signals()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            clock.notify()
            if member is not None and member.terminated:
                print(
                    f"grouposcore serve: {member.client.node} is no longer a member of "
                    f"{member.group} (evicted by the Group Manager); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                _log_rejections(endpoints)
                return 1
        _log_rejections(endpoints)
    return 0


def _log_rejections(endpoints: list[Endpoint]) -> None:
    """The totals per reason at exit (each rejection was logged as it happened, with -v)."""
    totals = RejectionStats()
    for ep in endpoints:
        totals.counts.update(ep.rejections.counts)
    if totals.total:
        log.info("rejected requests: %s", totals.summary())


def run(args: argparse.Namespace) -> int:
    return run_command("serve", serve(args), usage=(ConfigError, UsageError), timeout_status=3)
