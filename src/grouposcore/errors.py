"""One exception hierarchy for the whole package.

Every parser and protocol step raises a subclass of :class:`GroupOscoreError`, so an
application can catch malformed or hostile input with a single ``except`` clause and
never sees an ``IndexError`` or ``KeyError`` escaping from deep inside. The one exception
outside that hierarchy is :class:`UsageError`, a command line that cannot work.
"""

from __future__ import annotations

# The one CoAP Code enum (grouposcore.coap.Code), from the leaf module that imports nothing
# of ours: importing grouposcore.coap here would run the coap package, which imports this.
from grouposcore._coapcode import Code


class GroupOscoreError(Exception):
    """Base class of every error raised by grouposcore."""


# --- CoAP layer -------------------------------------------------------------------------


class CoapError(GroupOscoreError):
    """A CoAP-level problem."""


class CoapDecodeError(CoapError):
    """Bytes that are not a well-formed CoAP message (RFC 7252 §3)."""


class CoapEncodeError(CoapError):
    """A message that cannot be put on the wire (e.g. token longer than 8 bytes)."""


class OptionValueError(CoapError):
    """An option value that does not fit its registered format or length."""


# --- COSE layer -------------------------------------------------------------------------


class CoseError(GroupOscoreError):
    """A COSE-level problem (algorithms, keys, credentials, structures)."""


class UnknownAlgorithm(CoseError):
    """A COSE algorithm identifier this implementation does not know or support."""


class DecryptionError(CoseError):
    """Authenticated decryption failed (wrong key, nonce, AAD or tampered ciphertext)."""


class SignatureError(CoseError):
    """A signature did not verify."""


class CredentialError(CoseError):
    """An authentication credential (e.g. a CCS) that is malformed or unusable."""


class KeyAgreementError(CoseError):
    """ECDH could not be performed (incompatible or invalid keys)."""


# --- OSCORE / Group OSCORE layer ------------------------------------------------------
#
# Each error carries the CoAP response code and diagnostic payload that RFC 8613 §8 and
# RFC 10021 §7-§8 suggest for it, so that the transport can answer without a lookup
# table of its own. ``coap_code`` is a :class:`~grouposcore.coap.Code`; ``None`` means: stay
# silent.


class OscoreError(GroupOscoreError):
    """A message could not be protected or unprotected."""

    coap_code: Code | None = Code.BAD_REQUEST
    diagnostic: str = "Decryption failed"
    #: Max-Age of the error answer: 0, so no cache keeps it (RFC 8613 §7.4)
    max_age: int = 0
    #: The server binding when the request verified before the error (a replay, a missing
    #: freshness proof): the answer is then protected with it. ``None``: answered plain.
    binding: object | None = None


class OscoreDecodeError(OscoreError):
    """The OSCORE option or the COSE object is malformed (RFC 8613 §7.2 step 2)."""

    coap_code = Code.BAD_OPTION
    diagnostic = "Failed to decode COSE"


class ContextNotFound(OscoreError):
    """No security context matches the message's kid / kid context (or token)."""

    coap_code = Code.UNAUTHORIZED
    diagnostic = "Security context not found"


class CredentialNotFound(ContextNotFound):
    """A Group OSCORE sender whose authentication credential is not available.

    RFC 10021 §7.2: the server may answer 5.03 with Max-Age so the client retries later.
    """

    coap_code = Code.SERVICE_UNAVAILABLE
    diagnostic = "Authentication credential not available"
    max_age = 60  # when to retry: the credential is being fetched meanwhile
    #: the Sender ID whose credential is missing
    kid: bytes | None = None
    #: something that completes once a fetch of the credential ended (an asyncio future),
    #: set by a security layer that fetches credentials: the transport may then hold the
    #: request and run it again instead of refusing it; ``None``: nothing under way
    pending: object | None = None

    def __init__(self, message: str = "", *, kid: bytes | None = None) -> None:
        super().__init__(message)
        self.kid = kid


class ReplayError(OscoreError):
    """The Partial IV was seen before (or is too old for the replay window)."""

    coap_code = Code.UNAUTHORIZED
    diagnostic = "Replay detected"


class ResponseEndsExchange(OscoreError):
    """A response that did not verify but that the client's security layer chose to act on:
    the transport ends the exchange with this error instead of discarding the response and
    waiting for a valid one (RFC 8613 §8.4). Only for answers whose forgery costs an
    attacker no more than dropping the request would (e.g. a Group Manager's unprotected
    "no such context", after which the node makes its channel again)."""


class ProtectionError(OscoreError):
    """Decryption or signature verification failed."""

    coap_code = Code.BAD_REQUEST
    diagnostic = "Decryption failed"


class ModeNotSupported(OscoreError):
    """Group Flag and context disagree (e.g. group mode on a pairwise-only group)."""

    coap_code = None
    diagnostic = "Mode not supported"


class SequenceNumberExhausted(OscoreError):
    """The sender's sequence number space is used up; a new Sender ID or context is needed."""

    coap_code = None
    diagnostic = "Sequence number exhausted"


class FreshnessRequired(OscoreError):
    """The request verified, but its freshness is unknown (invalid replay window).

    Raised with the server binding, so the server can answer with a protected 4.01 that
    carries an Echo challenge (RFC 9175, RFC 10021 §9). The request is not delivered.
    """

    coap_code = Code.UNAUTHORIZED
    diagnostic = ""

    def __init__(self, message: str, binding: object, echo: bytes) -> None:
        super().__init__(message)
        self.binding: object = binding
        self.echo = echo


class ConfigError(GroupOscoreError):
    """A security file that is missing, unsafe or malformed."""


class UriError(CoapError):
    """A CoAP URI that cannot be parsed or mapped to options (RFC 7252 §6)."""


# --- Group Manager ------------------------------------------------------------------------


class ManagerError(GroupOscoreError):
    """A Group Manager or group-joining problem."""


class ManagerMessageError(ManagerError):
    """A Group Manager interface message that is malformed or has fields of the wrong type."""


class GroupManagerRequestError(ManagerError):
    """A request the Group Manager refuses, with the CoAP code and 'ace-groupcomm-error' id.

    ``code`` is a :class:`~grouposcore.coap.Code` (default 4.00); ``error_id`` is None when
    the answer has no problem-details entry. The member side raises it too when the GM answers
    with an error: a code the GM sent that is not registered stays a plain int, so nothing
    the GM says is lost or turned into another error.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Code | int = Code.BAD_REQUEST,
        error_id: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code: Code | int = Code(code) if code in Code._value2member_map_ else code
        self.error_id = error_id
        #: seconds after which the GM asks to try again (Max-Age of a 5.03), else None
        self.retry_after = retry_after


class ManagerStoreError(ManagerError):
    """The Group Manager's database is unusable (foreign schema, unsafe permissions...)."""


# --- Transport layer ----------------------------------------------------------------------


class TransportError(GroupOscoreError):
    """A request could not be carried out over the network."""


class PeerUnreachable(TransportError):
    """The network said the destination cannot be reached (an ICMP error such as "port
    unreachable" for a datagram sent there), so the request fails at once instead of after
    every retransmission."""


class RequestTimeout(TransportError):
    """No (acknowledgement or) response arrived before the deadline."""


class ResetReceived(TransportError):
    """The peer rejected our message with a Reset (RST)."""


class BlockwiseError(TransportError):
    """A block-wise transfer (RFC 7959) could not be completed consistently."""


class ResponseTooLarge(BlockwiseError):
    """A block-wise response body grew beyond the client's reassembly limit."""


class EndpointClosed(TransportError):
    """The endpoint was shut down while the operation was pending."""


class MembershipTerminated(ManagerError):
    """The Group Manager ended this node's membership (eviction, or its Sender ID went stale)."""


class RoleNotAuthorized(OscoreError):
    """A group message from a member whose role does not allow it (digest §15.2): a request
    from a non-Requester or a response from a non-Responder. Rejected before any state change."""

    coap_code = Code.UNAUTHORIZED
    diagnostic = "Role not authorized"


class PushError(GroupOscoreError):
    """A firmware-push message is malformed or does not fit the transfer it names; the
    receiver's state is left as it was."""


class SuitError(PushError):
    """A SUIT envelope is malformed, not signed by a trusted author, uses something this
    implementation does not support, or is not newer than what is installed."""


# --- EDHOC (RFC 9528) -----------------------------------------------------------------------


class EdhocError(GroupOscoreError):
    """An EDHOC exchange failed: a malformed or unverifiable message, or a peer or credential
    this side does not accept. The session is dropped; nothing else changes."""


class EdhocCredentialError(EdhocError):
    """An EDHOC key or credential (CCS) that is unusable or not the expected one."""


class EdhocPeerError(EdhocError):
    """The peer answered with an EDHOC error message (RFC 9528 §6): ``err_code`` and its info."""

    def __init__(self, message: str, *, err_code: int, err_info: object = None) -> None:
        super().__init__(message)
        self.err_code = err_code
        self.err_info = err_info


# --- command line -----------------------------------------------------------------------


class UsageError(Exception):
    """A command line that cannot work: arguments that do not fit together (exit status 2,
    reported like argparse errors). Deliberately not a :class:`GroupOscoreError`, so the
    handlers for protocol and network failures never swallow it."""
