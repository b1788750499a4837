"""An in-memory link between two sans-I/O message layers on one fake clock.

Loss tests need no UDP sockets and no real time: :class:`Pump` carries every
:class:`~grouposcore.transport.messagelayer.Transmit` of one layer to the other after a
fixed latency, dropping and duplicating datagrams deterministically (listed indexes per
direction, and/or probabilities drawn from a seeded RNG), runs both layers' timers, and
plays a server application that answers each request it is handed (at once, after a
delay, or never). Everything that happened is recorded for the test to inspect.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from grouposcore.coap import Code, Message
from grouposcore.transport.messagelayer import (
    Address,
    MessageLayer,
    Output,
    RequestReceived,
    ServerExchange,
    Transmit,
)
from grouposcore.transport.params import TransmissionParams

CLIENT: Address = ("192.0.2.1", 5683)
SERVER: Address = ("192.0.2.2", 5683)

#: What the server application answers to a request: a response (None: no response) and
#: how long it takes (None: it never answers).
Answer = Callable[[ServerExchange], tuple[Message | None, float | None]]


@dataclass
class Side:
    """One endpoint: its message layer and what came out of it."""

    name: str
    address: Address
    layer: MessageLayer
    #: every event the layer emitted, with the time
    events: list[tuple[float, Output]] = field(default_factory=list)
    #: every datagram the layer sent (before the link decided its fate)
    sent: list[Transmit] = field(default_factory=list)

    def of(self, kind: type) -> list[Output]:
        """The events of one type, in order."""
        return [e for _, e in self.events if isinstance(e, kind)]


class Pump:
    """Two message layers (``client`` and ``server``) joined by a lossy in-memory link.

    ``drop`` and ``duplicate`` map a direction ("to_server", "to_client") to the indexes
    (0-based, counted per direction) of the datagrams to drop or deliver twice; ``loss``
    and ``dup`` are probabilities drawn from ``random.Random(seed)``, so a seed always
    gives the same run. ``answer`` plays the server application (default: 2.05 at once).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        params: TransmissionParams | None = None,
        latency: float = 0.01,
        loss: float = 0.0,
        dup: float = 0.0,
        drop: dict[str, tuple[int, ...]] | None = None,
        duplicate: dict[str, tuple[int, ...]] | None = None,
        answer: Answer | None = None,
    ) -> None:
        self.params = params or TransmissionParams()
        self.client = Side("client", CLIENT, MessageLayer(self.params, rng=random.Random(seed)))
        self.server = Side("server", SERVER, MessageLayer(self.params, rng=random.Random(seed + 1)))
        self.now = 0.0
        self.latency = latency
        self.rng = random.Random(seed)
        self.loss, self.dup = loss, dup
        self.drop = {k: set(v) for k, v in (drop or {}).items()}
        self.duplicate = {k: set(v) for k, v in (duplicate or {}).items()}
        self.answer = answer or (lambda ex: (Message(Code.CONTENT, payload=b"ok"), 0.0))
        self.counts = {"to_server": 0, "to_client": 0}
        self.dropped: list[Transmit] = []
        self.duplicated: list[Transmit] = []
        self._seq = 0
        #: (time, seq, action) — datagrams in flight and delayed answers
        self._agenda: list[tuple[float, int, Callable[[], None]]] = []

    # --- driving ----------------------------------------------------------------------

    def request(self, message: Message) -> Transmit:
        """The client sends ``message`` (CON or NON) to the server and awaits its token."""
        self.client.layer.expect(message.token, SERVER)
        [tx] = self.client.layer.send(message, SERVER, self.now)
        self._emit(self.client, [tx])
        assert isinstance(tx, Transmit)
        return tx

    def run(self, until: float) -> None:
        """Advance the clock to ``until``, delivering datagrams and running timers in order."""
        while True:
            when = self._next()
            if when is None or when > until:
                break
            self.now = max(self.now, when)
            if self._agenda and self._agenda[0][0] <= self.now:
                _, _, action = heapq.heappop(self._agenda)
                action()
            for side in (self.client, self.server):
                due = side.layer.next_deadline()
                if due is not None and due <= self.now:
                    self._emit(side, side.layer.tick(self.now))
        self.now = until

    # --- internals --------------------------------------------------------------------

    def _next(self) -> float | None:
        times = [
            t
            for t in (self.client.layer.next_deadline(), self.server.layer.next_deadline())
            if t is not None
        ]
        if self._agenda:
            times.append(self._agenda[0][0])
        return min(times, default=None)

    def _at(self, when: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._agenda, (when, self._seq, action))

    def _emit(self, side: Side, out: list[Output]) -> None:
        for o in out:
            if isinstance(o, Transmit):
                side.sent.append(o)
                self._transmit(side, o)
            else:
                side.events.append((self.now, o))
                if side is self.server and isinstance(o, RequestReceived):
                    self._serve(o.exchange)

    def _transmit(self, side: Side, tx: Transmit) -> None:
        direction = "to_server" if side is self.client else "to_client"
        index = self.counts[direction]
        self.counts[direction] += 1
        target = self.server if side is self.client else self.client
        if index in self.drop.get(direction, ()) or self.rng.random() < self.loss:
            self.dropped.append(tx)
            return
        copies = 1
        if index in self.duplicate.get(direction, ()) or self.rng.random() < self.dup:
            self.duplicated.append(tx)
            copies = 2
        for i in range(copies):
            self._at(self.now + self.latency * (1 + i), self._deliver(target, side, tx.data))

    def _deliver(self, target: Side, source: Side, data: bytes) -> Callable[[], None]:
        def deliver() -> None:
            self._emit(target, target.layer.receive(data, source.address, self.now))

        return deliver

    def _serve(self, ex: ServerExchange) -> None:
        response, delay = self.answer(ex)
        if delay is None:
            return

        def respond() -> None:
            self._emit(self.server, self.server.layer.respond(ex, response, self.now))

        if delay <= 0:
            respond()
        else:
            self._at(self.now + delay, respond)
