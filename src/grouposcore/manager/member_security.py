"""The security objects a :class:`~grouposcore.manager.runtime.GroupMember` hands to
transport endpoints: they always use the member's current group context, so an endpoint
configured once keeps working across rekeyings and Sender ID renewals.

Kept apart from the runtime because they run on every message (sans-I/O, no awaits), while
the runtime is the asyncio edge that talks to the Group Manager.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from grouposcore.coap import Message
from grouposcore.errors import ContextNotFound, CredentialNotFound, OscoreError, RoleNotAuthorized
from grouposcore.manager.member_decisions import authorize
from grouposcore.manager.params import Role
from grouposcore.oscore.common import RequestBinding, ServerBinding
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.option import decode_option
from grouposcore.oscore.security import ClientSecurity, ServerSecurity, VerifiedMessage
from grouposcore.transport.sockets import is_multicast

if TYPE_CHECKING:
    from grouposcore.manager.member import PeerInfo
    from grouposcore.manager.runtime import GroupMember

__all__ = ["MemberAddresses", "MemberClientSecurity", "MemberServerSecurity"]


class MemberAddresses:
    """Transport address -> Sender ID of the member last verified there (bounded).

    Only verified messages write it, so it says where a member *was*; a unicast request to
    such an address goes in pairwise mode with that member. A member that renews its
    Sender ID keeps its address, so the entry follows it (see :meth:`renewed`, :meth:`forget`).
    """

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._at: dict[object, bytes] = {}

    def get(self, remote: object) -> bytes | None:
        return self._at.get(remote)

    def note(self, remote: object, kid: bytes) -> None:
        """A message from ``kid`` verified, coming from ``remote``."""
        if remote is None:
            return
        self._at.pop(remote, None)
        self._at[remote] = kid
        if len(self._at) > self.size:
            del self._at[next(iter(self._at))]

    def forget(self, remote: object, kid: bytes) -> None:
        """A pairwise response from ``remote`` came from another Sender ID than ``kid``
        (e.g. it renewed its ID): group mode there until a verified message says who it is."""
        if remote is not None and self._at.get(remote) == kid:
            del self._at[remote]

    def renewed(self, old: set[bytes], new: bytes) -> None:
        """``new`` has the credential of the IDs in ``old`` (the credential, not the kid, is
        a member's identity): that member renewed its ID, so its addresses lead to ``new``."""
        old = old - {new}
        if old:
            for remote, sid in list(self._at.items()):
                if sid in old:
                    self._at[remote] = new


def _unicast(remote: object) -> bool:
    """Whether the transport addressed the request to one endpoint (not a group address)."""
    if not isinstance(remote, tuple) or not remote or not isinstance(remote[0], str):
        return False
    return not is_multicast(remote[0])


class MemberClientSecurity(ClientSecurity):
    """Client security that always protects with the member's current context.

    Mode: a request to one member goes in pairwise mode when the group has it (RFC 10021
    §8: a unicast request to a single server SHOULD use pairwise mode): with
    ``pairwise_with`` naming that member, or else when the transport addresses the request
    to a unicast address where the member last verified a message of a known peer
    (``pairwise=False`` keeps group mode there). A group address, an address of no known
    member, or a request to a forward proxy (Proxy-Uri/Proxy-Scheme) gets group mode.

    Responses are tried with each context they can belong to (the request's own one, then
    the current one after a rekeying), so a server that already answers under the new Gid
    verifies with or without a kid context in its response (digest §8.4); a failed try
    changes no state. The request's own context counts only during the grace time.
    """

    def __init__(
        self, member: GroupMember, *, pairwise_with: bytes | None = None, pairwise: bool = True
    ) -> None:
        # The base class would pin one context; this one follows the member instead.
        self._member = member
        self.pairwise_with = pairwise_with
        self.pairwise = pairwise

    @property
    def context(self) -> GroupContext:
        """The member's current context (it follows rekeyings and renewals)."""
        return self._member.context

    @context.setter
    def context(self, value: object) -> None:
        raise AttributeError("a member's client security follows the member's context")

    def _target(self, ctx: GroupContext, request: Message) -> bytes | None:
        """The member to address in pairwise mode, or None for group mode."""
        member = self._member
        if self.pairwise_with is not None:
            if not member._creds.sendable(self.pairwise_with):
                raise ContextNotFound(
                    f"Sender ID {self.pairwise_with.hex() or '-'} is not known yet; "
                    "the Group Manager was asked, retry"
                )
            return self.pairwise_with
        if not (self.pairwise and ctx.pairwise_mode and _unicast(request.remote)):
            return None
        if 35 in request.options or 39 in request.options:
            return None  # Proxy-Uri/-Scheme: the address is a proxy's, not a member's
        kid = member.addresses.get(request.remote)
        if kid is None or kid == ctx.sender_id or not member._creds.sendable(kid):
            return None
        return kid

    def protect_request(self, request: Message) -> tuple[Message, RequestBinding]:
        member = self._member
        if not member.has_role(Role.REQUESTER):
            raise RoleNotAuthorized("this member is not a Requester in the group")
        ctx = member.context
        protected = ctx.protect_request(request, pairwise_with=self._target(ctx, request))
        member.check_sequence()
        return protected

    def echo_retry(
        self, response: VerifiedMessage, request: Message
    ) -> tuple[Message, ClientSecurity] | None:
        """As the base class, but the retry keeps following the member (and its roles)."""
        answer = super().echo_retry(response, request)
        if answer is None:
            return None
        retry, sec = answer
        return retry, MemberClientSecurity(
            self._member, pairwise_with=sec.pairwise_with, pairwise=self.pairwise
        )

    def unprotect_response(self, response: Message, binding: RequestBinding) -> VerifiedMessage:
        value = response.options.get(9)
        if value is None:
            return super().unprotect_response(response, binding)  # raises: unprotected
        option = decode_option(value)
        member = self._member
        candidates, retired = member._installed_for_response(binding, option.kid_context)
        kid = option.kid if option.kid is not None else binding.intended_recipient
        error: OscoreError | None = None
        for installed in candidates:
            if kid is not None:
                authorize(installed.material.peers, kid, is_request=False)
            try:
                plain, info = installed.context.unprotect_response(response, binding)
            except OscoreError as exc:
                error = error or exc
                continue
            member.addresses.note(response.remote, info.sender_id)
            return VerifiedMessage(
                code=plain.code, mtype=plain.mtype, mid=plain.mid, token=plain.token,
                options=plain.options, payload=plain.payload, remote=plain.remote,
                security=info,
            )  # fmt: skip
        intended = binding.intended_recipient
        if intended is not None and option.kid is not None and option.kid != intended:
            member.addresses.forget(response.remote, intended)
        if error is None and not retired:
            raise ContextNotFound("response protected with a Gid of no context of this request")
        if retired:
            raise ContextNotFound(
                "the request's group context was retired after a rekeying"
            ) from error
        assert error is not None
        raise error


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
                authorize(current.material.peers, option.kid, is_request=True)
        try:
            result = super().unprotect_request(request)
        except CredentialNotFound as e:
            # the provider started (or joined) a fetch from the GM: the transport may hold
            # the request until it ended and run it again (a late joiner's first request)
            if e.kid is not None:
                e.pending = self._member._creds.in_flight(e.kid)
            raise
        if result is not None:
            self._member.addresses.note(request.remote, result[1].request_kid)
        return result

    @staticmethod
    def _same_requester(
        binding: ServerBinding, context: GroupContext, peers: Mapping[bytes, PeerInfo]
    ) -> None:
        """A response (an Observe notification, typically) to a request verified under an
        older context goes out under the current one only while the requester is still the
        member it was: its Sender ID may have gone stale and been handed to another member
        since (RFC 10021 §2.6.3: that ends its exchanges), and a pairwise response would then
        be readable by that other member."""
        rc = binding.recipient
        old = getattr(getattr(rc, "credential", None), "raw", None)
        peer = peers.get(binding.request_kid)
        if old is None or peer is None or peer.credential != old:
            raise ContextNotFound(
                f"the requester {binding.request_kid.hex()} of this exchange is no longer the "
                "same member: its exchange ended with its Sender ID"
            )
        if binding.request_kid not in context.recipients:
            context.add_recipient(binding.request_kid, peer.credential)

    def protect_response(self, response: Message, binding: ServerBinding) -> Message:
        current = self._member._current
        ctx = binding.context
        if (
            current is not None
            and isinstance(ctx, GroupContext)
            and ctx is not current.context
            and current.context.sender_id is not None
        ):
            self._same_requester(binding, current.context, current.material.peers)
            moved = dataclasses.replace(binding, recipient=None)
            protected = current.context.protect_response(response, moved)
        else:
            protected = super().protect_response(response, binding)
        self._member.check_sequence()
        return protected
