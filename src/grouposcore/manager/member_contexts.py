"""The group contexts a :class:`~grouposcore.manager.runtime.GroupMember` has installed: the
current one, the superseded ones still in their grace time, and the server security
objects that must hold exactly the current one.

Sans-I/O: no event loop and no clock of its own (the caller passes ``now``), so a rekeying,
a Sender ID renewal and the end of a grace time can be replayed step by step. Which case an
installation is, and which old context verifies a response, is decided in
:mod:`~grouposcore.manager.member_decisions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from grouposcore.manager.member import GroupKeyingMaterial
from grouposcore.manager.member_decisions import (
    Installed,
    InstallKind,
    in_grace,
    install_kind,
    response_contexts,
)
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.security import ServerSecurity

__all__ = ["MemberContexts"]


class MemberContexts:
    """Current and superseded contexts of one membership; ``grace`` seconds is how long a
    superseded context verifies responses to requests sent under it (digest §8.2)."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.current: Installed | None = None
        #: superseded contexts, stale senders already purged from them
        self.previous: list[Installed] = []
        self._servers: list[ServerSecurity] = []

    def install(
        self,
        material: GroupKeyingMaterial,
        now: float,
        *,
        fresh: Callable[[], GroupContext],
        renewed: Callable[[GroupContext], GroupContext],
    ) -> InstallKind:
        """Make ``material`` current: ``fresh()`` builds a context for new keys,
        ``renewed(old)`` a new Sender Context over the old context's Recipient Contexts
        (RFC 10021 §2.6.3.1: the peers' replay windows carry over, or every request they
        sent under this Gid could be replayed once); else only the known peers change.
        Senders missing from ``material`` are stale: they go from every context."""
        old = self.current
        kind = install_kind(None if old is None else old.material, material)
        gone = set() if old is None else set(old.material.peers) - set(material.peers)
        if kind is InstallKind.UPDATE_PEERS:
            assert old is not None
            for sid in gone:
                old.context.remove_recipient(sid)
            old.material = material
            return kind
        if kind is InstallKind.NEW_SENDER_ID:
            assert old is not None
            context = renewed(old.context)
            for sid in gone:
                context.remove_recipient(sid)
        else:
            context = fresh()
        self.current = Installed(context, material)
        if old is not None:
            # the old context only verifies responses now, and not from stale senders
            for sid in gone:
                old.context.remove_recipient(sid)
            if gone:
                old.material = replace(
                    old.material,
                    peers={k: v for k, v in old.material.peers.items() if k not in gone},
                )
            old.retire_at = now + self.grace
            self.previous.append(old)
        for sec in self._servers:
            if old is not None:
                sec.remove(old.context)
            sec.add(context)
        self.prune(now)
        return kind

    def prune(self, now: float) -> None:
        """Forget superseded contexts whose grace time is over at ``now``."""
        self.previous = in_grace(self.previous, now)

    def for_response(
        self, request_context: object, kid_context: bytes | None, now: float
    ) -> tuple[list[Installed], bool]:
        """The contexts to try on a response to a request sent under ``request_context``,
        and whether that context was retired
        (:func:`~grouposcore.manager.member_decisions.response_contexts`)."""
        self.prune(now)
        return response_contexts(self.current, self.previous, request_context, kid_context)

    def attach(self, server: ServerSecurity, *, active: bool = True) -> None:
        """Keep ``server`` holding the current context from now on (holding it already
        unless the membership has ended: ``active`` False)."""
        if self.current is not None and active:
            server.add(self.current.context)
        self._servers.append(server)

    def end(self) -> None:
        """The membership ended: no server accepts anything under its contexts any more."""
        for sec in self._servers:
            for inst in [self.current, *self.previous]:
                if inst is not None:
                    sec.remove(inst.context)
        self.previous.clear()
