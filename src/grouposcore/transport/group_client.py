"""A client's group request: one NON to a multicast address, every response until a
deadline (RFC 7252 §8, RFC 10021 §5).

Kept apart from :mod:`grouposcore.transport.endpoint` because it is a consumer of the
endpoint's exchanges, like :class:`~grouposcore.transport.observation.Observation`: it
listens on one token for responses from anyone, verifies each one on its own (one that
fails is tallied and skipped, RFC 8613 §8.4), and completes a response by unicast to its
server when needed (Echo challenge, block-wise).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from grouposcore.coap import Code, Message, Type
from grouposcore.coap.constants import ALL_COAP_NODES_V4, ALL_COAP_NODES_V6_LINK, COAP_PORT
from grouposcore.errors import GroupOscoreError
from grouposcore.transport import client
from grouposcore.transport.blockwise import Block2Collector
from grouposcore.transport.rejections import VerificationFailures
from grouposcore.transport.security import Binding, ClientSecurity
from grouposcore.transport.sockets import is_multicast, normalise

if TYPE_CHECKING:
    from grouposcore.transport.endpoint import Endpoint

__all__ = ["group_request"]

log = logging.getLogger(__name__)


async def group_request(
    ep: Endpoint,
    message: Message,
    group: tuple[str, int] | None = None,
    *,
    timeout: float | None = None,
    security: ClientSecurity | None = None,
    interface: int | str | None = None,
    failures: VerificationFailures | None = None,
) -> AsyncGenerator[Message, None]:
    """Send ``message`` as NON to a group; yield every response until the deadline.

    ``group`` defaults to All-CoAP-Nodes of the socket's family on port 5683.
    ``timeout`` (default: the leisure plus ACK_TIMEOUT) bounds the collection. Each
    response carries its sender in ``remote``; responses that fail verification are
    skipped (and tallied in ``failures`` when given, so a caller that got nothing can
    say why). Block-wise responses are completed and 4.01+Echo answered by unicast to
    that server, within the same deadline.
    """
    if group is None:
        host = message.options.uri_host
        if host is not None and is_multicast(host.strip("[]")):
            group = (host.strip("[]"), message.options.uri_port or COAP_PORT)
        else:
            v6 = ep._sock.family == socket.AF_INET6 and not ep._sock.dual_stack
            group = (ALL_COAP_NODES_V6_LINK if v6 else ALL_COAP_NODES_V4, COAP_PORT)
    target = normalise((group[0], group[1]))
    if not is_multicast(target[0]):
        raise ValueError(f"{target[0]} is not a multicast address")
    msg = message.copy()
    msg.options.uri_host = None
    if timeout is None:
        timeout = ep.params.default_leisure + ep.params.ack_timeout
    deadline = ep._now() + timeout
    token = ep._ml.new_token()
    wire = msg.copy(token=token, mtype=Type.NON, remote=target)
    binding = None
    if security is not None:
        wire, binding = security.protect_request(wire)
        if wire.token != token or wire.mtype != Type.NON:
            wire = wire.copy(token=token, mtype=Type.NON)
    inbox = client.Inbox(ep._loop)
    #: the servers that answered this request (by Sender ID when verified, else address)
    answered: set[object] = set()
    ep._listen(token, None, inbox.put, lambda exc: None)
    if failures is None:
        failures = VerificationFailures()
    try:
        ep._sock.set_multicast_interface(
            target[0], interface if interface is not None else ep.multicast_interface
        )
        ep._send(wire, target)
        while True:
            left = deadline - ep._now()
            if left <= 0:
                return
            try:
                raw: Message = await inbox.get(left)
            except TimeoutError:
                return
            resp = _verify_group_response(raw, binding, security, failures)
            if resp is None:
                continue
            server = _server_of(resp)
            challenge = _is_echo_challenge(resp)
            if challenge and server in answered:
                # A server that already answered (or challenged) this request challenges
                # it again: it lost its state and met a replay of the request, or this is
                # a copy of its first challenge. Retrying would have it execute the request
                # a second time.
                log.info("not answering a second Echo challenge from %s", resp.remote)
                continue
            answered.add(server)
            if challenge or Block2Collector.continues(resp):
                try:
                    resp = await _complete_group_response(ep, msg, resp, deadline, security)
                except (GroupOscoreError, OSError) as e:
                    log.info("incomplete group response from %s: %s", resp.remote, e)
                    continue
            yield resp
    finally:
        ep._unlisten(token)


def _verify_group_response(
    raw: Message,
    binding: Binding | None,
    security: ClientSecurity | None,
    failures: VerificationFailures,
) -> Message | None:
    """The verified response, or None (tallied in ``failures``) if it does not verify."""
    if security is None:
        return raw
    try:
        plain = security.unprotect_response(raw, binding)
    except GroupOscoreError as e:
        failures.add(raw, e)
        return None
    plain.remote = raw.remote
    return plain


def _is_echo_challenge(resp: Message) -> bool:
    return resp.code == Code.UNAUTHORIZED and resp.options.echo is not None


def _server_of(resp: Message) -> object:
    info = getattr(resp, "security", None)
    sender = getattr(info, "sender_id", None)
    return ("kid", sender) if sender is not None else ("address", resp.remote)


async def _complete_group_response(
    ep: Endpoint,
    request: Message,
    resp: Message,
    deadline: float,
    security: ClientSecurity | None,
) -> Message:
    """Answer an Echo challenge or fetch the remaining blocks, by unicast to that server."""
    remote = resp.remote
    if _is_echo_challenge(resp):
        retry = request.copy()
        retry.options.echo = resp.options.echo
        out = await client.request(ep, retry, remote, deadline, True, security, echo=False)
        out.remote = remote
        return out
    if Block2Collector.continues(resp):
        out = await client.follow_block2(ep, request, resp, remote, deadline, security)
        out.remote = remote
        return out
    return resp
