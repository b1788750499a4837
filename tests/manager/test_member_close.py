"""Closing a member stops its watch task even when the cancellation was absorbed inside it
(found by the multi-GM test: GroupMember.close hung now and then)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from grouposcore.manager.member_watch import MemberWatch
from grouposcore.manager.runtime import GroupMember
from tests.manager.helpers import RS


def test_close_stops_following_even_if_an_inner_await_swallowed_the_cancel(
    tmp_path: Path, monkeypatch: Any
) -> None:
    swallowed = []

    async def swallowing_follow(self: MemberWatch) -> None:
        # what a cleanup `with suppress(CancelledError): await obs.cancel()` does when the
        # cancellation lands inside it: the observation ends "normally" (once)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)

    async def no_refresh(self: GroupMember) -> bool:
        return False

    monkeypatch.setattr(MemberWatch, "_follow_once", swallowing_follow)
    monkeypatch.setattr(GroupMember, "refresh", no_refresh)

    class Client:
        node = "n"

    async def scenario() -> None:
        member = GroupMember(Client(), "g", RS, tmp_path / "n.state",  # type: ignore[arg-type]
                             follow=True, retry_delay=0.01)  # fmt: skip
        member._start_watch()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(member._stop_watch(), 10)
        assert member._watch.task is None and swallowed

    asyncio.run(scenario())
