"""Running a test program inside a network namespace of its own (the machines' network
rule: multicast only where the test made the network itself).

``unshare -n`` gives the program a private network with only ``lo``, down; the shell
brings ``lo`` up and routes IPv4 multicast to it, then becomes the program, so the
program's exit status and output are the test's to check.
"""

from __future__ import annotations

#: brings ``lo`` up and routes 224.0.0.0/4 to it, then runs the rest of the command line
IPV4_MULTICAST_ON_LO = 'ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec "$0" "$@"'


def in_private_netns(*command: str) -> list[str]:
    """The argv that runs ``command`` in a new network namespace with IPv4 multicast on
    ``lo`` (needs root, or user namespaces)."""
    return ["unshare", "-n", "sh", "-c", IPV4_MULTICAST_ON_LO, *command]
