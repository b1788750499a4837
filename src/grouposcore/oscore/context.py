"""RFC 8613 OSCORE between two endpoints: Security Context and message protection."""

from __future__ import annotations

import secrets

import cbor2

from grouposcore.coap import Message
from grouposcore.cose import (
    HKDF_SHA256,
    AeadAlgorithm,
    HkdfAlgorithm,
    aead_by_id,
    cbor_bstr,
    enc_structure,
)
from grouposcore.errors import (
    ContextNotFound,
    DecryptionError,
    FreshnessRequired,
    OscoreDecodeError,
    OscoreError,
    ProtectionError,
)
from grouposcore.oscore import inner
from grouposcore.oscore.common import (
    OSCORE_VERSION,
    NonceFactory,
    RequestBinding,
    ResponseInfo,
    ServerBinding,
    derive,
    is_registration,
    needs_fresh_piv,
    parse_oscore_option,
)
from grouposcore.oscore.option import encode_option, piv_from_int
from grouposcore.oscore.replay import DEFAULT_WINDOW_SIZE, ReplayWindow
from grouposcore.oscore.sequence import SenderSequence


def _alg(value: AeadAlgorithm | int) -> AeadAlgorithm:
    return value if isinstance(value, AeadAlgorithm) else aead_by_id(value)


class SecurityContext:
    """An RFC 8613 Security Context (Common, Sender and Recipient parts).

    Keys are derived once and the cipher objects cached, so protecting a message costs
    one AEAD call plus a little byte assembly.
    """

    def __init__(
        self,
        master_secret: bytes,
        sender_id: bytes,
        recipient_id: bytes,
        *,
        master_salt: bytes = b"",
        id_context: bytes | None = None,
        aead: AeadAlgorithm | int = 10,
        hkdf: HkdfAlgorithm = HKDF_SHA256,
        sequence: SenderSequence | None = None,
        replay_window_size: int = DEFAULT_WINDOW_SIZE,
        replay_window_valid: bool = True,
        send_kid_context: bool = False,
    ) -> None:
        self.aead = _alg(aead)
        if not self.aead.is_aead:
            raise OscoreError(f"{self.aead.name} is not an AEAD algorithm")
        self.hkdf = hkdf
        self.master_secret = master_secret
        self.master_salt = master_salt
        self.id_context = id_context
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.send_kid_context = send_kid_context and id_context is not None
        max_id = self.aead.nonce_len - 6
        if len(sender_id) > max_id or len(recipient_id) > max_id:
            raise OscoreError(
                f"Sender/Recipient ID longer than {max_id} bytes for {self.aead.name}"
            )
        if sender_id == recipient_id:
            raise OscoreError("Sender ID and Recipient ID must differ")

        alg, key_len = self.aead.id, self.aead.key_len
        self.sender_key = derive(
            hkdf, master_secret, master_salt, sender_id, id_context, alg, "Key", key_len
        )
        self.recipient_key = derive(
            hkdf, master_secret, master_salt, recipient_id, id_context, alg, "Key", key_len
        )
        self.common_iv = derive(
            hkdf, master_secret, master_salt, b"", id_context, alg, "IV", self.aead.nonce_len
        )
        self._sender_cipher = self.aead.cipher(self.sender_key)
        self._recipient_cipher = self.aead.cipher(self.recipient_key)
        self._nonces = NonceFactory(self.common_iv, self.aead.nonce_len)
        self.sequence = sequence if sequence is not None else SenderSequence()
        self.replay_window = ReplayWindow(replay_window_size, valid=replay_window_valid)
        #: Echo value sent to recover an invalid replay window (RFC 8613 B.1.2)
        self.echo_challenge: bytes | None = None
        # external_aad = [1, [alg], kid, piv, h''] -- the fixed head, precomputed
        self._aad_head = bytes((0x85, OSCORE_VERSION, 0x81)) + cbor2.dumps(alg)

    # -- helpers --------------------------------------------------------------------

    def nonce(self, id_piv: bytes, piv: bytes) -> bytes:
        return self._nonces.nonce(id_piv, piv)

    def _aad(self, request_kid: bytes, request_piv: bytes) -> bytes:
        aad_array = self._aad_head + cbor_bstr(request_kid) + cbor_bstr(request_piv) + b"\x40"
        return enc_structure(aad_array)

    # -- client side ----------------------------------------------------------------

    def protect_request(self, message: Message) -> tuple[Message, RequestBinding]:
        outer, plaintext, outer_code = inner.split(message)
        piv = piv_from_int(self.sequence.next())
        kid_context = self.id_context if self.send_kid_context else None
        option = encode_option(piv, self.sender_id, kid_context)
        ciphertext = self._sender_cipher.encrypt(
            self.nonce(self.sender_id, piv), plaintext, self._aad(self.sender_id, piv)
        )
        binding = RequestBinding(
            context=self,
            request_kid=self.sender_id,
            request_piv=piv,
            request_kid_context=self.id_context,
            intended_recipient=self.recipient_id,
            observe=is_registration(message),
        )
        return inner.assemble(message, outer, outer_code, option, ciphertext), binding

    def unprotect_response(
        self, message: Message, binding: RequestBinding
    ) -> tuple[Message, ResponseInfo]:
        _, opt = parse_oscore_option(message)
        if opt.group:
            raise OscoreDecodeError("Group Flag set on a response for an OSCORE context")
        if opt.kid is not None and opt.kid != self.recipient_id:
            raise ContextNotFound("response kid does not match the Recipient ID")
        tracker = binding.tracker(self.id_context, self.recipient_id)
        tracker.check(opt.piv)
        if opt.piv is None:
            nonce = self.nonce(binding.request_kid, binding.request_piv)
        else:
            nonce = self.nonce(self.recipient_id, opt.piv)
        aad = self._aad(binding.request_kid, binding.request_piv)
        try:
            plaintext = self._recipient_cipher.decrypt(nonce, message.payload, aad)
        except DecryptionError as exc:
            raise ProtectionError("response decryption failed") from exc
        result = inner.merge(message, plaintext)
        binding.record(self.id_context, self.recipient_id, tracker, opt.piv)
        return result, ResponseInfo(self.recipient_id, False, opt.piv)

    # -- server side ----------------------------------------------------------------

    def unprotect_request(self, message: Message) -> tuple[Message, ServerBinding]:
        _, opt = parse_oscore_option(message)
        if opt.group:
            raise OscoreDecodeError("Group Flag set on a request for an OSCORE context")
        if opt.piv is None or opt.kid is None:
            raise OscoreDecodeError("request without Partial IV or kid")
        if opt.kid != self.recipient_id:
            raise ContextNotFound("no security context for this kid")
        if opt.kid_context is not None and opt.kid_context != self.id_context:
            raise ContextNotFound("no security context for this kid context")
        seq = int.from_bytes(opt.piv, "big")
        window = self.replay_window
        if window.valid:
            window.check(seq)
        aad = self._aad(opt.kid, opt.piv)
        try:
            plaintext = self._recipient_cipher.decrypt(
                self.nonce(opt.kid, opt.piv), message.payload, aad
            )
        except DecryptionError as exc:
            raise ProtectionError("request decryption failed") from exc
        result = inner.merge(message, plaintext)
        binding = ServerBinding(
            context=self,
            request_kid=opt.kid,
            request_piv=opt.piv,
            request_kid_context=opt.kid_context,
            observe=is_registration(result),
        )
        if not window.valid:
            if self.echo_challenge is not None and result.options.echo == self.echo_challenge:
                window.initialize_from(seq)
                self.echo_challenge = None
            else:
                self.echo_challenge = secrets.token_bytes(8)
                raise FreshnessRequired(
                    "replay window not initialised", binding, self.echo_challenge
                )
        else:
            window.update(seq)
        return result, binding

    def protect_response(
        self, message: Message, binding: ServerBinding, *, fresh_piv: bool | None = None
    ) -> Message:
        """Protect a response; the request nonce is reused unless a fresh PIV is needed
        (second and later responses, Observe notifications, Echo challenges)."""
        if fresh_piv is None:
            fresh_piv = needs_fresh_piv(message, binding, self)
        outer, plaintext, outer_code = inner.split(message)
        if fresh_piv:
            new_piv = piv_from_int(self.sequence.next())
            piv: bytes | None = new_piv
            nonce = self.nonce(self.sender_id, new_piv)
        else:
            piv = None
            nonce = self.nonce(binding.request_kid, binding.request_piv)
        option = encode_option(piv, None, None)
        ciphertext = self._sender_cipher.encrypt(
            nonce, plaintext, self._aad(binding.request_kid, binding.request_piv)
        )
        binding.responses_sent += 1
        return inner.assemble(message, outer, outer_code, option, ciphertext)

    def __repr__(self) -> str:
        return (
            f"<SecurityContext sid={self.sender_id.hex() or '-'} "
            f"rid={self.recipient_id.hex() or '-'} {self.aead.name}>"
        )
