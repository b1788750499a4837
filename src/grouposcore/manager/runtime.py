"""The group member that lives with a Group Manager: join or resume, follow rekeying, leave.

:class:`GroupMember` owns one membership. It joins through a
:class:`~grouposcore.manager.client.GroupManagerClient` (or resumes from its 0600 state file
when the GM still serves the same material), keeps a :class:`~grouposcore.oscore.GroupContext`
built from that material current, and hands out security objects for transport endpoints
that always use the current context, so an endpoint configured once survives rekeyings.

Rekeying with a ``grace`` time for the old context, role checks and when to renew the
Sender ID are decided in :mod:`~grouposcore.manager.member_decisions` (pure functions over
the installed material). A context for keys whose replay state this process lost (a
restart) starts with invalid windows, so peers go through Echo first (RFC 10021 §2.6.1.2).

Unknown senders: the context's credential provider answers from what the member already
has, and otherwise asks the GM in the background, bounded by a
:class:`~grouposcore.manager.fetchlimit.FetchLimiter` (counters in
:attr:`GroupMember.fetch_stats`): see :mod:`~grouposcore.manager.member_fetch`.

Module layout: this module is the asyncio edge that talks to the GM. Channel files and the
GM client of a channel live in :mod:`~grouposcore.manager.channel`, the security objects
and the address map in :mod:`~grouposcore.manager.member_security`, the decisions in
:mod:`~grouposcore.manager.member_decisions`, the installed contexts (current, in grace) in
:mod:`~grouposcore.manager.member_contexts`, the tasks that follow the GM and renew the
Sender ID in :mod:`~grouposcore.manager.member_watch`, credential fetches in
:mod:`~grouposcore.manager.member_fetch`, the state file, the member's own keys and the
context a state file describes in :mod:`~grouposcore.manager.member_state`; the old names
are re-exported here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from grouposcore.coap import Message
from grouposcore.cose import (
    private_key_from_bytes,
)
from grouposcore.errors import (
    ContextNotFound,
    GroupManagerRequestError,
    ManagerError,
    MembershipTerminated,
)
from grouposcore.manager import member as mb
from grouposcore.manager import member_state as ms
from grouposcore.manager.channel import (
    channel_client,
    channel_sequence_key,
    endpoint_towards,
    read_channel_file,
    write_channel_file,
)
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.edhoc_client import EdhocIdentity
from grouposcore.manager.fetchlimit import FetchLimiter, FetchStats
from grouposcore.manager.member_contexts import MemberContexts
from grouposcore.manager.member_decisions import (
    Installed,
    InstallKind,
    NotificationStep,
    notification_step,
    renewal_due,
    renewal_near,
    same_keys,
    without_credential,
)
from grouposcore.manager.member_fetch import CredentialFetches
from grouposcore.manager.member_security import (
    MemberAddresses,
    MemberClientSecurity,
    MemberServerSecurity,
)
from grouposcore.manager.member_state import context_from_state_file, member_sequence
from grouposcore.manager.member_watch import MemberWatch
from grouposcore.manager.params import Code, Role, roles_from_tperm, tperm
from grouposcore.manager.store import ChannelMaterial
from grouposcore.oscore.common import RequestBinding
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.sequence import (
    MAX_SEQUENCE_NUMBER,
    FileSequenceStore,
    SenderSequence,
    SequenceNumberStore,
)
from grouposcore.transport import Endpoint

__all__ = [
    "GroupMember",
    "MemberClientSecurity",
    "MemberServerSecurity",
    "channel_sequence_key",
    "context_from_state_file",
    "member_sequence",
    "read_channel_file",
    "write_channel_file",
]

log = logging.getLogger(__name__)

#: How long the previous context verifies responses to requests sent under it (seconds).
DEFAULT_GRACE = 10.0
#: Ask the GM for a new Sender ID once this fraction of the sequence-number space is used.
DEFAULT_RENEW_AT = 0.75


class GroupMember:
    """One node's membership in one group, kept current and persisted.

    Build it with :meth:`open` (which also makes the GM client with a persistent channel
    sequence) or directly around a client, then ``await member.start()``.
    ``state_path`` holds the keying material and own key (0600); ``state_path + ".seq"`` the
    sequence-number reservations. ``follow`` observes the group resource for rekeyings;
    ``poll_interval`` polls instead (or in addition, as a safety net).

    ``fetch_limiter`` bounds the credential fetches unknown Sender IDs cause (default: a
    :class:`~grouposcore.manager.fetchlimit.FetchLimiter` on ``clock``); its counters are
    :attr:`fetch_stats`. Once ``renew_at`` of the sequence-number space (``sequence_limit``,
    at most 2^40 - 1) is used or reserved, the member asks the GM for a new Sender ID.
    """

    def __init__(
        self,
        client: GroupManagerClient,
        group: str,
        roles: Iterable[Role | int] | int,
        state_path: str | os.PathLike[str],
        *,
        private_key: Any = None,
        credential: bytes | None = None,
        sign_alg: int = -8,
        gm_credential: bytes | None = None,
        grace: float = DEFAULT_GRACE,
        follow: bool = True,
        poll_interval: float | None = None,
        retry_delay: float = 1.0,
        sequence_step: int = 64,
        sequence_store: SequenceNumberStore | None = None,
        clock: Any = time.monotonic,
        fetch_limiter: FetchLimiter | None = None,
        sequence_limit: int = MAX_SEQUENCE_NUMBER,
        renew_at: float = DEFAULT_RENEW_AT,
    ) -> None:
        if not 0 < renew_at < 1 or not 0 < sequence_limit <= MAX_SEQUENCE_NUMBER:
            raise ValueError("renew_at must be in (0, 1) and sequence_limit in [1, 2^40 - 1]")
        self.client = client
        self.group = group
        self.roles = roles if isinstance(roles, int) else tperm(roles)
        roles_from_tperm(self.roles)
        self.state_path = Path(state_path)
        self.sign_alg = sign_alg
        self.gm_credential = gm_credential
        self.follow = follow
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.sequence_step = sequence_step
        self.sequence_store: SequenceNumberStore = (
            sequence_store
            if sequence_store is not None
            else FileSequenceStore(str(self.state_path) + ".seq")
        )
        self._clock = clock
        self.fetch_limiter = (
            fetch_limiter if fetch_limiter is not None else FetchLimiter(clock=clock)
        )
        self.sequence_limit = sequence_limit
        self.renew_at = renew_at
        self._keys = ms.MemberKeys(
            private_key_from_bytes(private_key) if isinstance(private_key, bytes) else private_key,
            credential,
        )
        self._contexts = MemberContexts(grace)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._creds = CredentialFetches(self)
        #: where each peer was last verified (a unicast request there goes pairwise)
        self.addresses = MemberAddresses()
        self._watch = MemberWatch(self)
        self._owned_endpoint: Endpoint | None = None
        self._changed = asyncio.Event()
        #: how the membership began in this process: "joined" or "resumed"
        self.started: str | None = None
        #: set when the GM ended the membership (eviction) or after :meth:`leave`
        self.terminated = False

    # --- construction -----------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        endpoint: Endpoint | None,
        gm_address: tuple[str, int],
        channel: ChannelMaterial | EdhocIdentity,
        group: str,
        roles: Iterable[Role | int] | int,
        state_path: str | os.PathLike[str],
        *,
        channel_sequence: SequenceNumberStore | str | os.PathLike[str] | None = None,
        timeout: float | None = 10.0,
        start: bool = True,
        **kwargs: Any,
    ) -> GroupMember:
        """A started member whose GM channel numbers its requests durably.

        ``channel_sequence`` (a store or a file path; default: the member's own ``.seq``
        file) keeps the channel's Sender Sequence Numbers across restarts, so the GM never
        sees a nonce twice. Without ``endpoint`` one is bound on the GM's address family.
        An :class:`EdhocIdentity` instead of channel material establishes the channel with
        EDHOC (again whenever the GM has lost it); nothing of it is persisted.
        """
        owned = None
        if endpoint is None:
            endpoint = owned = await endpoint_towards(gm_address)
        try:
            seq_store: SequenceNumberStore | None = None  # an EDHOC channel is never kept
            if channel_sequence is None and not isinstance(channel, EdhocIdentity):
                # the member's own file, one store for both keys
                seq_store = kwargs.get("sequence_store") or FileSequenceStore(f"{state_path}.seq")
                kwargs["sequence_store"] = seq_store
            elif isinstance(channel_sequence, str | os.PathLike):
                seq_store = FileSequenceStore(channel_sequence)
            elif channel_sequence is not None:
                seq_store = channel_sequence
            client = channel_client(
                endpoint,
                gm_address,
                channel,
                seq_store,
                step=kwargs.get("sequence_step", 64),
                timeout=timeout,
            )
            self = cls(client, group, roles, state_path, **kwargs)
            self._owned_endpoint = owned
            if start:
                await self.start()
            return self
        except BaseException:
            if owned is not None:
                await owned.close()
            raise

    async def start(self) -> None:
        """Resume from the state file if the GM still knows this membership, else join."""
        state = ms.load_member_state(self.state_path, self.client.node, self.group)
        # What this process knew of the group before: its replay state is lost with the
        # process, so a context for the same keys must not start with valid windows.
        before = None if state is None else state.material
        if state is not None:
            self._keys.keep_key(state)
        if state is not None and state.material.roles != self.roles:
            state = None  # other roles asked for: join again (the GM answers 2.04)
        if state is not None:
            try:
                latest = await self.client.catch_up(state.material)
            except MembershipTerminated:
                latest = None
            except GroupManagerRequestError as e:
                if e.code not in (Code.FORBIDDEN, Code.NOT_FOUND):
                    raise
                latest = None  # not a member any more: join afresh
            if latest is None:
                self.state_path.unlink(missing_ok=True)  # that membership is over
            if latest is not None and latest.num != state.material.num:
                latest = await self._with_all_creds(latest)
            if latest is not None:
                self._keys.resume(state)
                # Same keys: the replay state was lost with the process, so every window
                # starts invalid (Echo, digest §7.4). New keys start clean.
                self._install(latest, windows_valid=not same_keys(latest, state.material))
                self.started = "resumed"
                self._start_watch()
                return
        await self._join(before)
        self.started = "joined"
        self._start_watch()

    async def _join(self, before: mb.GroupKeyingMaterial | None = None) -> None:
        """Join (or re-join). ``before``: the material of the state file, if any; a re-join
        answered with the same keys (no rekeying) comes after lost replay state, so its
        windows start invalid (RFC 10021 §2.6.1.2)."""
        self._keys.for_join(self.roles, self.sign_alg, self.client.node)
        material, pending = await self.client.join(
            self.group,
            self.roles,
            credential=self._keys.credential,
            private_key=self._keys.private_key,
            get_creds=True,
            gm_credential=self.gm_credential,
        )
        self._keys.scope, self._keys.client_nonce = pending.scope, pending.cnonce
        self._install(material, windows_valid=before is None or not same_keys(material, before))

    # --- what applications use --------------------------------------------------------------

    @property
    def context(self) -> GroupContext:
        """The current Group OSCORE context."""
        if self._current is None or self.terminated:
            raise ContextNotFound("no current group context (not joined, left or evicted)")
        return self._current.context

    @property
    def material(self) -> mb.GroupKeyingMaterial:
        """The current keying material (with the peers known so far)."""
        if self._current is None:
            raise ManagerError("not joined")
        return self._current.material

    @property
    def sender_id(self) -> bytes | None:
        return self.material.sender_id

    def has_role(self, role: Role) -> bool:
        return bool(self.roles & (1 << role))

    def peer_roles(self, kid: bytes) -> int | None:
        """The role bitmap the GM gave for Sender ID ``kid`` (None: not known yet)."""
        if self._current is None:
            return None
        info = self._current.material.peers.get(kid)
        return None if info is None else info.roles

    def client_security(
        self, pairwise_with: bytes | None = None, *, pairwise: bool = True
    ) -> MemberClientSecurity:
        """For ``Endpoint.request``/``group_request``: protects with the current context.

        Pairwise mode with ``pairwise_with``; otherwise a unicast request to the address of a
        known member goes in pairwise mode too, unless ``pairwise`` is False (group mode
        for group addresses and unknown ones). See :class:`MemberClientSecurity`."""
        return MemberClientSecurity(self, pairwise_with=pairwise_with, pairwise=pairwise)

    def server_security(self) -> MemberServerSecurity:
        """For an Endpoint's ``server_security``: follows the member across rekeyings."""
        sec = MemberServerSecurity(self)
        self._contexts.attach(sec, active=not self.terminated)
        return sec

    async def wait_for(self, num: int, timeout: float = 5.0) -> mb.GroupKeyingMaterial:
        """Wait until material of version ``num`` or later is installed."""

        async def reached() -> mb.GroupKeyingMaterial:
            while self._current is None or self._current.material.num < num:
                if self.terminated:
                    raise MembershipTerminated("membership ended while waiting")
                self._changed.clear()
                await self._changed.wait()
            return self._current.material

        return await asyncio.wait_for(reached(), timeout)

    async def wait_terminated(self, timeout: float = 5.0) -> None:
        async def ended() -> None:
            while not self.terminated:
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(ended(), timeout)

    async def wait_fetches(self, timeout: float = 5.0) -> None:
        """Wait for the credential fetches scheduled so far."""
        pending = [t for t in self._tasks if t.get_name().startswith("creds-")]
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout)

    async def refresh(self, *, own: bool = False) -> bool:
        """Poll the GM once (catching up over /stale-sids if needed); True if it changed.
        ``own`` reads the node's resource, which also names its current Sender ID."""
        before = self._current
        assert before is not None
        try:
            latest = await self.client.catch_up(before.material, own=own)
        except MembershipTerminated:
            self._terminate("own Sender ID went stale")
            raise
        except GroupManagerRequestError as e:
            if e.code in (Code.FORBIDDEN, Code.NOT_FOUND):
                self._terminate(str(e))
                raise MembershipTerminated(str(e)) from None
            raise
        if latest.num != before.material.num:
            latest = await self._with_all_creds(latest)
        self._install(latest)
        return self._current is not before

    async def _with_all_creds(self, material: mb.GroupKeyingMaterial) -> mb.GroupKeyingMaterial:
        """After missed rekeyings: joiners announced only in the missed messages become known
        too (digest §8.2 step 5). The peers still known (stale ones are already dropped) are
        kept; only the credentials of the others are fetched, so a member that missed a
        burst of coalesced rekeyings does not download the whole group again."""
        known = list(material.peers)
        own = [] if material.sender_id is None else [material.sender_id]
        if known:
            new = await self.client.creds(self.group, sender_ids=known + own, exclude=True,
                                          sign_alg=material.sign_alg)  # fmt: skip
            peers = {**material.peers, **new}
        else:
            peers = await self.client.creds(self.group, sign_alg=material.sign_alg)
        for sid in own:
            peers.pop(sid, None)
        return replace(material, peers=peers)

    async def renew_sender_id(self) -> bytes | None:
        """Ask the GM for a new Sender ID (e.g. well before sequence numbers run out).

        The GM hands the new Sender ID out under its *current* Gid, where it is unique; a
        member that missed rekeyings would otherwise pair it with an old Gid, under which
        another member may have used it (same kid, other credential). So the member
        catches up first, and takes its new Sender ID from the GM's current material.
        """
        await self.refresh()
        before = self.material
        renewed = await self.client.renew_sender_id(before)
        if renewed.num != before.num:
            self._install(renewed)  # answered with a rekeying: new Gid and material at once
        else:
            await self.refresh(own=True)  # the GM's current (Gid, Sender ID) pair
        return self.material.sender_id

    async def leave(self) -> None:
        """Leave the group (DELETE); the state file goes, the GM rekeys for the others."""
        await self._stop_watch()
        await self.client.leave(self.group)
        self._terminate("left the group")

    async def close(self) -> None:
        """Stop following and persist; the membership stays (resume with :meth:`start`)."""
        await self._stop_watch()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._current is not None and not self.terminated:
            self._save()
        if self._owned_endpoint is not None:
            await self._owned_endpoint.close()
            self._owned_endpoint = None

    # --- installing material ----------------------------------------------------------------

    def _install(self, material: mb.GroupKeyingMaterial, *, windows_valid: bool = True) -> None:
        """Make ``material`` current (:meth:`MemberContexts.install`) and persist it.

        ``windows_valid`` matters only for a context built from scratch: False when the
        replay state for these keys was lost (restart), so peers go through Echo first.
        """
        keys = self._keys
        material = without_credential(material, keys.credential)
        kind = self._contexts.install(
            material, self._clock(),
            fresh=lambda: mb.group_context(
                material, private_key=keys.private_key, credential=keys.credential,
                sequence=self._sequence(material), credential_provider=self._creds.provide,
                replay_windows_valid=windows_valid,
            ),
            renewed=lambda old: old.with_sender_id(
                material.sender_id, sequence=self._sequence(material),
                private_key=keys.private_key, credential=keys.credential,
            ),
        )  # fmt: skip
        if kind is not InstallKind.UPDATE_PEERS:
            self.fetch_limiter.forget_negative()
        self._save()
        self._changed.set()
        if kind is InstallKind.UPDATE_PEERS:
            return
        log.info(
            "group %s: installed num %d gid %s (sid %s)", material.group, material.num,
            material.gid.hex(), "-" if material.sender_id is None else material.sender_id.hex(),
        )  # fmt: skip
        self.check_sequence()

    def _sequence(self, material: mb.GroupKeyingMaterial) -> SenderSequence | None:
        return member_sequence(
            material, self.sequence_store, self.sequence_step, limit=self.sequence_limit
        )

    # --- renewing the Sender ID before its sequence numbers run out -------------------------

    def check_sequence(self) -> None:
        """Ask the GM for a new Sender ID (in the background) once ``renew_at`` of the
        sequence-number space is used, or reserved in the store (digest §7.4: well before
        2^40 - 1). The security objects call this after every message they protect."""
        current = self._contexts.current
        if current is None or self.terminated or current.context.sender_id is None:
            return
        seq = current.context.sequence
        threshold = int(self.sequence_limit * self.renew_at)  # renewal_threshold, inlined
        if not renewal_near(seq.peek(), seq.step, threshold) or self._watch.renewing:
            return  # the usual case
        if renewal_due(seq.peek(), threshold, self.sequence_store.load(seq.key)):
            self._watch.renew(current)

    @property
    def _current(self) -> Installed | None:
        return self._contexts.current

    @property
    def grace(self) -> float:
        """How long a superseded context verifies responses to requests sent under it (s)."""
        return self._contexts.grace

    def _installed_for_response(
        self, binding: RequestBinding, kid_context: bytes | None
    ) -> tuple[list[Installed], bool]:
        """The installed contexts a response to ``binding``'s request may be protected with,
        in the order to try them, and whether the request's own context was retired
        (:func:`~grouposcore.manager.member_decisions.response_contexts`)."""
        if self.terminated:
            raise ContextNotFound("no current group context")
        return self._contexts.for_response(binding.context, kid_context, self._clock())

    def _terminate(self, why: str) -> None:
        log.info("group %s: membership ended: %s", self.group, why)
        self.terminated = True
        self._contexts.end()
        self.state_path.unlink(missing_ok=True)
        self._changed.set()

    # --- unknown senders (bounded fetches: grouposcore.manager.member_fetch) ---------------

    @property
    def fetch_stats(self) -> FetchStats:
        """Counters of credential fetches: made, found, suppressed (rate, negative cache)."""
        return self.fetch_limiter.stats

    async def learn_peer(self, kid: bytes) -> bool:
        """Make sure the member knows Sender ID ``kid`` (e.g. to send it a pairwise request
        after it renewed its ID): ask the GM if needed, within the same bounds as for unknown
        senders. True if it is known afterwards."""
        return await self._creds.learn(kid)

    # --- following the GM -------------------------------------------------------------------

    def _start_watch(self) -> None:
        self._watch.start()

    async def _stop_watch(self) -> None:
        await self._watch.stop()

    async def _notified(self, msg: Message) -> None:
        current = self._current
        assert current is not None
        material = mb.handle_notification(
            current.material, msg.code, msg.payload, msg.options.content_format
        )
        step = notification_step(current.material, material, msg.payload)
        if step is NotificationStep.CATCH_UP:
            await self.refresh()
            return
        self._install(material)

    # --- persistence ------------------------------------------------------------------------

    def _save(self) -> None:
        current = self._current
        if current is None or self.terminated:
            return
        material = current.material
        seq_key = ms.sequence_key(material)
        reserved = 0 if seq_key is None else self.sequence_store.load(seq_key) or 0
        state = self._keys.state(self.client.node, material, reserved)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        ms.save_state(self.state_path, state)

    def __repr__(self) -> str:
        where = "-" if self._current is None else repr(self._current.context)
        return f"<GroupMember {self.client.node} in {self.group} {where}>"
