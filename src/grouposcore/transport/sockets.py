"""The UDP socket of an endpoint: dual stack, multicast membership, destination addresses.

One socket serves unicast and every joined group. To tell a multicast request from a
unicast one (a server must answer them differently, RFC 7252 §8.2) the socket asks the
kernel for each datagram's destination address: ``IPV6_RECVPKTINFO`` (and ``IP_PKTINFO``
for IPv4, including IPv4 traffic on a dual-stack IPv6 socket), read with ``recvmsg``.
On Linux this works for both families on a single socket, whereas one socket per group
would need ``SO_REUSEADDR`` games and could not answer from the unicast address. Responses
leave from the same socket, so their source is the host's unicast address (the kernel
picks it by route, a group address is never a source).

Addresses are normalised to ``(host, port)``: IPv4-mapped IPv6 addresses become plain
IPv4, link-local IPv6 keeps its ``%zone``.

Buffers: a client's group request is answered by every member at about the same time, so
its receive buffer must hold a burst of responses. Linux charges a small datagram about
830 bytes of buffer, so its usual 208 KiB default holds some 256 of them and a 500-member
group loses responses. Sockets therefore ask for :data:`DEFAULT_RECEIVE_BUFFER`; the memory
is only used while datagrams wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from typing import Any, NamedTuple

__all__ = [
    "DEFAULT_RECEIVE_BUFFER",
    "DEFAULT_SEND_BUFFER",
    "Datagram",
    "UdpSocket",
    "interface_index",
    "interface_ipv4",
    "is_multicast",
    "normalise",
    "set_buffer",
]

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_SIOCGIFADDR = 0x8915
_MAPPED = "::ffff:"
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

#: bytes of receive buffer a socket asks for: Linux grants twice that, room for about
#: 2,500 small datagrams, the responses of a 1,000-member group in one burst with margin
DEFAULT_RECEIVE_BUFFER = 1 << 20
#: bytes of send buffer a socket asks for: a paced burst of notifications or block-wise
#: responses queued by one event-loop turn
DEFAULT_SEND_BUFFER = 256 << 10


#: entries a socket's address caches hold before they start over (a server meets many
#: peers; the caches only save work on the hot path, they never decide anything)
_CACHE_LIMIT = 4096


class Datagram(NamedTuple):
    """One datagram received (a named tuple: one is made per datagram, on the hot path)."""

    data: bytes
    remote: tuple[str, int]
    #: Destination address of the datagram (``None`` if the kernel did not say).
    local: str | None
    multicast: bool
    #: an errno the network reported for a datagram *sent* to ``remote`` (ICMP, via
    #: IP_RECVERR); such an entry carries no data
    error: int | None = None


def format_address(remote: tuple[Any, ...]) -> str:
    """``host:port`` as people write it (``[host]:port`` for IPv6)."""
    host, port = remote[0], remote[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def normalise(sockaddr: tuple[Any, ...]) -> tuple[str, int]:
    """``(host, port)`` without the IPv4-mapped prefix; link-local IPv6 gets its ``%zone``.

    The zone (from the socket address's scope id) is what makes a link-local peer
    reachable again, e.g. for a unicast follow-up to a server that answered a group request.
    """
    host, port = sockaddr[0], sockaddr[1]
    if host.startswith(_MAPPED) and "." in host:
        host = host[len(_MAPPED) :]
    elif len(sockaddr) >= 4 and sockaddr[3] and "%" not in host:
        try:
            zone = socket.if_indextoname(sockaddr[3])
        except OSError:
            zone = str(sockaddr[3])
        host = f"{host}%{zone}"
    return (host, int(port))


def is_multicast(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_multicast
    except ValueError:
        return False


def interface_index(interface: int | str | None) -> int:
    """Index of an interface given by index or name (0: let the kernel choose)."""
    if interface is None:
        return 0
    if isinstance(interface, int):
        return interface
    return socket.if_nametoindex(interface)


def interface_ipv4(interface: int | str | None) -> str | None:
    """The IPv4 address of an interface (given by name, index or address), if it has one."""
    if interface is None:
        return None
    if isinstance(interface, str):
        try:
            return str(ipaddress.IPv4Address(interface))
        except ValueError:
            pass
    name = socket.if_indextoname(interface) if isinstance(interface, int) else interface
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def set_buffer(sock: socket.socket, receive: bool, size: int) -> int:
    """Ask for a ``size``-byte receive (or send) buffer; the size the kernel granted.

    Linux caps ``SO_RCVBUF``/``SO_SNDBUF`` at ``net.core.rmem_max``/``wmem_max`` without an
    error; a process with ``CAP_NET_ADMIN`` may exceed the cap (``SO_*BUFFORCE``), which is
    tried when the plain request fell short. The size is never lowered below what the
    socket already has. Linux reports twice the size asked for (its bookkeeping overhead).
    """
    option = socket.SO_RCVBUF if receive else socket.SO_SNDBUF
    have = int(sock.getsockopt(socket.SOL_SOCKET, option))
    if size <= 0 or have >= size:
        return have
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    granted = int(sock.getsockopt(socket.SOL_SOCKET, option))
    if granted < size:
        force = _SO_RCVBUFFORCE if receive else _SO_SNDBUFFORCE
        with contextlib.suppress(OSError):  # not privileged: keep what the cap allowed
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        granted = int(sock.getsockopt(socket.SOL_SOCKET, option))
    return granted


def _report_icmp_errors(sock: socket.socket, family: int, dual_stack: bool) -> None:
    """Ask Linux to report ICMP errors (port or host unreachable) for datagrams this
    socket sends; without it an unconnected UDP socket never hears of them, and a request
    to a closed port waits out every retransmission. Elsewhere nothing changes."""
    options = []
    if family == socket.AF_INET or dual_stack:
        options.append((socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)))
    if family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25)))
    for level, option in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, 1)


class UdpSocket:
    """A non-blocking UDP socket with the options CoAP over UDP needs."""

    def __init__(
        self,
        bind: tuple[str, int],
        *,
        reuse_address: bool = False,
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        send_buffer: int = DEFAULT_SEND_BUFFER,
    ) -> None:
        """``receive_buffer``/``send_buffer``: bytes of socket buffer to ask for (0: the
        system default); see :func:`set_buffer`."""
        host, port = bind[0], bind[1]
        fam = _family(host)
        self.family = fam
        sock = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            if fam == socket.AF_INET6:
                # "::" serves IPv4 too (as ::ffff:a.b.c.d); a specific IPv6 address cannot.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            self.dual_stack = fam == socket.AF_INET6 and host == "::"
            if fam == socket.AF_INET or self.dual_stack:
                sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            _report_icmp_errors(sock, fam, self.dual_stack)
            set_buffer(sock, True, receive_buffer)
            set_buffer(sock, False, send_buffer)
            if reuse_address:
                # Several group members on one host share the group port.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port) if fam == socket.AF_INET else (host, port, 0, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._recvmsg = sock.recvmsg
        self._sendto = sock.sendto
        #: address bytes of IP(V6)_PKTINFO -> (destination as text, is it a group)
        self._destinations: dict[bytes, tuple[str, bool]] = {}
        #: kernel socket address <-> normalised (host, port), both ways (IPv6 only: an
        #: IPv4 socket's addresses already are ``(host, port)``)
        self._remotes: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._sockaddrs: dict[tuple[str, int], tuple[Any, ...]] = {}

    @property
    def address(self) -> tuple[str, int]:
        return normalise(self.sock.getsockname())

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    # --- I/O -----------------------------------------------------------------------------

    def receive(self) -> Datagram | None:
        """One datagram, or ``None`` if none is waiting.

        Runs once per datagram, so what repeats (the destination address of the packet
        info, an IPv6 peer's normalised address) comes from small per-socket caches.
        """
        try:
            data, anc, _flags, addr = self._recvmsg(65536, 256)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:  # an ICMP error queued for a datagram we sent (IP_RECVERR)
            return self._queued_error(exc)
        local = None
        multicast = False
        for level, kind, payload in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
                raw = payload[8:12]
            elif (
                level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and len(payload) >= 16
            ):
                raw = payload[:16]
            else:
                continue
            known = self._destinations.get(raw)
            if known is None:
                known = self._destination(raw)
            local, multicast = known
        if self.family == socket.AF_INET:
            remote: tuple[str, int] = addr
        else:
            remote = self._remotes.get(addr) or self._remember_remote(addr)
        return Datagram(data, remote, local, multicast)

    def _destination(self, raw: bytes) -> tuple[str, bool]:
        if len(raw) == 4:
            text = socket.inet_ntoa(raw)
        else:
            text = normalise((socket.inet_ntop(socket.AF_INET6, raw), 0))[0]
        if len(self._destinations) >= _CACHE_LIMIT:
            self._destinations.clear()
        self._destinations[raw] = known = (text, is_multicast(text))
        return known

    def _remember_remote(self, addr: tuple[Any, ...]) -> tuple[str, int]:
        if len(self._remotes) >= _CACHE_LIMIT:
            self._remotes.clear()
        self._remotes[addr] = remote = normalise(addr)
        return remote

    def _queued_error(self, exc: OSError) -> Datagram | None:
        """The destination of the datagram an ICMP error was about (its msg_name on the
        error queue), so that the endpoint can fail what waits for that peer."""
        try:
            _data, _anc, _flags, addr = self.sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
        except OSError:
            return None
        if not addr:
            return None
        return Datagram(b"", normalise(addr), None, False, error=exc.errno)

    def send(self, data: bytes, remote: tuple[str, int]) -> None:
        """Send without blocking; a full socket buffer drops the datagram like the network would."""
        if type(remote) is not tuple:
            remote = (remote[0], remote[1])
        if self.family == socket.AF_INET:
            sockaddr: tuple[Any, ...] = remote
        else:
            sockaddr = self._sockaddrs.get(remote) or self._remember_sockaddr(remote)
        try:
            self._sendto(data, sockaddr)
        except (BlockingIOError, InterruptedError):
            pass
        except ConnectionRefusedError:
            # A "port unreachable" for an *earlier* datagram (perhaps to another peer) that
            # the kernel hands to this send instead of sending it. Raising would abort a
            # retransmission tick or a notification to somebody else; the error is now
            # cleared, so this datagram goes out on a second try.
            with contextlib.suppress(BlockingIOError, InterruptedError, ConnectionRefusedError):
                self._sendto(data, sockaddr)

    def _remember_sockaddr(self, remote: tuple[str, int]) -> tuple[Any, ...]:
        sockaddr = self._sockaddr(remote)
        if len(self._sockaddrs) >= _CACHE_LIMIT:
            self._sockaddrs.clear()
        self._sockaddrs[remote] = sockaddr
        return sockaddr

    def _sockaddr(self, remote: tuple[str, int]) -> tuple[Any, ...]:
        host, port = remote[0], remote[1]
        if self.family == socket.AF_INET6:
            if ":" not in host:
                host = _MAPPED + host
            # getaddrinfo understands "fe80::1%eth0" and fills in the scope id.
            if "%" in host:
                return socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_DGRAM)[0][4]
            return (host, port, 0, 0)
        return (host, port)

    # --- multicast -----------------------------------------------------------------------

    def join(self, group: str, interface: int | str | None = None) -> None:
        """Join ``group`` on ``interface`` (name, index, or for IPv4 also its address)."""
        if ":" in group:
            if self.family != socket.AF_INET6:
                raise OSError("an IPv4 socket cannot join an IPv6 group")
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack(
                "@I", interface_index(interface)
            )
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        else:
            if self.family == socket.AF_INET6 and not self.dual_stack:
                raise OSError("an IPv6-only socket cannot join an IPv4 group")
            self.sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, interface)
            )

    def leave(self, group: str, interface: int | str | None = None) -> None:
        if ":" in group:
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack(
                "@I", interface_index(interface)
            )
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_LEAVE_GROUP, mreq)
        else:
            self.sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, _mreqn(group, interface)
            )

    def set_multicast_interface(self, group: str, interface: int | str | None) -> None:
        """Choose the interface (and loop-back) for the next datagrams to ``group``'s family."""
        if ":" in group:
            self.sock.setsockopt(
                socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, interface_index(interface)
            )
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        else:
            # The address form matters: with only an index, Linux sends from 0.0.0.0 on lo.
            self.sock.setsockopt(
                socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _mreqn("0.0.0.0", interface)
            )
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)


def _mreqn(group: str, interface: int | str | None) -> bytes:
    """``struct ip_mreqn``: group, interface address (if known) and interface index."""
    addr = interface_ipv4(interface) or "0.0.0.0"
    index = 0
    if interface is not None and not _is_ipv4(interface):
        index = interface_index(interface)
    return socket.inet_aton(group) + socket.inet_aton(addr) + struct.pack("@i", index)


def _is_ipv4(value: int | str) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True
