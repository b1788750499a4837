"""A client's unicast request: one exchange at a time, block-wise transfers, one Echo retry
(and the CoAP ping, and where a request addressed by its Uri-Host goes).

The decisions are free of I/O: :class:`RequestPlan` says what to send after each response
(the next Block1 block, the next Block2 request, the request again with the Echo value of a
4.01 (RFC 9175 §2.3), or nothing: done), :func:`response_deadline` how long one exchange
may wait, and :class:`BodyTags` when concurrent request bodies need a Request-Tag (RFC 9175
§3.4). The coroutines below carry them out over an endpoint's plumbing (token routing,
message layer, clock), like :mod:`~grouposcore.transport.group_client` and
:class:`~grouposcore.transport.observation.Observation` do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections import Counter, deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from grouposcore.coap import Code, Message, OptionNumber, Type
from grouposcore.coap.constants import COAP_PORT
from grouposcore.errors import (
    BlockwiseError,
    GroupOscoreError,
    RequestTimeout,
    ResponseEndsExchange,
)
from grouposcore.transport.blockwise import Block1Sender, Block2Collector, BlockwiseLimits
from grouposcore.transport.messagelayer import Address
from grouposcore.transport.params import TransmissionParams
from grouposcore.transport.rejections import VerificationFailures
from grouposcore.transport.security import ClientSecurity
from grouposcore.transport.sockets import normalise

if TYPE_CHECKING:
    from grouposcore.transport.endpoint import Endpoint

__all__ = [
    "BodyTags",
    "Inbox",
    "RequestPlan",
    "destination",
    "echo_retry",
    "exchange",
    "follow_block2",
    "ping",
    "request",
    "response_deadline",
]


# --- decisions -------------------------------------------------------------------------


def echo_retry(request: Message, response: Message) -> Message | None:
    """The request again with the Echo value of a 4.01 challenge (RFC 9175 §2.3), or
    ``None`` if ``response`` is no such challenge or already answers that Echo value."""
    if response.code != Code.UNAUTHORIZED:
        return None
    echo = response.options.echo
    if echo is None or request.options.echo == echo:
        return None
    retry = request.copy()
    retry.options.echo = echo
    return retry


def destination(message: Message) -> tuple[str, int, Message]:
    """``(host, port, request to send)`` for a request addressed by its Uri-Host and
    Uri-Port options (RFC 7252 §6.4): an IP literal host and the default port are implied
    by the destination, so they are left out of the request sent."""
    host = message.options.uri_host
    if host is None:
        raise ValueError("no remote given and the request has no Uri-Host option")
    port = message.options.uri_port or COAP_PORT
    msg = message.copy()
    stripped = host.strip("[]")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(stripped.split("%", 1)[0])
        msg.options.uri_host = None
    if msg.options.uri_port == COAP_PORT:
        msg.options.uri_port = None
    return stripped, port, msg


async def resolve(ep: Endpoint, host: str, port: int) -> Address:
    """The address to send to: an IP literal as it is, a name through the loop's resolver
    (in the family the endpoint's socket speaks)."""
    host = host.strip("[]")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.split("%", 1)[0])
        return normalise((host, port))
    sock = ep._sock
    want = 0 if sock.family == socket.AF_INET6 and sock.dual_stack else sock.family
    infos = await ep._loop.getaddrinfo(host, port, family=want, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    return normalise(infos[0][4])


async def target(
    ep: Endpoint, message: Message, remote: tuple[str, int] | None
) -> tuple[Address, Message]:
    """Where ``message`` goes and what is sent: to ``remote`` if given, else to its
    Uri-Host and Uri-Port (see :func:`destination`)."""
    if remote is not None:
        return await resolve(ep, str(remote[0]), int(remote[1])), message
    host, port, msg = destination(message)
    return await resolve(ep, host, port), msg


def response_deadline(
    params: TransmissionParams,
    *,
    confirmable: bool,
    acked: bool,
    deadline: float | None,
    start: float,
) -> float | None:
    """Until when one exchange waits for its response (``None``: until the message layer
    reports that retransmissions ran out).

    The caller's ``deadline`` wins; without it a NON request waits MAX_TRANSMIT_WAIT and a
    CON request EXCHANGE_LIFETIME after its empty ACK (RFC 7252 §4.8.2). ``start`` is when
    the request went out: discarded responses do not extend the wait.
    """
    if deadline is not None:
        return deadline
    if not confirmable:
        return start + params.max_transmit_wait
    if acked:
        return start + params.exchange_lifetime
    return None


class RequestPlan:
    """What to send for one request, response by response: its Block1 blocks (RFC 7959
    §2.5), the Block2 follow-ups of the response (§2.4) and, if ``echo`` and the final
    response is a 4.01 with a new Echo value, the whole request once more with it."""

    def __init__(
        self,
        request: Message,
        limits: BlockwiseLimits,
        request_tag: bytes | None = None,
        *,
        echo: bool = True,
    ) -> None:
        self._limits = limits
        self._tag = request_tag
        self._echo = echo
        self._result: Message | None = None
        self._start(request)

    def _start(self, request: Message) -> None:
        self._request = request
        szx = self._limits.szx
        self._sender = (
            Block1Sender(request, szx, self._tag) if Block1Sender.needed(request, szx) else None
        )
        self._collector: Block2Collector | None = None

    def first(self) -> Message:
        """The first message to send."""
        return self._request if self._sender is None else self._sender.first()

    def next(self, response: Message) -> Message | None:
        """The message to send after ``response``; ``None`` when :meth:`result` is ready."""
        if self._collector is not None:
            nxt = self._collector.feed(response)
            if nxt is not None:
                return nxt
            response = self._collector.result()
        else:
            if self._sender is not None:
                nxt = self._sender.next(response)
                if nxt is not None:
                    return nxt
            if Block2Collector.continues(response):
                self._collector = Block2Collector(self._request, self._limits.max_body)
                return self._collector.feed(response)
        retry = echo_retry(self._request, response) if self._echo else None
        if retry is not None:
            self._echo = False
            self._start(retry)
            return self.first()
        self._result = response
        return None

    def result(self) -> Message:
        """The final (reassembled) response."""
        if self._result is None:
            raise BlockwiseError("result() before the final response")
        return self._result


class BodyTags:
    """Request-Tags for request bodies (RFC 9175 §3.4): a body sent to a resource while
    another body is on its way there gets a random tag, so the server keeps them apart."""

    def __init__(self) -> None:
        self._active: Counter[Hashable] = Counter()

    def acquire(self, remote: Address, request: Message) -> tuple[Hashable, bytes | None]:
        """Mark a body to ``request``'s resource as on its way; ``(key, tag)``."""
        key = (remote, tuple(request.options.get_all(OptionNumber.URI_PATH)))
        tag = os.urandom(4) if self._active[key] else None
        self._active[key] += 1
        return key, tag

    def release(self, key: Hashable) -> None:
        self._active[key] -= 1
        if not self._active[key]:
            del self._active[key]


# --- carrying them out -------------------------------------------------------------------


class Inbox:
    """Messages for one token, handed over by the endpoint's callbacks, awaited with a
    time limit.

    Waiting creates no task (``asyncio.wait_for(queue.get(), t)`` creates one per wait on
    Python 3.11) and items that arrived together are taken without suspending: a group
    request waits once per response, so this is on the client's hot path.
    """

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, timeout: float) -> Any:
        """The next item; ``TimeoutError`` if none came within ``timeout`` seconds."""
        if not self._items:
            waiter = self._loop.create_future()
            self._waiter = waiter
            timer = self._loop.call_later(timeout, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                timer.cancel()
        return self._items.popleft()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Pending:
    """What one unicast exchange has received so far, and whether its request was
    acknowledged (an empty ACK came)."""

    __slots__ = ("acked", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.acked = False

    def ack(self) -> None:
        self.acked = True


async def exchange(
    ep: Endpoint,
    message: Message,
    remote: Address,
    *,
    confirmable: bool,
    deadline: float | None,
    security: ClientSecurity | None,
    token: bytes | None = None,
) -> Message:
    """Send one request (one block) and return its (verified) response.

    A response that fails verification is discarded and the wait goes on (RFC 8613
    §8.4): a forged or replayed datagram cannot end the exchange. If nothing valid
    comes, the timeout says how many responses were discarded and why.
    """
    if token is None:
        token = ep._ml.new_token()
    mtype = Type.CON if confirmable else Type.NON
    wire = message.copy(token=token, mtype=mtype, remote=remote)
    binding = None
    if security is not None:
        wire, binding = security.protect_request(wire)
        if wire.token != token or wire.mtype != mtype:
            wire = wire.copy(token=token, mtype=mtype)
    pending = _Pending()
    put = pending.queue.put_nowait
    failures: VerificationFailures | None = None
    ep._listen(token, remote, put, put, pending.ack)
    mid = -1
    start = ep._now()
    try:
        mid = ep._send(wire, remote)
        while True:
            item = await _next_response(ep, pending, confirmable, deadline, start)
            if security is None:
                return item
            try:
                plain = security.unprotect_response(item, binding)
            except ResponseEndsExchange:
                raise
            except GroupOscoreError as e:
                if failures is None:
                    failures = VerificationFailures()
                failures.add(item, e)
                continue
            plain.remote = item.remote
            return plain
    except RequestTimeout as e:
        if failures:
            raise RequestTimeout(failures.explain(str(e))) from e
        raise
    finally:
        ep._unlisten(token)
        ep._ml.cancel(remote, mid)


async def _next_response(
    ep: Endpoint, pending: _Pending, confirmable: bool, deadline: float | None, start: float
) -> Message:
    """The next response for an exchange; raises what the endpoint reported instead, or
    :class:`RequestTimeout` at :func:`response_deadline`."""
    params = ep.params
    while True:
        limit = response_deadline(
            params, confirmable=confirmable, acked=pending.acked, deadline=deadline, start=start
        )
        # Without a limit, look again every ACK_TIMEOUT: an empty ACK sets one.
        wait = params.ack_timeout if limit is None else max(0.0, limit - ep._now())
        try:
            item = await asyncio.wait_for(pending.queue.get(), wait)
        except TimeoutError:
            if limit is not None and ep._now() >= limit:
                raise RequestTimeout("no response before the deadline") from None
            continue
        if isinstance(item, BaseException):
            raise item
        response: Message = item
        return response


async def request(
    ep: Endpoint,
    message: Message,
    remote: Address,
    deadline: float | None,
    confirmable: bool,
    security: ClientSecurity | None,
    token: bytes | None = None,
    *,
    echo: bool = True,
) -> Message:
    """Carry out a :class:`RequestPlan`: every exchange it asks for, until its result.

    ``token`` is the first exchange's token (later blocks and retries get their own).
    """
    tag_key: Hashable | None = None
    tag = None
    if Block1Sender.needed(message, ep.blockwise.szx):
        tag_key, tag = ep._body_tags.acquire(remote, message)
    try:
        plan = RequestPlan(message, ep.blockwise, tag, echo=echo)
        nxt: Message | None = plan.first()
        while nxt is not None:
            response = await exchange(
                ep, nxt, remote, confirmable=confirmable, deadline=deadline,
                security=security, token=token,
            )  # fmt: skip
            token = None
            nxt = plan.next(response)
    finally:
        if tag_key is not None:
            ep._body_tags.release(tag_key)
    return plan.result()


async def follow_block2(
    ep: Endpoint,
    request: Message,
    first: Message,
    remote: Address,
    deadline: float | None,
    security: ClientSecurity | None,
) -> Message:
    """The whole response whose first block is ``first`` (CON exchanges to ``remote``)."""
    col = Block2Collector(request, ep.blockwise.max_body)
    nxt: Message | None = col.feed(first)
    while nxt is not None:
        nxt = col.feed(
            await exchange(ep, nxt, remote, confirmable=True, deadline=deadline, security=security)
        )
    return col.result()


async def ping(ep: Endpoint, target: Address, timeout: float | None) -> float:
    """CoAP ping of ``target`` (an empty CON, answered by RST, RFC 7252 §4.3); the
    round-trip time in seconds."""
    start = ep._now()
    fut: asyncio.Future[None] = ep._loop.create_future()
    mid = -1
    try:
        outs = ep._ml.send(Message(Code.EMPTY, Type.CON), target, start)
        mid = outs[0].message.mid  # type: ignore[union-attr]
        ep._pings[(target, mid)] = fut
        ep._process(outs)
        ep._arm_timer()
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise RequestTimeout(f"no answer to ping from {target}") from None
    finally:
        ep._pings.pop((target, mid), None)
        ep._ml.cancel(target, mid)
    return ep._now() - start
