"""EDHOC (RFC 9528) initiator and responder, sans-I/O, over the lakers implementation.

lakers does the cryptography and the message state machine; this module adds what lakers
leaves to its user: checking that the peer's ID_CRED names the credential we expect (before
lakers' MAC check, so a wrong credential is reported as such), refusing critical EAD items,
the connection identifiers' CoAP encoding (RFC 9528 Appendix A.2), EDHOC error messages
(§6), the responder's session table (bounded, and a replayed message_1 is refused) and the
EDHOC-Exporter step to an OSCORE Security Context (Appendix A.1).

What lakers 0.6 supports, and so what this supports: method 3 (static Diffie-Hellman keys on
both sides) and cipher suite 2 (AES-CCM-16-64-128, SHA-256, 8-byte MAC, P-256, ES256,
AES-CCM-16-64-128, SHA-256); credentials are CCS with EC2 P-256 keys, sent by value or by
kid. Connection identifiers are byte strings of 1 to 7 bytes.
"""

from __future__ import annotations

import hashlib
import io
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cbor2
import lakers

from grouposcore.cose import hkdf_by_id
from grouposcore.edhoc.credentials import EdhocCredential, EdhocKey, IdCred, parse_id_cred
from grouposcore.errors import (
    EdhocCredentialError,
    EdhocError,
    EdhocPeerError,
    GroupOscoreError,
)
from grouposcore.oscore.context import SecurityContext
from grouposcore.oscore.sequence import SenderSequence

__all__ = [
    "CF_EDHOC_CBOR_SEQ",
    "MESSAGE_1_PREFIX",
    "SUPPORTED_METHODS",
    "SUPPORTED_SUITES",
    "Established",
    "Initiator",
    "OscoreParameters",
    "Reply",
    "Responder",
    "ResponderSessions",
    "encode_conn_id",
    "encode_error",
    "parse_error",
    "split_conn_id",
]

#: EDHOC methods lakers implements: 3 = static DH key on both sides.
SUPPORTED_METHODS: tuple[int, ...] = (3,)
#: Cipher suites lakers implements: 2 = AES-CCM-16-64-128, SHA-256, 8, P-256, ES256, ...
SUPPORTED_SUITES: tuple[int, ...] = (2,)

#: What cipher suite 2 means for the OSCORE context (RFC 9528 App. A.1): the EDHOC AEAD and
#: hash become the OSCORE AEAD (10 = AES-CCM-16-64-128) and HKDF (5 = HKDF with SHA-256).
_SUITE_OSCORE = {2: (10, 5, 16)}
#: OSCORE Master Salt length for EDHOC-derived contexts (RFC 9528 App. A.1: 8 bytes).
OSCORE_SALT_LENGTH = 8
_EXPORTER_MASTER_SECRET = 0
_EXPORTER_MASTER_SALT = 1

#: Content-Format of an EDHOC message (and error message) in a CoAP response.
CF_EDHOC_CBOR_SEQ = 64
#: A request carrying message_1 starts with the CBOR ``true`` (RFC 9528 App. A.2.1).
MESSAGE_1_PREFIX = cbor2.dumps(True)

#: EDHOC error codes (RFC 9528 §6.2).
ERR_UNSPECIFIED = 1
ERR_WRONG_SUITE = 2
ERR_UNKNOWN_CREDENTIAL = 3

_LAKERS_ERRORS = (ValueError, RuntimeError, TypeError, OverflowError)
_SINGLE_BYTE_INTS = frozenset([*range(0x00, 0x18), *range(0x20, 0x38)])


def encode_conn_id(c: bytes) -> bytes:
    """A connection identifier as it prefixes a message (a CBOR int if its one byte is the
    encoding of an int in -24..23, else a CBOR byte string; RFC 9528 §3.3.2)."""
    if len(c) == 1 and c[0] in _SINGLE_BYTE_INTS:
        return c
    return cbor2.dumps(c)


def split_conn_id(payload: bytes) -> tuple[bytes, bytes]:
    """(connection identifier, rest) of a payload that starts with one."""
    if not payload:
        raise EdhocError("empty EDHOC message: no connection identifier")
    if payload[0] in _SINGLE_BYTE_INTS:
        return payload[:1], payload[1:]
    if 0x41 <= payload[0] <= 0x57:
        n = payload[0] - 0x40
        if len(payload) > n:
            return payload[1 : 1 + n], payload[1 + n :]
    raise EdhocError("EDHOC message does not start with a valid connection identifier")


def encode_error(err_code: int, err_info: Any) -> bytes:
    """An EDHOC error message (a CBOR sequence ERR_CODE, ERR_INFO)."""
    return cbor2.dumps(err_code) + cbor2.dumps(err_info)


def parse_error(payload: bytes) -> EdhocPeerError:
    """The error a peer's EDHOC error message reports (malformed ones are reported too)."""
    try:
        decoder_items = _cbor_sequence(payload)
    except EdhocError:
        return EdhocPeerError("peer sent a malformed EDHOC error message", err_code=-1)
    if not decoder_items or not isinstance(decoder_items[0], int):
        return EdhocPeerError("peer sent a malformed EDHOC error message", err_code=-1)
    code = decoder_items[0]
    info = decoder_items[1] if len(decoder_items) > 1 else None
    if code == ERR_UNSPECIFIED:
        text = info if isinstance(info, str) else repr(info)
        return EdhocPeerError(f"peer reported an EDHOC error: {text}", err_code=code, err_info=info)
    if code == ERR_WRONG_SUITE:
        return EdhocPeerError(
            f"peer does not support the offered cipher suite; it supports {info!r}",
            err_code=code, err_info=info,
        )  # fmt: skip
    if code == ERR_UNKNOWN_CREDENTIAL:
        return EdhocPeerError("peer does not know our credential", err_code=code, err_info=info)
    return EdhocPeerError(f"peer reported EDHOC error code {code}", err_code=code, err_info=info)


def _cbor_sequence(data: bytes) -> list[Any]:
    stream = io.BytesIO(data)
    items = []
    try:
        while stream.tell() < len(data):
            items.append(cbor2.load(stream))
    except (cbor2.CBORDecodeError, ValueError, TypeError, EOFError):
        raise EdhocError("not a CBOR sequence") from None
    return items


@dataclass(frozen=True)
class OscoreParameters:
    """The OSCORE Security Context an EDHOC session yields (RFC 9528 App. A.1): Master
    Secret and Salt from the EDHOC-Exporter, our Sender ID = the peer's connection
    identifier and our Recipient ID = our own, the suite's AEAD and HKDF."""

    master_secret: bytes
    master_salt: bytes
    sender_id: bytes
    recipient_id: bytes
    aead_alg: int = 10
    hkdf_alg: int = 5

    def context(
        self, *, sequence: SenderSequence | None = None, replay_window_valid: bool = True
    ) -> SecurityContext:
        """The RFC 8613 context (no ID Context)."""
        return SecurityContext(
            self.master_secret,
            sender_id=self.sender_id,
            recipient_id=self.recipient_id,
            master_salt=self.master_salt,
            aead=self.aead_alg,
            hkdf=hkdf_by_id(self.hkdf_alg),
            sequence=sequence,
            replay_window_valid=replay_window_valid,
        )

    def __repr__(self) -> str:
        return (
            f"OscoreParameters(sender_id={self.sender_id.hex()}, "
            f"recipient_id={self.recipient_id.hex()}, aead={self.aead_alg})"
        )


def _export(session: Any, suite: int, ours: bytes, theirs: bytes) -> OscoreParameters:
    if ours == theirs:
        raise EdhocError("C_I and C_R are equal: they cannot both be OSCORE IDs")
    aead, hkdf, key_len = _SUITE_OSCORE[suite]
    secret = bytes(session.edhoc_exporter(_EXPORTER_MASTER_SECRET, b"", key_len))
    salt = bytes(session.edhoc_exporter(_EXPORTER_MASTER_SALT, b"", OSCORE_SALT_LENGTH))
    return OscoreParameters(secret, salt, theirs, ours, aead, hkdf)


def _check_ead(items: Iterable[Any], which: str) -> None:
    for item in items:
        if item.is_critical():
            raise EdhocError(f"critical EAD item {item.label()} in {which}: not supported")


def _transfer(by_value: bool) -> Any:
    return lakers.CredentialTransfer.ByValue if by_value else lakers.CredentialTransfer.ByReference


def random_conn_id(avoid: Iterable[bytes] = ()) -> bytes:
    """A random one-byte connection identifier (CBOR int -24..23) not in ``avoid``."""
    taken = set(avoid)
    free = [bytes([b]) for b in sorted(_SINGLE_BYTE_INTS) if bytes([b]) not in taken]
    if not free:
        raise EdhocError("no free one-byte connection identifier")
    return secrets.choice(free)


class Initiator:
    """One EDHOC session as initiator (the party that sends message_1, e.g. a joining node).

    ``peer`` is the credential the responder must present (by value or by kid); ``by_value``
    sends our own credential in full instead of by kid (needed when the peer only knows us
    by something other than our kid).
    """

    def __init__(
        self,
        key: EdhocKey,
        credential: EdhocCredential,
        peer: EdhocCredential,
        *,
        c_i: bytes | None = None,
        by_value: bool = False,
    ) -> None:
        self.key = key
        self.credential = credential
        self.peer = peer
        self.by_value = by_value or credential.kid is None
        self.c_i = c_i if c_i is not None else random_conn_id()
        self.c_r: bytes | None = None
        self._lakers = lakers.EdhocInitiator()
        #: message_3 alone (for an EDHOC + OSCORE combined request, RFC 9668)
        self.raw_message_3: bytes | None = None

    def message_1(self) -> bytes:
        """The request payload: ``true`` followed by message_1."""
        try:
            message_1 = bytes(self._lakers.prepare_message_1(self.c_i))
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"cannot build message_1: {e}") from None
        return MESSAGE_1_PREFIX + message_1

    def message_3(self, message_2: bytes) -> bytes:
        """Verify message_2 (the responder's credential must be ``peer``); the payload of the
        request carrying message_3, prefixed with C_R."""
        try:
            c_r, id_cred_r, ead_2 = self._lakers.parse_message_2(message_2)
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"message_2 rejected: {e}") from None
        c_r = bytes(c_r)
        _check_ead(ead_2, "message_2")
        presented = parse_id_cred(bytes(id_cred_r))
        if not presented.matches(self.peer):
            raise EdhocCredentialError(
                f"the responder presented {presented.describe()}, expected {self.peer.describe()}"
            )
        if c_r == self.c_i:
            raise EdhocError("responder chose C_R equal to C_I")
        try:
            self._lakers.verify_message_2(self.key.d, self.credential.value, self.peer.value)
            message_3, _prk_out = self._lakers.prepare_message_3(_transfer(self.by_value), None)
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"message_2 does not verify: {e}") from None
        self.c_r = c_r
        self.raw_message_3 = bytes(message_3)
        return encode_conn_id(c_r) + self.raw_message_3

    def finish(self, message_4: bytes = b"") -> OscoreParameters:
        """Complete after message_3 was delivered: with the responder's message_4 if it sent
        one, else without (the first OSCORE response then confirms the keys)."""
        if self.c_r is None:
            raise EdhocError("EDHOC session not at message_3 yet")
        try:
            if message_4:
                _check_ead(self._lakers.process_message_4(message_4), "message_4")
            else:
                self._lakers.completed_without_message_4()
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"message_4 rejected: {e}") from None
        return _export(self._lakers, self._lakers.selected_cipher_suite(), self.c_i, self.c_r)


class Responder:
    """One EDHOC session as responder (e.g. the Group Manager)."""

    def __init__(
        self, key: EdhocKey, credential: EdhocCredential, *, by_value: bool = False
    ) -> None:
        self.credential = credential
        self.by_value = by_value or credential.kid is None
        self.c_i: bytes | None = None
        self.c_r: bytes | None = None
        self.peer: EdhocCredential | None = None
        self._lakers = lakers.EdhocResponder(key.d, credential.value)

    def read_message_1(self, message_1: bytes) -> bytes:
        """Process message_1 (without the ``true`` prefix); returns C_I."""
        try:
            c_i, ead_1 = self._lakers.process_message_1(message_1)
        except _LAKERS_ERRORS as e:
            if "UnsupportedCipherSuite" in str(e):
                raise _WrongSuite(str(e)) from None
            if "UnsupportedMethod" in str(e):
                raise EdhocError(f"message_1 asks for an unsupported EDHOC method: {e}") from None
            raise EdhocError(f"message_1 rejected: {e}") from None
        _check_ead(ead_1, "message_1")
        self.c_i = bytes(c_i)
        return self.c_i

    def message_2(self, c_r: bytes) -> bytes:
        """message_2, with our connection identifier ``c_r``."""
        if c_r == self.c_i:
            raise EdhocError("C_R must differ from C_I")
        try:
            message_2 = bytes(self._lakers.prepare_message_2(_transfer(self.by_value), c_r, None))
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"cannot build message_2: {e}") from None
        self.c_r = c_r
        return message_2

    def read_message_3(
        self, message_3: bytes, lookup: Callable[[IdCred], EdhocCredential | None]
    ) -> EdhocCredential:
        """Verify message_3; ``lookup`` maps the initiator's ID_CRED to a credential we
        accept (None: unknown peer). Returns the verified peer credential."""
        try:
            id_cred_i, ead_3 = self._lakers.parse_message_3(message_3)
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"message_3 rejected: {e}") from None
        _check_ead(ead_3, "message_3")
        presented = parse_id_cred(bytes(id_cred_i))
        known = lookup(presented)
        if known is None:
            raise _UnknownCredential(f"unknown initiator credential: {presented.describe()}")
        try:
            self._lakers.verify_message_3(known.value)
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"message_3 does not verify: {e}") from None
        self.peer = known
        return known

    def message_4(self) -> bytes:
        """message_4 (sent in the response to message_3; the exchange is then complete)."""
        try:
            return bytes(self._lakers.prepare_message_4(None))
        except _LAKERS_ERRORS as e:
            raise EdhocError(f"cannot build message_4: {e}") from None

    def oscore(self) -> OscoreParameters:
        """The OSCORE context parameters (after message_4 was prepared)."""
        if self.c_i is None or self.c_r is None or self.peer is None:
            raise EdhocError("EDHOC session not complete")
        return _export(self._lakers, SUPPORTED_SUITES[0], self.c_r, self.c_i)


class _WrongSuite(EdhocError):
    """message_1 selects a cipher suite we do not support."""


class _UnknownCredential(EdhocCredentialError):
    """message_3 names a credential nobody registered."""


@dataclass(frozen=True)
class Established:
    """A completed responder session: who the peer is and the OSCORE context it yields."""

    peer: EdhocCredential
    name: str
    oscore: OscoreParameters


@dataclass(frozen=True)
class Reply:
    """What to answer an EDHOC request with: CoAP code, payload, Content-Format, and (for a
    verified message_3) the established session."""

    code: int
    payload: bytes
    content_format: int | None = None
    established: Established | None = None
    error: str | None = None


_CHANGED = 68
_BAD_REQUEST = 128


def _error_reply(err_code: int, info: Any, why: str) -> Reply:
    return Reply(_BAD_REQUEST, encode_error(err_code, info), CF_EDHOC_CBOR_SEQ, error=why)


class ResponderSessions:
    """A responder's EDHOC sessions between message_1 and message_3, keyed by C_R.

    ``authorise`` maps a presented ID_CRED to ``(name, credential)`` of a peer we accept, or
    None. ``taken_ids`` are Recipient IDs already in use (C_R becomes ours, so it must not
    clash with any context's). At most ``max_sessions`` are pending (the oldest is dropped);
    a message_1 seen before is refused, as is anything that fails: a failed message_3
    removes its session, so nothing is left behind.
    """

    def __init__(
        self,
        key: EdhocKey,
        credential: EdhocCredential,
        authorise: Callable[[IdCred], tuple[str, EdhocCredential] | None],
        *,
        taken_ids: Callable[[], Iterable[bytes]] = lambda: (),
        by_value: bool = False,
        max_sessions: int = 32,
        remember_message_1: int = 4096,
    ) -> None:
        self.key = key
        self.credential = credential
        self.authorise = authorise
        self.taken_ids = taken_ids
        self.by_value = by_value
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[bytes, Responder] = OrderedDict()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._remember = remember_message_1

    def pending(self) -> int:
        """Sessions waiting for their message_3."""
        return len(self._sessions)

    def handle(self, payload: bytes) -> Reply:
        """Answer a POST to /.well-known/edhoc: message_1 (``true`` prefix) or message_3
        (C_R prefix). Never raises for bad input: the reply says what went wrong."""
        try:
            if payload.startswith(MESSAGE_1_PREFIX):
                return self._message_1(payload[len(MESSAGE_1_PREFIX) :])
            return self._message_3(payload)
        except _WrongSuite as e:
            return _error_reply(ERR_WRONG_SUITE, SUPPORTED_SUITES[0], str(e))
        except _UnknownCredential as e:
            return _error_reply(ERR_UNKNOWN_CREDENTIAL, True, str(e))
        except (GroupOscoreError, *_LAKERS_ERRORS) as e:
            return _error_reply(ERR_UNSPECIFIED, str(e), str(e))

    def _message_1(self, message_1: bytes) -> Reply:
        digest = hashlib.sha256(message_1).digest()
        if digest in self._seen:
            raise EdhocError("replayed message_1")
        responder = Responder(self.key, self.credential, by_value=self.by_value)
        c_i = responder.read_message_1(message_1)
        c_r = self._choose_c_r(c_i)
        message_2 = responder.message_2(c_r)
        self._seen[digest] = None
        while len(self._seen) > self._remember:
            self._seen.popitem(last=False)
        self._sessions[c_r] = responder
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)
        return Reply(_CHANGED, message_2, CF_EDHOC_CBOR_SEQ)

    def _choose_c_r(self, c_i: bytes) -> bytes:
        taken = {*self.taken_ids(), *self._sessions, c_i}
        for c in _candidate_ids():
            if c not in taken:
                return c
        raise EdhocError("no free connection identifier")

    def _message_3(self, payload: bytes) -> Reply:
        c_r, message_3 = split_conn_id(payload)
        responder = self._sessions.pop(c_r, None)  # whatever happens next, it is used up
        if responder is None:
            raise EdhocError("message_3 for no pending EDHOC session (unknown C_R)")
        found: list[str] = []

        def lookup(id_cred: IdCred) -> EdhocCredential | None:
            entry = self.authorise(id_cred)
            if entry is None:
                return None
            found.append(entry[0])
            return entry[1]

        peer = responder.read_message_3(message_3, lookup)
        message_4 = responder.message_4()
        established = Established(peer, found[0], responder.oscore())
        return Reply(_CHANGED, message_4, CF_EDHOC_CBOR_SEQ, established=established)


def _candidate_ids() -> Iterable[bytes]:
    """Connection identifiers, shortest first: the one-byte CBOR ints, other single bytes,
    then two-byte strings (enough for 65,000 concurrent contexts)."""
    for b in sorted(_SINGLE_BYTE_INTS):
        yield bytes([b])
    for b in range(256):
        if b not in _SINGLE_BYTE_INTS:
            yield bytes([b])
    for b in range(65536):
        yield b.to_bytes(2, "big")
