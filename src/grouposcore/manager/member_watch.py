"""The asyncio tasks that keep a :class:`~grouposcore.manager.runtime.GroupMember` current:
the loop that follows its Group Manager (observe the group resource, poll as a fallback or
safety net, end when the membership does) and the background renewal of its Sender ID.

Only the waiting lives here; what a notification means and when to renew are decided by
the member over :mod:`~grouposcore.manager.member_decisions`
(:func:`~grouposcore.manager.member_decisions.notification_step`,
:func:`~grouposcore.manager.member_decisions.renewal_due`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from grouposcore.errors import GroupOscoreError, MembershipTerminated

if TYPE_CHECKING:
    from grouposcore.manager.member_decisions import Installed
    from grouposcore.manager.runtime import GroupMember

__all__ = ["MemberWatch", "stop_if_cancelled"]

log = logging.getLogger("grouposcore.manager.runtime")  # the member's one log, as before the split


class MemberWatch:
    """The background tasks of one member: ``task`` follows the GM (``follow``: observe,
    with ``poll_interval`` as a safety net; else poll every ``poll_interval``);
    ``renewing`` asks it for a new Sender ID."""

    def __init__(self, member: GroupMember) -> None:
        self._member = member
        self.task: asyncio.Task[Any] | None = None
        self.renewing: asyncio.Task[None] | None = None

    def renew(self, start: Installed) -> None:
        """Ask the GM for a new Sender ID in the background, unless a renewal is under way
        (or there is no event loop: the next protected message asks again)."""
        if self.renewing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        tasks = self._member._tasks
        self.renewing = loop.create_task(self._renew(start), name="renew-sid")
        tasks.add(self.renewing)
        self.renewing.add_done_callback(tasks.discard)

    async def _renew(self, start: Installed) -> None:
        member = self._member
        try:
            log.info(
                "group %s: sequence numbers of sid %s nearly used up, renewing",
                member.group,
                (start.material.sender_id or b"").hex(),
            )
            if member._current is start and not member.terminated:
                await member.renew_sender_id()
        except (GroupOscoreError, OSError) as e:
            log.warning("group %s: Sender ID renewal failed: %s", member.group, e)
            await asyncio.sleep(member.retry_delay)  # then the next message asks again
        finally:
            self.renewing = None

    def start(self) -> None:
        """Start following, if the member follows or polls at all."""
        member = self._member
        if member.follow or member.poll_interval is not None:
            self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop following and wait until the task has ended."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None

    async def _loop(self) -> None:
        member = self._member
        while not member.terminated:
            stop_if_cancelled()
            try:
                if member.follow:
                    await self._follow_once()
                else:
                    assert member.poll_interval is not None
                    await asyncio.sleep(member.poll_interval)
                    await member.refresh()
                    continue
            except MembershipTerminated as e:
                if not member.terminated:
                    member._terminate(str(e))
                return
            except (GroupOscoreError, OSError) as e:
                log.info("group %s: following the GM failed: %s", member.group, e)
            # The observation ended or failed: catch up by polling, then observe again.
            await asyncio.sleep(
                member.retry_delay
                if member.poll_interval is None
                else min(member.retry_delay, member.poll_interval)
            )
            try:
                await member.refresh()
            except MembershipTerminated:
                return
            except (GroupOscoreError, OSError) as e:
                log.info("group %s: polling the GM failed: %s", member.group, e)

    async def _follow_once(self) -> None:
        """Observe the group resource until the observation ends; every notification goes
        to the member, and a quiet ``poll_interval`` makes it poll."""
        member = self._member
        obs = member.client.observe(member.group)
        try:
            while True:
                stop_if_cancelled()
                try:
                    if member.poll_interval is not None:
                        msg = await asyncio.wait_for(anext(obs), member.poll_interval)
                    else:
                        msg = await anext(obs)
                except TimeoutError:
                    await member.refresh()
                    continue
                except StopAsyncIteration:
                    return
                await member._notified(msg)
        finally:
            with contextlib.suppress(GroupOscoreError, OSError, asyncio.CancelledError):
                await obs.cancel(timeout=0.5)


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop but an inner await absorbed the
    request (a cancellation landing while a cleanup await suppresses CancelledError, or
    Python 3.11's wait_for returning a result that completed at the same moment): without
    this a loop would go on waiting and :meth:`GroupMember.close` would hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
