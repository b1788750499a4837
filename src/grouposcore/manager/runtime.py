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

Unknown senders: the context's credential provider is synchronous. It answers from what the
member already has, and otherwise schedules a FETCH of /creds for that Sender ID and says
"unknown" (the request gets 5.03; Max-Age absent means 60 s), so the sender's retry works.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
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
    ManagerMessageError,
    MembershipTerminated,
    RoleNotAuthorized,
)
from grouposcore.manager import member as mb
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.params import (
    Code,
    Param,
    Role,
    loads_strict,
    roles_from_tperm,
    tperm,
)
from grouposcore.manager.store import ChannelMaterial
from grouposcore.oscore.common import RequestBinding, ServerBinding
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.option import decode_option
from grouposcore.oscore.security import ClientSecurity, ServerSecurity, VerifiedMessage
from grouposcore.oscore.sequence import FileSequenceStore, SenderSequence, SequenceNumberStore
from grouposcore.transport import Endpoint

__all__ = [
    "GroupMember",
    "MemberClientSecurity",
    "MemberServerSecurity",
    "channel_sequence_key",
    "read_channel_file",
    "write_channel_file",
]

log = logging.getLogger(__name__)

#: How long the previous context verifies responses to requests sent under it (seconds).
DEFAULT_GRACE = 10.0
#: Do not ask the GM again for a Sender ID it did not know within this many seconds.
FETCH_BACKOFF = 5.0
_CHANNEL_VERSION = 1


def channel_sequence_key(channel: ChannelMaterial) -> str:
    """The sequence-store key of a node's GM channel: new channel keys start a new count."""
    digest = hashlib.sha256(channel.master_secret + channel.master_salt).hexdigest()[:16]
    return f"channel/{channel.node}/{digest}"


def _write_private(path: Path, data: bytes) -> None:
    """Atomic replace of ``path`` with a 0600 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_channel_file(
    path: str | os.PathLike[str],
    channel: ChannelMaterial,
    *,
    manager: str | None = None,
    gm_credentials: dict[str, bytes] | None = None,
) -> Path:
    """A node's commissioning file (0600): its OSCORE channel with the GM, the GM's URI
    and the GM credentials to pin per group."""
    doc: dict[str, Any] = {
        "version": _CHANNEL_VERSION,
        "node": channel.node,
        "master_secret": channel.master_secret.hex(),
        "master_salt": channel.master_salt.hex(),
        "gm_sender_id": channel.gm_sender_id.hex(),
        "node_sender_id": channel.node_sender_id.hex(),
        "id_context": None if channel.id_context is None else channel.id_context.hex(),
        "aead_alg": channel.aead_alg,
        "hkdf_alg": channel.hkdf_alg,
        "manager": manager,
        "gm_credentials": {g: c.hex() for g, c in sorted((gm_credentials or {}).items())},
    }
    target = Path(path)
    _write_private(target, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())
    return target


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManagerMessageError(f"channel file: {name!r} missing or not a {kind.__name__}")
    return value


def _hex(doc: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_field(doc, name, str))
    except ValueError:
        raise ManagerMessageError(f"channel file: {name!r} is not hex") from None


def read_channel_file(
    path: str | os.PathLike[str],
) -> tuple[ChannelMaterial, str | None, dict[str, bytes]]:
    """(channel material, GM URI or None, pinned GM credentials) from a channel file."""
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise ManagerMessageError(f"unreadable channel file {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != _CHANNEL_VERSION:
        raise ManagerMessageError("not a channel file of a known version")
    channel = ChannelMaterial(
        node=_field(doc, "node", str),
        master_secret=_hex(doc, "master_secret"),
        master_salt=_hex(doc, "master_salt"),
        gm_sender_id=_hex(doc, "gm_sender_id"),
        node_sender_id=_hex(doc, "node_sender_id"),
        id_context=None if doc.get("id_context") is None else _hex(doc, "id_context"),
        aead_alg=_field(doc, "aead_alg", int),
        hkdf_alg=_field(doc, "hkdf_alg", int),
    )
    manager = doc.get("manager")
    if manager is not None and not isinstance(manager, str):
        raise ManagerMessageError("channel file: 'manager' is not a URI string")
    pinned = doc.get("gm_credentials", {})
    if not isinstance(pinned, dict):
        raise ManagerMessageError("channel file: 'gm_credentials' is not an object")
    creds = {str(g): _hex(pinned, g) for g in pinned}
    return channel, manager, creds


@dataclass
class _Installed:
    """One group context with the material it came from; ``retire_at`` once superseded."""

    context: GroupContext
    material: mb.GroupKeyingMaterial
    retire_at: float | None = None


class MemberClientSecurity(ClientSecurity):
    """Client security that always protects with the member's current context.

    Responses to requests sent under the previous context still verify during the grace
    time, also when the server already answers under the new Gid (digest §8.4).
    """

    def __init__(self, member: GroupMember, *, pairwise_with: bytes | None = None) -> None:
        # The base class would pin one context; this one follows the member instead.
        self._member = member
        self.pairwise_with = pairwise_with
        self._members_at: dict[object, bytes] = {}

    @property  # type: ignore[override]
    def context(self) -> GroupContext:
        return self._member.context

    def protect_request(self, request: Message) -> tuple[Message, RequestBinding]:
        if not self._member.has_role(Role.REQUESTER):
            raise RoleNotAuthorized("this member is not a Requester in the group")
        return super().protect_request(request)

    def echo_retry(
        self, response: VerifiedMessage, request: Message
    ) -> tuple[Message, ClientSecurity] | None:
        """As the base class, but the retry keeps following the member (and its roles)."""
        answer = super().echo_retry(response, request)
        if answer is None:
            return None
        retry, sec = answer
        return retry, MemberClientSecurity(self._member, pairwise_with=sec.pairwise_with)

    def unprotect_response(self, response: Message, binding: RequestBinding) -> VerifiedMessage:
        value = response.options.get(9)
        if value is None:
            return super().unprotect_response(response, binding)  # raises: unprotected
        option = decode_option(value)
        installed = self._member._installed_for_response(binding, option.kid_context)
        kid = option.kid if option.kid is not None else binding.intended_recipient
        if kid is not None:
            self._member._authorize(installed, kid, is_request=False)
        plain, info = installed.context.unprotect_response(response, binding)
        if response.remote is not None:
            self._members_at[response.remote] = info.sender_id
        return VerifiedMessage(
            code=plain.code, mtype=plain.mtype, mid=plain.mid, token=plain.token,
            options=plain.options, payload=plain.payload, remote=plain.remote, security=info,
        )  # fmt: skip


class MemberServerSecurity(ServerSecurity):
    """Server security holding exactly the member's current context (the member swaps it).

    Requests are refused before verification when the sender is not a Requester (or this
    member is neither a Responder nor a Monitor); a response
    to a request verified under a context that has since been replaced is protected with
    the current one (fresh Partial IV, new Gid as kid context: digest §8.4).
    """

    def __init__(self, member: GroupMember) -> None:
        super().__init__()
        self._member = member

    def unprotect_request(self, request: Message) -> tuple[Message, ServerBinding] | None:
        value = request.options.get(9)
        if value is not None:
            if not (self._member.has_role(Role.RESPONDER) or self._member.has_role(Role.MONITOR)):
                raise RoleNotAuthorized("this member is neither a Responder nor a Monitor")
            option = decode_option(value)
            current = self._member._current
            if (
                option.kid is not None
                and current is not None
                and option.kid_context == current.context.gid
            ):
                self._member._authorize(current, option.kid, is_request=True)
        return super().unprotect_request(request)

    def protect_response(self, response: Message, binding: ServerBinding) -> Message:
        current = self._member._current
        ctx = binding.context
        if (
            current is not None
            and isinstance(ctx, GroupContext)
            and ctx is not current.context
            and current.context.sender_id is not None
        ):
            moved = dataclasses.replace(binding, recipient=None)
            return current.context.protect_response(response, moved)
        return super().protect_response(response, binding)


class GroupMember:
    """One node's membership in one group, kept current and persisted.

    Build it with :meth:`open` (which also makes the GM client with a persistent channel
    sequence) or directly around a client, then ``await member.start()``.
    ``state_path`` holds the keying material and own key (0600); ``state_path + ".seq"`` the
    sequence-number reservations. ``follow`` observes the group resource for rekeyings;
    ``poll_interval`` polls instead (or in addition, as a safety net).
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
    ) -> None:
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
        self._fetching: set[bytes] = set()
        self._missing: dict[bytes, float] = {}
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
        channel: ChannelMaterial,
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
                # Same material: the replay state was lost with the process, so every
                # window starts invalid (Echo, digest §7.4). New material starts clean.
                same = latest.num == state.material.num and latest.gid == state.material.gid
                self._install(latest, windows_valid=not same)
                self.started = "resumed"
                self._start_watch()
                return
        await self._join()
        self.started = "joined"
        self._start_watch()

    async def _join(self) -> None:
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
        self._install(material, windows_valid=True)

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

    def client_security(self, pairwise_with: bytes | None = None) -> MemberClientSecurity:
        """For ``Endpoint.request``/``group_request``: protects with the current context."""
        return MemberClientSecurity(self, pairwise_with=pairwise_with)

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

    async def refresh(self) -> bool:
        """Poll the GM once (catching up over /stale-sids if needed); True if it changed."""
        before = self._current
        assert before is not None
        try:
            latest = await self.client.catch_up(before.material)
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
        """Ask the GM for a new Sender ID (e.g. well before sequence numbers run out)."""
        material = await self.client.renew_sender_id(self.material)
        self._install(material)
        return material.sender_id

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
        """Make ``material`` current: a new context for a new Gid or Sender ID, else an
        update of the known peers."""
        old = self._current
        if (
            old is not None
            and material.gid == old.material.gid
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
        self._missing.clear()
        self._prune()
        self._save()
        self._changed.set()
        log.info(
            "group %s: installed num %d gid %s (sid %s)", material.group, material.num,
            material.gid.hex(), "-" if material.sender_id is None else material.sender_id.hex(),
        )  # fmt: skip

    def _sequence(self, material: mb.GroupKeyingMaterial) -> SenderSequence | None:
        return member_sequence(material, self.sequence_store, self.sequence_step)

    def _prune(self) -> None:
        now = self._clock()
        self._previous = [
            p for p in self._previous if p.retire_at is not None and p.retire_at > now
        ]

    def _installed_for_response(
        self, binding: RequestBinding, kid_context: bytes | None
    ) -> _Installed:
        """The installed context to verify a response with, refusing retired ones."""
        self._prune()
        current = self._current
        if current is None or self.terminated:
            raise ContextNotFound("no current group context")
        if binding.context is current.context:
            return current
        if kid_context is not None and kid_context == current.context.gid:
            return current  # answered under the new Gid (digest §8.4)
        for p in self._previous:
            if p.context is binding.context:
                return p
        raise ContextNotFound("the request's group context was retired after a rekeying")

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

    # --- unknown senders --------------------------------------------------------------------

    def _provide(self, kid: bytes, gid: bytes) -> bytes | None:
        current = self._current
        if current is None or gid != current.context.gid or self.terminated:
            return None
        info = current.material.peers.get(kid)
        if info is not None:
            return info.credential
        self._schedule_fetch(kid)
        return None

    def _schedule_fetch(self, kid: bytes) -> None:
        if kid in self._fetching:
            return
        seen = self._missing.get(kid)
        if seen is not None and self._clock() - seen < FETCH_BACKOFF:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._fetching.add(kid)
        task = loop.create_task(self._fetch(kid), name=f"creds-{kid.hex()}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch(self, kid: bytes) -> None:
        try:
            start = self._current
            assert start is not None
            found = await self.client.creds(
                self.group, sender_ids=[kid], sign_alg=start.material.sign_alg
            )
            info = found.get(kid)
            current = self._current
            if info is None:
                self._missing[kid] = self._clock()
            elif current is not None and current.material.num == start.material.num:
                peers = {**current.material.peers, kid: info}
                current.material = replace(current.material, peers=peers)
                self._save()
        except (GroupOscoreError, OSError) as e:
            log.info("fetching the credential of %s failed: %s", kid.hex(), e)
            self._missing[kid] = self._clock()
        finally:
            self._fetching.discard(kid)

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

    def _load_state(self) -> mb.MemberState | None:
        if not self.state_path.exists():
            return None
        state = mb.load_state(self.state_path)
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
        state = mb.MemberState(
            node=self.client.node,
            material=material,
            private_key=key,
            credential=self._credential,
            scope=self._scope or b"\x80",
            client_nonce=self._client_nonce,
            ssn_reserved=reserved,
        )
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        mb.save_state(self.state_path, state)

    def __repr__(self) -> str:
        where = "-" if self._current is None else repr(self._current.context)
        return f"<GroupMember {self.client.node} in {self.group} {where}>"


def member_sequence(
    material: mb.GroupKeyingMaterial, store: SequenceNumberStore, step: int = 256
) -> SenderSequence | None:
    """The member's Sender Sequence Number for this material, reserved in ``store`` (one
    key per group, Gid and Sender ID, so numbers restart only with new keys)."""
    if material.sender_id is None:
        return None
    key = f"group/{material.group}/{material.gid.hex()}/{material.sender_id.hex()}"
    return SenderSequence(store=store, key=key, step=step)


def context_from_state_file(
    path: str | os.PathLike[str], *, replay_windows_valid: bool = True, **overrides: Any
) -> GroupContext:
    """The group context a member's state file (``grouposcore join --state``) describes,
    for one-shot tools that do not follow the Group Manager: the sequence numbers continue
    from the same reservation file a :class:`GroupMember` uses (``PATH.seq``), so the two
    never reuse a nonce between them."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ManagerMessageError(f"cannot read member state {path}: {exc}") from exc
    if mode & 0o006:
        raise ManagerMessageError(f"{path} is accessible by other users; run: chmod 600 {path}")
    try:
        state = mb.load_state(path)
    except OSError as exc:
        raise ManagerMessageError(f"cannot read member state {path}: {exc}") from exc
    sequence = member_sequence(state.material, FileSequenceStore(str(path) + ".seq"))
    return mb.group_context(
        state.material, private_key=state.private_key, credential=state.credential,
        sequence=sequence, replay_windows_valid=replay_windows_valid, **overrides,
    )

