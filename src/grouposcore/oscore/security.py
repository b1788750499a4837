"""Endpoint-facing security: choosing a context for each message and answering failures.

The transport calls these objects at exactly four points (protect request, unprotect
response, unprotect request, protect response) and never looks inside a context. The
policy lives here, sans-I/O: which context a request belongs to and how a client repeats
a request after an Echo challenge. What a failure is answered with travels on the error
itself (``coap_code``, ``diagnostic``, ``max_age`` in :mod:`grouposcore.errors`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from grouposcore.coap import Code, Message
from grouposcore.errors import (
    ContextNotFound,
    FreshnessRequired,
    OscoreDecodeError,
    OscoreError,
)
from grouposcore.oscore.common import RequestBinding, ResponseInfo, ServerBinding
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.group import GroupContext
from grouposcore.oscore.option import decode_option

AnyContext = SecurityContext | GroupContext


@dataclass(slots=True, repr=False)
class VerifiedMessage(Message):
    """A message that was unprotected: ``security`` says who sent it and how."""

    security: ResponseInfo | None = field(default=None, compare=False)


def _verified(message: Message, info: ResponseInfo) -> VerifiedMessage:
    # positional: one per verified response
    return VerifiedMessage(
        message.code,
        message.mtype,
        message.mid,
        message.token,
        message.options,
        message.payload,
        message.remote,
        info,
    )


class ClientSecurity:
    """How a client protects its requests: one OSCORE peer, or a group.

    For a group, requests go in group mode unless ``pairwise_with`` names one member
    (pairwise mode, for unicast requests to that member).
    """

    def __init__(self, context: AnyContext, *, pairwise_with: bytes | None = None) -> None:
        self.context = context
        self.pairwise_with = pairwise_with
        if pairwise_with is not None and not isinstance(context, GroupContext):
            raise OscoreError("pairwise mode needs a group context")
        #: transport address -> Sender ID, learned from verified responses; lets a unicast
        #: Echo retry go to a known member in pairwise mode (RFC 10021 §9 step 4)
        self._members_at: dict[object, bytes] = {}

    def protect_request(self, request: Message) -> tuple[Message, RequestBinding]:
        ctx = self.context
        if isinstance(ctx, GroupContext):
            target = self.pairwise_with
            if target is None and request.options.echo is not None and ctx.pairwise_mode:
                # a repeated request answering an Echo challenge goes to one member
                member = self._members_at.get(request.remote)
                if member is not None and member in ctx.recipients:
                    target = member
            return ctx.protect_request(request, pairwise_with=target)
        return ctx.protect_request(request)

    def unprotect_response(self, response: Message, binding: RequestBinding) -> VerifiedMessage:
        """Verify a response; an unprotected response (e.g. an OSCORE error from the server)
        raises, so nothing unauthenticated reaches the application."""
        if 9 not in response.options:
            raise OscoreError(
                f"unprotected {response.code >> 5}.{response.code & 31:02d} response to a "
                f"protected request: {response.payload[:80].decode('utf-8', 'replace')}"
            )
        plain, info = binding.context.unprotect_response(response, binding)
        if response.remote is not None:
            self._members_at[response.remote] = info.sender_id
        return _verified(plain, info)

    def echo_retry(
        self, response: VerifiedMessage, request: Message
    ) -> tuple[Message, ClientSecurity] | None:
        """If ``response`` is a verified 4.01 Echo challenge, the request to repeat and the
        security to repeat it with (unicast; pairwise mode with that server when the group
        has it, RFC 10021 §9 step 4). None otherwise."""
        echo = response.options.echo
        if response.code != Code.UNAUTHORIZED or echo is None or response.security is None:
            return None
        if request.options.echo is not None:
            return None  # already answered one challenge: do not loop
        retry = request.copy(options=request.options.copy())
        retry.options.echo = echo
        context = self.context
        if isinstance(context, GroupContext) and context.pairwise_mode:
            server = response.security.sender_id
            if server in context.recipients:
                return retry, ClientSecurity(context, pairwise_with=server)
        return retry, self


class ServerSecurity:
    """The security contexts a server accepts requests under, and its error policy."""

    def __init__(self, contexts: Iterable[AnyContext] = ()) -> None:
        self._groups: list[GroupContext] = []
        self._peers: list[SecurityContext] = []
        for ctx in contexts:
            self.add(ctx)

    def add(self, context: AnyContext) -> None:
        if isinstance(context, GroupContext):
            self._groups.append(context)
        else:
            self._peers.append(context)

    def remove(self, context: AnyContext) -> None:
        for bucket in (self._groups, self._peers):
            if context in bucket:
                bucket.remove(context)  # type: ignore[arg-type]

    @property
    def contexts(self) -> list[AnyContext]:
        return [*self._groups, *self._peers]

    def _candidates(self, kid: bytes | None, kid_context: bytes | None) -> list[AnyContext]:
        found: list[AnyContext] = []
        if kid_context is not None:
            found.extend(g for g in self._groups if g.gid == kid_context)
        found.extend(
            p
            for p in self._peers
            if p.recipient_id == kid and (kid_context is None or p.id_context == kid_context)
        )
        return found

    def unprotect_request(self, request: Message) -> tuple[Message, ServerBinding] | None:
        """None for an unprotected request (the resource decides whether that is allowed).

        Several groups may share a Gid (different Group Managers): each is tried until one
        verifies (RFC 10021 §6.1). Failures raise an OscoreError subclass.
        """
        value = request.options.get(9)
        if value is None:
            return None
        option = decode_option(value)
        if option.kid is None:
            raise OscoreDecodeError("request without kid")
        candidates = self._candidates(option.kid, option.kid_context)
        if not candidates:
            raise ContextNotFound("no security context for this request")
        error: OscoreError | None = None
        decoded = (value, option)
        for ctx in candidates:
            try:
                if isinstance(ctx, GroupContext):
                    plain, binding = ctx.unprotect_request(request, option=decoded)
                else:
                    plain, binding = ctx.unprotect_request(request)
            except FreshnessRequired:
                raise
            except OscoreError as exc:
                error = exc
                continue
            return plain, binding
        assert error is not None
        raise error

    def protect_response(self, response: Message, binding: ServerBinding) -> Message:
        return binding.context.protect_response(response, binding)
