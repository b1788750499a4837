"""The asyncio CoAP endpoint: one UDP socket, client and server at once.

This is the thin I/O edge: it moves data and time between the socket, the event loop and
the sans-I/O cores, and decides nothing itself. Datagrams and timer ticks go into the
:class:`~grouposcore.transport.messagelayer.MessageLayer`; what comes out is sent or
dispatched. Requests and responses then pass, in this order:

    message layer  →  security hook  →  block-wise  →  Observe / resource (server)
                                                    →  caller (client)

so block-wise and Observe operate on plain messages (inner block-wise under OSCORE) and a
duplicate datagram never reaches the security layer twice. The server side is
:class:`~grouposcore.transport.serverflow.ServerFlow`, whose actions (render, respond after
the leisure, drop) this class carries out; the client side (Echo retry, block-wise
follow-ups) is :mod:`~grouposcore.transport.client`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from grouposcore.coap import Code, Message, parse_uri, uri_to_options
from grouposcore.coap.constants import ALL_COAP_NODES_V4
from grouposcore.errors import EndpointClosed, PeerUnreachable, RequestTimeout, ResetReceived
from grouposcore.transport import client, group_client
from grouposcore.transport.blockwise import BlockwiseLimits
from grouposcore.transport.client import BodyTags
from grouposcore.transport.eager import start_eagerly
from grouposcore.transport.messagelayer import (
    Address,
    DeliveryConfirmed,
    MessageLayer,
    Output,
    Rejected,
    RequestReceived,
    ResponseReceived,
    ServerExchange,
    TransmissionFailed,
    Transmit,
)
from grouposcore.transport.observation import Observation
from grouposcore.transport.observe import Observer
from grouposcore.transport.params import TransmissionParams
from grouposcore.transport.rejections import VerificationFailures
from grouposcore.transport.resource import Resource, Site
from grouposcore.transport.security import ClientSecurity, ServerSecurity
from grouposcore.transport.server import error_response
from grouposcore.transport.serverflow import (
    Action,
    Drop,
    Leisure,
    Park,
    Render,
    Respond,
    ServerFlow,
    clone,
)
from grouposcore.transport.sockets import UdpSocket, format_address, is_multicast

__all__ = ["Endpoint", "Observation"]

log = logging.getLogger(__name__)

#: requests an endpoint holds at most while their senders' credentials are fetched
MAX_PARKED = 64


@dataclass(slots=True)
class _Waiter:
    """Where responses for one token go (a future for one answer, a callback for many)."""

    on_response: Callable[[Message], None]
    on_error: Callable[[BaseException], None]
    on_ack: Callable[[], None] | None = None
    #: the one peer answers come from (None: a group exchange, anyone)
    remote: Address | None = None


class Endpoint:
    """A CoAP endpoint over UDP (RFC 7252); create it with :meth:`create`."""

    def __init__(
        self,
        sock: UdpSocket,
        *,
        site: Site | None = None,
        params: TransmissionParams | None = None,
        blockwise: BlockwiseLimits | None = None,
        leisure: float | None = None,
        rng: random.Random | None = None,
        server_security: ServerSecurity | None = None,
        multicast_interface: int | str | None = None,
    ) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        #: the loop's clock, bound once (read several times per request)
        self._now: Callable[[], float] = self._loop.time
        self.params = params or TransmissionParams()
        self.blockwise = blockwise or BlockwiseLimits()
        self._rng = rng or random.Random()
        self._ml = MessageLayer(self.params, rng=self._rng if rng is not None else None)
        self.multicast_interface = multicast_interface
        #: the server's request pipeline; this class only carries out its actions
        self._flow = ServerFlow(
            site=site,
            security=server_security,
            limits=self.blockwise,
            leisure=self.params.default_leisure if leisure is None else leisure,
            rng=self._rng,
            notify=self._on_change,
        )
        #: Requests this server refused, counted per reason (and logged on
        #: ``grouposcore.security``); see :class:`RejectionStats`.
        self.rejections = self._flow.rejections
        self._body_tags = BodyTags()
        self._waiters: dict[bytes, _Waiter] = {}
        self._pings: dict[tuple[Address, int], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        #: responses to multicast requests waiting out their leisure, and the one timer
        self._leisure = Leisure()
        self._leisure_timer: asyncio.Handle | None = None
        self._leisure_when = 0.0
        #: requests held until their sender's credential was fetched (see _park)
        self._parked: dict[int, ServerExchange] = {}
        self._closed = False
        self.leisure = self._flow.leisure  # sets the slot grid too
        self._loop.add_reader(sock.fileno(), self._on_readable)

    @classmethod
    async def create(
        cls,
        bind: tuple[str, int] = ("::", 0),
        *,
        site: Site | None = None,
        params: TransmissionParams | None = None,
        blockwise: BlockwiseLimits | None = None,
        leisure: float | None = None,
        rng: random.Random | None = None,
        server_security: ServerSecurity | None = None,
        multicast_interface: int | str | None = None,
        reuse_address: bool = False,
    ) -> Endpoint:
        """Bind a UDP socket and start serving.

        ``bind=("::", port)`` gives one dual-stack socket for IPv4 and IPv6;
        ``reuse_address`` lets several group members on one host share a port.
        """
        sock = UdpSocket(bind, reuse_address=reuse_address)
        try:
            return cls(
                sock, site=site, params=params, blockwise=blockwise, leisure=leisure, rng=rng,
                server_security=server_security, multicast_interface=multicast_interface,
            )  # fmt: skip
        except BaseException:
            sock.close()
            raise

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``."""
        return self._sock.address

    @property
    def message_layer(self) -> MessageLayer:
        return self._ml

    @property
    def site(self) -> Site | None:
        """The resources this endpoint serves (``None``: every request gets 4.04)."""
        return self._flow.site

    @site.setter
    def site(self, site: Site | None) -> None:
        self._flow.site = site

    @property
    def server_security(self) -> ServerSecurity | None:
        """The hook that verifies requests and protects responses (``None``: plain CoAP)."""
        return self._flow.security

    @server_security.setter
    def server_security(self, security: ServerSecurity | None) -> None:
        self._flow.security = security

    @property
    def leisure(self) -> float:
        """Wait before answering a multicast request: uniform in [0, leisure] seconds."""
        return self._flow.leisure

    @leisure.setter
    def leisure(self, leisure: float) -> None:
        self._flow.leisure = leisure
        slots = self.params.leisure_slots
        self._leisure.slot = leisure / slots if slots else 0.0

    async def close(self) -> None:
        """Stop: pending requests fail with :class:`EndpointClosed`, handlers are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
        if self._leisure_timer is not None:
            self._leisure_timer.cancel()
        self._leisure.clear()
        self._parked.clear()
        for w in list(self._waiters.values()):
            w.on_error(EndpointClosed("endpoint closed"))
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(EndpointClosed("endpoint closed"))
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()  # a render task cancelled before it ran never removed itself
        self._sock.close()

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- multicast membership ----------------------------------------------------------

    def join_group(
        self, address: str = ALL_COAP_NODES_V4, interface: int | str | None = None
    ) -> None:
        """Join a multicast group on ``interface`` (name, index, or IPv4 address)."""
        self._sock.join(address, interface if interface is not None else self.multicast_interface)

    def leave_group(
        self, address: str = ALL_COAP_NODES_V4, interface: int | str | None = None
    ) -> None:
        self._sock.leave(address, interface if interface is not None else self.multicast_interface)

    # --- plumbing --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("CoAP handler failed", exc_info=task.exception())

    def _on_readable(self) -> None:
        for _ in range(64):  # bounded, so one busy peer cannot starve the loop
            dgram = self._sock.receive()
            if dgram is None:
                break
            if dgram.error is not None:
                self._unreachable(dgram.remote, dgram.error)
                continue
            outs = self._ml.receive(
                dgram.data, dgram.remote, self._now(), multicast=dgram.multicast
            )
            self._process(outs)
            if dgram.multicast:
                # one group request per wake-up: a group socket rarely holds a second one,
                # and the read that would find it empty is a failed syscall on every
                # request; if more did queue, the (level-triggered) loop calls again
                break
        self._arm_timer()

    def _unreachable(self, remote: Address, error: int) -> None:
        """The network reported ``remote`` unreachable: every exchange waiting for that one
        peer fails now (group exchanges wait for others and are left alone)."""
        why = os.strerror(error).lower()
        for w in list(self._waiters.values()):
            if w.remote == remote:
                w.on_error(PeerUnreachable(f"{format_address(remote)}: {why}"))

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        self._process(self._ml.tick(self._now()))
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._closed:
            return
        when = self._ml.next_deadline()
        if when == self._timer_when:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._on_timer)

    def _process(self, outs: list[Output]) -> None:
        for o in outs:
            if isinstance(o, Transmit):
                if not self._closed:
                    self._sock.send(o.data, o.remote)
            elif isinstance(o, ResponseReceived):
                w = self._waiters.get(o.message.token)
                if w is not None:
                    w.on_response(o.message)
            elif isinstance(o, RequestReceived):
                self._on_request(o.exchange)
            elif isinstance(o, DeliveryConfirmed):
                ping = self._pings.get((o.remote, o.mid))
                if ping is not None and not ping.done():
                    ping.set_result(None)
                w = self._waiters.get(o.token)
                if w is not None and w.on_ack is not None:
                    w.on_ack()
            elif isinstance(o, Rejected):
                self._exchange_failed(o.remote, o.mid, o.token, "RST", None)
            elif isinstance(o, TransmissionFailed):
                n, peer = self.params.max_retransmit, o.remote
                error = RequestTimeout(f"no acknowledgement from {peer} after {n} retransmissions")
                self._exchange_failed(peer, o.mid, o.token, "unacknowledged", error)

    def _exchange_failed(
        self, remote: Address, mid: int, token: bytes, why: str, error: Exception | None
    ) -> None:
        """A CON we sent met RST (``error`` None) or was never acknowledged: it ends a ping
        (answered by RST, failed otherwise), else an Observe registration we serve, else the
        exchange waiting for ``token``."""
        ping = self._pings.get((remote, mid))
        if ping is not None:
            if not ping.done():
                if error is None:
                    ping.set_result(None)
                else:
                    ping.set_exception(RequestTimeout(f"no answer to ping from {remote}"))
        elif not self._flow.end_observation((remote, token), why):
            w = self._waiters.get(token)
            if w is not None:
                w.on_error(error or ResetReceived(f"{remote} answered with Reset"))

    def _send(self, message: Message, remote: Address) -> int:
        if self._closed:
            raise EndpointClosed("endpoint closed")
        outs = self._ml.send(message, remote, self._now())
        mid = outs[0].message.mid if outs and isinstance(outs[0], Transmit) else -1
        self._process(outs)
        self._arm_timer()
        return mid

    def _listen(
        self,
        token: bytes,
        remote: Address | None,
        on_response: Callable[[Message], None],
        on_error: Callable[[BaseException], None],
        on_ack: Callable[[], None] | None = None,
    ) -> None:
        """Route responses carrying ``token`` (from ``remote``; ``None``: anyone) to callbacks."""
        self._waiters[token] = _Waiter(on_response, on_error, on_ack, remote)
        self._ml.expect(token, remote)

    def _unlisten(self, token: bytes) -> None:
        self._waiters.pop(token, None)
        self._ml.forget(token)

    # --- client: public API --------------------------------------------------------------

    async def request(
        self,
        message: Message,
        remote: tuple[str, int] | None = None,
        *,
        timeout: float | None = None,
        confirmable: bool = True,
        security: ClientSecurity | None = None,
        token: bytes | None = None,
    ) -> Message:
        """Send a request and return the response (block-wise transfers done transparently).

        ``remote`` defaults to the Uri-Host/Uri-Port options. ``timeout`` bounds the whole
        operation; without it the RFC 7252 limits apply. A 4.01 carrying Echo (RFC 9175) is
        retried once with that Echo value. ``token`` (0-8 bytes) is the first exchange's
        token instead of a random one (later blocks and retries get their own). Raises
        :class:`RequestTimeout` when nothing arrives in time and :class:`ResetReceived` if
        the peer rejects the request.
        """
        if token is not None and len(token) > 8:
            raise ValueError("a CoAP token is at most 8 bytes")
        target, msg = await client.target(self, message, remote)
        if is_multicast(target[0]):
            raise ValueError("use group_request() for multicast destinations")
        deadline = None if timeout is None else self._now() + timeout
        return await client.request(self, msg, target, deadline, confirmable, security, token)

    async def request_uri(
        self,
        uri: str,
        code: int = Code.GET,
        payload: bytes = b"",
        *,
        timeout: float | None = None,
        confirmable: bool = True,
        security: ClientSecurity | None = None,
        options: dict[int, Any] | None = None,
    ) -> Message:
        """``request()`` for a ``coap://host[:port]/path?query`` URI."""
        parsed = parse_uri(uri)
        msg = Message(code, payload=payload, options=uri_to_options(parsed))
        for number, value in (options or {}).items():
            msg.options.set(number, value)
        remote = await client.resolve(self, parsed.host, parsed.port)
        return await self.request(
            msg, remote, timeout=timeout, confirmable=confirmable, security=security
        )

    async def ping(self, remote: tuple[str, int], *, timeout: float | None = None) -> float:
        """CoAP ping (empty CON, answered by RST); returns the round-trip time in seconds."""
        target = await client.resolve(self, str(remote[0]), int(remote[1]))
        return await client.ping(self, target, timeout)

    # --- client: groups ------------------------------------------------------------------

    def group_request(
        self,
        message: Message,
        group: tuple[str, int] | None = None,
        *,
        timeout: float | None = None,
        security: ClientSecurity | None = None,
        interface: int | str | None = None,
        failures: VerificationFailures | None = None,
    ) -> AsyncGenerator[Message, None]:
        """Send ``message`` as NON to a group; iterate the result for every response until
        the deadline: see :func:`grouposcore.transport.group_client.group_request`."""
        return group_client.group_request(
            self,
            message,
            group,
            timeout=timeout,
            security=security,
            interface=interface,
            failures=failures,
        )

    # --- client: Observe -----------------------------------------------------------------

    def observe(
        self,
        message: Message,
        remote: tuple[str, int] | None = None,
        *,
        security: ClientSecurity | None = None,
        timeout: float | None = None,
    ) -> Observation:
        """Register as observer (RFC 7641); iterate the result for the notifications.

        The first item is the response to the registration. A notification without Observe
        (the server ended the observation, e.g. with an error) is the last item.
        ``timeout`` bounds the registration exchange only.
        """
        return Observation(self, message, remote, security, timeout)

    # --- server: executing the pipeline's actions ----------------------------------------

    def _on_request(self, ex: ServerExchange) -> None:
        """Run a new request through the pipeline; only rendering needs a task. Called from
        :meth:`_on_readable`, which re-arms the message layer's timer afterwards."""
        try:
            self._execute(self._flow.receive(ex, self._now()), arm=False)
        except Exception:
            log.exception("error while answering %r from %s", ex.request, ex.remote)

    def _execute(
        self, action: Action, recover: bool = True, arm: bool = True, now: float | None = None
    ) -> None:
        """Carry out ``action``; ``now``: the loop time if the caller just read it."""
        if isinstance(action, Render):
            # most resources answer without awaiting: no task for those (see eager.py);
            # _render catches what the resource raises
            start_eagerly(self._loop, self._render(action), self._tasks)
        elif isinstance(action, Park):
            self._park(action, recover, arm, now)
        elif isinstance(action, Respond) and action.exchange.multicast:
            if now is None:
                now = self._now()
            self._leisure.add(action, now, recover)
            self._arm_leisure(now)
        else:
            self._respond(action, recover, now)
            if arm:
                self._arm_timer()

    def _park(self, action: Park, recover: bool, arm: bool, now: float | None) -> None:
        """Hold a request whose sender's credential is being fetched, and run it through
        the pipeline again when the fetch ended (once: the second time, what the pipeline
        said otherwise is done). At most ``MAX_PARKED`` wait at a time, so requests with
        made-up Sender IDs cannot pile up (the fetches themselves are rate-limited)."""
        ex, until = action.exchange, action.until
        key = id(ex)  # held below by the callback, so the id is not reused meanwhile
        if (
            key in self._parked
            or len(self._parked) >= MAX_PARKED
            or not isinstance(until, asyncio.Future)
            or until.done()
        ):
            self._execute(self._flow.declined(action), recover, arm, now)
            return
        self._parked[key] = ex
        until.add_done_callback(lambda _: self._unpark(ex))

    def _unpark(self, ex: ServerExchange) -> None:
        """Receive a held request again; a second Park of it is declined (the key stays in
        ``_parked`` until then)."""
        if self._closed or self._parked.get(id(ex)) is not ex:
            return
        try:
            self._on_request(ex)
            self._arm_timer()
        finally:
            self._parked.pop(id(ex), None)

    async def _render(self, step: Render) -> None:
        ex = step.exchange
        try:
            response = await step.resource.render(step.request)
            now = self._now()
            action = self._flow.rendered(step, response, now)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("error while handling %r from %s", ex.request, ex.remote)
            self._execute(self._flow.failed(ex, step.whole, step.binding), recover=False)
            return
        self._execute(action, now=now)

    def _respond(
        self, action: Respond | Drop, recover: bool = True, now: float | None = None
    ) -> None:
        """Protect and send a response (or only finish the exchange, for a Drop); the
        caller re-arms the message layer's timer."""
        if self._closed:
            return
        ex = action.exchange
        try:
            message = self._flow.seal(action) if isinstance(action, Respond) else None
            if now is None:
                now = self._now()
            self._process(self._ml.respond(ex, message, now))
        except Exception:
            log.exception("error while answering %r from %s", ex.request, ex.remote)
            if recover and isinstance(action, Respond) and not ex.responded:
                # A request that verified gets its 5.00 protected, never in the clear.
                self._execute(self._flow.failed(ex, action.request, action.binding), False)

    def _arm_leisure(self, now: float) -> None:
        """One loop timer for every response waiting out its leisure (see :class:`Leisure`).

        A response already due (no leisure) waits for the next loop turn through
        ``call_soon``: the same turn a timer due now would fire in, without the timer heap.
        """
        when = self._leisure.next_due()
        if when is None or self._closed:
            return
        if self._leisure_timer is not None:
            if self._leisure_when <= when:
                return
            self._leisure_timer.cancel()
        self._leisure_when = when
        if when <= now:
            self._leisure_timer = self._loop.call_soon(self._on_leisure)
        else:
            self._leisure_timer = self._loop.call_at(when, self._on_leisure)

    def _on_leisure(self) -> None:
        # asyncio fires a timer up to its clock resolution early: what it was set for is due
        now = max(self._now(), self._leisure_when)
        self._leisure_timer = None
        for action, recover in self._leisure.pop_due(now):
            self._respond(action, recover, now)
        self._arm_timer()
        self._arm_leisure(now)

    # --- server: Observe -----------------------------------------------------------------

    def _on_change(self, resource: Resource, observer: Observer) -> None:
        self._spawn(self._notify(resource, observer))

    async def _notify(self, resource: Resource, observer: Observer) -> None:
        if not self._flow.is_current(observer):
            return
        try:
            response = await resource.render(clone(observer.request))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notification rendering failed")
            response = error_response(Code.INTERNAL_SERVER_ERROR)
        if self._closed:
            return
        msg = self._flow.notification(resource, observer, response, self._now())
        if msg is not None:
            self._send(msg, observer.remote)
