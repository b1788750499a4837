"""Group OSCORE (RFC 10021): protecting and verifying messages in group and pairwise mode.

The context's state (Common, Sender and Recipient Contexts, keys) and the per-mode crypto
building blocks live in :mod:`grouposcore.oscore.group_base`; this module is the message
processing on top: option, external_aad, replay and freshness handling, bindings.

Group mode: the message is encrypted with the sender's group key, then signed
(encrypt-then-sign) and the signature is XOR-encrypted with a keystream derived from the
Signature Encryption Key; payload = ciphertext || encrypted signature. A receiver checks
the signature *before* it decrypts, and touches replay state only after full success.

Pairwise mode: plain OSCORE processing with keys derived from static-static ECDH between
the two members' credentials, and the Group OSCORE external_aad.
"""

from __future__ import annotations

import secrets

from grouposcore.coap import Message
from grouposcore.cose import (
    AnyPrivateKey,
    Cipher,
    Credential,
    cbor_bstr,
    enc_structure,
)
from grouposcore.errors import (
    ContextNotFound,
    FreshnessRequired,
    ModeNotSupported,
    OscoreDecodeError,
    ProtectionError,
    ReplayError,
)
from grouposcore.oscore import inner
from grouposcore.oscore.common import (
    RequestBinding,
    ResponseInfo,
    ServerBinding,
    is_registration,
    needs_fresh_piv,
    new_response_info,
    parse_oscore_option,
)
from grouposcore.oscore.freshness import (
    FRESHNESS_POLICIES,
    INSECURE_ACCEPT_REPLAYS,
    RETIRED_FRESHNESS,
    FreshnessPolicy,
    check_freshness_policy,
)
from grouposcore.oscore.group_base import SHORT_BSTR_HEAD, GroupContextBase
from grouposcore.oscore.option import OscoreOption, encode_option, piv_from_int
from grouposcore.oscore.recipient import CredentialProvider, RecipientContext
from grouposcore.oscore.sequence import SenderSequence

__all__ = [
    "FRESHNESS_POLICIES",
    "INSECURE_ACCEPT_REPLAYS",
    "RETIRED_FRESHNESS",
    "CredentialProvider",
    "FreshnessPolicy",
    "GroupContext",
    "GroupContextBase",
    "RecipientContext",
    "check_freshness_policy",
]


class GroupContext(GroupContextBase):
    """A Group OSCORE Security Context (one Gid) for one member: protecting and verifying
    messages (RFC 10021 §7, §8) on top of the state in
    :class:`~grouposcore.oscore.group_base.GroupContextBase`, whose constructor documents
    the arguments."""

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
        if pairwise_with is not None:
            if not self.pairwise_mode:
                raise ModeNotSupported("this group has no pairwise mode")
            rc = self.recipient(pairwise_with)
            pairwise_sender = rc._pairwise_sender
            if pairwise_sender is None:
                pairwise_sender = self._pairwise_ciphers(rc)[0]
        outer, plaintext, outer_code = inner.split(message)
        piv = piv_from_int(self.sequence.next())
        # Request option and external_aad: everything but the PIV is fixed per sender
        # (flags | PIV | len(Gid) | Gid | own kid; aad [.., kid, PIV, h'', Gid, option, ..])
        option = bytes(((0x38 if group else 0x18) | len(piv),)) + piv + self._request_option_tail
        prefix = self._request_aad_head + SHORT_BSTR_HEAD[len(piv)] + piv + self._request_aad_mid
        aad_array = prefix + cbor_bstr(option) + self._own_aad_tail
        if group:
            payload = self._seal_group(plaintext, aad_array, piv, sid, True)
        else:
            nonce = self._pairwise_nonce(sid, piv)
            assert pairwise_sender is not None
            payload = pairwise_sender.encrypt(nonce, plaintext, enc_structure(aad_array))
        # positional: RequestBinding(context, request_kid, request_piv, request_kid_context,
        # group_mode, intended_recipient, observe, trackers, aad_prefix)
        binding = RequestBinding(
            self, sid, piv, self.gid, group, pairwise_with, is_registration(message), None, prefix
        )
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
        aad_array = (
            self._binding_prefix(binding)
            + cbor_bstr(option_value)
            + rc.cred_bstr
            + self._gm_cred_bstr
        )
        if group:
            plaintext = self._open_group(rc, message.payload, aad_array, piv, id_piv, False)
        else:
            plaintext = self._open_pairwise(rc, id_piv, piv, message.payload, aad_array)
        result = inner.merge(message, plaintext)
        binding.record(self.gid, kid, tracker, resp_piv)
        if provisional:
            self._insert(rc)
        return result, new_response_info(ResponseInfo, (kid, group, resp_piv))

    # -- server side ----------------------------------------------------------------

    def unprotect_request(
        self, message: Message, *, option: tuple[bytes, OscoreOption] | None = None
    ) -> tuple[Message, ServerBinding]:
        """Verify and decrypt a request (group or pairwise mode, by the Group Flag).

        Raises FreshnessRequired when the request verified but the sender's replay window
        is not valid yet and the policy is "echo"; the exception holds the binding to
        protect the 4.01 + Echo answer with. ``option``: the message's OSCORE option value
        and its decoded form, when the caller decoded it already (to pick this context).
        """
        if option is None:
            option_value, opt = parse_oscore_option(message)
        elif not message.payload:
            raise OscoreDecodeError("OSCORE message without payload")
        else:
            option_value, opt = option
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
        head = SHORT_BSTR_HEAD
        prefix = b"".join(
            (self._aad_head, head[len(kid)], kid, head[len(piv)], piv, self._request_aad_mid)
        )
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
        modes = "+".join(
            m for m, on in (("group", self.group_mode), ("pairwise", self.pairwise_mode)) if on
        )
        peers = len(self._recipients)
        return f"<GroupContext gid={self.gid.hex()} sid={sid} {modes} peers={peers}>"

    def with_sender_id(
        self,
        sender_id: bytes | None,
        *,
        sequence: SenderSequence | None = None,
        private_key: AnyPrivateKey | None = None,
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
            rc = RecipientContext(rid, old.credential, old.key, old.group_cipher, old.replay_window)
            rc.echo_challenge = old.echo_challenge
            new._recipients[rid] = rc
        return new
