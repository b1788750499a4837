"""One racing GM process for the concurrency tests: joins (and rekeys or evicts) on a shared
database, driven without a network, and reports every Sender ID it handed out.

Usage: python -m tests.manager.gm_race URL PREFIX COUNT MODE   (MODE: join, rekey, evict)
Prints ``ready``, waits for a line on stdin (the start signal), then one line per join
``J <gid hex> <sender id hex> <node> <num>``, ``R <num>`` per rekey or eviction, ``done``.
"""

from __future__ import annotations

import sys

from grouposcore.manager.core import GmResponse, GroupManager
from tests.manager.helpers import Harness


class _LocalHarness(Harness):
    """Delivers notifications to this process's nodes only (the others are elsewhere)."""

    def deliver(self, r: GmResponse) -> None:
        mine = tuple(n for n in r.notifications if n.node in self.nodes)
        super().deliver(GmResponse(r.code, r.payload, r.content_format, notifications=mine))


def main() -> None:
    url, prefix, count, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    gm = GroupManager(url)
    h = _LocalHarness(gm)
    for i in range(count):  # the access list is administration: before the race
        gm.allow(f"{prefix}{i}", "g", (1, 2))
    h.node(f"{prefix}0")
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(count):
        node = f"{prefix}{i}"
        n = h.join(node, "g", allow=False)
        m = n.material
        assert m is not None and m.sender_id is not None
        print(f"J {m.gid.hex()} {m.sender_id.hex()} {node} {m.num}", flush=True)
        if mode == "rekey" and i % 5 == 4:
            gm.rekey("g")
            print(f"R {gm.group('g').num}", flush=True)  # type: ignore[union-attr]
        if mode == "evict" and i % 7 == 6:
            gm.evict("g", f"{prefix}{i - 3}")
            print(f"R {gm.group('g').num}", flush=True)  # type: ignore[union-attr]
    print("done", flush=True)
    gm.close()


if __name__ == "__main__":
    main()
