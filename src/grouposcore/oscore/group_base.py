"""The state of a Group Security Context (RFC 10021 §2) and the crypto of both modes.

Common Context (Common IV, Signature Encryption Key, the constant parts of every
external_aad), Sender Context and Recipient Contexts (created on the fly through a
credential provider, installed only once a message verified), key derivation including
the pairwise keys, and the per-mode building blocks that :mod:`grouposcore.oscore.group`
calls for each message: group mode encrypts then signs and encrypts the signature with a
keystream; a receiver checks the signature before it decrypts.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping

import cbor2

from grouposcore.cose import (
    HKDF_SHA256,
    AeadAlgorithm,
    AnyPrivateKey,
    AnyPublicKey,
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
    ModeNotSupported,
    OscoreDecodeError,
    OscoreError,
    ProtectionError,
    SignatureError,
)
from grouposcore.oscore.common import (
    OSCORE_VERSION,
    NonceFactory,
    RequestBinding,
    ServerBinding,
    derive,
)
from grouposcore.oscore.freshness import FreshnessPolicy, check_freshness_policy
from grouposcore.oscore.recipient import CredentialProvider, RecipientContext, as_credential
from grouposcore.oscore.replay import DEFAULT_WINDOW_SIZE, ReplayWindow
from grouposcore.oscore.sequence import SenderSequence

#: CBOR heads of byte strings shorter than 24 bytes (kids and Partial IVs), by length
SHORT_BSTR_HEAD = tuple(bytes((0x40 | n,)) for n in range(24))

#: what :func:`enc_structure` and :func:`countersign_structure` put before the
#: external_aad: group mode encodes the external_aad's byte string once for both
_ENC0_HEAD = enc_structure(b"")[:-1]
_CSIG0_HEAD = countersign_structure(b"", b"")[:-2]


def _no_mode(id_piv: bytes, piv: bytes) -> bytes:
    raise ModeNotSupported("this group has no such mode")


def _cbor_alg(alg: AeadAlgorithm | SignatureAlgorithm | KeyAgreementAlgorithm | None) -> bytes:
    return b"\xf6" if alg is None else cbor2.dumps(alg.id)


class GroupContextBase:
    """The state of a Group OSCORE Security Context (one Gid) for one member and the crypto
    of both modes; :class:`~grouposcore.oscore.group.GroupContext` processes messages with it.

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
        private_key: AnyPrivateKey | None = None,
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
        self.common_iv = derive(
            hkdf, master_secret, master_salt, b"", gid, base_alg.id, "IV", max(nonce_lens)
        )
        # bound nonce builders (a mode this group lacks is refused before any nonce is made)
        self._group_nonce: Callable[[bytes, bytes], bytes] = (
            NonceFactory(self.common_iv, self.group_enc.nonce_len).nonce
            if self.group_enc
            else _no_mode
        )
        self._pairwise_nonce: Callable[[bytes, bytes], bytes] = (
            NonceFactory(self.common_iv, self.aead.nonce_len).nonce if self.aead else _no_mode
        )
        self.signature_encryption_key = (
            derive(
                hkdf,
                master_secret,
                master_salt,
                b"",
                gid,
                self.group_enc.id,
                "SEKey",
                self.group_enc.key_len,
            )
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
        #: signature check (public key, signature, data) for every Recipient Context's key,
        #: each checked to fit the Signature Algorithm when its context was created
        self._verify: Callable[[AnyPublicKey, bytes, bytes], None] | None = (
            self.signature.key_verifier() if self.signature else None
        )
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
        self.credential = as_credential(credential) if credential is not None else None
        if sender_id is not None:
            if len(sender_id) > self.max_id_len:
                raise OscoreError(f"Sender ID longer than {self.max_id_len} bytes")
            if self.credential is None or private_key is None:
                raise OscoreError("a sending member needs its private key and credential")
            if self.signature is not None and not self.credential.fits_signature(self.signature):
                raise CredentialError("own credential does not fit the Signature Algorithm")
            self.sender_key: bytes | None = self._key(sender_id)
            self._sender_group_cipher: Cipher | None = (
                self.group_enc.cipher(self.sender_key) if self.group_enc else None
            )
            self._sign: Callable[[bytes], bytes] | None = (
                self.signature.signer(private_key) if self.signature else None
            )
            if len(gid) > 255:
                raise OscoreError("Gid longer than 255 bytes does not fit the OSCORE option")
            self._request_option_tail = bytes((len(gid),)) + gid + sender_id
            self._request_aad_head = self._aad_head + cbor_bstr(sender_id)
            # the end of every external_aad this member protects: [.., sender_cred, gm_cred]
            self._own_aad_tail = cbor_bstr(self.credential.raw) + self._gm_cred_bstr
            self._response_options = {
                g: bytes((0x28 if g else 0x08,)) + sender_id for g in (True, False)
            }
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
        return derive(
            self.hkdf,
            self.master_secret,
            self.master_salt,
            id_,
            self.gid,
            alg.id,
            "Key",
            alg.key_len,
        )

    def _new_recipient(self, rid: bytes, cred: Credential) -> RecipientContext:
        if self.signature is not None and not cred.fits_signature(self.signature):
            raise CredentialError("credential does not fit the group's Signature Algorithm")
        key = self._key(rid)
        group_cipher = self.group_enc.cipher(key) if self.group_enc else None
        window = ReplayWindow(
            self.replay_window_size,
            valid=self.replay_windows_valid and not self.recipient_deleted,
        )
        return RecipientContext(rid, cred, key, group_cipher, window)

    def _pairwise_keys(self, rc: RecipientContext) -> tuple[bytes, bytes]:
        """(Pairwise Sender Key, Pairwise Recipient Key) shared with ``rc`` (RFC 10021 §2.5.1)."""
        if (
            self.aead is None
            or self.key_agreement is None
            or self.credential is None
            or self.private_key is None
        ):
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
        rc = self._new_recipient(rid, as_credential(credential))
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
            raise CredentialNotFound(f"no credential for Sender ID {kid.hex()}", kid=kid)
        try:
            return self._new_recipient(kid, as_credential(cred)), True
        except CredentialError as exc:
            raise CredentialNotFound(
                f"unusable credential for {kid.hex()}: {exc}", kid=kid
            ) from exc

    # -- building blocks ------------------------------------------------------------

    def _aad_prefix(self, req_kid: bytes, req_piv: bytes, req_kid_context: bytes | None) -> bytes:
        """external_aad up to the request's kid context: the part a request and all its
        responses share (RFC 10021 §4.3), kept in the binding so it is built once."""
        return b"".join(
            (
                self._aad_head,
                cbor_bstr(req_kid),
                cbor_bstr(req_piv),
                b"\x40",
                cbor_bstr(req_kid_context if req_kid_context is not None else b""),
            )
        )

    def _binding_prefix(self, binding: RequestBinding | ServerBinding) -> bytes:
        if binding.context is self and binding.aad_prefix:
            return binding.aad_prefix
        return self._aad_prefix(
            binding.request_kid, binding.request_piv, binding.request_kid_context
        )

    def _keystream(self, piv: bytes, id_piv: bytes, is_request: bool) -> bytes:
        """HKDF(salt = PIV, IKM = SEKey, info = [id, Gid, is_request, L], L) (RFC 10021 §4.1)."""
        tail = self._ks_tail_request if is_request else self._ks_tail_response
        return self.hkdf.derive(piv, self._sekey, b"\x84" + cbor_bstr(id_piv) + tail, self._sig_len)

    def _seal_group(
        self, plaintext: bytes, aad_array: bytes, piv: bytes, id_piv: bytes, is_request: bool
    ) -> bytes:
        """Encrypt, then sign and encrypt the signature (RFC 10021 §5.2, §5.3)."""
        cipher, sign = self._sender_group_cipher, self._sign
        assert cipher is not None and sign is not None  # the caller required group mode
        external_aad = cbor_bstr(aad_array)
        aad = _ENC0_HEAD + external_aad if self._group_aead else b""
        ciphertext = cipher.encrypt(self._group_nonce(id_piv, piv), plaintext, aad)
        sig = sign(_CSIG0_HEAD + external_aad + cbor_bstr(ciphertext))
        ks = self._keystream(piv, id_piv, is_request)
        n = len(sig)
        enc_sig = (int.from_bytes(sig, "big") ^ int.from_bytes(ks, "big")).to_bytes(n, "big")
        return ciphertext + enc_sig

    def _open_group(
        self,
        rc: RecipientContext,
        payload: bytes,
        aad_array: bytes,
        piv: bytes,
        id_piv: bytes,
        is_request: bool,
    ) -> bytes:
        """Verify the signature, then decrypt (RFC 10021 §7.2 step 6)."""
        verify, cipher = self._verify, rc.group_cipher
        # both come with group mode, which _check_mode required
        assert verify is not None and cipher is not None
        n = self._sig_len
        if len(payload) < self._min_group_payload:
            raise OscoreDecodeError("group-mode payload too short for ciphertext and signature")
        ciphertext, enc_sig = payload[:-n], payload[-n:]
        ks = self._keystream(piv, id_piv, is_request)
        sig = (int.from_bytes(enc_sig, "big") ^ int.from_bytes(ks, "big")).to_bytes(n, "big")
        external_aad = cbor_bstr(aad_array)
        try:
            verify(
                rc.credential.public_key, sig, _CSIG0_HEAD + external_aad + cbor_bstr(ciphertext)
            )
        except SignatureError as exc:
            raise ProtectionError("signature verification failed") from exc
        aad = _ENC0_HEAD + external_aad if self._group_aead else b""
        try:
            return cipher.decrypt(self._group_nonce(id_piv, piv), ciphertext, aad)
        except DecryptionError as exc:
            raise ProtectionError("group-mode decryption failed") from exc

    def _require_sender(self) -> None:
        if self.sender_id is None:
            raise ModeNotSupported("a silent server (no Sender Context) cannot send")

    def _open_pairwise(
        self, rc: RecipientContext, id_piv: bytes, piv: bytes, payload: bytes, aad_array: bytes
    ) -> bytes:
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
