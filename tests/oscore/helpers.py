"""A small group built from the vector keys plus freshly generated members."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.coap import Code, Message, Type
from grouposcore.cose import EDDSA, Credential
from grouposcore.oscore import GroupContext, SenderSequence
from grouposcore.oscore.config import group_context_from_document

SECRET = bytes(range(1, 17))
SALT = bytes.fromhex("9e7ca92223786340")
GID = bytes.fromhex("44616c")
GM_CRED = Credential.build_ccs(Ed25519PrivateKey.generate().public_key(), -8, "gm").raw


class Member:
    """A member identity: Sender ID, key pair and CCS."""

    def __init__(self, sid: bytes, name: str) -> None:
        self.sid = sid
        self.key = EDDSA.generate_private_key()
        self.cred = Credential.build_ccs(self.key.public_key(), -8, name)

    def context(self, peers: list[Member] | None = None, **kwargs: Any) -> GroupContext:
        return GroupContext(
            SECRET,
            GID,
            master_salt=SALT,
            sender_id=self.sid,
            private_key=self.key,
            credential=self.cred,
            gm_cred=GM_CRED,
            peers={p.sid: p.cred.raw for p in peers or []},
            **kwargs,
        )


def get(path: str = "light", *, mid: int = 1, token: bytes = b"\x01\x02") -> Message:
    msg = Message(code=Code.GET, mtype=Type.NON, mid=mid, token=token)
    msg.options.uri_path = [path]
    return msg


def content(payload: bytes, *, mid: int = 1, token: bytes = b"\x01\x02") -> Message:
    return Message(code=Code.CONTENT, mtype=Type.NON, mid=mid, token=token, payload=payload)


def echo_challenge(exc: Any, request: Message) -> Message:
    """The protected 4.01 + Echo a server sends for a FreshnessRequired, built the way the
    transport builds it: the context picks the server's own Partial IV by itself."""
    reply = Message(
        code=Code.UNAUTHORIZED,
        mtype=request.mtype,
        mid=request.mid,
        token=request.token,
        remote=request.remote,
    )
    reply.options.echo = exc.echo
    return exc.binding.context.protect_response(reply, exc.binding)


def fresh_context(document: dict[str, Any], **kwargs: Any) -> GroupContext:
    """The context of a group document provisioned in memory a moment ago and never used:
    its true replay state is "nothing received" (valid windows at 0), and its sequence
    numbers live in memory because the test process never restarts."""
    return group_context_from_document(
        document,
        sequence=SenderSequence(),
        replay_windows_valid=True,
        replay_state_persisted=True,
        **kwargs,
    )
