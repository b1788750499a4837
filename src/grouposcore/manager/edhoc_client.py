"""A node's Group Manager client whose channel comes from EDHOC instead of a channel file.

The node holds only its EDHOC key pair and the GM's credential (:class:`EdhocIdentity`).
Before its first request the client runs EDHOC (two round trips) and uses the OSCORE context
that yields; when the GM no longer knows that context (an unprotected 4.01 or 4.00, e.g. after the
GM's store lost it or another session of this node replaced it) the client runs EDHOC again
and repeats the request once. The context lives only in memory: a restarted node simply
runs EDHOC again, so there is no channel secret on disk to leak.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from grouposcore.coap import Code as CoapCode
from grouposcore.coap import Message
from grouposcore.edhoc.coap import CombinedClientSecurity, initiate, initiate_combined
from grouposcore.edhoc.credentials import (
    EdhocCredential,
    EdhocKey,
    read_credential_file,
    read_key_file,
)
from grouposcore.edhoc.protocol import Initiator, OscoreParameters
from grouposcore.errors import EdhocCredentialError, ResponseEndsExchange
from grouposcore.manager.client import GroupManagerClient
from grouposcore.manager.params import Code
from grouposcore.transport import Endpoint, Observation

__all__ = ["ChannelLost", "EdhocGroupManagerClient", "EdhocIdentity", "default_cred_path"]


class ChannelLost(ResponseEndsExchange):
    """The GM answered a protected request with an unprotected 4.01 or 4.00: it has no (or
    another) context for our Sender ID, so the EDHOC-derived channel must be made again."""


@dataclass(frozen=True)
class EdhocIdentity:
    """What a node needs to reach its GM with EDHOC: its key, its credential, the GM's
    credential (pinned: EDHOC fails unless the GM proves this one) and whether to send our
    credential by value (default: by kid, which the GM knows from registration)."""

    key: EdhocKey
    credential: EdhocCredential
    gm_credential: EdhocCredential
    by_value: bool = False
    name: str | None = None

    @classmethod
    def from_files(
        cls,
        key_file: str | os.PathLike[str],
        gm_cred_file: str | os.PathLike[str],
        *,
        cred_file: str | os.PathLike[str] | None = None,
        kid: bytes | None = None,
        name: str | None = None,
        by_value: bool = False,
    ) -> EdhocIdentity:
        """From a key file (0600), the GM's credential file and our own credential file
        (default: ``KEY_FILE`` with ``.cred`` instead of ``.key``); without our credential
        file, ``kid`` rebuilds it from the key."""
        key = read_key_file(key_file)
        if cred_file is None and kid is None:
            cred_file = default_cred_path(key_file)
        if cred_file is not None:
            credential = read_credential_file(cred_file)
            if credential.x != key.public_xy()[0]:
                raise EdhocCredentialError(
                    f"{cred_file} is not the credential of the key {key_file}"
                )
        else:
            assert kid is not None
            credential = key.credential(kid, name or "")
        return cls(key, credential, read_credential_file(gm_cred_file), by_value, name)

    @property
    def node(self) -> str:
        """The node's name as this side knows it (the GM names it by registration)."""
        if self.name:
            return self.name
        if self.credential.subject:
            return self.credential.subject
        return "kid-" + (self.credential.kid or b"").hex()


def default_cred_path(key_file: str | os.PathLike[str]) -> str:
    """Where a key file's credential lives by default: ``node.key`` -> ``node.cred``."""
    text = os.fspath(key_file)
    return (text[: -len(".key")] if text.endswith(".key") else text) + ".cred"


#: Unprotected answers meaning "no such context" (4.01) or "not this context" (4.00
#: Decryption failed, e.g. the GM holds newer keys under the same kid): run EDHOC again.
#: Forging one costs an attacker as much as dropping the request: one more handshake.
_LOST = (CoapCode.UNAUTHORIZED, CoapCode.BAD_REQUEST)


class _EdhocChannelSecurity(CombinedClientSecurity):
    """The channel's ClientSecurity, telling a lost channel apart from other failures."""

    def unprotect_response(self, response: Message, binding: Any) -> Any:
        if 9 not in response.options and response.code in _LOST:
            why = response.payload[:200].decode("utf-8", "replace")
            raise ChannelLost(
                "the Group Manager does not know this EDHOC channel" + (f" ({why})" if why else "")
            )
        return super().unprotect_response(response, binding)


class EdhocGroupManagerClient(GroupManagerClient):
    """A :class:`GroupManagerClient` over an EDHOC-established channel."""

    def __init__(
        self,
        endpoint: Endpoint,
        gm_address: tuple[str, int],
        identity: EdhocIdentity,
        *,
        timeout: float | None = 10.0,
        combined: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.combined = combined
        self.gm_address = gm_address
        self.node = identity.node
        self.timeout = timeout
        self.identity = identity
        # ``context`` and ``security`` are set by the first connect(); until then there is
        # no channel (``channel`` None), which is what request() and observe() check.
        #: OSCORE parameters of the current channel (None before the first EDHOC run)
        self.channel: OscoreParameters | None = None
        #: completed EDHOC runs (each is two round trips)
        self.handshakes = 0

    async def connect(self, *, combined: bool | None = None) -> OscoreParameters:
        """Run EDHOC with the GM and make its result the channel. ``combined`` (default:
        :attr:`combined`) sends message_3 with the next request (RFC 9668; one round trip
        instead of two), else in its own exchange, where an error is an EDHOC error."""
        initiator = Initiator(
            self.identity.key,
            self.identity.credential,
            self.identity.gm_credential,
            by_value=self.identity.by_value,
        )
        message_3 = None
        if self.combined if combined is None else combined:
            params, message_3 = await initiate_combined(
                self.endpoint, self.gm_address, initiator, timeout=self.timeout
            )
        else:
            params = await initiate(self.endpoint, self.gm_address, initiator, timeout=self.timeout)
        self.channel = params
        self.context = params.context()
        self.security = _EdhocChannelSecurity(self.context, message_3)
        self.handshakes += 1
        return params

    async def request(
        self,
        method: int,
        path: Iterable[str],
        payload: bytes = b"",
        cf: int | None = None,
        *,
        ok: Iterable[int] = (Code.CONTENT,),
    ) -> Message:
        """One protected exchange; EDHOC first if there is no channel, and again (once) if
        the GM has lost it."""
        ok = tuple(ok)
        if self.channel is None:
            await self.connect()
        try:
            response = await super().request(method, path, payload, cf, ok=ok)
        except ChannelLost:
            # explicit message_3 this time: a refusal then comes as an EDHOC error message
            await self.connect(combined=False)
            response = await super().request(method, path, payload, cf, ok=ok)
        where = response.options.location_path
        if where and len(where) == 4 and where[0] == "ace-group" and where[2] == "nodes":
            # the GM names the node by its registration, which the node cannot know
            # beforehand: the join's Location-Path (RFC 9594 §4.3.1) tells it
            self.node = where[3]
        return response

    def observe(self, group: str) -> Observation:
        """Observe /ace-group/GROUPNAME over the current channel (connect first)."""
        if self.channel is None:
            raise ChannelLost("no EDHOC channel yet: make a request (e.g. join) first")
        return super().observe(group)
