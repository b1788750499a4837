"""A node talking to its Group Manager over the network (asyncio, OSCORE channel).

Thin: each method is one or two CoAP exchanges through a transport
:class:`~grouposcore.transport.Endpoint`, protected with the node's commissioned RFC 8613
context; building and parsing the messages is :mod:`grouposcore.manager.member`'s job.
An error answer from the GM raises :class:`~grouposcore.errors.GroupManagerRequestError`
(with the CoAP code and 'ace-groupcomm-error' id).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from grouposcore.coap import Code as CoapCode
from grouposcore.coap import Message
from grouposcore.manager import member as mb
from grouposcore.manager.params import CF_ACE_GROUPCOMM, Code, Role
from grouposcore.manager.store import ChannelMaterial
from grouposcore.oscore.security import ClientSecurity
from grouposcore.oscore.sequence import SenderSequence
from grouposcore.transport import Endpoint, Observation

__all__ = ["GroupManagerClient"]


class GroupManagerClient:
    """One node's view of one Group Manager."""

    def __init__(
        self,
        endpoint: Endpoint,
        gm_address: tuple[str, int],
        channel: ChannelMaterial,
        *,
        sequence: SenderSequence | None = None,
        replay_window_valid: bool = True,
        timeout: float | None = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.gm_address = gm_address
        self.node = channel.node
        self.timeout = timeout
        self.context = channel.context(
            as_gm=False, sequence=sequence, replay_window_valid=replay_window_valid
        )
        self.security = ClientSecurity(self.context)

    def _message(self, method: int, path: Iterable[str], payload: bytes, cf: int | None) -> Message:
        msg = Message(method, payload=payload)
        msg.options.uri_path = list(path)
        if cf is not None:
            msg.options.content_format = cf
        return msg

    async def request(
        self,
        method: int,
        path: Iterable[str],
        payload: bytes = b"",
        cf: int | None = None,
        *,
        ok: Iterable[int] = (Code.CONTENT,),
    ) -> Message:
        """One protected exchange; a code outside ``ok`` raises the GM's error."""
        response = await self.endpoint.request(
            self._message(method, path, payload, cf),
            self.gm_address,
            timeout=self.timeout,
            security=self.security,
        )
        if response.code not in tuple(ok):
            raise mb.parse_error(
                response.code,
                response.payload,
                response.options.content_format,
                response.options.max_age,
            )
        return response

    async def join(
        self,
        group: str,
        roles: Iterable[Role | int] | int,
        *,
        credential: bytes | None = None,
        private_key: Any = None,
        get_creds: bool = True,
        gm_credential: bytes | None = None,
    ) -> tuple[mb.GroupKeyingMaterial, mb.PendingJoin]:
        """Join (fetching the GM's challenge first unless joining as a monitor)."""
        path = ("ace-group", group)
        challenge: bytes | None = None
        if credential is not None:
            first = mb.build_join_request(group, roles, credential=credential, get_creds=get_creds)
            answer = await self.request(
                CoapCode.POST, path, first.payload, CF_ACE_GROUPCOMM,
                ok=(Code.BAD_REQUEST, Code.CREATED, Code.CHANGED),
            )  # fmt: skip
            if answer.options.content_format != CF_ACE_GROUPCOMM or answer.code != 128:
                raise mb.parse_error(
                    answer.code,
                    answer.payload,
                    answer.options.content_format,
                    answer.options.max_age,
                )
            challenge = mb.parse_challenge(answer.payload).kdcchallenge
        pending = mb.build_join_request(
            group, roles, credential=credential, private_key=private_key,
            challenge=challenge, get_creds=get_creds,
        )  # fmt: skip
        response = await self.request(
            CoapCode.POST, path, pending.payload, CF_ACE_GROUPCOMM,
            ok=(Code.CREATED, Code.CHANGED),
        )  # fmt: skip
        material = mb.parse_join_response(response.payload, pending, gm_credential=gm_credential)
        return material, pending

    async def current(
        self, material: mb.GroupKeyingMaterial, *, own: bool = False
    ) -> mb.GroupKeyingMaterial:
        """GET /ace-group/GROUPNAME installed over ``material`` (polling); ``own``: the node's
        resource instead, whose answer also names the node's Sender ID under that Gid."""
        path = ("ace-group", material.group) + (("nodes", self.node) if own else ())
        r = await self.request(CoapCode.GET, path)
        return mb.parse_material(r.payload, material)

    async def stale_sids(self, group: str, num: int) -> list[bytes] | None:
        """Sender IDs that went stale after version ``num`` (None: purge all)."""
        r = await self.request(
            CoapCode.FETCH, ("ace-group", group, "stale-sids"), mb.build_stale_sids_request(num)
        )
        return mb.parse_stale_sids(r.payload)

    async def catch_up(
        self, material: mb.GroupKeyingMaterial, *, own: bool = False
    ) -> mb.GroupKeyingMaterial:
        """After missed rekeyings: fetch the stale IDs, then install the current material
        (``own``: read from the node's resource, with its current Sender ID)."""
        latest = await self.current(material, own=own)
        if latest.num == material.num:
            return latest
        stale = await self.stale_sids(material.group, material.num)
        return mb.apply_stale(latest, stale)

    async def creds(
        self,
        group: str,
        *,
        sender_ids: Iterable[bytes] = (),
        roles: Iterable[int] = (),
        sign_alg: int | None = None,
        exclude: bool = False,
    ) -> dict[bytes, mb.PeerInfo]:
        """Credentials of the members with these Sender IDs / roles (all when both empty);
        ``exclude``: of every member except those Sender IDs (RFC 9594 §4.4.1, inclusion
        flag false), what a member that missed rekeyings still lacks."""
        ids, perms = list(sender_ids), list(roles)
        path = ("ace-group", group, "creds")
        if not ids and not perms:
            r = await self.request(CoapCode.GET, path)
        else:
            body = mb.build_creds_fetch(not exclude, perms, ids)
            r = await self.request(CoapCode.FETCH, path, body, CF_ACE_GROUPCOMM)
        return mb.parse_creds(r.payload, sign_alg)

    async def kdc_credential(self, group: str, sign_alg: int) -> bytes:
        """The GM's credential, proven over a fresh N_C (FETCH /kdc-cred): the way for a
        signature verifier, which has no join nonce."""
        payload, cnonce = mb.build_kdc_cred_fetch()
        r = await self.request(
            CoapCode.FETCH, ("ace-group", group, "kdc-cred"), payload, CF_ACE_GROUPCOMM
        )
        return mb.parse_kdc_cred(r.payload, cnonce, sign_alg)

    async def verification_data(self, group: str) -> mb.VerificationData:
        """GET /verif-data (signature verifiers only)."""
        r = await self.request(CoapCode.GET, ("ace-group", group, "verif-data"))
        return mb.parse_verif_data(r.payload)

    async def renew_sender_id(self, material: mb.GroupKeyingMaterial) -> mb.GroupKeyingMaterial:
        """Ask for a new Sender ID (RFC 9594 §4.8.2 key renewal, answered 2.05)."""
        r = await self.request(CoapCode.POST, ("ace-group", material.group, "nodes", self.node))
        return mb.parse_key_renewal(r.payload, material)

    async def leave(self, group: str) -> None:
        """Leave the group (the GM rekeys it for everyone else)."""
        await self.request(
            CoapCode.DELETE, ("ace-group", group, "nodes", self.node), ok=(Code.DELETED,)
        )

    def observe(self, group: str) -> Observation:
        """Observe /ace-group/GROUPNAME: the first item answers the registration."""
        return self.endpoint.observe(
            self._message(CoapCode.GET, ("ace-group", group), b"", None),
            self.gm_address,
            security=self.security,
            timeout=self.timeout,
        )

    async def follow(
        self, material: mb.GroupKeyingMaterial
    ) -> AsyncIterator[mb.GroupKeyingMaterial]:
        """Yield the material after every rekeying pushed by the GM, until membership ends.

        A version jump of more than one (a notification was lost) triggers :meth:`catch_up`.
        Ends with :class:`MembershipTerminated` when the GM evicts this node.
        """
        current = material
        async for msg in self.observe(material.group):
            notified = mb.handle_notification(
                current, msg.code, msg.payload, msg.options.content_format
            )
            if notified.num > current.num + 1:
                current = await self.catch_up(current)
            else:
                current = notified
            yield current
