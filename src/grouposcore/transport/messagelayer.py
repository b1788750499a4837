"""Sans-I/O CoAP message layer (RFC 7252 §4): message IDs, reliability, deduplication.

The class never reads a clock, a socket or a global random source: every call takes the
current time, and every effect comes back as a list of outputs (datagrams to send and
events for the layers above). The asyncio endpoint feeds datagrams and timer ticks in and
carries the outputs out, so all protocol decisions here can be tested with a fake clock.
The outputs and the state of a received request are defined in
:mod:`grouposcore.transport.events` (and re-exported here).

What it decides:

* message IDs (one 16-bit counter, random start) and tokens (random, 8 bytes by default);
* CON retransmission with exponential back-off and the give-up point (§4.2);
* matching ACK/RST to the CON (or NON) they answer, empty-message ping → RST;
* piggybacked versus separate responses: a CON request is answered in its ACK if the
  application responds within ``empty_ack_delay``, otherwise an empty ACK goes out and the
  response follows as its own CON, which the client acknowledges;
* duplicate detection (§4.5): a duplicate CON within EXCHANGE_LIFETIME gets the cached
  ACK/RST again and never reaches the application a second time, a duplicate NON within
  NON_LIFETIME is ignored (except a NON request under OSCORE: its replay window, keyed by
  what the sender signed, decides after verification);
* response matching by token: a response nobody waits for is rejected with RST (which
  also ends an Observe registration on the server, RFC 7641 §3.6).
"""

from __future__ import annotations

import heapq
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import assert_never

from grouposcore.coap import Code, Message, OptionNumber, Type
from grouposcore.errors import CoapDecodeError
from grouposcore.transport.events import (
    Address,
    DeliveryConfirmed,
    Event,
    ExchangeInput,
    ExchangeState,
    Output,
    Rejected,
    RequestReceived,
    ResponseReceived,
    ServerExchange,
    TransmissionFailed,
    Transmit,
    exchange_transition,
)
from grouposcore.transport.params import TransmissionParams

# The events are defined in transport/events.py and re-exported here, where the layer that
# emits them is.
__all__ = [
    "Address",
    "DeliveryConfirmed",
    "Event",
    "ExchangeInput",
    "ExchangeState",
    "MessageLayer",
    "Output",
    "Rejected",
    "RequestReceived",
    "ResponseReceived",
    "ServerExchange",
    "TimerKind",
    "TransmissionFailed",
    "Transmit",
    "exchange_transition",
]

_CON, _NON, _ACK, _RST = Type.CON, Type.NON, Type.ACK, Type.RST
#: the OSCORE option number, read from every NON request
_OSCORE = int(OptionNumber.OSCORE)


@dataclass
class _Outgoing:
    """A CON of ours awaiting its ACK."""

    message: Message
    data: bytes
    remote: Address
    timeout: float
    deadline: float
    retransmissions: int = 0


@dataclass
class _Seen:
    """Duplicate-cache entry for a message ID received from a peer."""

    expires: float
    reply: Transmit | None = None
    exchange: ServerExchange | None = None


class TimerKind(Enum):
    """What a scheduled timer does when it fires (and which table it belongs to)."""

    #: Retransmit a CON of ours or give up on it (``_outgoing``).
    RETRANSMIT = "retransmit"
    #: Acknowledge a received CON the application has not answered yet (``_seen``).
    EMPTY_ACK = "empty_ack"
    #: Forget a duplicate-cache entry (``_seen``).
    SEEN = "seen"
    #: Forget a NON we sent, after which an RST for it no longer matches (``_sent_non``).
    SENT_NON = "sent_non"


@dataclass(order=True)
class _Timer:
    """A heap entry. Timers are never removed early: a timer whose entry is gone or was
    rescheduled is dead (see ``MessageLayer._timer_live``) and skipped."""

    when: float
    seq: int
    kind: TimerKind = field(compare=False)
    key: tuple[Address, int] = field(compare=False)


class MessageLayer:
    """The message layer of one CoAP endpoint, free of I/O (see the module docstring)."""

    def __init__(
        self,
        params: TransmissionParams | None = None,
        *,
        rng: random.Random | None = None,
        token_length: int = 8,
        token_source: Callable[[int], bytes] | None = None,
    ) -> None:
        if not 0 <= token_length <= 8:
            raise ValueError("token_length must be 0..8")
        self.params = params or TransmissionParams()
        self._rng = rng or random.Random()
        self._token_length = token_length
        # Tokens should be unguessable (RFC 9175 §4.2), so by default they come from the OS,
        # not from the (possibly seeded) rng.
        self._token_source = token_source or (
            (lambda n: bytes(self._rng.getrandbits(8) for _ in range(n))) if rng else os.urandom
        )
        self._next_mid = self._rng.randrange(0x10000)
        self._outgoing: dict[tuple[Address, int], _Outgoing] = {}
        self._sent_non: dict[tuple[Address, int], tuple[bytes, float]] = {}
        self._seen: dict[tuple[Address, int], _Seen] = {}
        self._tokens: dict[bytes, Address | None] = {}
        #: awaited token -> (peer, our MID, hash of the piggybacked response that completed
        #: that CON): a *different* response in a later ACK for that MID is still delivered.
        #: Dropped with the token, so it is bounded by the exchanges in progress.
        self._answered: dict[bytes, tuple[Address, int, int]] = {}
        self._timers: list[_Timer] = []
        self._seq = 0

    # --- identifiers ---------------------------------------------------------------------

    def new_mid(self) -> int:
        mid = self._next_mid
        self._next_mid = (mid + 1) & 0xFFFF
        return mid

    def new_token(self) -> bytes:
        """A random token not currently awaited (length ``token_length``)."""
        for _ in range(64):
            token = self._token_source(self._token_length)
            if token not in self._tokens:
                return token
        raise RuntimeError("could not find a free token")

    def expect(self, token: bytes, remote: Address | None) -> None:
        """Accept responses carrying ``token`` from ``remote`` (``None``: from anyone)."""
        self._tokens[token] = remote

    def forget(self, token: bytes) -> None:
        """Stop accepting responses for ``token``; later ones are rejected with RST."""
        self._tokens.pop(token, None)
        self._answered.pop(token, None)

    def expecting(self, token: bytes) -> bool:
        return token in self._tokens

    # --- sending -------------------------------------------------------------------------

    def send(self, message: Message, remote: Address, now: float) -> list[Output]:
        """Send a new CON or NON (request, notification or ping) with a fresh message ID.

        Returns the transmission; its ``message.mid`` identifies it in later events.
        """
        if message.mtype not in (_CON, _NON):
            raise ValueError("send() takes CON or NON messages; ACK/RST come from respond()")
        msg = message.copy()
        msg.mid, msg.remote = self.new_mid(), remote
        return self._send_copy(msg, remote, now)

    def _send_copy(self, msg: Message, remote: Address, now: float) -> list[Output]:
        """:meth:`send` for a copy that is ours already, its message ID and remote set."""
        tx = self._transmit(msg, remote)
        key = (remote, msg.mid)
        if msg.mtype == _CON:
            timeout = self._rng.uniform(
                self.params.ack_timeout, self.params.ack_timeout * self.params.ack_random_factor
            )
            self._outgoing[key] = _Outgoing(msg, tx.data, remote, timeout, now + timeout)
            self._schedule(now + timeout, TimerKind.RETRANSMIT, key)
        else:
            expires = now + self.params.non_lifetime
            self._sent_non[key] = (msg.token, expires)
            self._schedule(expires, TimerKind.SENT_NON, key)
        return [tx]

    def cancel(self, remote: Address, mid: int) -> None:
        """Stop retransmitting a CON (the application lost interest)."""
        self._outgoing.pop((remote, mid), None)

    def respond(
        self, exchange: ServerExchange, response: Message | None, now: float
    ) -> list[Output]:
        """Answer a received request; ``None`` means no response (only the ACK if one is due).

        The type and message ID are chosen here: piggybacked ACK while the CON is not yet
        acknowledged, a CON of its own after an empty ACK, NON for NON or multicast requests.
        """
        before = exchange.state
        if before is ExchangeState.RESPONDED:
            return []
        exchange._advance(ExchangeInput.RESPOND)
        key = (exchange.remote, exchange.request.mid)
        seen = self._seen.get(key)
        unicast_con = exchange.confirmable and not exchange.multicast
        if response is None:
            if unicast_con and before is ExchangeState.PENDING:
                return [self._empty_ack(exchange, seen)]
            return []
        token = exchange.request.token
        if unicast_con and before is ExchangeState.PENDING:
            msg = response.copy()
            msg.mtype, msg.mid, msg.token = _ACK, exchange.request.mid, token
            tx = self._transmit(msg, exchange.remote)
            if seen is not None:
                seen.reply = tx
            return [tx]
        # After an empty ACK the response is a CON of its own; NON and multicast requests get
        # NON responses (RFC 7252 §5.2.3, §8.1).
        msg = response.copy()  # one copy, not a copy here and another in send()
        msg.mtype = _CON if unicast_con else _NON
        msg.token, msg.mid, msg.remote = token, self.new_mid(), exchange.remote
        return self._send_copy(msg, exchange.remote, now)

    # --- receiving -----------------------------------------------------------------------

    def receive(
        self, data: bytes, remote: Address, now: float, *, multicast: bool = False
    ) -> list[Output]:
        """Process one datagram from ``remote``; ``multicast``: it was sent to a group address."""
        try:
            msg = Message.decode(data)
        except CoapDecodeError:
            return self._reject_malformed(data, remote, multicast)
        msg.remote = remote
        if msg.mtype == _ACK or msg.mtype == _RST:
            if multicast:
                return []
            return self._receive_ack_rst(msg, remote, data)
        if msg.code == Code.EMPTY:
            # An empty CON is a ping (§4.3): answer RST. An empty NON is meaningless.
            if msg.mtype == _CON and not multicast:
                return [self._transmit(Message(Code.EMPTY, _RST, msg.mid), remote)]
            return []
        key = (remote, msg.mid)
        if msg.mtype == _NON and msg.is_request() and msg.options.get(_OSCORE) is not None:
            # Address and Message ID are not protected: spoofed junk with the next IDs would
            # make real requests look like duplicates. OSCORE deduplicates these after
            # verification, by (kid, Partial IV) in its replay window.
            return [RequestReceived(ServerExchange(msg, remote, multicast))]
        seen = self._seen.get(key)
        if seen is not None and seen.expires > now:
            return self._duplicate(msg, seen)
        if msg.is_request():
            return self._receive_request(msg, remote, now, multicast, key)
        if msg.is_response():
            return self._receive_response(msg, remote, now, key)
        # Reserved code classes (1, 6, 7): reject a CON, ignore a NON.
        if msg.mtype == _CON and not multicast:
            return [self._transmit(Message(Code.EMPTY, _RST, msg.mid), remote)]
        return []

    def _reject_malformed(self, data: bytes, remote: Address, multicast: bool) -> list[Output]:
        """RFC 7252 §4.2: a CON that cannot be parsed is rejected with RST if its ID is readable."""
        if multicast or len(data) < 4 or data[0] >> 6 != 1 or (data[0] >> 4) & 3 != _CON:
            return []
        mid = data[2] << 8 | data[3]
        return [self._transmit(Message(Code.EMPTY, _RST, mid), remote)]

    def _receive_ack_rst(self, msg: Message, remote: Address, data: bytes) -> list[Output]:
        key = (remote, msg.mid)
        out: list[Output] = []
        pending = self._outgoing.pop(key, None)
        if msg.mtype == _RST:
            if pending is not None:
                out.append(Rejected(remote, msg.mid, pending.message.token))
            else:
                sent = self._sent_non.pop(key, None)
                if sent is not None:
                    out.append(Rejected(remote, msg.mid, sent[0]))
            return out
        piggybacked = msg.code != Code.EMPTY and msg.is_response()
        if pending is None:
            # Late or stray ACK. One case still counts: another response for a CON whose
            # first piggybacked response may have been forged (only verification above can
            # tell) while its token is still awaited. An identical copy is a retransmitted
            # ACK and ignored.
            answered = self._answered.get(msg.token)
            if (
                piggybacked
                and answered is not None
                and answered[:2] == key
                and answered[2] != hash(data)
                and self._wanted(msg.token, remote)
            ):
                self._answered[msg.token] = (remote, msg.mid, hash(data))
                out.append(ResponseReceived(msg, remote))
            return out
        out.append(DeliveryConfirmed(remote, msg.mid, pending.message.token))
        if piggybacked and self._wanted(msg.token, remote):
            self._answered[msg.token] = (remote, msg.mid, hash(data))
            out.append(ResponseReceived(msg, remote))
        return out

    def _duplicate(self, msg: Message, seen: _Seen) -> list[Output]:
        if msg.mtype != _CON:
            return []
        if seen.reply is not None:
            return [seen.reply]
        ex = seen.exchange
        if (
            ex is not None
            and ex.state is ExchangeState.PENDING
            and ex.confirmable
            and not ex.multicast
        ):
            # The client retransmits, so the answer is slow: acknowledge now, respond later.
            # (A CON reusing the MID of a NON or multicast request is not its retransmission:
            # an ACK would acknowledge a request nobody will answer.)
            ex._advance(ExchangeInput.EMPTY_ACK)
            return [self._empty_ack(ex, seen)]
        return []

    def _receive_request(
        self, msg: Message, remote: Address, now: float, multicast: bool, key: tuple[Address, int]
    ) -> list[Output]:
        ex = ServerExchange(msg, remote, multicast)
        lifetime = self.params.exchange_lifetime if msg.mtype == _CON else self.params.non_lifetime
        self._remember(key, _Seen(now + lifetime, exchange=ex))
        if msg.mtype == _CON and not multicast:
            self._schedule(now + self.params.empty_ack_delay, TimerKind.EMPTY_ACK, key)
        return [RequestReceived(ex)]

    def _receive_response(
        self, msg: Message, remote: Address, now: float, key: tuple[Address, int]
    ) -> list[Output]:
        out: list[Output] = []
        wanted = self._wanted(msg.token, remote)
        if msg.mtype == _CON:
            reply = Message(Code.EMPTY, _ACK if wanted else _RST, msg.mid)
            tx = self._transmit(reply, remote)
            self._remember(key, _Seen(now + self.params.exchange_lifetime, reply=tx))
            out.append(tx)
        elif wanted:
            self._remember(key, _Seen(now + self.params.non_lifetime))
        else:
            # Unknown NON response (e.g. a notification nobody wants): RST ends it (RFC 7641).
            return [self._transmit(Message(Code.EMPTY, _RST, msg.mid), remote)]
        if wanted:
            # A separate response also proves our request arrived: stop retransmitting it.
            for okey, pending in list(self._outgoing.items()):
                if (
                    okey[0] == remote
                    and pending.message.token == msg.token
                    and (pending.message.is_request())
                ):
                    del self._outgoing[okey]
                    out.append(DeliveryConfirmed(remote, okey[1], msg.token))
            out.append(ResponseReceived(msg, remote))
        return out

    def _wanted(self, token: bytes, remote: Address) -> bool:
        if token not in self._tokens:
            return False
        expected = self._tokens[token]
        return expected is None or expected == remote

    # --- timers --------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work next (``None``: nothing scheduled)."""
        timers = self._timers
        while timers and not self._timer_live(timers[0]):
            heapq.heappop(timers)
        return timers[0].when if timers else None

    def tick(self, now: float) -> list[Output]:
        """Run every timer due at ``now``: retransmissions, give-ups, empty ACKs, expiry."""
        out: list[Output] = []
        timers = self._timers
        while timers and timers[0].when <= now:
            t = heapq.heappop(timers)
            if not self._timer_live(t):
                continue
            match t.kind:
                case TimerKind.RETRANSMIT:
                    out.extend(self._retransmit(t.key, now))
                case TimerKind.EMPTY_ACK:
                    seen = self._seen[t.key]
                    assert seen.exchange is not None  # a live EMPTY_ACK timer has one
                    seen.exchange._advance(ExchangeInput.EMPTY_ACK)
                    out.append(self._empty_ack(seen.exchange, seen))
                case TimerKind.SEEN:
                    del self._seen[t.key]
                case TimerKind.SENT_NON:
                    del self._sent_non[t.key]
                case _:
                    assert_never(t.kind)
        return out

    def _timer_live(self, t: _Timer) -> bool:
        """Whether ``t`` still has work: its entry exists and it was not rescheduled."""
        match t.kind:
            case TimerKind.RETRANSMIT:
                p = self._outgoing.get(t.key)
                return p is not None and p.deadline == t.when
            case TimerKind.SEEN:
                s = self._seen.get(t.key)
                return s is not None and s.expires == t.when
            case TimerKind.SENT_NON:
                n = self._sent_non.get(t.key)
                return n is not None and n[1] == t.when
            case TimerKind.EMPTY_ACK:
                s = self._seen.get(t.key)
                ex = s.exchange if s is not None else None
                return (
                    ex is not None
                    and ex.state is ExchangeState.PENDING
                    and ex.confirmable
                    and not ex.multicast
                )
            case _:
                assert_never(t.kind)

    def _retransmit(self, key: tuple[Address, int], now: float) -> list[Output]:
        p = self._outgoing[key]
        if p.retransmissions >= self.params.max_retransmit:
            del self._outgoing[key]
            return [TransmissionFailed(p.remote, p.message.mid, p.message.token)]
        p.retransmissions += 1
        p.timeout *= 2
        p.deadline = now + p.timeout
        self._schedule(p.deadline, TimerKind.RETRANSMIT, key)
        return [Transmit(p.data, p.remote, p.message)]

    # --- helpers -------------------------------------------------------------------------

    def _empty_ack(self, ex: ServerExchange, seen: _Seen | None) -> Transmit:
        """The empty ACK of ``ex`` (the caller has advanced its state), cached for duplicates."""
        tx = self._transmit(Message(Code.EMPTY, _ACK, ex.request.mid), ex.remote)
        if seen is not None:
            seen.reply = tx
        return tx

    def _remember(self, key: tuple[Address, int], seen: _Seen) -> None:
        self._seen[key] = seen
        self._schedule(seen.expires, TimerKind.SEEN, key)

    def _schedule(self, when: float, kind: TimerKind, key: tuple[Address, int]) -> None:
        self._seq += 1
        heapq.heappush(self._timers, _Timer(when, self._seq, kind, key))

    @staticmethod
    def _transmit(msg: Message, remote: Address) -> Transmit:
        msg.remote = remote
        return Transmit(msg.encode(), remote, msg)

    # --- introspection (tests, diagnostics) ----------------------------------------------

    def pending_confirmables(self) -> int:
        return len(self._outgoing)

    def cached_ids(self) -> int:
        return len(self._seen)
