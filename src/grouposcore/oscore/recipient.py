"""A Recipient Context: what a Group OSCORE member keeps about one other member."""

from __future__ import annotations

from collections.abc import Callable

from grouposcore.cose import Cipher, Credential, cbor_bstr
from grouposcore.oscore.replay import ReplayWindow

#: Callable that returns the credential of the member with Sender ID ``kid`` in group
#: ``gid`` (or None if unknown); used to create Recipient Contexts on the fly.
CredentialProvider = Callable[[bytes, bytes], "Credential | bytes | None"]


def as_credential(cred: Credential | bytes) -> Credential:
    """``cred`` as a Credential (a raw CCS is parsed)."""
    return cred if isinstance(cred, Credential) else Credential.from_ccs(cred)


class RecipientContext:
    """What a member keeps about one other member that sends to it.

    Slotted and lean (one per group member, issue 14 target 4): the signature check is one
    function per context applied to ``credential.public_key``, not one closure per member.
    """

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
    )

    def __init__(
        self,
        recipient_id: bytes,
        credential: Credential,
        key: bytes | None,
        group_cipher: Cipher | None,
        window: ReplayWindow,
    ) -> None:
        self.recipient_id = recipient_id
        self.credential = credential
        #: the credential as a CBOR byte string, as it enters every external_aad
        self.cred_bstr = cbor_bstr(credential.raw)
        self.key = key
        self.group_cipher = group_cipher
        self.replay_window = window
        self.echo_challenge: bytes | None = None
        self._pairwise_sender: Cipher | None = None
        self._pairwise_recipient: Cipher | None = None

    def __repr__(self) -> str:
        return f"<RecipientContext rid={self.recipient_id.hex() or '-'} {self.replay_window}>"
