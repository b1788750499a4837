"""The asyncio edge of firmware push: the sender on an Endpoint, the /fw resource on members.

The message formats and state machines are in :mod:`grouposcore.push.protocol`; this module
moves the messages and paces them.

Sender (:func:`push_file`): the author-signed SUIT manifest first, then DATA blocks (each
with its hash-tree proof) as fire-and-forget group requests in bursts, at a rate that
follows the members' reports at checkpoints. Then rounds of: a multicast STATUS collecting
REPORTs (asked twice), and unicast pairwise repairs (NON, No-Response, round robin over the
members) of the blocks each member's latest report marks missing. Rounds end when every
member is complete or refused the manifest, or when no member got closer for a while.

Member (:class:`FirmwareResource`): a manifest is verified against the trusted author keys
and the installed version, each block against the manifest on arrival, STATUS answered
with a REPORT. Which member sent a request and in which mode comes from
:class:`SenderTagging`, a wrapper around any server security hook that puts the verified
Sender ID on the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from grouposcore.coap import Code, Message
from grouposcore.errors import GroupOscoreError, PushError, RequestTimeout
from grouposcore.oscore.common import ResponseInfo, ServerBinding
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import ClientSecurity, VerifiedMessage
from grouposcore.push.protocol import (
    MANIFEST_EVERY,
    NO_RESPONSE_ALL,
    Data,
    ManifestMsg,
    PushReceiver,
    PushSender,
    ReportState,
    Status,
    decode,
)
from grouposcore.push.suit import Manifest
from grouposcore.transport import Endpoint, Protection, Resource

__all__ = [
    "FirmwareResource",
    "OscoreServerHook",
    "PushResult",
    "SenderTagging",
    "block_size_for",
    "payload_limit",
    "push_file",
]

log = logging.getLogger(__name__)

FW_PATH = ("fw",)


class OscoreServerHook(Protocol):
    """A server security hook whose bindings are OSCORE :class:`ServerBinding` objects
    (:class:`grouposcore.oscore.security.ServerSecurity`, or a wrapper around one)."""

    def unprotect_request(self, request: Message) -> tuple[Message, ServerBinding] | None: ...

    def protect_response(self, response: Message, binding: ServerBinding) -> Message: ...


class SenderTagging:
    """Wraps a server security hook so verified requests carry who sent them and how.

    The resource then sees a :class:`VerifiedMessage` whose ``security`` holds the
    requester's Sender ID and whether the request came in group mode.
    """

    def __init__(self, inner: OscoreServerHook) -> None:
        self.inner = inner

    def unprotect_request(self, request: Message) -> tuple[Message, ServerBinding] | None:
        result = self.inner.unprotect_request(request)
        if result is None:
            return None
        plain, binding = result
        info = ResponseInfo(binding.request_kid, bool(binding.group_mode), binding.request_piv)
        tagged = VerifiedMessage(
            code=plain.code, mtype=plain.mtype, mid=plain.mid, token=plain.token,
            options=plain.options, payload=plain.payload, remote=plain.remote, security=info,
        )  # fmt: skip
        return tagged, binding

    def protect_response(self, response: Message, binding: ServerBinding) -> Message:
        return self.inner.protect_response(response, binding)


class FirmwareResource(Resource):
    """``/fw`` on a member: MANIFEST and DATA (group mode, or pairwise for repairs) are
    checked against the trusted author keys and the manifest, STATUS is answered with a
    REPORT. Only OSCORE-verified requests get here, so the Sender ID is authentic; the
    manifest names which Sender IDs may distribute it.

    ``senders`` further limits who may push (Sender IDs); ``on_complete(tid, data)`` runs
    once per image that matched its manifest.
    """

    protection = Protection(oscore=True, group=True)
    hidden = False
    rt = "grouposcore.fw"

    def __init__(
        self,
        receiver: PushReceiver,
        *,
        senders: Iterable[bytes] | None = None,
        on_complete: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        super().__init__()
        self.receiver = receiver
        self.senders = None if senders is None else set(senders)
        self.on_complete = on_complete
        self.rejected = 0
        #: transfer id -> how many REPORTs saying "complete" went out (a member that wants to
        #: exit after one file waits until the sender could have heard it)
        self.completion_reports: dict[bytes, int] = {}
        self._announced: set[bytes] = set()

    def _announce(self, tid: bytes) -> None:
        result = self.receiver.file(tid)
        if result is not None and tid not in self._announced:
            self._announced.add(tid)
            if self.on_complete is not None:
                self.on_complete(tid, result)

    async def render_post(self, request: Message) -> Message:
        info = getattr(request, "security", None)
        if not isinstance(info, ResponseInfo):
            return Message(Code.UNAUTHORIZED, payload=b"needs SenderTagging security")
        if self.senders is not None and info.sender_id not in self.senders:
            return Message(Code.FORBIDDEN, payload=b"not an allowed firmware sender")
        report = None
        try:
            msg = decode(request.payload)
            if isinstance(msg, Data):
                self.receiver.on_data(msg, info.sender_id)
            elif isinstance(msg, ManifestMsg):
                self.receiver.on_manifest(msg.tid, msg.envelope, info.sender_id)
            elif isinstance(msg, Status):
                report = self.receiver.on_status(msg, info.sender_id)
            else:
                raise PushError("a member only takes MANIFEST, DATA and STATUS")
        except PushError as exc:
            self.rejected += 1
            log.info("rejected push message from %s: %s", info.sender_id.hex(), exc)
            return Message(Code.BAD_REQUEST, payload=str(exc).encode())
        self._announce(msg.tid)
        if request.options.no_response == NO_RESPONSE_ALL:
            return Message(Code.CHANGED)  # suppressed by the endpoint: no report needed
        if report is None:
            report = self.receiver.report(msg.tid)
        if report.state is ReportState.COMPLETE:
            self.completion_reports[msg.tid] = self.completion_reports.get(msg.tid, 0) + 1
        return Message(Code.CHANGED, payload=report.encode())


# --- sender ---------------------------------------------------------------------------------


@dataclass
class PushResult:
    """How a push ended."""

    sender: PushSender
    seconds: float
    blocks_sent: int
    repairs_sent: int
    rounds: int
    addresses: dict[bytes, tuple[str, int]] = field(default_factory=dict)
    #: Sender ID -> a name to show (from the security file's peers, or the demo's names)
    names: dict[bytes, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.sender.done

    def name(self, sid: bytes) -> str:
        return self.names.get(sid) or sid.hex() or "-"

    def as_dict(self) -> dict[str, Any]:
        s = self.sender
        return {
            "ok": self.ok,
            "tid": s.tid.hex(),
            "sequence": s.manifest.sequence,
            "size": len(s.data),
            "blocks": s.nblocks,
            "block_size": s.block_size,
            "sha256": s.digest.hex(),
            "seconds": round(self.seconds, 3),
            "blocks_sent": self.blocks_sent,
            "repairs_sent": self.repairs_sent,
            "rounds": self.rounds,
            "members": [
                {
                    "name": self.name(sid),
                    "sender_id": sid.hex(),
                    "state": p.state.value,
                    "expected": sid in s.expected,
                    "installed": p.installed,
                    # complete means the member matched the image against the manifest's
                    # digest, which is this file's
                    "sha256": s.digest.hex() if p.complete else None,
                    "repairs": p.repairs,
                    "missing": p.missing_count,
                }
                for sid, p in sorted(s.members.items())
            ],
        }


ProgressCallback = Callable[[str, PushSender, int, int], None]

#: Room the DATA header takes next to the chunk and its proof: array and kind (2), tid (17),
#: index (5), the chunk's byte-string head (3) and the proof's array head (3)
DATA_OVERHEAD = 30
#: what one proof entry costs: a 32-byte hash and its byte-string head
PROOF_ENTRY = 34


def block_size_for(size: int, limit: int = 1024) -> int:
    """The largest block size whose DATA payload (chunk, header and the proof a file of
    ``size`` bytes needs) fits ``limit`` bytes: one CoAP block, so a repair never turns
    into a block-wise exchange."""
    bs = limit - DATA_OVERHEAD
    for _ in range(8):
        nblocks = max(1, -(-size // bs))
        depth = (nblocks - 1).bit_length()
        fit = limit - DATA_OVERHEAD - PROOF_ENTRY * depth
        if fit == bs:
            break
        bs = fit
    if bs < 16:
        raise PushError(f"a file of {size} bytes needs proofs too long for {limit}-byte blocks")
    return bs


def payload_limit(endpoint: Endpoint) -> int:
    """The largest DATA payload that is still one CoAP block of ``endpoint``."""
    return 16 << endpoint.blockwise.szx


def _request(path: Iterable[str], payload: bytes, *, no_response: bool) -> Message:
    msg = Message(Code.POST, payload=payload)
    msg.options.uri_path = list(path)
    if no_response:
        msg.options.no_response = NO_RESPONSE_ALL
    return msg


def _securities(source: Any) -> tuple[GroupContext, Any, Callable[[bytes], Any]]:
    """(context, group-mode security, pairwise security per member) of a GroupContext or of
    a member object with ``context`` and ``client_security(pairwise_with=...)`` (GroupMember)."""
    if isinstance(source, GroupContext):
        ctx = source
        return ctx, ClientSecurity(ctx), lambda sid: ClientSecurity(ctx, pairwise_with=sid)
    return (
        source.context,
        source.client_security(),
        (lambda sid: source.client_security(pairwise_with=sid)),
    )


class _Pacer:
    """At most ``rate`` datagrams a second, in bursts of ``burst`` (one loop turn each)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.burst = max(1, burst)
        self.rate = rate
        self.pause = self.burst / rate if rate > 0 else 0.0
        self.count = 0

    def set_rate(self, rate: float) -> None:
        self.rate = rate
        self.pause = self.burst / rate if rate > 0 else 0.0

    def speed_up(self, ceiling: float) -> None:
        """A quarter faster, up to ``ceiling``."""
        if self.rate > 0:
            self.set_rate(min(ceiling, self.rate * 1.25))

    def settle_at(self, loss: float, floor: float) -> None:
        """Down to about what got through (with a margin), not below ``floor``."""
        if self.rate > 0:
            self.set_rate(max(floor, self.rate * (1.0 - loss) * 0.9))

    #: the lowest loss share seen so far: what the path loses whatever the rate
    baseline: float | None = None

    def observe(self, loss: float, floor: float, ceiling: float, *, grow: bool = True) -> None:
        """Follow a measured loss share. Only loss above the lowest share seen so far counts
        as overload (members losing blocks in full socket buffers): a lossy path loses
        its share at any rate, and slowing down for it would only make the push longer.
        More than 5 points above it: down to what got through; within 1 point: a quarter
        faster (``grow``)."""
        if self.baseline is None or loss < self.baseline:
            self.baseline = loss
        excess = loss - self.baseline
        if excess > 0.05:
            self.settle_at(excess, floor)
        elif excess <= 0.01 and grow:
            self.speed_up(ceiling)

    async def tick(self) -> bool:
        self.count += 1
        if self.count % self.burst:
            return False
        await asyncio.sleep(self.pause)
        return True


async def push_file(
    endpoint: Endpoint,
    source: Any,
    data: bytes,
    group: tuple[str, int],
    *,
    manifest: Manifest,
    members: Iterable[bytes] | None = None,
    path: Iterable[str] = FW_PATH,
    rate: float = 1000.0,
    min_rate: float = 100.0,
    max_rate: float = 20000.0,
    burst: int = 8,
    checkpoint: int = 256,
    status_timeout: float = 2.0,
    settle: float = 0.05,
    patience: int = 8,
    max_rounds: int | None = None,
    interface: int | str | None = None,
    on_progress: ProgressCallback | None = None,
    names: dict[bytes, str] | None = None,
) -> PushResult:
    """Send ``data``, described by the author-signed ``manifest``, to every member of the
    group via ``group`` (a multicast address).

    ``source`` is the sender's :class:`GroupContext` or a GroupMember (whose security
    follows rekeyings). ``members`` (Sender IDs) must end with the image; by default every
    member the context knows. ``on_progress(phase, sender, blocks_sent, repairs_sent)`` is
    called as blocks go out and reports come in. The result's ``ok`` says whether every
    expected member reported the image complete (or already installed).

    A STATUS carrying the manifest goes first (its answers include Echo challenges from
    members that need to check our freshness before they accept blocks), then the manifest
    again every :data:`MANIFEST_EVERY` blocks; every STATUS carries it.

    ``rate`` (blocks per second) is where sending starts; at checkpoints (after 32, 64,
    128, ... then every ``checkpoint`` blocks) the first quarter of the members to report
    say how much they lost, and the rate follows the loss above the lowest share seen (the
    path's own loss, which slowing down would not cure): down to about what got through,
    not below ``min_rate``; up by a quarter when within a point of it, to ``max_rate``.

    Then rounds: a STATUS (asked twice for members that did not answer the first), and
    unicast pairwise repairs, round robin, of what each member still misses according to
    its latest report (this round's or, when its report was lost, an earlier one). Rounds
    go on until every member is complete or refused, or for ``patience`` rounds in a row
    no member got closer (or after ``max_rounds``, when given).
    """
    path = tuple(path)
    context, group_security, pairwise_security = _securities(source)
    expected = list(context.recipients) if members is None else list(members)
    sender = PushSender(data, manifest, members=expected)
    limit = payload_limit(endpoint)
    if len(sender.block(0)) > limit:
        raise PushError(
            f"blocks of {sender.block_size} bytes with their proofs do not fit "
            f"one CoAP block of {limit} bytes; at most "
            f"{block_size_for(len(data), limit)} for this file"
        )
    start = time.perf_counter()
    sent = 0
    repairs = 0
    addresses: dict[bytes, tuple[str, int]] = {}
    pacer = _Pacer(rate, burst)

    def progress(phase: str) -> None:
        if on_progress is not None:
            on_progress(phase, sender, sent, repairs)

    async def multicast(payload: bytes) -> None:
        msg = _request(path, payload, no_response=True)
        gen = endpoint.group_request(
            msg, group, timeout=0, security=group_security, interface=interface
        )
        async with contextlib.aclosing(gen):
            async for _ in gen:
                pass

    async def unicast(payload: bytes, remote: tuple[str, int], security: Any) -> None:
        # NON with No-Response: nothing comes back, so a zero timeout sends and returns.
        msg = _request(path, payload, no_response=True)
        with contextlib.suppress(RequestTimeout):
            await endpoint.request(msg, remote, timeout=0, confirmable=False, security=security)

    def record(resp: Message) -> bytes | None:
        info = getattr(resp, "security", None)
        if info is None or resp.code != Code.CHANGED:
            return None
        try:
            p = sender.on_report(info.sender_id, resp.payload)
        except PushError as exc:
            log.info("bad report from %s: %s", info.sender_id.hex(), exc)
            return None
        if resp.remote is not None:
            host = resp.remote[0]
            addresses[info.sender_id] = (host, p.port) if p.port else tuple(resp.remote)
        sid: bytes = info.sender_id
        return sid

    wait = status_timeout
    slowest = 0.0

    async def ask(quorum: int | None = None) -> set[bytes]:
        """One STATUS to the group; the members that reported before the deadline (or
        once ``quorum`` of them did)."""
        nonlocal wait, slowest
        msg = _request(path, sender.status(), no_response=False)
        waiting = set(sender.pending())
        heard: set[bytes] = set()
        asked = time.perf_counter()
        gen = endpoint.group_request(
            msg, group, timeout=wait, security=group_security, interface=interface
        )
        async with contextlib.aclosing(gen):
            async for resp in gen:
                if quorum is None:  # a quorum's answers are the fastest, not the slowest
                    slowest = max(slowest, time.perf_counter() - asked)
                sid = record(resp)
                if sid is not None:
                    heard.add(sid)
                    waiting.discard(sid)
                if not waiting or (quorum is not None and len(heard) >= quorum):
                    break
        # Once members answered, later rounds wait twice the slowest answer seen, not the
        # full timeout, for a report that was lost.
        if slowest:
            wait = min(status_timeout, max(0.2, 2 * slowest + 0.05))
        return heard

    # 1. the manifest, then every block once over multicast, the manifest again now and
    # then; checkpoints adapt the rate
    # A first STATUS carries the manifest and is answered: a member whose replay window
    # for us is not valid yet (e.g. just after loading its security file) challenges it
    # with Echo, which the request layer answers, so the blocks after it are not dropped.
    await ask()
    await multicast(sender.manifest_message())
    next_checkpoint = min(32, checkpoint) if checkpoint else -1
    quorum = max(1, -(-len(sender.expected) // 4))
    lost_before: dict[bytes, int] = {}
    sent_before: dict[bytes, int] = {}
    for index in range(sender.nblocks):
        if index % MANIFEST_EVERY == MANIFEST_EVERY - 1:
            await multicast(sender.manifest_message())
        await multicast(sender.block(index))
        sent += 1
        if await pacer.tick():
            progress("data")
        if sent == next_checkpoint and sent < sender.nblocks:
            next_checkpoint = min(2 * sent, sent + checkpoint)
            heard = await ask(quorum)
            unsent = sender.nblocks - sent
            fresh = lost = 0
            for sid in heard:
                p = sender.members[sid]
                now = 0 if p.complete else max(0, (p.missing_count or 0) - unsent)
                lost += now - lost_before.get(sid, 0)
                fresh += sent - sent_before.get(sid, 0)
                lost_before[sid], sent_before[sid] = now, sent
            if fresh:
                pacer.observe(lost / fresh, min_rate, max_rate)
            progress("checkpoint")
    progress("data")

    # 2. rounds: who misses what, then unicast repairs of exactly that, until everyone is
    # done or nobody gets closer for ``patience`` rounds
    rounds = 0
    last_repairs = 0
    best: int | None = None
    stall = 0

    def outstanding() -> int:
        return sum(
            sender.nblocks if p.missing_count is None else p.missing_count
            for p in (sender.members[sid] for sid in sender.pending())
        )

    while not sender.finished and stall < patience and (max_rounds is None or rounds < max_rounds):
        rounds += 1
        heard = await ask()
        if sender.pending() and set(sender.pending()) - heard:
            heard |= await ask()  # a second chance for lost STATUS or REPORT datagrams
        progress("status")
        left = outstanding()
        if best is None or left < best:
            best, stall = left, 0
        else:
            stall += 1
        # Reports listing more than a quarter of what went out since the last round mean
        # the members could not keep up (or a lossy path): repair more slowly.
        missing = sum(
            len(sender.members[sid].missing) for sid in heard if not sender.members[sid].finished
        )
        delivered = sent * len(sender.expected) if rounds == 1 else last_repairs
        if delivered:
            pacer.observe(min(1.0, missing / delivered), min_rate, max_rate, grow=False)
        last_repairs = 0
        # Every member still missing blocks gets them, from its latest report: a member
        # whose report was lost this round still gets what it missed before (a few blocks
        # again that may have arrived since), unless it has been silent for three rounds.
        queues = []
        for sid in sender.pending():
            p = sender.members[sid]
            remote = addresses.get(sid)
            if remote is None or not p.missing or p.round < sender.round - 6:
                continue
            pairwise = context.pairwise_mode and sid in context.recipients
            security = pairwise_security(sid) if pairwise else group_security
            queues.append((p, remote, security, list(p.missing)))
        repair_pacer = _Pacer(pacer.rate * max(1, len(queues)), burst)
        for turn in range(max((len(q[3]) for q in queues), default=0)):
            for p, remote, security, todo in queues:
                if turn >= len(todo):
                    continue
                try:
                    await unicast(sender.block(todo[turn]), remote, security)
                except (GroupOscoreError, OSError) as exc:
                    log.info(
                        "repair of block %d to %s failed: %s", todo[turn], p.sender_id.hex(), exc
                    )
                    continue
                repairs += 1
                last_repairs += 1
                p.repairs += 1
                if await repair_pacer.tick():
                    progress("repair")
        if last_repairs:
            await asyncio.sleep(settle)  # let the last repairs land before asking again
    progress("done")
    return PushResult(
        sender, time.perf_counter() - start, sent, repairs, rounds, addresses, dict(names or {})
    )
