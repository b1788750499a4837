"""Credentials of Sender IDs a :class:`~grouposcore.manager.runtime.GroupMember` does not know
yet, fetched from the Group Manager in the background and within bounds.

The context's credential provider is synchronous: it answers from what the member already
has, and otherwise schedules a FETCH of /creds for that Sender ID and says "unknown" (the
request gets 5.03; Max-Age absent means 60 s), so the sender's retry works. The fetches run
before any check of the message (a forged request with an unknown kid must not make every
member query the GM), so a :class:`~grouposcore.manager.fetchlimit.FetchLimiter` bounds them:
rate, in-flight, negative cache. The same bounded path teaches the member a Sender ID it
wants to send to (:meth:`CredentialFetches.learn`, or a pairwise request to it).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from grouposcore.errors import GroupOscoreError
from grouposcore.manager.fetchlimit import Admission
from grouposcore.manager.member_decisions import same_keys

if TYPE_CHECKING:
    from grouposcore.manager.runtime import GroupMember

__all__ = ["CredentialFetches"]

log = logging.getLogger("grouposcore.manager.runtime")  # the member's one log, as before the split


class CredentialFetches:
    """The member's fetches of unknown Sender IDs' credentials: at most one per Sender ID
    at a time, admitted by the member's ``fetch_limiter``; the tasks join the member's
    background tasks (``close`` cancels them)."""

    def __init__(self, member: GroupMember) -> None:
        self._member = member
        self._fetches: dict[bytes, asyncio.Task[bool]] = {}

    def provide(self, kid: bytes, gid: bytes) -> bytes | None:
        """Credential provider of the current context: what the member knows, else None
        after asking the GM in the background, within the limiter's bounds."""
        member = self._member
        current = member._current
        if current is None or gid != current.context.gid or member.terminated:
            return None
        info = current.material.peers.get(kid)
        if info is not None:
            return info.credential
        self.schedule(kid)
        return None

    def sendable(self, kid: bytes) -> bool:
        """Whether the current context can send to ``kid``; if not, the GM is asked in the
        background (bounded), so a retry can succeed."""
        current = self._member._current
        if current is None:
            return False
        if kid in current.context.recipients:
            return True
        info = current.material.peers.get(kid)
        if info is not None:
            try:
                current.context.add_recipient(kid, info.credential)
            except GroupOscoreError as e:
                log.info("unusable credential for %s: %s", kid.hex(), e)
                return False
            return True
        self.schedule(kid)
        return False

    async def learn(self, kid: bytes) -> bool:
        """Make sure the member knows Sender ID ``kid``, asking the GM if needed; True if it
        is known afterwards."""
        member = self._member
        current = member._current
        if current is None or member.terminated:
            return False
        if kid in current.material.peers:
            return True
        task = self.schedule(kid)
        if task is None:
            return False
        return await asyncio.shield(task)

    def in_flight(self, kid: bytes) -> asyncio.Task[bool] | None:
        """The fetch of ``kid``'s credential under way, if any (nothing is started)."""
        return self._fetches.get(kid)

    def schedule(self, kid: bytes) -> asyncio.Task[bool] | None:
        """The fetch of ``kid``'s credential under way (started now if the limiter admits
        it), or None when it is suppressed or there is no event loop."""
        member = self._member
        limiter = member.fetch_limiter
        task = self._fetches.get(kid)
        if task is not None:
            limiter.admit(kid)  # counted as an in-flight hit
            return task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        decision = limiter.admit(kid)
        if decision is not Admission.FETCH:
            log.debug(
                "group %s: no fetch for unknown Sender ID %s: %s",
                member.group,
                kid.hex(),
                decision.value,
            )
            if decision is Admission.RATE_LIMITED and limiter.stats.rate_limited == 1:
                log.warning(
                    "group %s: credential fetches rate-limited (unknown Sender IDs "
                    "arriving faster than allowed)",
                    member.group,
                )
            return None
        task = loop.create_task(self._fetch(kid), name=f"creds-{kid.hex()}")
        self._fetches[kid] = task
        member._tasks.add(task)
        task.add_done_callback(member._tasks.discard)
        return task

    async def _fetch(self, kid: bytes) -> bool:
        member = self._member
        found: bool | None = None
        try:
            start = member._current
            assert start is not None
            peers = await member.client.creds(
                member.group, sender_ids=[kid], sign_alg=start.material.sign_alg
            )
            info = peers.get(kid)
            if info is not None and info.credential == member._keys.credential:
                log.warning(
                    "group %s: the GM lists this member's own credential under "
                    "Sender ID %s; not a peer",
                    member.group,
                    kid.hex(),
                )
                info = None
            found = info is not None
            current = member._current
            if (
                info is not None
                and current is not None
                and same_keys(current.material, start.material)
            ):
                renewed = {
                    sid
                    for sid, p in current.material.peers.items()
                    if p.credential == info.credential
                }
                member.addresses.renewed(renewed, kid)
                current.material = replace(
                    current.material, peers={**current.material.peers, kid: info}
                )
                member._save()
        except (GroupOscoreError, OSError) as e:
            log.info("fetching the credential of %s failed: %s", kid.hex(), e)
        finally:
            self._fetches.pop(kid, None)
            member.fetch_limiter.finished(kid, found)
        return bool(found)
