"""Where the demo's multicast runs: a network namespace of its own.

Outside one, the demo re-executes itself under ``unshare -n`` (as root) or ``unshare -rn``
(unprivileged user namespaces), so none of its multicast can reach the host's network or
other programs. Inside a namespace that has nothing but ``lo`` (a fresh ``unshare -n``) it
brings ``lo`` up and adds the group route itself, since that changes nobody else's
network; IPv6 multicast does not loop back over ``lo``, so there it creates a veth pair.
Only where no namespace can be made does it check, with one datagram of TTL 0 (it cannot
leave the host), whether multicast on the host's loopback works, and use it; otherwise it
says so and runs only with ``--unicast``.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time

from grouposcore.transport.sockets import UdpSocket

__all__ = [
    "NETNS_ENV",
    "isolated",
    "multicast_works",
    "prepare_ipv6",
    "prepare_isolated",
    "reexec_in_namespace",
]

#: set in the environment of the re-executed demo, so it never tries a second time
NETNS_ENV = "GROUPOSCORE_DEMO_NETNS"


def isolated() -> bool:
    """True in a network namespace whose only interface is ``lo`` (fresh ``unshare -n``)."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def prepare_isolated(interface: str = "lo") -> list[str]:
    """Bring ``interface`` up with multicast routes (only called in an isolated namespace).

    Returns what went wrong (empty: all set); an existing route is fine.
    """
    if shutil.which("ip") is None:
        return ["the 'ip' command is missing, so lo cannot be configured"]
    problems = []
    for args in (
        ("link", "set", interface, "up"),
        ("link", "set", interface, "multicast", "on"),
        ("route", "add", "224.0.0.0/4", "dev", interface),
        ("-6", "route", "add", "ff00::/8", "dev", interface, "table", "local"),
    ):
        done = _ip(*args)
        if done.returncode != 0 and "File exists" not in done.stderr:
            problems.append(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return [p for p in problems if "-6" not in p]  # IPv6 is checked when it is used


#: the veth pair an isolated namespace gets for IPv6 multicast (``lo`` does not loop it)
V6_INTERFACE, V6_PEER, V6_ADDRESS = "gosc0", "gosc1", "fd00:6f73:636f::1"


def prepare_ipv6() -> list[str]:
    """A veth pair with IPv6 in the isolated namespace: IPv6 multicast on one host works
    over it (not over ``lo``). Duplicate address detection is off so addresses are usable
    at once."""
    if shutil.which("ip") is None:
        return ["the 'ip' command is missing, so no interface for IPv6 can be made"]
    try:
        with open("/proc/sys/net/ipv6/conf/default/accept_dad", "w") as f:
            f.write("0")
    except OSError as e:
        return [f"cannot switch off duplicate address detection: {e}"]
    problems = []
    for args in (
        ("link", "add", V6_INTERFACE, "type", "veth", "peer", "name", V6_PEER),
        ("link", "set", V6_INTERFACE, "up"),
        ("link", "set", V6_PEER, "up"),
        ("-6", "addr", "add", f"{V6_ADDRESS}/64", "dev", V6_INTERFACE, "nodad"),
    ):
        done = _ip(*args)
        if done.returncode != 0 and "File exists" not in done.stderr:
            problems.append(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return problems


def multicast_works(group: str, interface: str, port: int = 0, timeout: float = 0.5) -> bool:
    """Send one datagram to ``group`` on ``interface`` (TTL 0: it never leaves the host)
    and see whether a socket that joined the group receives it."""
    v6 = ":" in group
    try:
        rx = UdpSocket(("::" if v6 else "0.0.0.0", port), reuse_address=True)
    except OSError:
        return False
    try:
        rx.join(group, interface)
        tx = UdpSocket(("::" if v6 else "0.0.0.0", 0))
        try:
            tx.set_multicast_interface(group, interface)
            if v6:
                tx.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 0)
            else:
                tx.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
            token = os.urandom(8)
            tx.send(token, (group, rx.address[1]))
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([rx.fileno()], [], [], left)
                if not ready:
                    break
                dgram = rx.receive()
                if dgram is not None and dgram.data == token:
                    return True
            return False
        finally:
            tx.close()
    except OSError:
        return False
    finally:
        rx.close()


def reexec_in_namespace(argv: list[str]) -> int | None:
    """Run ``grouposcore argv`` again inside a new network namespace; its exit status, or
    None when no namespace could be created (no ``unshare``, no privileges)."""
    if os.environ.get(NETNS_ENV) or shutil.which("unshare") is None:
        return None
    flags = ["-n"] if os.geteuid() == 0 else ["-r", "-n"]
    probe = subprocess.run(["unshare", *flags, "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return None
    env = dict(os.environ, **{NETNS_ENV: "1"})
    cmd = ["unshare", *flags, sys.executable, "-m", "grouposcore.cli.main", *argv]
    return subprocess.run(cmd, env=env, check=False).returncode
