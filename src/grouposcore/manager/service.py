"""The Group Manager on the network: the /ace-group tree on a transport Endpoint over OSCORE.

This is the thin edge around the sans-I/O :class:`~grouposcore.manager.core.GroupManager`:

* every node talks to the GM over its own RFC 8613 context, built from the commissioning
  material in the store; the context that verified a request *is* the node's identity, so
  the security hook tags each verified request with the node name before any resource sees
  it;
* the resource tree is dynamic (one subtree per group and node), so the site resolves
  ``/ace-group/...`` paths on demand and keeps resource objects only where Observe needs
  them (/ace-group/GROUPNAME, /num, /active, /nodes/NODENAME);
* the core's notifications are queued per (node, path), and only that node's observers of
  that path are re-rendered, so each member gets its own rekeying message (with the stale
  Sender IDs) or its eviction (4.04). Nodes that poll simply GET the current material.

The GM's sender sequence numbers for the channels are claimed in blocks from the store, and
contexts loaded at start-up begin with invalid replay windows (RFC 8613 Appendix B.1.2), so
a restarted GM answers each node's first request with an Echo challenge. Claiming (rather
than reserving past a number read at start-up) keeps the Partial IVs of several GM processes
serving one database apart: each process numbers its notifications from blocks no other
process holds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from grouposcore.coap import Code as CoapCode
from grouposcore.coap import Message
from grouposcore.edhoc.coap import (
    OPTION_EDHOC,
    WELL_KNOWN_EDHOC,
    CombinedRequestError,
    EdhocResource,
    take_combined,
)
from grouposcore.edhoc.protocol import Established
from grouposcore.errors import EdhocError, OscoreError, ReplayError, SequenceNumberExhausted
from grouposcore.manager.admin import RT_GROUP_COLLECTION
from grouposcore.manager.core import GmResponse, GroupManager, Notification
from grouposcore.manager.edhoc_gm import GmEdhoc
from grouposcore.manager.params import Code, Param, loads_strict
from grouposcore.manager.store import ChannelMaterial, GroupRecord, Store
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.option import piv_to_int
from grouposcore.oscore.security import ServerSecurity
from grouposcore.oscore.sequence import SenderSequence
from grouposcore.transport import Endpoint, Protection, Resource, Site

__all__ = ["GroupManagerService", "NodeRequest"]

log = logging.getLogger(__name__)

RT_GROUP_MEMBERSHIP = "core.osc.gm"
#: Partial IVs per channel that GM processes on a shared database remember together
REPLAY_WINDOW = 32


@dataclass(slots=True, repr=False)
class NodeRequest(Message):
    """A request that verified under a node's channel context: ``node`` is who sent it."""

    node: str | None = field(default=None, compare=False)


def _sequence_key(material: ChannelMaterial) -> str:
    # New commissioning material means new keys, so its numbering may start again.
    digest = hashlib.sha256(material.master_secret + material.master_salt).hexdigest()[:16]
    return f"channel/{material.node}/{digest}"


class ClaimedSequence(SenderSequence):
    """A sender sequence drawn in blocks of ``step`` claimed from the store.

    Each block is claimed in one store transaction, so no two GM processes on one database
    (and no restart of either) ever hold the same number for one channel's Sender ID.
    """

    __slots__ = ("_claims",)

    def __init__(self, store: Store, key: str, step: int) -> None:
        super().__init__(key=key, step=step)
        self._claims = store

    def next(self) -> int:
        """Take the next number; claim a fresh block when the current one is used up."""
        seq = self._next
        if seq >= self._limit:
            seq = self._claims.claim(self.key, self.step)
            self._limit = seq + self.step
        if seq > self.limit_max:
            raise SequenceNumberExhausted(
                "sender sequence number exhausted: a new Sender ID or Security Context is needed"
            )
        self._next = seq + 1
        return seq

    @property
    def exhausted(self) -> bool:
        """Whether the next number needs a fresh block."""
        return self._next >= self._limit

    def grant(self, first: int) -> None:
        """Take the block starting at ``first``, claimed for this sequence by the caller."""
        self._next = first
        self._limit = first + self.step

    def peek(self) -> int:
        """The number :meth:`next` would take now (a later claim may only be higher)."""
        if self._next < self._limit:
            return self._next
        return self._claims.load(self.key) or 0


class _ChannelSecurity:
    """The transport's server security hook: OSCORE channels, requests tagged with the node.

    With a shared store (several GM processes on one database) each process keeps its own
    replay windows, so a request that one process accepted could be replayed to another.
    Every verified request's Partial IV is therefore also claimed in the store, and a
    number any process saw before is refused as a replay.
    """

    def __init__(self, shared: Store | None = None) -> None:
        self.oscore = ServerSecurity()
        self.nodes: dict[int, str] = {}
        #: completes an EDHOC + OSCORE combined request (RFC 9668), returning the plain one
        self.combined: Callable[[Message], Message] | None = None
        self.keys: dict[int, str] = {}
        self.shared = shared

    def add(self, node: str, context: SecurityContext, key: str = "") -> None:
        self.oscore.add(context)
        self.nodes[id(context)] = node
        self.keys[id(context)] = key

    def remove(self, context: SecurityContext) -> None:
        self.oscore.remove(context)
        self.nodes.pop(id(context), None)
        self.keys.pop(id(context), None)

    def _claim(self, binding: Any) -> None:
        """Refuse a request another GM process on the shared database already accepted."""
        key = self.keys.get(id(getattr(binding, "context", None)))
        if self.shared is None or not key:
            return
        try:
            fresh = self.shared.fresh_request(key, piv_to_int(binding.request_piv),
                                              REPLAY_WINDOW)  # fmt: skip
        except self.shared.failures as e:
            log.warning("cannot check the request against other GM processes: %s", e)
            failure = OscoreError("store unavailable")
            failure.coap_code = CoapCode.SERVICE_UNAVAILABLE
            failure.diagnostic = "Try again later"
            raise failure from None
        if not fresh:
            replay = ReplayError("Partial IV seen by another GM process")
            replay.binding = binding  # answered protected
            raise replay

    def node_of(self, binding: Any) -> str | None:
        context = getattr(binding, "context", None)
        return None if context is None else self.nodes.get(id(context))

    def unprotect_request(self, request: Message) -> tuple[Message, Any] | None:
        if self.combined is not None and OPTION_EDHOC in request.options:
            request = self.combined(request)
        result = self.oscore.unprotect_request(request)
        if result is None:
            return None
        plain, binding = result
        self._claim(binding)
        tagged = NodeRequest(
            code=plain.code,
            mtype=plain.mtype,
            mid=plain.mid,
            token=plain.token,
            options=plain.options,
            payload=plain.payload,
            remote=plain.remote,
            node=self.node_of(binding),
        )
        return tagged, binding

    def protect_response(self, response: Message, binding: Any) -> Message:
        return self.oscore.protect_response(response, binding)


class _GmResource(Resource):
    """One /ace-group path; rendering is the core's ``handle`` for the tagged node."""

    def __init__(self, service: GroupManagerService, path: tuple[str, ...], **attrs: Any):
        super().__init__(protection=service.protection, **attrs)
        self._service = service
        self.path = path

    async def render(self, request: Message) -> Message:
        return self._service.serve(self.path, request)


class _GmSite(Site):
    """A site whose /ace-group subtree is resolved by the service instead of a fixed table."""

    def __init__(self, service: GroupManagerService) -> None:
        super().__init__()
        self._service = service

    def lookup(self, path: Iterable[str]) -> Resource | None:
        parts = tuple(path)
        found = super().lookup(parts)
        if found is not None or not parts:
            return found
        if parts[0] == "manage" and len(parts) == 2:
            return _GmResource(self._service, parts, hidden=True)
        if parts[0] != "ace-group":
            return found
        return self._service.resource(parts)


class GroupManagerService:
    """Serves a :class:`GroupManager` to nodes over their commissioned OSCORE channels."""

    def __init__(
        self,
        gm: GroupManager,
        *,
        sequence_step: int = 64,
        notify_batch: int = 64,
        notify_interval: float = 0.0,
    ) -> None:
        if notify_batch < 1 or notify_interval < 0:
            raise ValueError("notify_batch must be >= 1 and notify_interval >= 0")
        self.gm = gm
        self._security = _ChannelSecurity(gm.store if gm.store.shared else None)
        self._contexts: dict[str, SecurityContext] = {}
        self._sequence_step = sequence_step
        self._pending: dict[tuple[str, tuple[str, ...]], tuple[Notification, int | None]] = {}
        #: (node, path) whose observers still have to be woken, in the order queued
        self._due: dict[tuple[str, tuple[str, ...]], None] = {}
        self._notify_batch = notify_batch
        self._notify_interval = notify_interval
        self._flush_task: asyncio.Task[None] | None = None
        self._last_num: tuple[bytes, int | None] = (b"", None)
        self.protection = Protection(oscore=True, accept=self._accepts)
        self.site = _GmSite(self)
        # The admin interface (draft-ietf-ace-oscore-gm-admin): same channels, same site.
        self.site.add(("manage",), _GmResource(self, ("manage",), rt=RT_GROUP_COLLECTION))
        self.endpoint: Endpoint | None = None
        #: EDHOC (RFC 9528): nodes admitted by credential get their channel at /.well-known/edhoc
        self.edhoc = GmEdhoc(gm)
        edhoc = EdhocResource(lambda: self.edhoc.sessions, self._edhoc_done)
        self.site.add(WELL_KNOWN_EDHOC, edhoc)
        self._security.combined = self._edhoc_combined
        for material in gm.store.channels():
            self._install(material, restarted=True)
        for g in gm.store.groups():
            self.resource(("ace-group", g.name))

    @property
    def server_security(self) -> _ChannelSecurity:
        """The hook to give an Endpoint (``start`` does that)."""
        return self._security

    async def start(self, bind: tuple[str, int] = ("::", 0)) -> Endpoint:
        """Bind an endpoint serving the GM's site."""
        self.endpoint = await Endpoint.create(bind, site=self.site, server_security=self._security)
        host, port = self.endpoint.address[:2]
        self.gm.base_uri = f"coap://[{host}]:{port}" if ":" in host else f"coap://{host}:{port}"
        return self.endpoint

    async def close(self) -> None:
        """Stop serving (the store stays open; the GroupManager owns it)."""
        self._due.clear()
        if self._flush_task is not None:
            self._flush_task.cancel()
            await asyncio.gather(self._flush_task, return_exceptions=True)
        if self.endpoint is not None:
            await self.endpoint.close()
            self.endpoint = None

    # --- administration that changes what nodes see ---------------------------------------

    def commission(self, node: str, **kwargs: Any) -> ChannelMaterial:
        """New channel material for ``node``; the running service switches to it at once."""
        material = self.gm.commission_node(node, **kwargs)
        self._install(material, restarted=False)
        return material

    def create_group(self, name: str, **kwargs: Any) -> GroupRecord:
        """Create a group and publish its resource (rt=core.osc.gm in /.well-known/core)."""
        record = self.gm.create_group(name, **kwargs)
        self.resource(("ace-group", name))
        return record

    def evict(self, group: str, node: str, *, revoke: bool = True) -> None:
        """Evict and rekey; the notifications go out to the observers."""
        self.deliver(self.gm.evict(group, node, revoke=revoke))

    def rekey(self, group: str) -> None:
        """Rekey and notify."""
        self.deliver(self.gm.rekey(group))

    def set_active(self, group: str, active: bool) -> None:
        """(De)activate and notify observers of /active."""
        self.deliver(self.gm.set_active(group, active))

    # --- requests and notifications -------------------------------------------------------

    def serve(self, path: tuple[str, ...], request: Message) -> Message:
        """Answer one verified request on ``path`` (also the re-rendering for observers)."""
        node = getattr(request, "node", None)
        if node is None:
            return Message(CoapCode.UNAUTHORIZED, payload=b"no channel identity")
        if request.options.observe == 0:
            queued = self._take_pending(node, path)
            if queued is not None:
                return self._message(GmResponse(queued.code, queued.payload, queued.content_format))
        response = self.gm.handle(
            node, request.code, path, request.payload, request.options.content_format
        )
        self.deliver(response.notifications)
        return self._message(response)

    def deliver(self, notes: Iterable[Notification]) -> None:
        """Queue each notification for its node and wake that node's observers.

        ``notify_batch`` nodes are woken at once, the rest by a flush that wakes as many per
        loop iteration (``notify_interval`` apart): a rekeying of a large group goes out in
        parallel but paced, and the notifications of back-to-back changes (joins that each
        rekey) coalesce while the flush runs, each node getting only the newest message
        queued for it. Nothing older than what the store holds is sent (see
        :meth:`_take_pending`); a member that sees its version jump catches up over
        /stale-sids (digest §8.2 step 5). Without a running event loop every observer is
        woken at once.
        """
        for note in notes:
            paths = {note.path}
            if note.code == Code.NOT_FOUND:  # eviction: end the group observation too
                paths.add(("ace-group", note.group))
            num = self._num_of(note)
            for path in paths:
                key = (note.node, path)
                self._pending[key] = (note, num)
                self._due[key] = None
        if self._flush_task is not None or not self._due:
            return  # a running flush takes what was queued
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._wake(self._take_due(len(self._due)))
            return
        # The first batch at once, before the response that caused it leaves (a small
        # group hears of new keys before the joiner can use them); the rest paced.
        self._wake(self._take_due(self._notify_batch))
        if self._due:
            self._flush_task = loop.create_task(self._flush())

    def _take_due(self, count: int) -> list[tuple[str, tuple[str, ...]]]:
        batch: list[tuple[str, tuple[str, ...]]] = []
        for key in self._due:
            if len(batch) >= count:
                break
            batch.append(key)
        for key in batch:
            del self._due[key]
        return batch

    async def _flush(self) -> None:
        """Wake the remaining due observers in batches, one batch per loop iteration."""
        try:
            while self._due:
                # let the woken observers render and send before the next batch
                await asyncio.sleep(self._notify_interval)
                self._wake(self._take_due(self._notify_batch))
        finally:
            self._flush_task = None

    def _wake(self, keys: list[tuple[str, tuple[str, ...]]]) -> None:
        """Trigger the observers of each (node, path), one pass over each path's observers."""
        self._claim_blocks({node for node, _ in keys})
        by_path: dict[tuple[str, ...], set[str]] = {}
        for node, path in keys:
            by_path.setdefault(path, set()).add(node)
        for path, nodes in by_path.items():
            resource = self.site.lookup(path)
            for obs in resource.observers if resource is not None else ():
                if getattr(obs.request, "node", None) in nodes and obs.trigger:
                    obs.trigger(obs)

    def resource(self, path: tuple[str, ...]) -> Resource:
        """The resource object for ``path``; observable ones are kept for their observers."""
        observable = (
            (len(path) == 2)
            or (len(path) == 3 and path[2] in ("num", "active"))
            or (len(path) == 4 and path[2] == "nodes")
        )
        group = self.gm.store.group(path[1]) if len(path) > 1 else None
        if observable and group is not None and (len(path) != 4 or path[3] in self._contexts):
            res = _GmResource(
                self,
                path,
                observable=True,
                rt=RT_GROUP_MEMBERSHIP if len(path) == 2 else None,
                hidden=len(path) != 2,
            )
            self.site.add(path, res)
            return res
        return _GmResource(self, path, hidden=True)

    # --- internals --------------------------------------------------------------------------

    def _claim_blocks(self, nodes: set[str]) -> None:
        """Claim the sequence-number blocks the notifications to ``nodes`` will need in one
        store transaction, rather than one transaction (and commit) per member."""
        empty: dict[str, ClaimedSequence] = {}
        for node in nodes:
            context = self._contexts.get(node)
            sequence = context.sequence if context is not None else None
            if isinstance(sequence, ClaimedSequence) and sequence.exhausted:
                empty[sequence.key] = sequence
        if len(empty) < 2:
            return  # one claim is what the sequence does by itself
        try:
            firsts = self.gm.store.claim_many(sorted(empty), self._sequence_step)
        except self.gm.store.failures as e:
            log.warning("cannot claim sequence numbers in advance: %s", e)
            return  # each notification claims its own block (or fails) as before
        for key, first in firsts.items():
            empty[key].grant(first)

    def _accepts(self, binding: Any) -> bool:
        return self._security.node_of(binding) is not None

    def _install(self, material: ChannelMaterial, *, restarted: bool) -> None:
        old = self._contexts.pop(material.node, None)
        if old is not None:
            self._security.remove(old)
        context = material.context(
            as_gm=True,
            sequence=ClaimedSequence(self.gm.store, _sequence_key(material), self._sequence_step),
            replay_window_valid=not restarted,
        )
        self._contexts[material.node] = context
        self._security.add(material.node, context, _sequence_key(material))

    def _edhoc_done(self, established: Established) -> None:
        self.adopt_channel(self.edhoc.channel(established))

    def _edhoc_combined(self, request: Message) -> Message:
        plain, established = take_combined(request, self.edhoc.sessions)
        try:
            self._edhoc_done(established)
        except EdhocError as e:
            raise CombinedRequestError(str(e)) from None
        return plain

    def adopt_channel(self, material: ChannelMaterial) -> None:
        """Serve a channel stored meanwhile (an EDHOC run made it) from now on."""
        self._install(material, restarted=False)

    def _num_of(self, note: Notification) -> int | None:
        if note.code != Code.CONTENT or len(note.path) != 2:
            return None
        last_payload, last_num = self._last_num
        if note.payload is last_payload:  # a rekeying sends one payload to every member
            return last_num
        body = loads_strict(note.payload, "notification")  # our own encoding
        num = body.get(Param.NUM) if isinstance(body, dict) else None
        result = num if isinstance(num, int) else None
        self._last_num = (note.payload, result)
        return result

    def _take_pending(self, node: str, path: tuple[str, ...]) -> Notification | None:
        entry = self._pending.pop((node, path), None)
        if entry is None:
            return None
        note, num = entry
        if num is not None:
            group = self.gm.store.group(note.group)
            if group is None or group.num != num:
                return None  # superseded: render the current state instead
        return note

    @staticmethod
    def _message(response: GmResponse) -> Message:
        msg = Message(response.code, payload=response.payload)
        if response.content_format is not None:
            msg.options.content_format = response.content_format
        if response.location_path:
            msg.options.location_path = list(response.location_path)
        if response.max_age is not None:
            msg.options.max_age = response.max_age
        return msg
