"""``grouposcore serve``: a small CoAP server with demo resources, secured by security
files, optionally a member of multicast groups.

Resources: ``/light`` (GET/PUT/POST, observable; state ``on``, ``off`` or ``dim N`` with
N in 0..100), ``/time`` (GET, observable, notifies every second) and the built-in
``/.well-known/core``. With security files, ``/light`` and ``/time`` accept only requests
protected with one of the loaded contexts; discovery stays open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass

from grouposcore.cli.lifecycle import stop_on_signals
from grouposcore.cli.security_files import load_context
from grouposcore.coap import Code, Message
from grouposcore.coap.constants import ALL_COAP_NODES_V4, COAP_PORT, TEXT_PLAIN
from grouposcore.errors import GroupOscoreError
from grouposcore.oscore import GroupContext
from grouposcore.oscore.config import (
    ConfigError,
)
from grouposcore.oscore.group import FRESHNESS_POLICIES, INSECURE_ACCEPT_REPLAYS
from grouposcore.oscore.security import AnyContext, ServerSecurity
from grouposcore.transport import Endpoint, Protection, Resource, Site

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
        return _text(Code.CONTENT, str(self.state))

    def _update(self, request: Message, *, toggle_ok: bool) -> Message:
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
        return _text(Code.CONTENT, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


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
    overrides: dict[str, object] = {"replay_windows_valid": False}
    if freshness is not None:
        overrides["freshness"] = freshness
    return load_context(path, role="server", **overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bind", metavar="ADDR", default="::",
                        help="local address (default :: for IPv6 and IPv4)")
    parser.add_argument("--port", metavar="N", type=int, default=COAP_PORT,
                        help=f"UDP port (default {COAP_PORT}; 0 picks a free one)")
    parser.add_argument("--security", metavar="FILE", action="append", default=[],
                        help="OSCORE or group security file (repeatable)")
    parser.add_argument("--join", metavar="GROUP_ADDR", action="append", default=[],
                        help=f"join a multicast group, e.g. {ALL_COAP_NODES_V4} (repeatable)")
    parser.add_argument("--interface", metavar="IF",
                        help="interface for the multicast groups (name, index or IPv4 address)")
    parser.add_argument("--freshness", choices=FRESHNESS_POLICIES,
                        help="requests of a group member whose replay window is not valid "
                             "(every member after a start): echo = Echo challenge (default "
                             f"from the file, normally echo), drop = drop them; "
                             f"{INSECURE_ACCEPT_REPLAYS} = accept the first one (INSECURE: "
                             "requests recorded before the start are delivered again; only "
                             "for clients that cannot answer an Echo)")
    parser.add_argument("--leisure", metavar="S", type=float,
                        help="longest random wait before answering a multicast request")


async def serve(args: argparse.Namespace) -> int:
    contexts = []
    for path in args.security:
        contexts.append(load_server_context(path, args.freshness))
    site, _light, clock = demo_site(contexts)
    security = ServerSecurity(contexts) if contexts else None
    endpoint = await Endpoint.create(
        (args.bind, args.port), site=site, server_security=security,
        multicast_interface=args.interface, leisure=args.leisure,
        reuse_address=bool(args.join),
    )
    async with endpoint:
        for group in args.join:
            endpoint.join_group(group, args.interface)
        host, port = endpoint.address
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for ctx in contexts:
            log.info("security context: %r", ctx)
        print(f"listening on {shown}", flush=True)
        stop = stop_on_signals()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            clock.notify()
        if endpoint.rejections.total:  # each one was logged as it happened (-v)
            log.info("rejected requests: %s", endpoint.rejections.summary())
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except ConfigError as exc:
        print(f"grouposcore serve: {exc}", file=sys.stderr)
        return 2
    except (GroupOscoreError, OSError) as exc:
        print(f"grouposcore serve: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
