"""An adversarial model of a group over time (issue 9): the security state across restarts,
renewals, joins, leaves, evictions and rekeyings, with an attacker who records everything.

A hypothesis ``RuleBasedStateMachine`` drives the library's sans-I/O parts: a real
:class:`GroupManager` (through ``handle``), real :class:`GroupMember` objects (joining,
resuming from their state file and sequence file, installing rekeyings) and their real
client and server securities. Every protected message is a datagram the attacker records;
rules interleave honest traffic, Observe, restarts and crashes, membership changes and
attacks (delay, duplicate, reorder, replay to anyone, tamper, forge as an outsider, send and
eavesdrop with the keys of a removed member).

Invariants (checked as events happen; the list of violations is asserted after every step):

* no member delivers the same protected request twice, nor the same application request
  twice: the one exception is an Echo retry to a server whose answer the client never got
  (the server lost its state in a restart, the client cannot know whether it executed the
  request; RFC 9175 leaves that to the application); no client accepts a response twice;
* a request is delivered only while the receiver's replay window for its sender is valid
  (or it answers an Echo challenge) and only if it is fresh for that window;
* no honest sender uses the same (key, nonce) twice, across restarts and crashes:
  (Gid, Sender ID, Partial IV) for every message with a Partial IV, and at most one response
  without one per (responder, request);
* a removed member decrypts nothing protected with the new material; with backward security
  a joiner decrypts nothing protected before its join;
* nothing an outsider, a removed member or a tampering attacker produced is delivered or
  accepted, a pairwise request only by its addressee, a response only for its own request.
  (A member that missed the rekeying, see ``lose_notifications``, still holds the old keys:
  what a removed member sends with them reaches it until it polls; the model allows that.)
* liveness: an honest message that reaches a *synchronised* receiver is delivered exactly
  once (see :meth:`GroupModel._expect_request` and :meth:`GroupModel._expect_response`).

"Synchronised" (what the specification obliges a receiver to accept):
a request from S reaches V and V is a live member with a role that receives it (Responder or
Monitor; S a Requester), V holds the same keying material (Gid) the request was protected
with, V was a member when it was sent and knows S's credential, and V's replay window for S
is valid and the Partial IV is fresh in it (not at or below the lower limit an Echo set, not
delivered before, within the 32 newest). The model keeps its own windows: valid from the
installation of a new Gid (join, rekeying), invalid after a restart (RAM lost), made valid
again only by an Echo exchange; a member's own Sender ID renewal keeps them as they were
(RFC 10021 §2.6.3.1). On the direct path, a receiver whose window is invalid and that can
answer (a Responder with a Sender Context) is also synchronised if the client still has the
exchange and knows the responder's credential: it must challenge, and the client's Echo
retry must be delivered, exactly once.
A response is synchronised when it reaches the exchange it answers in the client's same
process, both hold the same Gid, the client knows the responder as a Responder, and its
Partial IV (or its absence) is fresh for that responder, exchange and Gid.

CI runs a bounded number of examples; ``GROUPOSCORE_MODEL_EXAMPLES`` and
``GROUPOSCORE_MODEL_STEPS`` run it long; ``GROUPOSCORE_MODEL_ALL_RULES=1`` enables the rules
listed in :data:`KNOWN_BUG_RULES` as well (``GROUPOSCORE_MODEL_ENABLE=name,...`` some of them).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from grouposcore.cli.security_files import load_group_context
from grouposcore.coap import Code, Message, Type
from grouposcore.cose import EDDSA, Credential
from grouposcore.errors import (
    FreshnessRequired,
    GroupManagerRequestError,
    GroupOscoreError,
    MembershipTerminated,
)
from grouposcore.manager.core import GroupManager, Notification
from grouposcore.manager.params import Role, tperm
from grouposcore.manager.runtime import GroupMember
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import ServerSecurity
from tests.model.world import (
    Datagram,
    DirectClient,
    Exchange,
    ModelWindow,
    Node,
    Observation,
    option_of,
)

#: Rules (or situations inside a rule) that hit a known bug on this branch, with the issue
#: item that fixes it. They are skipped until the fix is merged: delete the entry to
#: re-enable the rule (or set GROUPOSCORE_MODEL_ALL_RULES=1 to run everything).
KNOWN_BUG_RULES: dict[str, str] = {}
#: Rules whose bugs the model found and that are fixed (issue 9 items 1, 2 and 5): they run
#: in every example, and test_group_model_known.py replays each shrunk counterexample.
#: "renew_sender_id" (item 1), "one_shot_tool" (item 2), "notify_across_rekey" (item 5),
#: "rejoin_without_rekey": a member that lost its disk joined again under the same Gid with
#: fresh valid windows and delivered a captured request again; the GM now rekeys on the
#: re-join of a current member (digest §7.3 (c)), so "lose_disk_and_rejoin" runs without
#: backward security too.
#: The model's client answers an Echo challenge only from a server that has not answered
#: the exchange yet, as the endpoint's group exchange does since the model found that a
#: server that lost its state would otherwise execute a replayed request again.

GROUP = "g"
GRACE = 30.0
SEQUENCE_STEP = 3  # small reservations, so restarts and crashes cross block boundaries
RS = tperm([Role.REQUESTER, Role.RESPONDER])
NODES: dict[str, int] = {
    "a": RS,
    "b": RS,
    "c": tperm([Role.RESPONDER]),
    "mon": tperm([Role.MONITOR]),
    "d": RS,  # joins later
}
INITIAL = ("a", "b", "c", "mon")


def enabled(name: str) -> bool:
    """False for a rule listed in KNOWN_BUG_RULES, unless switched on: all of them with
    GROUPOSCORE_MODEL_ALL_RULES=1, some with GROUPOSCORE_MODEL_ENABLE=name,name."""
    chosen = os.environ.get("GROUPOSCORE_MODEL_ENABLE", "").split(",")
    return (
        os.environ.get("GROUPOSCORE_MODEL_ALL_RULES") == "1"
        or name in chosen
        or name not in KNOWN_BUG_RULES
    )


def event(name: str) -> None:
    """Count ``name`` in hypothesis' statistics (--hypothesis-show-statistics); nothing when
    a rule runs outside hypothesis (the replays in test_group_model_known.py)."""
    if currently_in_test_context():
        hypothesis_event(name)


def _has(roles: int, role: Role) -> bool:
    return bool(roles & (1 << role))


class GroupModel(RuleBasedStateMachine):
    """One group, its Group Manager, five nodes and an attacker, over time."""

    def __init__(self) -> None:
        super().__init__()
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = Path(tempfile.mkdtemp(prefix="gmodel-", dir=base))
        self.loop = asyncio.new_event_loop()
        self.now = 1_000_000.0
        self.gm: GroupManager | None = None
        self.backward = True
        self.nodes: dict[str, Node] = {}
        self.notes: list[Notification] = []
        self.datagrams: list[Datagram] = []
        self.violations: list[str] = []
        self.delivered: Counter[tuple[str, str]] = Counter()
        self.delivered_datagrams: Counter[tuple[str, int]] = Counter()
        self.accepted: Counter[tuple[str, str]] = Counter()
        self.nonces: set[tuple[Any, ...]] = set()
        self.windows: dict[tuple[str, bytes, bytes], ModelWindow] = {}
        self.lost: set[tuple[str, bytes]] = set()  # (node, Gid) whose RAM state was lost
        self.installed: dict[str, bytes] = {}  # node -> Gid the model last saw installed
        self.responses: dict[tuple[str, int, bytes, bytes], ModelWindow] = {}
        self.no_piv: set[tuple[str, int, bytes, bytes]] = set()
        self.removed_at: dict[str, int] = {}  # node -> first datagram index after removal
        self.joined_at: dict[str, int] = {}  # node -> datagrams recorded before its last join
        self.eve_key = EDDSA.generate_private_key()
        self.eve_cred = Credential.build_ccs(self.eve_key.public_key(), -8, "eve").raw
        self.counter = 0
        self.steps = 0

    # --- plumbing ------------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def clock(self) -> float:
        return self.now

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def teardown(self) -> None:
        trace = os.environ.get("GROUPOSCORE_MODEL_TRACE")
        if trace:
            # one line per example: steps, datagrams by origin, deliveries, acceptances
            kinds = Counter(f"{d.kind}-{d.origin}" for d in self.datagrams)
            with open(trace, "a", encoding="utf-8") as f:
                f.write(
                    f"{self.steps} {len(self.datagrams)} {sum(self.delivered.values())} "
                    f"{sum(self.accepted.values())} {dict(sorted(kinds.items()))}\n"
                )
        for node in self.nodes.values():
            if node.member is not None:
                for task in list(node.member._tasks):
                    task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()
        if self.gm is not None:
            self.gm.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _queue(self, notes: Any) -> None:
        self.notes.extend(notes)

    def _new_member(self, node: Node) -> GroupMember:
        assert self.gm is not None
        return GroupMember(
            DirectClient(self.gm, node.name, self._queue), GROUP, node.roles, node.state_path,
            follow=False, grace=GRACE, sequence_step=SEQUENCE_STEP, clock=self.clock,
        )  # fmt: skip

    async def _start(self, node: Node) -> None:
        """Bring ``node`` up from its disk (resume) or by joining; RAM starts empty."""
        member = self._new_member(node)
        node.exchanges.clear()
        node.observations.clear()
        node.session += 1
        node.lagging = False
        num = self.gm.group(GROUP).num if self.gm is not None else None  # type: ignore[union-attr]
        was_member = self.gm is not None and node.name in self._members()
        try:
            await member.start()
        except GroupManagerRequestError as e:
            node.member = None
            if e.code == Code.SERVICE_UNAVAILABLE:
                # a join beyond the node's budget (a re-join, or a leave and a join again,
                # rekeys the group): the GM changed nothing, a member stays one; the node
                # stays down, without state, until a later join
                assert self.gm is not None and self.gm.group(GROUP).num == num  # type: ignore[union-attr]
                assert (node.name in self._members()) == was_member
                node.kept_context = None
                event("join refused: budget spent")
                return
            # the GM removed it while it was down or lagging: it stays out
            self.removed_at.setdefault(node.name, len(self.datagrams))
            return
        node.member = member
        self.removed_at.pop(node.name, None)
        if member.started == "joined":
            self.joined_at[node.name] = len(self.datagrams)
        node.server = member.server_security()
        node.kept_context = None
        await self._settle()

    async def _settle(self) -> None:
        """Deliver the GM's notifications, let credential fetches finish, sync the model."""
        for _ in range(20):
            while self.notes:
                note = self.notes.pop(0)
                node = self.nodes[note.node]
                if not node.alive or node.lagging:
                    continue  # lost: a lagging node catches up by polling
                msg = Message(note.code, payload=note.payload)
                if note.content_format is not None:
                    msg.options.content_format = note.content_format
                current = node.member._current.context
                try:
                    await node.member._notified(msg)
                except MembershipTerminated as e:
                    self._removed(node, current)
                    node.member._terminate(str(e))
            tasks = [t for n in self.nodes.values() if n.member is not None
                     for t in n.member._tasks]  # fmt: skip
            if not tasks and not self.notes:
                break
            await asyncio.sleep(0)
        self._sync_installed()

    def _removed(self, node: Node, context: GroupContext) -> None:
        """``node`` learnt that its membership ended (the GM removed it at ``removed_at``)."""
        node.kept_context = context
        self.removed_at.setdefault(node.name, len(self.datagrams))
        node.exchanges.clear()
        node.observations.clear()
        node.session += 1

    def _sync_installed(self) -> None:
        """A newly installed Gid is a new Security Context: its windows start valid."""
        for node in self.nodes.values():
            if not node.alive:
                self.installed.pop(node.name, None)
                continue
            gid = node.member.material.gid
            if self.installed.get(node.name) != gid:
                self.installed[node.name] = gid
                self.lost.discard((node.name, gid))
                for key in [k for k in self.windows if k[0] == node.name and k[1] == gid]:
                    del self.windows[key]

    def _forget_windows(self, node: Node, gid: bytes) -> None:
        """The process ended: every replay window it had is lost (invalid)."""
        self.lost.add((node.name, gid))
        for key, w in self.windows.items():
            if key[0] == node.name:
                w.valid = False

    def _window(self, node: str, gid: bytes, sid: bytes) -> ModelWindow:
        key = (node, gid, sid)
        w = self.windows.get(key)
        if w is None:
            w = self.windows[key] = ModelWindow(valid=(node, gid) not in self.lost)
        return w

    def _members(self) -> frozenset[str]:
        assert self.gm is not None
        return frozenset(m.node for m in self.gm.members(GROUP))

    def _alive(self, role: Role | None = None) -> list[Node]:
        return [n for n in self.nodes.values()
                if n.alive and (role is None or _has(n.roles, role))]  # fmt: skip

    def _removed_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.alive and n.kept_context is not None]

    def _pick(self, nodes: list[Node], i: int) -> Node | None:
        return nodes[i % len(nodes)] if nodes else None

    # --- recording what goes on the air --------------------------------------------------

    def _record(self, d: Datagram) -> Datagram:
        assert self.gm is not None
        g = self.gm.group(GROUP)
        assert g is not None
        d.stale_keys = d.gid != g.gid
        self.datagrams.append(d)
        return d

    def _nonce(self, key: tuple[Any, ...], what: str) -> None:
        if key in self.nonces:
            self.violation(f"(key, nonce) reused: {what} {key}")
        self.nonces.add(key)

    def _record_request(
        self,
        sender: Node,
        msg: Message,
        app: str,
        to: str | None,
        exchange: tuple[str, int] | None,
        origin: str = "honest",
    ) -> Datagram:
        data = msg.encode()
        piv, kid, gid, group = option_of(data)
        assert piv is not None and kid is not None and gid is not None
        if origin == "honest":
            self._nonce((gid, kid, int.from_bytes(piv, "big")), f"request by {sender.name}")
        return self._record(Datagram(
            len(self.datagrams), "req", data, origin, sender.name, gid, kid, piv, app, to=to,
            exchange=exchange, group_mode=group, members_then=self._members(),
        ))  # fmt: skip

    def _record_response(
        self,
        server: Node,
        msg: Message,
        app: str,
        binding: Any,
        exchange: tuple[str, int] | None,
        echo: bool = False,
    ) -> Datagram:
        data = msg.encode()
        piv, kid, kid_context, group = option_of(data)
        assert kid is not None
        gid = kid_context if kid_context is not None else binding.request_kid_context
        if piv is not None:
            self._nonce((gid, kid, int.from_bytes(piv, "big")), f"response by {server.name}")
        else:
            self._nonce(
                ("no-piv", gid, kid, binding.request_kid, binding.request_piv),
                f"response without Partial IV by {server.name}",
            )
        return self._record(Datagram(
            len(self.datagrams), "resp", data, "honest", server.name, gid, kid, piv, app,
            exchange=exchange, group_mode=group, echo_challenge=echo,
        ))  # fmt: skip

    # --- the server side ------------------------------------------------------------------

    def _expect_request(self, node: Node, d: Datagram) -> str | None:
        """ "deliver" if ``node`` is synchronised for ``d`` (it must be delivered now),
        "echo" if it must challenge and deliver the retry, None if nothing is owed."""
        if d.origin != "honest" or not node.alive or node.name == d.sender:
            return None
        if not (_has(node.roles, Role.RESPONDER) or _has(node.roles, Role.MONITOR)):
            return None
        if d.to is not None and d.to != node.name:
            return None
        material = node.member.material
        peer = material.peers.get(d.sid)
        if material.gid != d.gid or node.name not in d.members_then or peer is None:
            return None
        if peer.roles and not _has(peer.roles, Role.REQUESTER):
            return None
        assert d.piv is not None
        w = self._window(node.name, d.gid, d.sid)
        seq = int.from_bytes(d.piv, "big")
        if w.fresh(seq):
            return "deliver"
        client = self.nodes[d.sender]
        if (
            not w.valid
            and material.sender_id is not None
            and client.alive
            and d.exchange is not None
            and d.exchange[1] in client.exchanges
            and material.sender_id in client.member.material.peers
        ):
            return "echo"  # the client can verify the challenge and answer it
        return None

    async def _serve(self, node: Node, d: Datagram, *, route: bool) -> str:
        """``node`` receives request datagram ``d``: "delivered", "challenged" or "rejected".
        With ``route`` its answers travel back to the client at once (honest network)."""
        if not node.alive:
            return "rejected"
        msg = Message.decode(d.data)
        try:
            out = node.server.unprotect_request(msg)
        except FreshnessRequired as e:
            if node.member.sender_id is None:
                return "rejected"  # a monitor cannot answer
            challenge = Message(Code.UNAUTHORIZED, Type.NON, token=msg.token)
            challenge.options.echo = e.echo
            try:
                protected = node.server.protect_response(challenge, e.binding)
            except GroupOscoreError:
                return "rejected"
            r = self._record_response(
                node, protected, self.fresh("echo"), e.binding, d.exchange, echo=True
            )
            if route:
                await self._to_client(r, route=True)
            return "challenged"
        except GroupOscoreError:
            return "rejected"
        if out is None:
            return "rejected"
        plain, binding = out
        self._delivered(node, d, plain)
        if _has(node.roles, Role.RESPONDER) and node.member.sender_id is not None:
            reply = Message(Code.CONTENT, Type.NON, token=msg.token)
            registration = plain.options.observe == 0
            if registration:
                reply.options.observe = 0
            app = self.fresh("r")
            reply.payload = app.encode()
            try:
                protected = node.server.protect_response(reply, binding)
            except GroupOscoreError as e:
                self.violation(f"{node.name} cannot answer a request it delivered: {e!r}")
                return "delivered"
            r = self._record_response(node, protected, app, binding, d.exchange)
            if registration and d.exchange is not None:
                node.observations.append(Observation(
                    d.exchange[0], d.exchange[1], binding, self.installed[node.name],
                    node.session,
                ))  # fmt: skip
            if route:
                await self._to_client(r, route=True)
        return "delivered"

    def _delivered(self, node: Node, d: Datagram, plain: Message) -> None:
        where = f"{node.name} delivered datagram {d.index} ({d.origin} from {d.sender})"
        if d.origin == "evicted" and self.installed.get(node.name) == d.gid:
            return  # the receiver missed the rekeying too: it cannot know (see _settle)
        if d.origin != "honest":
            self.violation(f"{where}: not produced by a member")
            return
        if plain.payload.decode(errors="replace") != d.app:
            self.violation(f"{where}: payload changed")
        if not d.group_mode and d.to != node.name:
            self.violation(f"{where}: a pairwise request for {d.to}")
        if self.backward and d.index < self.joined_at.get(node.name, 0):
            self.violation(f"{where}: protected before it joined (backward security)")
        self.delivered_datagrams[(node.name, d.index)] += 1
        if self.delivered_datagrams[(node.name, d.index)] > 1:
            self.violation(f"{where}: the same protected request delivered twice")
        self.delivered[(node.name, d.app)] += 1
        if self.delivered[(node.name, d.app)] > 1 and not d.retry:
            self.violation(f"{where}: request {d.app} delivered twice")
        assert d.piv is not None
        w = self._window(node.name, d.gid, d.sid)
        seq = int.from_bytes(d.piv, "big")
        if not w.valid:
            if plain.options.echo is None:
                self.violation(f"{where}: delivered with an invalid replay window, no Echo")
            w.initialise(seq)
        elif seq <= w.floor or seq in w.seen:
            self.violation(f"{where}: sequence number {seq} replayed")
        else:
            w.accept(seq)

    # --- the client side ------------------------------------------------------------------

    def _expect_response(self, node: Node, d: Datagram, ex: Exchange) -> bool:
        if d.origin != "honest" or not node.alive or d.exchange != (node.name, ex.xid):
            return False
        if ex.session != node.session:
            return False
        material = node.member.material
        if material.gid != d.gid:
            return False
        _, _, kid_context, _ = option_of(d.data)
        if ex.gid != d.gid and kid_context != d.gid:
            return False
        peer = material.peers.get(d.sid)
        if peer is None or (peer.roles and not _has(peer.roles, Role.RESPONDER)):
            return False
        intended = getattr(ex.binding, "intended_recipient", None)
        if intended is not None and d.sid != intended:
            # the server renewed its Sender ID during this exchange: a response under the
            # new kid is not the one asked, and is not delivered (digest §6.5, kid2 == kid1)
            return False
        key = (node.name, ex.xid, d.sid, d.gid)
        if d.piv is None:
            return key not in self.no_piv
        w = self.responses.get(key)
        return w is None or w.fresh(int.from_bytes(d.piv, "big"))

    async def _to_client(
        self, d: Datagram, *, route: bool, xid: int | None = None, client: str | None = None
    ) -> str:
        """A response datagram reaches a client's exchange (by default, its own)."""
        if client is None or xid is None:
            if d.exchange is None:
                return "rejected"
            client, xid = d.exchange
        node = self.nodes[client]
        ex = node.exchanges.get(xid)
        if ex is None or not node.alive:
            return "rejected"
        expected = route and self._expect_response(node, d, ex)
        try:
            verified = ex.security.unprotect_response(Message.decode(d.data), ex.binding)
        except GroupOscoreError as e:
            if expected:
                self.violation(
                    f"liveness: {client} rejected honest response {d.index} "
                    f"from {d.sender} to its exchange {xid}: {e!r}"
                )
            return "rejected"
        self._accepted(node, d, ex)
        challenged = verified.code == Code.UNAUTHORIZED and verified.options.echo is not None
        answered_before = d.sid in ex.answered
        ex.answered.add(d.sid)
        if challenged and answered_before:
            return "accepted"
        if route and challenged:
            answer = ex.security.echo_retry(verified, ex.request)
            if answer is not None:
                retry, security = answer
                await self._send(
                    node,
                    retry,
                    security,
                    ex.app,
                    to=d.sender,
                    route=True,
                    observe=ex.observe,
                    retried=not answered_before,
                )
        return "accepted"

    def _accepted(self, node: Node, d: Datagram, ex: Exchange) -> None:
        where = f"{node.name} accepted datagram {d.index} ({d.origin} from {d.sender})"
        if d.origin != "honest":
            self.violation(f"{where}: not produced by a member")
            return
        if d.exchange != (node.name, ex.xid):
            self.violation(f"{where}: answers {d.exchange}, accepted for exchange {ex.xid}")
        self.accepted[(node.name, d.app)] += 1
        if self.accepted[(node.name, d.app)] > 1:
            self.violation(f"{where}: response {d.app} accepted twice")
        key = (node.name, ex.xid, d.sid, d.gid)
        if d.piv is None:
            self.no_piv.add(key)
        else:
            self.responses.setdefault(key, ModelWindow(valid=True)).accept(
                int.from_bytes(d.piv, "big")
            )

    # --- sending --------------------------------------------------------------------------

    async def _send(
        self,
        node: Node,
        request: Message,
        security: Any,
        app: str,
        *,
        to: str | None,
        route: bool,
        observe: bool = False,
        retried: bool = False,
    ) -> Datagram | None:
        try:
            protected, binding = security.protect_request(request)
        except GroupOscoreError:
            return None  # e.g. the peer is not known yet (no Recipient Context)
        xid = self.counter = self.counter + 1
        ex = Exchange(xid, request, binding, security, app, to, binding.context.gid,
                      node.session, observe=observe, retried=retried)  # fmt: skip
        node.exchanges[xid] = ex
        d = self._record_request(node, protected, app, to, (node.name, xid))
        d.retry = retried
        if route:
            targets = ([self.nodes[to]] if to is not None
                       else [n for n in self._alive() if n.name != node.name])  # fmt: skip
            for target in targets:
                expect = self._expect_request(target, d)
                if expect == "echo" and retried:
                    # the server lost the Echo value it challenged with (it restarted in
                    # between) and challenges the retry: a client answers one challenge per
                    # server and exchange (a second one could make a server that lost its
                    # state execute the request twice), so nothing more is owed here
                    expect = None
                outcome = await self._serve(target, d, route=True)
                if expect == "deliver" and outcome != "delivered":
                    self.violation(
                        f"liveness: {target.name} did not deliver honest request "
                        f"{d.index} ({app}) from {node.name}: {outcome}"
                    )
                if expect == "echo" and self.delivered[(target.name, app)] < 1:
                    self.violation(
                        f"liveness: {target.name} did not deliver {app} from "
                        f"{node.name} after the Echo exchange ({outcome})"
                    )
        return d

    def _request(self, node: Node, observe: bool) -> tuple[Message, str]:
        app = self.fresh("q")
        msg = Message(Code.GET if observe else Code.POST, Type.NON,
                      token=secrets.token_bytes(4), payload=app.encode())  # fmt: skip
        msg.options.uri_path = ["m"]
        if observe:
            msg.options.observe = 0
        return msg, app

    # --- rules: setup -----------------------------------------------------------------------

    @initialize(backward=st.booleans())
    def setup(self, backward: bool) -> None:
        self.backward = backward
        # a small re-join budget, so that refused re-joins happen within a run
        self.gm = GroupManager(self.tmp / "gm.db", clock=self.clock, rejoin_burst=2)
        self.gm.create_group(GROUP, backward_security=backward)
        for name, roles in NODES.items():
            self.nodes[name] = Node(name, roles, str(self.tmp / f"{name}.state"))
        for name in INITIAL:
            self.gm.allow(name, GROUP, NODES[name])
            self.run(self._start(self.nodes[name]))

    # --- rules: traffic -------------------------------------------------------------------

    @rule(i=st.integers(0, 99), route=st.booleans(), observe=st.booleans())
    def group_request(self, i: int, route: bool, observe: bool) -> None:
        node = self._pick(self._alive(Role.REQUESTER), i)
        if node is None:
            return
        msg, app = self._request(node, observe)
        sec = node.member.client_security()
        self.run(self._send(node, msg, sec, app, to=None, route=route, observe=observe))

    @rule(i=st.integers(0, 99))
    def group_request_held(self, i: int) -> None:
        """A group request the network holds back (delivered later, or never)."""
        self.group_request(i, False, False)

    @rule(i=st.integers(0, 99), j=st.integers(0, 99), route=st.booleans(), observe=st.booleans())
    def pairwise_request(self, i: int, j: int, route: bool, observe: bool) -> None:
        node = self._pick(self._alive(Role.REQUESTER), i)
        target = self._pick([n for n in self._alive(Role.RESPONDER) if n is not node], j)
        if node is None or target is None or target.member.sender_id is None:
            return
        msg, app = self._request(node, observe)
        sec = node.member.client_security(pairwise_with=target.member.sender_id)
        self.run(self._send(node, msg, sec, app, to=target.name, route=route, observe=observe))

    @precondition(lambda self: any(n.observations for n in self._alive()))
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), route=st.booleans())
    def notify(self, i: int, j: int, route: bool) -> None:
        node = self._pick([n for n in self._alive() if n.observations], i)
        if node is None or node.member.sender_id is None:
            return
        obs = node.observations[j % len(node.observations)]
        if obs.gid != node.member.material.gid and not enabled("notify_across_rekey"):
            return
        obs.sent += 1
        app = self.fresh("n")
        reply = Message(Code.CONTENT, Type.NON, payload=app.encode())
        reply.options.observe = obs.sent
        try:
            protected = node.server.protect_response(reply, obs.binding)
        except GroupOscoreError as e:
            peer = node.member.material.peers.get(obs.binding.request_kid)
            rc = obs.binding.recipient
            if peer is None or (rc is not None and peer.credential != rc.credential.raw):
                # the observer left the group, or its Sender ID went stale and now names
                # another membership: the observation ends here (never a notification that
                # the new holder of that Sender ID could read)
                node.observations.remove(obs)
                return
            self.violation(f"{node.name} cannot notify: {e!r}")
            return
        d = self._record_response(node, protected, app, obs.binding, (obs.client, obs.xid))
        if route:
            self.run(self._to_client(d, route=True))

    # --- rules: the network and the attacker ------------------------------------------------

    def _datagram(self, k: int) -> Datagram | None:
        return self.datagrams[k % len(self.datagrams)] if self.datagrams else None

    @precondition(lambda self: bool(self.datagrams))
    @rule(k=st.integers(0, 10**6))
    def deliver(self, k: int) -> None:
        """Deliver (late, again, or out of order) a recorded datagram where it was sent."""
        d = self._datagram(k)
        if d is None:
            return
        if d.kind == "resp":
            self.run(self._to_client(d, route=True))
            return
        targets = ([self.nodes[d.to]] if d.to is not None
                   else [n for n in self._alive() if n.name != d.sender])  # fmt: skip
        for target in targets:
            expect = self._expect_request(target, d)
            outcome = self.run(self._serve(target, d, route=True))
            if expect == "deliver" and outcome != "delivered":
                self.violation(
                    f"liveness: {target.name} did not deliver late honest request "
                    f"{d.index} ({d.app}) from {d.sender}: {outcome}"
                )

    @precondition(lambda self: bool(self.datagrams))
    @rule(k=st.integers(0, 10**6), i=st.integers(0, 99), j=st.integers(0, 99))
    def replay_to_anyone(self, k: int, i: int, j: int) -> None:
        """Any recorded datagram, to any node: as a request, or to any pending exchange."""
        d = self._datagram(k)
        node = self._pick(self._alive(), i)
        if d is None or node is None:
            return
        if d.kind == "req":
            self.run(self._serve(node, d, route=False))
        elif node.exchanges:
            xid = sorted(node.exchanges)[j % len(node.exchanges)]
            self.run(self._to_client(d, route=False, xid=xid, client=node.name))

    @precondition(lambda self: bool(self.datagrams))
    @rule(
        k=st.integers(0, 10**6),
        pos=st.integers(0, 10**6),
        bit=st.integers(0, 7),
        in_option=st.booleans(),
    )
    def tamper(self, k: int, pos: int, bit: int, in_option: bool) -> None:
        """Flip one bit of the protected part (OSCORE option or payload) and deliver it."""
        d = self._datagram(k)
        if d is None:
            return
        msg = Message.decode(d.data)
        if in_option:
            value = bytearray(msg.options.get(9) or b"")
            if not value:
                return
            value[pos % len(value)] ^= 1 << bit
            msg.options.set(9, bytes(value))
        else:
            payload = bytearray(msg.payload)
            payload[pos % len(payload)] ^= 1 << bit
            msg.payload = bytes(payload)
        data = msg.encode()
        if any(other.data == data for other in self.datagrams):
            return  # flipped back into a datagram already on record: no forgery
        fake = Datagram(len(self.datagrams), d.kind, data, "tampered", d.sender, d.gid,
                        d.sid, d.piv, d.app, to=d.to, exchange=d.exchange,
                        group_mode=d.group_mode)  # fmt: skip
        self._record(fake)
        if d.kind == "resp":
            self.run(self._to_client(fake, route=False))
        else:
            for target in self._alive():
                self.run(self._serve(target, fake, route=False))

    @rule(i=st.integers(0, 99), own_sid=st.booleans())
    def forge_as_outsider(self, i: int, own_sid: bool) -> None:
        """An outsider who knows the Gid (it is on the air) but not the keys."""
        live = self._alive()
        if not live:
            return
        gid = live[0].member.material.gid
        victim = self._pick([n for n in live if n.member.sender_id is not None], i)
        sid = victim.member.sender_id if (own_sid and victim is not None) else b"\x7e"
        ctx = GroupContext(secrets.token_bytes(16), gid, sender_id=sid,
                           private_key=self.eve_key, credential=self.eve_cred)  # fmt: skip
        msg, app = self._request(live[0], False)
        protected, _ = ctx.protect_request(msg)
        d = self._record(Datagram(
            len(self.datagrams), "req", protected.encode(), "outsider", "eve", gid, sid,
            None, app, group_mode=True,
        ))  # fmt: skip
        for target in live:
            self.run(self._serve(target, d, route=False))

    @precondition(lambda self: bool(self._removed_nodes()))
    @rule(i=st.integers(0, 99))
    def removed_member_sends(self, i: int) -> None:
        """A node that left or was evicted keeps its old context and keeps sending."""
        gone = self._removed_nodes()
        node = self._pick(gone, i)
        if node is None or node.kept_context.sender_id is None:
            return
        msg, app = self._request(node, False)
        try:
            protected, _ = node.kept_context.protect_request(msg)
        except GroupOscoreError:
            return
        piv, kid, gid, _ = option_of(protected.encode())
        assert kid is not None and gid is not None
        d = self._record(Datagram(
            len(self.datagrams), "req", protected.encode(), "evicted", node.name, gid, kid,
            piv, app, group_mode=True,
        ))  # fmt: skip
        for target in self._alive():
            self.run(self._serve(target, d, route=False))

    @precondition(lambda self: bool(self._removed_nodes()))
    @rule(i=st.integers(0, 99), k=st.integers(0, 10**6))
    def removed_member_eavesdrops(self, i: int, k: int) -> None:
        """Forward security: the kept context opens nothing protected after the removal."""
        gone = self._removed_nodes()
        node = self._pick(gone, i)
        d = self._datagram(k)
        if node is None or d is None or d.kind != "req" or d.origin != "honest":
            return
        if d.index < self.removed_at[node.name] or d.stale_keys:
            return  # stale keys: a member that missed the rekeying, not the new material
        try:
            node.kept_context.unprotect_request(Message.decode(d.data))
        except FreshnessRequired:
            self.violation(f"{node.name} verified request {d.index} after its removal")
        except GroupOscoreError:
            return
        else:
            self.violation(f"{node.name} decrypted request {d.index} after its removal")

    # --- rules: life of the nodes ---------------------------------------------------------

    @precondition(lambda self: bool(self._alive()))
    @rule(i=st.integers(0, 99), clean=st.booleans(), burn=st.integers(0, 4))
    def restart(self, i: int, clean: bool, burn: int) -> None:
        """Restart (clean: state saved on close) or crash after taking ``burn`` sequence
        numbers that were never sent (reserved and used, then the process died)."""
        node = self._pick(self._alive(), i)
        if node is None:
            return
        member = node.member
        gid = member.material.gid
        if member.sender_id is not None:
            for _ in range(burn):
                member.context.sequence.next()
        node.kept_context = member.context
        if clean:
            self.run(member.close())
        else:
            for task in list(member._tasks):
                task.cancel()
        node.member = None
        self._forget_windows(node, gid)
        self.run(self._start(node))

    @precondition(lambda self: len(self._alive()) < len(self.nodes))
    @rule(i=st.integers(0, 99))
    def join(self, i: int) -> None:
        """A node that is not a member (never was, left, or was evicted) joins."""
        assert self.gm is not None
        node = self._pick([n for n in self.nodes.values() if not n.alive], i)
        if node is None:
            return
        before = len(self.datagrams)
        self.gm.allow(node.name, GROUP, node.roles)
        self.run(self._start(node))
        if not node.alive:
            return  # a re-join the GM refused for now (see _start)
        if self.backward:
            ctx = node.member.context
            for d in self.datagrams[max(0, before - 30) : before]:
                if d.kind != "req" or d.origin != "honest":
                    continue
                try:
                    ctx.unprotect_request(Message.decode(d.data))
                except FreshnessRequired:
                    self.violation(f"joiner {node.name} verified older request {d.index}")
                except GroupOscoreError:
                    continue
                else:
                    self.violation(f"joiner {node.name} decrypted older request {d.index}")

    @precondition(lambda self: enabled("one_shot_tool") and bool(self._alive()))
    @rule(i=st.integers(0, 99), k=st.integers(0, 10**6))
    def one_shot_tool(self, i: int, k: int) -> None:
        """The member process stops; a one-shot tool (the command line's loader) opens the
        member's state file and serves one recorded request; then the member resumes."""
        node = self._pick(self._alive(), i)
        d = self._datagram(k)
        assert node is not None
        if d is None or d.kind != "req":
            return
        member = node.member
        self.run(member.close())
        node.member = None
        self._forget_windows(node, member.material.gid)
        ctx = load_group_context(node.state_path)
        sec = ServerSecurity([ctx])
        msg = Message.decode(d.data)
        try:
            out = sec.unprotect_request(msg)
        except FreshnessRequired as e:
            if ctx.sender_id is not None:
                challenge = Message(Code.UNAUTHORIZED, Type.NON, token=msg.token)
                challenge.options.echo = e.echo
                protected = sec.protect_response(challenge, e.binding)
                self._record_response(
                    node, protected, self.fresh("echo"), e.binding, d.exchange, echo=True
                )
            out = None
        except GroupOscoreError:
            out = None
        if out is not None:
            plain, binding = out
            self._delivered(node, d, plain)
            if ctx.sender_id is not None and _has(node.roles, Role.RESPONDER):
                app = self.fresh("r")
                reply = Message(Code.CONTENT, Type.NON, token=msg.token, payload=app.encode())
                protected = sec.protect_response(reply, binding)
                self._record_response(node, protected, app, binding, d.exchange)
        self.run(self._start(node))

    @precondition(lambda self: bool(self._alive()))
    @rule(i=st.integers(0, 99))
    def lose_disk_and_rejoin(self, i: int) -> None:
        """A member loses RAM and disk (state and sequence files) and joins again: the GM
        rekeys on that re-join (or refuses it while the node's re-join budget is spent)."""
        node = self._pick(self._alive(), i)
        if node is None:
            return
        gid = node.member.material.gid
        node.kept_context = node.member.context
        for task in list(node.member._tasks):
            task.cancel()
        node.member = None
        for suffix in ("", ".seq"):
            Path(node.state_path + suffix).unlink(missing_ok=True)
        self._forget_windows(node, gid)
        self.run(self._start(node))
        if node.alive:
            assert node.member.material.gid != gid, "a re-join after state loss kept the Gid"
            event("re-join after disk loss: rekeyed")

    @precondition(lambda self: enabled("renew_sender_id"))
    @rule(i=st.integers(0, 99))
    def renew_sender_id(self, i: int) -> None:
        members = self._members()  # a node the GM removed (it missed that) is refused 4.03
        node = self._pick(
            [n for n in self._alive() if n.member.sender_id is not None and n.name in members], i
        )
        if node is None:
            return
        before = node.member.material
        try:
            self.run(node.member.renew_sender_id())
        except GroupManagerRequestError as e:
            # Sender IDs per node and Gid are bounded (issue 9 item 16): refused, no change
            assert e.code == Code.SERVICE_UNAVAILABLE, e
            assert node.member.material.sender_id == before.sender_id
        self.run(self._settle())

    @precondition(lambda self: len(self._alive()) > 2)
    @rule(i=st.integers(0, 99), evict=st.booleans())
    def remove(self, i: int, evict: bool) -> None:
        """A member leaves (DELETE at the GM), or the GM evicts it; the GM rekeys."""
        assert self.gm is not None
        members = self._members()
        node = self._pick([n for n in self._alive() if n.name in members], i)
        if node is None:
            return  # only lagging nodes the GM already removed
        context = node.member.context
        self.removed_at[node.name] = len(self.datagrams)  # even if the node misses it
        if evict:
            self._queue(self.gm.evict(GROUP, node.name))
            self.run(self._settle())
            if node.alive and not node.lagging:
                self.violation(f"{node.name} still believes it is a member after its eviction")
        else:
            self.run(node.member.leave())
            self._removed(node, context)
            self.run(self._settle())

    @precondition(lambda self: any(not n.lagging for n in self._alive()))
    @rule(i=st.integers(0, 99))
    def lose_notifications(self, i: int) -> None:
        """From now on the GM's notifications to this node are lost (until it polls)."""
        node = self._pick([n for n in self._alive() if not n.lagging], i)
        assert node is not None
        node.lagging = True

    @precondition(lambda self: any(n.lagging for n in self._alive()))
    @rule(i=st.integers(0, 99))
    def poll(self, i: int) -> None:
        """A lagging node polls the GM and catches up (over /stale-sids and /creds)."""
        node = self._pick([n for n in self._alive() if n.lagging], i)
        assert node is not None
        context = node.member.context
        node.lagging = False
        try:
            self.run(node.member.refresh())
        except MembershipTerminated:
            self._removed(node, context)
        self.run(self._settle())

    @rule()
    def rekey(self) -> None:
        assert self.gm is not None
        self._queue(self.gm.rekey(GROUP))
        self.run(self._settle())

    @rule(seconds=st.sampled_from([1.0, 10.0, 60.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def no_violation(self) -> None:
        self.steps += 1
        assert not self.violations, "\n".join(self.violations)

    @invariant()
    def members_agree_with_the_manager(self) -> None:
        if self.gm is None:
            return
        g = self.gm.group(GROUP)
        assert g is not None
        members = self._members()
        for node in self.nodes.values():
            if node.alive and not node.lagging:
                assert node.name in members, f"{node.name} runs but the GM dropped it"
                assert node.member.material.gid == g.gid, f"{node.name} missed a rekeying"


EXAMPLES = int(os.environ.get("GROUPOSCORE_MODEL_EXAMPLES", "150"))
STEPS = int(os.environ.get("GROUPOSCORE_MODEL_STEPS", "50"))

GroupModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestGroupModel = GroupModel.TestCase
