"""The asyncio CoAP endpoint: one UDP socket, client and server at once.

This is the thin I/O edge. Datagrams and timer ticks go into the sans-I/O
:class:`~grouposcore.transport.messagelayer.MessageLayer`; what comes out is sent or
dispatched. Requests and responses then pass, in this order:

    message layer  →  security hook  →  block-wise  →  Observe / resource (server)
                                                    →  caller (client)

so block-wise and Observe operate on plain messages (inner block-wise under OSCORE) and a
duplicate datagram never reaches the security layer twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any

from grouposcore.coap import (
    BlockOption,
    Code,
    Message,
    OptionNumber,
    Type,
    parse_uri,
    uri_to_options,
)
from grouposcore.coap.constants import ALL_COAP_NODES_V4, COAP_PORT
from grouposcore.errors import (
    EndpointClosed,
    FreshnessRequired,
    GroupOscoreError,
    ModeNotSupported,
    OscoreError,
    PeerUnreachable,
    RequestTimeout,
    ResetReceived,
    ResponseEndsExchange,
)
from grouposcore.transport import group_client
from grouposcore.transport.blockwise import (
    Block1Assembler,
    Block1Sender,
    Block2Collector,
    Block2Server,
    BlockwiseLimits,
)
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
from grouposcore.transport.rejections import (
    Rejection,
    RejectionStats,
    VerificationFailures,
    may_be_group_request,
    reason_of,
    request_mode,
)
from grouposcore.transport.resource import Resource, Site
from grouposcore.transport.security import ClientSecurity, ServerSecurity, security_identity
from grouposcore.transport.server import (
    bad_option_response,
    error_response,
    multicast_delay,
    suppressed,
)
from grouposcore.transport.sockets import UdpSocket, format_address, is_multicast, normalise

__all__ = ["Endpoint", "Observation"]

log = logging.getLogger(__name__)

_N = OptionNumber
_SAFE_METHODS = (Code.GET, Code.FETCH)


def _clone(msg: Message) -> Message:
    """Copy that keeps a security layer's Message subclass (``Message.copy`` does not)."""
    return dataclasses.replace(msg, options=msg.options.copy())


class _Waiter:
    """Where responses for one token go (a future for one answer, a callback for many)."""

    def __init__(
        self,
        on_response: Callable[[Message], None],
        on_error: Callable[[BaseException], None],
        on_ack: Callable[[], None] | None = None,
        remote: Address | None = None,
    ) -> None:
        self.on_response = on_response
        self.on_error = on_error
        self.on_ack = on_ack
        #: the one peer answers come from (None: a group exchange, anyone)
        self.remote = remote


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
        self.params = params or TransmissionParams()
        self.blockwise = blockwise or BlockwiseLimits()
        self._rng = rng or random.Random()
        self._ml = MessageLayer(self.params, rng=self._rng if rng is not None else None)
        self.site = site
        #: Wait before answering a multicast request: uniform in [0, leisure] seconds.
        self.leisure = self.params.default_leisure if leisure is None else leisure
        self.server_security = server_security
        self.multicast_interface = multicast_interface
        self._block1 = Block1Assembler(self.blockwise)
        #: outer block-wise (RFC 8613 §4.1.3.4.2): OSCORE requests a proxy fragmented
        self._outer_block1 = Block1Assembler(self.blockwise)
        self._block2 = Block2Server(self.blockwise)
        self._waiters: dict[bytes, _Waiter] = {}
        self._pings: dict[tuple[Address, int], asyncio.Future[None]] = {}
        self._observations: dict[tuple[Address, bytes], tuple[Resource, Observer]] = {}
        self._block1_active: Counter[tuple[Address, tuple[bytes, ...]]] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self._closed = False
        #: Requests this server refused, counted per reason (and logged on
        #: ``grouposcore.security``); see :class:`RejectionStats`.
        self.rejections = RejectionStats()
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
                sock,
                site=site,
                params=params,
                blockwise=blockwise,
                leisure=leisure,
                rng=rng,
                server_security=server_security,
                multicast_interface=multicast_interface,
            )
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

    async def close(self) -> None:
        """Stop: pending requests fail with :class:`EndpointClosed`, handlers are cancelled."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
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

    def _now(self) -> float:
        return self._loop.time()

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
                self._spawn(self._handle_request(o.exchange))
            elif isinstance(o, DeliveryConfirmed):
                ping = self._pings.get((o.remote, o.mid))
                if ping is not None and not ping.done():
                    ping.set_result(None)
                w = self._waiters.get(o.token)
                if w is not None and w.on_ack is not None:
                    w.on_ack()
            elif isinstance(o, Rejected):
                ping = self._pings.get((o.remote, o.mid))
                if ping is not None:
                    if not ping.done():
                        ping.set_result(None)
                elif not self._end_observation((o.remote, o.token), "RST"):
                    w = self._waiters.get(o.token)
                    if w is not None:
                        w.on_error(ResetReceived(f"{o.remote} answered with Reset"))
            elif isinstance(o, TransmissionFailed):
                ping = self._pings.get((o.remote, o.mid))
                if ping is not None:
                    if not ping.done():
                        ping.set_exception(RequestTimeout(f"no answer to ping from {o.remote}"))
                elif not self._end_observation((o.remote, o.token), "unacknowledged"):
                    w = self._waiters.get(o.token)
                    if w is not None:
                        w.on_error(
                            RequestTimeout(
                                f"no acknowledgement from {o.remote} after "
                                f"{self.params.max_retransmit} retransmissions"
                            )
                        )

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

    # --- addresses -----------------------------------------------------------------------

    async def _resolve(self, host: str, port: int) -> Address:
        host = host.strip("[]")
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(host.split("%", 1)[0])
            return normalise((host, port))
        family = self._sock.family
        want = 0 if family == socket.AF_INET6 and self._sock.dual_stack else family
        infos = await self._loop.getaddrinfo(host, port, family=want, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        return normalise(infos[0][4])

    async def _target(
        self, message: Message, remote: tuple[str, int] | None
    ) -> tuple[Address, Message]:
        if remote is not None:
            return await self._resolve(str(remote[0]), int(remote[1])), message
        host = message.options.uri_host
        if host is None:
            raise ValueError("no remote given and the request has no Uri-Host option")
        port = message.options.uri_port or COAP_PORT
        msg = message.copy()
        stripped = host.strip("[]")
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(stripped.split("%", 1)[0])
            msg.options.uri_host = None  # an IP literal is implied by the destination
        if msg.options.uri_port == COAP_PORT:
            msg.options.uri_port = None
        return await self._resolve(stripped, port), msg

    # --- client: one exchange ------------------------------------------------------------

    async def _exchange(
        self,
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
            token = self._ml.new_token()
        wire = message.copy(token=token, mtype=Type.CON if confirmable else Type.NON, remote=remote)
        binding = None
        if security is not None:
            wire, binding = security.protect_request(wire)
            wire = wire.copy(token=token, mtype=Type.CON if confirmable else Type.NON)
        inbox: asyncio.Queue[Message | BaseException] = asyncio.Queue()
        state = {"acked": False}

        def on_ack() -> None:
            state["acked"] = True

        failures = VerificationFailures()
        self._listen(token, remote, inbox.put_nowait, inbox.put_nowait, on_ack)
        mid = -1
        start = self._now()
        try:
            mid = self._send(wire, remote)
            while True:
                item = await self._await_response(inbox, confirmable, deadline, state, start)
                if isinstance(item, BaseException):
                    raise item
                if security is None:
                    return item
                try:
                    plain = security.unprotect_response(item, binding)
                except ResponseEndsExchange:
                    raise
                except GroupOscoreError as e:
                    failures.add(item, e)
                    continue
                plain.remote = item.remote
                return plain
        except RequestTimeout as e:
            if failures:
                raise RequestTimeout(failures.explain(str(e))) from e
            raise
        finally:
            self._unlisten(token)
            self._ml.cancel(remote, mid)

    async def _await_response(
        self,
        inbox: asyncio.Queue[Message | BaseException],
        confirmable: bool,
        deadline: float | None,
        state: dict[str, bool],
        start: float,
    ) -> Message | BaseException:
        """The next response (or error) for an exchange, until the user's deadline or the
        protocol's own limits.

        Without a deadline a CON request fails when retransmissions run out (the message
        layer reports it) or EXCHANGE_LIFETIME after the empty ACK; a NON request waits
        MAX_TRANSMIT_WAIT. ``start`` is when the request went out: discarded responses do
        not extend the wait.
        """
        while True:
            if deadline is not None:
                limit: float | None = deadline
            elif not confirmable:
                limit = start + self.params.max_transmit_wait
            elif state["acked"]:
                limit = start + self.params.exchange_lifetime
            else:
                limit = None  # the message layer reports when retransmissions run out
            # Without a limit, look again every ACK_TIMEOUT: an empty ACK sets one.
            wait = self.params.ack_timeout if limit is None else max(0.0, limit - self._now())
            try:
                return await asyncio.wait_for(inbox.get(), wait)
            except TimeoutError:
                if limit is not None and self._now() >= limit:
                    raise RequestTimeout("no response before the deadline") from None

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
        target, msg = await self._target(message, remote)
        if is_multicast(target[0]):
            raise ValueError("use group_request() for multicast destinations")
        deadline = None if timeout is None else self._now() + timeout
        return await self._request_with_echo(msg, target, deadline, confirmable, security,
                                             token)

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
        remote = await self._resolve(parsed.host, parsed.port)
        return await self.request(
            msg, remote, timeout=timeout, confirmable=confirmable, security=security
        )

    async def _request_with_echo(
        self,
        message: Message,
        remote: Address,
        deadline: float | None,
        confirmable: bool,
        security: ClientSecurity | None,
        token: bytes | None = None,
    ) -> Message:
        resp = await self._blockwise_request(message, remote, deadline, confirmable, security,
                                             token)
        echo = resp.options.echo if resp.code == Code.UNAUTHORIZED else None
        if echo is not None and message.options.echo != echo:
            retry = message.copy()
            retry.options.echo = echo
            resp = await self._blockwise_request(retry, remote, deadline, confirmable, security)
        return resp

    async def _blockwise_request(
        self,
        message: Message,
        remote: Address,
        deadline: float | None,
        confirmable: bool,
        security: ClientSecurity | None,
        token: bytes | None = None,
    ) -> Message:
        one = self._one_shot(remote, confirmable, deadline, security, token)
        szx = self.blockwise.szx
        if Block1Sender.needed(message, szx):
            key = (remote, tuple(message.options.get_all(_N.URI_PATH)))
            # RFC 9175 §3.4: distinguish concurrent bodies to one resource by Request-Tag.
            tag = os.urandom(4) if self._block1_active[key] else None
            self._block1_active[key] += 1
            try:
                sender = Block1Sender(message, szx, tag)
                nxt: Message | None = sender.first()
                resp = None
                while nxt is not None:
                    resp = await one(nxt)
                    nxt = sender.next(resp)
            finally:
                self._block1_active[key] -= 1
                if not self._block1_active[key]:
                    del self._block1_active[key]
            assert resp is not None
        else:
            resp = await one(message)
        if Block2Collector.continues(resp):
            resp = await self._follow_block2(message, resp, one)
        return resp

    def _one_shot(
        self,
        remote: Address,
        confirmable: bool,
        deadline: float | None,
        security: ClientSecurity | None,
        token: bytes | None = None,
    ) -> Callable[[Message], Coroutine[Any, Any, Message]]:
        """A function that runs one exchange with fixed parameters (for block-wise loops);
        ``token``, if given, is used by its first exchange only."""
        first = [token]

        async def one(m: Message) -> Message:
            chosen, first[0] = first[0], None
            return await self._exchange(
                m, remote, confirmable=confirmable, deadline=deadline, security=security,
                token=chosen,
            )

        return one

    async def _follow_block2(
        self,
        request: Message,
        first: Message,
        one: Callable[[Message], Coroutine[Any, Any, Message]],
    ) -> Message:
        col = Block2Collector(request, self.blockwise.max_body)
        nxt = col.feed(first)
        while nxt is not None:
            nxt = col.feed(await one(nxt))
        return col.result()

    async def ping(self, remote: tuple[str, int], *, timeout: float | None = None) -> float:
        """CoAP ping (empty CON, answered by RST); returns the round-trip time in seconds."""
        target = await self._resolve(str(remote[0]), int(remote[1]))
        start = self._now()
        fut: asyncio.Future[None] = self._loop.create_future()
        mid = -1
        try:
            outs = self._ml.send(Message(Code.EMPTY, Type.CON), target, start)
            mid = outs[0].message.mid  # type: ignore[union-attr]
            self._pings[(target, mid)] = fut
            self._process(outs)
            self._arm_timer()
            try:
                await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                raise RequestTimeout(f"no answer to ping from {target}") from None
        finally:
            self._pings.pop((target, mid), None)
            self._ml.cancel(target, mid)
        return self._now() - start

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
        the deadline (see :func:`grouposcore.transport.group_client.group_request`).

        ``group`` defaults to All-CoAP-Nodes of the socket's family on port 5683.
        ``timeout`` (default: the leisure plus ACK_TIMEOUT) bounds the collection. Each
        response carries its sender in ``remote``; responses that fail verification are
        skipped (and tallied in ``failures`` when given, so a caller that got nothing can
        say why). Block-wise responses are completed and 4.01+Echo answered by unicast to
        that server, within the same deadline.
        """
        return group_client.group_request(
            self, message, group, timeout=timeout, security=security, interface=interface,
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

    # --- server ------------------------------------------------------------------------

    async def _handle_request(self, ex: ServerExchange) -> None:
        state: dict[str, Any] = {}
        try:
            await self._serve(ex, state)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("error while handling %r from %s", ex.request, ex.remote)
            if not ex.responded:
                # A request that verified gets its 5.00 protected, never in the clear.
                binding = state.get("binding")
                await self._finish(
                    ex,
                    state.get("request", ex.request),
                    error_response(Code.INTERNAL_SERVER_ERROR),
                    binding,
                    group=binding is None and may_be_group_request(ex.request, ex.multicast),
                )

    def _reject(
        self, ex: ServerExchange, request: Message, reason: str, detail: str, answered: bool
    ) -> None:
        """Count and log one refused request (what its outer OSCORE option claims)."""
        contexts = getattr(self.server_security, "contexts", None) or ()
        mode, kid = request_mode(request, (getattr(c, "gid", None) for c in contexts))
        self.rejections.record(Rejection(reason, ex.remote, kid, mode, detail, answered))

    async def _serve(self, ex: ServerExchange, state: dict[str, Any]) -> None:
        request = ex.request
        # RFC 10021 §7: no error responses to what is or may be a group request, however
        # it arrived; until a request verified, that is all we know of it.
        group = may_be_group_request(request, ex.multicast)
        bad = bad_option_response(request)
        if bad is not None:
            await self._finish(ex, request, bad, None, group=group)
            return
        binding = None
        sec = self.server_security
        outer_block1 = None
        if sec is not None and _N.OSCORE in request.options and _N.BLOCK1 in request.options:
            # Outer Block1 fragments the protected message itself (RFC 8613 §4.1.3.4.2):
            # reassemble it before anything is verified; the final answer echoes Block1.
            ob1 = self._outer_block1.feed(request, (ex.remote, "outer"), self._now())
            if ob1.response is not None or ob1.complete is None:
                await self._finish(ex, request, ob1.response, None, group=group)
                return
            request, outer_block1 = ob1.complete, ob1.final_block
        plain = request
        if sec is not None:
            try:
                unprotected = sec.unprotect_request(request)
            except FreshnessRequired as e:
                # The one answer a group request gets although it is not delivered: the
                # protected 4.01 + Echo the client needs to repeat it (RFC 10021 §9).
                self._reject(ex, request, reason_of(e), str(e), answered=True)
                challenge = Message(Code.UNAUTHORIZED)
                challenge.options.echo = e.echo
                await self._finish(ex, request, challenge, e.binding, always=True)
                return
            except OscoreError as e:
                # An error that carries a binding (e.g. a replay of a request that verified)
                # is answered protected; others plain. ``coap_code`` None: silence, and
                # always silence to a request that is or may be a group request.
                resp = None
                if e.coap_code is not None and not group:
                    resp = error_response(e.coap_code, e.diagnostic)
                    resp.options.max_age = e.max_age
                answered = resp is not None and not suppressed(request, resp, ex.multicast)
                self._reject(ex, request, reason_of(e), str(e), answered)
                await self._finish(ex, request, resp, e.binding)
                return
            except GroupOscoreError as e:
                resp = None if group else error_response(Code.BAD_REQUEST)
                self._reject(ex, request, reason_of(e), str(e), resp is not None)
                await self._finish(ex, request, resp, None)
                return
            if unprotected is not None:
                plain, binding = unprotected
                plain.remote = ex.remote
                state["request"], state["binding"] = plain, binding
                bad = bad_option_response(plain)
                if bad is not None:
                    await self._finish(ex, plain, bad, binding)
                    return
        if binding is None and _N.OSCORE in plain.options:
            # Protected for nobody here: the critical OSCORE option is not understood.
            resp = error_response(Code.BAD_OPTION, "OSCORE")
            answered = not suppressed(plain, resp, ex.multicast or group)
            self._reject(ex, plain, "no-security", "this endpoint has no OSCORE", answered)
            await self._finish(ex, plain, resp, None, group=group)
            return
        now = self._now()
        origin = (ex.remote, security_identity(binding))
        cached = self._block2.cached(plain, origin, now)
        if cached is not None:
            await self._finish(ex, plain, cached, binding)
            return
        b1 = self._block1.feed(plain, origin, now)
        if b1.response is not None or b1.complete is None:
            await self._finish(ex, plain, b1.response, binding)
            return
        whole = b1.complete
        resource = self.site.lookup(whole.options.uri_path) if self.site is not None else None
        if resource is None:
            response = error_response(Code.NOT_FOUND)
        elif resource.protection is not None and binding is None:
            # Silence for multicast (error responses are suppressed there): no amplification.
            response = error_response(Code.UNAUTHORIZED, "Security context required")
            answered = not suppressed(whole, response, ex.multicast)
            self._reject(ex, whole, "unprotected", "/".join(whole.options.uri_path), answered)
        elif resource.protection is not None and not resource.protection.accepts(binding):
            response = error_response(Code.UNAUTHORIZED, "Not authorized for this resource")
            answered = not suppressed(whole, response, ex.multicast)
            self._reject(ex, request, "not-authorized", "/".join(whole.options.uri_path), answered)
        else:
            response = await self._render(ex, resource, whole, binding)
        if b1.final_block is not None:
            response.options.block1 = dataclasses.replace(b1.final_block)
        response = self._block2.slice(whole, response, origin, self._now())
        await self._finish(ex, whole, response, binding, outer_block1=outer_block1)

    async def _render(
        self, ex: ServerExchange, resource: Resource, whole: Message, binding: Any
    ) -> Message:
        b2 = whole.options.block2
        if b2 is not None and b2.num > 0 and whole.code not in _SAFE_METHODS:
            # A later block of a response we no longer hold: re-running POST is not safe.
            return error_response(Code.REQUEST_ENTITY_INCOMPLETE, "representation expired")
        req = _clone(whole)
        for n in (_N.BLOCK2, _N.SIZE2):
            req.options.remove(n)
        obs = req.options.observe if whole.code in _SAFE_METHODS else None
        key = (ex.remote, whole.token)
        if obs == 1 or (obs is not None and not resource.observable):
            self._end_observation(key, "deregistered")
        response = await resource.render(req)
        if not isinstance(response, Message):
            raise TypeError(f"{resource!r} returned {response!r}, not a Message")
        response = response.copy()
        response.options.remove(_N.OBSERVE)
        if obs == 0 and resource.observable and (b2 is None or b2.num == 0):
            if 64 <= response.code < 96:
                self._register_observer(resource, ex, req, binding)
                response.options.observe = resource.next_observe_number()
            else:
                self._end_observation(key, "error")
        return response

    async def _finish(
        self,
        ex: ServerExchange,
        request: Message,
        response: Message | None,
        binding: Any,
        *,
        always: bool = False,
        group: bool = False,
        outer_block1: BlockOption | None = None,
    ) -> None:
        """Suppress, delay (multicast), protect and send a response.

        ``group``: the request is or may be a group request though it came by unicast, so
        error responses are suppressed as for a multicast request.
        """
        multicast_like = ex.multicast or group
        if response is not None and not always and suppressed(request, response, multicast_like):
            response = None
        if response is not None and ex.multicast:
            await asyncio.sleep(multicast_delay(self.leisure, self._rng))
        if response is not None and binding is not None and self.server_security is not None:
            try:
                response = self.server_security.protect_response(response, binding)
            except ModeNotSupported as e:  # e.g. a silent server (Monitor): never answers
                log.debug("not answering %s: %s", ex.remote, e)
                response = None
            except GroupOscoreError as e:
                log.warning("cannot protect response to %s: %s", ex.remote, e)
                response = None
        if response is not None and outer_block1 is not None:
            response.options.block1 = dataclasses.replace(outer_block1)
        if self._closed:
            return
        self._process(self._ml.respond(ex, response, self._now()))
        self._arm_timer()

    # --- server: Observe -----------------------------------------------------------------

    def _register_observer(
        self, resource: Resource, ex: ServerExchange, request: Message, binding: Any
    ) -> None:
        key = (ex.remote, request.token)
        old = self._observations.pop(key, None)
        if old is not None:
            old[0].remove_observer(key)
        observer = Observer(
            ex.remote, request.token, request, binding, ex.multicast, last_con=self._now()
        )
        observer.trigger = lambda o: self._spawn(self._notify(resource, o))
        resource.add_observer(observer)
        self._observations[key] = (resource, observer)

    def _end_observation(self, key: tuple[Address, bytes], why: str) -> bool:
        entry = self._observations.pop(key, None)
        if entry is None:
            return False
        entry[0].remove_observer(key)
        log.debug("observation %s ended: %s", key, why)
        return True

    async def _notify(self, resource: Resource, observer: Observer) -> None:
        key = observer.key
        if self._observations.get(key, (None, None))[1] is not observer:
            return
        try:
            response = await resource.render(_clone(observer.request))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("notification rendering failed")
            response = error_response(Code.INTERNAL_SERVER_ERROR)
        if self._observations.get(key, (None, None))[1] is not observer or self._closed:
            return
        now = self._now()
        response = response.copy()
        if 64 <= response.code < 96:
            response.options.observe = resource.next_observe_number()
            mtype = observer.notification_type(resource.notification_policy, now)
        else:
            response.options.remove(_N.OBSERVE)
            self._end_observation(key, "error notification")
            mtype = Type.CON
        origin = (observer.remote, security_identity(observer.binding))
        response = self._block2.slice(observer.request, response, origin, now)
        msg = response.copy(token=observer.token, mtype=mtype)
        if observer.binding is not None and self.server_security is not None:
            try:
                msg = self.server_security.protect_response(msg, observer.binding)
            except GroupOscoreError as e:
                log.warning("cannot protect notification: %s", e)
                self._end_observation(key, "protection failed")
                return
            msg = msg.copy(token=observer.token, mtype=mtype)
        self._send(msg, observer.remote)
