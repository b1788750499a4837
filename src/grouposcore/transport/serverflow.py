"""The server's request pipeline, free of I/O: what to do with one received request.

A request the message layer delivered goes through, in this order::

    outer Block1 (RFC 8613 §4.1.3.4.2) → unprotect → error mapping → Block2 cache →
    Block1 → lookup → authorisation → render → Observe → slice → suppress → leisure → protect

:meth:`ServerFlow.receive` runs every step up to the resource and returns an *action* for
the endpoint to execute:

* :class:`Render`: await ``resource.render(action.request)``, then hand the result to
  :meth:`ServerFlow.rendered`, which returns one of the two below;
* :class:`Respond`: send what :meth:`ServerFlow.seal` makes of it (protected, or ``None``
  if it cannot be); the answer to a multicast request first waits ``delay`` seconds, its
  leisure, in the endpoint's :class:`Leisure` (one timer for all);
* :class:`Drop`: no response (the message layer still sends an empty ACK if one is due);
* :class:`Park`: the sender's credential is being fetched (a member that joined since this
  one last heard from the Group Manager): hold the request until ``until`` completes, then
  run it through :meth:`ServerFlow.receive` again; if it cannot be held, or was held once
  already, carry out :meth:`ServerFlow.declined` instead (it is counted as refused only then).

Nothing here reads a clock, touches a socket or asyncio: the time comes in as an argument and
the leisure's randomness from the ``rng`` given, so each decision is tested directly on a
fake clock, as the message layer is. The flow owns the state the decisions need: block-wise
reassembly and caches, the Observe registrations and the rejection counters.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from grouposcore.coap import BlockOption, Code, Message, OptionNumber, Options, Type
from grouposcore.errors import (
    CredentialNotFound,
    FreshnessRequired,
    GroupOscoreError,
    ModeNotSupported,
    OscoreError,
)
from grouposcore.transport.blockwise import Block1Assembler, Block2Server, BlockwiseLimits
from grouposcore.transport.messagelayer import Address, ServerExchange
from grouposcore.transport.observe import Observer
from grouposcore.transport.rejections import (
    Rejection,
    RejectionStats,
    may_be_group_request,
    reason_of,
    request_mode,
)
from grouposcore.transport.resource import Resource, Site
from grouposcore.transport.security import ServerSecurity, security_identity
from grouposcore.transport.server import (
    bad_option_response,
    error_response,
    multicast_delay,
    suppressed,
)

__all__ = ["Action", "Drop", "Leisure", "Render", "Respond", "ServerFlow", "clone"]

#: the endpoint's logger: these messages have always come from there, and log settings name it
log = logging.getLogger("grouposcore.transport.endpoint")

_N = OptionNumber
_SAFE_METHODS = (Code.GET, Code.FETCH)
#: the options that make a request more than a plain one: block-wise or Observe
_WATCHED = frozenset(map(int, (_N.OBSERVE, _N.BLOCK2, _N.BLOCK1, _N.SIZE2)))


def _watched(options: Options) -> bool:
    """Whether the request carries any of :data:`_WATCHED` (one pass instead of a lookup
    per option; most requests carry none)."""
    watched = _WATCHED
    for item in options._items:
        if item[0] in watched:
            return True
    return False


def clone(msg: Message) -> Message:
    """Copy that keeps a security layer's Message subclass (``Message.copy`` does not)."""
    return dataclasses.replace(msg, options=msg.options.copy())


@dataclass(slots=True, eq=False)
class Render:
    """Ask ``resource`` to answer ``request``; give its response to :meth:`ServerFlow.rendered`."""

    exchange: ServerExchange
    resource: Resource
    #: what the resource sees: the whole (reassembled, verified) request minus Block2/Size2
    request: Message
    #: the whole request as received, which the response is sliced and suppressed for
    whole: Message
    binding: Any
    #: block-wise state key: the peer and its security association
    origin: Hashable
    #: Block1 to echo in the final response to a block-wise request body
    block1: BlockOption | None
    #: outer Block1 to echo on the protected response (RFC 8613 §4.1.3.4.2)
    outer_block1: BlockOption | None
    #: the Observe option of a GET or FETCH (``None``: not an Observe request)
    observe: int | None


@dataclass(slots=True, eq=False)
class Respond:
    """Send ``message`` (unprotected yet) as the answer to ``exchange`` after ``delay`` s."""

    exchange: ServerExchange
    message: Message
    #: the request answered (a failure while sending falls back to a 5.00 for it)
    request: Message
    binding: Any
    outer_block1: BlockOption | None
    #: the leisure before answering a multicast request (RFC 7252 §8.2); 0 otherwise
    delay: float


@dataclass(slots=True, eq=False)
class Drop:
    """Finish ``exchange`` without a response."""

    exchange: ServerExchange
    #: why, for logs and tests: ``suppressed`` (error to a group, No-Response) or ``silent``
    reason: str


@dataclass(slots=True, eq=False)
class Park:
    """Hold ``exchange`` until ``until`` (an awaitable the security layer handed over, e.g.
    an asyncio task fetching the sender's credential) completes, then receive it again."""

    exchange: ServerExchange
    until: object
    #: what to do if the request is not held (or comes back still unverifiable)
    otherwise: Respond | Drop
    #: how it is counted and logged if it is refused after all (:meth:`ServerFlow.declined`)
    rejection: Rejection


Action = Render | Respond | Drop | Park


class Leisure:
    """Responses to multicast requests waiting out their leisure, in due order.

    The endpoint keeps one timer for all of them (not a task or a timer per response) and
    sends every response due when it fires in one go; a response with no delay still waits
    for the end of the loop turn, so a member verifies every request that arrived together
    before it protects and sends the answers, and the client reads them in one burst.

    With a ``slot`` (seconds), a delayed response is due at the first multiple of ``slot``
    on the clock at or after ``now + delay``: never earlier than its leisure says, at most
    one slot later. Every endpoint of a process reads the same loop clock, so the members a
    process hosts (a gateway, a test rig) send what falls in one slot in one loop turn
    instead of waking the process once per response; on a machine where a wake-up after
    an idle spell costs a few hundred microseconds of CPU (cold caches), that is most of
    what a spread-out answer costs (docs/performance.md). Members on separate hosts keep
    independent delays: their clocks share no grid.
    """

    __slots__ = ("_heap", "_seq", "slot")

    def __init__(self, slot: float = 0.0) -> None:
        self._heap: list[tuple[float, int, Respond, bool]] = []
        self._seq = 0
        self.slot = slot

    def add(self, action: Respond, now: float, recover: bool = True) -> None:
        """Hold ``action`` until ``now + action.delay`` (rounded up to the slot grid when
        it has a delay); ``recover``: a failure to send it may still fall back to a 5.00."""
        due = now + action.delay
        if action.delay > 0 and self.slot > 0:
            due = max(due, math.ceil(due / self.slot) * self.slot)  # max: float rounding
        heapq.heappush(self._heap, (due, self._seq, action, recover))
        self._seq += 1

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[tuple[Respond, bool]]:
        """Every held response due at ``now``, in due order, with its ``recover`` flag."""
        heap = self._heap
        out = []
        while heap and heap[0][0] <= now:
            _, _, action, recover = heapq.heappop(heap)
            out.append((action, recover))
        return out

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return len(self._heap)


class ServerFlow:
    """The request pipeline of one endpoint (see the module docstring).

    ``notify(resource, observer)`` is called when an observed resource changed: the endpoint
    renders it again and passes the result to :meth:`notification`.
    """

    def __init__(
        self,
        *,
        site: Site | None,
        security: ServerSecurity | None,
        limits: BlockwiseLimits,
        leisure: float,
        rng: random.Random,
        notify: Callable[[Resource, Observer], object],
        rejections: RejectionStats | None = None,
    ) -> None:
        self.site = site
        self.security = security
        #: wait before answering a multicast request: uniform in [0, leisure] seconds
        self.leisure = leisure
        self.rng = rng
        self.rejections = rejections if rejections is not None else RejectionStats()
        self._notify = notify
        self._block1 = Block1Assembler(limits)
        #: outer block-wise (RFC 8613 §4.1.3.4.2): OSCORE requests a proxy fragmented
        self._outer_block1 = Block1Assembler(limits)
        self._block2 = Block2Server(limits)
        self._observations: dict[tuple[Address, bytes], tuple[Resource, Observer]] = {}

    # --- receive: everything before the resource -----------------------------------------

    def receive(self, ex: ServerExchange, now: float) -> Action:
        """The first action for a request the message layer delivered.

        An unexpected exception (a broken security hook, a bug) becomes a 5.00, protected
        if the request verified, never sent in the clear to what may be a group request.
        """
        request, binding = ex.request, None
        try:
            verified = self._verify(ex, now)
            if not isinstance(verified, tuple):
                return verified
            request, binding, outer_block1 = verified
            return self._dispatch(ex, request, binding, outer_block1, now)
        except Exception:
            log.exception("error while handling %r from %s", ex.request, ex.remote)
            return self.failed(ex, request, binding)

    def _verify(
        self, ex: ServerExchange, now: float
    ) -> Respond | Drop | Park | tuple[Message, Any, BlockOption | None]:
        """Option checks, outer Block1 and unprotection: ``(plain request, binding, outer
        Block1)``, or the answer to a request that went no further."""
        request = ex.request
        # RFC 10021 §7: no error responses to what is or may be a group request, however
        # it arrived; until a request verified, that is all we know of it.
        group = may_be_group_request(request, ex.multicast)
        bad = bad_option_response(request)
        if bad is not None:
            return self._answer(ex, request, bad, None, group=group)
        sec = self.security
        if sec is None:
            if _N.OSCORE in request.options:
                return self._unprotected_oscore(ex, request, group)
            return request, None, None
        outer_block1 = None
        if _N.OSCORE in request.options and _N.BLOCK1 in request.options:
            # Outer Block1 fragments the protected message itself (RFC 8613 §4.1.3.4.2):
            # reassemble it before anything is verified; the final answer echoes Block1.
            ob1 = self._outer_block1.feed(request, (ex.remote, "outer"), now)
            if ob1.complete is None:
                return self._answer(ex, request, ob1.response, None, group=group)
            request, outer_block1 = ob1.complete, ob1.final_block
        try:
            unprotected = sec.unprotect_request(request)
        except FreshnessRequired as e:
            # The one answer a group request gets although it is not delivered: the
            # protected 4.01 + Echo the client needs to repeat it (RFC 10021 §9).
            self._reject(ex, request, reason_of(e), str(e), answered=True)
            challenge = Message(Code.UNAUTHORIZED)
            challenge.options.echo = e.echo
            return self._answer(ex, request, challenge, e.binding, always=True)
        except OscoreError as e:
            # An error that carries a binding (e.g. a replay of a request that verified)
            # is answered protected; others plain. ``coap_code`` None: silence, and
            # always silence to a request that is or may be a group request.
            resp = None
            if e.coap_code is not None and not group:
                resp = error_response(e.coap_code, e.diagnostic)
                resp.options.max_age = e.max_age
            answered = resp is not None and not suppressed(request, resp, ex.multicast)
            rejection = self._rejection(ex, request, reason_of(e), str(e), answered)
            otherwise = self._answer(ex, request, resp, e.binding)
            if isinstance(e, CredentialNotFound) and e.pending is not None and outer_block1 is None:
                # nothing of the request was used yet: it may run again once the fetch
                # ended, and is counted as refused only if it is not (see declined)
                return Park(ex, e.pending, otherwise, rejection)
            self.rejections.record(rejection)
            return otherwise
        except GroupOscoreError as e:
            resp = None if group else error_response(Code.BAD_REQUEST)
            self._reject(ex, request, reason_of(e), str(e), resp is not None)
            return self._answer(ex, request, resp, None)
        if unprotected is None:
            if _N.OSCORE in request.options:
                return self._unprotected_oscore(ex, request, group)
            return request, None, outer_block1
        plain, binding = unprotected
        plain.remote = ex.remote
        bad = bad_option_response(plain)
        if bad is not None:
            return self._answer(ex, plain, bad, binding)
        return plain, binding, outer_block1

    def _unprotected_oscore(
        self, ex: ServerExchange, request: Message, group: bool
    ) -> Respond | Drop:
        """Protected for nobody here: the critical OSCORE option is not understood."""
        resp = error_response(Code.BAD_OPTION, "OSCORE")
        answered = not suppressed(request, resp, ex.multicast or group)
        self._reject(ex, request, "no-security", "this endpoint has no OSCORE", answered)
        return self._answer(ex, request, resp, None, group=group)

    def _dispatch(
        self,
        ex: ServerExchange,
        plain: Message,
        binding: Any,
        outer_block1: BlockOption | None,
        now: float,
    ) -> Action:
        """Block-wise, lookup and authorisation of a verified (or plain) request."""
        origin = (ex.remote, security_identity(binding))
        watched = _watched(plain.options)
        if watched:
            cached = self._block2.cached(plain, origin, now)
            if cached is not None:
                return self._answer(ex, plain, cached, binding)
        block1 = None
        whole = plain
        if watched and _N.BLOCK1 in plain.options:
            b1 = self._block1.feed(plain, origin, now)
            if b1.complete is None:
                return self._answer(ex, plain, b1.response, binding)
            whole, block1 = b1.complete, b1.final_block
        opts = whole.options
        resource = self.site.lookup(opts.uri_path) if self.site is not None else None
        if resource is None:
            response = error_response(Code.NOT_FOUND)
        elif resource.protection is not None and binding is None:
            # Silence for multicast (error responses are suppressed there): no amplification.
            response = error_response(Code.UNAUTHORIZED, "Security context required")
            answered = not suppressed(whole, response, ex.multicast)
            self._reject(ex, whole, "unprotected", "/".join(opts.uri_path), answered)
        elif resource.protection is not None and not resource.protection.accepts(binding):
            response = error_response(Code.UNAUTHORIZED, "Not authorized for this resource")
            answered = not suppressed(whole, response, ex.multicast)
            # what the outer OSCORE option claims: the last block of an outer Block1 body
            # carries the same option as the reassembled request
            self._reject(ex, ex.request, "not-authorized", "/".join(opts.uri_path), answered)
        else:
            safe = whole.code in _SAFE_METHODS
            b2 = opts.block2 if watched else None
            if b2 is not None and b2.num > 0 and not safe:
                # A later block of a response we no longer hold: re-running POST is not safe.
                response = error_response(Code.REQUEST_ENTITY_INCOMPLETE, "representation expired")
            else:
                req = whole
                if watched and (b2 is not None or _N.SIZE2 in opts):
                    req = clone(whole)
                    req.options.remove(_N.BLOCK2)
                    req.options.remove(_N.SIZE2)
                obs = opts.observe if safe and watched else None
                if obs == 1 or (obs is not None and not resource.observable):
                    self.end_observation((ex.remote, whole.token), "deregistered")
                return Render(ex, resource, req, whole, binding, origin, block1, outer_block1, obs)
        return self._final(ex, whole, response, binding, origin, block1, outer_block1, now)

    # --- after the resource ----------------------------------------------------------------

    def rendered(self, step: Render, response: object, now: float) -> Respond | Drop:
        """The answer built from what the resource returned (raises ``TypeError`` if that is
        not a :class:`~grouposcore.coap.Message`)."""
        if not isinstance(response, Message):
            raise TypeError(f"{step.resource!r} returned {response!r}, not a Message")
        resource, ex, whole = step.resource, step.exchange, step.whole
        response = response.copy()
        response.options.remove(_N.OBSERVE)
        if step.observe == 0 and resource.observable:
            b2 = whole.options.block2
            if b2 is None or b2.num == 0:
                if 64 <= response.code < 96:
                    self._register(resource, ex, step.request, step.binding, now)
                    response.options.observe = resource.next_observe_number()
                else:
                    self.end_observation((ex.remote, whole.token), "error")
        return self._final(
            ex, whole, response, step.binding, step.origin, step.block1, step.outer_block1, now
        )

    def _final(
        self,
        ex: ServerExchange,
        whole: Message,
        response: Message,
        binding: Any,
        origin: Hashable,
        block1: BlockOption | None,
        outer_block1: BlockOption | None,
        now: float,
    ) -> Respond | Drop:
        """Echo Block1, slice the response for Block2, and answer."""
        if block1 is not None:
            response.options.block1 = block1
        response = self._block2.slice(whole, response, origin, now)
        return self._answer(ex, whole, response, binding, outer_block1=outer_block1)

    def failed(self, ex: ServerExchange, request: Message, binding: Any) -> Respond | Drop:
        """The 5.00 for a request whose handling broke (protected if it verified)."""
        group = binding is None and may_be_group_request(ex.request, ex.multicast)
        return self._answer(
            ex, request, error_response(Code.INTERNAL_SERVER_ERROR), binding, group=group
        )

    def _answer(
        self,
        ex: ServerExchange,
        request: Message,
        response: Message | None,
        binding: Any,
        *,
        always: bool = False,
        group: bool = False,
        outer_block1: BlockOption | None = None,
    ) -> Respond | Drop:
        """Suppress (RFC 7967, RFC 7252 §8.2) or answer, after the leisure for multicast.

        ``group``: the request is or may be a group request though it came by unicast, so
        error responses are suppressed as for a multicast request.
        """
        if response is None:
            return Drop(ex, "silent")
        if not always and suppressed(request, response, ex.multicast or group):
            return Drop(ex, "suppressed")
        delay = multicast_delay(self.leisure, self.rng) if ex.multicast else 0.0
        return Respond(ex, response, request, binding, outer_block1, delay)

    def seal(self, action: Respond) -> Message | None:
        """The response to send for ``action``: protected if the request was; ``None`` if it
        cannot be (e.g. a silent server, a Monitor, never answers)."""
        response = action.message
        binding = action.binding
        if binding is not None and self.security is not None:
            try:
                response = self.security.protect_response(action.message, binding)
            except ModeNotSupported as e:
                log.debug("not answering %s: %s", action.exchange.remote, e)
                return None
            except GroupOscoreError as e:
                log.warning("cannot protect response to %s: %s", action.exchange.remote, e)
                return None
        if action.outer_block1 is not None:
            response.options.block1 = action.outer_block1
        return response

    def _reject(
        self, ex: ServerExchange, request: Message, reason: str, detail: str, answered: bool
    ) -> None:
        """Count and log one refused request (what its outer OSCORE option claims)."""
        self.rejections.record(self._rejection(ex, request, reason, detail, answered))

    def _rejection(
        self, ex: ServerExchange, request: Message, reason: str, detail: str, answered: bool
    ) -> Rejection:
        contexts = getattr(self.security, "contexts", None) or ()
        mode, kid = request_mode(request, (getattr(c, "gid", None) for c in contexts))
        return Rejection(reason, ex.remote, kid, mode, detail, answered)

    def declined(self, park: Park) -> Respond | Drop:
        """What to do with a request the endpoint does not hold after all (too many held,
        or held once already): it is refused now, and counted as such."""
        self.rejections.record(park.rejection)
        return park.otherwise

    # --- Observe ---------------------------------------------------------------------------

    def _register(
        self, resource: Resource, ex: ServerExchange, request: Message, binding: Any, now: float
    ) -> None:
        key = (ex.remote, request.token)
        old = self._observations.pop(key, None)
        if old is not None:
            old[0].remove_observer(key)
        observer = Observer(ex.remote, request.token, request, binding, ex.multicast, last_con=now)
        notify = self._notify
        observer.trigger = lambda o: notify(resource, o)
        resource.add_observer(observer)
        self._observations[key] = (resource, observer)

    def end_observation(self, key: tuple[Address, bytes], why: str) -> bool:
        """End the registration ``key`` (peer, token); whether there was one."""
        entry = self._observations.pop(key, None)
        if entry is None:
            return False
        entry[0].remove_observer(key)
        log.debug("observation %s ended: %s", key, why)
        return True

    def is_current(self, observer: Observer) -> bool:
        """Whether ``observer`` is still the registration under its key."""
        entry = self._observations.get(observer.key)
        return entry is not None and entry[1] is observer

    def notification(
        self, resource: Resource, observer: Observer, response: Message, now: float
    ) -> Message | None:
        """The notification to send to ``observer`` for a fresh rendering of ``resource``;
        ``None`` if the observation ended meanwhile or cannot be protected (then it ends)."""
        if not self.is_current(observer):
            return None
        key = observer.key
        response = response.copy()
        if 64 <= response.code < 96:
            response.options.observe = resource.next_observe_number()
            mtype = observer.notification_type(resource.notification_policy, now)
        else:
            response.options.remove(_N.OBSERVE)
            self.end_observation(key, "error notification")
            mtype = Type.CON
        origin = (observer.remote, security_identity(observer.binding))
        # slice returns the copy above or a new message: ours to change
        msg = self._block2.slice(observer.request, response, origin, now)
        msg.token, msg.mtype = observer.token, mtype
        if observer.binding is not None and self.security is not None:
            try:
                msg = self.security.protect_response(msg, observer.binding)
            except GroupOscoreError as e:
                log.warning("cannot protect notification: %s", e)
                self.end_observation(key, "protection failed")
                return None
            if msg.token != observer.token or msg.mtype != mtype:
                msg = msg.copy(token=observer.token, mtype=mtype)
        return msg
