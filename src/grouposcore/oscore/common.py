"""Pieces shared by OSCORE and Group OSCORE contexts: derivation, nonces, bindings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import cbor2

from grouposcore.coap import Message
from grouposcore.cose import HkdfAlgorithm
from grouposcore.errors import OscoreDecodeError, ReplayError
from grouposcore.oscore.option import OscoreOption, decode_option
from grouposcore.oscore.replay import ReplayWindow

if TYPE_CHECKING:  # the contexts build bindings, so they import this module, not the reverse
    from grouposcore.oscore.context import SecurityContext
    from grouposcore.oscore.group import GroupContext

#: The OSCORE version in every external_aad (RFC 8613 §5.4).
OSCORE_VERSION = 1


def derive(
    hkdf: HkdfAlgorithm,
    master_secret: bytes,
    master_salt: bytes,
    id_: bytes,
    id_context: bytes | None,
    alg: int,
    type_: str,
    length: int,
) -> bytes:
    """RFC 8613 §3.2.1 key/IV derivation with ``info = [id, id_context, alg, type, L]``."""
    return hkdf.derive(
        master_salt, master_secret, derive_info(id_, id_context, alg, type_, length), length
    )


def derive_info(id_: bytes, id_context: bytes | None, alg: int, type_: str, length: int) -> bytes:
    return cbor2.dumps([id_, id_context, alg, type_, length])


class NonceFactory:
    """Builds AEAD nonces (RFC 8613 §5.2) for one nonce length and Common IV.

    The Common IV may be longer than the nonce (Group OSCORE, mixed algorithms): only its
    first ``nonce_len`` bytes are used.
    """

    __slots__ = ("_civ", "_id_parts", "max_id_len", "nonce_len")

    def __init__(self, common_iv: bytes, nonce_len: int) -> None:
        if len(common_iv) < nonce_len:
            raise ValueError("Common IV shorter than the nonce")
        self.nonce_len = nonce_len
        self.max_id_len = nonce_len - 6
        self._civ = int.from_bytes(common_iv[:nonce_len], "big")
        #: ID_PIV -> (length byte | padded ID) XOR Common IV, the part fixed per sender
        self._id_parts: dict[bytes, int] = {}

    def nonce(self, id_piv: bytes, piv: bytes) -> bytes:
        part = self._id_parts.get(id_piv)
        if part is None:
            n = self.nonce_len
            part = (len(id_piv) << ((n - 1) * 8)) | (int.from_bytes(id_piv, "big") << 40)
            part ^= self._civ
            if len(self._id_parts) < 4096:  # bounded: one entry per member that sends
                self._id_parts[id_piv] = part
        return (part ^ int.from_bytes(piv, "big")).to_bytes(self.nonce_len, "big")


def parse_oscore_option(message: Message) -> tuple[bytes, OscoreOption]:
    """The OSCORE option value and its decoded form (the payload must not be empty)."""
    value = message.options.get(9)
    if value is None:
        raise OscoreDecodeError("message has no OSCORE option")
    if not message.payload:
        raise OscoreDecodeError("OSCORE message without payload")
    return value, decode_option(value)


def is_registration(message: Message) -> bool:
    """Observe registration (Observe: 0); cheap for the common non-Observe message."""
    return 6 in message.options and message.options.observe == 0


class ResponseTracker:
    """Replay state of the responses one server sends to one request (RFC 10021 §5.3.1):
    at most one response without Partial IV, and every Partial IV at most once.

    The window is created with the first response that carries a Partial IV: most requests
    get exactly one response, without one.
    """

    __slots__ = ("no_piv_seen", "window")

    def __init__(self) -> None:
        self.no_piv_seen = False
        self.window: ReplayWindow | None = None

    def check(self, piv: bytes | None) -> None:
        if piv is None:
            if self.no_piv_seen:
                raise ReplayError("second response without Partial IV from the same server")
        elif self.window is not None:  # an empty window takes every Partial IV
            self.window.check(int.from_bytes(piv, "big"))

    def update(self, piv: bytes | None) -> None:
        if piv is None:
            self.no_piv_seen = True
        else:
            if self.window is None:
                self.window = ReplayWindow(64)
            self.window.update(int.from_bytes(piv, "big"))


@dataclass(eq=False, slots=True)
class RequestBinding:
    """What a client keeps of a request it protected, to verify the responses to it.

    ``request_kid``/``request_piv``/``request_kid_context`` go into every response's
    external_aad: this is what binds a response to exactly this request.
    """

    context: SecurityContext | GroupContext
    request_kid: bytes
    request_piv: bytes
    request_kid_context: bytes | None
    group_mode: bool = False
    #: the one server a pairwise (or 1:1 OSCORE) request is meant for
    intended_recipient: bytes | None = None
    observe: bool = False
    #: replay state per (Security Context, responding server), created with the first
    #: response; keyed by the context's ID Context (Gid) too, so a rekeyed server that
    #: restarts its Partial IVs at 0 under the new Gid starts a fresh Response Number
    #: (RFC 10021 §2.6.3.2, §5.3.1)
    trackers: dict[tuple[bytes | None, bytes], ResponseTracker] | None = None
    #: the start of every response's external_aad (Group OSCORE), built with the request
    aad_prefix: bytes = b""

    def tracker(self, context_id: bytes | None, server: bytes) -> ResponseTracker:
        """Replay state of ``server``'s responses verified with the context whose ID Context
        (Gid) is ``context_id``: the kept one, or a new one that :meth:`record` keeps once
        a response verified (a rejected response leaves no state behind)."""
        trackers = self.trackers
        if trackers is not None:
            tracker = trackers.get((context_id, server))
            if tracker is not None:
                return tracker
        return ResponseTracker()

    def record(
        self, context_id: bytes | None, server: bytes, tracker: ResponseTracker, piv: bytes | None
    ) -> None:
        """A response with ``piv`` from ``server`` verified: update and keep ``tracker``."""
        tracker.update(piv)
        trackers = self.trackers
        if trackers is None:
            trackers = self.trackers = {}
        trackers[(context_id, server)] = tracker


@dataclass(eq=False, slots=True)
class ServerBinding:
    """What a server keeps of a request it verified, to protect its response(s)."""

    context: SecurityContext | GroupContext
    request_kid: bytes
    request_piv: bytes
    request_kid_context: bytes | None
    group_mode: bool = False
    #: the Recipient Context (Group OSCORE) of the requester
    recipient: object = None
    observe: bool = False
    responses_sent: int = 0
    #: the start of every response's external_aad (Group OSCORE), built with the request
    aad_prefix: bytes = b""


class ResponseInfo(NamedTuple):
    """How a response was verified: who sent it, in which mode, with which Partial IV.

    A NamedTuple (immutable, compared by value) rather than a frozen dataclass: one is
    built for every verified response.
    """

    sender_id: bytes
    group_mode: bool
    piv: bytes | None


#: builds a ResponseInfo from a 3-tuple without the keyword-argument ``__new__``
new_response_info = tuple.__new__


def needs_fresh_piv(response: Message, binding: ServerBinding, context: object) -> bool:
    """Whether a response must carry the server's own Partial IV (RFC 10021 §7.3, RFC 8613
    §8.3): every response but the first, any response protected with another context than
    the one that verified the request, and an Echo challenge (RFC 10021 §9 step 2)."""
    return (
        binding.responses_sent > 0
        or binding.context is not context
        or (response.code == 0x81 and response.options.echo is not None)
    )
