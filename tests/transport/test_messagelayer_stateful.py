"""Stateful property test of the sans-I/O message layer.

Hypothesis drives one :class:`MessageLayer` with random datagrams from two peers (CON, NON,
ACK and RST; requests, responses, pings, duplicates and retransmissions of what a peer sent
before), with sends and answers of its own and with clock advances that run the timers.
After every step it checks what RFC 7252 promises and what the layer's bookkeeping needs:

* a request reaches the application at most once per (peer, MID) within the lifetime of
  its duplicate-cache entry (EXCHANGE_LIFETIME for CON, NON_LIFETIME for NON, §4.5);
* the timer heap matches the live state: every entry (a CON awaiting its ACK, a cache
  entry, a NON we sent, a request waiting for its empty ACK) has exactly one live timer
  at the right time, no live timer is left without its entry, and nothing due is left
  unrun after a clock advance;
* each message of ours ends at most once (confirmed, rejected or given up).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from grouposcore.coap import Code, Message, Options, Type
from grouposcore.transport.messagelayer import (
    DeliveryConfirmed,
    ExchangeState,
    MessageLayer,
    Output,
    Rejected,
    RequestReceived,
    ServerExchange,
    TimerKind,
    TransmissionFailed,
    Transmit,
)
from grouposcore.transport.params import TransmissionParams

PEERS = (("192.0.2.1", 5683), ("192.0.2.2", 5683))
#: a few MIDs per peer, so that random requests collide with earlier ones
PEER_MIDS = st.integers(min_value=0, max_value=5)
#: clock steps: shorter than, around and longer than the protocol's time constants
STEPS = st.sampled_from([0.05, 0.2, 1.0, 3.0, 20.0, 100.0, 150.0, 250.0])


def _options() -> Options:
    opts = Options()
    opts.uri_path = ["x"]
    return opts


class MessageLayerMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16))
    def setup(self, seed: int) -> None:
        self.params = TransmissionParams()
        self.ml = MessageLayer(self.params, rng=random.Random(seed))
        self.now = 0.0
        #: (peer, MID) -> (time, lifetime) of the last delivery of a request
        self.delivered: dict[tuple[object, int], tuple[float, float]] = {}
        #: (peer, MID) of a unicast CON request -> when it arrived (its empty ACK is due later)
        self.arrived: dict[tuple[object, int], float] = {}
        self.exchanges: list[ServerExchange] = []
        #: datagrams the peers sent, for retransmissions and duplicates
        self.from_peers: list[tuple[bytes, tuple[str, int]]] = []
        #: (peer, MID, token, type) of the CONs and NONs we sent
        self.ours: list[tuple[tuple[str, int], int, bytes, Type]] = []
        self.ended: Counter[tuple[object, int]] = Counter()
        self.tokens: list[bytes] = []

    # --- what comes out ---------------------------------------------------------------

    def _take(self, out: list[Output]) -> None:
        for o in out:
            if isinstance(o, RequestReceived):
                ex = o.exchange
                key = (ex.remote, ex.request.mid)
                last = self.delivered.get(key)
                assert last is None or self.now >= last[0] + last[1], (
                    f"request {key} delivered twice within its lifetime"
                )
                con = ex.request.mtype == Type.CON
                lifetime = self.params.exchange_lifetime if con else self.params.non_lifetime
                self.delivered[key] = (self.now, lifetime)
                if con and not ex.multicast:
                    self.arrived[key] = self.now
                self.exchanges.append(ex)
            elif isinstance(o, Transmit) and o.message.mtype in (Type.CON, Type.NON):
                m = o.message
                if (o.remote, m.mid, m.token, m.mtype) not in self.ours:
                    self.ours.append((o.remote, m.mid, m.token, m.mtype))
            elif isinstance(o, DeliveryConfirmed | Rejected | TransmissionFailed):
                self.ended[o.remote, o.mid] += 1

    def _peer_sends(self, msg: Message, peer: tuple[str, int], multicast: bool = False) -> None:
        data = msg.encode()
        self.from_peers.append((data, peer))
        self._take(self.ml.receive(data, peer, self.now, multicast=multicast))

    # --- rules ------------------------------------------------------------------------

    @rule(
        peer=st.sampled_from(PEERS),
        mid=PEER_MIDS,
        con=st.booleans(),
        multicast=st.booleans(),
        token=st.binary(max_size=2),
    )
    def peer_request(
        self, peer: tuple[str, int], mid: int, con: bool, multicast: bool, token: bytes
    ) -> None:
        mtype = Type.CON if con else Type.NON
        self._peer_sends(Message(Code.GET, mtype, mid, token, _options()), peer, multicast)

    @rule(peer=st.sampled_from(PEERS), mid=PEER_MIDS)
    def peer_ping(self, peer: tuple[str, int], mid: int) -> None:
        self._peer_sends(Message(Code.EMPTY, Type.CON, mid), peer)

    @precondition(lambda self: self.from_peers)
    @rule(pick=st.integers(0, 1000))
    def peer_retransmits(self, pick: int) -> None:
        data, peer = self.from_peers[pick % len(self.from_peers)]
        self._take(self.ml.receive(data, peer, self.now))

    @rule(peer=st.sampled_from(PEERS), con=st.booleans())
    def we_send(self, peer: tuple[str, int], con: bool) -> None:
        token = self.ml.new_token()
        self.ml.expect(token, peer)
        self.tokens.append(token)
        mtype = Type.CON if con else Type.NON
        self._take(self.ml.send(Message(Code.GET, mtype, 0, token, _options()), peer, self.now))

    @precondition(lambda self: self.ours)
    @rule(
        pick=st.integers(0, 1000),
        how=st.sampled_from(["empty_ack", "piggybacked", "rst", "separate_con", "separate_non"]),
        mid=PEER_MIDS,
    )
    def peer_answers(self, pick: int, how: str, mid: int) -> None:
        peer, our_mid, token, _ = self.ours[pick % len(self.ours)]
        if how == "empty_ack":
            msg = Message(Code.EMPTY, Type.ACK, our_mid)
        elif how == "piggybacked":
            msg = Message(Code.CONTENT, Type.ACK, our_mid, token, payload=b"p")
        elif how == "rst":
            msg = Message(Code.EMPTY, Type.RST, our_mid)
        else:
            mtype = Type.CON if how == "separate_con" else Type.NON
            msg = Message(Code.CONTENT, mtype, 100 + mid, token, payload=b"s")
        self._peer_sends(msg, peer)

    @precondition(lambda self: self.exchanges)
    @rule(pick=st.integers(0, 1000), answer=st.booleans())
    def we_respond(self, pick: int, answer: bool) -> None:
        ex = self.exchanges[pick % len(self.exchanges)]
        response = Message(Code.CONTENT, payload=b"r") if answer else None
        self._take(self.ml.respond(ex, response, self.now))
        assert ex.state is ExchangeState.RESPONDED

    @precondition(lambda self: self.tokens)
    @rule(pick=st.integers(0, 1000))
    def we_forget(self, pick: int) -> None:
        self.ml.forget(self.tokens[pick % len(self.tokens)])

    @precondition(lambda self: self.ours)
    @rule(pick=st.integers(0, 1000))
    def we_cancel(self, pick: int) -> None:
        peer, mid, _, _ = self.ours[pick % len(self.ours)]
        self.ml.cancel(peer, mid)

    @rule(step=STEPS)
    def time_passes(self, step: float) -> None:
        target = self.now + step
        while (due := self.ml.next_deadline()) is not None and due <= target:
            assert due >= self.now, "a timer was left unrun in the past"
            self.now = due
            self._take(self.ml.tick(due))
        self.now = target
        due = self.ml.next_deadline()
        assert due is None or due > self.now

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def timers_match_live_state(self) -> None:
        ml = self.ml
        expected: Counter[tuple[TimerKind, object, float]] = Counter()
        for key, p in ml._outgoing.items():
            expected[TimerKind.RETRANSMIT, key, p.deadline] += 1
        for key, s in ml._seen.items():
            expected[TimerKind.SEEN, key, s.expires] += 1
            ex = s.exchange
            if (
                ex is not None
                and ex.state is ExchangeState.PENDING
                and ex.confirmable
                and not ex.multicast
            ):
                expected[
                    TimerKind.EMPTY_ACK, key, self.arrived[key] + self.params.empty_ack_delay
                ] += 1
        for key, (_, expires) in ml._sent_non.items():
            expected[TimerKind.SENT_NON, key, expires] += 1
        live = Counter((t.kind, t.key, t.when) for t in ml._timers if ml._timer_live(t))
        assert live == expected
        whens = [when for _, _, when in expected]
        assert ml.next_deadline() == (min(whens) if whens else None)

    @invariant()
    def each_message_of_ours_ends_at_most_once(self) -> None:
        assert all(n == 1 for n in self.ended.values()), self.ended

    @invariant()
    def exchange_flags_agree_with_state(self) -> None:
        for ex in self.exchanges:
            assert ex.responded == (ex.state is ExchangeState.RESPONDED)
            assert ex.acked == (ex.state is ExchangeState.ACKED)
            if ex.acked:
                assert ex.confirmable and not ex.multicast


MessageLayerMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None
)
TestMessageLayerStateful = MessageLayerMachine.TestCase
