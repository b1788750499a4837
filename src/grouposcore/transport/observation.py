"""The client's side of Observe (RFC 7641): one registration, iterated as notifications.

Kept apart from :mod:`grouposcore.transport.endpoint` because it is a consumer of the
endpoint, not part of its datagram plumbing: it registers for a token, verifies and orders
what arrives, and completes block-wise notifications through the endpoint's exchanges.

Order: plain CoAP notifications are ordered by their Observe value (RFC 7641 §3.4).
Protected ones by their Partial IV per server and security context (RFC 8613 §7.4.1,
RFC 10021 §5.3.1), since the inner Observe option is empty and the outer one is not
protected; the Partial IV comes from the verified message's ``security`` report
(``sender_id`` and ``piv``, as :class:`grouposcore.oscore.security.VerifiedMessage` carries).
A notification that fails verification is dropped and the observation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from grouposcore.coap import Message, OptionNumber, Type
from grouposcore.errors import (
    BlockwiseError,
    EndpointClosed,
    GroupOscoreError,
    OscoreDecodeError,
    RequestTimeout,
    ResetReceived,
)
from grouposcore.oscore.option import decode_option
from grouposcore.transport import client
from grouposcore.transport.blockwise import Block2Collector
from grouposcore.transport.messagelayer import Address
from grouposcore.transport.observe import NotificationOrder, PartialIvOrder
from grouposcore.transport.rejections import VerificationFailures
from grouposcore.transport.security import Binding, ClientSecurity

if TYPE_CHECKING:
    from grouposcore.transport.endpoint import Endpoint

__all__ = ["Observation", "order_source"]

log = logging.getLogger(__name__)

_END = object()


def order_source(raw: Message, verified: Message) -> tuple[Hashable, bytes | None] | None:
    """``(source, Partial IV)`` that orders a verified notification, or ``None`` when the
    security hook reports no Partial IV (then the Observe value orders, as for plain CoAP).

    The source is the responding server's Sender ID and the kid context its response named
    (a server that moved to a new group context starts its Partial IVs again, RFC 10021
    §2.6.3.2, so each context is ordered on its own).
    """
    info = getattr(verified, "security", None)
    if info is None or not hasattr(info, "piv") or not hasattr(info, "sender_id"):
        return None
    kid_context = None
    value = raw.options.get(OptionNumber.OSCORE)
    if value:
        with contextlib.suppress(OscoreDecodeError):
            kid_context = decode_option(value).kid_context
    return (info.sender_id, kid_context), info.piv


class Observation:
    """A client's Observe registration: an async iterator of notifications."""

    def __init__(
        self,
        endpoint: Endpoint,
        message: Message,
        remote: tuple[str, int] | None,
        security: ClientSecurity | None,
        timeout: float | None,
    ) -> None:
        self._ep = endpoint
        self._message = message
        self._remote_arg = remote
        self._security = security
        self._timeout = timeout
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._order = NotificationOrder()
        self._piv_order = PartialIvOrder()
        self._token: bytes | None = None
        self._remote: Address | None = None
        self._request: Message | None = None
        self._binding: Binding | None = None
        self._started = False
        self._ended = False
        self._cancelled = False
        self._first = True
        #: notifications (or the registration's answer) discarded as unverifiable
        self.failures = VerificationFailures()

    @property
    def remote(self) -> Address | None:
        return self._remote

    def __aiter__(self) -> Observation:
        return self

    async def _start(self) -> None:
        ep = self._ep
        self._started = True
        remote, msg = await client.target(ep, self._message, self._remote_arg)
        msg = msg.copy()
        msg.options.observe = 0
        self._request, self._remote = msg, remote
        token = ep._ml.new_token()
        wire = msg.copy(token=token, mtype=Type.CON, remote=remote)
        if self._security is not None:
            wire, self._binding = self._security.protect_request(wire)
            wire = wire.copy(token=token, mtype=Type.CON)
        self._token = token
        ep._listen(token, remote, self._queue.put_nowait, self._queue.put_nowait)
        ep._send(wire, remote)

    def _stop_listening(self) -> None:
        if self._token is not None:
            self._ep._unlisten(self._token)

    async def _next_item(self) -> Any:
        if not self._first:
            return await self._queue.get()
        # The registration's answer: bounded like request() (the user's timeout, else
        # EXCHANGE_LIFETIME), also when only unverifiable answers came.
        limit = self._timeout if self._timeout is not None else self._ep.params.exchange_lifetime
        try:
            # not wait_for: on 3.11 it can swallow a cancellation that races with the
            # answer, and the caller's task would never end
            async with asyncio.timeout(limit):
                return await self._queue.get()
        except TimeoutError:
            self._end()
            raise RequestTimeout(
                self.failures.explain("no response to the Observe registration")
            ) from None

    async def __anext__(self) -> Message:
        if self._ended and self._queue.empty():
            raise StopAsyncIteration
        if not self._started:
            await self._start()
        ep = self._ep
        while True:
            item = await self._next_item()
            if item is _END:
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                self._end()
                if isinstance(item, EndpointClosed | ResetReceived | RequestTimeout):
                    if self._cancelled:
                        raise StopAsyncIteration
                    if isinstance(item, RequestTimeout) and self.failures:
                        raise RequestTimeout(self.failures.explain(str(item))) from item
                raise item
            raw = item
            source = None
            if self._security is not None:
                try:
                    msg = self._security.unprotect_response(raw, self._binding)
                except GroupOscoreError as e:
                    # RFC 8613 §8.4: discard it and keep waiting for a valid one
                    self.failures.add(raw, e)
                    continue
                msg.remote = raw.remote
                source = order_source(raw, msg)
                if source is not None and not self._piv_order.accept(*source):
                    log.debug("older notification from %s dropped", raw.remote)
                    continue
            else:
                msg = raw
            self._first = False
            observe = msg.options.observe
            if Block2Collector.continues(msg):
                assert self._request is not None and self._remote is not None
                plain_req = self._request.copy()
                plain_req.options.observe = None
                try:
                    msg = await client.follow_block2(
                        ep, plain_req, msg, self._remote, None, self._security
                    )
                except (BlockwiseError, RequestTimeout) as e:
                    log.info("incomplete block-wise notification: %s", e)
                    continue
            if observe is None or not 64 <= msg.code < 96:
                self._end()
                return msg
            if source is None and not self._order.accept(observe, ep._now()):
                continue  # older than one already delivered (RFC 7641 §3.4)
            return msg

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._stop_listening()
            self._queue.put_nowait(_END)  # wakes a consumer blocked in __anext__

    async def cancel(self, *, timeout: float | None = None) -> None:
        """Deregister with a GET carrying Observe=1 and the same token (RFC 7641 §3.6)."""
        if self._ended or not self._started or self._token is None:
            self._end()
            return
        self._cancelled = True
        ep = self._ep
        token = self._token
        assert self._request is not None and self._remote is not None
        msg = self._request.copy(token=token, mtype=Type.CON)
        msg.options.observe = 1
        binding = None
        if self._security is not None:
            msg, binding = self._security.protect_request(msg)
            msg = msg.copy(token=token, mtype=Type.CON)
        fut: asyncio.Future[Message] = ep._loop.create_future()

        def on_response(m: Message) -> None:
            # Notifications still in flight carry Observe; the answer to Observe=1 does not.
            if m.options.observe is None and not fut.done():
                fut.set_result(m)

        def on_error(exc: BaseException) -> None:
            if not fut.done():
                fut.set_exception(exc)

        ep._listen(token, self._remote, on_response, on_error)
        try:
            ep._send(msg, self._remote)
            limit = timeout if timeout is not None else ep.params.max_transmit_wait
            with contextlib.suppress(RequestTimeout, ResetReceived, TimeoutError, EndpointClosed):
                resp = await asyncio.wait_for(fut, limit)
                if self._security is not None:
                    with contextlib.suppress(GroupOscoreError):
                        self._security.unprotect_response(resp, binding)
        finally:
            self._end()
