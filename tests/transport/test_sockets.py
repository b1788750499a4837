"""Socket buffers: a client's receive buffer holds the burst of a large group's responses."""

from __future__ import annotations

import os
import socket
import time

import pytest

from grouposcore.transport import sockets
from grouposcore.transport.sockets import DEFAULT_RECEIVE_BUFFER, UdpSocket


def _rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


@pytest.mark.skipif(
    os.geteuid() != 0 and _rmem_max() < DEFAULT_RECEIVE_BUFFER,
    reason="net.core.rmem_max caps the buffer and only root may exceed it",
)
def test_udp_socket_buffer_holds_a_burst_of_500_responses() -> None:
    """500 small datagrams sent before the first is read all arrive (the system default,
    208 KiB on Linux, drops some: the responses of a 500-member group in one burst)."""
    rx = UdpSocket(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(500):
            tx.sendto(b"\x50\x45" + i.to_bytes(2, "big") + bytes(60), rx.address)
        got = set()
        while (dgram := rx.receive()) is not None:
            got.add(dgram.data[2:4])
        assert len(got) == 500
    finally:
        tx.close()
        rx.close()


def test_udp_socket_buffer_zero_keeps_the_system_default() -> None:
    rx = UdpSocket(("127.0.0.1", 0), receive_buffer=0, send_buffer=0)
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            assert rx.sock.getsockopt(socket.SOL_SOCKET, option) == plain.getsockopt(
                socket.SOL_SOCKET, option
            )
    finally:
        plain.close()
        rx.close()


def test_udp_socket_asks_for_the_requested_receive_buffer() -> None:
    size = 300_000
    capped = _rmem_max() < size and os.geteuid() != 0
    rx = UdpSocket(("127.0.0.1", 0), receive_buffer=size)
    try:
        granted = rx.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        assert capped or granted >= size  # Linux reports twice what was asked for
    finally:
        rx.close()


def test_dual_stack_socket_address_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-socket caches of peer addresses start over at their limit, and every
    datagram still carries its own sender's normalised address."""
    monkeypatch.setattr(sockets, "_CACHE_LIMIT", 3)
    rx = UdpSocket(("::", 0))
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    try:
        for tx in senders:
            tx.bind(("127.0.0.1", 0))
            tx.sendto(b"\x50\x45\x00\x01", ("127.0.0.1", rx.address[1]))
            dgram = None
            while dgram is None:
                dgram = rx.receive()
            assert dgram.remote == tx.getsockname()
            assert dgram.local == "127.0.0.1" and not dgram.multicast
            rx.send(b"back", dgram.remote)
            assert tx.recv(16) == b"back"
            assert len(rx._remotes) <= 3 and len(rx._sockaddrs) <= 3
    finally:
        for tx in senders:
            tx.close()
        rx.close()


def test_an_earlier_peers_icmp_error_does_not_fail_a_later_send() -> None:
    """The kernel hands a pending "port unreachable" to the next sendto, which then sends
    nothing: that error belongs to the earlier datagram, so the later one is neither failed
    nor lost (a retransmission tick or a GM notification to someone else goes on)."""
    s = UdpSocket(("127.0.0.1", 0))
    alive = UdpSocket(("127.0.0.1", 0))
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead.bind(("127.0.0.1", 0))
    gone = dead.getsockname()[1]
    dead.close()
    try:
        for i in range(5):
            s.send(b"x", ("127.0.0.1", gone))
            time.sleep(0.005)  # the ICMP error arrives
            s.send(bytes([i]), alive.address)
        deadline = time.monotonic() + 2.0
        got: list[bytes] = []
        while len(got) < 5 and time.monotonic() < deadline:
            d = alive.receive()
            if d is None:
                time.sleep(0.005)
            elif not d.error:
                got.append(d.data)
        assert got == [bytes([i]) for i in range(5)]
    finally:
        s.close()
        alive.close()
