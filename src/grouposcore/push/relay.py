"""A lossy multicast fan-out on loopback, for tests and demos of firmware push under loss.

Real multicast on one host delivers every datagram to every member or to none, so it cannot
show per-member loss. The relay sits in between, inside the same (network-namespaced)
loopback:

* it joins the group on ``(group, port)``: the sender multicasts there as usual;
* member *i* listens on its own port ``P_i`` (bound to the wildcard address and joined to
  the group), and the relay re-sends each datagram to ``(group, P_i)`` from a socket
  ``S_i`` of its own, so the member still receives it as multicast (it answers with
  leisure, suppresses errors);
* the member answers to ``S_i``; the relay passes that on to the sender from ``S_i``, so the
  sender sees ``S_i`` as the member's address, and its unicast to ``S_i`` (repairs) is
  passed to ``127.0.0.1:P_i``.

Every forwarded datagram, either way, is dropped with probability ``loss`` drawn from a
``random.Random(seed)``; ``burst=(first, count)`` drops ``count`` datagrams in a row from the
``first``-th on (an outage); ``mangle`` may rewrite group datagrams per member (tamper tests).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable

from grouposcore.transport.sockets import UdpSocket

__all__ = ["LossyFanout"]

#: (member, datagram number, datagram) -> what that member gets instead: the datagram, a
#: changed one, several (injected ones first), or None
Mangle = Callable[[int, int, bytes], bytes | list[bytes] | None]


class LossyFanout:
    """The relay; create with :meth:`start`, stop with :meth:`close`."""

    def __init__(
        self,
        group: tuple[str, int],
        member_ports: Iterable[int],
        *,
        loss: float = 0.0,
        seed: int = 0,
        interface: str = "lo",
        host: str = "127.0.0.1",
        mangle: Mangle | None = None,
        burst: tuple[int, int] | None = None,
    ) -> None:
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.group = group
        self.member_ports = list(member_ports)
        self.loss = loss
        self.rng = random.Random(seed)
        self.interface = interface
        self.host = host
        self.mangle = mangle
        self.burst = burst
        self.datagrams = 0
        self.forwarded = 0
        self.dropped = 0
        self.group_datagrams = 0
        self._sender: tuple[str, int] | None = None
        self._group_sock: UdpSocket | None = None
        self._member_socks: list[UdpSocket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    async def start(
        cls,
        group: tuple[str, int],
        member_ports: Iterable[int],
        *,
        loss: float = 0.0,
        seed: int = 0,
        interface: str = "lo",
        host: str = "127.0.0.1",
        mangle: Mangle | None = None,
        burst: tuple[int, int] | None = None,
    ) -> LossyFanout:
        """A relay with the constructor's arguments, its sockets open."""
        relay = cls(group, member_ports, loss=loss, seed=seed, interface=interface, host=host,
                    mangle=mangle, burst=burst)  # fmt: skip
        relay._open()
        return relay

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``S_i`` of every member, as the sender will see them."""
        return [s.address for s in self._member_socks]

    def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        sock = UdpSocket(("0.0.0.0", self.group[1]), reuse_address=True)
        sock.join(self.group[0], self.interface)
        self._group_sock = sock
        self._loop.add_reader(sock.fileno(), self._on_group)
        for i, _port in enumerate(self.member_ports):
            s = UdpSocket((self.host, 0))
            s.set_multicast_interface(self.group[0], self.interface)
            self._member_socks.append(s)
            self._loop.add_reader(s.fileno(), self._on_member_socket, i)

    def _send(self, sock: UdpSocket, data: bytes, remote: tuple[str, int]) -> None:
        number = self.datagrams
        self.datagrams += 1
        outage = self.burst is not None and 0 <= number - self.burst[0] < self.burst[1]
        if outage or (self.loss and self.rng.random() < self.loss):
            self.dropped += 1
            return
        self.forwarded += 1
        sock.send(data, remote)

    def _on_group(self) -> None:
        assert self._group_sock is not None
        while (dgram := self._group_sock.receive()) is not None:
            self._sender = dgram.remote
            number = self.group_datagrams
            self.group_datagrams += 1
            for i, port in enumerate(self.member_ports):
                data: bytes | list[bytes] | None = dgram.data
                if self.mangle is not None:
                    data = self.mangle(i, number, dgram.data)
                for one in [data] if isinstance(data, bytes) else data or []:
                    self._send(self._member_socks[i], one, (self.group[0], port))

    def _on_member_socket(self, i: int) -> None:
        sock = self._member_socks[i]
        member = (self.host, self.member_ports[i])
        while (dgram := sock.receive()) is not None:
            if dgram.remote == member:
                if self._sender is not None:
                    self._send(sock, dgram.data, self._sender)
            else:
                self._sender = dgram.remote
                self._send(sock, dgram.data, member)

    async def close(self) -> None:
        loop = self._loop
        for s in [self._group_sock, *self._member_socks]:
            if s is not None:
                if loop is not None:
                    loop.remove_reader(s.fileno())
                s.close()
        self._group_sock = None
        self._member_socks = []
