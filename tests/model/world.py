"""The pieces of the group model that are not rules: the GM link, datagrams, ground truth.

Everything here is sans-I/O. A member is the library's real :class:`GroupMember`; only its
link to the Group Manager is replaced by :class:`DirectClient`, which hands each request to
:meth:`GroupManager.handle` and queues the notifications the GM emits, so the model decides
when they arrive. The OSCORE channel between a node and the GM is not modelled (it is a plain
RFC 8613 context with its own tests); the group traffic is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from grouposcore.coap import Message
from grouposcore.manager import member as mb
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.core import GroupManager, Notification
from grouposcore.manager.params import Code
from grouposcore.oscore.option import decode_option

#: Size of the replay windows the library uses by default (RFC 8613 recommends >= 32).
WINDOW = 32


class DirectClient(GroupManagerClient):
    """A GM client whose requests are direct calls of the GM's sans-I/O ``handle``.

    Only :meth:`request` is replaced: join, catch-up, credential fetches, renewal and leave
    run the library's own client code. Notifications go to ``notify`` (the model's queue).
    """

    def __init__(
        self, gm: GroupManager, node: str, notify: Callable[[Iterable[Notification]], None]
    ) -> None:
        # The base class would build the OSCORE channel to the GM; the direct link has none.
        self.gm = gm
        self.node = node
        self.timeout = None
        self._notify = notify

    async def request(
        self,
        method: int,
        path: Iterable[str],
        payload: bytes = b"",
        cf: int | None = None,
        *,
        ok: Iterable[int] = (Code.CONTENT,),
    ) -> Message:
        r = self.gm.handle(self.node, int(method), list(path), payload, cf)
        self._notify(r.notifications)
        msg = Message(r.code, payload=r.payload)
        if r.content_format is not None:
            msg.options.content_format = r.content_format
        if r.code not in tuple(ok):
            raise mb.parse_error(r.code, r.payload, r.content_format)
        return msg


@dataclass
class Datagram:
    """One protected message as the attacker recorded it, with the model's ground truth.

    ``origin`` is "honest" for what a member protected while it was a member, "outsider" for
    a forgery with keys the group never had, "evicted" for what a removed member protected
    with the keys it kept, "tampered" for a modified copy of another datagram.
    """

    index: int
    kind: str  # "req" or "resp"
    data: bytes
    origin: str
    sender: str
    gid: bytes
    sid: bytes
    piv: bytes | None
    app: str  # the application payload inside (unique per honest send, kept by Echo retries)
    #: requests: the group (None) or the one member (pairwise) it was sent to
    to: str | None = None
    #: responses: the exchange (client node, exchange id) it answers
    exchange: tuple[str, int] | None = None
    group_mode: bool = True
    echo_challenge: bool = False
    #: requests: the nodes that were members when it was protected (for backward security)
    members_then: frozenset[str] = frozenset()
    #: requests: an Echo retry of a server that had not answered the exchange, so the
    #: client cannot know whether that server executed the request before it lost its state
    retry: bool = False
    #: protected with keys the GM had already replaced (the sender missed a rekeying)
    stale_keys: bool = False


def option_of(data: bytes) -> tuple[bytes | None, bytes | None, bytes | None, bool]:
    """(piv, kid, kid_context, group flag) of a protected message's OSCORE option."""
    msg = Message.decode(data)
    value = msg.options.get(9)
    assert value is not None, "a protected message without OSCORE option"
    opt = decode_option(value)
    return opt.piv, opt.kid, opt.kid_context, opt.group


class ModelWindow:
    """What the specification says a receiver must remember about one sender, kept by the
    model independently of the library: valid or not, the lower limit set by Echo, and every
    sequence number delivered."""

    def __init__(self, valid: bool) -> None:
        self.valid = valid
        self.floor = -1
        self.seen: set[int] = set()

    def fresh(self, seq: int) -> bool:
        """True if the receiver is obliged to accept ``seq`` (valid window, in range)."""
        if not self.valid or seq <= self.floor or seq in self.seen:
            return False
        top = max(self.seen, default=-1)
        return seq > top - WINDOW

    def accept(self, seq: int) -> None:
        self.seen.add(seq)

    def initialise(self, seq: int) -> None:
        """An Echo exchange proved ``seq`` fresh: it becomes the lower limit."""
        self.valid = True
        self.floor = seq
        self.seen = {seq}


@dataclass
class Exchange:
    """A request a client keeps in RAM to match responses to (a long exchange)."""

    xid: int
    request: Message
    binding: Any
    security: Any
    app: str
    to: str | None
    gid: bytes
    session: int
    observe: bool = False
    #: an Echo retry sent to a server that had not answered this exchange before
    retried: bool = False
    #: Sender IDs of the servers whose responses (challenges included) it accepted
    answered: set[bytes] = field(default_factory=set)


@dataclass
class Observation:
    """A server's record of an Observe registration it accepted."""

    client: str
    xid: int
    binding: Any
    gid: bytes
    session: int
    sent: int = 0


@dataclass
class Node:
    """One node: its disk (state file, sequence file) and, while up, its RAM."""

    name: str
    roles: int
    state_path: str
    member: Any = None
    server: Any = None
    #: RAM: pending exchanges (client side) and accepted registrations (server side)
    exchanges: dict[int, Exchange] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    #: bumped whenever RAM is lost (restart, crash, re-join, membership end)
    session: int = 0
    #: the Group OSCORE context a removed member still holds (for the "evicted" attacker)
    kept_context: Any = None
    #: the GM's notifications to this node are lost until it polls (catch-up)
    lagging: bool = False

    @property
    def alive(self) -> bool:
        return self.member is not None and not self.member.terminated
