"""aiocoap peers built in memory from the spec's vectors, plus message converters.

Messages cross between the libraries only as encoded CoAP datagrams, so every test
checks the wire format and not some shared in-memory object.
"""

from __future__ import annotations

from typing import Any

import aiocoap
from aiocoap import oscore
from aiocoap.message import Direction
from aiocoap.numbers import Type as AioType
from aiocoap.options import Options as AioOptions
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from grouposcore.coap import Message
from grouposcore.coap.codec import encode_options
from grouposcore.oscore import GroupContext, SecurityContext, SenderSequence
from tests.conftest import load_vectors

H = bytes.fromhex

RFC = {v["id"]: v for v in load_vectors("vectors-rfc8613.json")["vectors"]}
_C11 = RFC["C.1.1"]["inputs"]
MASTER_SECRET = H(_C11["master_secret"])
MASTER_SALT = H(_C11["master_salt"])

_GROUP = load_vectors("vectors-group-oscore.json")
COMMON = _GROUP["common_inputs"]
GV = {v["id"]: v for v in _GROUP["vectors"]}
GID = H(COMMON["id_context_gid"])
CLIENT_ID = H(COMMON["client_sender_id"])
SERVER_ID = H(COMMON["server_sender_id"])

#: COSE algorithm number -> aiocoap algorithm object
AIO_AEAD = {alg.value: alg for alg in oscore.algorithms.values()}


class MemoryOscoreContext(oscore.CanProtect, oscore.CanUnprotect, oscore.SecurityContextUtils):
    """A minimal RFC 8613 context for aiocoap that lives only in memory.

    aiocoap ships only a filesystem-backed context; the mixins it is built from need
    nothing but these attributes.
    """

    def __init__(
        self,
        sender_id: bytes,
        recipient_id: bytes,
        *,
        seq: int = 0,
        master_secret: bytes = MASTER_SECRET,
        master_salt: bytes = MASTER_SALT,
        id_context: bytes | None = None,
    ) -> None:
        self.alg_aead = oscore.algorithms["AES-CCM-16-64-128"]
        self.hashfun = oscore.hashfunctions["sha256"]
        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.id_context = id_context
        self.derive_keys(master_salt, master_secret)
        self.sender_sequence_number = seq
        self.recipient_replay_window = oscore.ReplayWindow(32, lambda: None)
        self.recipient_replay_window.initialize_empty()
        self.echo_recovery = None

    def post_seqnoincrease(self) -> None:
        """Nothing to persist: the context is rebuilt for every test."""


def vector_context(key_vector: str) -> dict[str, Any]:
    """Keyword arguments for both libraries' contexts from an RFC 8613 C.x.y vector."""
    inputs = RFC[key_vector]["inputs"]
    return {
        "sender_id": H(inputs["sender_id"]),
        "recipient_id": H(inputs["recipient_id"]),
        "master_secret": H(inputs["master_secret"]),
        "master_salt": H(inputs["master_salt"]),
        "id_context": None if inputs["id_context"] is None else H(inputs["id_context"]),
    }


def aio_oscore(key_vector: str, seq: int = 0) -> MemoryOscoreContext:
    ctx = vector_context(key_vector)
    return MemoryOscoreContext(ctx.pop("sender_id"), ctx.pop("recipient_id"), seq=seq, **ctx)


def gos_oscore(key_vector: str, seq: int = 0, **extra: Any) -> SecurityContext:
    ctx = vector_context(key_vector)
    return SecurityContext(
        ctx.pop("master_secret"),
        ctx.pop("sender_id"),
        ctx.pop("recipient_id"),
        sequence=SenderSequence(seq),
        **ctx,
        **extra,
    )


def aio_oscore_client(seq: int = 0) -> MemoryOscoreContext:
    """The C.1 client (Sender ID h'')."""
    return aio_oscore("C.1.1", seq)


def aio_oscore_server(seq: int = 0) -> MemoryOscoreContext:
    """The C.1 server (Sender ID h'01')."""
    return aio_oscore("C.1.2", seq)


def gos_oscore_client(seq: int = 0) -> SecurityContext:
    return gos_oscore("C.1.1", seq)


def gos_oscore_server(seq: int = 0) -> SecurityContext:
    return gos_oscore("C.1.2", seq)


# -- Group OSCORE -------------------------------------------------------------------


def ccs(name: str) -> bytes:
    return H(COMMON["creds"][name]["ccs"])


def seed(name: str) -> bytes:
    return H(COMMON["creds"][name]["ed25519_seed"])


def _roles(name: str, ids: tuple[bytes, bytes] | None) -> tuple[bytes, bytes, str]:
    """(own Sender ID, peer's Sender ID, peer's name); ``ids`` = (client's, server's)."""
    client_id, server_id = ids if ids is not None else (CLIENT_ID, SERVER_ID)
    if name == "client":
        return client_id, server_id, "server"
    return server_id, client_id, "client"


def aio_group(
    name: str,
    *,
    seq: int = 0,
    group_enc: int = 10,
    aead: int = 10,
    own_cred: bytes | None = None,
    own_seed: bytes | None = None,
    peer_cred: bytes | None = None,
    ids: tuple[bytes, bytes] | None = None,
    gid: bytes = GID,
) -> oscore.SimpleGroupContext:
    """aiocoap's static group context for the vectors' client (0x25) or server (0x52)."""
    own_id, peer_id, peer = _roles(name, ids)
    ctx = oscore.SimpleGroupContext(
        AIO_AEAD[aead],
        oscore.hashfunctions["sha256"],
        oscore.algorithms_countersign["EdDSA on Ed25519"],
        AIO_AEAD[group_enc],
        oscore.algorithms_staticstatic["ECDH-SS + HKDF-256"],
        gid,
        H(COMMON["master_secret"]),
        H(COMMON["master_salt"]),
        own_id,
        own_seed if own_seed is not None else seed(name),
        own_cred if own_cred is not None else ccs(name),
        {peer_id: peer_cred if peer_cred is not None else ccs(peer)},
        ccs("gm"),
    )
    ctx.sender_sequence_number = seq
    return ctx


def gos_group(
    name: str,
    *,
    seq: int = 0,
    group_enc: int = 10,
    aead: int = 10,
    own_cred: bytes | None = None,
    own_seed: bytes | None = None,
    peer_cred: bytes | None = None,
    ids: tuple[bytes, bytes] | None = None,
    gid: bytes = GID,
) -> GroupContext:
    """grouposcore's group context for the same member."""
    own_id, peer_id, peer = _roles(name, ids)
    return GroupContext(
        H(COMMON["master_secret"]),
        gid,
        master_salt=H(COMMON["master_salt"]),
        sender_id=own_id,
        private_key=Ed25519PrivateKey.from_private_bytes(
            own_seed if own_seed is not None else seed(name)
        ),
        credential=own_cred if own_cred is not None else ccs(name),
        gm_cred=ccs("gm"),
        peers={peer_id: peer_cred if peer_cred is not None else ccs(peer)},
        sequence=SenderSequence(seq),
        group_enc=group_enc,
        aead=aead,
    )


# -- message conversion -------------------------------------------------------------


def aio_outgoing(message: Message) -> aiocoap.Message:
    """The same message as an aiocoap message ready to be protected."""
    aio = aiocoap.Message.decode(message.encode())
    aio.direction = Direction.OUTGOING
    return aio


def aio_incoming(data: bytes) -> aiocoap.Message:
    return aiocoap.Message.decode(data)


def aio_wire(protected: aiocoap.Message, like: Message) -> bytes:
    """Encode an aiocoap-protected message with the header fields of ``like``.

    aiocoap's protect() builds a fresh outer message and leaves MID, type and token to the
    transport, so they are filled in here the way its transport would.
    """
    protected.mid = like.mid
    protected.mtype = AioType(int(like.mtype))
    protected.token = like.token
    return protected.encode()


def aio_protect(ctx: Any, message: Message, request_id: Any = None) -> tuple[bytes, Any]:
    """Protect ``message`` with an aiocoap context; returns the datagram and request id."""
    protected, rid = ctx.protect(aio_outgoing(message), request_id)
    return aio_wire(protected, message), rid


def same_content(aio: aiocoap.Message, expected: Message, *, skip: tuple[int, ...] = ()) -> bool:
    """Code, options and payload of an aiocoap message equal those of ``expected``
    (options compared in their encoded form, minus the numbers in ``skip``)."""
    aio_options = AioOptions()
    for option in aio.opt.option_list():
        if option.number not in skip:
            aio_options.add_option(option)
    options = [(n, v) for n, v in expected.options if n not in skip]
    return (
        int(aio.code) == int(expected.code)
        and aio.payload == expected.payload
        and aio_options.encode() == encode_options(options)
    )
