"""A node's commissioning file: its OSCORE channel with the Group Manager, the GM's URI and
the GM credentials it pins per group; and the GM client that channel configures.

The file holds the channel's Master Secret, so it is written 0600 and refused when other
users can read or write it (:mod:`grouposcore.manager.secretfile`). The client numbers its
requests from a durable sequence store under :func:`channel_sequence_key`, so the GM never
sees a nonce twice, across restarts and across processes sharing the store.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from grouposcore.errors import ManagerMessageError
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.edhoc_client import EdhocGroupManagerClient, EdhocIdentity
from grouposcore.manager.secretfile import read_private_file, write_private_file
from grouposcore.manager.store import ChannelMaterial
from grouposcore.oscore.sequence import SenderSequence, SequenceNumberStore
from grouposcore.transport import Endpoint

__all__ = [
    "channel_client",
    "channel_sequence_key",
    "endpoint_towards",
    "read_channel_file",
    "write_channel_file",
]

_CHANNEL_VERSION = 1


def channel_sequence_key(channel: ChannelMaterial) -> str:
    """The sequence-store key of a node's GM channel: new channel keys start a new count."""
    digest = hashlib.sha256(channel.master_secret + channel.master_salt).hexdigest()[:16]
    return f"channel/{channel.node}/{digest}"


def channel_client(
    endpoint: Endpoint,
    gm_address: tuple[str, int],
    channel: ChannelMaterial | EdhocIdentity,
    sequence_store: SequenceNumberStore | None,
    *,
    step: int = 64,
    timeout: float | None = 10.0,
) -> GroupManagerClient:
    """The node's client of the GM at ``gm_address``: over the OSCORE channel ``channel``
    (its numbers reserved ``step`` at a time in ``sequence_store``), or over a channel
    established with EDHOC for an :class:`EdhocIdentity` (nothing of it persisted)."""
    if isinstance(channel, EdhocIdentity):
        return EdhocGroupManagerClient(endpoint, gm_address, channel, timeout=timeout)
    if sequence_store is None:
        raise ValueError("an OSCORE channel needs a durable sequence store")
    sequence = SenderSequence(store=sequence_store, key=channel_sequence_key(channel),
                              step=step)  # fmt: skip
    return GroupManagerClient(endpoint, gm_address, channel, sequence=sequence, timeout=timeout)


async def endpoint_towards(gm_address: tuple[str, int]) -> Endpoint:
    """A new endpoint on an ephemeral port of the GM's address family (on the loopback
    address when the GM is there)."""
    host = "::" if ":" in gm_address[0] else "0.0.0.0"
    if gm_address[0].startswith("127."):
        host = "127.0.0.1"
    elif gm_address[0] == "::1":
        host = "::1"
    return await Endpoint.create((host, 0))


def write_channel_file(
    path: str | os.PathLike[str],
    channel: ChannelMaterial,
    *,
    manager: str | None = None,
    gm_credentials: dict[str, bytes] | None = None,
) -> Path:
    """Write (0600, atomically) a node's channel file: its channel with the GM, the GM's
    URI and the GM credentials to pin per group."""
    doc: dict[str, Any] = {
        "version": _CHANNEL_VERSION,
        "node": channel.node,
        "master_secret": channel.master_secret.hex(),
        "master_salt": channel.master_salt.hex(),
        "gm_sender_id": channel.gm_sender_id.hex(),
        "node_sender_id": channel.node_sender_id.hex(),
        "id_context": None if channel.id_context is None else channel.id_context.hex(),
        "aead_alg": channel.aead_alg,
        "hkdf_alg": channel.hkdf_alg,
        "manager": manager,
        "gm_credentials": {g: c.hex() for g, c in sorted((gm_credentials or {}).items())},
    }
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return write_private_file(path, data, prefix=".channel-")


def _field(doc: dict[str, Any], name: str, kind: type) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManagerMessageError(f"channel file: {name!r} missing or not a {kind.__name__}")
    return value


def _hex(doc: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_field(doc, name, str))
    except ValueError:
        raise ManagerMessageError(f"channel file: {name!r} is not hex") from None


def read_channel_file(
    path: str | os.PathLike[str],
) -> tuple[ChannelMaterial, str | None, dict[str, bytes]]:
    """(channel material, GM URI or None, pinned GM credentials) from a channel file.

    Refuses a file that other users can read or write: its secret is no longer the node's.
    """
    raw = read_private_file(path, "channel file")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise ManagerMessageError(f"unreadable channel file {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("version") != _CHANNEL_VERSION:
        raise ManagerMessageError("not a channel file of a known version")
    channel = ChannelMaterial(
        node=_field(doc, "node", str),
        master_secret=_hex(doc, "master_secret"),
        master_salt=_hex(doc, "master_salt"),
        gm_sender_id=_hex(doc, "gm_sender_id"),
        node_sender_id=_hex(doc, "node_sender_id"),
        id_context=None if doc.get("id_context") is None else _hex(doc, "id_context"),
        aead_alg=_field(doc, "aead_alg", int),
        hkdf_alg=_field(doc, "hkdf_alg", int),
    )
    manager = doc.get("manager")
    if manager is not None and not isinstance(manager, str):
        raise ManagerMessageError("channel file: 'manager' is not a URI string")
    pinned = doc.get("gm_credentials", {})
    if not isinstance(pinned, dict):
        raise ManagerMessageError("channel file: 'gm_credentials' is not an object")
    creds = {str(g): _hex(pinned, g) for g in pinned}
    return channel, manager, creds
