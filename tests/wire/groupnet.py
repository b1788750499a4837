"""Shared pieces of the wire tests: a provisioned static group, demo servers, raw sockets.

Everything here runs on loopback (or inside a network namespace the test created), and
every security context comes from a static group file written by ``provision_static_group``.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

from grouposcore.coap import Code, Message
from grouposcore.oscore import GroupContext
from grouposcore.oscore.config import (
    group_context_from_document,
    provision_static_group,
    read_secret_file,
    write_secret_file,
)
from grouposcore.oscore.security import ServerSecurity
from grouposcore.transport import Endpoint, Protection, Resource, Site

SERVERS = ("s1", "s2", "s3")
MEMBERS = ("client", *SERVERS)


def provision(
    directory: Path,
    names: tuple[str, ...] = MEMBERS,
    *,
    late: tuple[str, ...] = (),
    **kwargs: Any,
) -> dict[str, Path]:
    """One 0600 group file per member; the members in ``late`` start with invalid replay
    windows (a late joiner or a restarted server)."""
    docs = provision_static_group(list(names), **kwargs)
    paths = {}
    for name, doc in docs.items():
        if name in late:
            doc["replay_windows_valid"] = False
        paths[name] = write_secret_file(directory / f"{name}.json", doc)
    return paths


def load_group(path: Path) -> GroupContext:
    """A member's context from its file; members not marked late were provisioned for this
    test and never ran, so valid windows at 0 are their true replay state."""
    document = read_secret_file(path)
    fresh = document.get("replay_windows_valid", True)
    return group_context_from_document(
        document, base=path.parent, replay_windows_valid=fresh, replay_state_persisted=fresh
    )


class Named(Resource):
    """A secured resource answering with its server's name; counts handler runs."""

    protection = Protection(oscore=True, group=True)

    def __init__(self, name: str, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.name = name
        self.runs = 0
        self.requests: list[Message] = []

    async def render_get(self, request: Message) -> Message:
        self.runs += 1
        self.requests.append(request)
        return Message(Code.CONTENT, payload=self.name.encode())

    async def render_post(self, request: Message) -> Message:
        self.runs += 1
        self.requests.append(request)
        return Message(Code.CHANGED, payload=self.name.encode() + b":" + request.payload)


class Plain(Resource):
    """An unsecured resource, to show that plain CoAP still works next to secured ones."""

    async def render_get(self, request: Message) -> Message:
        return Message(Code.CONTENT, payload=b"plain")


class PairwiseAnswers(ServerSecurity):
    """A server that answers every request in pairwise mode, also group-mode requests
    (RFC 10021 §7.3 lets a server pick the mode of its response)."""

    def protect_response(self, response: Message, binding: Any) -> Message:
        ctx = binding.context
        if isinstance(ctx, GroupContext) and ctx.pairwise_mode:
            return ctx.protect_response(response, binding, pairwise=True)
        return super().protect_response(response, binding)


class Recording(ServerSecurity):
    """Notes every request that failed verification, by exception class name."""

    def __init__(self, contexts: Any = ()) -> None:
        super().__init__(contexts)
        self.failures: list[str] = []

    def unprotect_request(self, request: Message) -> Any:
        try:
            return super().unprotect_request(request)
        except Exception as exc:
            self.failures.append(type(exc).__name__)
            raise


@dataclasses.dataclass
class Server:
    name: str
    ctx: GroupContext
    endpoint: Endpoint
    light: Named
    security: ServerSecurity

    @property
    def sender_id(self) -> bytes:
        assert self.ctx.sender_id is not None
        return self.ctx.sender_id


async def start_server(
    name: str,
    path: Path,
    *,
    bind: tuple[str, int] = ("127.0.0.1", 0),
    pairwise_answers: bool = False,
    **endpoint_kwargs: Any,
) -> Server:
    ctx = load_group(path)
    security: ServerSecurity = (PairwiseAnswers if pairwise_answers else Recording)([ctx])
    site = Site()
    light = site.add("light", Named(name))
    assert isinstance(light, Named)
    site.add("plain", Plain())
    ep = await Endpoint.create(bind, site=site, server_security=security, **endpoint_kwargs)
    return Server(name, ctx, ep, light, security)


def get(path: str, payload: bytes = b"", code: int = Code.GET) -> Message:
    msg = Message(code, payload=payload)
    msg.options.uri_path = [s for s in path.strip("/").split("/") if s]
    return msg


def exchange_raw(sock: socket.socket, data: bytes, remote: tuple[str, int]) -> Message:
    """Send one datagram and return the first non-empty message that comes back."""
    sock.sendto(data, remote)
    while True:
        reply = Message.decode(sock.recv(65536))
        if reply.code != Code.EMPTY:
            return reply


def udp_socket(timeout: float = 3.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(timeout)
    return sock
