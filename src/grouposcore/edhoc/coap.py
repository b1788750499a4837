"""EDHOC over CoAP (RFC 9528 Appendix A.2): the initiator's two POSTs to
``/.well-known/edhoc`` and the responder's resource.

The initiator POSTs ``true || message_1`` and gets message_2 in a 2.04; then POSTs
``C_R || message_3`` and gets message_4 (or an empty 2.04). An EDHOC error message comes in a
4.00/5.00 with Content-Format application/edhoc+cbor-seq; any other error response (e.g. a
plain 4.00 or 4.04) is reported by its code.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

import cbor2

from grouposcore.coap import Code, Message
from grouposcore.edhoc.protocol import (
    CF_EDHOC_CBOR_SEQ,
    ERR_UNSPECIFIED,
    Established,
    Initiator,
    OscoreParameters,
    ResponderSessions,
    encode_conn_id,
    encode_error,
    parse_error,
)
from grouposcore.errors import EdhocError, OscoreError
from grouposcore.oscore.common import ServerBinding
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.option import decode_option
from grouposcore.oscore.security import ClientSecurity, ServerSecurity
from grouposcore.transport import Endpoint, Resource

__all__ = [
    "OPTION_EDHOC",
    "WELL_KNOWN_EDHOC",
    "CombinedClientSecurity",
    "CombinedRequestError",
    "EdhocResource",
    "EdhocServerSecurity",
    "initiate",
    "initiate_combined",
    "take_combined",
]

log = logging.getLogger(__name__)

WELL_KNOWN_EDHOC = (".well-known", "edhoc")
#: The EDHOC option (RFC 9668): this OSCORE request carries message_3 in front of its payload.
OPTION_EDHOC = 21


class CombinedRequestError(OscoreError):
    """An EDHOC + OSCORE request whose message_3 does not complete an EDHOC session; the
    4.00 answer says why (as an EDHOC error message would)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.diagnostic = message


def take_combined(request: Message, sessions: ResponderSessions) -> tuple[Message, Established]:
    """RFC 9668: complete the EDHOC session a combined request's message_3 belongs to (C_R is
    the request's kid) and return the plain OSCORE request (without the EDHOC option and
    message_3) to verify with the context just made. One round trip saved."""
    value = request.options.get(9)
    kid = None if value is None else decode_option(value).kid
    if kid is None:
        raise CombinedRequestError("EDHOC option on a request without OSCORE kid")
    stream = io.BytesIO(request.payload)
    try:
        cbor2.load(stream)
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError):
        raise CombinedRequestError("EDHOC + OSCORE request without message_3") from None
    split = stream.tell()
    reply = sessions.handle(encode_conn_id(kid) + request.payload[:split])
    if reply.established is None:
        raise CombinedRequestError(f"EDHOC + OSCORE request refused: {reply.error}")
    plain = request.copy(payload=request.payload[split:])
    plain.options.remove(OPTION_EDHOC)
    return plain, reply.established


def _request(payload: bytes) -> Message:
    msg = Message(Code.POST, payload=payload)
    msg.options.uri_path = list(WELL_KNOWN_EDHOC)
    return msg


def _check(response: Message, step: str) -> bytes:
    if response.code == Code.CHANGED:
        return response.payload
    if response.code >= 128 and response.options.content_format == CF_EDHOC_CBOR_SEQ:
        raise parse_error(response.payload)
    code = f"{response.code >> 5}.{response.code & 31:02d}"
    text = response.payload[:120].decode("utf-8", "replace")
    raise EdhocError(f"EDHOC {step} refused with {code}{': ' + text if text else ''}")


async def initiate(
    endpoint: Endpoint,
    remote: tuple[str, int],
    initiator: Initiator,
    *,
    timeout: float | None = 10.0,
) -> OscoreParameters:
    """Run EDHOC with the responder at ``remote``; the OSCORE parameters it yields.

    Two round trips (message_1/message_2, message_3/message_4)."""
    r2 = await endpoint.request(_request(initiator.message_1()), remote, timeout=timeout)
    message_3 = initiator.message_3(_check(r2, "message_1"))
    r4 = await endpoint.request(_request(message_3), remote, timeout=timeout)
    return initiator.finish(_check(r4, "message_3"))


async def initiate_combined(
    endpoint: Endpoint,
    remote: tuple[str, int],
    initiator: Initiator,
    *,
    timeout: float | None = 10.0,
) -> tuple[OscoreParameters, bytes]:
    """The first round trip of EDHOC only: the OSCORE parameters and the message_3 to send
    with the first OSCORE request (RFC 9668, see :class:`CombinedClientSecurity`)."""
    r2 = await endpoint.request(_request(initiator.message_1()), remote, timeout=timeout)
    initiator.message_3(_check(r2, "message_1"))
    assert initiator.raw_message_3 is not None
    return initiator.finish(), initiator.raw_message_3


class CombinedClientSecurity(ClientSecurity):
    """An EDHOC-derived OSCORE context whose first request carries message_3 (EDHOC option,
    message_3 in front of the protected payload; RFC 9668): EDHOC completes with it."""

    def __init__(self, context: SecurityContext, message_3: bytes | None) -> None:
        super().__init__(context)
        self.message_3 = message_3

    def protect_request(self, request: Message) -> tuple[Message, Any]:
        protected, binding = super().protect_request(request)
        if self.message_3 is not None:
            protected.options.set(OPTION_EDHOC, b"")
            protected.payload = self.message_3 + protected.payload
            self.message_3 = None
        return protected, binding


class EdhocResource(Resource):
    """``/.well-known/edhoc`` of a responder: each verified message_3 is handed to
    ``on_established`` (which may refuse it by raising an ``EdhocError``: the initiator then
    gets an EDHOC error message and no context is kept)."""

    hidden = True

    def __init__(
        self,
        sessions: ResponderSessions | Callable[[], ResponderSessions],
        on_established: Callable[[Established], None],
    ) -> None:
        super().__init__()
        self._sessions = sessions
        self.on_established = on_established

    @property
    def sessions(self) -> ResponderSessions:
        """The session table (a factory given at construction is called on first use, so a
        responder makes its identity only when someone runs EDHOC)."""
        if not isinstance(self._sessions, ResponderSessions):
            self._sessions = self._sessions()
        return self._sessions

    async def render_post(self, request: Message) -> Message:
        reply = self.sessions.handle(request.payload)
        if reply.established is not None:
            try:
                self.on_established(reply.established)
            except EdhocError as e:
                log.info("EDHOC session with %s refused: %s", reply.established.name, e)
                return _message(Code.BAD_REQUEST, encode_error(ERR_UNSPECIFIED, str(e)))
            log.info("EDHOC: %s authenticated", reply.established.name)
        elif reply.error is not None:
            log.info("EDHOC request refused: %s", reply.error)
        return _message(reply.code, reply.payload, reply.content_format)


def _message(code: int, payload: bytes, cf: int | None = CF_EDHOC_CBOR_SEQ) -> Message:
    msg = Message(code, payload=payload)
    if cf is not None and payload:
        msg.options.content_format = cf
    return msg


class EdhocServerSecurity:
    """A server's security hook for peers that come with EDHOC: each verified message_3
    makes an OSCORE context (replacing that peer's previous one), and requests protected
    with it are answered protected. Serve :attr:`resource` at ``/.well-known/edhoc`` and
    give this object to the Endpoint as ``server_security``. EDHOC + OSCORE combined
    requests (RFC 9668) complete the handshake in the first protected request.
    """

    def __init__(self, sessions: ResponderSessions) -> None:
        self.sessions = sessions
        self.oscore = ServerSecurity()
        self.contexts: dict[str, SecurityContext] = {}
        self.resource = EdhocResource(sessions, self._established)

    def _established(self, established: Established) -> None:
        old = self.contexts.pop(established.name, None)
        if old is not None:
            self.oscore.remove(old)
        context = established.oscore.context()
        self.contexts[established.name] = context
        self.oscore.add(context)

    def peer_of(self, binding: object) -> str | None:
        """Which EDHOC peer a request's binding belongs to."""
        context = getattr(binding, "context", None)
        for name, ctx in self.contexts.items():
            if ctx is context:
                return name
        return None

    def unprotect_request(self, request: Message) -> tuple[Message, ServerBinding] | None:
        if OPTION_EDHOC in request.options:
            request, established = take_combined(request, self.sessions)
            self._established(established)
        return self.oscore.unprotect_request(request)

    def protect_response(self, response: Message, binding: ServerBinding) -> Message:
        return self.oscore.protect_response(response, binding)
