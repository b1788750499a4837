"""Group OSCORE (RFC 10021): the Group Security Context, group mode and pairwise mode.

Group mode: the message is encrypted with the sender's group key, then signed
(encrypt-then-sign) and the signature is XOR-encrypted with a keystream derived from the
Signature Encryption Key; payload = ciphertext || encrypted signature. A receiver checks
the signature *before* it decrypts, and touches replay state only after full success.

Pairwise mode: plain OSCORE processing with keys derived from static-static ECDH between
the two members' credentials, and the Group OSCORE external_aad.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import cbor2

from grouposcore.coap import Message
from grouposcore.cose import (
    HKDF_SHA256,
    AeadAlgorithm,
    Cipher,
    Credential,
    HkdfAlgorithm,
    KeyAgreementAlgorithm,
    SignatureAlgorithm,
    aead_by_id,
    cbor_bstr,
    countersign_structure,
    enc_structure,
    key_agreement_by_id,
    signature_by_id,
)
from grouposcore.errors import (
    ContextNotFound,
    CoseError,
    CredentialError,
    CredentialNotFound,
    DecryptionError,
    FreshnessRequired,
    ModeNotSupported,
    OscoreDecodeError,
    OscoreError,
    ProtectionError,
    ReplayError,
    SignatureError,
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
    new_response_info,
    parse_oscore_option,
)
from grouposcore.oscore.option import encode_option, piv_from_int
from grouposcore.oscore.replay import DEFAULT_WINDOW_SIZE, ReplayWindow
from grouposcore.oscore.sequence import SenderSequence

#: Callable that returns the credential of the member with Sender ID ``kid`` in group
#: ``gid`` (or None if unknown); used to create Recipient Contexts on the fly.
CredentialProvider = Callable[[bytes, bytes], "Credential | bytes | None"]

#: What to do with a request whose replay window is not valid (RFC 10021 §2.6.1.2 allows
#: only dropping it, the Echo procedure, or a new Security Context):
#:
#: * ``"echo"`` (default): answer a protected 4.01 with an Echo option; the repeated request
#:   carrying that Echo value proves freshness and makes the window valid.
#: * ``"drop"``: drop the request; the window stays invalid until a new Security Context.
#: * ``INSECURE_ACCEPT_REPLAYS`` (``"insecure-accept-replays-after-restart"``): deliver the
#:   first verified request and make the window valid from it. NOT what the RFC allows: a
#:   request recorded before a restart is delivered again, and so is every newer recorded
#:   one. Only for peers that cannot answer a group Echo (e.g. aiocoap clients).
FreshnessPolicy = Literal["echo", "drop", "insecure-accept-replays-after-restart"]

#: The explicitly insecure freshness policy, named as what it does.
INSECURE_ACCEPT_REPLAYS: FreshnessPolicy = "insecure-accept-replays-after-restart"
FRESHNESS_POLICIES: tuple[str, ...] = ("echo", "drop", INSECURE_ACCEPT_REPLAYS)
#: Policies of earlier versions, refused with what to use instead.
RETIRED_FRESHNESS = {
    "drop-first": "'drop-first' made the window valid from a dropped, unverified-fresh "
                  "request (a replay of one old request then lets newer recorded ones "
                  "through); use 'echo' or 'drop'",
    "accept": f"'accept' delivered requests of unknown freshness; use 'echo', or "
              f"{INSECURE_ACCEPT_REPLAYS!r} for peers that cannot answer an Echo",
}


def check_freshness_policy(policy: object) -> FreshnessPolicy:
    """``policy`` if it is one of FRESHNESS_POLICIES; an OscoreError that says what to use
    instead otherwise."""
    if isinstance(policy, str) and policy in RETIRED_FRESHNESS:
        raise OscoreError(f"freshness policy {policy!r} is no longer supported: "
                          f"{RETIRED_FRESHNESS[policy]}")
    if policy not in FRESHNESS_POLICIES:
        raise OscoreError(f"unknown freshness policy {policy!r} "
                          f"(one of {', '.join(FRESHNESS_POLICIES)})")
    return policy  # type: ignore[return-value]


def _as_credential(cred: Credential | bytes) -> Credential:
    return cred if isinstance(cred, Credential) else Credential.from_ccs(cred)


#: CBOR heads of byte strings shorter than 24 bytes (kids and Partial IVs), by length
_BSTR_HEAD = tuple(bytes((0x40 | n,)) for n in range(24))


def _no_mode(id_piv: bytes, piv: bytes) -> bytes:
    raise ModeNotSupported("this group has no such mode")


def _cbor_alg(alg: Any) -> bytes:
    return b"\xf6" if alg is None else cbor2.dumps(alg.id)


class RecipientContext:
    """What a member keeps about one other member that sends to it."""

    __slots__ = (
        "_pairwise_recipient",
        "_pairwise_sender",
        "cred_bstr",
        "credential",
        "echo_challenge",
        "group_cipher",
        "key",
        "recipient_id",
        "replay_window",
        "verify",
    )

    def __init__(
        self, recipient_id: bytes, credential: Credential, key: bytes | None,
        group_cipher: Cipher | None, window: ReplayWindow,
        verify: Callable[[bytes, bytes], None] | None = None,
    ) -> None:
        self.recipient_id = recipient_id
        self.credential = credential
        #: the credential as a CBOR byte string, as it enters every external_aad
        self.cred_bstr = cbor_bstr(credential.raw)
        #: signature check bound to the credential's key (None without group mode)
        self.verify = verify
        self.key = key
        self.group_cipher = group_cipher
        self.replay_window = window
        self.echo_challenge: bytes | None = None
        self._pairwise_sender: Cipher | None = None
        self._pairwise_recipient: Cipher | None = None

    def __repr__(self) -> str:
        return f"<RecipientContext rid={self.recipient_id.hex() or '-'} {self.replay_window}>"


class GroupContext:
    """A Group OSCORE Security Context (one Gid) for one member.

    ``sender_id``/``private_key``/``credential`` are omitted for a silent server (Monitor),
    which can then only receive group-mode requests. ``peers`` preloads other members'
    credentials; ``credential_provider`` is asked for unknown Sender IDs. ``gm_cred`` is the
    Group Manager's credential as it enters the external_aad; None puts CBOR null there
    instead (static groups without a Group Manager as aiocoap configures them).
    ``replay_windows_valid`` is for a brand-new context (lower limit 0); a context rebuilt
    after a restart must leave it False unless its replay state was persisted.
    """

    def __init__(
        self,
        master_secret: bytes,
        gid: bytes,
        *,
        sender_id: bytes | None,
        private_key: Any = None,
        credential: Credential | bytes | None = None,
        master_salt: bytes = b"",
        hkdf: HkdfAlgorithm = HKDF_SHA256,
        aead: AeadAlgorithm | int | None = 10,
        group_enc: AeadAlgorithm | int | None = 10,
        signature: SignatureAlgorithm | int | None = -8,
        key_agreement: KeyAgreementAlgorithm | int | None = -27,
        gm_cred: bytes | None = b"",
        peers: Mapping[bytes, Credential | bytes] | None = None,
        credential_provider: CredentialProvider | None = None,
        max_recipients: int = 1024,
        replay_window_size: int = DEFAULT_WINDOW_SIZE,
        replay_windows_valid: bool = True,
        freshness: FreshnessPolicy = "echo",
        sequence: SenderSequence | None = None,
        allow_cbc: bool = False,
        process_own_requests: bool = False,
    ) -> None:
        self.master_secret = master_secret
        self.master_salt = master_salt
        self.gid = gid
        self.hkdf = hkdf
        self.aead = aead_by_id(aead) if isinstance(aead, int) else aead
        self.group_enc = (
            aead_by_id(group_enc, allow_cbc=allow_cbc) if isinstance(group_enc, int) else group_enc
        )
        self.signature = signature_by_id(signature) if isinstance(signature, int) else signature
        self.key_agreement = (
            key_agreement_by_id(key_agreement) if isinstance(key_agreement, int) else key_agreement
        )
        self.gm_cred = gm_cred
        self.group_mode = self.group_enc is not None and self.signature is not None
        self.pairwise_mode = self.aead is not None and self.key_agreement is not None
        if not (self.group_mode or self.pairwise_mode):
            raise OscoreError("a group needs group mode, pairwise mode or both")
        if self.aead is not None and not self.aead.is_aead:
            raise OscoreError("the AEAD Algorithm (pairwise mode) must be an AEAD")
        self.freshness = check_freshness_policy(freshness)
        self.process_own_requests = process_own_requests

        # Common Context: algorithm for derivations, Common IV, SEKey
        base_alg = self.group_enc if self.group_enc is not None else self.aead
        assert base_alg is not None
        self._base_alg = base_alg
        nonce_lens = [a.nonce_len for a in (self.group_enc, self.aead) if a is not None]
        self.max_id_len = min(nonce_lens) - 6
        self.common_iv = derive(hkdf, master_secret, master_salt, b"", gid, base_alg.id, "IV",
                                max(nonce_lens))
        # bound nonce builders (a mode this group lacks is refused before any nonce is made)
        self._group_nonce: Callable[[bytes, bytes], bytes] = (
            NonceFactory(self.common_iv, self.group_enc.nonce_len).nonce
            if self.group_enc else _no_mode
        )
        self._pairwise_nonce: Callable[[bytes, bytes], bytes] = (
            NonceFactory(self.common_iv, self.aead.nonce_len).nonce if self.aead else _no_mode
        )
        self.signature_encryption_key = (
            derive(hkdf, master_secret, master_salt, b"", gid, self.group_enc.id, "SEKey",
                   self.group_enc.key_len)
            if self.group_mode and self.group_enc is not None
            else None
        )
        self._aad_head = (
            bytes((0x89, OSCORE_VERSION, 0x84))
            + _cbor_alg(self.aead)
            + _cbor_alg(self.group_enc)
            + _cbor_alg(self.signature)
            + _cbor_alg(self.key_agreement)
        )
        # None: CBOR null, as aiocoap's static groups without a Group Manager put it
        self._gm_cred_bstr = b"\xf6" if gm_cred is None else cbor_bstr(gm_cred)
        self._gid_bstr = cbor_bstr(gid)
        # a request's external_aad after its PIV: options h'', then its kid context (Gid)
        self._request_aad_mid = b"\x40" + self._gid_bstr
        # keystream info = [id, Gid, type, L]: everything after id is fixed per direction
        self._sig_len = self.signature.signature_len if self.signature else 0
        self._group_aead = self.group_enc is not None and self.group_enc.is_aead
        #: ciphertext (tag and at least one byte) and signature
        self._min_group_payload = (
            self._sig_len + self.group_enc.tag_len + 1 if self.group_enc is not None else 0
        )
        self._sekey = self.signature_encryption_key or b""
        sig_len_cbor = cbor2.dumps(self._sig_len)
        self._ks_tail_request = self._gid_bstr + b"\xf5" + sig_len_cbor
        self._ks_tail_response = self._gid_bstr + b"\xf4" + sig_len_cbor

        # Sender Context
        self.sender_id = sender_id
        self.private_key = private_key
        self.credential = _as_credential(credential) if credential is not None else None
        if sender_id is not None:
            if len(sender_id) > self.max_id_len:
                raise OscoreError(f"Sender ID longer than {self.max_id_len} bytes")
            if self.credential is None or private_key is None:
                raise OscoreError("a sending member needs its private key and credential")
            if self.signature is not None and not self.credential.fits_signature(self.signature):
                raise CredentialError("own credential does not fit the Signature Algorithm")
            self.sender_key: bytes | None = self._key(sender_id)
            self._sender_group_cipher = (
                self.group_enc.cipher(self.sender_key) if self.group_enc else None
            )
            self._sign = self.signature.signer(private_key) if self.signature else None
            if len(gid) > 255:
                raise OscoreError("Gid longer than 255 bytes does not fit the OSCORE option")
            self._request_option_tail = bytes((len(gid),)) + gid + sender_id
            self._request_aad_head = self._aad_head + cbor_bstr(sender_id)
            # the end of every external_aad this member protects: [.., sender_cred, gm_cred]
            self._own_aad_tail = cbor_bstr(self.credential.raw) + self._gm_cred_bstr
            self._response_options = {g: bytes((0x28 if g else 0x08,)) + sender_id
                                      for g in (True, False)}
        else:
            self._sign = None
            self.sender_key = None
            self._sender_group_cipher = None
        self.sequence = sequence if sequence is not None else SenderSequence()

        # Recipient Contexts
        self.credential_provider = credential_provider
        self.max_recipients = max_recipients
        self.replay_window_size = replay_window_size
        self.replay_windows_valid = replay_windows_valid
        #: set once a Recipient Context was deleted: new ones then start with invalid windows
        self.recipient_deleted = False
        self._recipients: OrderedDict[bytes, RecipientContext] = OrderedDict()
        for rid, cred in (peers or {}).items():
            self.add_recipient(rid, cred)

    # -- derivation -----------------------------------------------------------------

    def _key(self, id_: bytes) -> bytes:
        alg = self._base_alg
        return derive(self.hkdf, self.master_secret, self.master_salt, id_, self.gid, alg.id,
                      "Key", alg.key_len)

    def _new_recipient(self, rid: bytes, cred: Credential) -> RecipientContext:
        if self.signature is not None and not cred.fits_signature(self.signature):
            raise CredentialError("credential does not fit the group's Signature Algorithm")
        key = self._key(rid)
        group_cipher = self.group_enc.cipher(key) if self.group_enc else None
        window = ReplayWindow(
            self.replay_window_size,
            valid=self.replay_windows_valid and not self.recipient_deleted,
        )
        verify = self.signature.verifier(cred.public_key) if self.signature else None
        return RecipientContext(rid, cred, key, group_cipher, window, verify)

    def _pairwise_keys(self, rc: RecipientContext) -> tuple[bytes, bytes]:
        """(Pairwise Sender Key, Pairwise Recipient Key) shared with ``rc`` (RFC 10021 §2.5.1)."""
        if self.aead is None or self.key_agreement is None or self.credential is None:
            raise ModeNotSupported("pairwise mode needs the AEAD Algorithm and a Sender Context")
        assert self.sender_key is not None and rc.key is not None
        try:
            shared = self.key_agreement.shared_secret(self.private_key, rc.credential.public_key)
        except CoseError as exc:
            raise ProtectionError(f"pairwise key agreement failed: {exc}") from exc
        own, peer = self.credential.raw, rc.credential.raw
        L = self.aead.key_len
        info_s = cbor2.dumps([self.sender_id, self.gid, self.aead.id, "Key", L])
        info_r = cbor2.dumps([rc.recipient_id, self.gid, self.aead.id, "Key", L])
        return (
            self.hkdf.derive(self.sender_key, own + peer + shared, info_s, L),
            self.hkdf.derive(rc.key, peer + own + shared, info_r, L),
        )

    def _pairwise_ciphers(self, rc: RecipientContext) -> tuple[Cipher, Cipher]:
        """Derive once, on first use, the pairwise (sender, recipient) ciphers shared with
        ``rc``; they stay cached on ``rc``."""
        sender_key, recipient_key = self._pairwise_keys(rc)
        assert self.aead is not None
        rc._pairwise_sender = sender = self.aead.cipher(sender_key)
        rc._pairwise_recipient = recipient = self.aead.cipher(recipient_key)
        return sender, recipient

    def pairwise_keys(self, rid: bytes) -> tuple[bytes, bytes]:
        """(Pairwise Sender Key, Pairwise Recipient Key) with member ``rid``."""
        return self._pairwise_keys(self.recipient(rid))

    def recipient_key(self, rid: bytes) -> bytes:
        return self._key(rid)

    # -- recipient management -------------------------------------------------------

    def add_recipient(self, rid: bytes, credential: Credential | bytes) -> RecipientContext:
        """Install a Recipient Context for a known member (e.g. from the Group Manager)."""
        if len(rid) > self.max_id_len:
            raise OscoreError(f"Recipient ID longer than {self.max_id_len} bytes")
        rc = self._new_recipient(rid, _as_credential(credential))
        self._insert(rc)
        return rc

    def remove_recipient(self, rid: bytes) -> None:
        """Delete a Recipient Context (e.g. a stale Sender ID after rekeying)."""
        if self._recipients.pop(rid, None) is not None:
            self.recipient_deleted = True

    def recipient(self, rid: bytes) -> RecipientContext:
        rc = self._recipients.get(rid)
        if rc is None:
            raise ContextNotFound(f"no Recipient Context for Sender ID {rid.hex()}")
        return rc

    @property
    def recipients(self) -> Mapping[bytes, RecipientContext]:
        return self._recipients

    def _insert(self, rc: RecipientContext) -> None:
        self._recipients[rc.recipient_id] = rc
        self._recipients.move_to_end(rc.recipient_id)
        while len(self._recipients) > self.max_recipients:
            self._recipients.popitem(last=False)
            self.recipient_deleted = True

    def _lookup(self, kid: bytes) -> tuple[RecipientContext, bool]:
        """The Recipient Context for ``kid``, creating a provisional one if allowed.

        The provisional context is *not* installed: the caller installs it only after the
        message verified, so a forged message leaves no state behind.
        """
        rc = self._recipients.get(kid)
        if rc is not None:
            self._recipients.move_to_end(kid)
            return rc, False
        if len(kid) > self.max_id_len:
            raise ContextNotFound("kid longer than any Sender ID of this group")
        if self.credential_provider is None:
            raise ContextNotFound(f"unknown Sender ID {kid.hex()}")
        cred = self.credential_provider(kid, self.gid)
        if cred is None:
            raise CredentialNotFound(f"no credential for Sender ID {kid.hex()}")
        try:
            return self._new_recipient(kid, _as_credential(cred)), True
        except CredentialError as exc:
            raise CredentialNotFound(f"unusable credential for {kid.hex()}: {exc}") from exc

    # -- building blocks ------------------------------------------------------------

    def _aad_prefix(self, req_kid: bytes, req_piv: bytes, req_kid_context: bytes | None) -> bytes:
        """external_aad up to the request's kid context: the part a request and all its
        responses share (RFC 10021 §4.3), kept in the binding so it is built once."""
        return b"".join((
            self._aad_head, cbor_bstr(req_kid), cbor_bstr(req_piv), b"\x40",
            cbor_bstr(req_kid_context if req_kid_context is not None else b""),
        ))

    def _binding_prefix(self, binding: RequestBinding | ServerBinding) -> bytes:
        if binding.context is self and binding.aad_prefix:
            return binding.aad_prefix
        return self._aad_prefix(binding.request_kid, binding.request_piv,
                                binding.request_kid_context)

    def _keystream(self, piv: bytes, id_piv: bytes, is_request: bool) -> bytes:
        """HKDF(salt = PIV, IKM = SEKey, info = [id, Gid, is_request, L], L) (RFC 10021 §4.1)."""
        tail = self._ks_tail_request if is_request else self._ks_tail_response
        return self.hkdf.derive(piv, self._sekey, b"\x84" + cbor_bstr(id_piv) + tail,
                                self._sig_len)

    def _seal_group(self, plaintext: bytes, aad_array: bytes, piv: bytes, id_piv: bytes,
                    is_request: bool) -> bytes:
        """Encrypt, then sign and encrypt the signature (RFC 10021 §5.2, §5.3)."""
        cipher, sign = self._sender_group_cipher, self._sign
        assert cipher is not None and sign is not None  # the caller required group mode
        aad = enc_structure(aad_array) if self._group_aead else b""
        ciphertext = cipher.encrypt(self._group_nonce(id_piv, piv), plaintext, aad)
        sig = sign(countersign_structure(aad_array, ciphertext))
        ks = self._keystream(piv, id_piv, is_request)
        n = len(sig)
        enc_sig = (int.from_bytes(sig, "big") ^ int.from_bytes(ks, "big")).to_bytes(n, "big")
        return ciphertext + enc_sig

    def _open_group(self, rc: RecipientContext, payload: bytes, aad_array: bytes, piv: bytes,
                    id_piv: bytes, is_request: bool) -> bytes:
        """Verify the signature, then decrypt (RFC 10021 §7.2 step 6)."""
        verify, cipher = rc.verify, rc.group_cipher
        # both come with group mode, which _check_mode required
        assert verify is not None and cipher is not None
        n = self._sig_len
        if len(payload) < self._min_group_payload:
            raise OscoreDecodeError("group-mode payload too short for ciphertext and signature")
        ciphertext, enc_sig = payload[:-n], payload[-n:]
        ks = self._keystream(piv, id_piv, is_request)
        sig = (int.from_bytes(enc_sig, "big") ^ int.from_bytes(ks, "big")).to_bytes(n, "big")
        try:
            verify(sig, countersign_structure(aad_array, ciphertext))
        except SignatureError as exc:
            raise ProtectionError("signature verification failed") from exc
        aad = enc_structure(aad_array) if self._group_aead else b""
        try:
            return cipher.decrypt(self._group_nonce(id_piv, piv), ciphertext, aad)
        except DecryptionError as exc:
            raise ProtectionError("group-mode decryption failed") from exc

    def _require_sender(self) -> None:
        if self.sender_id is None:
            raise ModeNotSupported("a silent server (no Sender Context) cannot send")

    # -- client side ----------------------------------------------------------------

    def protect_request(
        self, message: Message, *, pairwise_with: bytes | None = None
    ) -> tuple[Message, RequestBinding]:
        """Protect a request in group mode, or in pairwise mode for member ``pairwise_with``."""
        self._require_sender()
        sid = self.sender_id
        assert sid is not None
        group = pairwise_with is None
        if group and not self.group_mode:
            raise ModeNotSupported("this group has no group mode")
        pairwise_sender: Cipher | None = None
        if not group:
            if not self.pairwise_mode:
                raise ModeNotSupported("this group has no pairwise mode")
            rc = self.recipient(pairwise_with)  # type: ignore[arg-type]
            pairwise_sender = rc._pairwise_sender
            if pairwise_sender is None:
                pairwise_sender = self._pairwise_ciphers(rc)[0]
        outer, plaintext, outer_code = inner.split(message)
        piv = piv_from_int(self.sequence.next())
        # Request option and external_aad: everything but the PIV is fixed per sender
        # (flags | PIV | len(Gid) | Gid | own kid; aad [.., kid, PIV, h'', Gid, option, ..])
        option = bytes(((0x38 if group else 0x18) | len(piv),)) + piv + self._request_option_tail
        prefix = self._request_aad_head + _BSTR_HEAD[len(piv)] + piv + self._request_aad_mid
        aad_array = prefix + cbor_bstr(option) + self._own_aad_tail
        if group:
            payload = self._seal_group(plaintext, aad_array, piv, sid, True)
        else:
            nonce = self._pairwise_nonce(sid, piv)
            assert pairwise_sender is not None
            payload = pairwise_sender.encrypt(nonce, plaintext, enc_structure(aad_array))
        # positional: RequestBinding(context, request_kid, request_piv, request_kid_context,
        # group_mode, intended_recipient, observe, trackers, aad_prefix)
        binding = RequestBinding(self, sid, piv, self.gid, group, pairwise_with,
                                 is_registration(message), None, prefix)
        return inner.assemble(message, outer, outer_code, option, payload), binding

    def unprotect_response(
        self, message: Message, binding: RequestBinding
    ) -> tuple[Message, ResponseInfo]:
        option_value, opt = parse_oscore_option(message)
        resp_piv, kid, kid_context, group = opt
        intended = binding.intended_recipient
        if kid is None:
            if intended is None:
                raise OscoreDecodeError("response to a group request without kid")
            kid = intended
        if binding.intended_recipient is not None and kid != binding.intended_recipient:
            raise ProtectionError("pairwise response from another member than the one asked")
        if kid_context is not None and kid_context != self.gid:
            raise ContextNotFound("response protected with another Gid")
        self._check_mode(group)
        rc, provisional = self._lookup(kid)
        tracker = binding.tracker(self.gid, kid)
        tracker.check(resp_piv)
        if resp_piv is None:
            piv, id_piv = binding.request_piv, binding.request_kid
        else:
            piv, id_piv = resp_piv, kid
        aad_array = (self._binding_prefix(binding) + cbor_bstr(option_value) + rc.cred_bstr
                     + self._gm_cred_bstr)
        if group:
            plaintext = self._open_group(rc, message.payload, aad_array, piv, id_piv, False)
        else:
            plaintext = self._open_pairwise(rc, id_piv, piv, message.payload, aad_array)
        result = inner.merge(message, plaintext)
        binding.record(self.gid, kid, tracker, resp_piv)
        if provisional:
            self._insert(rc)
        return result, new_response_info(ResponseInfo, (kid, group, resp_piv))

    def _open_pairwise(self, rc: RecipientContext, id_piv: bytes, piv: bytes, payload: bytes,
                       aad_array: bytes) -> bytes:
        cipher = rc._pairwise_recipient
        if cipher is None:
            cipher = self._pairwise_ciphers(rc)[1]
        nonce = self._pairwise_nonce(id_piv, piv)
        try:
            return cipher.decrypt(nonce, payload, enc_structure(aad_array))
        except DecryptionError as exc:
            raise ProtectionError("pairwise decryption failed") from exc

    def _check_mode(self, group_flag: bool) -> None:
        if group_flag and not self.group_mode:
            raise ModeNotSupported("Group Flag set but this group has no group mode")
        if not group_flag and (not self.pairwise_mode or self.sender_id is None):
            raise ModeNotSupported("pairwise message but pairwise mode is not available")

    # -- server side ----------------------------------------------------------------

    def unprotect_request(self, message: Message) -> tuple[Message, ServerBinding]:
        """Verify and decrypt a request (group or pairwise mode, by the Group Flag).

        Raises FreshnessRequired when the request verified but the sender's replay window
        is not valid yet and the policy is "echo"; the exception holds the binding to
        protect the 4.01 + Echo answer with.
        """
        option_value, opt = parse_oscore_option(message)
        piv, kid, kid_context, group = opt
        if piv is None or kid is None or kid_context is None:
            raise OscoreDecodeError("group request without Partial IV, kid or kid context")
        if kid_context != self.gid:
            raise ContextNotFound("no group context for this Gid")
        self._check_mode(group)
        if kid == self.sender_id and not self.process_own_requests:
            raise ContextNotFound("request carries this member's own Sender ID")
        rc, provisional = self._lookup(kid)
        seq = int.from_bytes(piv, "big")
        window = rc.replay_window
        if window.valid:
            window.check(seq)
        # the kid context is this Gid: only kid and PIV vary in the shared prefix (both
        # shorter than 24 bytes: a kid longer than any Sender ID has no context)
        prefix = b"".join((self._aad_head, _BSTR_HEAD[len(kid)], kid, _BSTR_HEAD[len(piv)], piv,
                           self._request_aad_mid))
        aad_array = prefix + cbor_bstr(option_value) + rc.cred_bstr + self._gm_cred_bstr
        if group:
            plaintext = self._open_group(rc, message.payload, aad_array, piv, kid, True)
        else:
            plaintext = self._open_pairwise(rc, kid, piv, message.payload, aad_array)
        result, registration = inner.unwrap(message, plaintext)
        # positional: ServerBinding(context, request_kid, request_piv, request_kid_context,
        # group_mode, recipient, observe, responses_sent, aad_prefix)
        binding = ServerBinding(self, kid, piv, kid_context, group, rc, registration, 0, prefix)
        if window.valid:
            window.update(seq)
        elif self.freshness == INSECURE_ACCEPT_REPLAYS:
            window.initialize_from(seq)
        elif self.freshness == "drop":
            # nothing is stored: the window stays invalid, whatever arrives
            raise ReplayError("replay window not valid: request dropped (freshness 'drop')")
        elif rc.echo_challenge is not None and result.options.echo == rc.echo_challenge:
            window.initialize_from(seq)
            rc.echo_challenge = None
        else:
            if provisional:
                self._insert(rc)  # the Echo value must be found again with this context
            rc.echo_challenge = secrets.token_bytes(8)
            raise FreshnessRequired("replay window not valid yet", binding, rc.echo_challenge)
        if provisional:
            self._insert(rc)
        return result, binding

    def protect_response(
        self,
        message: Message,
        binding: ServerBinding,
        *,
        pairwise: bool | None = None,
        fresh_piv: bool | None = None,
    ) -> Message:
        """Protect a response to ``binding``'s request.

        The mode follows the request's unless ``pairwise`` says otherwise. The request nonce
        is reused only for the first response protected with the context that verified the
        request; every other response gets a fresh Partial IV (RFC 10021 §7.3).
        """
        self._require_sender()
        sid = self.sender_id
        assert sid is not None
        group = binding.group_mode if pairwise is None else not pairwise
        if group and not self.group_mode:
            raise ModeNotSupported("this group has no group mode")
        rc = binding.recipient
        if fresh_piv is None:
            fresh_piv = needs_fresh_piv(message, binding, self)
        outer, plaintext, outer_code = inner.split(message)
        if fresh_piv:
            new_piv = piv_from_int(self.sequence.next())
            piv: bytes | None = new_piv
            nonce_piv, id_piv = new_piv, sid
        else:
            piv = None
            nonce_piv, id_piv = binding.request_piv, binding.request_kid
        if piv is None and binding.request_kid_context == self.gid:
            option = self._response_options[group]  # the usual case: flags and kid only
        else:
            kid_context = self.gid if binding.request_kid_context != self.gid else None
            option = encode_option(piv, sid, kid_context, group)
        aad_array = self._binding_prefix(binding) + cbor_bstr(option) + self._own_aad_tail
        if group:
            payload = self._seal_group(plaintext, aad_array, nonce_piv, id_piv, False)
        else:
            if not self.pairwise_mode:
                raise ModeNotSupported("this group has no pairwise mode")
            if not isinstance(rc, RecipientContext) or binding.context is not self:
                # a request verified with another (e.g. the pre-rekey) context: pairwise
                # keys come from this context's own Recipient Context for the requester
                rc = self.recipient(binding.request_kid)
            cipher = rc._pairwise_sender
            if cipher is None:
                cipher = self._pairwise_ciphers(rc)[0]
            nonce = self._pairwise_nonce(id_piv, nonce_piv)
            payload = cipher.encrypt(nonce, plaintext, enc_structure(aad_array))
        binding.responses_sent += 1
        return inner.assemble(message, outer, outer_code, option, payload)

    def __repr__(self) -> str:
        sid = "-" if self.sender_id is None else self.sender_id.hex()
        modes = "+".join(m for m, on in (("group", self.group_mode),
                                          ("pairwise", self.pairwise_mode)) if on)
        peers = len(self._recipients)
        return f"<GroupContext gid={self.gid.hex()} sid={sid} {modes} peers={peers}>"

    def with_sender_id(
        self,
        sender_id: bytes | None,
        *,
        sequence: SenderSequence | None = None,
        private_key: Any = None,
        credential: Credential | bytes | None = None,
    ) -> GroupContext:
        """This context with a new Sender Context (a renewed Sender ID, or a re-join under
        the same Gid), keeping the Common Context and the replay state of every peer.

        RFC 10021 §2.6.3.1: a new Sender ID changes only the Sender Context. Building a
        fresh context instead would start every Recipient Context with a valid window at 0,
        so each request a peer sent earlier under this Gid could be replayed once. The new
        context gets its own Recipient Context objects (pairwise keys depend on the own
        Sender ID and credential, and this context may still verify responses to requests
        sent under the old ID) that share each peer's credential, keys, pending Echo
        challenge and the very same ReplayWindow object. ``private_key``/``credential``
        default to the current ones; ``sequence`` to a fresh in-memory count from 0.
        """
        new = GroupContext(
            self.master_secret,
            self.gid,
            sender_id=sender_id,
            private_key=private_key if private_key is not None else self.private_key,
            credential=credential if credential is not None else self.credential,
            master_salt=self.master_salt,
            hkdf=self.hkdf,
            aead=self.aead,
            group_enc=self.group_enc,
            signature=self.signature,
            key_agreement=self.key_agreement,
            gm_cred=self.gm_cred,
            credential_provider=self.credential_provider,
            max_recipients=self.max_recipients,
            replay_window_size=self.replay_window_size,
            replay_windows_valid=self.replay_windows_valid,
            freshness=self.freshness,
            sequence=sequence,
            process_own_requests=self.process_own_requests,
        )
        new.recipient_deleted = self.recipient_deleted
        for rid, old in self._recipients.items():
            if rid == sender_id:
                new.recipient_deleted = True  # cannot happen under one Gid; never reuse it
                continue
            rc = RecipientContext(rid, old.credential, old.key, old.group_cipher,
                                  old.replay_window, old.verify)
            rc.echo_challenge = old.echo_challenge
            new._recipients[rid] = rc
        return new
