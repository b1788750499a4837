"""The decisions a :class:`~grouposcore.manager.runtime.GroupMember` takes, as pure functions
over plain data: no event loop, no files, no clock of their own, so each is tested alone.

Rekeying (digest §8.2): the new context replaces the old one at once for everything new;
the old one stays usable for a bounded grace time only to verify responses to requests
sent under it (:func:`in_grace`, :func:`response_contexts`). Requests are accepted under the
current context only, so an evicted member is shut out as soon as the rekeying arrives.

Roles (digest §15.2): requests are accepted only from Requesters and responses only from
Responders, as the GM described the peers (:func:`authorize`); the check runs on the kid
before verification, so a refused message changes no state.

A new Sender ID under the same keys (renewal, or a re-join the GM answers without
rekeying) changes only the Sender Context (:attr:`InstallKind.NEW_SENDER_ID`): the peers'
Recipient Contexts and replay windows carry over (RFC 10021 §2.6.3.1). Well before the
Sender Sequence Numbers run out, the member asks the GM for a new Sender ID
(:func:`renewal_near`, :func:`renewal_due`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from grouposcore.errors import ContextNotFound, RoleNotAuthorized
from grouposcore.manager.member import GroupKeyingMaterial, PeerInfo
from grouposcore.manager.params import Param, Role, loads_strict
from grouposcore.oscore.group import GroupContext

__all__ = [
    "InstallKind",
    "Installed",
    "NotificationStep",
    "authorize",
    "in_grace",
    "install_kind",
    "notification_step",
    "renewal_due",
    "renewal_near",
    "renewal_threshold",
    "response_contexts",
    "same_keys",
    "without_credential",
]


@dataclass
class Installed:
    """One group context with the material it came from; ``retire_at`` once superseded."""

    context: GroupContext
    material: GroupKeyingMaterial
    retire_at: float | None = None


def same_keys(a: GroupKeyingMaterial, b: GroupKeyingMaterial) -> bool:
    """Whether two materials describe the same Common Context (Gid, Master Secret and
    Salt): then replay state kept for one holds for the other."""
    return (a.gid, a.master_secret, a.master_salt) == (b.gid, b.master_secret, b.master_salt)


class InstallKind(enum.Enum):
    """What installing new material does to the member's current context."""

    #: no context yet, or new keys (a rekeying): a context built from scratch
    NEW_CONTEXT = "new-context"
    #: same keys, new Sender ID: only the Sender Context changes (RFC 10021 §2.6.3.1)
    NEW_SENDER_ID = "new-sender-id"
    #: same keys, version and Sender ID: only the known peers change
    UPDATE_PEERS = "update-peers"


def install_kind(old: GroupKeyingMaterial | None, new: GroupKeyingMaterial) -> InstallKind:
    """How ``new`` material replaces ``old`` (None: nothing installed yet)."""
    if old is None or not same_keys(new, old):
        return InstallKind.NEW_CONTEXT
    if new.num == old.num and new.sender_id == old.sender_id:
        return InstallKind.UPDATE_PEERS
    return InstallKind.NEW_SENDER_ID


def without_credential(
    material: GroupKeyingMaterial, credential: bytes | None
) -> GroupKeyingMaterial:
    """``material`` without peers that hold ``credential`` (the member's own, e.g. under an
    ID it gave up): a Recipient Context for it would let the member's own old messages be
    reflected back to it and delivered."""
    if credential is None or not any(p.credential == credential for p in material.peers.values()):
        return material
    peers = {k: p for k, p in material.peers.items() if p.credential != credential}
    return replace(material, peers=peers)


def in_grace(previous: Iterable[Installed], now: float) -> list[Installed]:
    """The superseded contexts whose grace time has not run out at ``now``."""
    return [p for p in previous if p.retire_at is not None and p.retire_at > now]


def response_contexts(
    current: Installed | None,
    previous: Iterable[Installed],
    request_context: object,
    kid_context: bytes | None,
) -> tuple[list[Installed], bool]:
    """The installed contexts a response may be protected with, in the order to try them:
    the context of its request (``request_context``; only while in ``previous`` or
    current), then the current one (a server that installed a rekeying answers under the
    new Gid, with or without a kid context: digest §8.4). A kid context rules out the
    others. Also whether the request's own context is gone (retired after a rekeying).

    ``previous`` must hold only contexts still in grace (:func:`in_grace`); ``current``
    None (not joined, left, evicted) raises :class:`ContextNotFound`.
    """
    if current is None:
        raise ContextNotFound("no current group context")
    own: Installed | None = None
    if request_context is current.context:
        own = current
    else:
        own = next((p for p in previous if p.context is request_context), None)
    order = [own] if own is not None else []
    if own is not current:
        order.append(current)
    if kid_context is not None:
        order = [i for i in order if i.context.gid == kid_context]
    return order, own is None


def authorize(peers: Mapping[bytes, PeerInfo], kid: bytes, *, is_request: bool) -> None:
    """Raise :class:`RoleNotAuthorized` unless Sender ID ``kid`` may send this: a request
    needs a Requester, a response a Responder. A peer whose roles are not known yet passes
    (the credential provider decides, and learns its roles)."""
    info = peers.get(kid)
    if info is None or info.roles == 0:
        return
    need = Role.REQUESTER if is_request else Role.RESPONDER
    if not info.roles & (1 << need):
        what = "request" if is_request else "response"
        raise RoleNotAuthorized(f"{what} from {kid.hex() or '-'}, not a {need.name.title()}")


def renewal_threshold(limit: int, renew_at: float) -> int:
    """The Sender Sequence Number from which the member asks for a new Sender ID."""
    return int(limit * renew_at)


def renewal_near(next_seq: int, step: int, threshold: int) -> bool:
    """Whether the renewal threshold is within reach: one process reserves at most ``step``
    numbers ahead of ``next_seq``, so below ``threshold - step`` nothing needs a look at the
    store (the check after every protected message stays cheap)."""
    return next_seq + step >= threshold


def renewal_due(next_seq: int, threshold: int, reserved: int | None) -> bool:
    """Whether to ask for a new Sender ID now: the next number to use, or the end of what
    is durably reserved (``reserved``, from the store; another process on the same file may
    have reserved further), has reached ``threshold`` (digest §7.4: well before 2^40 - 1)."""
    return next_seq >= threshold or (reserved or 0) >= threshold


class NotificationStep(enum.Enum):
    """What an Observe notification of the group resource makes the member do."""

    #: install the notified material as it is
    INSTALL = "install"
    #: poll the GM instead (catch up through /stale-sids and /creds)
    CATCH_UP = "catch-up"


def notification_step(
    current: GroupKeyingMaterial, notified: GroupKeyingMaterial, payload: bytes
) -> NotificationStep:
    """Only a rekeying message (it carries 'stale_node_ids') exactly one version ahead is
    installed as it is. Anything else that is ahead, e.g. a registration answer after
    missed rekeyings, is a plain rendering without stale IDs: the member catches up."""
    if notified.num <= current.num:
        return NotificationStep.INSTALL
    body = loads_strict(payload, "group keying material")
    rekeying = isinstance(body, dict) and Param.STALE_NODE_IDS in body
    if not rekeying or notified.num > current.num + 1:
        return NotificationStep.CATCH_UP
    return NotificationStep.INSTALL
