"""An evicted member ends its membership: its server stops accepting requests under the
group context it was evicted from (RFC 9594 §4.6 notification, RFC 10021 §3.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from grouposcore.errors import ContextNotFound
from tests.manager.runtime_net import Net, get, run, start_net


def test_evicted_member_server_refuses_the_old_group_context(tmp_path: Path) -> None:
    async def body(net: Net) -> None:
        a, c = [await net.member(n) for n in ("a", "c")]
        old_a = a.member.context  # what a sender (or a captured copy) of the old group holds
        before, _ = old_a.protect_request(get("light"))
        assert c.endpoint.server_security.unprotect_request(before) is not None
        num = net.gm.store.group("g").num  # type: ignore[union-attr]
        net.svc.evict("g", "c")
        await a.member.wait_for(num + 1)
        await c.member.wait_terminated()
        after, _ = old_a.protect_request(get("light"))  # fresh Partial IV, old keys
        with pytest.raises(ContextNotFound):
            c.endpoint.server_security.unprotect_request(after)

    async def main() -> None:
        net = await start_net(tmp_path)
        try:
            await body(net)
        finally:
            await net.close()

    run(main())
