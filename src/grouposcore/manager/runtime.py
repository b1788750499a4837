"""The group member that lives with a Group Manager: join or resume, follow rekeying, leave.

:class:`GroupMember` owns one membership. It joins through a
:class:`~grouposcore.manager.client.GroupManagerClient` (or resumes from its 0600 state file
when the GM still serves the same material), keeps a :class:`~grouposcore.oscore.GroupContext`
built from that material current, and hands out security objects for transport endpoints
that always use the current context, so an endpoint configured once survives rekeyings.

Rekeying (digest §8.2): the new context replaces the old one at once for everything new;
the old one stays usable for a bounded ``grace`` time only to verify responses to requests
sent under it (stale senders already purged from it). Requests are accepted under the
current context only, so an evicted member is shut out as soon as the rekeying arrives.

Roles (digest §15.2): requests are accepted only from Requesters and responses only from
Responders, as the GM described the peers; the check runs on the kid before verification,
so a refused message changes no state.

A new Sender ID under the same keys (renewal, or a re-join the GM answers without
rekeying) changes only the Sender Context: the peers' Recipient Contexts and replay windows
carry over (RFC 10021 §2.6.3.1). A context for keys whose replay state this process lost
(a restart) starts with invalid windows, so peers go through Echo first (§2.6.1.2). Well
before the Sender Sequence Numbers run out (``renew_at`` of the space), the member asks the
GM for a new Sender ID.

Unknown senders: the context's credential provider is synchronous. It answers from what the
member already has, and otherwise schedules a FETCH of /creds for that Sender ID and says
"unknown" (the request gets 5.03; Max-Age absent means 60 s), so the sender's retry works.
The fetches run before any check of the message, so a
:class:`~grouposcore.manager.fetchlimit.FetchLimiter` bounds them (rate, in-flight, negative
cache; counters in :attr:`GroupMember.fetch_stats`). The same bounded path teaches the member
a Sender ID it wants to send to (:meth:`GroupMember.learn_peer`, or a pairwise request to it).

Module layout: channel files live in :mod:`~grouposcore.manager.channel`, the security
objects and the address map in :mod:`~grouposcore.manager.member_security`, the fetch
limiter in :mod:`~grouposcore.manager.fetchlimit`, the state file and the context it
describes in :mod:`~grouposcore.manager.member`; the old names are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from grouposcore.coap import Message
from grouposcore.cose import (
    Credential,
    private_key_from_bytes,
    private_key_to_bytes,
    signature_by_id,
)
from grouposcore.errors import (
    ContextNotFound,
    GroupManagerRequestError,
    GroupOscoreError,
    ManagerError,
    MembershipTerminated,
    RoleNotAuthorized,
)
from grouposcore.manager import member as mb
from grouposcore.manager import member_state as ms
from grouposcore.manager.channel import (
    channel_sequence_key,
    read_channel_file,
    write_channel_file,
)
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.edhoc_client import EdhocGroupManagerClient, EdhocIdentity
from grouposcore.manager.fetchlimit import Admission, FetchLimiter, FetchStats
from grouposcore.manager.member_security import (
    MemberAddresses,
    MemberClientSecurity,
    MemberServerSecurity,
)
from grouposcore.manager.member_state import context_from_state_file, member_sequence
from grouposcore.manager.params import (
    Code,
    Param,
    Role,
    loads_strict,
    roles_from_tperm,
    tperm,
)
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


@dataclass
class _Installed:
    """One group context with the material it came from; ``retire_at`` once superseded."""

    context: GroupContext
    material: mb.GroupKeyingMaterial
    retire_at: float | None = None


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
        self.grace = grace
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
        self.fetch_limiter = fetch_limiter if fetch_limiter is not None else FetchLimiter(
            clock=clock
        )
        self.sequence_limit = sequence_limit
        self.renew_at = renew_at
        self._renewing: asyncio.Task[Any] | None = None
        self._private_key = (
            private_key_from_bytes(private_key) if isinstance(private_key, bytes) else private_key
        )
        self._credential = credential
        self._scope = b""
        self._client_nonce = b""
        self._current: _Installed | None = None
        self._previous: list[_Installed] = []
        self._servers: list[MemberServerSecurity] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fetches: dict[bytes, asyncio.Task[bool]] = {}
        #: where each peer was last verified (a unicast request there goes pairwise)
        self.addresses = MemberAddresses()
        self._watch: asyncio.Task[Any] | None = None
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
            host = "::" if ":" in gm_address[0] else "0.0.0.0"
            if gm_address[0].startswith("127."):
                host = "127.0.0.1"
            elif gm_address[0] == "::1":
                host = "::1"
            endpoint = owned = await Endpoint.create((host, 0))
        try:
            if isinstance(channel, EdhocIdentity):
                edhoc_client = EdhocGroupManagerClient(
                    endpoint, gm_address, channel, timeout=timeout
                )
                self = cls(edhoc_client, group, roles, state_path, **kwargs)
                self._owned_endpoint = owned
                if start:
                    await self.start()
                return self
            seq_store: SequenceNumberStore
            if channel_sequence is None:
                seq_store = kwargs.pop("sequence_store", None) or FileSequenceStore(
                    str(state_path) + ".seq"
                )
                kwargs["sequence_store"] = seq_store
            elif isinstance(channel_sequence, str | os.PathLike):
                seq_store = FileSequenceStore(channel_sequence)
            else:
                seq_store = channel_sequence
            sequence = SenderSequence(
                store=seq_store, key=channel_sequence_key(channel),
                step=kwargs.get("sequence_step", 64),
            )  # fmt: skip
            client = GroupManagerClient(
                endpoint, gm_address, channel, sequence=sequence, timeout=timeout
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
        state = self._load_state()
        # What this process knew of the group before: its replay state is lost with the
        # process, so a context for the same keys must not start with valid windows.
        before = None if state is None else state.material
        if state is not None and state.private_key is not None and self._private_key is None:
            # A re-join (other roles, or after the GM forgot us) keeps the member's key.
            self._private_key = private_key_from_bytes(state.private_key)
            self._credential = state.credential
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
                self._scope, self._client_nonce = state.scope, state.client_nonce
                if state.private_key is not None:
                    self._private_key = private_key_from_bytes(state.private_key)
                self._credential = state.credential
                # Same keys: the replay state was lost with the process, so every window
                # starts invalid (Echo, digest §7.4). New keys start clean.
                self._install(latest, windows_valid=not _same_keys(latest, state.material))
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
        monitor_only = roles_from_tperm(self.roles) == frozenset({Role.MONITOR})
        if not monitor_only and self._private_key is None:
            alg = signature_by_id(self.sign_alg)
            self._private_key = alg.generate_private_key()
            self._credential = Credential.build_ccs(
                self._private_key.public_key(), alg.id, self.client.node
            ).raw
        if monitor_only:
            self._private_key, self._credential = None, None
        material, pending = await self.client.join(
            self.group,
            self.roles,
            credential=self._credential,
            private_key=self._private_key,
            get_creds=True,
            gm_credential=self.gm_credential,
        )
        self._scope, self._client_nonce = pending.scope, pending.cnonce
        self._install(material, windows_valid=before is None or not _same_keys(material, before))

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
        if self._current is not None and not self.terminated:
            sec.add(self._current.context)
        self._servers.append(sec)
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
        """After missed rekeyings: the GM's current list of members replaces the peers, so
        joiners announced only in the missed messages are known too (digest §8.2 step 5)."""
        peers = await self.client.creds(self.group, sign_alg=material.sign_alg)
        if material.sender_id is not None:
            peers.pop(material.sender_id, None)
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
        """Make ``material`` current: a new context for new keys, the same Recipient
        Contexts under a new Sender Context for a new Sender ID with the same keys, else an
        update of the known peers.

        ``windows_valid`` matters only for a context built from scratch: False when the
        replay state for these keys was lost (restart), so peers go through Echo first.
        """
        material = self._without_self(material)
        old = self._current
        if (
            old is not None
            and _same_keys(material, old.material)
            and material.num == old.material.num
            and material.sender_id == old.material.sender_id
        ):
            gone = set(old.material.peers) - set(material.peers)
            for sid in gone:
                old.context.remove_recipient(sid)
            old.material = material
            self._save()
            self._changed.set()
            return
        if old is not None and _same_keys(material, old.material):
            # New Sender ID (renewal or re-join without rekeying): RFC 10021 §2.6.3.1 changes
            # only the Sender Context; the peers' replay windows carry over, or every
            # request they sent under this Gid could be replayed once.
            context = old.context.with_sender_id(
                material.sender_id,
                sequence=self._sequence(material),
                private_key=self._private_key,
                credential=self._credential,
            )
            for sid in set(old.material.peers) - set(material.peers):
                context.remove_recipient(sid)
        else:
            context = mb.group_context(
                material,
                private_key=self._private_key,
                credential=self._credential,
                sequence=self._sequence(material),
                credential_provider=self._provide,
                replay_windows_valid=windows_valid,
            )
        self._current = _Installed(context, material)
        if old is not None:
            # Stale senders go from the old context too; it only verifies responses now.
            for sid in set(old.material.peers) - set(material.peers):
                old.context.remove_recipient(sid)
                old.material = replace(
                    old.material, peers={k: v for k, v in old.material.peers.items() if k != sid}
                )
            old.retire_at = self._clock() + self.grace
            self._previous.append(old)
        for sec in self._servers:
            if old is not None:
                sec.remove(old.context)
            sec.add(context)
        self.fetch_limiter.forget_negative()
        self._prune()
        self._save()
        self._changed.set()
        log.info(
            "group %s: installed num %d gid %s (sid %s)", material.group, material.num,
            material.gid.hex(), "-" if material.sender_id is None else material.sender_id.hex(),
        )  # fmt: skip
        self.check_sequence()

    def _is_own(self, credential: bytes) -> bool:
        return self._credential is not None and credential == self._credential

    def _without_self(self, material: mb.GroupKeyingMaterial) -> mb.GroupKeyingMaterial:
        """``material`` without peers that hold this member's own credential (e.g. an ID it
        gave up): a Recipient Context for it would let its own old messages be reflected
        back to it and delivered."""
        if self._credential is None or not any(
            self._is_own(p.credential) for p in material.peers.values()
        ):
            return material
        peers = {k: p for k, p in material.peers.items() if not self._is_own(p.credential)}
        return replace(material, peers=peers)

    def _sequence(self, material: mb.GroupKeyingMaterial) -> SenderSequence | None:
        return member_sequence(material, self.sequence_store, self.sequence_step,
                               limit=self.sequence_limit)

    # --- renewing the Sender ID before its sequence numbers run out -------------------------

    def check_sequence(self) -> None:
        """Ask the GM for a new Sender ID (in the background) once ``renew_at`` of the
        sequence-number space is used, or reserved in the store (digest §7.4: well before
        2^40 - 1). The security objects call this after every message they protect."""
        current = self._current
        if current is None or self.terminated or current.context.sender_id is None:
            return
        if self._renewing is not None:
            return
        seq = current.context.sequence
        threshold = int(self.sequence_limit * self.renew_at)
        if seq.peek() + seq.step < threshold:
            return  # the usual case; this process reserves at most one step ahead
        if seq.peek() < threshold and (self.sequence_store.load(seq.key) or 0) < threshold:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (sans-I/O use): the next protected message asks again
        self._renewing = loop.create_task(self._renew_for_sequence(current), name="renew-sid")
        self._tasks.add(self._renewing)
        self._renewing.add_done_callback(self._tasks.discard)

    async def _renew_for_sequence(self, start: _Installed) -> None:
        try:
            log.info("group %s: sequence numbers of sid %s nearly used up, renewing",
                     self.group, (start.material.sender_id or b"").hex())
            if self._current is start and not self.terminated:
                await self.renew_sender_id()
        except (GroupOscoreError, OSError) as e:
            log.warning("group %s: Sender ID renewal failed: %s", self.group, e)
            await asyncio.sleep(self.retry_delay)  # then the next message asks again
        finally:
            self._renewing = None

    def _prune(self) -> None:
        now = self._clock()
        self._previous = [
            p for p in self._previous if p.retire_at is not None and p.retire_at > now
        ]

    def _installed_for_response(
        self, binding: RequestBinding, kid_context: bytes | None
    ) -> tuple[list[_Installed], bool]:
        """The installed contexts a response to ``binding``'s request may be protected with,
        in the order to try them: the request's own context (unless retired), then the
        current one (a server that installed a rekeying answers under the new Gid, with or
        without a kid context: digest §8.4). A kid context rules out the others. Also
        whether the request's own context was retired."""
        self._prune()
        current = self._current
        if current is None or self.terminated:
            raise ContextNotFound("no current group context")
        own: _Installed | None = None
        if binding.context is current.context:
            own = current
        else:
            own = next((p for p in self._previous if p.context is binding.context), None)
        order = [own] if own is not None else []
        if own is not current:
            order.append(current)
        if kid_context is not None:
            order = [i for i in order if i.context.gid == kid_context]
        return order, own is None

    def _authorize(self, installed: _Installed, kid: bytes, *, is_request: bool) -> None:
        info = installed.material.peers.get(kid)
        if info is None or info.roles == 0:
            return  # unknown yet: the credential provider decides (and learns the roles)
        need = Role.REQUESTER if is_request else Role.RESPONDER
        if not info.roles & (1 << need):
            what = "request" if is_request else "response"
            raise RoleNotAuthorized(f"{what} from {kid.hex() or '-'}, not a {need.name.title()}")

    def _terminate(self, why: str) -> None:
        log.info("group %s: membership ended: %s", self.group, why)
        self.terminated = True
        for sec in self._servers:
            for inst in [self._current, *self._previous]:
                if inst is not None:
                    sec.remove(inst.context)
        self._previous.clear()
        self.state_path.unlink(missing_ok=True)
        self._changed.set()

    # --- unknown senders -------------------------------------------------------------------

    def _provide(self, kid: bytes, gid: bytes) -> bytes | None:
        """Credential provider of the current context: what the member knows, else None
        after asking the GM in the background, within the limiter's bounds (a forged
        request with an unknown kid must not make every member query the GM)."""
        current = self._current
        if current is None or gid != current.context.gid or self.terminated:
            return None
        info = current.material.peers.get(kid)
        if info is not None:
            return info.credential
        self._schedule_fetch(kid)
        return None

    @property
    def fetch_stats(self) -> FetchStats:
        """Counters of credential fetches: made, found, suppressed (rate, negative cache)."""
        return self.fetch_limiter.stats

    def _schedule_fetch(self, kid: bytes) -> asyncio.Task[bool] | None:
        """The fetch of ``kid``'s credential under way (started now if the limiter admits
        it), or None when it is suppressed or there is no event loop."""
        task = self._fetches.get(kid)
        if task is not None:
            self.fetch_limiter.admit(kid)  # counted as an in-flight hit
            return task
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        decision = self.fetch_limiter.admit(kid)
        if decision is not Admission.FETCH:
            log.debug("group %s: no fetch for unknown Sender ID %s: %s", self.group,
                      kid.hex(), decision.value)
            if decision is Admission.RATE_LIMITED and self.fetch_limiter.stats.rate_limited == 1:
                log.warning("group %s: credential fetches rate-limited (unknown Sender IDs "
                            "arriving faster than allowed)", self.group)
            return None
        task = loop.create_task(self._fetch(kid), name=f"creds-{kid.hex()}")
        self._fetches[kid] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _fetch(self, kid: bytes) -> bool:
        found: bool | None = None
        try:
            start = self._current
            assert start is not None
            peers = await self.client.creds(
                self.group, sender_ids=[kid], sign_alg=start.material.sign_alg
            )
            info = peers.get(kid)
            if info is not None and self._is_own(info.credential):
                log.warning("group %s: the GM lists this member's own credential under "
                            "Sender ID %s; not a peer", self.group, kid.hex())
                info = None
            found = info is not None
            current = self._current
            if info is not None and current is not None and _same_keys(
                current.material, start.material
            ):
                renewed = {sid for sid, p in current.material.peers.items()
                           if p.credential == info.credential}
                self.addresses.renewed(renewed, kid)
                current.material = replace(current.material,
                                           peers={**current.material.peers, kid: info})
                self._save()
        except (GroupOscoreError, OSError) as e:
            log.info("fetching the credential of %s failed: %s", kid.hex(), e)
        finally:
            self._fetches.pop(kid, None)
            self.fetch_limiter.finished(kid, found)
        return bool(found)

    async def learn_peer(self, kid: bytes) -> bool:
        """Make sure the member knows Sender ID ``kid`` (e.g. to send it a pairwise request
        after it renewed its ID): ask the GM if needed, within the same bounds as for unknown
        senders. True if it is known afterwards."""
        current = self._current
        if current is None or self.terminated:
            return False
        if kid in current.material.peers:
            return True
        task = self._schedule_fetch(kid)
        if task is None:
            return False
        return await asyncio.shield(task)

    def _known_peer(self, kid: bytes) -> bool:
        """Whether the current context can send to ``kid``; if not, the GM is asked in the
        background (bounded), so a retry can succeed."""
        current = self._current
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
        self._schedule_fetch(kid)
        return False

    # --- following the GM -------------------------------------------------------------------

    def _start_watch(self) -> None:
        if self.follow or self.poll_interval is not None:
            self._watch = asyncio.get_running_loop().create_task(self._watch_loop())

    async def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None

    async def _watch_loop(self) -> None:
        while not self.terminated:
            _stop_if_cancelled()
            try:
                if self.follow:
                    await self._follow_once()
                else:
                    assert self.poll_interval is not None
                    await asyncio.sleep(self.poll_interval)
                    await self.refresh()
                    continue
            except MembershipTerminated as e:
                if not self.terminated:
                    self._terminate(str(e))
                return
            except (GroupOscoreError, OSError) as e:
                log.info("group %s: following the GM failed: %s", self.group, e)
            # The observation ended or failed: catch up by polling, then observe again.
            await asyncio.sleep(self.retry_delay if self.poll_interval is None
                                else min(self.retry_delay, self.poll_interval))
            try:
                await self.refresh()
            except MembershipTerminated:
                return
            except (GroupOscoreError, OSError) as e:
                log.info("group %s: polling the GM failed: %s", self.group, e)

    async def _follow_once(self) -> None:
        """Observe the group resource until the observation ends.

        Only a rekeying message (it carries 'stale_node_ids') that is exactly one version
        ahead is installed as it is. Anything else that is ahead, e.g. a registration
        answer after missed rekeyings, is a plain GET rendering without stale IDs, so the
        member catches up through /stale-sids and /creds instead.
        """
        obs = self.client.observe(self.group)
        try:
            while True:
                _stop_if_cancelled()
                try:
                    if self.poll_interval is not None:
                        msg = await asyncio.wait_for(anext(obs), self.poll_interval)
                    else:
                        msg = await anext(obs)
                except TimeoutError:
                    await self.refresh()
                    continue
                except StopAsyncIteration:
                    return
                await self._notified(msg)
        finally:
            with contextlib.suppress(GroupOscoreError, OSError, asyncio.CancelledError):
                await obs.cancel(timeout=0.5)

    async def _notified(self, msg: Message) -> None:
        current = self._current
        assert current is not None
        material = mb.handle_notification(current.material, msg.code, msg.payload,
                                          msg.options.content_format)
        if material.num > current.material.num:
            body = loads_strict(msg.payload, "group keying material")
            rekeying = isinstance(body, dict) and Param.STALE_NODE_IDS in body
            if not rekeying or material.num > current.material.num + 1:
                await self.refresh()
                return
        self._install(material)

    # --- persistence ------------------------------------------------------------------------

    def _load_state(self) -> ms.MemberState | None:
        if not self.state_path.exists():
            return None
        state = ms.load_state(self.state_path)
        if state.node != self.client.node or state.material.group != self.group:
            raise ManagerError(
                f"{self.state_path} belongs to {state.node!r} in {state.material.group!r}"
            )
        return state

    def _save(self) -> None:
        current = self._current
        if current is None or self.terminated:
            return
        material = current.material
        reserved = 0
        if material.sender_id is not None:
            reserved = self.sequence_store.load(
                f"group/{material.group}/{material.gid.hex()}/{material.sender_id.hex()}"
            ) or 0
        key = None if self._private_key is None else private_key_to_bytes(self._private_key)
        state = ms.MemberState(
            node=self.client.node,
            material=material,
            private_key=key,
            credential=self._credential,
            scope=self._scope or b"\x80",
            client_nonce=self._client_nonce,
            ssn_reserved=reserved,
        )
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        ms.save_state(self.state_path, state)

    def __repr__(self) -> str:
        where = "-" if self._current is None else repr(self._current.context)
        return f"<GroupMember {self.client.node} in {self.group} {where}>"


def _stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop but an inner await absorbed the
    request (a cancellation landing while a cleanup await suppresses CancelledError, or
    Python 3.11's wait_for returning a result that completed at the same moment): without
    this a loop would go on waiting and :meth:`GroupMember.close` would hang."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _same_keys(a: mb.GroupKeyingMaterial, b: mb.GroupKeyingMaterial) -> bool:
    """Whether two materials describe the same Common Context (Gid, Master Secret and
    Salt): then replay state kept for one holds for the other."""
    return (a.gid, a.master_secret, a.master_salt) == (b.gid, b.master_secret, b.master_salt)
